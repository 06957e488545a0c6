//! The prompt's context a stepping turn saves beside its run: the folded summary and the
//! window's new start, each only forward and only on the path the turn read
//! (docs/context.md).

use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem};

use super::{built, refused_is_done, refused_items, sdk_error, DynamoStore};
use crate::input::SessionKey;
use crate::memory::Run;
use crate::store::item::{n, s, Item, Now};
use crate::store::keys::{head_key, summary_key};
use crate::store::log::step_bound;
use crate::store::{attr, Changes, LogTurn, StoreError, Summary};

impl DynamoStore {
    /// What a turn changes beside its run: the window's start and the summary when it
    /// stepped, and the slot `MAX_RUNS` leaves behind. Each only moves forward.
    pub(super) async fn side_writes(
        &self,
        session: &SessionKey,
        changes: &Changes<'_>,
        turn: &LogTurn,
        run: &Run,
    ) -> Result<(), StoreError> {
        let generation = turn.head.generation.as_str();
        let slot_of = |id: &str| {
            if id == run.id {
                Some(turn.slot)
            } else {
                turn.slot_of(id)
            }
        };
        // A summary and a step are of the runs this turn read: both land only while the head's
        // `moves` is the one it read under, so a run deleted since (a delete moves it first,
        // then drops the summary that folded the run) is never folded in again. Refused, the
        // window stays and a later step folds again.
        let moves = match turn.head.moves {
            0 => "attribute_not_exists(#mv)",
            _ => "#mv = :mv",
        };
        if let Some(summary) = changes.summary {
            if !self
                .put_summary(session, turn, summary, slot_of(&summary.through), moves)
                .await?
            {
                return Ok(());
            }
        }
        if let Some(from) = changes.window_from.and_then(slot_of) {
            let from = step_bound(from, turn.first, &turn.slots);
            let mut update = self
                .update_head(session)
                .update_expression("SET #w = :w")
                .condition_expression(format!("#g = :g AND #w < :w AND {moves}"))
                .expression_attribute_names("#w", attr::WINDOW_FROM)
                .expression_attribute_names("#g", attr::GENERATION)
                .expression_attribute_names("#mv", attr::MOVES)
                .expression_attribute_values(":w", n(from))
                .expression_attribute_values(":g", s(generation));
            if turn.head.moves > 0 {
                update = update.expression_attribute_values(":mv", n(turn.head.moves));
            }
            // Refused: another turn moved the window further already, or the path moved.
            refused_is_done(update.send().await)?;
        }
        Ok(())
    }

    /// The summary, newer than the one stored, in one transaction with a check of the head's
    /// `moves` (`moves`: its condition); `false` when the path moved since the turn's read.
    pub(super) async fn put_summary(
        &self,
        session: &SessionKey,
        turn: &LogTurn,
        summary: &Summary,
        through_slot: Option<u64>,
        moves: &str,
    ) -> Result<bool, StoreError> {
        let generation = turn.head.generation.as_str();
        let through_slot = through_slot.unwrap_or(0);
        let item = self.summary_item(session, generation, summary, through_slot);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR #slot < :slot")
            .expression_attribute_names("#pk", &self.schema.partition_key)
            .expression_attribute_names("#slot", attr::SLOT)
            .expression_attribute_values(":slot", n(through_slot));
        let mut check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(head_key(session))))
            .condition_expression(format!("#g = :g AND {moves}"))
            .expression_attribute_names("#g", attr::GENERATION)
            .expression_attribute_names("#mv", attr::MOVES)
            .expression_attribute_values(":g", s(generation));
        if turn.head.moves > 0 {
            check = check.expression_attribute_values(":mv", n(turn.head.moves));
        }
        let items = vec![
            TransactWriteItem::builder()
                .condition_check(built(check.build())?)
                .build(),
            TransactWriteItem::builder()
                .put(built(put.build())?)
                .build(),
        ];
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let Err(e) = result else {
            return Ok(true);
        };
        let Some(refused) = refused_items(&e) else {
            return Err(sdk_error(e));
        };
        match (refused.first().copied(), refused.get(1).copied()) {
            // The path moved: neither the summary nor the step.
            (Some(true), _) => Ok(false),
            // A newer summary is there already: the step goes on.
            (_, Some(true)) => Ok(true),
            _ => Err(sdk_error(e)),
        }
    }

    pub(super) fn summary_item(
        &self,
        session: &SessionKey,
        generation: &str,
        summary: &Summary,
        through_slot: u64,
    ) -> Item {
        let mut item = self.schema.key(summary_key(session, generation));
        item.insert(attr::KIND.into(), s(attr::KIND_SUMMARY));
        item.insert(attr::TEXT.into(), s(summary.text.as_str()));
        item.insert(attr::SUMMARY_THROUGH.into(), s(summary.through.as_str()));
        item.insert(attr::SLOT.into(), n(through_slot));
        item.insert(attr::CREATED_AT.into(), n(Now::current().secs));
        self.side_expiry(&mut item);
        item
    }
}
