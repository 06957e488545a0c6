//! Quota counters (docs/storage.md, "Quotas"): one atomic, conditional ADD a turn.

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{is_condition_failure, sdk_error, DynamoStore};
use crate::store::item::n;
use crate::store::quota::Counter;
use crate::store::{attr, StoreError};

impl DynamoStore {
    /// `ADD <count> :by`, setting the counter's expiry when the item is new; `limit`, when
    /// given, makes it conditional on the count being under it.
    pub(super) async fn add_to_counter(
        &self,
        counter: &Counter,
        count: &str,
        by: i64,
        limit: Option<u64>,
    ) -> Result<bool, StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(counter.key.clone())))
            .update_expression("ADD #c :by SET #exp = if_not_exists(#exp, :exp)")
            .expression_attribute_names("#c", count)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":by", AttributeValue::N(by.to_string()))
            .expression_attribute_values(":exp", n(counter.expires_at));
        if let Some(limit) = limit {
            update = update
                .condition_expression("attribute_not_exists(#c) OR #c < :limit")
                .expression_attribute_values(":limit", n(limit));
        }
        // ADD is not idempotent: the SDK's retry of an attempt that landed counts twice. For a
        // count or a spend that only makes the quota stricter; a give-back is tried once, so a
        // quota is never loosened (a lost give-back costs the caller one turn of the minute).
        let sent = if by < 0 {
            update
                .customize()
                .config_override(
                    aws_sdk_dynamodb::config::Builder::new().retry_config(RetryConfig::disabled()),
                )
                .send()
                .await
        } else {
            update.send().await
        };
        match sent {
            Ok(_) => Ok(true),
            Err(e) if limit.is_some() && is_condition_failure(&e) => Ok(false),
            Err(e) => Err(sdk_error(e)),
        }
    }

    /// A counter's count (an eventually consistent read: a quota is a brake, not a ledger).
    pub(super) async fn counted(&self, counter: &Counter, count: &str) -> Result<u64, StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(counter.key.clone())))
            .projection_expression("#c")
            .expression_attribute_names("#c", count)
            .send()
            .await
            .map_err(sdk_error)?
            .item;
        // A count past u64 (adds of i64::MAX) is spent, not zero.
        Ok(item
            .and_then(|i| i.get(count)?.as_n().ok()?.parse::<i128>().ok())
            .map_or(0, |c| c.clamp(0, i128::from(u64::MAX)) as u64))
    }
}
