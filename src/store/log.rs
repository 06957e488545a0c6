//! The log's rules, as pure functions (docs/storage.md, "The log"): a session's
//! runs in numbered slots taken from an atomic counter on its head item, each written once; the
//! session item's `value` a bounded view of the newest runs. No I/O and no DynamoDB types here.

use std::collections::{BTreeMap, HashSet};

use crate::memory::{Memory, Run};

use super::branch::Tree;
use super::spill::{shortened, Spill, INLINE_CHARS};

/// A slot pending longer than this is a writer that died: no invocation lives past Lambda's
/// 15 minutes, so a reader may fill it with a hole.
pub const MAX_PENDING_MS: u64 = 16 * 60 * 1000;

/// Default bytes of griptape's view: the recipe's walkthrough whole, and a turn's writes within
/// about four times its run.
pub const DEFAULT_VIEW_BYTES: usize = 2048;

/// Keys at most this many slots go in one BatchGetItem (DynamoDB's limit is 100 keys; the
/// session item, the summary and a receipt take the rest).
pub const SLOTS_PER_READ: usize = 96;

/// Slots a turn reads at most for its window (the window steps long before).
pub const MAX_WINDOW_SLOTS: u64 = 4 * SLOTS_PER_READ as u64;

/// The head item: the session's slot counter and where its generation's log begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub generation: String,
    /// The first slot of this generation's log; runs before it are in pages.
    pub base: u64,
    /// The next free slot.
    pub next: u64,
    /// Slots filled (with a run or a hole).
    pub done: u64,
    /// Of those, holes.
    pub holes: u64,
    /// When the newest slot was reserved (epoch ms).
    pub reserved_ms: u64,
    /// The prompt window's first slot.
    pub window_from: u64,
    /// A delete closed it: no slot is taken any more.
    pub closed: bool,
    /// Runs whose texts are in parts (by run id), so a delete finds the parts.
    pub spilled: BTreeMap<String, Spill>,
    /// The expiry every slot, summary and part of the generation carries at least (TTL).
    pub slots_expire_at: Option<u64>,
    /// A view was written: a session item missing since was removed (TTL), not yet written.
    pub viewed: bool,
    /// Every slot before this one was dropped by MAX_RUNS (0: none yet).
    pub dropped_to: u64,
    /// Slots whose parent is not the slot before them (regenerations, edits, the first turn
    /// after a select), and the active path's end when it is not the newest slot.
    pub forks: BTreeMap<u64, Option<u64>>,
    pub tip: Option<u64>,
    /// Changes of the active path (forks, selects, deletes): a view records it, so a view of
    /// an older path never replaces a newer one.
    pub moves: u64,
}

impl Head {
    /// A new generation's head, before its first slot.
    pub fn empty(generation: String) -> Head {
        Head {
            generation,
            base: 0,
            next: 0,
            done: 0,
            holes: 0,
            reserved_ms: 0,
            window_from: 0,
            closed: false,
            spilled: BTreeMap::new(),
            slots_expire_at: None,
            viewed: false,
            dropped_to: 0,
            forks: BTreeMap::new(),
            tip: None,
            moves: 0,
        }
    }

    /// Which slot follows which.
    pub fn tree(&self) -> Tree {
        Tree {
            base: self.base,
            next: self.next,
            forks: self.forks.clone(),
            tip: self.tip,
        }
    }

    /// Slots reserved and not yet filled.
    pub fn in_flight(&self) -> u64 {
        (self.next - self.base).saturating_sub(self.done)
    }

    /// Whether every reserved slot is filled: the turn that sees this (after counting its own
    /// slot done) completes the burst and writes the view.
    pub fn settled(&self) -> bool {
        self.in_flight() == 0
    }
}

/// What a slot holds when read.
#[derive(Debug, Clone, PartialEq)]
pub enum SlotState {
    Run {
        run: Run,
        /// When its slot was reserved (epoch ms).
        reserved_ms: u64,
    },
    /// Filled by a failed turn, or by a reader for a writer that died: no run, ever.
    Hole { reserved_ms: u64 },
    /// No item yet: a turn is still writing it.
    Pending,
}

impl SlotState {
    fn reserved_ms(&self) -> Option<u64> {
        match self {
            SlotState::Run { reserved_ms, .. } | SlotState::Hole { reserved_ms } => {
                Some(*reserved_ms)
            }
            SlotState::Pending => None,
        }
    }
}

/// Pending slots among `slots` (numbered from `first`, oldest first) whose writer has provably
/// died: a slot's reservation is no later than any later slot's, nor than the head's newest.
pub fn dead_slots(first: u64, slots: &[SlotState], head_reserved_ms: u64, now_ms: u64) -> Vec<u64> {
    let mut dead = Vec::new();
    // The earliest reservation after each slot, walking from the newest.
    let mut later = head_reserved_ms;
    for (i, state) in slots.iter().enumerate().rev() {
        match state.reserved_ms() {
            Some(at) => later = later.min(at),
            None if now_ms.saturating_sub(later) > MAX_PENDING_MS => dead.push(first + i as u64),
            None => {}
        }
    }
    dead.reverse();
    dead
}

/// Where a window may step to: never past a pending slot, so every pending slot stays within
/// every turn's read (and a dead one is found and filled).
pub fn step_bound(step_to: u64, first: u64, slots: &[SlotState]) -> u64 {
    let pending = slots.iter().position(|s| *s == SlotState::Pending);
    pending.map_or(step_to, |i| step_to.min(first + i as u64))
}

/// Slots one turn deletes at most when `MAX_RUNS` is set or lowered; later turns go on.
pub const MAX_PRUNED: usize = 16;

/// The slot `MAX_RUNS` leaves behind when `slot` is written: deleted with its parts, so no copy
/// of a dropped run's text is kept.
pub fn dropped_by(slot: u64, max_runs: Option<u64>) -> Option<u64> {
    slot.checked_sub(max_runs?)
}

/// Griptape's view: the newest of `runs` (oldest first) whose JSON fits `budget` bytes, always
/// at least the newest; a run over `spill_over` bytes shows its shortened text, as a spilled
/// run does today. The envelope (shape, `max_runs`, keys we do not own) is `template`'s.
pub fn view(template: &Memory, runs: &[Run], budget: usize, spill_over: usize) -> Memory {
    let format = template.format;
    let mut kept: Vec<Run> = Vec::new();
    let mut used = 0;
    for run in runs.iter().rev() {
        let run = if run.encoded_len(format) > spill_over {
            let short = |t: &str| {
                if t.chars().count() > INLINE_CHARS {
                    shortened(t)
                } else {
                    t.to_owned()
                }
            };
            run.with_texts(short(&run.input), short(&run.output))
        } else {
            run.clone()
        };
        let size = run.encoded_len(format) + 2;
        if !kept.is_empty() && used + size > budget {
            break;
        }
        used += size;
        kept.push(run);
    }
    kept.reverse();
    let mut shown = template.with_runs(kept);
    // Readers bound history by it (`Window`): the view carries the session's `max_runs`.
    shown.max_runs = template.max_runs;
    shown
}

/// Whether a turn must set the expiry of the generation's side items, and to what: with a
/// TTL, when the session would outlive them (they get half a TTL more than the session, so
/// this comes once every half TTL); without, once, to remove it.
pub fn expiry_due(slots_expire_at: Option<u64>, ttl: Option<u64>, now: u64) -> Option<Option<u64>> {
    match ttl {
        Some(ttl) => slots_expire_at
            .is_none_or(|t| t < now + ttl)
            .then_some(Some(now + ttl + ttl / 2)),
        None => slots_expire_at.map(|_| None),
    }
}

/// Slots a migration or an adoption writes in its one transaction (DynamoDB takes 100 actions:
/// the head, the session item, a page and the summary take the rest).
pub const SLOTS_PER_MOVE: usize = 96;

/// How many of a migrated item's `n` runs (oldest first) go into one more page, so the newest
/// [`SLOTS_PER_MOVE`] fit their slots in the same transaction.
pub fn migrated_to_page(n: usize) -> usize {
    n.saturating_sub(SLOTS_PER_MOVE)
}

/// Whether griptape wrote over a view: our `value` had `view_size` bytes.
pub fn written_over(value: &str, view_size: Option<u64>) -> bool {
    view_size.is_some_and(|size| size != value.len() as u64)
}

/// The runs griptape added to a view (oldest first), at most [`SLOTS_PER_MOVE`] a pass: those
/// after the view's newest run, `view_last`; when griptape's value no longer holds that run,
/// every run no slot read (`held`) holds, and none when no slot was read.
pub fn adopted<'a>(
    runs: &'a [Run],
    view_last: Option<&str>,
    held: Option<&HashSet<&str>>,
) -> &'a [Run] {
    let after = view_last.and_then(|last| runs.iter().rposition(|r| r.id == last));
    let new = match (after, held) {
        (Some(i), _) => &runs[i + 1..],
        (None, Some(held)) => {
            let first_new = runs.iter().position(|r| !held.contains(r.id.as_str()));
            &runs[first_new.unwrap_or(runs.len())..]
        }
        (None, None) => &[],
    };
    &new[..new.len().min(SLOTS_PER_MOVE)]
}

/// The start of a listing's preview under `MAX_RUNS`: the oldest kept run's message, so a
/// dropped run's text leaves the session item too.
pub fn preview_of(runs: &[Run], chars: usize) -> Option<String> {
    runs.first().map(|r| r.input.chars().take(chars).collect())
}

/// A head's `spilled` entry: `<run id>=<spill>`.
pub fn encode_spilled(run_id: &str, spill: &Spill) -> String {
    format!("{run_id}={}", spill.encode())
}

pub fn parse_spilled(entry: &str) -> Option<(String, Spill)> {
    let (id, spill) = entry.split_once('=')?;
    Some((id.to_owned(), Spill::parse(spill)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Format;

    fn head(base: u64, next: u64, done: u64) -> Head {
        Head {
            generation: "g".into(),
            base,
            next,
            done,
            holes: 0,
            reserved_ms: 0,
            window_from: base,
            closed: false,
            spilled: BTreeMap::new(),
            slots_expire_at: None,
            viewed: false,
            dropped_to: 0,
            forks: BTreeMap::new(),
            tip: None,
            moves: 0,
        }
    }

    #[test]
    fn the_turn_that_fills_the_last_reserved_slot_settles_the_burst() {
        assert!(head(10, 13, 3).settled());
        assert!(!head(10, 13, 2).settled());
        assert_eq!(head(10, 13, 2).in_flight(), 1);
    }

    #[test]
    fn only_slots_pending_past_the_limit_are_dead() {
        let run = |at| SlotState::Run {
            run: Run::new("a", "b"),
            reserved_ms: at,
        };
        let now = 100 * MAX_PENDING_MS;
        let old = now - MAX_PENDING_MS - 1;
        let slots = [SlotState::Pending, run(old), SlotState::Pending, run(now)];
        // Slot 5's reservation is before slot 6's (old); slot 7 is before slot 8's (now).
        assert_eq!(dead_slots(5, &slots, now, now), vec![5]);
        // The newest pending slot is judged by the head's last reservation.
        let tail = [run(old), SlotState::Pending];
        assert_eq!(dead_slots(0, &tail, old, now), vec![1]);
        assert!(dead_slots(0, &tail, now - 1, now).is_empty());
        let hole = [SlotState::Pending, SlotState::Hole { reserved_ms: old }];
        assert_eq!(dead_slots(3, &hole, now, now), vec![3]);
    }

    #[test]
    fn a_window_never_steps_past_a_pending_slot() {
        let run = SlotState::Run {
            run: Run::new("a", "b"),
            reserved_ms: 0,
        };
        let slots = [run.clone(), SlotState::Pending, run.clone(), run];
        assert_eq!(step_bound(13, 10, &slots), 11);
        assert_eq!(step_bound(10, 10, &slots), 10);
        assert_eq!(step_bound(13, 10, &slots[..1]), 13);
    }

    #[test]
    fn max_runs_drops_the_slot_it_leaves_behind() {
        assert_eq!(dropped_by(10, Some(3)), Some(7));
        assert_eq!(dropped_by(2, Some(3)), None);
        assert_eq!(dropped_by(10, None), None);
    }

    #[test]
    fn the_view_keeps_the_newest_runs_within_its_budget() {
        let template = Memory::new(Format::Seed);
        let runs: Vec<Run> = (0..10)
            .map(|i| Run::new(format!("m{i} {}", "x".repeat(300)), "ok"))
            .collect();
        let shown = view(&template, &runs, 2048, 49_152);
        assert!(
            shown.encode().len() <= 2048 + 100,
            "{}",
            shown.encode().len()
        );
        assert!(shown.runs.len() >= 5);
        assert_eq!(shown.runs.last().unwrap().id, runs[9].id);
        // Always the newest, shortened when it is too large for the item.
        let huge = vec![Run::new("q", "y".repeat(200_000))];
        let shown = view(&template, &huge, 2048, 49_152);
        assert_eq!(shown.runs.len(), 1);
        assert!(shown.runs[0].output.len() < 3000);
        assert_eq!(shown.runs[0].id, huge[0].id);
        assert_eq!(Memory::decode(&shown.encode()).unwrap().runs.len(), 1);
    }

    #[test]
    fn the_preview_is_the_oldest_kept_message() {
        let runs = vec![Run::new("kept first", "a"), Run::new("b", "c")];
        assert_eq!(preview_of(&runs, 4).as_deref(), Some("kept"));
        assert_eq!(preview_of(&[], 4), None);
    }

    #[test]
    fn side_items_never_expire_before_their_session() {
        let day = 86_400;
        // Set on the first turn, then again only once the session would outlive them.
        assert_eq!(expiry_due(None, Some(2 * day), 0), Some(Some(3 * day)));
        assert_eq!(expiry_due(Some(3 * day), Some(2 * day), day - 1), None);
        assert_eq!(
            expiry_due(Some(3 * day), Some(2 * day), day + 1),
            Some(Some(4 * day + 1))
        );
        // TTL turned off: removed once.
        assert_eq!(expiry_due(Some(3 * day), None, day), Some(None));
        assert_eq!(expiry_due(None, None, day), None);
    }

    #[test]
    fn a_migration_pages_only_what_one_transaction_cannot_hold() {
        assert_eq!(migrated_to_page(3), 0);
        assert_eq!(migrated_to_page(SLOTS_PER_MOVE), 0);
        assert_eq!(migrated_to_page(SLOTS_PER_MOVE + 5), 5);
    }

    #[test]
    fn griptapes_runs_over_a_view_are_those_after_its_newest() {
        let runs: Vec<Run> = (0..4).map(|i| Run::new(format!("m{i}"), "ok")).collect();
        let ids = |r: &[Run]| r.iter().map(|r| r.input.clone()).collect::<Vec<_>>();
        let none = HashSet::new();
        assert_eq!(
            ids(adopted(&runs, Some(&runs[1].id), Some(&none))),
            ["m2", "m3"]
        );
        assert!(adopted(&runs, Some(&runs[3].id), Some(&none)).is_empty());
        assert!(adopted(&runs, Some("gone"), None).is_empty());
        // The view's newest is gone from griptape's value: what no slot holds is new.
        let held: HashSet<&str> = [runs[0].id.as_str(), runs[1].id.as_str()].into();
        assert_eq!(ids(adopted(&runs, Some("gone"), Some(&held))), ["m2", "m3"]);
        assert!(written_over("abc", Some(4)));
        assert!(!written_over("abc", Some(3)));
        assert!(!written_over("abc", None));
    }
}
