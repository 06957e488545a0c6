//! Saves: the session item alone in one conditional PutItem (the common case), or with its new
//! pages and parts, pruned side items and receipt in one transaction.

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};

use super::{built, is_condition_failure, sdk_error, version_condition, Condition, DynamoStore};
use crate::input::SessionKey;
use crate::store::item::{n, receipt_item, session_item, side_item, Item, Now};
use crate::store::layout::Layout;
use crate::store::policy::{plan_expiry, plan_save, Plan};
use crate::store::{attr, Changes, Receipt, Snapshot, StoreError, Version};

/// What one save writes, built before any of it is sent.
struct Write<'a> {
    session: &'a SessionKey,
    plan: Plan,
    item: Item,
    condition: Condition,
    receipt: Option<&'a Receipt>,
    version: Version,
    now: Now,
}

impl DynamoStore {
    pub(super) async fn save_changes(
        &self,
        session: &SessionKey,
        changes: Changes<'_>,
        read: &Snapshot,
    ) -> Result<(), StoreError> {
        let read_ids: Vec<&str> = read.memory.runs.iter().map(|r| r.id.as_str()).collect();
        let mut plan = plan_save(&read.layout, &read_ids, changes.memory, self.max_item_bytes)?;
        let now = Now::current();
        let refresh = plan_expiry(&mut plan, &read.layout, self.session_ttl_secs, now.secs);
        if let Some(expires_at) = refresh {
            self.set_expiry(&read.layout.side_keys(session), expires_at)
                .await?;
        }
        let item = session_item(&self.schema, session, read, changes, &mut plan, now)?;
        let write = Write {
            session,
            condition: version_condition(read.version, &self.schema),
            plan,
            item,
            receipt: changes.receipt,
            version: read.version,
            now,
        };
        let alone = write.plan.new_items.is_empty() && write.plan.removed.is_empty();
        if alone && write.receipt.is_none() {
            return self.put_session(write).await;
        }
        self.transact(write).await
    }

    /// The common case: one conditional write.
    async fn put_session(&self, write: Write<'_>) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(write.item))
            .condition_expression(write.condition.expression)
            .set_expression_attribute_names(Some(write.condition.names))
            .set_expression_attribute_values(write.condition.values)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Err(StoreError::Conflict),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn transact(&self, write: Write<'_>) -> Result<(), StoreError> {
        let (session, layout) = (write.session, &write.plan.layout);
        let token = request_token(layout, write.version);
        let (archived, pages) = (write.plan.archived_runs, layout.pages.len());
        let receipt_at = write
            .receipt
            .is_some()
            .then(|| 1 + side_writes(&write.plan));
        let items = self.transaction(write)?;
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .set_client_request_token(token)
            .send()
            .await;
        let Err(e) = result else {
            if archived > 0 {
                tracing::info!(session_id = %session, runs = archived, pages, "moved old runs to pages");
            }
            return Ok(());
        };
        let reasons: Vec<Option<String>> = match e.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Err(cancelled(&reasons, receipt_at).unwrap_or_else(|| sdk_error(e)))
    }

    /// The transaction's items: the session item first, then new side items, removals and the
    /// receipt last.
    fn transaction(&self, write: Write<'_>) -> Result<Vec<TransactWriteItem>, StoreError> {
        let Write {
            session,
            plan,
            item,
            condition,
            receipt,
            now,
            ..
        } = write;
        let layout = &plan.layout;
        let put = |item: Item| Put::builder().table_name(&self.table).set_item(Some(item));
        let session_put = put(item)
            .condition_expression(condition.expression)
            .set_expression_attribute_names(Some(condition.names))
            .set_expression_attribute_values(condition.values);
        let mut items = vec![TransactWriteItem::builder()
            .put(built(session_put.build())?)
            .build()];
        for new in &plan.new_items {
            let side = put(side_item(&self.schema, session, &plan, new, now));
            items.push(
                TransactWriteItem::builder()
                    .put(built(side.build())?)
                    .build(),
            );
        }
        for removed in &plan.removed {
            let key = self.schema.key(removed.key(layout, session));
            let delete = Delete::builder().table_name(&self.table).set_key(Some(key));
            let delete = built(delete.build())?;
            items.push(TransactWriteItem::builder().delete(delete).build());
        }
        if let Some(r) = receipt {
            let item = receipt_item(&self.schema, session, layout, r, now);
            items.push(self.receipt_put(item, now)?);
        }
        Ok(items)
    }

    /// A receipt's put in a save's transaction: it lands only where no live receipt is, so
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

    /// Sets (or, with `None`, removes) the expiry of side items, so pages never expire
    /// before their session and outlive it only until their own TTL.
    async fn set_expiry(&self, keys: &[String], expires_at: Option<u64>) -> Result<(), StoreError> {
        for key in keys {
            let update = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(self.schema.key(key.as_str())))
                .condition_expression("attribute_exists(#pk)")
                .expression_attribute_names("#pk", &self.schema.partition_key)
                .expression_attribute_names("#e", attr::EXPIRES_AT);
            let update = match expires_at {
                Some(t) => update
                    .update_expression("SET #e = :e")
                    .expression_attribute_values(":e", n(t)),
                None => update.update_expression("REMOVE #e"),
            };
            match update.send().await {
                Ok(_) => {}
                Err(e) if is_condition_failure(&e) => {}
                Err(e) => return Err(sdk_error(e)),
            }
        }
        Ok(())
    }
}

/// New side items and removals: the writes between the session item and the receipt.
fn side_writes(plan: &Plan) -> usize {
    plan.new_items.len() + plan.removed.len()
}

/// DynamoDB answers a retried transaction with the same token as the first (for ten minutes),
/// so a retry after a lost answer is not a conflict there.
fn request_token(layout: &Layout, version: Version) -> Option<String> {
    let version = match version {
        Version::At(v) => v,
        _ => 0,
    };
    let run = layout.last_runs.last()?;
    Some(format!("{}{:x}", &run[..run.len().min(20)], version))
}

/// What a cancelled transaction means, from its cancellation reasons (one per item, in order;
/// the receipt's at `receipt_at`); `None`: not a race, an error to report as it is.
fn cancelled(reasons: &[Option<String>], receipt_at: Option<usize>) -> Option<StoreError> {
    let failed = |i: usize| {
        reasons
            .get(i)
            .and_then(|c| c.as_deref())
            .is_some_and(|c| c == "ConditionalCheckFailed")
    };
    if receipt_at.is_some_and(failed) && !failed(0) {
        return Some(StoreError::ReceiptExists);
    }
    let conflict = reasons.iter().flatten().any(|c| c == "TransactionConflict");
    (failed(0) || conflict).then_some(StoreError::Conflict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(codes: &[&str]) -> Vec<Option<String>> {
        let code = |c: &&str| (!c.is_empty()).then(|| c.to_string());
        codes.iter().map(code).collect()
    }

    #[test]
    fn cancellation_reasons_tell_a_reused_key_from_a_conflict() {
        let receipt = reasons(&["", "", "ConditionalCheckFailed"]);
        assert!(matches!(
            cancelled(&receipt, Some(2)),
            Some(StoreError::ReceiptExists)
        ));
        let both = reasons(&["ConditionalCheckFailed", "", "ConditionalCheckFailed"]);
        assert!(matches!(
            cancelled(&both, Some(2)),
            Some(StoreError::Conflict)
        ));
        let race = reasons(&["", "TransactionConflict"]);
        assert!(matches!(cancelled(&race, None), Some(StoreError::Conflict)));
        assert!(cancelled(&reasons(&["", "ValidationError"]), None).is_none());
    }
}
