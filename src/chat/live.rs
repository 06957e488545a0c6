//! Replies that survive a reload (docs/storage.md, "Replies in progress"): a streamed turn
//! keeps the pieces it has sent in the store as it goes ([`LiveWriter`]), so another request
//! can follow the reply to its end ([`ChatService::follow`]) after a reload or a dropped
//! connection; and a client can cancel it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{bounded, ChatService};
use crate::deadline::Deadline;
use crate::input::SessionKey;
use crate::store::{FoundRun, LiveStatus, LiveWrite, SessionStore};

/// Pieces stop being kept past this many bytes (the live item stays under 400 KB); the rest of
/// such a reply reaches a follower with its saved run.
const LIVE_MAX_BYTES: usize = 300_000;

/// A turn's reply as it is written, kept for followers.
pub(super) struct LiveWriter {
    store: Arc<dyn SessionStore>,
    session: SessionKey,
    run_id: String,
    deadline: Deadline,
    pending: Mutex<Pending>,
    /// Written at most this often.
    every: Duration,
}

#[derive(Default)]
struct Pending {
    pieces: Vec<String>,
    bytes: usize,
    capped: bool,
    /// The cap was written.
    cap_sent: bool,
}

impl LiveWriter {
    pub fn new(
        store: Arc<dyn SessionStore>,
        session: SessionKey,
        run_id: String,
        deadline: Deadline,
        every: Duration,
    ) -> LiveWriter {
        LiveWriter {
            store,
            session,
            run_id,
            deadline,
            pending: Mutex::new(Pending::default()),
            every,
        }
    }

    /// Starts the live item before the client is told the reply began; a failure is logged
    /// and the turn goes on (the reply just cannot be followed).
    pub async fn begin(&self, record: Option<&str>) -> bool {
        let call = self.store.live_begin(&self.session, &self.run_id, record);
        match bounded(self.deadline, call).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(session_id = %self.session, error = %crate::error::chain(&e), "a reply in progress is not kept");
                false
            }
            Err(_) => false,
        }
    }

    pub fn push(&self, piece: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.capped {
            return;
        }
        pending.bytes += piece.len();
        if pending.bytes > LIVE_MAX_BYTES {
            pending.capped = true;
            return;
        }
        pending.pieces.push(piece.to_owned());
    }

    fn take(&self) -> Option<(Vec<String>, bool)> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let cap = pending.capped && !pending.cap_sent;
        if pending.pieces.is_empty() && !cap {
            return None;
        }
        pending.cap_sent |= cap;
        Some((std::mem::take(&mut pending.pieces), cap))
    }

    /// Writes what was pushed, every [`Self::every`], until `done` (then once more):
    /// [`LiveWrite::Cancelled`] as soon as a client cancelled the reply.
    pub async fn keep_until(&self, mut done: watch::Receiver<bool>) -> LiveWrite {
        loop {
            let finished = tokio::select! {
                _ = tokio::time::sleep(self.every) => false,
                _ = done.wait_for(|d| *d) => true,
            };
            if let Some((pieces, capped)) = self.take() {
                let call = self
                    .store
                    .live_append(&self.session, &self.run_id, &pieces, capped);
                match bounded(self.deadline, call).await {
                    Ok(Ok(LiveWrite::Cancelled)) => return LiveWrite::Cancelled,
                    Ok(Ok(LiveWrite::Kept)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(session_id = %self.session, error = %crate::error::chain(&e), "a reply's pieces were not kept")
                    }
                    Err(_) => {}
                }
            }
            if finished {
                return LiveWrite::Kept;
            }
        }
    }

    /// The turn is over, saved or not: the item goes.
    pub async fn end(&self) {
        let call = self.store.live_end(&self.session, &self.run_id);
        if let Ok(Err(e)) = bounded(self.deadline, call).await {
            tracing::warn!(session_id = %self.session, error = %crate::error::chain(&e), "a reply in progress was not closed; it expires within the hour");
        }
    }
}

/// What a follower of a reply learns, in order: pieces as they are kept, then how it ended.
#[derive(Debug)]
pub enum Followed {
    /// Pieces after those reported before.
    Pieces(Vec<String>),
    /// The run was saved: here it is, whole.
    Saved(Box<FoundRun>),
    /// The turn failed or was cancelled; nothing was stored.
    Ended(LiveStatus),
    /// No such reply, in progress or saved.
    Unknown,
    /// The invocation's time is nearly up: follow again.
    OutOfTime,
}

impl ChatService {
    /// Follows a reply: its pieces kept so far, then as they come (read every half of the
    /// writers' interval), then its saved run or how it failed.
    pub fn follow(
        self: &Arc<Self>,
        session: SessionKey,
        run_id: String,
        deadline: Deadline,
    ) -> mpsc::UnboundedReceiver<Followed> {
        let (tx, rx) = mpsc::unbounded_channel();
        let chat = Arc::clone(self);
        tokio::spawn(async move {
            let end = chat.follow_to_end(&session, &run_id, deadline, &tx).await;
            let _ = tx.send(end);
        });
        rx
    }

    async fn follow_to_end(
        &self,
        session: &SessionKey,
        run_id: &str,
        deadline: Deadline,
        tx: &mpsc::UnboundedSender<Followed>,
    ) -> Followed {
        let poll = self.settings.live_every / 2;
        // A follower stops in time to end its answer before the invocation's deadline.
        let stop = deadline.less(Duration::from_secs(2));
        let mut sent = 0;
        let mut seen = false;
        loop {
            let live = match bounded(stop, self.store.live_read(session, run_id)).await {
                Ok(Ok(live)) => live,
                Ok(Err(e)) => {
                    tracing::warn!(session_id = %session, error = %crate::error::chain(&e), "a reply in progress could not be read");
                    return Followed::OutOfTime;
                }
                Err(_) => return Followed::OutOfTime,
            };
            match live {
                Some(live) => {
                    seen = true;
                    if live.pieces.len() > sent {
                        let _ = tx.send(Followed::Pieces(live.pieces[sent..].to_vec()));
                        sent = live.pieces.len();
                    }
                    if live.status != LiveStatus::InProgress {
                        return Followed::Ended(live.status);
                    }
                    if stop.bound(tokio::time::sleep(poll)).await.is_err() {
                        return Followed::OutOfTime;
                    }
                }
                None => {
                    // Gone: the run was saved first, then the item deleted.
                    return match bounded(stop, self.store.find_run(session, run_id)).await {
                        Ok(Ok(Some(found))) => Followed::Saved(Box::new(found)),
                        Ok(Ok(None)) if seen => Followed::Ended(LiveStatus::Failed),
                        Ok(Ok(None)) => Followed::Unknown,
                        Ok(Err(_)) | Err(_) => Followed::OutOfTime,
                    };
                }
            }
        }
    }

    /// A reply in progress (or one that failed), as kept.
    pub async fn live(
        &self,
        session: &SessionKey,
        run_id: &str,
        deadline: Deadline,
    ) -> Result<Option<crate::store::Live>, super::ChatError> {
        Ok(bounded(deadline, self.store.live_read(session, run_id)).await??)
    }

    /// Cancels a reply in progress; `false` if none is.
    pub async fn cancel(
        &self,
        session: &SessionKey,
        run_id: &str,
        deadline: Deadline,
    ) -> Result<bool, super::ChatError> {
        Ok(bounded(deadline, self.store.live_cancel(session, run_id)).await??)
    }
}
