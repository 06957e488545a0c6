//! Every attribute name the store writes, defined once. The lists below (what we own on the
//! session item, what side items use, what the owner index projects) are what the item mapping,
//! configuration's reserved names and the template checks derive from; `docs/storage.md` "Items"
//! describes each attribute.

// The session item's bookkeeping.
pub const VERSION: &str = "version";
pub const GENERATION: &str = "generation";
pub const FIRST_RUN: &str = "first_run";
pub const PAGES: &str = "pages";
pub const PAGES_NEXT: &str = "pages_next";
pub const SPILLED: &str = "spilled";
pub const LAST_RUNS: &str = "last_runs";
pub const ARCHIVE_EXPIRES_AT: &str = "archive_expires_at";
pub const CLEANUP: &str = "cleanup";
pub const TOMBSTONE: &str = "tombstone";
pub const UPDATED_AT: &str = "updated_at";
pub const SUMMARY: &str = "summary";
pub const SUMMARY_THROUGH: &str = "summary_through";
/// The id of the prompt window's first run, and the session's token calibration in
/// thousandths (docs/context.md).
pub const WINDOW_FROM: &str = "window_from";
pub const TOKEN_SCALE: &str = "token_scale";

/// The owner index's keys: whose session, and when it was last active (epoch milliseconds, so
/// sessions of one second keep their order).
pub const OWNER_KEY: &str = "owner_key";
pub const ACTIVE_MS: &str = "active_ms";

// What a listing shows.
pub const SESSION_ID: &str = "session_id";
pub const RUN_COUNT: &str = "run_count";
pub const PREVIEW: &str = "preview";
pub const TITLE: &str = "title";
/// A Responses API conversation's metadata (a JSON object, S).
pub const CONVERSATION_METADATA: &str = "conversation_metadata";

/// A session in the log (docs/storage.md, "The log"): its item is a view, `value` the
/// newest runs through slot `view_through`; `next_generation`, on a tombstone, names the
/// generation a turn began over it.
pub const LOG: &str = "log";
pub const VIEW_THROUGH: &str = "view_through";
/// The bytes of the `value` this project wrote as the view, and the id of its newest run: a
/// `value` of another size was written over by griptape, its runs after `view_last` are new.
pub const VIEW_SIZE: &str = "view_size";
pub const VIEW_LAST: &str = "view_last";
pub const NEXT_GENERATION: &str = "next_generation";

// The head item of a log: its slot counter.
pub const BASE: &str = "base";
pub const NEXT: &str = "next";
pub const DONE: &str = "done";
pub const HOLES: &str = "holes";
pub const RESERVED_MS: &str = "reserved_ms";
pub const CLOSED: &str = "closed";
/// The expiry a log generation's side items carry at least.
pub const SLOTS_EXPIRE_AT: &str = "slots_expire_at";
/// On a head: its generation's view has been written once.
pub const VIEWED: &str = "viewed";
/// On a head: the slots before it were dropped by MAX_RUNS.
pub const DROPPED_TO: &str = "dropped_to";
/// Prefixes the head's attribute naming a reservation's slot (`token_<token>`), until the
/// reserving turn is counted done.
pub const TOKEN_PREFIX: &str = "token_";
/// On a head: the versions of its runs (docs/storage.md, "Versions"): `forks` (SS of
/// `<slot>:<parent>`), `tip` (the active path's end after a select), `moves` (changes of the
/// active path); on the view, `view_moves`, the `moves` it was written at.
pub const FORKS: &str = "forks";
pub const TIP: &str = "tip";
pub const MOVES: &str = "moves";
pub const VIEW_MOVES: &str = "view_moves";
/// On a slot: a reader's rating of its reply (M: `rating`, `comment`, `at`); a run deleted by
/// its user is a hole marked `deleted`.
pub const FEEDBACK: &str = "feedback";
pub const RATING: &str = "rating";
pub const COMMENT: &str = "comment";
pub const AT: &str = "at";
pub const DELETED: &str = "deleted";
/// On a slot: the record of the Responses API response that made its run (JSON, S).
pub const RESPONSE: &str = "response";

/// Written by earlier releases; dropped at the next save.
pub const LEGACY_ARCHIVED: &str = "archived";
pub const LEGACY_RECEIPTS: &str = "receipts";

// On every item.
pub const CREATED_AT: &str = "created_at";
/// TTL (epoch seconds); the table's TimeToLiveSpecification names it.
pub const EXPIRES_AT: &str = "expires_at";

// Side items: pages, parts and receipts.
pub const KIND: &str = "kind";
/// A page's memory JSON. Not the key schema's value attribute: pages always use this name.
pub const PAGE_VALUE: &str = "value";
pub const FIRST: &str = "first";
pub const RUN: &str = "run";
pub const FIELD: &str = "field";
pub const TEXT: &str = "text";
pub const MESSAGE_DIGEST: &str = "message_digest";
pub const RUN_ID: &str = "run_id";
/// A slot's run: a memory JSON holding it alone, in the session's shape, kept byte for byte.
pub const MEMORY: &str = "run_memory";
pub const SLOT: &str = "slot";

/// A quota counter's count (its own item: docs/storage.md, "Quotas").
pub const QUOTA_TURNS: &str = "turns";
pub const QUOTA_TOKENS: &str = "tokens";

/// A reply in progress (docs/storage.md, "Replies in progress"): its pieces so far (L of S),
/// its `status` (`in_progress`, `failed`, `cancelled`), and whether the pieces stopped being kept
/// (`capped`, the item near its limit).
pub const PIECES: &str = "pieces";
pub const STATUS: &str = "status";
pub const CAPPED: &str = "capped";

/// Values of [`KIND`].
pub const KIND_RUNS: &str = "runs";
pub const KIND_PART: &str = "part";
pub const KIND_RUN: &str = "run";
pub const KIND_HOLE: &str = "hole";
pub const KIND_HEAD: &str = "head";
pub const KIND_SUMMARY: &str = "summary";
pub const KIND_LIVE: &str = "live";

/// Attributes of the session item this code owns; everything else on it is written back as
/// read (`created_at` too: it is set once).
pub const OWNED: &[&str] = &[
    VERSION,
    GENERATION,
    FIRST_RUN,
    PAGES,
    PAGES_NEXT,
    SPILLED,
    LAST_RUNS,
    ARCHIVE_EXPIRES_AT,
    CLEANUP,
    TOMBSTONE,
    UPDATED_AT,
    EXPIRES_AT,
    SUMMARY,
    SUMMARY_THROUGH,
    WINDOW_FROM,
    TOKEN_SCALE,
    OWNER_KEY,
    ACTIVE_MS,
    SESSION_ID,
    RUN_COUNT,
    PREVIEW,
    TITLE,
    LEGACY_ARCHIVED,
    LEGACY_RECEIPTS,
    LOG,
    VIEW_THROUGH,
    VIEW_SIZE,
    VIEW_LAST,
    NEXT_GENERATION,
    VIEW_MOVES,
];

/// Attributes of side items (and `created_at`) beside those in [`OWNED`].
pub const SIDE: &[&str] = &[
    CREATED_AT,
    KIND,
    FIRST,
    TEXT,
    RUN,
    FIELD,
    MESSAGE_DIGEST,
    RUN_ID,
    MEMORY,
    SLOT,
    BASE,
    NEXT,
    DONE,
    HOLES,
    RESERVED_MS,
    CLOSED,
    SLOTS_EXPIRE_AT,
    VIEWED,
    DROPPED_TO,
    FORKS,
    TIP,
    MOVES,
    FEEDBACK,
    DELETED,
];

/// What the owner index projects: what a listing reads.
pub const INDEX_PROJECTION: &[&str] = &[
    SESSION_ID, CREATED_AT, UPDATED_AT, RUN_COUNT, PREVIEW, TITLE, TOMBSTONE,
];

/// Whether a configured key or value attribute name would collide with one of ours. The page
/// value's name is not among them: it is the recipe's own value attribute.
pub fn is_reserved(name: &str) -> bool {
    OWNED.contains(&name) || SIDE.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_name_each_attribute_once() {
        let all: Vec<&str> = OWNED.iter().chain(SIDE).copied().collect();
        for (i, name) in all.iter().enumerate() {
            assert!(!all[..i].contains(name), "{name} is listed twice");
        }
        assert!(INDEX_PROJECTION.iter().all(|a| is_reserved(a)));
        assert!(!is_reserved(PAGE_VALUE) && !is_reserved("id"));
    }
}
