//! A turn's run into its slot, written once (with its receipt in one transaction, and a spilled
//! run's parts first); then it is counted done, and the turn that settles the burst writes the
//! view (docs/storage.md, "A turn").

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem};

use super::{built, is_condition_failure, refused_items, sdk_error, DynamoStore};
use crate::input::SessionKey;
use crate::memory::{Memory, Run};
use crate::store::item::{n, receipt_item, s, text, Item, Now};
use crate::store::keys::run_key;
use crate::store::log::{encode_spilled, SlotState};
use crate::store::spill::{spill_slot, Part, Spill};
use crate::store::{attr, Changes, LogTurn, Snapshot, StoreError};

/// Largest run a slot holds (the item stays under DynamoDB's 400 KB).
const MAX_SLOT_BYTES: usize = 350_000;

impl DynamoStore {
    /// Saves a turn: its run into its slot, once; then it counts itself
    /// done, and writes the view when no slot is left pending.
    pub(super) async fn save_run(
        &self,
        session: &SessionKey,
        changes: Changes<'_>,
        read: &Snapshot,
        turn: &LogTurn,
    ) -> Result<(), StoreError> {
        let run = changes
            .memory
            .runs
            .last()
            .ok_or_else(|| StoreError::corrupt("a save without a run"))?;
        let generation = turn.head.generation.as_str();
        self.put_run(session, &changes, read, turn, run).await?;
        let dropped_to = self.drop_beyond(session, &changes, turn).await?;
        let Some(after) = self
            // A turn that read the view marks the head `viewed` (a session item missing later
            // was removed by TTL), at no extra call.
            .count_done_dropping(
                session,
                generation,
                (1, 0),
                Some(&turn.token),
                (dropped_to, turn.seen.is_some() && !turn.head.viewed),
            )
            .await?
        else {
            // A delete closed the log meanwhile: this run goes with it, and the turn begins
            // again in the session's next generation.
            self.delete_naming(run_key(session, generation, turn.slot), &run.id)
                .await?;
            return Err(StoreError::Conflict);
        };
        self.side_writes(session, &changes, turn, run).await?;
        self.keep_side_items(session, read, &after).await?;
        let quiet = after.next == turn.slot + 1 && !turn.slots.contains(&SlotState::Pending);
        if !(after.settled() || quiet) {
            return Ok(());
        }
        if !after.settled() {
            // Counted short (an answer lost after a run landed): nothing is pending, set it right.
            self.set_done(session, &after).await?;
        }
        self.write_view(session, &changes, turn, Some(run), &after)
            .await
    }

    /// The run into its slot (with its receipt, in one transaction). A slot already holding
    /// this run is a save whose answer was lost; one holding a hole makes the turn start over.
    pub(super) async fn put_run(
        &self,
        session: &SessionKey,
        changes: &Changes<'_>,
        read: &Snapshot,
        turn: &LogTurn,
        run: &Run,
    ) -> Result<(), StoreError> {
        let generation = turn.head.generation.as_str();
        let slot = (generation, turn.slot, turn.head.reserved_ms);
        let spill_over = self.max_item_bytes / 2;
        let mut item = match spill_slot(run, turn.slot, changes.memory.format, spill_over)? {
            None => self.run_item(session, slot, changes.memory, run, MAX_SLOT_BYTES)?,
            Some((short, spill, parts)) => {
                // The texts first, then the head names them (so a delete finds them), then
                // the slot with the shortened run.
                self.put_parts(session, generation, &parts).await?;
                self.note_spill(session, generation, &run.id, &spill)
                    .await?;
                let mut item =
                    self.run_item(session, slot, changes.memory, &short, MAX_SLOT_BYTES)?;
                item.insert(attr::SPILLED.into(), s(spill.encode()));
                item
            }
        };
        if let Some(record) = changes.record {
            item.insert(attr::RESPONSE.into(), s(record));
        }
        // A regeneration answers the replaced run's message: it lands only while that run is
        // there, so a delete of it meanwhile does not see its message stored again.
        let regenerated = turn
            .fork
            .as_ref()
            .filter(|f| f.message.is_some())
            .and_then(|f| Some((f.replaced_slot?, f.replaces.as_deref()?)));
        if changes.receipt.is_none() && regenerated.is_none() {
            // The common case: one conditional PutItem (a transaction would bill it twice).
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", &self.schema.partition_key)
                .send()
                .await;
            return match put {
                Ok(_) => Ok(()),
                Err(e) if is_condition_failure(&e) => self.slot_holds(session, turn, run).await,
                Err(e) => Err(sdk_error(e)),
            };
        }
        self.put_run_transacted(session, changes, read, turn, run, (item, regenerated))
            .await
    }

    /// [`Self::put_run`] with its receipt, or a regeneration's check of the run it replaces,
    /// in one transaction.
    pub(super) async fn put_run_transacted(
        &self,
        session: &SessionKey,
        changes: &Changes<'_>,
        read: &Snapshot,
        turn: &LogTurn,
        run: &Run,
        (item, regenerated): (Item, Option<(u64, &str)>),
    ) -> Result<(), StoreError> {
        let generation = turn.head.generation.as_str();
        let now = Now::current();
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", &self.schema.partition_key);
        let mut items = vec![TransactWriteItem::builder()
            .put(built(put.build())?)
            .build()];
        if let Some(receipt) = changes.receipt {
            let mut receipt = receipt_item(&self.schema, session, &read.layout, receipt, now);
            receipt.insert(attr::SLOT.into(), n(turn.slot));
            items.push(self.receipt_put(receipt, now)?);
        }
        if let Some((slot, run_id)) = regenerated {
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(self.schema.key(run_key(session, generation, slot))))
                .condition_expression("#rid = :rid")
                .expression_attribute_names("#rid", attr::RUN_ID)
                .expression_attribute_values(":rid", s(run_id));
            items.push(
                TransactWriteItem::builder()
                    .condition_check(built(check.build())?)
                    .build(),
            );
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let Err(e) = result else {
            return Ok(());
        };
        let Some(reasons) = refused_items(&e) else {
            return Err(sdk_error(e));
        };
        let refused = |i: usize| reasons.get(i).copied().unwrap_or(false);
        let slot_taken = refused(0);
        if changes.receipt.is_some() && refused(1) && !slot_taken {
            return Err(StoreError::ReceiptExists);
        }
        if regenerated.is_some()
            && refused(1 + usize::from(changes.receipt.is_some()))
            && !slot_taken
        {
            // The replaced run was deleted meanwhile: its message is not stored again.
            return Err(StoreError::RunNotFound);
        }
        if !slot_taken {
            return Err(sdk_error(e));
        }
        self.slot_holds(session, turn, run).await
    }

    /// The item of slot `(generation, slot, reserved_ms)` holding `run` alone, in `memory`'s
    /// shape; refused over `limit` bytes.
    pub(super) fn run_item(
        &self,
        session: &SessionKey,
        (generation, slot, reserved_ms): (&str, u64, u64),
        memory: &Memory,
        run: &Run,
        limit: usize,
    ) -> Result<Item, StoreError> {
        let json = memory.with_runs(vec![run.clone()]).encode();
        if json.len() > limit {
            return Err(StoreError::TooLarge(json.len()));
        }
        let mut item = self.schema.key(run_key(session, generation, slot));
        item.insert(attr::KIND.into(), s(attr::KIND_RUN));
        item.insert(attr::MEMORY.into(), s(json));
        item.insert(attr::RUN_ID.into(), s(run.id.as_str()));
        item.insert(attr::RESERVED_MS.into(), n(reserved_ms));
        item.insert(attr::CREATED_AT.into(), n(Now::current().secs));
        self.side_expiry(&mut item);
        Ok(item)
    }

    /// A new side item of a log expires half a TTL after its session would.
    pub(super) fn side_expiry(&self, item: &mut Item) {
        if let Some(ttl) = self.session_ttl_secs {
            item.insert(
                attr::EXPIRES_AT.into(),
                n(Now::current().secs + ttl + ttl / 2),
            );
        }
    }

    /// A spilled run's parts, each put once (a retry writes the same text again).
    pub(super) async fn put_parts(
        &self,
        session: &SessionKey,
        generation: &str,
        parts: &[Part],
    ) -> Result<(), StoreError> {
        let now = Now::current();
        for part in parts {
            let mut item = self.schema.key(part.key(session, generation));
            item.insert(attr::KIND.into(), s(attr::KIND_PART));
            item.insert(attr::RUN.into(), s(part.run_id.as_str()));
            item.insert(attr::FIELD.into(), s(part.field.name()));
            item.insert(attr::TEXT.into(), s(part.text.as_str()));
            item.insert(attr::CREATED_AT.into(), n(now.secs));
            self.side_expiry(&mut item);
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(sdk_error)?;
        }
        Ok(())
    }

    /// Names a spilled run on the head, for the delete that removes its parts.
    pub(super) async fn note_spill(
        &self,
        session: &SessionKey,
        generation: &str,
        run_id: &str,
        spill: &Spill,
    ) -> Result<(), StoreError> {
        let result = self
            .update_head(session)
            .update_expression("ADD #sp :sp")
            .condition_expression("#g = :g AND attribute_not_exists(#c)")
            .expression_attribute_names("#sp", attr::SPILLED)
            .expression_attribute_names("#g", attr::GENERATION)
            .expression_attribute_names("#c", attr::CLOSED)
            .expression_attribute_values(
                ":sp",
                AttributeValue::Ss(vec![encode_spilled(run_id, spill)]),
            )
            .expression_attribute_values(":g", s(generation))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Closed by a delete meanwhile: the turn begins again in the next generation.
            Err(e) if is_condition_failure(&e) => Err(StoreError::Conflict),
            Err(e) => Err(sdk_error(e)),
        }
    }

    /// After a refused run write: the slot holds this run (a write whose answer was lost, the
    /// SDK retried it), or a hole (the turn starts over in a new slot).
    pub(super) async fn slot_holds(
        &self,
        session: &SessionKey,
        turn: &LogTurn,
        run: &Run,
    ) -> Result<(), StoreError> {
        let generation = turn.head.generation.as_str();
        let held = self.get(run_key(session, generation, turn.slot)).await?;
        match held
            .as_ref()
            .and_then(|i| text(i, attr::RUN_ID).ok().flatten())
        {
            Some(id) if id == run.id => Ok(()),
            _ => Err(StoreError::Conflict),
        }
    }

    /// A receipt's put in a turn's transaction: it lands only where no live receipt is, so
    /// two racing requests with one key store one run.
    pub(super) fn receipt_put(
        &self,
        item: Item,
        now: Now,
    ) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            // An expired receipt (TTL deletes lazily) is as good as none.
            .condition_expression("attribute_not_exists(#pk) OR #e < :now")
            .expression_attribute_names("#pk", &self.schema.partition_key)
            .expression_attribute_names("#e", attr::EXPIRES_AT)
            .expression_attribute_values(":now", n(now.secs));
        Ok(TransactWriteItem::builder()
            .put(built(put.build())?)
            .build())
    }
}
