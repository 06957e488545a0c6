//! Versions of a session's runs (docs/storage.md, "Versions"): a reservation in the place of a
//! replaced run (a regeneration, an edit), select, and the versions `GET` shows. The rules are
//! [`crate::store::branch`]'s.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::begin::Reserved;
use super::{is_condition_failure, refused_is_done, sdk_error, DynamoStore};
use crate::input::SessionKey;
use crate::memory::Run;
use crate::store::branch::{encode_fork, MAX_FORKS, MAX_FORK_ENTRIES, MAX_VERSIONS};
use crate::store::item::{count, n, s, text, Item, Now};
use crate::store::keys::{head_key, run_key};
use crate::store::layout::Layout;
use crate::store::log::{Head, SlotState, SLOTS_PER_READ};
use crate::store::log_item::{decode_head, decode_slot, is_open, slot_spill, token_attribute};
use crate::store::{attr, Branch, Feedback, Fork, LogTurn, RunNotes, StoreError};

/// How many times a select or a delete writes again when a turn changed the head meanwhile.
pub(super) const EDIT_ATTEMPTS: usize = 8;

impl DynamoStore {
    /// The open head of a session that can be edited; a session of the item shape (no head
    /// yet) moves into the log first, so every session can be edited.
    pub(super) async fn editable_head(&self, session: &SessionKey) -> Result<Head, StoreError> {
        for _ in 0..EDIT_ATTEMPTS {
            match self.get(head_key(session)).await? {
                Some(item) if is_open(&item, Now::current().secs)? => return decode_head(&item),
                Some(_) | None => {
                    if !self.migrate_item_shaped(session).await? {
                        // No session, a deleted one, or one with no run yet.
                        return Err(StoreError::RunNotFound);
                    }
                }
            }
        }
        Err(StoreError::Conflict)
    }

    /// Where a regeneration's or an edit's slot goes: the replaced run's parent.
    pub(super) async fn plan_fork(
        &self,
        session: &SessionKey,
        head: &Head,
        branch: &Branch,
    ) -> Result<(Option<u64>, Fork), StoreError> {
        let tree = head.tree();
        let (slot, run) = match branch {
            Branch::Regenerate => self.newest_run(session, head).await?,
            Branch::Edit(id) => {
                let (slot, item) = self
                    .find_slot(session, head, id)
                    .await?
                    .ok_or(StoreError::RunNotFound)?;
                if !tree.active(None).contains(&slot) {
                    return Err(StoreError::RunNotOnPath);
                }
                (slot, self.joined_run(session, head, item).await?)
            }
            Branch::Append => return Err(StoreError::RunNotOnPath),
        };
        // A place or a session at a limit counts again, leaving out the versions of turns
        // that stored nothing (holes): a failed regeneration takes no version.
        let versions = tree.versions(slot);
        let forked: Vec<u64> = head.forks.keys().copied().collect();
        let full = head.forks.len() >= MAX_FORK_ENTRIES
            || (versions.len() >= MAX_VERSIONS
                && self.runs_among(session, head, &versions).await? >= MAX_VERSIONS)
            || (forked.len() >= MAX_FORKS
                && self.runs_among(session, head, &forked).await? >= MAX_FORKS);
        if full {
            return Err(StoreError::TooManyVersions);
        }
        let fork = Fork {
            message: matches!(branch, Branch::Regenerate).then(|| run.input.clone()),
            replaces: Some(run.id),
            replaced_slot: Some(slot),
            prev_leaf: tree.leaf(),
        };
        Ok((tree.parent(slot), fork))
    }

    /// How many of these slots hold a run (not a hole, nor one still being written).
    pub(super) async fn runs_among(
        &self,
        session: &SessionKey,
        head: &Head,
        slots: &[u64],
    ) -> Result<usize, StoreError> {
        let mut runs = 0;
        for chunk in slots.chunks(SLOTS_PER_READ) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|i| run_key(session, &head.generation, *i))
                .collect();
            let mut got = self.batch_get(&keys).await?;
            for key in &keys {
                if matches!(decode_slot(got.remove(key))?, SlotState::Run { .. }) {
                    runs += 1;
                }
            }
        }
        Ok(runs)
    }

    /// The active path's newest run (holes passed over); busy while a slot after it is
    /// still being written.
    pub(super) async fn newest_run(
        &self,
        session: &SessionKey,
        head: &Head,
    ) -> Result<(u64, Run), StoreError> {
        let tree = head.tree();
        let floor = head.dropped_to.max(head.base);
        let path: Vec<u64> = match tree.leaf() {
            Some(leaf) => tree.path_from(leaf, floor.checked_sub(1)),
            None => Vec::new(),
        };
        for chunk in path.chunks(16) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|i| run_key(session, &head.generation, *i))
                .collect();
            let mut got = self.batch_get(&keys).await?;
            for (slot, key) in chunk.iter().zip(&keys) {
                let item = got.remove(key);
                match decode_slot(item.clone())? {
                    SlotState::Pending => return Err(StoreError::Conflict),
                    SlotState::Hole { .. } => {}
                    SlotState::Run { .. } => {
                        let item = item.unwrap_or_default();
                        return Ok((*slot, self.joined_run(session, head, item).await?));
                    }
                }
            }
        }
        Err(StoreError::RunNotFound)
    }

    /// A slot's run with its spilled parts joined.
    pub(super) async fn joined_run(
        &self,
        session: &SessionKey,
        head: &Head,
        item: Item,
    ) -> Result<Run, StoreError> {
        let mut layout = Layout::empty(head.generation.clone());
        if let Some(spill) = slot_spill(&item)? {
            let id = text(&item, attr::RUN_ID)?.unwrap_or_default().to_owned();
            layout.spilled.insert(id, spill);
        }
        let SlotState::Run { mut run, .. } = decode_slot(Some(item))? else {
            return Err(StoreError::RunNotFound);
        };
        match self.unspill(session, &layout, &mut run).await? {
            Some(()) => Ok(run),
            None => Err(StoreError::RunNotFound),
        }
    }

    /// The slot holding a run, by its id: the active path's slots first, newest first, then
    /// every other slot of the log (96 a read).
    pub(super) async fn find_slot(
        &self,
        session: &SessionKey,
        head: &Head,
        run_id: &str,
    ) -> Result<Option<(u64, Item)>, StoreError> {
        let tree = head.tree();
        let floor = head.dropped_to.max(head.base);
        let active: Vec<u64> = match tree.leaf() {
            Some(leaf) => tree.path_from(leaf, floor.checked_sub(1)),
            None => Vec::new(),
        };
        let on_path: BTreeSet<u64> = active.iter().copied().collect();
        let rest = (floor..head.next).rev().filter(|i| !on_path.contains(i));
        let order: Vec<u64> = active.iter().copied().chain(rest).collect();
        for chunk in order.chunks(SLOTS_PER_READ) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|i| run_key(session, &head.generation, *i))
                .collect();
            let mut got = self.batch_get(&keys).await?;
            for (slot, key) in chunk.iter().zip(&keys) {
                if let Some(item) = got.remove(key) {
                    let is_run = text(&item, attr::KIND)? == Some(attr::KIND_RUN);
                    if is_run && text(&item, attr::RUN_ID)? == Some(run_id) {
                        return Ok(Some((*slot, item)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Reserves slot `met.next` with its own parent (a regeneration, an edit, the first turn
    /// after a select): conditional on the head as met, so no other turn took that slot.
    pub(super) async fn reserve_after(
        &self,
        session: &SessionKey,
        token: &str,
        met: &Head,
        parent: Option<u64>,
    ) -> Result<Reserved, StoreError> {
        let now = Now::current();
        let slot = met.next;
        let mut update = self
            .update_head(session)
            .expression_attribute_names("#g", attr::GENERATION)
            .expression_attribute_names("#next", attr::NEXT)
            .expression_attribute_names("#tok", token_attribute(token))
            .expression_attribute_names("#r", attr::RESERVED_MS)
            .expression_attribute_names("#c", attr::CLOSED)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_names("#f", attr::FORKS)
            .expression_attribute_names("#mv", attr::MOVES)
            .expression_attribute_names("#tip", attr::TIP)
            .expression_attribute_values(":g", s(met.generation.as_str()))
            .expression_attribute_values(":n", n(slot))
            .expression_attribute_values(":n1", n(slot + 1))
            .expression_attribute_values(":now", n(now.millis))
            .expression_attribute_values(":secs", n(now.secs))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(
                ":fork",
                AttributeValue::Ss(vec![encode_fork(slot, parent)]),
            )
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let tip = match met.tip {
            Some(tip) => {
                update = update.expression_attribute_values(":tip", n(tip));
                "#tip = :tip"
            }
            None => "attribute_not_exists(#tip)",
        };
        update = update.condition_expression(format!(
            "#g = :g AND #next = :n AND attribute_not_exists(#c) AND attribute_not_exists(#tok) \
             AND (attribute_not_exists(#exp) OR #exp > :secs) AND {tip}"
        ));
        let sets = "#next = :n1, #tok = :n, #r = :now";
        let expression = match self.session_ttl_secs {
            Some(ttl) => {
                update = update.expression_attribute_values(":exp", n(now.secs + ttl + ttl / 2));
                format!("SET {sets}, #exp = :exp ADD #f :fork, #mv :one REMOVE #tip")
            }
            None => format!("SET {sets} ADD #f :fork, #mv :one REMOVE #tip, #exp"),
        };
        let item = match update.update_expression(expression).send().await {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(e) if is_condition_failure(&e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                    c.item().cloned().unwrap_or_default()
                }
                _ => Item::default(),
            },
            Err(e) => return Err(sdk_error(e)),
        };
        // Our token there: reserved (a retry of a reservation whose answer was lost, too).
        match count(&item, &token_attribute(token))? {
            Some(slot) => Ok(Reserved::Slot(decode_head(&item)?, slot)),
            None => Ok(Reserved::Refused(Some(item))),
        }
    }

    /// A fork's turn that stores nothing puts the active path back where it was, unless a
    /// turn or a select came after it.
    pub(super) async fn restore_path(
        &self,
        session: &SessionKey,
        turn: &LogTurn,
    ) -> Result<(), StoreError> {
        let Some(prev) = turn.fork.as_ref().and_then(|f| f.prev_leaf) else {
            return Ok(());
        };
        let result = self
            .update_head(session)
            .update_expression("SET #tip = :tip ADD #mv :one")
            .condition_expression("#g = :g AND #next = :n AND #mv = :mv")
            .expression_attribute_names("#tip", attr::TIP)
            .expression_attribute_names("#mv", attr::MOVES)
            .expression_attribute_names("#g", attr::GENERATION)
            .expression_attribute_names("#next", attr::NEXT)
            .expression_attribute_values(":tip", n(prev))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":g", s(turn.head.generation.as_str()))
            .expression_attribute_values(":n", n(turn.slot + 1))
            .expression_attribute_values(":mv", n(turn.head.moves))
            .send()
            .await;
        refused_is_done(result)
    }

    /// Makes the active path go through a run and down its newest branch, then writes the
    /// view of it.
    pub(super) async fn select_run(
        &self,
        session: &SessionKey,
        run_id: &str,
    ) -> Result<(), StoreError> {
        for _ in 0..EDIT_ATTEMPTS {
            let head = self.editable_head(session).await?;
            let (slot, _) = self
                .find_slot(session, &head, run_id)
                .await?
                .ok_or(StoreError::RunNotFound)?;
            let tree = head.tree();
            let leaf = tree.leaf_under(slot);
            if tree.leaf() == Some(leaf) {
                return Ok(());
            }
            let moves = match head.moves {
                0 => "attribute_not_exists(#mv)",
                _ => "#mv = :mv",
            };
            let mut update = self
                .update_head(session)
                .condition_expression(format!(
                    "#g = :g AND #next = :n AND attribute_not_exists(#c) AND {moves}"
                ))
                .expression_attribute_names("#tip", attr::TIP)
                .expression_attribute_names("#mv", attr::MOVES)
                .expression_attribute_names("#g", attr::GENERATION)
                .expression_attribute_names("#next", attr::NEXT)
                .expression_attribute_names("#c", attr::CLOSED)
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":g", s(head.generation.as_str()))
                .expression_attribute_values(":n", n(head.next))
                .return_values(ReturnValue::AllNew);
            if head.moves > 0 {
                update = update.expression_attribute_values(":mv", n(head.moves));
            }
            update = match leaf + 1 == head.next {
                true => update.update_expression("REMOVE #tip ADD #mv :one"),
                false => update
                    .update_expression("SET #tip = :tip ADD #mv :one")
                    .expression_attribute_values(":tip", n(leaf)),
            };
            match update.send().await {
                Ok(out) => {
                    let after = decode_head(&out.attributes.unwrap_or_default())?;
                    return self.refresh_view(session, &after, None).await;
                }
                Err(e) if is_condition_failure(&e) => continue,
                Err(e) => return Err(sdk_error(e)),
            }
        }
        Err(StoreError::Conflict)
    }

    /// Versions and feedback of a history page's runs (`slots`: run id -> slot, `feedback` as
    /// read with them).
    pub(super) async fn notes_of(
        &self,
        session: &SessionKey,
        head: &Head,
        slots: &HashMap<String, u64>,
        mut feedback: HashMap<String, Feedback>,
    ) -> Result<HashMap<String, RunNotes>, StoreError> {
        let tree = head.tree();
        let mut versions: HashMap<&str, Vec<u64>> = HashMap::new();
        let mut wanted = BTreeSet::new();
        if !tree.is_linear() {
            for (id, slot) in slots {
                let others: Vec<u64> = tree
                    .versions(*slot)
                    .into_iter()
                    .filter(|v| v != slot)
                    .collect();
                wanted.extend(others.iter().copied());
                versions.insert(id.as_str(), others);
            }
        }
        let keys: Vec<(u64, String)> = wanted
            .iter()
            .map(|i| (*i, run_key(session, &head.generation, *i)))
            .collect();
        let key_list: Vec<String> = keys.iter().map(|(_, k)| k.clone()).collect();
        let mut got = self.batch_get(&key_list).await?;
        let mut ids: HashMap<u64, String> = HashMap::new();
        for (slot, key) in keys {
            if let Some(item) = got.remove(&key) {
                if text(&item, attr::KIND)? == Some(attr::KIND_RUN) {
                    if let Some(id) = text(&item, attr::RUN_ID)? {
                        ids.insert(slot, id.to_owned());
                    }
                }
            }
        }
        let mut notes = HashMap::new();
        for (id, slot) in slots {
            let others = versions.get(id.as_str());
            let alternatives = others
                .map(|v| v.iter().filter_map(|s| ids.get(s).cloned()).collect())
                .unwrap_or_default();
            // Its place among the versions still stored (deleted ones are holes, not counted).
            let version = 1 + others.map_or(0, |v| {
                v.iter()
                    .filter(|s| *s < slot && ids.contains_key(*s))
                    .count()
            });
            let feedback = feedback.remove(id);
            notes.insert(
                id.clone(),
                RunNotes {
                    alternatives,
                    version,
                    feedback,
                },
            );
        }
        Ok(notes)
    }
}
