//! The versions of a log session's runs, as pure rules (docs/storage.md, "Versions:
//! regenerate, edit, select"): every slot has a parent, the slot before it on its path; the
//! head keeps only the exceptions (`forks`) and, after a select, the active path's last slot
//! (`tip`). No I/O and no DynamoDB types here.

use std::collections::{BTreeMap, BTreeSet};

/// Versions one place holds at most (the first and its regenerations or edits).
pub const MAX_VERSIONS: usize = 16;

/// Forks a session holds at most: the head carries them all, so every turn pays for them
/// (about 12 bytes each; 200 keep the head within 4 KB).
pub const MAX_FORKS: usize = 200;

/// Fork entries the head keeps at most, those of turns that stored nothing (a failed or
/// refused regeneration, a replay after a select) included: the limits above count only
/// versions that hold a run, and this bounds the head (about 10 KB).
pub const MAX_FORK_ENTRIES: usize = 4 * MAX_FORKS;

/// The shape of a session's slots: which slot follows which.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// The first slot of the log (runs before it are pages: a path never forks there).
    pub base: u64,
    /// The next free slot: slots `base..next` exist (or are pending).
    pub next: u64,
    /// Slots whose parent is not the slot before them: `None` for a new first run.
    pub forks: BTreeMap<u64, Option<u64>>,
    /// The active path's last slot, when it is not the newest (`next - 1`).
    pub tip: Option<u64>,
}

impl Tree {
    /// Whether every slot follows the one before it: a conversation never edited.
    pub fn is_linear(&self) -> bool {
        self.forks.is_empty() && self.tip.is_none()
    }

    /// The slot before `slot` on its path; `None` at the first.
    pub fn parent(&self, slot: u64) -> Option<u64> {
        match self.forks.get(&slot) {
            Some(parent) => *parent,
            None => slot.checked_sub(1).filter(|p| *p >= self.base),
        }
    }

    /// The active path's last slot; `None` before the first.
    pub fn leaf(&self) -> Option<u64> {
        self.tip
            .or_else(|| self.next.checked_sub(1).filter(|l| *l >= self.base))
    }

    /// `slot` and the slots before it on its path, newest first, down to `floor` (excluded).
    pub fn path_from(&self, slot: u64, floor: Option<u64>) -> Vec<u64> {
        let mut path = Vec::new();
        let mut at = Some(slot);
        while let Some(s) = at {
            if floor.is_some_and(|f| s <= f) || s < self.base {
                break;
            }
            path.push(s);
            at = self.parent(s);
        }
        path
    }

    /// The active path as a set, from `floor` (excluded) on.
    pub fn active(&self, floor: Option<u64>) -> BTreeSet<u64> {
        self.leaf()
            .map(|leaf| self.path_from(leaf, floor).into_iter().collect())
            .unwrap_or_default()
    }

    /// Whether `ancestor` is `slot` or on the path before it.
    pub fn is_on_path(&self, ancestor: u64, slot: u64) -> bool {
        let mut at = Some(slot);
        while let Some(s) = at {
            if s == ancestor {
                return true;
            }
            if s < ancestor {
                return false;
            }
            at = self.parent(s);
        }
        false
    }

    /// The slots that follow `parent` (the first slots when `None`), oldest first.
    pub fn children(&self, parent: Option<u64>) -> Vec<u64> {
        let mut kids: BTreeSet<u64> = self
            .forks
            .iter()
            .filter(|(_, p)| **p == parent)
            .map(|(s, _)| *s)
            .collect();
        let follower = match parent {
            Some(p) => p + 1,
            None => self.base,
        };
        if follower < self.next && !self.forks.contains_key(&follower) {
            kids.insert(follower);
        }
        kids.into_iter().collect()
    }

    /// The versions at `slot`'s place: every slot with its parent, `slot` included, oldest
    /// first.
    pub fn versions(&self, slot: u64) -> Vec<u64> {
        self.children(self.parent(slot))
    }

    /// Where the active path ends once it goes through `slot`: down its newest branch.
    pub fn leaf_under(&self, slot: u64) -> u64 {
        let mut at = slot;
        while let Some(newest) = self.children(Some(at)).last() {
            at = *newest;
        }
        at
    }
}

/// A fork as the head keeps it: `<slot>:<parent>`, or `<slot>:` for a new first run.
pub fn encode_fork(slot: u64, parent: Option<u64>) -> String {
    match parent {
        Some(p) => format!("{slot}:{p}"),
        None => format!("{slot}:"),
    }
}

pub fn parse_fork(text: &str) -> Option<(u64, Option<u64>)> {
    let (slot, parent) = text.split_once(':')?;
    let slot: u64 = slot.parse().ok()?;
    let parent = match parent {
        "" => None,
        p => Some(p.parse::<u64>().ok().filter(|p| *p < slot)?),
    };
    Some((slot, parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(next: u64, forks: &[(u64, Option<u64>)], tip: Option<u64>) -> Tree {
        Tree {
            base: 0,
            next,
            forks: forks.iter().copied().collect(),
            tip,
        }
    }

    #[test]
    fn a_conversation_never_edited_is_one_path() {
        let t = tree(4, &[], None);
        assert!(t.is_linear());
        assert_eq!(t.leaf(), Some(3));
        assert_eq!(t.path_from(3, None), vec![3, 2, 1, 0]);
        assert_eq!(t.path_from(3, Some(1)), vec![3, 2]);
        assert_eq!(t.versions(2), vec![2]);
        assert_eq!(tree(0, &[], None).leaf(), None);
    }

    #[test]
    fn an_edit_takes_the_place_of_the_run_it_edits() {
        // 0 1 2 3, then run 1 edited: slot 4 follows 0; slot 5 follows 4.
        let t = tree(6, &[(4, Some(0))], None);
        assert_eq!(t.path_from(5, None), vec![5, 4, 0]);
        assert_eq!(t.versions(4), vec![1, 4]);
        assert_eq!(t.versions(1), vec![1, 4]);
        assert_eq!(t.children(Some(3)), Vec::<u64>::new());
        assert!(t.is_on_path(0, 5) && !t.is_on_path(2, 5));
        // Selecting run 1 goes down its newest branch to 3.
        assert_eq!(t.leaf_under(1), 3);
        let selected = tree(6, &[(4, Some(0))], Some(3));
        assert_eq!(selected.active(None), [0, 1, 2, 3].into());
    }

    #[test]
    fn an_edit_of_the_first_run_starts_a_new_path() {
        let t = tree(3, &[(2, None)], None);
        assert_eq!(t.path_from(2, None), vec![2]);
        assert_eq!(t.versions(2), vec![0, 2]);
        assert_eq!(t.children(None), vec![0, 2]);
    }

    #[test]
    fn forks_round_trip() {
        for (slot, parent) in [(5, Some(2)), (7, None)] {
            assert_eq!(parse_fork(&encode_fork(slot, parent)), Some((slot, parent)));
        }
        assert_eq!(parse_fork("3:3"), None);
        assert_eq!(parse_fork("x:1"), None);
        assert_eq!(parse_fork("3"), None);
    }
}
