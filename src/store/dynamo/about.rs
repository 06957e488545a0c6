//! What a session says of itself beside its runs (docs/storage.md, "Conversations"): when it
//! was made, its title, its conversation metadata; and an empty session made to hold them (a
//! Responses API conversation created before its first message).

use super::{is_condition_failure, sdk_error, DynamoStore};
use crate::input::SessionKey;
use crate::memory::Memory;
use crate::store::item::{count, n, s, text, Now};
use crate::store::{attr, About, StoreError};

impl DynamoStore {
    pub(super) async fn read_about(
        &self,
        session: &SessionKey,
    ) -> Result<Option<About>, StoreError> {
        let Some(item) = self.get(session.as_str().to_owned()).await? else {
            return Ok(None);
        };
        if item.contains_key(attr::TOMBSTONE) {
            return Ok(None);
        }
        Ok(Some(About {
            created_at: count(&item, attr::CREATED_AT)?,
            title: text(&item, attr::TITLE)?.map(str::to_owned),
            metadata: text(&item, attr::CONVERSATION_METADATA)?.map(str::to_owned),
            last_run: text(&item, attr::VIEW_LAST)?.map(str::to_owned),
        }))
    }

    /// The session item of a session with no run yet, in the item shape (griptape reads it as
    /// an empty conversation; its first turn moves it into the log); `false` if one exists.
    pub(super) async fn put_empty(
        &self,
        session: &SessionKey,
        memory: &Memory,
        owner: Option<&str>,
        about: &About,
    ) -> Result<bool, StoreError> {
        let now = Now::current();
        let mut item = self.schema.key(session.as_str());
        item.insert(self.schema.value_attribute.clone(), s(memory.encode()));
        item.insert(attr::CREATED_AT.into(), n(now.secs));
        item.insert(attr::UPDATED_AT.into(), n(now.secs));
        item.insert(attr::SESSION_ID.into(), s(session.session_id()));
        item.insert(attr::RUN_COUNT.into(), n(0));
        if let Some(owner) = owner {
            item.insert(attr::OWNER_KEY.into(), s(owner));
            item.insert(attr::ACTIVE_MS.into(), n(now.millis));
        }
        if let Some(title) = &about.title {
            item.insert(attr::TITLE.into(), s(title.as_str()));
        }
        if let Some(metadata) = &about.metadata {
            item.insert(attr::CONVERSATION_METADATA.into(), s(metadata.as_str()));
        }
        if let Some(ttl) = self.session_ttl_secs {
            item.insert(attr::EXPIRES_AT.into(), n(now.secs + ttl));
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", &self.schema.partition_key)
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(sdk_error(e)),
        }
    }

    /// Replaces a live session's conversation metadata; `false` if there is no such session.
    pub(super) async fn write_metadata(
        &self,
        session: &SessionKey,
        metadata: &str,
    ) -> Result<bool, StoreError> {
        self.set_on_live(session, attr::CONVERSATION_METADATA, metadata)
            .await
    }

    /// Sets one attribute of a live session's item (a title, a conversation's metadata);
    /// `false` if there is no such session. Bumps the version, so a turn saving over what it
    /// read before starts over.
    pub(super) async fn set_on_live(
        &self,
        session: &SessionKey,
        name: &str,
        value: &str,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(session.as_str())))
            .update_expression("SET #a = :v, #version = if_not_exists(#version, :zero) + :one")
            .condition_expression("attribute_exists(#pk) AND attribute_not_exists(#t)")
            .expression_attribute_names("#a", name)
            .expression_attribute_names("#t", attr::TOMBSTONE)
            .expression_attribute_names("#pk", &self.schema.partition_key)
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_values(":v", s(value))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(sdk_error(e)),
        }
    }
}
