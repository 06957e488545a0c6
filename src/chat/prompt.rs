//! What the model is told: the prompt window over the history, the prompt itself, and the
//! running summary folded from runs that left the window.

use tokio::time::Instant;

use super::ChatService;
use crate::input::{Message, SessionKey};
use crate::memory::{Memory, Run};
use crate::model::{ChatMessage, Role};
use crate::store::{Snapshot, Summary};

impl ChatService {
    /// Folds the runs between the stored summary and the prompt window into a new summary.
    /// A failed fold is logged and skipped: the turn goes on with the old summary.
    pub(super) async fn fold(
        &self,
        session: &SessionKey,
        snapshot: &Snapshot,
        window: usize,
        deadline: Instant,
    ) -> Option<Summary> {
        let runs = &snapshot.memory.runs;
        // Runs up to the stored summary's newest are in it already. If that run is gone from
        // the item (archived or dropped), every run left is newer.
        let start = snapshot
            .summary
            .as_ref()
            .and_then(|s| runs.iter().position(|r| r.id == s.through))
            .map_or(0, |i| i + 1);
        if start >= window {
            return None;
        }
        // A first fold of a long session takes its newest runs only, so the request stays small.
        let start = start.max(window_start(
            &snapshot.memory.with_prefix(window),
            4 * self.settings.history_token_budget,
        ));
        let previous = snapshot.summary.as_ref().map(|s| s.text.as_str());
        let request = summary_prompt(previous, &runs[start..window]);
        match self.model.complete(&request, deadline).await {
            Ok(completion) => Some(Summary {
                text: completion.text,
                through: runs[window - 1].id.clone(),
            }),
            Err(e) => {
                tracing::warn!(session_id = %session, error = %e, "could not update the summary; keeping the old one");
                None
            }
        }
    }
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

/// Estimated tokens of a text, offline: about four characters a token (OpenAI's rule of thumb
/// for English), plus a few for the message's framing. Errs high for short words, which keeps
/// the prompt under budget.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4) + 4
}

/// Where the prompt window starts: the newest runs whose estimated tokens fit `budget`.
pub fn window_start(memory: &Memory, budget: u64) -> usize {
    let mut spent = 0;
    let fitting = memory
        .runs
        .iter()
        .rev()
        .take_while(|run| {
            spent += estimate_tokens(&run.input) + estimate_tokens(&run.output);
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
