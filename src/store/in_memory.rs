//! An in-memory [`SessionStore`] with the same version and receipt rules as the DynamoDB one,
//! and faults to inject, so the chat cycle has unit tests (see `chat::tests`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::deadline::Deadline;
use async_trait::async_trait;

use super::history::Window;
use super::quota;
use super::spill::spill_slot;
use super::{
    About, Branch, Changes, Deleted, Feedback, FoundRun, HistoryPage, Layout, Live, LiveStatus,
    LiveWrite, PageLimit, Place, Receipt, SessionStore, Snapshot, Span, StoreError, Summary,
    Version,
};
use crate::input::{IdempotencyKey, SessionKey};
use crate::memory::{Memory, Run};

#[derive(Debug, Clone)]
struct Stored {
    memory: Memory,
    version: u64,
    /// Its generation, and the number of its first run kept (`MAX_RUNS` drops the oldest).
    layout: Layout,
    summary: Option<Summary>,
    window_from: Option<String>,
    token_scale: Option<u64>,
}

/// Faults for the next calls.
#[derive(Debug, Default)]
pub struct Faults {
    /// Saves that land but answer as a conflict, as when the answer was lost and the SDK's
    /// retry met its own write.
    pub lost_answers: u32,
    /// Saves preceded by another writer's run landing first.
    pub interleaved_writers: u32,
    /// Every save hangs this long before doing anything.
    pub save_delay: Option<Duration>,
}

#[derive(Default)]
pub struct InMemoryStore {
    sessions: Mutex<HashMap<String, Stored>>,
    receipts: Mutex<HashMap<String, Receipt>>,
    /// What sessions say of themselves, by session key.
    abouts: Mutex<HashMap<String, About>>,
    /// Replies in progress, by session key and run id.
    lives: Mutex<HashMap<(String, String), Live>>,
    /// Records kept beside runs ([`Changes::record`]), by run id.
    records: Mutex<HashMap<String, String>>,
    /// Quota counters by key.
    counters: Mutex<HashMap<String, u64>>,
    pub faults: Mutex<Faults>,
    pub max_item_bytes: usize,
}

impl InMemoryStore {
    pub fn new() -> Self {
        InMemoryStore {
            max_item_bytes: super::DEFAULT_MAX_ITEM_BYTES,
            ..InMemoryStore::default()
        }
    }

    /// Every stored run of a session, oldest first.
    pub fn runs(&self, session: &SessionKey) -> Vec<Run> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(session.as_str())
            .map(|s| s.memory.runs.clone())
            .unwrap_or_default()
    }

    fn apply(
        &self,
        session: &SessionKey,
        changes: Changes<'_>,
        read: &Snapshot,
    ) -> Result<(), StoreError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let current = sessions.get(session.as_str()).map(|s| s.version);
        let expected = match read.version {
            Version::New | Version::Unversioned => None,
            Version::At(v) => Some(v),
        };
        if current != expected {
            return Err(StoreError::Conflict);
        }
        // The double keeps every run in `memory`, none in parts; a run too large to store even
        // in parts is refused as the DynamoDB store refuses it.
        let new = changes
            .memory
            .runs
            .iter()
            .filter(|r| !read.holds_run(&r.id));
        for run in new {
            spill_slot(run, 0, changes.memory.format, self.max_item_bytes / 2)?;
        }
        let mut layout = read.layout.clone();
        let dropped = read.memory.runs.iter();
        let dropped = dropped.filter(|r| !changes.memory.runs.iter().any(|c| c.id == r.id));
        layout.first_run += dropped.count() as u64;
        if let Some(r) = changes.receipt {
            let mut receipts = self.receipts.lock().unwrap_or_else(|e| e.into_inner());
            let key = read.layout.receipt_key(session, &r.key);
            if receipts.contains_key(&key) {
                return Err(StoreError::ReceiptExists);
            }
            receipts.insert(key, r.clone());
        }
        if let (Some(record), Some(run)) = (changes.record, changes.memory.runs.last()) {
            let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
            records.insert(run.id.clone(), record.to_owned());
        }
        // As the DynamoDB store does: what a save does not change is kept as read.
        sessions.insert(
            session.as_str().to_owned(),
            Stored {
                memory: changes.memory.clone(),
                version: expected.map_or(1, |v| v + 1),
                layout,
                summary: changes.summary.cloned().or_else(|| read.summary.clone()),
                window_from: changes
                    .window_from
                    .map(str::to_owned)
                    .or_else(|| read.window_from.clone()),
                token_scale: changes.token_scale.or(read.token_scale),
            },
        );
        Ok(())
    }
}

impl InMemoryStore {
    fn counter(&self, key: &str, change: impl FnOnce(&mut u64) -> bool) -> bool {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        change(counters.entry(key.to_owned()).or_default())
    }
}

#[async_trait]
impl SessionStore for InMemoryStore {
    async fn count_turn(&self, counter: &quota::Counter, limit: u64) -> Result<bool, StoreError> {
        Ok(self.counter(&counter.key, |n| {
            let pass = *n < limit;
            if pass {
                *n += 1;
            }
            pass
        }))
    }

    async fn uncount_turn(&self, counter: &quota::Counter) -> Result<(), StoreError> {
        self.counter(&counter.key, |n| {
            *n = n.saturating_sub(1);
            true
        });
        Ok(())
    }

    async fn tokens_spent(&self, counter: &quota::Counter) -> Result<u64, StoreError> {
        let mut spent = 0;
        self.counter(&counter.key, |n| {
            spent = *n;
            true
        });
        Ok(spent)
    }

    async fn spend_tokens(&self, counter: &quota::Counter, tokens: u64) -> Result<(), StoreError> {
        self.counter(&counter.key, |n| {
            *n += tokens;
            true
        });
        Ok(())
    }

    async fn load(&self, session: &SessionKey) -> Result<Snapshot, StoreError> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match sessions.get(session.as_str()) {
            None => Snapshot::new_session(),
            Some(s) => Snapshot {
                memory: s.memory.clone(),
                version: Version::At(s.version),
                fresh: false,
                summary: s.summary.clone(),
                window_from: s.window_from.clone(),
                token_scale: s.token_scale,
                layout: s.layout.clone(),
                owner: None,
                preview: None,
                title: None,
                log: None,
                log_view: false,
            },
        })
    }

    async fn save(
        &self,
        session: &SessionKey,
        changes: Changes<'_>,
        read: &Snapshot,
    ) -> Result<(), StoreError> {
        let (delay, lost, interleave) = {
            let mut f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
            let lost = f.lost_answers > 0;
            f.lost_answers = f.lost_answers.saturating_sub(1);
            let interleave = f.interleaved_writers > 0;
            f.interleaved_writers = f.interleaved_writers.saturating_sub(1);
            (f.save_delay, lost, interleave)
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if interleave {
            let mut other = read.memory.clone();
            other.push(Run::new("another writer", "their answer"));
            let theirs = Changes {
                memory: &other,
                receipt: None,
                summary: None,
                window_from: None,
                token_scale: None,
                owner: None,
                record: None,
            };
            self.apply(session, theirs, read)?;
        }
        self.apply(session, changes, read)?;
        if lost {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    async fn receipt(
        &self,
        session: &SessionKey,
        read: &Snapshot,
        key: &IdempotencyKey,
    ) -> Result<Option<Receipt>, StoreError> {
        let receipts = self.receipts.lock().unwrap_or_else(|e| e.into_inner());
        Ok(receipts
            .get(&read.layout.receipt_key(session, key))
            .cloned())
    }

    async fn history(
        &self,
        session: &SessionKey,
        span: Span<'_>,
        limit: PageLimit,
    ) -> Result<Option<HistoryPage>, StoreError> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = sessions.get(session.as_str()) else {
            return Ok(None);
        };
        let layout = &s.layout;
        let end = layout.first_run + s.memory.runs.len() as u64;
        let window = Window::new(span, limit, &layout.generation, end, s.memory.max_runs)?;
        let mut fill = window.fill();
        let runs = s.memory.runs.iter().map(Cow::Borrowed);
        fill.offer_all(layout.first_run, runs, layout);
        Ok(Some(fill.finish(layout)))
    }

    async fn list(
        &self,
        _owner: &str,
        _limit: usize,
        _from: Option<&str>,
        _include_deleted: bool,
    ) -> Result<super::SessionList, StoreError> {
        Err(StoreError::NoIndex)
    }

    async fn set_title(&self, _session: &SessionKey, _title: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn delete(
        &self,
        session: &SessionKey,
        _deadline: Deadline,
    ) -> Result<Deleted, StoreError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match sessions.remove(session.as_str()) {
            None => Deleted::NotFound,
            Some(_) => Deleted::Gone { complete: true },
        })
    }

    async fn load_branch(
        &self,
        session: &SessionKey,
        branch: &Branch,
    ) -> Result<Snapshot, StoreError> {
        match branch {
            Branch::Append => self.load(session).await,
            // The double keeps one line of runs: no versions, so no run to replace.
            Branch::Regenerate | Branch::Edit(_) => Err(StoreError::RunNotFound),
        }
    }

    async fn select(&self, _session: &SessionKey, _run_id: &str) -> Result<(), StoreError> {
        Err(StoreError::RunNotFound)
    }

    async fn delete_run(&self, _session: &SessionKey, _run_id: &str) -> Result<(), StoreError> {
        Err(StoreError::RunNotFound)
    }

    async fn set_feedback(
        &self,
        _session: &SessionKey,
        _run_id: &str,
        _feedback: &Feedback,
    ) -> Result<(), StoreError> {
        Err(StoreError::RunNotFound)
    }

    async fn find_run(
        &self,
        session: &SessionKey,
        run_id: &str,
    ) -> Result<Option<FoundRun>, StoreError> {
        let runs = self.runs(session);
        let Some(i) = runs.iter().position(|r| r.id == run_id) else {
            return Ok(None);
        };
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Some(FoundRun {
            run: runs[i].clone(),
            created_at: None,
            record: records.get(run_id).cloned(),
            place: match runs.get(i + 1) {
                Some(next) => Place::Before(next.id.clone()),
                None => Place::Last,
            },
        }))
    }

    async fn about(&self, session: &SessionKey) -> Result<Option<About>, StoreError> {
        let live = {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions.contains_key(session.as_str())
        };
        let last_run = self.runs(session).last().map(|r| r.id.clone());
        let abouts = self.abouts.lock().unwrap_or_else(|e| e.into_inner());
        Ok(live.then(|| About {
            last_run,
            ..abouts.get(session.as_str()).cloned().unwrap_or_default()
        }))
    }

    async fn create_empty(
        &self,
        session: &SessionKey,
        memory: &Memory,
        _owner: Option<&str>,
        about: &About,
    ) -> Result<bool, StoreError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.contains_key(session.as_str()) {
            return Ok(false);
        }
        sessions.insert(
            session.as_str().to_owned(),
            Stored {
                memory: memory.clone(),
                version: 1,
                layout: Layout::new_generation(),
                summary: None,
                window_from: None,
                token_scale: None,
            },
        );
        let mut abouts = self.abouts.lock().unwrap_or_else(|e| e.into_inner());
        abouts.insert(session.as_str().to_owned(), about.clone());
        Ok(true)
    }

    async fn live_begin(
        &self,
        session: &SessionKey,
        run_id: &str,
        record: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut lives = self.lives.lock().unwrap_or_else(|e| e.into_inner());
        let live = Live {
            status: LiveStatus::InProgress,
            pieces: Vec::new(),
            capped: false,
            record: record.map(str::to_owned),
        };
        lives.insert((session.as_str().to_owned(), run_id.to_owned()), live);
        Ok(())
    }

    async fn live_append(
        &self,
        session: &SessionKey,
        run_id: &str,
        pieces: &[String],
        capped: bool,
    ) -> Result<LiveWrite, StoreError> {
        let mut lives = self.lives.lock().unwrap_or_else(|e| e.into_inner());
        match lives.get_mut(&(session.as_str().to_owned(), run_id.to_owned())) {
            Some(live) if live.status == LiveStatus::InProgress => {
                live.pieces.extend_from_slice(pieces);
                live.capped |= capped;
                Ok(LiveWrite::Kept)
            }
            _ => Ok(LiveWrite::Cancelled),
        }
    }

    async fn live_end(&self, session: &SessionKey, run_id: &str) -> Result<(), StoreError> {
        let mut lives = self.lives.lock().unwrap_or_else(|e| e.into_inner());
        lives.remove(&(session.as_str().to_owned(), run_id.to_owned()));
        Ok(())
    }

    async fn live_read(
        &self,
        session: &SessionKey,
        run_id: &str,
    ) -> Result<Option<Live>, StoreError> {
        let lives = self.lives.lock().unwrap_or_else(|e| e.into_inner());
        Ok(lives
            .get(&(session.as_str().to_owned(), run_id.to_owned()))
            .cloned())
    }

    async fn live_cancel(&self, session: &SessionKey, run_id: &str) -> Result<bool, StoreError> {
        let mut lives = self.lives.lock().unwrap_or_else(|e| e.into_inner());
        match lives.get_mut(&(session.as_str().to_owned(), run_id.to_owned())) {
            Some(live) if live.status == LiveStatus::InProgress => {
                live.status = LiveStatus::Cancelled;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn set_metadata(&self, session: &SessionKey, metadata: &str) -> Result<bool, StoreError> {
        if self.about(session).await?.is_none() {
            return Ok(false);
        }
        let mut abouts = self.abouts.lock().unwrap_or_else(|e| e.into_inner());
        let about = abouts.entry(session.as_str().to_owned()).or_default();
        about.metadata = Some(metadata.to_owned());
        Ok(true)
    }
}
