//! Deletes: the session item becomes a tombstone in one conditional write, then its side items
//! go while the deadline allows, then the tombstone.

use std::time::Duration;

use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};

use super::{built, is_condition_failure, sdk_error, version_condition, within, DynamoStore};
use crate::deadline::{Deadline, CLEANUP_MARGIN};
use crate::input::SessionKey;
use crate::store::item::{doomed, n, tombstone_item, Doomed, Now};
use crate::store::layout::Layout;
use crate::store::{attr, Deleted, StoreError, Version};

/// A delete starts over when a turn is saved meanwhile, at most this often.
const DELETE_ATTEMPTS: u32 = 8;

impl DynamoStore {
    /// Until the tombstone is written an error leaves the session whole; after it, the
    /// session is gone and what is left of the cleanup is for a repeated delete.
    pub(super) async fn delete_session(
        &self,
        session: &SessionKey,
        deadline: Deadline,
    ) -> Result<Deleted, StoreError> {
        let stop = deadline.less(CLEANUP_MARGIN);
        for _ in 0..DELETE_ATTEMPTS {
            let read = within(stop, self.get(session.as_str().to_owned())).await;
            let Some(item) = read.ok_or(StoreError::OutOfTime)?? else {
                return Ok(Deleted::NotFound);
            };
            let doomed = doomed(&item, &self.schema)?;
            let tomb_version = match (doomed.tombstone, doomed.version) {
                (true, Version::At(v)) => v,
                (true, _) => 0,
                (false, _) => match self.write_tombstone(session, &doomed, stop).await? {
                    Some(version) => version,
                    None => {
                        // A turn saved meanwhile: let the writers' burst pass, then again.
                        let jitter = rand::random_range(5..=40);
                        tokio::time::sleep(Duration::from_millis(jitter)).await;
                        continue;
                    }
                },
            };
            let mut owed = doomed.owed.clone();
            // A log's head is closed once its session item is a tombstone: no turn takes a slot
            // after that, and the slots up to its counter are removed with the rest.
            if let Some(head) = self.read_head(session).await? {
                let closed = match head.closed {
                    true => Some(head),
                    false => self.close_head(session, &head.generation).await?,
                };
                if let Some(head) = closed {
                    let mut log = Layout::empty(head.generation.clone());
                    log.log = Some((head.base, head.next));
                    log.spilled = head.spilled.clone();
                    owed.push(log);
                }
            }
            return Ok(self
                .finish_delete(session, &owed, tomb_version, deadline)
                .await);
        }
        Err(StoreError::Conflict)
    }

    /// Replaces the session item by its tombstone if it is still the version read; the
    /// tombstone's version, or `None` when a turn saved first.
    pub(super) async fn write_tombstone(
        &self,
        session: &SessionKey,
        doomed: &Doomed,
        stop: Deadline,
    ) -> Result<Option<u64>, StoreError> {
        let tomb = tombstone_item(&self.schema, session, doomed, Now::current());
        let condition = version_condition(doomed.version, &self.schema);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(tomb))
            .condition_expression(condition.expression)
            .set_expression_attribute_names(Some(condition.names))
            .set_expression_attribute_values(condition.values)
            .send();
        match within(stop, put).await.ok_or(StoreError::OutOfTime)? {
            Ok(_) => Ok(Some(doomed.version.next())),
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(sdk_error(e)),
        }
    }

    /// Removes what the tombstone lists, then the tombstone itself (if it is still the one
    /// written). The session is gone either way; `complete` says whether a repeated delete
    /// has work left.
    pub(super) async fn finish_delete(
        &self,
        session: &SessionKey,
        owed: &[Layout],
        tomb_version: u64,
        deadline: Deadline,
    ) -> Deleted {
        let unfinished = Deleted::Gone { complete: false };
        let mut keys: Vec<String> = owed.iter().flat_map(|l| l.side_keys(session)).collect();
        keys.sort();
        keys.dedup();
        if owed.iter().any(|l| l.log.is_some()) {
            // Last: it is the record of the slots to remove until they are gone.
            keys.push(crate::store::keys::head_key(session));
        }
        match self.delete_keys(keys, deadline).await {
            Ok(true) => {}
            Ok(false) => return unfinished,
            Err(e) => {
                tracing::warn!(session_id = %session, error = %crate::error::chain(&e), "the session is deleted; its cleanup stopped and goes on at the next delete");
                return unfinished;
            }
        }
        let call = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(session.as_str())))
            .condition_expression("#version = :v AND attribute_exists(#t)")
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_names("#t", attr::TOMBSTONE)
            .expression_attribute_values(":v", n(tomb_version))
            .send();
        match within(deadline.less(CLEANUP_MARGIN), call).await {
            // A turn made a new session over the tombstone meanwhile: it carries the (now
            // done) cleanup list, harmlessly.
            Some(Ok(_)) => Deleted::Gone { complete: true },
            Some(Err(e)) if is_condition_failure(&e) => Deleted::Gone { complete: true },
            // The tombstone stays; a repeated delete removes it.
            Some(Err(_)) | None => unfinished,
        }
    }

    /// Deletes items in batches of 25 until done or the deadline; `true` when all are gone.
    pub(super) async fn delete_keys(
        &self,
        keys: Vec<String>,
        deadline: Deadline,
    ) -> Result<bool, StoreError> {
        let stop = deadline.less(CLEANUP_MARGIN);
        let mut pending: Vec<WriteRequest> = Vec::with_capacity(keys.len());
        for key in keys {
            let key = Some(self.schema.key(key));
            let delete = built(DeleteRequest::builder().set_key(key).build())?;
            pending.push(WriteRequest::builder().delete_request(delete).build());
        }
        let mut backoff = Duration::from_millis(20);
        while !pending.is_empty() {
            if stop.passed() {
                return Ok(false);
            }
            let batch: Vec<WriteRequest> = pending.drain(..pending.len().min(25)).collect();
            let call = self
                .client
                .batch_write_item()
                .request_items(&self.table, batch)
                .send();
            let Some(out) = within(stop, call).await else {
                return Ok(false);
            };
            let unprocessed = out.map_err(sdk_error)?.unprocessed_items;
            let unprocessed = unprocessed.and_then(|mut m| m.remove(&self.table));
            let unprocessed = unprocessed.unwrap_or_default();
            if !unprocessed.is_empty() {
                pending.extend(unprocessed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
        Ok(true)
    }
}
