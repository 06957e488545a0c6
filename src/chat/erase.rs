//! Erasing every session of an owner, in batches that fit one invocation.

use super::{bounded, ChatError, ChatService};
use crate::deadline::{Deadline, ERASE_MARGIN};
use crate::input::{OwnerKey, SessionKey};
use crate::store::{Deleted, StoreError};

/// What an erase of a user's sessions did within one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erased {
    pub deleted: u64,
    /// Sessions (or their cleanup) left for the next call.
    pub remaining: bool,
}

impl Erased {
    fn unfinished(deleted: u64) -> Erased {
        Erased {
            deleted,
            remaining: true,
        }
    }
}

impl ChatService {
    /// Erases an owner's sessions, with everything stored beside them, in batches until the
    /// deadline draws near; call again while `remaining`.
    pub async fn erase(&self, owner: &OwnerKey, deadline: Deadline) -> Result<Erased, ChatError> {
        let stop = deadline.less(ERASE_MARGIN);
        let mut deleted = 0;
        loop {
            if stop.passed() {
                return Ok(Erased::unfinished(deleted));
            }
            let listed = self.store.list(owner.as_str(), 25, None, true);
            let Ok(page) = bounded(stop, listed).await else {
                return Ok(Erased::unfinished(deleted));
            };
            let page = page?;
            if page.sessions.is_empty() {
                return Ok(Erased {
                    deleted,
                    remaining: false,
                });
            }
            for listed in page.sessions {
                if stop.passed() {
                    return Ok(Erased::unfinished(deleted));
                }
                let key = SessionKey::from_stored(listed.key);
                let outcome = match self.store.delete(&key, deadline).await {
                    Ok(outcome) => outcome,
                    // Out of time before this one's tombstone: it is whole, and next.
                    Err(StoreError::OutOfTime) => return Ok(Erased::unfinished(deleted)),
                    Err(StoreError::Unavailable(_)) if stop.passed() => {
                        return Ok(Erased::unfinished(deleted))
                    }
                    Err(e) => return Err(e.into()),
                };
                // A tombstone left by an earlier erase was counted then.
                let counted = u64::from(!listed.deleted);
                match outcome {
                    Deleted::Gone { complete: false } => {
                        return Ok(Erased::unfinished(deleted + counted))
                    }
                    Deleted::Gone { complete: true } => deleted += counted,
                    Deleted::NotFound => {}
                }
            }
        }
    }
}
