//! What the model is told: the prompt window over the history, the prompt itself, and the
//! running summary folded from runs that left the window.

use tokio::time::Instant;

use super::ChatService;
use crate::deadline::Deadline;
use crate::input::{Message, SessionKey};
use crate::memory::{Memory, Run};
use crate::model::{ChatMessage, Prompt, Role};
use crate::store::quota::Counter;
use crate::store::{Snapshot, Summary};

/// Longest summary kept, in characters: a fold's answer is cut (at a word) to this.
pub const MAX_SUMMARY_CHARS: usize = 2000;

/// A fold to run beside the reply's model call: the request, and the newest run it covers.
#[derive(Debug, Clone)]
pub struct FoldJob {
    pub request: Prompt,
    pub through: String,
}

impl ChatService {
    /// The fold of a stepping window: the runs between the stored summary and `step_to` (where
    /// the next window starts), into a new summary. `None` when there is nothing to fold.
    pub(super) fn fold_job(&self, snapshot: &Snapshot, step_to: usize) -> Option<FoldJob> {
        let runs = &snapshot.memory.runs;
        // Runs up to the stored summary's newest are in it already. If that run is gone from
        // the item (archived or dropped), every run left is newer.
        let start = snapshot
            .summary
            .as_ref()
            .and_then(|s| runs.iter().position(|r| r.id == s.through))
            .map_or(0, |i| i + 1);
        if start >= step_to {
            return None;
        }
        // A first fold of a long session takes its newest runs only, so the request stays small.
        let start = start.max(window_start(
            &snapshot.memory.with_prefix(step_to),
            4 * self.settings.history_token_budget,
        ));
        if start >= step_to {
            // One run too long to fold on its own: it leaves the window unsummarized.
            return None;
        }
        let previous = snapshot.summary.as_ref().map(|s| s.text.as_str());
        Some(FoldJob {
            request: Prompt::new(summary_prompt(previous, &runs[start..step_to])),
            through: runs[step_to - 1].id.clone(),
        })
    }

    /// Runs a fold: `None` when there was none to run, `Some(None)` when it failed. A failed
    /// one is logged: the old summary stays, and the next step folds these runs again with its
    /// own.
    pub(super) async fn run_fold(
        &self,
        session: &SessionKey,
        job: Option<FoldJob>,
        deadline: Instant,
        spend: Option<&Counter>,
    ) -> Option<Option<Summary>> {
        let job = job?;
        Some(match self.model.complete(&job.request, deadline).await {
            Ok(completion) => {
                // A fold's tokens are the caller's too.
                self.spend(spend, completion.usage, Deadline::at(deadline))
                    .await;
                Some(Summary {
                    text: bounded_summary(completion.text),
                    through: job.through,
                })
            }
            Err(e) => {
                tracing::warn!(session_id = %session, error = %e, "could not update the summary; keeping the old one");
                None
            }
        })
    }
}

/// A summary cut to [`MAX_SUMMARY_CHARS`], at the last word boundary before the cut.
pub fn bounded_summary(text: String) -> String {
    let Some((cut, _)) = text.char_indices().nth(MAX_SUMMARY_CHARS) else {
        return text;
    };
    let head = &text[..cut];
    let end = head.rfind(char::is_whitespace).unwrap_or(cut);
    head[..end].trim_end().to_owned()
}

/// Instruction for folding runs into the running summary.
pub const SUMMARY_INSTRUCTION: &str = "You keep a running summary of a conversation. Fold the new \
exchanges into the summary so far. Keep who took part, names, facts, decisions and open \
questions. Answer with the updated summary only, in under 200 words.";

/// Introduces the running summary in a chat prompt.
pub const SUMMARY_PREFIX: &str = "Summary of the earlier conversation: ";

fn summary_prompt(previous: Option<&str>, runs: &[Run]) -> Vec<ChatMessage> {
    let mut text = format!(
        "Summary so far:\n{}\n\nNew exchanges:\n",
        previous.unwrap_or("(none)")
    );
    for run in runs {
        text.push_str("User: ");
        text.push_str(&run.input);
        text.push_str("\nAssistant: ");
        text.push_str(&run.output);
        text.push('\n');
    }
    vec![
        ChatMessage::new(Role::System, SUMMARY_INSTRUCTION),
        ChatMessage::new(Role::User, text),
    ]
}

/// Estimated tokens of a text, offline: ASCII at about four characters a token (OpenAI's rule
/// of thumb for English), CJK ideographs, kana and Hangul at one token each, other non-ASCII
/// text at about two characters a token, plus a few for the message's framing. The session's
/// calibration ([`scaled`]) corrects it to what the provider counts.
pub fn estimate_tokens(text: &str) -> u64 {
    let (mut ascii, mut wide, mut other) = (0u64, 0u64, 0u64);
    for c in text.chars() {
        if c.is_ascii() {
            ascii += 1;
        } else if is_wide(c) {
            wide += 1;
        } else {
            other += 1;
        }
    }
    ascii.div_ceil(4) + wide + other.div_ceil(2) + 4
}

/// Scripts whose tokenizers spend about a token a character: CJK ideographs (and their
/// extensions and compatibility forms), kana, Hangul, full-width forms.
fn is_wide(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF | 0x2E80..=0x9FFF | 0xA960..=0xA97F | 0xAC00..=0xD7FF
        | 0xF900..=0xFAFF | 0xFE30..=0xFE4F | 0xFF00..=0xFFEF | 0x20000..=0x3FFFF)
}

/// Calibration is kept in thousandths: 1000 is the estimate as it is.
pub const UNSCALED: u64 = 1000;
/// The scales a report may give, in thousandths: a report within 0.4x-3x of the estimate is
/// plausible for the prompt sent (real tokenizers' counts land inside it: o200k_base's from
/// about 0.47x for Russian to 2.2x for emoji); one outside it cannot be right
/// (docs/context.md).
pub const SCALE_RANGE: std::ops::RangeInclusive<u64> = 400..=3000;

/// `tokens` as the provider counts them, given the session's calibration.
pub fn scaled(tokens: u64, scale_milli: u64) -> u64 {
    (tokens * scale_milli).div_ceil(UNSCALED)
}

/// What a provider's report of a prompt's tokens does to the session's calibration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calibration {
    /// Plausible for the prompt sent: the session's new scale, in thousandths.
    Scale(u64),
    /// Nothing to judge: no report, or a prompt under a quarter of the budget, too small to
    /// judge one by (and too small for any scale in [`SCALE_RANGE`] to matter).
    Unjudged,
    /// A report that cannot be right for the prompt sent (zero, a small constant, a multiple
    /// of the truth): the session keeps its scale.
    Implausible,
}

/// The calibration a provider's report gives: the tokens it counted for a prompt over our
/// estimate of it, taken only within [`SCALE_RANGE`] and for a prompt of at least a quarter of
/// `budget` (the history token budget).
pub fn calibration(reported: Option<u64>, estimated: u64, budget: u64) -> Calibration {
    let Some(reported) = reported else {
        return Calibration::Unjudged;
    };
    if estimated == 0 || estimated < budget / 4 {
        return Calibration::Unjudged;
    }
    let ratio = reported.saturating_mul(UNSCALED) / estimated;
    if SCALE_RANGE.contains(&ratio) {
        Calibration::Scale(ratio)
    } else {
        Calibration::Implausible
    }
}

/// The scale a session's estimates are multiplied by: its stored calibration, within
/// [`SCALE_RANGE`] (one stored before the range was this narrow counts as its nearest bound),
/// or the estimate as it is.
pub fn session_scale(stored: Option<u64>) -> u64 {
    stored.map_or(UNSCALED, |s| {
        s.clamp(*SCALE_RANGE.start(), *SCALE_RANGE.end())
    })
}

/// Estimated tokens of a whole prompt, as [`calibration`] compares them with a report.
pub fn prompt_tokens(prompt: &[ChatMessage]) -> u64 {
    prompt.iter().map(|m| estimate_tokens(&m.content)).sum()
}

fn run_tokens(run: &Run, scale_milli: u64) -> u64 {
    scaled(
        estimate_tokens(&run.input) + estimate_tokens(&run.output),
        scale_milli,
    )
}

/// Where a turn's prompt window starts, and whether the window steps (see docs/context.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPlan {
    /// The first run in this turn's prompt.
    pub start: usize,
    /// The window steps on this turn: the first run of the window from the next turn on. The
    /// runs before it leave the window (and are folded into the summary).
    pub step_to: Option<usize>,
}

/// Plans the window over `runs` (oldest first, the run just saved last), whose stored start is
/// the run `from` (the first run when unknown or gone). Between steps the start stays; when the
/// window passes `budget` it steps to the oldest run from which it holds at most half of it.
/// With `defer` (a fold runs beside the reply) the stepping turn keeps the old window, unless
/// that passes one and a half budgets.
pub fn plan_window(
    runs: &[Run],
    from: Option<&str>,
    budget: u64,
    scale_milli: u64,
    defer: bool,
) -> WindowPlan {
    let start = from
        .and_then(|id| runs.iter().position(|r| r.id == id))
        .unwrap_or(0);
    let mut held: u64 = runs[start..]
        .iter()
        .map(|r| run_tokens(r, scale_milli))
        .sum();
    if held <= budget {
        return WindowPlan {
            start,
            step_to: None,
        };
    }
    let old = held;
    let mut next = start;
    while next < runs.len() && held > budget / 2 {
        held -= run_tokens(&runs[next], scale_milli);
        next += 1;
    }
    let keep_old = defer && old <= budget + budget / 2;
    WindowPlan {
        start: if keep_old { start } else { next },
        step_to: Some(next),
    }
}

/// Where the prompt window starts: the newest runs whose estimated tokens fit `budget`.
pub fn window_start(memory: &Memory, budget: u64) -> usize {
    let mut spent = 0;
    let fitting = memory
        .runs
        .iter()
        .rev()
        .take_while(|run| {
            spent += run_tokens(run, UNSCALED);
            spent <= budget
        })
        .count();
    memory.runs.len() - fitting
}

/// The system prompt, the running summary, then `history` as user/assistant pairs, oldest
/// first, then the new message.
pub fn build_prompt(
    system: Option<&str>,
    summary: Option<&str>,
    history: &[Run],
    message: &Message,
) -> Vec<ChatMessage> {
    let mut prompt = Vec::with_capacity(3 + history.len() * 2);
    if let Some(system) = system {
        prompt.push(ChatMessage::new(Role::System, system));
    }
    if let Some(summary) = summary {
        prompt.push(ChatMessage::new(
            Role::System,
            format!("{SUMMARY_PREFIX}{summary}"),
        ));
    }
    for run in history {
        prompt.push(ChatMessage::new(Role::User, run.input.as_str()));
        prompt.push(ChatMessage::new(Role::Assistant, run.output.as_str()));
    }
    prompt.push(ChatMessage::new(Role::User, message.as_str()));
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(i: usize, chars: usize) -> Run {
        let mut run = Run::new(format!("{i:0>width$}", width = chars), "a".repeat(chars));
        run.id = format!("r{i}");
        run
    }

    /// Turn after turn as the cycle plans them: (the window's start per turn, the stored start).
    fn simulate(turns: usize, chars: usize, budget: u64, defer: bool) -> Vec<(usize, WindowPlan)> {
        let mut runs = Vec::new();
        let mut from: Option<String> = None;
        let mut plans = Vec::new();
        for i in 0..turns {
            let plan = plan_window(&runs, from.as_deref(), budget, UNSCALED, defer);
            plans.push((runs.len(), plan));
            runs.push(run(i, chars));
            if let Some(to) = plan.step_to {
                from = Some(runs[to].id.clone());
            }
        }
        plans
    }

    #[test]
    fn between_steps_the_window_keeps_its_start() {
        // 100 characters each way: 58 estimated tokens a run.
        for defer in [false, true] {
            let plans = simulate(200, 100, 600, defer);
            let steps = plans.iter().filter(|(_, p)| p.step_to.is_some()).count();
            let mut stored = 0;
            for (_, plan) in &plans {
                match plan.step_to {
                    None => assert_eq!(plan.start, stored, "the prefix moved between steps"),
                    Some(to) if defer => {
                        assert_eq!(plan.start, stored, "a deferred step keeps the old window");
                        stored = to;
                    }
                    Some(to) => {
                        assert_eq!(plan.start, to);
                        stored = to;
                    }
                }
            }
            // The window fills from 300 to 600 tokens between steps: one step every ~6 turns.
            assert!((25..=40).contains(&steps), "{steps} steps in 200 turns");
        }
    }

    #[test]
    fn a_step_leaves_at_most_half_the_budget_and_never_passes_the_bound() {
        let budget = 600;
        let cost = 2 * (100u64.div_ceil(4) + 4);
        for defer in [false, true] {
            for (held, plan) in simulate(200, 100, budget, defer) {
                let window = (held - plan.start) as u64 * cost;
                assert!(window <= budget + cost, "{window} tokens sent");
                if let Some(to) = plan.step_to {
                    assert!((held - to) as u64 * cost <= budget / 2, "a step to {to}");
                }
            }
        }
    }

    #[test]
    fn a_deferred_step_keeps_the_old_window_for_one_turn() {
        // 12 runs of 58 tokens: past the budget, within one and a half.
        let runs: Vec<Run> = (0..12).map(|i| run(i, 100)).collect();
        let plan = plan_window(&runs, None, 600, UNSCALED, true);
        assert_eq!(plan.start, 0, "answered with the old window");
        let to = plan.step_to.expect("it steps");
        let now = plan_window(&runs, None, 600, UNSCALED, false);
        assert_eq!(
            now,
            WindowPlan {
                start: to,
                step_to: Some(to)
            }
        );
        // Past one and a half budgets it steps at once, deferred or not.
        let long: Vec<Run> = (0..40).map(|i| run(i, 100)).collect();
        let plan = plan_window(&long, None, 600, UNSCALED, true);
        assert_eq!(Some(plan.start), plan.step_to);
    }

    #[test]
    fn cjk_text_counts_a_token_a_character() {
        assert_eq!(estimate_tokens("abcdefgh"), 2 + 4);
        assert_eq!(estimate_tokens("你好世界"), 4 + 4);
        assert_eq!(estimate_tokens("こんにちは안녕"), 7 + 4);
        assert_eq!(
            estimate_tokens("héllo"),
            1 + 1 + 4,
            "other scripts: two a token"
        );
    }

    #[test]
    fn calibration_follows_a_plausible_report() {
        let judged = Calibration::Scale;
        assert_eq!(calibration(Some(2000), 1000, 4000), judged(2000));
        assert_eq!(calibration(Some(500), 1000, 4000), judged(500));
        assert_eq!(calibration(Some(1100), 1000, 4000), judged(1100));
        // Twice the tokens the estimate says: half as many runs fit.
        let runs: Vec<Run> = (0..30).map(|i| run(i, 100)).collect();
        let plain = plan_window(&runs, None, 600, UNSCALED, false);
        let doubled = plan_window(&runs, None, 600, 2000, false);
        assert_eq!(
            runs.len() - plain.start,
            5,
            "300 of 600 tokens left after a step"
        );
        assert_eq!(runs.len() - doubled.start, 2);
    }

    /// The invariant of docs/context.md ("Which reports count"): a report that cannot be right
    /// for the prompt sent (zero, a constant, a multiple beyond 0.4x-3x) never moves the scale,
    /// and neither does a missing one or one for a prompt under a quarter of the budget.
    #[test]
    fn an_implausible_report_never_moves_the_scale() {
        let budget = 4000;
        for estimated in [1000, 2500, 6000, 12_000] {
            let past = [estimated * 2 / 5 - 1, 3 * estimated + estimated / 10];
            for reported in [0, 1, 10, 100, 399].into_iter().chain(past) {
                assert_eq!(
                    calibration(Some(reported), estimated, budget),
                    Calibration::Implausible,
                    "{reported} reported for {estimated} estimated"
                );
            }
            for factor in [4, 10, 100] {
                assert_eq!(
                    calibration(Some(factor * estimated), estimated, budget),
                    Calibration::Implausible,
                    "{factor}x"
                );
            }
            assert_eq!(calibration(None, estimated, budget), Calibration::Unjudged);
        }
        // A constant under a tenth of the budget is outside the band for every prompt judged.
        for estimated in budget / 4..budget * 2 {
            assert_eq!(
                calibration(Some(budget / 10 - 1), estimated, budget),
                Calibration::Implausible
            );
        }
        // Small prompts are not judged at all, whatever is reported.
        for reported in [None, Some(0), Some(10), Some(999), Some(100_000)] {
            assert_eq!(calibration(reported, 999, budget), Calibration::Unjudged);
        }
        assert_eq!(calibration(Some(10), 0, 0), Calibration::Unjudged);
        assert_eq!(
            calibration(Some(u64::MAX), 1000, 0),
            Calibration::Implausible
        );
    }

    /// Real tokenizers' counts are plausible: o200k_base's (gpt-4o, gpt-4.1), as
    /// tools/tokencount counts them, of texts from the lowest ratio measured to the highest.
    #[test]
    fn real_counts_are_plausible() {
        let english = "The committee met on Tuesday to discuss the budget for next year. \
            Several members raised concerns about the rising cost of maintenance, and the chair \
            asked for a detailed report by the end of the month.";
        let chinese = "今天下午我们在会议室讨论了明年的预算。\
            几位成员对维护费用不断上涨表示担忧，主席要求在月底前提交一份详细的报告。";
        let russian = "Сегодня днём мы обсудили в переговорной бюджет на следующий год. \
            Несколько участников выразили обеспокоенность ростом расходов на обслуживание, \
            и председатель попросил подробный отчёт к концу месяца.";
        let emoji = "😀🎉👍🔥❤️😂🙏✨🚀🌟".repeat(5);
        let digits = "3.14159265358979 2.71828182845904 1.41421356237309 ".repeat(4);
        let counted = [
            (english, 39),
            (chinese, 36),
            (russian, 44),
            (&emoji, 65),
            (&digits, 96),
        ];
        for (text, tokens) in counted {
            // The provider's count of the message with its framing, as the estimate's.
            let reported = tokens + 4;
            let estimated = estimate_tokens(text);
            assert!(
                matches!(
                    calibration(Some(reported), estimated, 0),
                    Calibration::Scale(_)
                ),
                "{reported} counted for {estimated} estimated: {text}"
            );
        }
    }

    #[test]
    fn a_stored_scale_is_used_within_the_band() {
        assert_eq!(session_scale(None), UNSCALED);
        assert_eq!(session_scale(Some(1300)), 1300);
        assert_eq!(session_scale(Some(250)), 400, "a constant's old 0.25");
        assert_eq!(session_scale(Some(4000)), 3000, "a multiple's old 4");
    }

    #[test]
    fn summaries_are_bounded_at_a_word() {
        let long = "word ".repeat(1000);
        let cut = bounded_summary(long);
        assert!(cut.chars().count() <= MAX_SUMMARY_CHARS);
        assert!(cut.ends_with("word"));
        assert_eq!(bounded_summary("short".into()), "short");
    }
}
