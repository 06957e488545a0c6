//! An in-memory [`SessionStore`] with the same version and receipt rules as the DynamoDB one,
//! and faults to inject, so the chat cycle has unit tests (see `chat::tests`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::deadline::Deadline;
use async_trait::async_trait;

use super::policy::plan_save;
use super::{
    Changes, Cursor, Deleted, HistoryPage, Layout, PageLimit, Receipt, SessionStore, Snapshot,
    Span, StoreError, Version,
};
use crate::input::{IdempotencyKey, SessionKey};
use crate::memory::{Memory, Run};

#[derive(Debug, Clone)]
struct Stored {
    memory: Memory,
    version: u64,
    layout: Layout,
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
    pub fn runs(&self, id: &SessionKey) -> Vec<Run> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(id.as_str())
            .map(|s| s.memory.runs.clone())
            .unwrap_or_default()
    }

    fn apply(
        &self,
        id: &SessionKey,
        changes: Changes<'_>,
        read: &Snapshot,
    ) -> Result<(), StoreError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let current = sessions.get(id.as_str()).map(|s| s.version);
        let expected = match read.version {
            Version::New | Version::Unversioned => None,
            Version::At(v) => Some(v),
        };
        if current != expected {
            return Err(StoreError::Conflict);
        }
        let read_ids: Vec<&str> = read.memory.runs.iter().map(|r| r.id.as_str()).collect();
        let plan = plan_save(&read.layout, &read_ids, changes.memory, self.max_item_bytes)?;
        if let Some(r) = changes.receipt {
            let mut receipts = self.receipts.lock().unwrap_or_else(|e| e.into_inner());
            let key = read.layout.receipt_key(id, &r.key);
            if receipts.contains_key(&key) {
                return Err(StoreError::ReceiptExists);
            }
            receipts.insert(key, r.clone());
        }
        sessions.insert(
            id.as_str().to_owned(),
            Stored {
                memory: changes.memory.clone(),
                version: expected.map_or(1, |v| v + 1),
                layout: plan.layout,
            },
        );
        Ok(())
    }
}

#[async_trait]
impl SessionStore for InMemoryStore {
    async fn load(&self, id: &SessionKey) -> Result<Snapshot, StoreError> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match sessions.get(id.as_str()) {
            None => Snapshot::new_session(),
            Some(s) => Snapshot {
                memory: s.memory.clone(),
                version: Version::At(s.version),
                fresh: false,
                summary: None,
                layout: s.layout.clone(),
                owner: None,
                preview: None,
                title: None,
                foreign: Default::default(),
            },
        })
    }

    async fn save(
        &self,
        id: &SessionKey,
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
                owner: None,
            };
            self.apply(id, theirs, read)?;
        }
        self.apply(id, changes, read)?;
        if lost {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    async fn receipt(
        &self,
        id: &SessionKey,
        read: &Snapshot,
        key: &IdempotencyKey,
    ) -> Result<Option<Receipt>, StoreError> {
        let receipts = self.receipts.lock().unwrap_or_else(|e| e.into_inner());
        Ok(receipts.get(&read.layout.receipt_key(id, key)).cloned())
    }

    async fn history(
        &self,
        id: &SessionKey,
        span: Span<'_>,
        limit: PageLimit,
    ) -> Result<Option<HistoryPage>, StoreError> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = sessions.get(id.as_str()) else {
            return Ok(None);
        };
        let len = s.memory.runs.len();
        let (start, stop) = match span {
            Span::From(c) => {
                let start = c.map_or(0, |c| c.run as usize).min(len);
                (start, (start + limit.runs).min(len))
            }
            Span::Before(c) => {
                let stop = c.map_or(len, |c| (c.run as usize).min(len));
                (stop.saturating_sub(limit.runs), stop)
            }
        };
        let at = |run: usize| Cursor {
            generation: s.layout.generation.clone(),
            run: run as u64,
        };
        Ok(Some(HistoryPage {
            runs: s.memory.runs[start..stop].to_vec(),
            next: (stop < len).then(|| at(stop)),
            prev: (start > 0).then(|| at(start)),
        }))
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

    async fn set_title(&self, _id: &SessionKey, _title: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn delete(&self, id: &SessionKey, _deadline: Deadline) -> Result<Deleted, StoreError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match sessions.remove(id.as_str()) {
            None => Deleted::NotFound,
            Some(_) => Deleted::Gone { complete: true },
        })
    }
}
