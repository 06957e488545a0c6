//! Where sessions live: the [`SessionStore`] trait and its domain types (no DynamoDB types).
//! Pure rules, from the bottom up: every key ([`keys`]) and attribute name ([`attr`]), the size
//! policy ([`spill`]), a session item's bookkeeping ([`layout`]), the log's rules ([`log`]:
//! head, slots, griptape's view), versions ([`branch`]), history pages ([`history`]), quotas
//! ([`quota`]); the item mapping ([`item`], [`log_item`]); the DynamoDB I/O ([`dynamo`]).
//! `docs/storage.md` is the design: every item, key and invariant, and how each write path
//! keeps them.

pub mod attr;
pub mod branch;
pub mod dynamo;
pub mod history;
#[cfg(test)]
pub mod in_memory;
pub mod item;
pub mod keys;
pub mod layout;
pub mod log;
pub mod log_item;
pub mod quota;
pub mod spill;

use std::error::Error as StdError;

use crate::deadline::Deadline;
use async_trait::async_trait;

pub use dynamo::DynamoStore;
pub use layout::Layout;
pub use spill::Spill;

use crate::input::{IdempotencyKey, SessionKey};
use crate::memory::{DecodeError, Memory, Run};

/// Default `MAX_ITEM_BYTES`: a run over half of it is spilled into parts, its slot keeping a
/// shortened text (docs/storage.md, "Items").
pub const DEFAULT_MAX_ITEM_BYTES: usize = 96 * 1024;

/// How the table's items are keyed and where the memory JSON is: `id` / `value` as the recipe,
/// or the names a griptape user chose (`partition_key`, `value_attribute_key`, `sort_key`,
/// `sort_key_value`). Every item the store writes follows the same key schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySchema {
    pub partition_key: String,
    pub value_attribute: String,
    pub sort_key: Option<(String, SortValue)>,
}

/// The sort key's value, of the type the table declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortValue {
    S(String),
    N(String),
}

impl Default for KeySchema {
    fn default() -> Self {
        KeySchema {
            partition_key: "id".into(),
            value_attribute: "value".into(),
            sort_key: None,
        }
    }
}

/// A listed session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub session_id: String,
    /// The stored key (what `GET /sessions/{id}` reads), for an erase.
    pub key: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub runs: u64,
    pub preview: Option<String>,
    pub title: Option<String>,
    /// A delete of it has not finished its cleanup.
    pub deleted: bool,
}

/// A page of a user's sessions, most recently active first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionList {
    pub sessions: Vec<Listed>,
    /// Where the next page starts (opaque); `None` on the last page.
    pub next: Option<String>,
}

/// The version of a session as it was read; a save succeeds only if it is still the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// No item yet.
    New,
    /// An item without a version attribute (written by the Python original or griptape).
    Unversioned,
    At(u64),
}

impl Version {
    /// The version a save over this one writes.
    pub fn next(self) -> u64 {
        match self {
            Version::New | Version::Unversioned => 1,
            Version::At(v) => v + 1,
        }
    }
}

/// A session as read from the store: its recent runs (older ones stay in pages) and how the
/// rest of it is laid out.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub memory: Memory,
    pub version: Version,
    /// No conversation yet: no item, or the tombstone of a deleted session.
    pub fresh: bool,
    pub summary: Option<Summary>,
    /// The id of the prompt window's first run (see docs/context.md).
    pub window_from: Option<String>,
    /// The session's token calibration, in thousandths (see docs/context.md).
    pub token_scale: Option<u64>,
    pub layout: Layout,
    /// Whose session this is, for listings (`owner_key`), once known.
    pub owner: Option<String>,
    /// The start of its first message, and the title a user gave it.
    pub preview: Option<String>,
    pub title: Option<String>,
    /// A turn's read: the slot this turn holds and the slots it read (none for a read of history).
    pub log: Option<LogTurn>,
    /// The item is a log session's view (its runs are in slots).
    pub log_view: bool,
}

/// A turn of a session (docs/storage.md, "The log"): the head as its
/// reservation returned it, its slot, and what the slots from the window's start held.
#[derive(Debug, Clone)]
pub struct LogTurn {
    pub head: log::Head,
    pub slot: u64,
    /// Names this turn's reservation on the head, so retries of its writes count once.
    pub token: String,
    /// The first slot read (the window's start); `slots[i]` is slot `first + i`.
    pub first: u64,
    pub slots: Vec<log::SlotState>,
    /// The session item's `value` as this turn read it: its view write lands only over it, so
    /// a write griptape made meanwhile is never overwritten.
    pub seen: Option<String>,
    /// No session item was there: a first turn that fails leaves nothing behind.
    pub first_turn: bool,
    /// The newest slot the view showed when read.
    pub view_through: Option<u64>,
    /// A regeneration or an edit, or the first turn after a select: the turn's slot follows
    /// another than the one before it.
    pub fork: Option<Fork>,
}

/// A turn whose slot was reserved with a parent of its own (docs/storage.md, "Versions").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    /// The run whose place the new one takes (none: a turn after a select).
    pub replaces: Option<String>,
    /// That run's slot.
    pub replaced_slot: Option<u64>,
    /// A regeneration's message: the replaced run's.
    pub message: Option<String>,
    /// The active path's end before the fork: a turn that stores nothing puts it back.
    pub prev_leaf: Option<u64>,
}

/// Which run a turn answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Branch {
    /// A new message after the active path's last run.
    Append,
    /// The active path's last run's message, answered again in its place.
    Regenerate,
    /// A new message in the place of this run (on the active path).
    Edit(String),
}

/// A reader's rating of a reply, kept with its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub up: bool,
    pub comment: Option<String>,
    /// When it was given (epoch seconds).
    pub at: u64,
}

/// What `GET` tells of a run beside its texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunNotes {
    /// The ids of the other versions at its place, oldest first.
    pub alternatives: Vec<String>,
    /// Its own place among all its versions, from 1 (oldest first, as `alternatives`).
    pub version: usize,
    pub feedback: Option<Feedback>,
}

impl LogTurn {
    pub fn new(
        head: log::Head,
        slot: u64,
        token: String,
        (first, slots): (u64, Vec<log::SlotState>),
        seen: Option<String>,
    ) -> LogTurn {
        LogTurn {
            head,
            slot,
            token,
            first,
            slots,
            seen,
            first_turn: false,
            view_through: None,
            fork: None,
        }
    }

    /// The ids of the runs read.
    pub fn run_ids(&self) -> std::collections::HashSet<&str> {
        self.slots
            .iter()
            .filter_map(|s| match s {
                log::SlotState::Run { run, .. } => Some(run.id.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The slot of a run read, by id.
    pub fn slot_of(&self, run_id: &str) -> Option<u64> {
        self.slots.iter().enumerate().find_map(|(i, s)| match s {
            log::SlotState::Run { run, .. } if run.id == run_id => Some(self.first + i as u64),
            _ => None,
        })
    }
}

impl Snapshot {
    /// A session nobody has written yet, in a new generation.
    pub fn new_session() -> Snapshot {
        Snapshot {
            memory: Memory::default(),
            version: Version::New,
            fresh: true,
            summary: None,
            window_from: None,
            token_scale: None,
            layout: Layout::new_generation(),
            owner: None,
            preview: None,
            title: None,
            log: None,
            log_view: false,
        }
    }

    /// Whether a run with this id was read: a save whose answer was lost is recognised by it.
    pub fn holds_run(&self, run_id: &str) -> bool {
        self.memory.runs.iter().any(|r| r.id == run_id)
    }
}

/// A running summary of a session's older runs, stored beside `value` (`summary`,
/// `summary_through`) so the memory JSON keeps its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub text: String,
    /// The id of the newest run folded in.
    pub through: String,
}

/// What a save writes: the session's memory (the snapshot's runs, less any `max_runs` dropped,
/// plus the new run with its full text) and what else the turn produced.
#[derive(Debug, Clone, Copy)]
pub struct Changes<'a> {
    pub memory: &'a Memory,
    pub receipt: Option<&'a Receipt>,
    /// A new summary, replacing the stored one.
    pub summary: Option<&'a Summary>,
    /// A new first run of the prompt window, replacing the stored one.
    pub window_from: Option<&'a str>,
    /// A new token calibration, replacing the stored one.
    pub token_scale: Option<u64>,
    /// The session's owner (an owner key), set when it has none yet.
    pub owner: Option<&'a str>,
    /// JSON kept beside the new run in its slot (a Responses API response's record).
    pub record: Option<&'a str>,
}

/// What a request with an `Idempotency-Key` left behind, to answer its retries. It holds no
/// user text (a digest of the message, the run's id): the reply is read from the run, so
/// erasing a session erases everything a receipt could tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub key: IdempotencyKey,
    pub message_digest: String,
    pub run_id: String,
    /// The run's output (read back from the session when a receipt is found).
    pub reply: String,
}

/// The SHA-256 of a message, in hex: what a receipt keeps to tell a retry from a reuse.
pub fn message_digest(message: &str) -> String {
    crate::input::sha256_hex(message)
}

/// Where a history page starts: a generation of the session and a run number in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub generation: String,
    pub run: u64,
}

impl Cursor {
    /// `<run>.<generation>`: opaque to clients, checked when it comes back.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.run, self.generation)
    }

    pub fn parse(text: &str) -> Option<Cursor> {
        let (run, generation) = text.split_once('.')?;
        let ok = !generation.is_empty()
            && generation.len() <= 32
            && generation
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b.is_ascii_lowercase());
        let run = run.parse().ok().filter(|_| ok)?;
        Some(Cursor {
            generation: generation.to_owned(),
            run,
        })
    }
}

/// Which runs a history page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span<'a> {
    /// The oldest runs from this one on (from the session's first run when `None`).
    From(Option<&'a Cursor>),
    /// The newest runs before this one (before the session's end when `None`): what a chat
    /// client shows first, then pages back from.
    Before(Option<&'a Cursor>),
}

/// One page of a session's history, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    pub runs: Vec<Run>,
    /// Where the next (newer) page starts; `None` when the page reaches the session's end.
    pub next: Option<Cursor>,
    /// Where the page starts, to read the runs before it ([`Span::Before`]); `None` when it
    /// starts at the session's first run.
    pub prev: Option<Cursor>,
    /// Versions and feedback of the page's runs, by run id (a log session's).
    pub notes: std::collections::HashMap<String, RunNotes>,
}

/// How much one history read returns at most.
#[derive(Debug, Clone, Copy)]
pub struct PageLimit {
    pub runs: usize,
    /// Approximate bytes of the runs' texts as JSON.
    pub bytes: usize,
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// No such session.
    NotFound,
    /// The session is gone for every reader; `complete` once everything stored beside it is
    /// removed too (else a repeated delete goes on with it).
    Gone { complete: bool },
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer saved the session since it was read; read again and retry.
    #[error("the session changed since it was read")]
    Conflict,
    /// A request with the same idempotency key saved first.
    #[error("a request with the same idempotency key was saved first")]
    ReceiptExists,
    /// The stored item cannot be read as a session; it is left exactly as it is.
    #[error("the stored session is corrupt")]
    Corrupt(#[source] DecodeError),
    /// A history cursor that does not belong to this session (or to its current generation).
    #[error("the cursor does not belong to this session")]
    InvalidCursor,
    /// A session owned by someone else (trusted-backend mode, where the caller names the owner).
    #[error("the session belongs to another owner")]
    OwnerMismatch,
    /// Listing needs the owner index, and none is configured.
    #[error("listing sessions needs the owner index (OWNER_INDEX)")]
    NoIndex,
    /// A run too large to store even in parts (see `spill::MAX_SPILL_BYTES`).
    #[error("the run is {0} bytes, more than a session can store in one turn")]
    TooLarge(usize),
    /// The table could not be reached, does not exist, or kept throttling (HTTP 503).
    #[error("the session table is unavailable")]
    Unavailable(#[source] BoxError),
    /// The deadline came before the work was done; nothing was changed.
    #[error("the session table did not answer in time")]
    OutOfTime,
    /// No run with this id in the session (or only in a migrated session's pages).
    #[error("no such run in this session")]
    RunNotFound,
    /// The run is not on the active path, where the request needs it.
    #[error("the run is not on the conversation's active path")]
    RunNotOnPath,
    /// A place holds `branch::MAX_VERSIONS` versions, or the session `branch::MAX_FORKS`.
    #[error("no more versions can be kept here")]
    TooManyVersions,
    /// Anything else the store refused (HTTP 500).
    #[error("the session store failed")]
    Failed(#[source] BoxError),
}

impl StoreError {
    /// A stored item that cannot be read as what it should be.
    pub fn corrupt(reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt(DecodeError::new(reason))
    }
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Reads a session; an unknown (or deleted) session is [`Snapshot::new_session`]-like.
    async fn load(&self, session: &SessionKey) -> Result<Snapshot, StoreError>;

    /// Saves the changes if the session is still as `read`, else [`StoreError::Conflict`].
    /// All of it lands, or none.
    async fn save(
        &self,
        session: &SessionKey,
        changes: Changes<'_>,
        read: &Snapshot,
    ) -> Result<(), StoreError>;

    /// The live receipt a request with this key left on this session, if any.
    async fn receipt(
        &self,
        session: &SessionKey,
        read: &Snapshot,
        key: &IdempotencyKey,
    ) -> Result<Option<Receipt>, StoreError>;

    /// A page of a session's runs, archived ones included, oldest first, as `span` says;
    /// `None` if the session is unknown.
    async fn history(
        &self,
        session: &SessionKey,
        span: Span<'_>,
        limit: PageLimit,
    ) -> Result<Option<HistoryPage>, StoreError>;

    /// Removes a session with everything stored beside it, working on leftovers until
    /// `deadline`.
    async fn delete(&self, session: &SessionKey, deadline: Deadline)
        -> Result<Deleted, StoreError>;

    /// A page of an owner's sessions, most recently active first; with `include_deleted`,
    /// also the tombstones of deletes not finished (for an erase).
    async fn list(
        &self,
        owner: &str,
        limit: usize,
        from: Option<&str>,
        include_deleted: bool,
    ) -> Result<SessionList, StoreError>;

    /// Sets a session's title; `false` if there is no such session.
    async fn set_title(&self, session: &SessionKey, title: &str) -> Result<bool, StoreError>;

    /// Gives back what a [`SessionStore::load`] took for a turn that stores nothing (a failed
    /// model call, a replayed receipt): its slot becomes a hole. Safe after
    /// a save that may have landed: a hole never replaces a run.
    async fn release(&self, _session: &SessionKey, _read: &Snapshot) -> Result<(), StoreError> {
        Ok(())
    }

    /// The owner a session records, read without taking anything (a regeneration's or an
    /// edit's check before it takes a place); a store that records none answers `None`.
    async fn owner_of(&self, _session: &SessionKey) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    /// [`SessionStore::load`] for a turn that answers `branch`: a regeneration or an edit
    /// takes a slot in the place of the run it replaces.
    async fn load_branch(
        &self,
        session: &SessionKey,
        branch: &Branch,
    ) -> Result<Snapshot, StoreError>;

    /// Makes the active path go through this run (and its newest branch after it).
    async fn select(&self, session: &SessionKey, run_id: &str) -> Result<(), StoreError>;

    /// Removes one run's texts from everything stored; the path goes on over it.
    async fn delete_run(&self, session: &SessionKey, run_id: &str) -> Result<(), StoreError>;

    /// Keeps a reader's rating with a run, replacing an earlier one.
    async fn set_feedback(
        &self,
        session: &SessionKey,
        run_id: &str,
        feedback: &Feedback,
    ) -> Result<(), StoreError>;

    /// Counts a turn on `counter` unless `limit` are counted there already: `false` when
    /// refused (docs/storage.md, "Quotas").
    async fn count_turn(&self, counter: &quota::Counter, limit: u64) -> Result<bool, StoreError>;

    /// Gives back a count [`SessionStore::count_turn`] took.
    async fn uncount_turn(&self, counter: &quota::Counter) -> Result<(), StoreError>;

    /// The tokens counted on `counter`.
    async fn tokens_spent(&self, counter: &quota::Counter) -> Result<u64, StoreError>;

    /// Adds `tokens` to `counter`.
    async fn spend_tokens(&self, counter: &quota::Counter, tokens: u64) -> Result<(), StoreError>;

    /// One run by id, whole, with what its slot keeps beside it; `None` when the session has
    /// no such run (or no longer: deleted runs are not found).
    async fn find_run(
        &self,
        session: &SessionKey,
        run_id: &str,
    ) -> Result<Option<FoundRun>, StoreError>;

    /// What a live session says of itself; `None` if there is none.
    async fn about(&self, session: &SessionKey) -> Result<Option<About>, StoreError>;

    /// Creates a session with no run yet (`memory` empty, in its shape), named as `about`
    /// says; `false` if the session exists.
    async fn create_empty(
        &self,
        session: &SessionKey,
        memory: &Memory,
        owner: Option<&str>,
        about: &About,
    ) -> Result<bool, StoreError>;

    /// Replaces a live session's conversation metadata; `false` if there is no such session.
    async fn set_metadata(&self, session: &SessionKey, metadata: &str) -> Result<bool, StoreError>;

    /// Starts keeping a streamed reply's pieces while it is written (with the record its run
    /// will be saved with).
    async fn live_begin(
        &self,
        session: &SessionKey,
        run_id: &str,
        record: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Adds pieces to a reply in progress, unless a client cancelled it; `capped`: no more
    /// pieces will be kept (the rest comes with the saved run).
    async fn live_append(
        &self,
        session: &SessionKey,
        run_id: &str,
        pieces: &[String],
        capped: bool,
    ) -> Result<LiveWrite, StoreError>;

    /// The turn is over, its reply saved or not: the live item goes (a failed turn leaves
    /// nothing behind).
    async fn live_end(&self, session: &SessionKey, run_id: &str) -> Result<(), StoreError>;

    /// A reply in progress (or one that failed), if there is one.
    async fn live_read(
        &self,
        session: &SessionKey,
        run_id: &str,
    ) -> Result<Option<Live>, StoreError>;

    /// Marks a reply in progress cancelled; `false` if none is in progress.
    async fn live_cancel(&self, session: &SessionKey, run_id: &str) -> Result<bool, StoreError>;
}

/// A streamed reply while its turn writes it (docs/storage.md, "Replies in progress").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub status: LiveStatus,
    /// The pieces written so far, in order.
    pub pieces: Vec<String>,
    /// Pieces stopped being kept (the item near its limit): the rest comes with the run.
    pub capped: bool,
    /// The record the run will be saved with ([`Changes::record`]), as the turn began.
    pub record: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveStatus {
    InProgress,
    /// The turn failed: nothing was stored (what a follower learns of an item gone with no
    /// run; never stored).
    Failed,
    /// A client cancelled it: the turn stops and stores nothing.
    Cancelled,
}

impl LiveStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LiveStatus::InProgress => "in_progress",
            LiveStatus::Failed => "failed",
            LiveStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<LiveStatus> {
        match text {
            "in_progress" => Some(LiveStatus::InProgress),
            "failed" => Some(LiveStatus::Failed),
            "cancelled" => Some(LiveStatus::Cancelled),
            _ => None,
        }
    }
}

/// What a live reply's writer learns from a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveWrite {
    Kept,
    /// A client cancelled the reply: the turn stops and stores nothing.
    Cancelled,
}

/// What a session says of itself beside its runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct About {
    /// When its item was first written (epoch seconds).
    pub created_at: Option<u64>,
    pub title: Option<String>,
    /// A conversation's metadata, as JSON object text.
    pub metadata: Option<String>,
    /// The newest run the session's view shows (a log session's; it lags a burst of turns).
    pub last_run: Option<String>,
}

/// A run looked up by id (the Responses API's `GET /v1/responses/{id}` and chaining).
#[derive(Debug, Clone)]
pub struct FoundRun {
    pub run: Run,
    /// When it was stored (epoch seconds), where the store knows.
    pub created_at: Option<u64>,
    /// The JSON kept beside it ([`Changes::record`]).
    pub record: Option<String>,
    /// Where it is: on the active path as its last run, on it with a run after it (that
    /// run's id), or off it (another branch).
    pub place: Place,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Last,
    Before(String),
    OffPath,
}
