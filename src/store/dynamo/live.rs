//! Replies in progress (docs/storage.md, "Replies in progress"): a streamed turn keeps the
//! pieces it has sent in one item while it writes them, so a client that reloads or lost its
//! connection reads them and follows the rest; the item goes when the turn ends, saved or not.

use aws_sdk_dynamodb::types::AttributeValue;

use super::{is_condition_failure, sdk_error, DynamoStore};
use crate::input::SessionKey;
use crate::store::item::{n, s, text, Now};
use crate::store::keys::live_key;
use crate::store::{attr, Live, LiveStatus, LiveWrite, StoreError};

/// A live item expires an hour after its turn began: longer than any invocation, so only a
/// turn whose process died leaves one behind, and not for long.
const LIVE_TTL_SECS: u64 = 3600;

impl DynamoStore {
    pub(super) async fn put_live(
        &self,
        session: &SessionKey,
        run_id: &str,
        record: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = Now::current().secs;
        let mut item = self.schema.key(live_key(session, run_id));
        item.insert(attr::KIND.into(), s(attr::KIND_LIVE));
        item.insert(attr::RUN_ID.into(), s(run_id));
        item.insert(attr::STATUS.into(), s(LiveStatus::InProgress.as_str()));
        item.insert(attr::PIECES.into(), AttributeValue::L(Vec::new()));
        item.insert(attr::CREATED_AT.into(), n(now));
        item.insert(attr::EXPIRES_AT.into(), n(now + LIVE_TTL_SECS));
        if let Some(record) = record {
            item.insert(attr::RESPONSE.into(), s(record));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map(drop)
            .map_err(sdk_error)
    }

    pub(super) async fn append_live(
        &self,
        session: &SessionKey,
        run_id: &str,
        pieces: &[String],
        capped: bool,
    ) -> Result<LiveWrite, StoreError> {
        let list = AttributeValue::L(pieces.iter().map(|p| s(p.as_str())).collect());
        let mut expression = "SET #p = list_append(#p, :p)".to_owned();
        if capped {
            expression.push_str(", #c = :one");
        }
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(live_key(session, run_id))))
            .update_expression(expression)
            .condition_expression("#st = :going")
            .expression_attribute_names("#p", attr::PIECES)
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_values(":p", list)
            .expression_attribute_values(":going", s(LiveStatus::InProgress.as_str()));
        if capped {
            update = update
                .expression_attribute_names("#c", attr::CAPPED)
                .expression_attribute_values(":one", n(1));
        }
        match update.send().await {
            Ok(_) => Ok(LiveWrite::Kept),
            // Cancelled (or gone: a delete of the session), either way the turn stops.
            Err(e) if is_condition_failure(&e) => Ok(LiveWrite::Cancelled),
            Err(e) => Err(sdk_error(e)),
        }
    }

    pub(super) async fn end_live(
        &self,
        session: &SessionKey,
        run_id: &str,
    ) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(live_key(session, run_id))))
            .send()
            .await
            .map(drop)
            .map_err(sdk_error)
    }

    pub(super) async fn read_live(
        &self,
        session: &SessionKey,
        run_id: &str,
    ) -> Result<Option<Live>, StoreError> {
        let Some(item) = self.get(live_key(session, run_id)).await? else {
            return Ok(None);
        };
        let expired = crate::store::item::count(&item, attr::EXPIRES_AT)?
            .is_some_and(|t| t <= Now::current().secs);
        if expired {
            return Ok(None);
        }
        let status = text(&item, attr::STATUS)?
            .and_then(LiveStatus::parse)
            .ok_or_else(|| StoreError::corrupt("a live item has no status"))?;
        let pieces = match item.get(attr::PIECES) {
            Some(AttributeValue::L(list)) => list
                .iter()
                .map(|v| {
                    v.as_s()
                        .cloned()
                        .map_err(|_| StoreError::corrupt("a live piece"))
                })
                .collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        Ok(Some(Live {
            status,
            pieces,
            capped: item.contains_key(attr::CAPPED),
            record: text(&item, attr::RESPONSE)?.map(str::to_owned),
        }))
    }

    pub(super) async fn cancel_live(
        &self,
        session: &SessionKey,
        run_id: &str,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(live_key(session, run_id))))
            .update_expression("SET #st = :cancelled")
            .condition_expression("#st = :going")
            .expression_attribute_names("#st", attr::STATUS)
            .expression_attribute_values(":cancelled", s(LiveStatus::Cancelled.as_str()))
            .expression_attribute_values(":going", s(LiveStatus::InProgress.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(sdk_error(e)),
        }
    }
}
