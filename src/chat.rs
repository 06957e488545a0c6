//! The chat cycle: load the session, prompt the model with it, append the run, save, reply.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::deadline::{Deadline, ERASE_MARGIN, SAVE_RESERVE, STORE_MARGIN};
use crate::input::{IdempotencyKey, Message, SessionKey};
use crate::memory::{Format, Memory, Run};
use crate::model::{ChatMessage, ChatModel, Completion, ModelError, Role, Usage};
use crate::store::{
    Changes, Deleted, HistoryPage, PageLimit, Receipt, SessionStore, Span, StoreError, Summary,
};

/// Tunables of the cycle.
#[derive(Debug, Clone)]
pub struct ChatSettings {
    pub system_prompt: Option<String>,
    pub max_runs: Option<u64>,
    /// The longest one model call may take, whatever the deadline.
    pub model_timeout: Duration,
    /// Time kept back from the model for saving and answering before the invocation's deadline.
    pub save_reserve: Duration,
    /// Save attempts when other writers keep saving the same session in between.
    pub max_save_attempts: u32,
    /// The most history, in estimated tokens, sent with a prompt: the newest runs that fit.
    pub history_token_budget: u64,
    /// Fold runs that fall out of the prompt window into a running summary sent as context.
    pub summarize: bool,
    /// The shape new sessions are stored in; existing sessions keep theirs.
    pub new_session_format: Format,
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            system_prompt: None,
            max_runs: None,
            model_timeout: crate::config::DEFAULT_MODEL_TIMEOUT,
            save_reserve: SAVE_RESERVE,
            max_save_attempts: 16,
            history_token_budget: crate::config::DEFAULT_HISTORY_TOKEN_BUDGET,
            summarize: false,
            new_session_format: Format::Seed,
        }
    }
}

/// The answer to one message, after it is saved.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub run_id: String,
    pub text: String,
    pub usage: Option<Usage>,
    /// The answer was saved by an earlier request with the same idempotency key.
    pub replayed: bool,
    /// Wall time of each phase, for the request's log line.
    pub timings: Timings,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    pub load_ms: u64,
    pub model_ms: u64,
    pub save_ms: u64,
    pub save_attempts: u32,
    /// A streamed turn: from asking the model to its first piece of text.
    pub first_piece_ms: Option<u64>,
}

/// Why a request to the cycle failed, classified for the client. In every case but
/// [`ChatError::SaveUnconfirmed`] the session is as it was before the request.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The model failed, answered nothing usable, or kept failing after retries.
    #[error("the model failed")]
    ModelFailed(#[source] ModelError),
    #[error("the model did not answer in time")]
    ModelTimeout,
    /// The table is unreachable, missing or throttled.
    #[error("the session table is unavailable")]
    StoreUnavailable(#[source] StoreError),
    /// A store call did not answer before the deadline; nothing was saved.
    #[error("the session table did not answer in time")]
    StoreTimeout,
    /// The save did not answer before the deadline: it may or may not have landed.
    #[error("the save did not answer in time")]
    SaveUnconfirmed,
    /// Other writers kept saving the session; every attempt met a newer version.
    #[error("the session was too busy to save after {0} attempts")]
    Busy(u32),
    /// The stored item is not valid memory; it is left as it is.
    #[error("the stored session is corrupt")]
    Corrupt(#[source] StoreError),
    /// The reply is larger than one turn can store.
    #[error("the reply is too large to store")]
    ReplyTooLarge(#[source] StoreError),
    /// The idempotency key was used before with another message.
    #[error("this Idempotency-Key was already used with a different message")]
    KeyReused,
    /// A history cursor from another session or an earlier incarnation of this one.
    #[error("the cursor does not belong to this session")]
    InvalidCursor,
    /// The session belongs to another owner.
    #[error("this session belongs to another owner")]
    Forbidden,
    /// Listing sessions needs the owner index, which this deployment does not have.
    #[error("listing sessions is not enabled here (no OWNER_INDEX)")]
    ListingDisabled,
    /// Anything else the store refused.
    #[error("the session store failed")]
    Internal(#[source] StoreError),
}

/// What an erase of a user's sessions did within one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erased {
    pub deleted: u64,
    /// Sessions (or their cleanup) left for the next call.
    pub remaining: bool,
}

impl From<ModelError> for ChatError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Timeout => ChatError::ModelTimeout,
            other => ChatError::ModelFailed(other),
        }
    }
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ChatError::StoreUnavailable(e),
            StoreError::OutOfTime => ChatError::StoreTimeout,
            StoreError::Corrupt(_) => ChatError::Corrupt(e),
            StoreError::InvalidCursor => ChatError::InvalidCursor,
            StoreError::TooLarge(_) => ChatError::ReplyTooLarge(e),
            // Reaching the client, these mean the session stayed busy.
            StoreError::Conflict | StoreError::ReceiptExists => ChatError::Busy(1),
            StoreError::OwnerMismatch => ChatError::Forbidden,
            StoreError::NoIndex => ChatError::ListingDisabled,
            StoreError::Failed(_) => ChatError::Internal(e),
        }
    }
}

/// Runs a store call, cut off at the deadline (less [`STORE_MARGIN`]).
async fn bounded<T>(
    deadline: Deadline,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<Result<T, StoreError>, ChatError> {
    deadline
        .less(STORE_MARGIN)
        .bound(call)
        .await
        .map_err(|_| ChatError::StoreTimeout)
}

pub struct ChatService {
    store: Arc<dyn SessionStore>,
    model: Arc<dyn ChatModel>,
    settings: ChatSettings,
}

impl ChatService {
    pub fn new(
        store: Arc<dyn SessionStore>,
        model: Arc<dyn ChatModel>,
        settings: ChatSettings,
    ) -> Self {
        ChatService {
            store,
            model,
            settings,
        }
    }

    /// A page of a session's runs, oldest first; `None` if the session is unknown.
    pub async fn history(
        &self,
        session: &SessionKey,
        span: Span<'_>,
        limit: PageLimit,
        deadline: Deadline,
    ) -> Result<Option<HistoryPage>, ChatError> {
        Ok(bounded(deadline, self.store.history(session, span, limit)).await??)
    }

    /// A page of an owner's sessions, most recently active first.
    pub async fn list(
        &self,
        owner: &str,
        limit: usize,
        cursor: Option<&str>,
        deadline: Deadline,
    ) -> Result<crate::store::SessionList, ChatError> {
        Ok(bounded(deadline, self.store.list(owner, limit, cursor, false)).await??)
    }

    /// Names a session; `false` if it does not exist.
    pub async fn set_title(
        &self,
        session: &SessionKey,
        title: &str,
        deadline: Deadline,
    ) -> Result<bool, ChatError> {
        Ok(bounded(deadline, self.store.set_title(session, title)).await??)
    }

    /// Erases an owner's sessions, with everything stored beside them, in batches until the
    /// deadline draws near; call again while `remaining`.
    pub async fn erase(&self, owner: &str, deadline: Deadline) -> Result<Erased, ChatError> {
        let stop = deadline.less(ERASE_MARGIN);
        let out_of_time = || stop.passed();
        let unfinished = |deleted| {
            Ok(Erased {
                deleted,
                remaining: true,
            })
        };
        let mut deleted = 0;
        loop {
            if out_of_time() {
                return unfinished(deleted);
            }
            let Ok(page) = bounded(stop, self.store.list(owner, 25, None, true)).await else {
                return unfinished(deleted);
            };
            let page = page?;
            if page.sessions.is_empty() {
                return Ok(Erased {
                    deleted,
                    remaining: false,
                });
            }
            for listed in page.sessions {
                if out_of_time() {
                    return unfinished(deleted);
                }
                let key = SessionKey::from_stored(listed.key);
                let outcome = match self.store.delete(&key, deadline).await {
                    Ok(outcome) => outcome,
                    // Out of time before this one's tombstone: it is whole, and next.
                    Err(StoreError::OutOfTime) => return unfinished(deleted),
                    Err(StoreError::Unavailable(_)) if out_of_time() => return unfinished(deleted),
                    Err(e) => return Err(e.into()),
                };
                // A tombstone left by an earlier erase was counted then.
                let counted = u64::from(!listed.deleted);
                match outcome {
                    Deleted::Gone { complete: false } => return unfinished(deleted + counted),
                    Deleted::Gone { complete: true } => deleted += counted,
                    Deleted::NotFound => {}
                }
            }
        }
    }

    /// Forgets a session with everything stored beside it.
    pub async fn forget(
        &self,
        session: &SessionKey,
        deadline: Deadline,
    ) -> Result<Deleted, ChatError> {
        // The store keeps the deadline itself: once the session is gone, running out of
        // time is not an error but an unfinished cleanup.
        Ok(self.store.delete(session, deadline).await?)
    }

    /// Runs one turn. `deadline` is when the caller stops waiting (the Lambda invocation's end).
    /// With an idempotency key, a retry of a saved turn gets the saved reply, and the model is
    /// not asked again.
    pub async fn send(
        &self,
        session: &SessionKey,
        message: &Message,
        deadline: Deadline,
        key: Option<&IdempotencyKey>,
    ) -> Result<Reply, ChatError> {
        self.send_for(None, session, message, deadline, key).await
    }

    /// [`ChatService::send`] on behalf of `owner` (an owner key): a new session becomes
    /// theirs, and a session of another owner is refused.
    pub async fn send_for(
        &self,
        owner: Option<&str>,
        session: &SessionKey,
        message: &Message,
        deadline: Deadline,
        key: Option<&IdempotencyKey>,
    ) -> Result<Reply, ChatError> {
        let turn = match self.prepare(owner, session, message, deadline, key).await? {
            Prepared::Replayed(reply) => return Ok(reply),
            Prepared::Turn(turn) => turn,
        };
        let completion = self
            .model
            .complete(&turn.prompt, turn.model_deadline)
            .await?;
        self.save_turn(owner, session, message, deadline, key, turn, completion)
            .await
    }

    /// Runs one turn as [`ChatService::send_for`] does, telling `progress` when the model is
    /// asked and handing it each piece of the answer as the model writes it. What is saved is
    /// exactly the pieces handed on, and only once the model has finished; a model that fails,
    /// times out or stops mid-answer leaves the session as it was. A replayed turn, and a turn
    /// refused before the model is asked, report no progress.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_streaming(
        &self,
        owner: Option<&str>,
        session: &SessionKey,
        message: &Message,
        deadline: Deadline,
        key: Option<&IdempotencyKey>,
        progress: &mut (dyn FnMut(Progress<'_>) + Send),
    ) -> Result<Reply, ChatError> {
        let turn = match self.prepare(owner, session, message, deadline, key).await? {
            Prepared::Replayed(reply) => return Ok(reply),
            Prepared::Turn(turn) => turn,
        };
        progress(Progress::Asking);
        let mut streamed = String::new();
        let mut first_piece = None;
        let model_started = Instant::now();
        let mut forward = |piece: &str| {
            first_piece.get_or_insert_with(|| ms_since(model_started));
            streamed.push_str(piece);
            progress(Progress::Delta(piece));
        };
        let completion = self
            .model
            .stream(&turn.prompt, turn.model_deadline, &mut forward)
            .await;
        let mut completion = completion?;
        // Stored is what the client was sent, piece for piece.
        completion.text = streamed;
        let mut reply = self
            .save_turn(owner, session, message, deadline, key, turn, completion)
            .await?;
        reply.timings.first_piece_ms = first_piece;
        Ok(reply)
    }

    /// Reads the session (and the key's receipt), folds the summary when asked to, and builds
    /// the prompt: everything a turn does before the model answers.
    async fn prepare(
        &self,
        owner: Option<&str>,
        session: &SessionKey,
        message: &Message,
        deadline: Deadline,
        key: Option<&IdempotencyKey>,
    ) -> Result<Prepared, ChatError> {
        let mut timings = Timings::default();
        let started = Instant::now();
        let snapshot = bounded(deadline, self.store.load(session)).await??;
        if let (Some(have), Some(want)) = (snapshot.owner.as_deref(), owner) {
            if have != want {
                return Err(ChatError::Forbidden);
            }
        }
        if let Some(key) = key {
            let found = bounded(deadline, self.store.receipt(session, &snapshot, key)).await??;
            if let Some(receipt) = found {
                return replay(receipt, message, timings).map(Prepared::Replayed);
            }
        }
        timings.load_ms = ms_since(started);

        let model_started = Instant::now();
        let model_deadline = deadline.cap(
            model_started + self.settings.model_timeout,
            self.settings.save_reserve,
            model_started,
        );
        let budget = self.settings.history_token_budget;
        let window = window_start(&snapshot.memory, budget);
        let new_summary = if self.settings.summarize {
            self.fold(session, &snapshot, window, model_deadline).await
        } else {
            None
        };
        let summary = new_summary.as_ref().or(snapshot.summary.as_ref());
        let prompt = build_prompt(
            self.settings.system_prompt.as_deref(),
            summary
                .filter(|_| self.settings.summarize)
                .map(|s| s.text.as_str()),
            &snapshot.memory.runs[window..],
            message,
        );
        Ok(Prepared::Turn(Box::new(Turn {
            snapshot,
            prompt,
            new_summary,
            model_started,
            model_deadline,
            timings,
        })))
    }

    /// Appends the model's answer to the session and saves it: conditional on the version
    /// read, re-reading and appending again after another writer's save, recognising a save
    /// of ours whose answer was lost, and replaying a racing request's receipt.
    #[allow(clippy::too_many_arguments)]
    async fn save_turn(
        &self,
        owner: Option<&str>,
        session: &SessionKey,
        message: &Message,
        deadline: Deadline,
        key: Option<&IdempotencyKey>,
        turn: Box<Turn>,
        completion: Completion,
    ) -> Result<Reply, ChatError> {
        let Turn {
            mut snapshot,
            new_summary,
            model_started,
            mut timings,
            ..
        } = *turn;
        timings.model_ms = ms_since(model_started);
        if completion.truncated {
            tracing::warn!(session_id = %session, "the model's answer was cut off at its length limit");
        }

        let run = Run::new(message.as_str(), completion.text);
        let receipt = key.map(|key| Receipt {
            key: key.clone(),
            message_digest: crate::store::message_digest(message.as_str()),
            run_id: run.id.clone(),
            reply: run.output.clone(),
        });
        let save_started = Instant::now();
        let mut backoff = Duration::from_millis(10);
        for attempt in 1..=self.settings.max_save_attempts {
            timings.save_attempts = attempt;
            let mut memory = snapshot.memory.clone();
            if snapshot.fresh {
                memory.format = self.settings.new_session_format;
            }
            if self.settings.max_runs.is_some() {
                memory.max_runs = self.settings.max_runs;
            }
            memory.push(run.clone());
            let changes = Changes {
                memory: &memory,
                receipt: receipt.as_ref(),
                summary: new_summary.as_ref(),
                owner,
            };
            let saved = match bounded(deadline, self.store.save(session, changes, &snapshot)).await
            {
                Ok(saved) => saved,
                // Cut off mid-save: it may have landed. A retry with the same key finds out.
                Err(_) => return Err(ChatError::SaveUnconfirmed),
            };
            let reply = |timings| Reply {
                run_id: run.id.clone(),
                text: run.output.clone(),
                usage: completion.usage,
                replayed: false,
                timings,
            };
            match saved {
                Ok(()) => {
                    timings.save_ms = ms_since(save_started);
                    return Ok(reply(timings));
                }
                Err(StoreError::Conflict) => {
                    // Someone saved in between, or our own save landed and its answer was lost
                    // (the SDK then retried it into a conflict). Read again: if our run is
                    // there, the turn is done; else add it after theirs. The model is not asked
                    // again; its answer stands.
                    let jitter = rand::random_range(0..=backoff.as_millis() as u64);
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                    snapshot = bounded(deadline, self.store.load(session))
                        .await
                        .map_err(|_| ChatError::SaveUnconfirmed)??;
                    if snapshot.holds_run(&run.id) {
                        timings.save_ms = ms_since(save_started);
                        return Ok(reply(timings));
                    }
                }
                Err(StoreError::ReceiptExists) => {
                    // A retry of this request saved first: its run stands, ours is dropped.
                    let key = key.ok_or(ChatError::Busy(attempt))?;
                    snapshot = bounded(deadline, self.store.load(session)).await??;
                    let found =
                        bounded(deadline, self.store.receipt(session, &snapshot, key)).await??;
                    return replay(found.ok_or(ChatError::Busy(attempt))?, message, timings);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ChatError::Busy(self.settings.max_save_attempts))
    }
}

/// What a streamed turn reports as it goes (see [`ChatService::send_streaming`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress<'a> {
    /// The session is read and the model is being asked: the turn was not refused.
    Asking,
    /// The next piece of the answer.
    Delta(&'a str),
}

/// A turn after its read: replayed from a receipt, or ready for the model.
enum Prepared {
    Replayed(Reply),
    Turn(Box<Turn>),
}

/// What a turn carries from its read to its save.
struct Turn {
    snapshot: crate::store::Snapshot,
    prompt: Vec<ChatMessage>,
    new_summary: Option<Summary>,
    model_started: Instant,
    model_deadline: Instant,
    timings: Timings,
}

impl ChatService {
    /// Folds the runs between the stored summary and the prompt window into a new summary.
    /// A failed fold is logged and skipped: the turn goes on with the old summary.
    async fn fold(
        &self,
        session: &SessionKey,
        snapshot: &crate::store::Snapshot,
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

fn replay(receipt: Receipt, message: &Message, timings: Timings) -> Result<Reply, ChatError> {
    if receipt.message_digest != crate::store::message_digest(message.as_str()) {
        return Err(ChatError::KeyReused);
    }
    Ok(Reply {
        run_id: receipt.run_id,
        text: receipt.reply,
        usage: None,
        replayed: true,
        timings,
    })
}

fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::SessionId;
    use crate::store::in_memory::InMemoryStore;
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
            messages: &[ChatMessage],
            deadline: Instant,
        ) -> Result<Completion, ModelError> {
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
            messages: &[ChatMessage],
            deadline: Instant,
            deltas: crate::model::Deltas<'_>,
        ) -> Result<Completion, ModelError> {
            let completion = self.complete(messages, deadline).await?;
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
        chat: &ChatService,
        text: &str,
        key: Option<&IdempotencyKey>,
    ) -> (Result<Reply, ChatError>, Vec<String>) {
        let mut seen = Vec::new();
        let mut progress = |p: Progress<'_>| {
            seen.push(match p {
                Progress::Asking => "<asking>".to_owned(),
                Progress::Delta(piece) => piece.to_owned(),
            })
        };
        let result = chat
            .send_streaming(
                None,
                &session(),
                &message(text),
                Deadline::NONE,
                key,
                &mut progress,
            )
            .await;
        (result, seen)
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

    fn service(store: &Arc<InMemoryStore>, model: &Arc<Scripted>) -> ChatService {
        ChatService::new(
            Arc::clone(store) as Arc<dyn SessionStore>,
            Arc::clone(model) as Arc<dyn ChatModel>,
            ChatSettings::default(),
        )
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
        chat.send(&session(), &message("one"), Deadline::NONE, None)
            .await
            .unwrap();
        store.faults.lock().unwrap().lost_answers = 1;
        let reply = chat
            .send(&session(), &message("two"), Deadline::NONE, None)
            .await
            .unwrap();
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
            .send(&session(), &message("mine"), Deadline::NONE, None)
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
            .send(&session(), &message("hi"), Deadline::NONE, Some(&key))
            .await
            .unwrap();
        let again = chat
            .send(&session(), &message("hi"), Deadline::NONE, Some(&key))
            .await
            .unwrap();
        assert!(again.replayed);
        assert_eq!((again.run_id, again.text), (first.run_id, first.text));
        assert_eq!(model.calls.load(Ordering::SeqCst), 1);
        assert_eq!(store.runs(&session()).len(), 1);
        let other = chat
            .send(&session(), &message("other"), Deadline::NONE, Some(&key))
            .await;
        assert!(matches!(other, Err(ChatError::KeyReused)));
    }

    #[tokio::test]
    async fn a_hanging_store_answers_before_the_deadline() {
        let store = Arc::new(InMemoryStore::new());
        store.faults.lock().unwrap().save_delay = Some(Duration::from_secs(60));
        let model = Arc::new(Scripted::default());
        let chat = service(&store, &model);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(3);
        let result = chat
            .send(&session(), &message("hi"), Deadline::at(deadline), None)
            .await;
        assert!(
            matches!(result, Err(ChatError::SaveUnconfirmed)),
            "{result:?}"
        );
        assert!(Instant::now() < deadline, "answered before the deadline");
    }

    #[tokio::test]
    async fn the_model_gets_the_deadline_less_the_save_reserve() {
        let store = Arc::new(InMemoryStore::new());
        let model = Arc::new(Scripted {
            delay: Some(Duration::from_secs(60)),
            ..Scripted::default()
        });
        let chat = service(&store, &model);
        let deadline = Instant::now() + Duration::from_secs(4);
        let result = chat
            .send(&session(), &message("hi"), Deadline::at(deadline), None)
            .await;
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
        let failed = chat
            .send(&session(), &message("hi"), Deadline::NONE, None)
            .await;
        assert!(matches!(failed, Err(ChatError::ModelFailed(_))));
        model
            .answers
            .lock()
            .unwrap()
            .push(Ok("x".repeat(crate::store::policy::MAX_SPILL_BYTES + 10)));
        let huge = chat
            .send(&session(), &message("hi"), Deadline::NONE, None)
            .await;
        assert!(matches!(huge, Err(ChatError::ReplyTooLarge(_))), "{huge:?}");
        assert!(store.runs(&session()).is_empty());
        model.answers.lock().unwrap().push(Ok("y".repeat(1 << 20)));
        let big = chat
            .send(&session(), &message("hi"), Deadline::NONE, None)
            .await
            .unwrap();
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
}
