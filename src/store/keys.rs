//! Every item's key, built from parts that cannot hold the separators `/` and `#`, so no two
//! items share a key (docs/storage.md, "Keys"). Pure; the bottom of the store.

use crate::input::{IdempotencyKey, SessionKey};

/// The head: a session's slot counter. It has no generation, so a turn reads it first.
pub fn head_key(session: &SessionKey) -> String {
    format!("{session}#head")
}

/// Slot `slot` of a generation's log; keys sort in slot order.
pub fn run_key(session: &SessionKey, generation: &str, slot: u64) -> String {
    format!("{session}#{generation}#run#{slot:010}")
}

pub fn summary_key(session: &SessionKey, generation: &str) -> String {
    format!("{session}#{generation}#summary")
}

/// A page of older runs (a migrated session's, or an earlier release's at generation
/// `archive`).
pub fn page_key(session: &SessionKey, generation: &str, page: u64) -> String {
    format!("{session}#{generation}#{page:08}")
}

/// Part `part` of a spilled run's `field` (`input` or `output`).
pub fn part_key(
    session: &SessionKey,
    generation: &str,
    run_id: &str,
    field: &str,
    part: u32,
) -> String {
    format!("{session}#{generation}#part#{run_id}#{field}#{part:04}")
}

/// A streamed reply while it is written (docs/storage.md, "Replies in progress"): under the
/// session, not a generation, since the reader knows only the run.
pub fn live_key(session: &SessionKey, run_id: &str) -> String {
    format!("{session}#live#{run_id}")
}

pub fn receipt_key(session: &SessionKey, generation: &str, key: &IdempotencyKey) -> String {
    format!("{session}#{generation}#idem#{}", key.encoded())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::SessionId;

    #[test]
    fn keys_are_apart_from_every_other_item() {
        let session = SessionKey::new(&SessionId::parse("s").unwrap(), None);
        assert_eq!(head_key(&session), "s#head");
        assert_eq!(run_key(&session, "g1", 7), "s#g1#run#0000000007");
        assert_eq!(summary_key(&session, "g1"), "s#g1#summary");
        assert_eq!(page_key(&session, "g1", 3), "s#g1#00000003");
        assert_eq!(live_key(&session, "r1"), "s#live#r1");
        assert_eq!(
            part_key(&session, "g1", "r", "output", 2),
            "s#g1#part#r#output#0002"
        );
        // Slot keys sort in slot order.
        assert!(run_key(&session, "g", 9) < run_key(&session, "g", 10));
    }
}
