//! When the caller stops waiting: the invocation's end as a monotonic instant, and the margins
//! each kind of work keeps before it, in one place.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Every store call of a turn or a read ends this long before the deadline, so the answer goes
/// out in time.
pub const STORE_MARGIN: Duration = Duration::from_millis(250);
/// A delete's calls stop this long before the deadline (a tombstone, then batches of cleanup).
pub const CLEANUP_MARGIN: Duration = Duration::from_millis(500);
/// An erase of a user's sessions stops starting deletes this long before the deadline.
pub const ERASE_MARGIN: Duration = Duration::from_millis(1500);
/// Time kept back from the model for saving and answering (a save is one or two calls of a few
/// ms and maybe a conflict retry; the SDK's attempt timeout does not need to fit).
pub const SAVE_RESERVE: Duration = Duration::from_millis(2500);

/// The moment work must be done by, or none (a CLI run, a local emulator's duration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

/// Time ran out before the work finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("out of time")]
pub struct OutOfTime;

impl Deadline {
    /// No deadline: work is bounded by its own timeouts only.
    pub const NONE: Deadline = Deadline(None);

    pub fn at(instant: Instant) -> Deadline {
        Deadline(Some(instant))
    }

    /// Lambda's deadline is wall-clock epoch milliseconds; this turns it into a monotonic
    /// instant. A value that is not a plausible epoch time (local emulators send a duration
    /// such as 600000) is ignored: the model timeout still bounds the call.
    pub fn from_epoch_ms(deadline_ms: u64) -> Deadline {
        const DAY_MS: u64 = 24 * 60 * 60 * 1000;
        let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
            return Deadline::NONE;
        };
        let now_ms = now.as_millis() as u64;
        if deadline_ms < now_ms.saturating_sub(DAY_MS) {
            tracing::debug!(deadline_ms, "ignoring an implausible invocation deadline");
            return Deadline::NONE;
        }
        Deadline::at(Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms)))
    }

    pub fn instant(self) -> Option<Instant> {
        self.0
    }

    /// This deadline moved `margin` earlier (to now, if it is closer than that).
    pub fn less(self, margin: Duration) -> Deadline {
        Deadline(self.0.map(|d| d.checked_sub(margin).unwrap_or(d)))
    }

    /// The earlier of `limit` and this deadline less `margin` (`floor` if that is not a
    /// representable instant).
    pub fn cap(self, limit: Instant, margin: Duration, floor: Instant) -> Instant {
        match self.0 {
            None => limit,
            Some(d) => limit.min(d.checked_sub(margin).unwrap_or(floor)),
        }
    }

    /// The deadline is here.
    pub fn passed(self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }

    /// Runs `work`, cut off at the deadline.
    pub async fn bound<F: Future>(self, work: F) -> Result<F::Output, OutOfTime> {
        match self.0 {
            None => Ok(work.await),
            Some(d) => tokio::time::timeout_at(d, work)
                .await
                .map_err(|_| OutOfTime),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_deadlines() {
        assert_eq!(Deadline::from_epoch_ms(0), Deadline::NONE);
        assert_eq!(
            Deadline::from_epoch_ms(600_000),
            Deadline::NONE,
            "a duration is not a deadline"
        );
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let left = Deadline::from_epoch_ms(now_ms + 5_000).instant().unwrap() - Instant::now();
        assert!(left > Duration::from_secs(4) && left <= Duration::from_secs(5));
        let past = Deadline::from_epoch_ms(now_ms - 1_000);
        assert!(past.passed(), "an expired deadline leaves no time");
    }

    #[tokio::test(start_paused = true)]
    async fn work_is_cut_at_the_deadline_less_its_margin() {
        let start = Instant::now();
        let deadline = Deadline::at(start + Duration::from_secs(3)).less(STORE_MARGIN);
        let slow = deadline.bound(tokio::time::sleep(Duration::from_secs(60)));
        assert_eq!(slow.await, Err(OutOfTime));
        assert_eq!(start.elapsed(), Duration::from_millis(2750));
        assert_eq!(Deadline::NONE.bound(async { 7 }).await, Ok(7));
        assert!(!Deadline::NONE.passed());
    }

    #[test]
    fn caps_keep_a_margin() {
        let now = Instant::now();
        let limit = now + Duration::from_secs(30);
        let d = Deadline::at(now + Duration::from_secs(10));
        assert_eq!(
            d.cap(limit, SAVE_RESERVE, now),
            now + Duration::from_millis(7500)
        );
        assert_eq!(Deadline::NONE.cap(limit, SAVE_RESERVE, now), limit);
        let close = Deadline::at(now + Duration::from_secs(1));
        assert!(close.cap(limit, SAVE_RESERVE, now) <= now, "no time left");
    }
}
