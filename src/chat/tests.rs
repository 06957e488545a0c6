//! The chat cycle against the in-memory store (with its faults) and a scripted model.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::chat::prompt::prompt_tokens;
use crate::deadline::Deadline;
use crate::input::SessionId;
use crate::input::{IdempotencyKey, Message, SessionKey};
use crate::memory::{Memory, Run};
use crate::model::{ChatModel, Completion, ModelError, Prompt, Role};
use crate::store::in_memory::InMemoryStore;
use crate::store::quota::{QuotaKind, Quotas};
use crate::store::SessionStore;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// A scripted model: answers from a queue (or echoes), after an optional delay, and counts
/// its calls.
#[derive(Default)]
struct Scripted {
    calls: AtomicU32,
    answers: Mutex<Vec<Result<String, ModelError>>>,
    delay: Option<Duration>,
    /// A streamed answer stops with an error after this many pieces.
    fail_stream_after: Mutex<Option<usize>>,
}

#[async_trait::async_trait]
impl ChatModel for Scripted {
    async fn complete(&self, prompt: &Prompt, deadline: Instant) -> Result<Completion, ModelError> {
        let messages = &prompt.messages;
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(delay) = self.delay {
            if tokio::time::timeout_at(deadline, tokio::time::sleep(delay))
                .await
                .is_err()
            {
                return Err(ModelError::Timeout);
            }
        }
        let next = self.answers.lock().unwrap().pop();
        let text = match next {
            Some(answer) => answer?,
            None => format!(
                "echo: {}",
                messages.last().map_or("", |m| m.content.as_str())
            ),
        };
        Ok(Completion {
            calls: Vec::new(),
            text,
            truncated: false,
            usage: None,
        })
    }

    /// The answer word by word.
    async fn stream(
        &self,
        prompt: &Prompt,
        deadline: Instant,
        deltas: crate::model::Deltas<'_>,
    ) -> Result<Completion, ModelError> {
        let completion = self.complete(prompt, deadline).await?;
        let fail_after = self.fail_stream_after.lock().unwrap().take();
        for (i, piece) in completion.text.split_inclusive(' ').enumerate() {
            if fail_after == Some(i) {
                return Err(ModelError::Interrupted("scripted".into()));
            }
            deltas(piece);
        }
        Ok(completion)
    }
}

/// Runs a streamed turn; returns its result and what it reported, in order.
async fn stream_turn(
    chat: &Arc<ChatService>,
    text: &str,
    key: Option<&IdempotencyKey>,
) -> (Result<Reply, ChatError>, Vec<String>) {
    let mut events = chat.stream(turn(text, Deadline::NONE, key));
    let mut seen = Vec::new();
    loop {
        match events.recv().await {
            Some(TurnEvent::Asking) => seen.push("<asking>".to_owned()),
            Some(TurnEvent::Delta(piece)) => seen.push(piece),
            Some(TurnEvent::Finished(result)) => return (result, seen),
            None => panic!("the turn ended without an outcome"),
        }
    }
}

/// A turn of the one test session.
fn turn(text: &str, deadline: Deadline, key: Option<&IdempotencyKey>) -> TurnRequest {
    TurnRequest {
        deadline,
        idempotency_key: key.cloned(),
        ..TurnRequest::new(session(), message(text))
    }
}

#[tokio::test]
async fn a_streamed_turn_stores_exactly_what_was_streamed() {
    let store = Arc::new(InMemoryStore::new());
    let model = Arc::new(Scripted::default());
    let chat = service(&store, &model);
    let (reply, seen) = stream_turn(&chat, "tell me more", None).await;
    let reply = reply.unwrap();
    assert_eq!(seen, ["<asking>", "echo: ", "tell ", "me ", "more"]);
    assert_eq!(reply.text, seen[1..].concat());
    let runs = store.runs(&session());
    assert_eq!(runs.len(), 1);
    assert_eq!((&runs[0].id, &runs[0].output), (&reply.run_id, &reply.text));
    assert!(reply.timings.first_piece_ms.is_some());
}

#[tokio::test]
async fn a_stream_failing_midway_stores_nothing() {
    let store = Arc::new(InMemoryStore::new());
    let model = Arc::new(Scripted::default());
    *model.fail_stream_after.lock().unwrap() = Some(2);
    let chat = service(&store, &model);
    let (result, seen) = stream_turn(&chat, "tell me more", None).await;
    assert!(
        matches!(result, Err(ChatError::ModelFailed(_))),
        "{result:?}"
    );
    assert_eq!(seen, ["<asking>", "echo: ", "tell "]);
    assert!(store.runs(&session()).is_empty());
}

#[tokio::test]
async fn a_streamed_turn_shares_the_save_loop() {
    let store = Arc::new(InMemoryStore::new());
    let model = Arc::new(Scripted::default());
    let chat = service(&store, &model);
    {
        let mut faults = store.faults.lock().unwrap();
        faults.interleaved_writers = 1;
        faults.lost_answers = 1;
    }
    let (reply, _) = stream_turn(&chat, "mine", None).await;
    let reply = reply.unwrap();
    let runs = store.runs(&session());
    let inputs: Vec<&str> = runs.iter().map(|r| r.input.as_str()).collect();
    assert_eq!(
        inputs,
        ["another writer", "mine"],
        "merged, and stored once"
    );
    assert_eq!(runs[1].id, reply.run_id);
    assert_eq!(model.calls.load(Ordering::SeqCst), 1);

    // A keyed retry is replayed from the receipt: no model, no progress.
    let key = IdempotencyKey::parse("k-1").unwrap();
    let (first, _) = stream_turn(&chat, "again", Some(&key)).await;
    let (again, seen) = stream_turn(&chat, "again", Some(&key)).await;
    let (first, again) = (first.unwrap(), again.unwrap());
    assert!(again.replayed && seen.is_empty());
    assert_eq!((again.run_id, again.text), (first.run_id, first.text));
    assert_eq!(model.calls.load(Ordering::SeqCst), 2);
}

fn service(store: &Arc<InMemoryStore>, model: &Arc<Scripted>) -> Arc<ChatService> {
    service_with(store, model, ChatSettings::default())
}

fn service_with<M: ChatModel + 'static>(
    store: &Arc<InMemoryStore>,
    model: &Arc<M>,
    settings: ChatSettings,
) -> Arc<ChatService> {
    Arc::new(ChatService::new(
        Arc::clone(store) as Arc<dyn SessionStore>,
        Arc::clone(model) as Arc<dyn ChatModel>,
        settings,
    ))
}

fn session() -> SessionKey {
    SessionKey::new(&SessionId::parse("s").unwrap(), None)
}

fn message(text: &str) -> Message {
    Message::parse(text, 1 << 20).unwrap()
}

#[tokio::test]
async fn a_lost_save_answer_stores_the_run_once() {
    let store = Arc::new(InMemoryStore::new());
    let model = Arc::new(Scripted::default());
    let chat = service(&store, &model);
    chat.send(&turn("one", Deadline::NONE, None)).await.unwrap();
    store.faults.lock().unwrap().lost_answers = 1;
    let reply = chat.send(&turn("two", Deadline::NONE, None)).await.unwrap();
    let runs = store.runs(&session());
    assert_eq!(runs.len(), 2, "the landed save is recognised, not repeated");
    assert_eq!(runs[1].id, reply.run_id);
    assert_eq!(model.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_conflicting_writer_is_merged_without_asking_the_model_again() {
    let store = Arc::new(InMemoryStore::new());
    let model = Arc::new(Scripted::default());
    let chat = service(&store, &model);
    store.faults.lock().unwrap().interleaved_writers = 1;
    let reply = chat
        .send(&turn("mine", Deadline::NONE, None))
        .await
        .unwrap();
    let runs = store.runs(&session());
    let inputs: Vec<&str> = runs.iter().map(|r| r.input.as_str()).collect();
    assert_eq!(inputs, ["another writer", "mine"]);
    assert_eq!(runs[1].id, reply.run_id);
    assert_eq!(reply.timings.save_attempts, 2);
    assert_eq!(model.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_receipt_is_replayed_without_the_model() {
    let store = Arc::new(InMemoryStore::new());
    let model = Arc::new(Scripted::default());
    let chat = service(&store, &model);
    let key = IdempotencyKey::parse("k/1#x").unwrap();
    let first = chat
        .send(&turn("hi", Deadline::NONE, Some(&key)))
        .await
        .unwrap();
    let again = chat
        .send(&turn("hi", Deadline::NONE, Some(&key)))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!((again.run_id, again.text), (first.run_id, first.text));
    assert_eq!(model.calls.load(Ordering::SeqCst), 1);
    assert_eq!(store.runs(&session()).len(), 1);
    let other = chat.send(&turn("other", Deadline::NONE, Some(&key))).await;
    assert!(matches!(other, Err(ChatError::KeyReused)));
}

#[tokio::test(start_paused = true)]
async fn a_hanging_store_answers_before_the_deadline() {
    let store = Arc::new(InMemoryStore::new());
    store.faults.lock().unwrap().save_delay = Some(Duration::from_secs(60));
    let model = Arc::new(Scripted::default());
    let chat = service(&store, &model);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3);
    let result = chat.send(&turn("hi", Deadline::at(deadline), None)).await;
    assert!(
        matches!(result, Err(ChatError::SaveUnconfirmed)),
        "{result:?}"
    );
    assert!(Instant::now() < deadline, "answered before the deadline");
}

#[tokio::test(start_paused = true)]
async fn the_model_gets_the_deadline_less_the_save_reserve() {
    let store = Arc::new(InMemoryStore::new());
    let model = Arc::new(Scripted {
        delay: Some(Duration::from_secs(60)),
        ..Scripted::default()
    });
    let chat = service(&store, &model);
    let deadline = Instant::now() + Duration::from_secs(4);
    let result = chat.send(&turn("hi", Deadline::at(deadline), None)).await;
    assert!(matches!(result, Err(ChatError::ModelTimeout)), "{result:?}");
    let left = deadline - Instant::now();
    assert!(
        left >= Duration::from_secs(2),
        "the save's reserve is kept: {left:?}"
    );
    assert!(store.runs(&session()).is_empty());
}

#[tokio::test]
async fn failures_store_nothing_and_oversized_replies_are_refused() {
    let store = Arc::new(InMemoryStore::new());
    let model = Arc::new(Scripted::default());
    model.answers.lock().unwrap().push(Err(ModelError::Empty));
    let chat = service(&store, &model);
    let failed = chat.send(&turn("hi", Deadline::NONE, None)).await;
    assert!(matches!(failed, Err(ChatError::ModelFailed(_))));
    model
        .answers
        .lock()
        .unwrap()
        .push(Ok("x".repeat(crate::store::spill::MAX_SPILL_BYTES + 10)));
    let huge = chat.send(&turn("hi", Deadline::NONE, None)).await;
    assert!(matches!(huge, Err(ChatError::ReplyTooLarge(_))), "{huge:?}");
    assert!(store.runs(&session()).is_empty());
    model.answers.lock().unwrap().push(Ok("y".repeat(1 << 20)));
    let big = chat.send(&turn("hi", Deadline::NONE, None)).await.unwrap();
    assert_eq!(big.text.len(), 1 << 20);
    assert_eq!(store.runs(&session()).len(), 1);
}

#[test]
fn prompt_carries_history_in_order() {
    let mut memory = Memory::default();
    memory.push(Run::new("Hello my name is Collin.", "Hello Collin!"));
    let message = Message::parse("What is my name?", 100).unwrap();
    let prompt = build_prompt(Some("Be brief."), None, &memory.runs, &message);
    let roles: Vec<_> = prompt.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::System, Role::User, Role::Assistant, Role::User]
    );
    assert_eq!(prompt[1].content, "Hello my name is Collin.");
    assert_eq!(prompt[3].content, "What is my name?");
    assert_eq!(build_prompt(None, None, &[], &message).len(), 1);
    let with_summary = build_prompt(None, Some("Ada was here."), &[], &message);
    assert_eq!(
        with_summary[0].content,
        "Summary of the earlier conversation: Ada was here."
    );
}

#[test]
fn the_window_keeps_the_newest_runs_within_budget() {
    let mut memory = Memory::default();
    for i in 0..10 {
        // 40 characters each way: 14 estimated tokens each, 28 a run.
        memory.push(Run::new(format!("{i:0>40}"), "a".repeat(40)));
    }
    // 3 runs fit in 100 (84), a 4th would not (112).
    assert_eq!(window_start(&memory, 100), 7);
    assert_eq!(window_start(&memory, 1), 10, "nothing fits");
    assert_eq!(window_start(&memory, 10_000), 0, "everything fits");
}

/// A model for the context's tests: logs every prompt, answers summary requests (after
/// `summary_delay`, failing the first `failing_folds`) with how many exchanges they held, and
/// reports prompt tokens at `token_factor` times the estimate, or `token_constant` whatever
/// the prompt (nothing with neither).
#[derive(Default)]
struct Folding {
    replies: Mutex<Vec<Prompt>>,
    folds: Mutex<Vec<Prompt>>,
    summary_delay: Option<Duration>,
    failing_folds: AtomicU32,
    token_factor: u64,
    token_constant: Option<u64>,
    /// What happened, in order: `reply` and `fold` asked, a streamed reply's first `piece`.
    order: Mutex<Vec<&'static str>>,
    /// A streamed reply's first piece comes after this (the engine taking in its prompt).
    first_piece_delay: Option<Duration>,
}

impl Folding {
    fn is_fold(prompt: &Prompt) -> bool {
        prompt.messages[0].content == SUMMARY_INSTRUCTION
    }
}

#[async_trait::async_trait]
impl ChatModel for Folding {
    async fn complete(
        &self,
        prompt: &Prompt,
        _deadline: Instant,
    ) -> Result<Completion, ModelError> {
        let last = prompt.messages.last().map_or("", |m| m.content.as_str());
        let text = if Folding::is_fold(prompt) {
            self.order.lock().unwrap().push("fold");
            self.folds.lock().unwrap().push(prompt.clone());
            if let Some(delay) = self.summary_delay {
                tokio::time::sleep(delay).await;
            }
            let failing = self.failing_folds.load(Ordering::SeqCst);
            if failing > 0 {
                self.failing_folds.store(failing - 1, Ordering::SeqCst);
                return Err(ModelError::Empty);
            }
            format!("folded {} exchanges", last.matches("User: ").count())
        } else {
            self.order.lock().unwrap().push("reply");
            self.replies.lock().unwrap().push(prompt.clone());
            format!("noted: {last}")
        };
        let reported = match self.token_constant {
            Some(constant) => Some(constant),
            None => {
                (self.token_factor > 0).then(|| self.token_factor * prompt_tokens(&prompt.messages))
            }
        };
        let usage = reported.map(|prompt_tokens| crate::model::Usage {
            prompt_tokens,
            ..Default::default()
        });
        Ok(Completion {
            calls: Vec::new(),
            text,
            truncated: false,
            usage,
        })
    }

    async fn stream(
        &self,
        prompt: &Prompt,
        deadline: Instant,
        deltas: crate::model::Deltas<'_>,
    ) -> Result<Completion, ModelError> {
        let completion = self.complete(prompt, deadline).await?;
        if let Some(delay) = self.first_piece_delay {
            tokio::time::sleep(delay).await;
        }
        self.order.lock().unwrap().push("piece");
        for piece in completion.text.split_inclusive(' ') {
            deltas(piece);
        }
        Ok(completion)
    }
}

fn folding_service(
    store: &Arc<InMemoryStore>,
    model: &Arc<Folding>,
    budget: u64,
) -> Arc<ChatService> {
    let settings = ChatSettings {
        history_token_budget: budget,
        ..ChatSettings::default()
    };
    service_with(store, model, settings)
}

/// A message of about 100 characters: 29 estimated tokens, and its reply as many more.
fn long_message(i: usize) -> String {
    format!("message {i:03}: {}", "lorem ipsum ".repeat(7))
}

#[tokio::test]
async fn prompts_keep_their_prefix_between_steps_and_fold_only_at_steps() {
    let store = Arc::new(InMemoryStore::new());
    let model = Arc::new(Folding::default());
    let chat = folding_service(&store, &model, 600);
    let mut steps = Vec::new();
    for i in 0..120 {
        let reply = chat
            .send(&turn(&long_message(i), Deadline::NONE, None))
            .await
            .unwrap();
        if reply.context.stepped {
            steps.push(i);
        }
        assert_eq!(
            reply.context.folded.is_some(),
            reply.context.stepped,
            "turn {i}"
        );
    }
    let replies = model.replies.lock().unwrap().clone();
    let folds = model.folds.lock().unwrap().len();
    // Each prompt is the one before plus the last run and the new message, but on the turn
    // after a step (the stepping turn itself is answered with the old window).
    for (i, pair) in replies.windows(2).enumerate() {
        let (before, after) = (&pair[0].messages, &pair[1].messages);
        let kept = after.len() == before.len() + 2 && after[..before.len()] == before[..];
        assert_eq!(!kept, steps.contains(&i), "turn {}", i + 1);
        assert_eq!(
            pair[0].cache_key, pair[1].cache_key,
            "one cache key a session"
        );
    }
    assert!(
        steps.len() <= 120 / 4,
        "the window moves in steps: {steps:?}"
    );
    assert_eq!(folds, steps.len(), "one fold a step, none between");
    // Every prompt within the budget plus its newest run.
    for prompt in &replies {
        let history: u64 = prompt.messages[..prompt.messages.len() - 1]
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| estimate_tokens(&m.content))
            .sum();
        assert!(history <= 600 + 60, "{history} history tokens");
    }
    // The summary reached the prompts once it was folded.
    assert!(replies.last().unwrap().messages[0]
        .content
        .starts_with(SUMMARY_PREFIX));
    assert!(
        !replies[0].cache_key.as_deref().unwrap_or("s").contains('s'),
        "a digest"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fold_never_delays_the_first_token() {
    let store = Arc::new(InMemoryStore::new());
    let model = Arc::new(Folding {
        summary_delay: Some(Duration::from_secs(5)),
        ..Folding::default()
    });
    let chat = folding_service(&store, &model, 600);
    for i in 0.. {
        let started = Instant::now();
        let mut events = chat.stream(turn(&long_message(i), Deadline::NONE, None));
        let mut first = None;
        let reply = loop {
            match events.recv().await.unwrap() {
                TurnEvent::Delta(_) => {
                    first.get_or_insert_with(|| started.elapsed());
                }
                TurnEvent::Finished(result) => break result.unwrap(),
                TurnEvent::Asking => {}
            }
        };
        if reply.context.folded.is_some() {
            assert!(first.unwrap() < Duration::from_millis(10), "{first:?}");
            assert!(
                started.elapsed() >= Duration::from_secs(5),
                "the save waits for the fold"
            );
            assert_eq!(reply.context.folded, Some(true));
            return;
        }
        assert!(i < 40, "the window never stepped");
    }
}

/// One engine serving the reply and the fold at once takes in both prompts before the reply's
/// first token: a streamed step asks its fold only once the reply's first piece has come.
#[tokio::test(start_paused = true)]
async fn a_streamed_steps_fold_is_asked_after_the_replys_first_piece() {
    let store = Arc::new(InMemoryStore::new());
    let model = Arc::new(Folding {
        first_piece_delay: Some(Duration::from_millis(20)),
        ..Folding::default()
    });
    let chat = folding_service(&store, &model, 600);
    for i in 0.. {
        let mut events = chat.stream(turn(&long_message(i), Deadline::NONE, None));
        let reply = loop {
            if let TurnEvent::Finished(result) = events.recv().await.unwrap() {
                break result.unwrap();
            }
        };
        if reply.context.folded.is_some() {
            let order = model.order.lock().unwrap().clone();
            let fold = order.iter().rposition(|e| *e == "fold").unwrap();
            assert_eq!(
                order[fold - 2..=fold],
                ["reply", "piece", "fold"],
                "{order:?}"
            );
            assert_eq!(reply.context.folded, Some(true));
            return;
        }
        assert!(i < 40, "the window never stepped");
    }
}

#[tokio::test]
async fn a_failed_fold_keeps_the_old_summary_and_is_tried_at_the_next_step() {
    let store = Arc::new(InMemoryStore::new());
    let model = Arc::new(Folding::default());
    let chat = folding_service(&store, &model, 600);
    let mut outcomes = Vec::new();
    for i in 0..60 {
        if outcomes.len() == 1 {
            // The second fold fails.
            model.failing_folds.store(1, Ordering::SeqCst);
        }
        let reply = chat
            .send(&turn(&long_message(i), Deadline::NONE, None))
            .await
            .unwrap();
        if let Some(folded) = reply.context.folded {
            outcomes.push(folded);
        }
        if outcomes.len() == 3 {
            break;
        }
    }
    assert_eq!(outcomes, [true, false, true]);
    let folds = model.folds.lock().unwrap().clone();
    let exchanges = |p: &Prompt| p.messages[1].content.matches("User: ").count();
    // The third fold took the runs the second could not, and its own.
    assert!(
        exchanges(&folds[2]) > exchanges(&folds[0]),
        "{:?}",
        folds.iter().map(exchanges).collect::<Vec<_>>()
    );
    assert!(
        folds[2].messages[1]
            .content
            .starts_with("Summary so far:\nfolded"),
        "the first summary kept"
    );
}

#[tokio::test]
async fn the_providers_token_count_calibrates_the_budget() {
    let store = Arc::new(InMemoryStore::new());
    let model = Arc::new(Folding {
        token_factor: 2,
        ..Folding::default()
    });
    let chat = folding_service(&store, &model, 600);
    for i in 0..60 {
        chat.send(&turn(&long_message(i), Deadline::NONE, None))
            .await
            .unwrap();
    }
    let snapshot = store.load(&session()).await.unwrap();
    assert_eq!(snapshot.token_scale, Some(2000));
    // Counted as the provider counts, every prompt's history stays within the budget.
    for prompt in model.replies.lock().unwrap().iter().skip(1) {
        let history: u64 = prompt.messages[..prompt.messages.len() - 1]
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| 2 * estimate_tokens(&m.content))
            .sum();
        assert!(
            history <= 600 + 120,
            "{history} tokens as the provider counts them"
        );
    }
}

/// The invariant of docs/context.md ("Which reports count"): a report of zero, a constant or
/// 100x the truth leaves the session's scale unset, and every prompt is the one the same
/// conversation sends with no report at all, so its history stays within 1.5 budgets.
#[tokio::test]
async fn a_report_that_cannot_be_right_changes_nothing_a_prompt_holds() {
    async fn prompts(model: Folding) -> (Vec<Prompt>, Option<u64>) {
        let store = Arc::new(InMemoryStore::new());
        let model = Arc::new(model);
        let chat = folding_service(&store, &model, 600);
        for i in 0..60 {
            chat.send(&turn(&long_message(i), Deadline::NONE, None))
                .await
                .unwrap();
        }
        let scale = store.load(&session()).await.unwrap().token_scale;
        let replies = model.replies.lock().unwrap().clone();
        (replies, scale)
    }
    let (unreported, scale) = prompts(Folding::default()).await;
    assert_eq!(scale, None);
    let bad = [
        ("zero", Some(0), 0),
        ("a constant 10", Some(10), 0),
        ("100x", None, 100),
    ];
    for (name, token_constant, token_factor) in bad {
        let (sent, scale) = prompts(Folding {
            token_constant,
            token_factor,
            ..Folding::default()
        })
        .await;
        assert_eq!(scale, None, "{name}: the scale stays unset");
        assert!(sent == unreported, "{name}: the prompts of no report");
        for prompt in &sent {
            let history: u64 = prompt.messages[..prompt.messages.len() - 1]
                .iter()
                .filter(|m| m.role != Role::System)
                .map(|m| estimate_tokens(&m.content))
                .sum();
            assert!(history <= 900, "{name}: {history} tokens of history");
        }
    }
    // The same conversation with honest reports does calibrate.
    let (_, scale) = prompts(Folding {
        token_factor: 2,
        ..Folding::default()
    })
    .await;
    assert_eq!(scale, Some(2000));
}

#[test]
fn an_implausible_report_is_logged_once_a_session() {
    let logged = turn::LoggedOnce::default();
    assert!(logged.first("a"));
    assert!(!logged.first("a"), "once");
    assert!(logged.first("b"), "another session");
    assert!(!logged.first("b"));
    // Full, it starts over rather than grow.
    for i in 0..10_000 {
        logged.first(&format!("s{i}"));
    }
    assert!(logged.first("a"), "forgotten once the set filled");
}

#[tokio::test]
async fn short_conversations_send_the_prompts_they_always_did() {
    let store = Arc::new(InMemoryStore::new());
    let model = Arc::new(Folding::default());
    let chat = folding_service(&store, &model, crate::config::DEFAULT_HISTORY_TOKEN_BUDGET);
    let said = ["Hello my name is Collin.", "What is my name?", "Thanks."];
    for text in said {
        chat.send(&turn(text, Deadline::NONE, None)).await.unwrap();
    }
    let replies = model.replies.lock().unwrap().clone();
    let runs = store.runs(&session());
    for (i, prompt) in replies.iter().enumerate() {
        assert_eq!(
            prompt.messages,
            build_prompt(None, None, &runs[..i], &message(said[i]))
        );
    }
    assert!(model.folds.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_spent_turn_quota_refuses_before_the_model_and_a_saved_turn_is_replayed() {
    let store = Arc::new(InMemoryStore::new());
    let model = Arc::new(Scripted::default());
    let settings = ChatSettings {
        quotas: Quotas {
            turns_per_minute: Some(2),
            tokens_per_day: None,
        },
        ..ChatSettings::default()
    };
    let chat = service_with(&store, &model, settings);
    let key = IdempotencyKey::parse("k-1").unwrap();
    let first = chat
        .send(&turn("one", Deadline::NONE, Some(&key)))
        .await
        .unwrap();
    chat.send(&turn("two", Deadline::NONE, None)).await.unwrap();
    let refused = chat.send(&turn("three", Deadline::NONE, None)).await;
    let Err(ChatError::QuotaExceeded { kind, retry_after }) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(kind, QuotaKind::TurnsPerMinute);
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        model.calls.load(Ordering::SeqCst),
        2,
        "the model was not asked"
    );
    assert_eq!(store.runs(&session()).len(), 2, "nothing stored");
    // Over the quota, a keyed retry of a saved turn is still its reply.
    let again = chat
        .send(&turn("one", Deadline::NONE, Some(&key)))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.run_id, first.run_id);
    assert!(matches!(
        chat.send(&turn("four", Deadline::NONE, None)).await,
        Err(ChatError::QuotaExceeded { .. })
    ));
}

#[tokio::test]
async fn the_token_quota_counts_the_replies_and_the_folds() {
    let store = Arc::new(InMemoryStore::new());
    let model = Arc::new(Folding {
        token_factor: 1,
        ..Folding::default()
    });
    let settings = ChatSettings {
        history_token_budget: 600,
        quotas: Quotas {
            turns_per_minute: None,
            tokens_per_day: Some(1 << 40),
        },
        ..ChatSettings::default()
    };
    let chat = service_with(&store, &model, settings);
    for i in 0..40 {
        chat.send(&turn(&long_message(i), Deadline::NONE, None))
            .await
            .unwrap();
    }
    let folds = model.folds.lock().unwrap().clone();
    assert!(!folds.is_empty(), "the window stepped and folded");
    let reported: u64 = model
        .replies
        .lock()
        .unwrap()
        .iter()
        .chain(&folds)
        .map(|p| prompt_tokens(&p.messages))
        .sum();
    let now = crate::store::item::Now::current().secs;
    let counter = crate::store::quota::tokens(&crate::store::quota::who(None, &session()), now);
    assert_eq!(store.tokens_spent(&counter).await.unwrap(), reported);
}
