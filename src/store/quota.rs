//! Per-owner quotas as the table keeps them (docs/storage.md, "Quotas"): who is counted, the
//! windows, the counters' keys and expiry, and how long a refused caller waits. Pure.

use crate::input::{OwnerKey, SessionKey};

const MINUTE: u64 = 60;
const DAY: u64 = 86_400;

/// The limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    pub turns_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
}

impl Quotas {
    pub fn is_off(&self) -> bool {
        self.turns_per_minute.is_none() && self.tokens_per_day.is_none()
    }
}

/// Which quota refused a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    TurnsPerMinute,
    TokensPerDay,
}

/// Whose turns are counted: the owner, or the session when the turn names none.
pub fn who(owner: Option<&OwnerKey>, session: &SessionKey) -> String {
    match owner {
        Some(owner) => owner.as_str().to_owned(),
        None => format!("session:{session}"),
    }
}

/// A counter of one window: its item's key, its expiry (TTL), and the seconds from `now` to
/// the window's end (a refused caller's `Retry-After`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub key: String,
    pub expires_at: u64,
    pub retry_after: u64,
}

fn counter(kind: &str, who: &str, length: u64, now: u64) -> Counter {
    let window = now / length;
    let end = (window + 1) * length;
    Counter {
        key: format!("#quota#{kind}#{who}#{window}"),
        // Kept a window past its end: TTL removes it late anyway, and no one reads it then.
        expires_at: end + length.max(MINUTE),
        retry_after: (end - now).max(1),
    }
}

/// The turn counter of `who` in the minute of `now` (epoch seconds).
pub fn turns(who: &str, now: u64) -> Counter {
    counter("turns", who, MINUTE, now)
}

/// The token counter of `who` in the UTC day of `now`.
pub fn tokens(who: &str, now: u64) -> Counter {
    counter("tokens", who, DAY, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_keyed_by_who_and_window() {
        let session = SessionKey::from_stored("s1".to_owned());
        assert_eq!(who(None, &session), "session:s1");
        let t = turns("user:ann", 1_800_000_059);
        assert_eq!(t.key, "#quota#turns#user:ann#30000000");
        assert_eq!((t.retry_after, t.expires_at), (1, 1_800_000_120));
        let t = turns("user:ann", 1_800_000_000);
        assert_eq!(
            (t.key.as_str(), t.retry_after),
            ("#quota#turns#user:ann#30000000", 60)
        );
        let d = tokens("user:ann", 86_400 * 20_000 + 3_600);
        assert_eq!(d.key, "#quota#tokens#user:ann#20000");
        assert_eq!(d.retry_after, 86_400 - 3_600);
        assert_eq!(d.expires_at, 86_400 * 20_002);
    }
}
