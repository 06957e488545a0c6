//! One run looked up by id, with its slot's record and its place on the path
//! (docs/storage.md, "Reads"): what the Responses API reads to retrieve a response and to
//! chain a new one after it.

use super::DynamoStore;
use crate::input::SessionKey;
use crate::store::item::{count, text};
use crate::store::keys::run_key;
use crate::store::layout::Layout;
use crate::store::log::SlotState;
use crate::store::log_item::{decode_slot, slot_spill};
use crate::store::{attr, FoundRun, Place, StoreError};

/// Slots read in each round, newest first: a recent run (the common lookup) costs two reads.
const ROUNDS: [usize; 4] = [2, 8, 32, 96];

impl DynamoStore {
    pub(super) async fn lookup_run(
        &self,
        session: &SessionKey,
        run_id: &str,
    ) -> Result<Option<FoundRun>, StoreError> {
        let Some(head) = self.read_head(session).await?.filter(|h| !h.closed) else {
            return self.lookup_item_shaped(session, run_id).await;
        };
        let tree = head.tree();
        let floor = head.dropped_to.max(head.base);
        let active: Vec<u64> = match tree.leaf() {
            Some(leaf) => tree.path_from(leaf, floor.checked_sub(1)),
            None => Vec::new(),
        };
        let on_path = active.len();
        let rest = (floor..head.next).rev().filter(|i| !active.contains(i));
        let order: Vec<u64> = active.iter().copied().chain(rest).collect();
        // The nearest newer run on the path than the slot at hand.
        let mut after: Option<String> = None;
        let mut at = 0;
        let mut round = 0;
        while at < order.len() {
            let size = ROUNDS[round.min(ROUNDS.len() - 1)];
            round += 1;
            let chunk = &order[at..(at + size).min(order.len())];
            let keys: Vec<String> = chunk
                .iter()
                .map(|i| run_key(session, &head.generation, *i))
                .collect();
            let mut got = self.batch_get(&keys).await?;
            for (i, key) in keys.iter().enumerate() {
                let index = at + i;
                let Some(item) = got.remove(key) else {
                    continue;
                };
                if text(&item, attr::KIND)? != Some(attr::KIND_RUN) {
                    continue;
                }
                let id = text(&item, attr::RUN_ID)?.unwrap_or_default().to_owned();
                if id != run_id {
                    if index < on_path {
                        after = Some(id);
                    }
                    continue;
                }
                let place = match (index < on_path, after.take()) {
                    (false, _) => Place::OffPath,
                    (true, None) => Place::Last,
                    (true, Some(next)) => Place::Before(next),
                };
                let created_at = count(&item, attr::CREATED_AT)?;
                let record = text(&item, attr::RESPONSE)?.map(str::to_owned);
                let spill = slot_spill(&item)?;
                let SlotState::Run { mut run, .. } = decode_slot(Some(item))? else {
                    return Ok(None);
                };
                if let Some(spill) = spill {
                    let mut layout = Layout::empty(head.generation.clone());
                    layout.spilled.insert(run.id.clone(), spill);
                    if self.unspill(session, &layout, &mut run).await?.is_none() {
                        return Ok(None);
                    }
                }
                return Ok(Some(FoundRun {
                    run,
                    created_at,
                    record,
                    place,
                }));
            }
            at += chunk.len();
        }
        Ok(None)
    }

    /// A session still in the item shape (griptape's): its runs are in the item and its pages.
    async fn lookup_item_shaped(
        &self,
        session: &SessionKey,
        run_id: &str,
    ) -> Result<Option<FoundRun>, StoreError> {
        let Some(read) = self.snapshot(session).await? else {
            return Ok(None);
        };
        if read.fresh {
            return Ok(None);
        }
        let runs = &read.memory.runs;
        let place = match runs.iter().position(|r| r.id == run_id) {
            Some(i) => match runs.get(i + 1) {
                Some(next) => Place::Before(next.id.clone()),
                None => Place::Last,
            },
            // In a page: the edit that chains after it moves the session into the log first.
            None => Place::OffPath,
        };
        let found = self.find_run(session, &read, run_id).await?;
        Ok(found.map(|run| FoundRun {
            run,
            created_at: None,
            record: None,
            place,
        }))
    }
}
