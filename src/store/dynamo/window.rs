//! What a turn works from: the snapshot of its window's slots, the summary of its path, an
//! edited conversation's path below the window, and a receipt's run read from its slot.

use super::DynamoStore;
use crate::input::SessionKey;
use crate::memory::Run;
use crate::store::item::{count, decode_session, text, Item};
use crate::store::keys::run_key;
use crate::store::layout::Layout;
use crate::store::log::{SlotState, MAX_WINDOW_SLOTS};
use crate::store::log_item::{decode_slot, slot_spill};
use crate::store::{attr, LogTurn, Snapshot, StoreError, Summary};

impl DynamoStore {
    /// An edited conversation's turn reads its path's runs below its window too: those after
    /// the summary when the summary is of its path, else after the slots MAX_RUNS dropped.
    pub(super) async fn widen_to_path(
        &self,
        session: &SessionKey,
        turn: &mut LogTurn,
        summary: Option<&Item>,
    ) -> Result<(), StoreError> {
        let tree = turn.head.tree();
        let summarized = match summary {
            Some(item) => count(item, attr::SLOT)?,
            None => None,
        };
        let valid = summarized.filter(|s| tree.is_on_path(*s, turn.slot));
        let floor = valid.or(turn.head.dropped_to.max(turn.head.base).checked_sub(1));
        let path = tree.path_from(turn.slot, floor);
        let Some(&lowest) = path
            .iter()
            .skip(1)
            .take(MAX_WINDOW_SLOTS as usize)
            .next_back()
        else {
            return Ok(());
        };
        if lowest >= turn.first {
            return Ok(());
        }
        let generation = turn.head.generation.clone();
        let keys: Vec<String> = (lowest..turn.first)
            .map(|i| run_key(session, &generation, i))
            .collect();
        let mut got = self.batch_get(&keys).await?;
        let mut below = keys
            .iter()
            .map(|k| decode_slot(got.remove(k)))
            .collect::<Result<Vec<_>, _>>()?;
        below.append(&mut turn.slots);
        turn.slots = below;
        turn.first = lowest;
        Ok(())
    }

    /// The snapshot a turn of a log session works from: the view's envelope, the runs read.
    pub(super) fn snapshot_of(
        &self,
        root: Option<Item>,
        summary: Option<Item>,
        turn: LogTurn,
    ) -> Result<Snapshot, StoreError> {
        let had_root = root
            .as_ref()
            .is_some_and(|r| !r.contains_key(attr::TOMBSTONE));
        let had_tombstone = root.is_some() && !had_root;
        let mut snapshot = match root {
            Some(item) => decode_session(item, &self.schema)?,
            None => Snapshot::new_session(),
        };
        // An edited conversation: the prompt holds the turn's own path only.
        let tree = turn.head.tree();
        let path: Option<std::collections::BTreeSet<u64>> =
            (!tree.is_linear()).then(|| tree.path_from(turn.slot, None).into_iter().collect());
        let on_path = |slot: u64| path.as_ref().is_none_or(|p| p.contains(&slot));
        let runs: Vec<Run> = turn
            .slots
            .iter()
            .enumerate()
            .filter(|(i, _)| on_path(turn.first + *i as u64))
            .filter_map(|(_, s)| match s {
                SlotState::Run { run, .. } => Some(run.clone()),
                _ => None,
            })
            .collect();
        let summary = match summary {
            Some(item) if count(&item, attr::SLOT)?.is_none_or(on_path) => Some(item),
            _ => None,
        };
        snapshot.fresh = !had_root && runs.is_empty() && turn.head.done == 0;
        let mut turn = turn;
        turn.first_turn = snapshot.fresh && !had_tombstone;
        let max_runs = snapshot.memory.max_runs;
        snapshot.memory = snapshot.memory.with_runs(runs);
        snapshot.memory.max_runs = max_runs;
        snapshot.window_from = None;
        snapshot.summary = match summary {
            Some(item) => Some(Summary {
                text: text(&item, attr::TEXT)?.unwrap_or("").to_owned(),
                through: text(&item, attr::SUMMARY_THROUGH)?.unwrap_or("").to_owned(),
            }),
            None => None,
        };
        // A live session's layout (a migrated one's pages, spilled runs); a fresh one's empty.
        if !had_root || snapshot.layout.generation != turn.head.generation {
            snapshot.layout = Layout::empty(turn.head.generation.clone());
        }
        snapshot.log = Some(turn);
        Ok(snapshot)
    }

    /// The run a receipt names, from its slot.
    pub(super) async fn slot_run(
        &self,
        session: &SessionKey,
        turn: &LogTurn,
        slot: u64,
    ) -> Result<Option<Run>, StoreError> {
        let key = run_key(session, &turn.head.generation, slot);
        let Some(item) = self.get(key).await? else {
            return Ok(None);
        };
        let mut layout = Layout::empty(turn.head.generation.clone());
        if let Some(spill) = slot_spill(&item)? {
            let id = text(&item, attr::RUN_ID)?.unwrap_or_default().to_owned();
            layout.spilled.insert(id, spill);
        }
        let SlotState::Run { mut run, .. } = decode_slot(Some(item))? else {
            return Ok(None);
        };
        // A replay answers with the whole reply, its parts joined.
        Ok(self
            .unspill(session, &layout, &mut run)
            .await?
            .map(|()| run))
    }
}
