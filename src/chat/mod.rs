//! The chat cycle: load the session, prompt the model with it, append the run, save, reply.
//!
//! [`ChatService`] is what the adapters call: [`ChatService::send`] and [`ChatService::stream`]
//! run one [`TurnRequest`]; the read, title, delete and erase calls serve the session routes.
//! The cycle depends on the [`SessionStore`] and [`ChatModel`] traits only.

mod erase;
mod live;
mod prompt;
mod turn;

use std::sync::Arc;
use std::time::Duration;

use crate::deadline::{Deadline, SAVE_RESERVE, STORE_MARGIN};
use crate::input::{IdempotencyKey, Message, OwnerKey, Rating, SessionKey};
use crate::memory::Format;
use crate::model::{ChatModel, ModelError, ModelOptions, ToolCall, Usage};
use crate::store::quota::{QuotaKind, Quotas};
use crate::store::{message_digest, Branch, Changes, SessionStore, StoreError};
// What the session routes read, re-exported so the adapters need only this module.
pub use crate::store::{
    About, Cursor, Deleted, Feedback, FoundRun, HistoryPage, Listed, LiveStatus, PageLimit, Place,
    RunNotes, SessionList, Span,
};

pub use erase::Erased;
pub use live::Followed;
pub use prompt::{
    build_prompt, estimate_tokens, window_start, SUMMARY_INSTRUCTION, SUMMARY_PREFIX,
};
pub use turn::render_calls;

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
    /// Fold the runs that leave the prompt window, when it steps, into a running summary sent
    /// as context (on by default).
    pub summarize: bool,
    /// The shape new sessions are stored in; existing sessions keep theirs.
    pub new_session_format: Format,
    /// Per-owner limits, checked before the model is called (off by default).
    pub quotas: Quotas,
    /// A streamed reply with a known run id keeps its pieces while it is written, for
    /// followers (docs/storage.md, "Replies in progress").
    pub resumable: bool,
    /// How often those pieces are written.
    pub live_every: Duration,
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
            summarize: true,
            new_session_format: Format::Seed,
            quotas: Quotas::default(),
            resumable: true,
            live_every: Duration::from_millis(crate::config::DEFAULT_LIVE_WRITE_MS),
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
    /// What the turn did to the prompt's context (see docs/context.md), for the log line.
    pub context: ContextChange,
    /// The functions the reply asked to be called (its text may then be empty).
    pub calls: Vec<ToolCall>,
    /// The record saved with the run ([`TurnExtras::record`] with what the cycle adds).
    pub record: Option<String>,
}

/// What a turn did to the prompt's context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextChange {
    /// The window stepped: the next turn's window starts later.
    pub stepped: bool,
    /// A summary fold ran beside the reply, and whether it gave a new summary.
    pub folded: Option<bool>,
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
    /// No run with this id in the session.
    #[error("no such run in this session")]
    RunNotFound,
    /// The run is not on the conversation's active path (an edit), or there is no run to
    /// regenerate.
    #[error("the run is not on the conversation's active path")]
    RunNotOnPath,
    /// A place holds as many versions as it may keep, or the session as many forks.
    #[error("no more versions can be kept here (16 at one place, 200 in a session)")]
    TooManyVersions,
    /// The caller's quota is spent: `retry_after` seconds until its window ends.
    #[error("the {} quota is spent", match kind { QuotaKind::TurnsPerMinute => "turns-per-minute", QuotaKind::TokensPerDay => "tokens-per-day" })]
    QuotaExceeded { kind: QuotaKind, retry_after: u64 },
    /// Anything else the store refused.
    #[error("the session store failed")]
    Internal(#[source] StoreError),
    /// A client cancelled the reply while it was written; nothing was stored.
    #[error("the reply was cancelled")]
    Cancelled,
    /// A followed reply's turn failed; nothing was stored.
    #[error("the reply failed before it was saved")]
    ReplyFailed,
    /// The run the turn was to follow ([`TurnExtras::after`]) is not the path's last.
    #[error("the run to follow is no longer the conversation's last")]
    NotLast,
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
            StoreError::RunNotFound => ChatError::RunNotFound,
            StoreError::RunNotOnPath => ChatError::RunNotOnPath,
            StoreError::TooManyVersions => ChatError::TooManyVersions,
            StoreError::Failed(_) => ChatError::Internal(e),
        }
    }
}

/// One message to answer: whose session, what was said, on whose behalf, with which
/// idempotency key, and when the caller stops waiting.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    pub session: SessionKey,
    /// What the turn answers: a new message, or another version of a run.
    pub say: Say,
    /// The owner a new session becomes theirs; a session of another owner is refused.
    pub owner: Option<OwnerKey>,
    /// A retry with the same key gets the saved reply, without asking the model again.
    pub idempotency_key: Option<IdempotencyKey>,
    /// When the caller stops waiting (the Lambda invocation's end).
    pub deadline: Deadline,
    /// What the Responses API adds to a turn (none for `POST /chat`).
    pub extras: TurnExtras,
}

/// What a Responses API turn asks beyond a message (docs/responses.md).
#[derive(Debug, Clone, Default)]
pub struct TurnExtras {
    /// The new run's id, minted by the caller (a response's id is known before it is saved).
    pub run_id: Option<String>,
    /// This turn's instructions: sent as a system message before its message, not kept.
    pub instructions: Option<String>,
    pub options: ModelOptions,
    /// JSON kept with the run (the response's record: its usage, metadata, model).
    pub record: Option<String>,
    /// Functions the model may call (chat completions' `tools`, `tool_choice`).
    pub tools: Option<serde_json::Value>,
    pub tool_choice: Option<serde_json::Value>,
    /// The run this turn must follow: the turn answers [`ChatError::NotLast`] and stores
    /// nothing when it is not the active path's last run as read (a chained response checks
    /// its place in the turn's own read, not with one of its own).
    pub after: Option<String>,
    /// The results of the functions the previous run's reply called: the prompt ends with
    /// that reply's calls and these results, not with the message.
    pub results: Option<ToolResults>,
}

/// A turn that answers function results (docs/responses.md, "Function calls").
#[derive(Debug, Clone, Default)]
pub struct ToolResults {
    /// The calls the previous reply made, and its text.
    pub calls: Vec<ToolCall>,
    pub text: String,
    /// `(call id, output)`, in order.
    pub outputs: Vec<(String, String)>,
}

/// What a turn answers (docs/api.md, "Versions").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Say {
    /// A new message after the conversation's last run.
    New(Message),
    /// The last run's message, answered again in its place.
    Regenerate,
    /// A new message in the place of this run (its id).
    Edit(String, Message),
}

impl Say {
    /// Where the store puts the turn's run.
    pub fn branch(&self) -> Branch {
        match self {
            Say::New(_) => Branch::Append,
            Say::Regenerate => Branch::Regenerate,
            Say::Edit(run_id, _) => Branch::Edit(run_id.clone()),
        }
    }

    /// What a receipt keeps to tell a retry of this request from another use of its key: a
    /// message's digest, or (never equal to one) the regeneration or the edit it asked for.
    pub fn digest(&self) -> String {
        match self {
            Say::New(message) => message_digest(message.as_str()),
            Say::Regenerate => "regenerate".to_owned(),
            Say::Edit(run_id, message) => format!(
                "edit:{}",
                crate::input::sha256_hex(&format!("{run_id}\n{}", message.as_str()))
            ),
        }
    }
}

impl TurnRequest {
    /// A turn with no owner, no idempotency key and no deadline.
    pub fn new(session: SessionKey, message: Message) -> TurnRequest {
        TurnRequest {
            session,
            say: Say::New(message),
            owner: None,
            idempotency_key: None,
            deadline: Deadline::NONE,
            extras: TurnExtras::default(),
        }
    }
}

/// What a streamed turn reports, in order: [`TurnEvent::Asking`] once the turn was not refused
/// and the model is asked, each [`TurnEvent::Delta`] as the model writes it, then
/// [`TurnEvent::Finished`]. A replayed or refused turn sends only `Finished`.
#[derive(Debug)]
pub enum TurnEvent {
    Asking,
    Delta(String),
    Finished(Result<Reply, ChatError>),
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
    /// The sessions whose implausible token report this process has logged.
    implausible_logged: turn::LoggedOnce,
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
            implausible_logged: turn::LoggedOnce::default(),
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
        owner: &OwnerKey,
        limit: usize,
        cursor: Option<&str>,
        deadline: Deadline,
    ) -> Result<SessionList, ChatError> {
        let call = self.store.list(owner.as_str(), limit, cursor, false);
        Ok(bounded(deadline, call).await??)
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

    /// Makes the active path go through a run (and its newest branch after it).
    pub async fn select(
        &self,
        session: &SessionKey,
        run_id: &str,
        deadline: Deadline,
    ) -> Result<(), ChatError> {
        Ok(bounded(deadline, self.store.select(session, run_id)).await??)
    }

    /// Removes one run's texts from everything stored.
    pub async fn delete_run(
        &self,
        session: &SessionKey,
        run_id: &str,
        deadline: Deadline,
    ) -> Result<(), ChatError> {
        Ok(bounded(deadline, self.store.delete_run(session, run_id)).await??)
    }

    /// Keeps a reader's rating with a run.
    pub async fn rate(
        &self,
        session: &SessionKey,
        run_id: &str,
        rating: &Rating,
        deadline: Deadline,
    ) -> Result<(), ChatError> {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let feedback = Feedback {
            up: rating.up,
            comment: rating.comment.clone(),
            at,
        };
        let call = self.store.set_feedback(session, run_id, &feedback);
        Ok(bounded(deadline, call).await??)
    }

    /// Whether the model takes functions (`tools`).
    pub fn takes_tools(&self) -> bool {
        self.model.takes_tools()
    }

    /// One run by id, whole, with its record and its place on the path.
    pub async fn find_run(
        &self,
        session: &SessionKey,
        run_id: &str,
        deadline: Deadline,
    ) -> Result<Option<FoundRun>, ChatError> {
        Ok(bounded(deadline, self.store.find_run(session, run_id)).await??)
    }

    /// Adds runs whose replies were written elsewhere (a conversation's items), each after the
    /// active path's last run, without asking the model; their ids, in order.
    pub async fn append_runs(
        &self,
        session: &SessionKey,
        owner: Option<&OwnerKey>,
        runs: Vec<(Message, String)>,
        deadline: Deadline,
    ) -> Result<Vec<String>, ChatError> {
        let mut ids = Vec::with_capacity(runs.len());
        for (input, output) in runs {
            let run = crate::memory::Run::new(input.as_str(), output);
            self.append_run(session, owner, &run, deadline).await?;
            ids.push(run.id);
        }
        Ok(ids)
    }

    async fn append_run(
        &self,
        session: &SessionKey,
        owner: Option<&OwnerKey>,
        run: &crate::memory::Run,
        deadline: Deadline,
    ) -> Result<(), ChatError> {
        for _ in 0..self.settings.max_save_attempts {
            let read = bounded(deadline, self.store.load(session)).await??;
            if let (Some(have), Some(want)) = (read.owner.as_deref(), owner) {
                if have != want.as_str() {
                    let _ = bounded(deadline, self.store.release(session, &read)).await;
                    return Err(ChatError::Forbidden);
                }
            }
            let mut memory = read.memory.clone();
            if read.fresh {
                memory.format = self.settings.new_session_format;
            }
            if self.settings.max_runs.is_some() {
                memory.max_runs = self.settings.max_runs;
            }
            memory.push(run.clone());
            let changes = Changes {
                memory: &memory,
                receipt: None,
                summary: None,
                window_from: None,
                token_scale: None,
                owner: owner.map(OwnerKey::as_str),
                record: None,
            };
            let saved = bounded(deadline, self.store.save(session, changes, &read))
                .await
                .map_err(|_| ChatError::SaveUnconfirmed)?;
            match saved {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict) => {
                    let _ = bounded(deadline, self.store.release(session, &read)).await;
                }
                Err(e) => {
                    let _ = bounded(deadline, self.store.release(session, &read)).await;
                    return Err(e.into());
                }
            }
        }
        Err(ChatError::Busy(self.settings.max_save_attempts))
    }

    /// What a session says of itself; `None` if there is no such session.
    pub async fn about(
        &self,
        session: &SessionKey,
        deadline: Deadline,
    ) -> Result<Option<About>, ChatError> {
        Ok(bounded(deadline, self.store.about(session)).await??)
    }

    /// Creates a session with no run yet, in the shape new sessions take; `false` if it exists.
    pub async fn create_empty(
        &self,
        session: &SessionKey,
        owner: Option<&OwnerKey>,
        about: &About,
        deadline: Deadline,
    ) -> Result<bool, ChatError> {
        let mut memory = crate::memory::Memory::default();
        memory.format = self.settings.new_session_format;
        memory.max_runs = self.settings.max_runs;
        let owner = owner.map(OwnerKey::as_str);
        let call = self.store.create_empty(session, &memory, owner, about);
        Ok(bounded(deadline, call).await??)
    }

    /// Replaces a session's conversation metadata; `false` if there is no such session.
    pub async fn set_metadata(
        &self,
        session: &SessionKey,
        metadata: &str,
        deadline: Deadline,
    ) -> Result<bool, ChatError> {
        Ok(bounded(deadline, self.store.set_metadata(session, metadata)).await??)
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
}

fn ms_since(t: tokio::time::Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests;
