//! The chat cycle against the in-memory store (with its faults) and a scripted model.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::deadline::Deadline;
use crate::input::SessionId;
use crate::input::{IdempotencyKey, Message, SessionKey};
use crate::memory::{Memory, Run};
use crate::model::{ChatModel, Completion, ModelError, Prompt, Role};
use crate::store::in_memory::InMemoryStore;
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
    async fn complete(
        &self,
        prompt: &Prompt,
        deadline: Instant,
    ) -> Result<Completion, ModelError> {
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
    Arc::new(ChatService::new(
        Arc::clone(store) as Arc<dyn SessionStore>,
        Arc::clone(model) as Arc<dyn ChatModel>,
        ChatSettings::default(),
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
        .push(Ok("x".repeat(crate::store::policy::MAX_SPILL_BYTES + 10)));
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
