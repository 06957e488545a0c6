//! Listings: an owner's sessions through the owner index, and the title a listing shows.

use super::{sdk_error, DynamoStore};
use crate::input::SessionKey;
use crate::store::item::{listed, n, s, Item};
use crate::store::{attr, SessionList, StoreError};

impl DynamoStore {
    pub(super) async fn list_sessions(
        &self,
        owner: &str,
        limit: usize,
        from: Option<&str>,
        include_deleted: bool,
    ) -> Result<SessionList, StoreError> {
        let Some(index) = &self.owner_index else {
            return Err(StoreError::NoIndex);
        };
        let mut start = from.map(|c| self.list_start(owner, c)).transpose()?;
        let mut sessions = Vec::new();
        // DynamoDB pages a query at 1 MB (and at `Limit` items read): go on until the page is
        // full or the index has no more. A page costs only what it reads.
        loop {
            let want = limit.saturating_sub(sessions.len()).clamp(1, 1000);
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#o = :o")
                .expression_attribute_names("#o", attr::OWNER_KEY)
                .expression_attribute_values(":o", s(owner))
                .scan_index_forward(false)
                .limit(want as i32)
                .set_exclusive_start_key(start.take());
            if !include_deleted {
                query = query
                    .filter_expression("attribute_not_exists(#t)")
                    .expression_attribute_names("#t", attr::TOMBSTONE);
            }
            let out = query.send().await.map_err(sdk_error)?;
            for item in out.items() {
                sessions.extend(listed(&self.schema, item));
            }
            start = out.last_evaluated_key;
            if sessions.len() >= limit || start.is_none() {
                break;
            }
        }
        let next = start.as_ref().and_then(|last| self.list_cursor(last));
        Ok(SessionList { sessions, next })
    }

    /// `<active_ms>.<percent-encoded key>`: where a listing page ended.
    fn list_cursor(&self, last: &Item) -> Option<String> {
        let key = self.schema.key_of(last)?;
        let active = last.get(attr::ACTIVE_MS)?.as_n().ok()?;
        Some(format!("{active}.{}", crate::input::encode_component(key)))
    }

    fn list_start(&self, owner: &str, cursor: &str) -> Result<Item, StoreError> {
        let bad = || StoreError::InvalidCursor;
        let (active, key) = cursor.split_once('.').ok_or_else(bad)?;
        let active: u64 = active.parse().map_err(|_| bad())?;
        let key = percent_encoding::percent_decode_str(key)
            .decode_utf8()
            .map_err(|_| bad())?;
        let mut start = self.schema.key(key.into_owned());
        start.insert(attr::OWNER_KEY.into(), s(owner));
        start.insert(attr::ACTIVE_MS.into(), n(active));
        Ok(start)
    }

    pub(super) async fn write_title(
        &self,
        session: &SessionKey,
        title: &str,
    ) -> Result<bool, StoreError> {
        self.set_on_live(session, attr::TITLE, title).await
    }
}
