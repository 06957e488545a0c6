//! What is kept follows the settings: `MAX_RUNS` deletes the slots (and parts) it leaves
//! behind, and side items never expire before their session (docs/storage.md, "The log", TTL).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::ReturnValue;

use super::{refused_is_done, sdk_error, DynamoStore};
use crate::input::SessionKey;
use crate::store::item::{n, s, text, Now};
use crate::store::keys::run_key;
use crate::store::layout::Layout;
use crate::store::log::{dropped_by, expiry_due, Head, MAX_PRUNED};
use crate::store::log_item::slot_spill;
use crate::store::{attr, Changes, LogTurn, Snapshot, StoreError};

impl DynamoStore {
    /// MAX_RUNS bounds every stored copy of a run: the slots (and parts) it leaves behind are
    /// deleted, the one this turn drops and, after MAX_RUNS was set or lowered, up to
    /// `MAX_PRUNED` more a turn. The slot before which all are gone, for the head.
    pub(super) async fn drop_beyond(
        &self,
        session: &SessionKey,
        changes: &Changes<'_>,
        turn: &LogTurn,
    ) -> Result<Option<u64>, StoreError> {
        let Some(keep_from) = dropped_by(turn.slot + 1, changes.memory.max_runs) else {
            return Ok(None);
        };
        let generation = turn.head.generation.as_str();
        let from = turn.head.dropped_to.max(turn.head.base);
        let to = keep_from.min(from + MAX_PRUNED as u64);
        for dropped in from..to {
            self.drop_slot(session, generation, dropped).await?;
        }
        Ok(Some(to.max(from)))
    }

    /// Deletes a slot and its run's parts.
    pub(super) async fn drop_slot(
        &self,
        session: &SessionKey,
        generation: &str,
        dropped: u64,
    ) -> Result<(), StoreError> {
        let old = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(run_key(session, generation, dropped))))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(sdk_error)?
            .attributes;
        // A dropped run's parts go with it: MAX_RUNS bounds every copy of its text.
        if let Some(old) = old {
            if let Some(spill) = slot_spill(&old)? {
                let mut layout = Layout::empty(generation.to_owned());
                let id = text(&old, attr::RUN_ID)?.unwrap_or_default().to_owned();
                layout.spilled.insert(id, spill);
                for key in layout.side_keys(session) {
                    self.client
                        .delete_item()
                        .table_name(&self.table)
                        .set_key(Some(self.schema.key(key)))
                        .send()
                        .await
                        .map_err(sdk_error)?;
                }
            }
        }
        Ok(())
    }

    /// Keeps the generation's side items (slots, summary, parts, a migrated session's pages)
    /// from expiring before their session, or removes their expiry once TTL is off.
    pub(super) async fn keep_side_items(
        &self,
        session: &SessionKey,
        read: &Snapshot,
        after: &Head,
    ) -> Result<(), StoreError> {
        let now = Now::current();
        let Some(expiry) = expiry_due(after.slots_expire_at, self.session_ttl_secs, now.secs)
        else {
            return Ok(());
        };
        let mut layout = read.layout.clone();
        layout.log = Some((after.base, after.next));
        layout.spilled.extend(after.spilled.clone());
        let expression = match expiry {
            Some(_) => "SET #exp = :exp",
            None => "REMOVE #exp",
        };
        for key in layout.side_keys(session) {
            let update = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(self.schema.key(key)))
                .update_expression(expression)
                .condition_expression("attribute_exists(#pk)")
                .expression_attribute_names("#pk", &self.schema.partition_key)
                .expression_attribute_names("#exp", attr::EXPIRES_AT)
                .set_expression_attribute_values(
                    expiry.map(|e| HashMap::from([(":exp".to_owned(), n(e))])),
                );
            // Refused: a slot not written yet (it gets its own), or removed.
            refused_is_done(update.send().await)?;
        }
        let update = self
            .update_head(session)
            .condition_expression("#g = :g")
            .expression_attribute_names("#g", attr::GENERATION)
            .expression_attribute_names("#se", attr::SLOTS_EXPIRE_AT)
            .expression_attribute_values(":g", s(after.generation.as_str()));
        let update = match expiry {
            Some(e) => update
                .update_expression("SET #se = :se")
                .expression_attribute_values(":se", n(e)),
            None => update.update_expression("REMOVE #se"),
        };
        refused_is_done(update.send().await)
    }
}
