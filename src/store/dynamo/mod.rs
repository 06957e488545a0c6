//! The DynamoDB I/O of the session store, one concern per file: reads ([`read`]: the session,
//! its pages and parts, receipts, history), saves ([`save`]), deletes ([`delete`]) and listings
//! ([`list`]). What is written where, and why it is safe, is `docs/storage.md`; the pure parts
//! are [`super::policy`], [`super::history`] and [`super::item`].

mod delete;
mod list;
mod log;
mod migrate;
mod quota;
mod read;
mod save;
mod versions;

use std::collections::HashMap;
use std::error::Error as StdError;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use super::item::{n, text, Item};
use super::{attr, Changes, Deleted, HistoryPage, KeySchema, PageLimit, Receipt, SessionList};
use super::{Branch, Feedback, SessionStore, Snapshot, Span, StoreError, Version};
use crate::deadline::Deadline;
use crate::input::{IdempotencyKey, SessionKey};

pub use super::item::PREVIEW_CHARS;

pub struct DynamoStore {
    client: Client,
    table: String,
    max_item_bytes: usize,
    /// Sessions (and their pages) expire this long after their last save.
    session_ttl_secs: Option<u64>,
    schema: KeySchema,
    /// The global secondary index on `owner_key` and `active_ms`, for listings.
    owner_index: Option<String>,
    /// New sessions take the log layout (docs/storage.md, "The log layout").
    log_layout: bool,
    /// Bytes of griptape's view in a log session's item.
    view_bytes: usize,
}

impl DynamoStore {
    pub fn new(
        client: Client,
        table: impl Into<String>,
        max_item_bytes: usize,
        session_ttl_secs: Option<u64>,
    ) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            max_item_bytes,
            session_ttl_secs,
            schema: KeySchema::default(),
            owner_index: None,
            log_layout: false,
            view_bytes: super::log::DEFAULT_VIEW_BYTES,
        }
    }

    /// New sessions take the log layout, with a view of `view_bytes`.
    pub fn with_log_layout(mut self, on: bool, view_bytes: usize) -> Self {
        self.log_layout = on;
        self.view_bytes = view_bytes;
        self
    }

    /// Keys the table's items as a griptape user configured it.
    pub fn with_schema(mut self, schema: KeySchema) -> Self {
        self.schema = schema;
        self
    }

    /// Lists sessions through this index.
    pub fn with_owner_index(mut self, index: Option<String>) -> Self {
        self.owner_index = index;
        self
    }

    /// A consistent read of the item stored under `key`.
    async fn get(&self, key: String) -> Result<Option<Item>, StoreError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(key)))
            .consistent_read(true)
            .send()
            .await
            .map(|out| out.item)
            .map_err(sdk_error)
    }
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn count_turn(
        &self,
        counter: &super::quota::Counter,
        limit: u64,
    ) -> Result<bool, StoreError> {
        self.add_to_counter(counter, attr::QUOTA_TURNS, 1, Some(limit))
            .await
    }

    async fn uncount_turn(&self, counter: &super::quota::Counter) -> Result<(), StoreError> {
        self.add_to_counter(counter, attr::QUOTA_TURNS, -1, None)
            .await
            .map(drop)
    }

    async fn tokens_spent(&self, counter: &super::quota::Counter) -> Result<u64, StoreError> {
        self.counted(counter, attr::QUOTA_TOKENS).await
    }

    async fn spend_tokens(
        &self,
        counter: &super::quota::Counter,
        tokens: u64,
    ) -> Result<(), StoreError> {
        let by = i64::try_from(tokens).unwrap_or(i64::MAX);
        self.add_to_counter(counter, attr::QUOTA_TOKENS, by, None)
            .await
            .map(drop)
    }

    async fn load(&self, session: &SessionKey) -> Result<Snapshot, StoreError> {
        if self.log_layout {
            if let Some(read) = self.begin_log(session, &Branch::Append).await? {
                return Ok(read);
            }
        }
        let read = self.snapshot(session).await?;
        if read.as_ref().is_some_and(|r| r.log_view) {
            // A log session read with the layout off: its turns go on in it.
            if let Some(read) = self.begin_log(session, &Branch::Append).await? {
                return Ok(read);
            }
        }
        Ok(read.unwrap_or_else(Snapshot::new_session))
    }

    async fn save(
        &self,
        session: &SessionKey,
        changes: Changes<'_>,
        read: &Snapshot,
    ) -> Result<(), StoreError> {
        match &read.log {
            Some(turn) => self.save_log(session, changes, read, turn).await,
            None => self.save_changes(session, changes, read).await,
        }
    }

    async fn release(&self, session: &SessionKey, read: &Snapshot) -> Result<(), StoreError> {
        match &read.log {
            Some(turn) => self.release_log(session, turn, Some(read)).await,
            None => Ok(()),
        }
    }

    async fn receipt(
        &self,
        session: &SessionKey,
        read: &Snapshot,
        key: &IdempotencyKey,
    ) -> Result<Option<Receipt>, StoreError> {
        self.read_receipt(session, read, key).await
    }

    async fn history(
        &self,
        session: &SessionKey,
        span: Span<'_>,
        limit: PageLimit,
    ) -> Result<Option<HistoryPage>, StoreError> {
        self.read_history(session, span, limit).await
    }

    async fn delete(
        &self,
        session: &SessionKey,
        deadline: Deadline,
    ) -> Result<Deleted, StoreError> {
        self.delete_session(session, deadline).await
    }

    async fn list(
        &self,
        owner: &str,
        limit: usize,
        from: Option<&str>,
        include_deleted: bool,
    ) -> Result<SessionList, StoreError> {
        self.list_sessions(owner, limit, from, include_deleted)
            .await
    }

    async fn set_title(&self, session: &SessionKey, title: &str) -> Result<bool, StoreError> {
        self.write_title(session, title).await
    }

    async fn owner_of(&self, session: &SessionKey) -> Result<Option<String>, StoreError> {
        let root = self.get(session.as_str().to_owned()).await?;
        let live = root.filter(|r| !r.contains_key(attr::TOMBSTONE));
        Ok(match live {
            Some(item) => text(&item, attr::OWNER_KEY)?.map(str::to_owned),
            None => None,
        })
    }

    async fn load_branch(
        &self,
        session: &SessionKey,
        branch: &Branch,
    ) -> Result<Snapshot, StoreError> {
        if matches!(branch, Branch::Append) {
            return self.load(session).await;
        }
        match self.begin_log(session, branch).await? {
            Some(read) => Ok(read),
            None => Err(StoreError::LogLayoutRequired),
        }
    }

    async fn select(&self, session: &SessionKey, run_id: &str) -> Result<(), StoreError> {
        self.select_run(session, run_id).await
    }

    async fn delete_run(&self, session: &SessionKey, run_id: &str) -> Result<(), StoreError> {
        self.delete_one(session, run_id).await
    }

    async fn set_feedback(
        &self,
        session: &SessionKey,
        run_id: &str,
        feedback: &Feedback,
    ) -> Result<(), StoreError> {
        self.put_feedback(session, run_id, feedback).await
    }
}

/// A write's condition: it lands only over the version read. The one place that rule is
/// written, for saves and deletes alike.
#[derive(Debug, Clone, PartialEq)]
struct Condition {
    expression: &'static str,
    names: HashMap<String, String>,
    values: Option<HashMap<String, AttributeValue>>,
}

fn version_condition(version: Version, schema: &KeySchema) -> Condition {
    let names = |pairs: &[(&str, &str)]| {
        let pairs = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        pairs.collect()
    };
    let pk = ("#pk", schema.partition_key.as_str());
    let version_name = ("#version", attr::VERSION);
    match version {
        Version::New => Condition {
            expression: "attribute_not_exists(#pk)",
            names: names(&[pk]),
            values: None,
        },
        // Written by the Python original or griptape: still without a version.
        Version::Unversioned => Condition {
            expression: "attribute_exists(#pk) AND attribute_not_exists(#version)",
            names: names(&[pk, version_name]),
            values: None,
        },
        Version::At(v) => Condition {
            expression: "#version = :read",
            names: names(&[version_name]),
            values: Some(HashMap::from([(":read".to_owned(), n(v))])),
        },
    }
}

/// A call cut off at `stop`; `None` when time ran out.
async fn within<T>(stop: Deadline, call: impl std::future::Future<Output = T>) -> Option<T> {
    stop.bound(call).await.ok()
}

/// A request the SDK refused to build (a missing required field): a bug, not the table's fault.
fn built<T, E: StdError + Send + Sync + 'static>(r: Result<T, E>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::Failed(e.into()))
}

/// A write whose refusal by its condition means its work is done already (a newer value is
/// there, or a retry of it landed first).
fn refused_is_done<T, E, R>(result: Result<T, SdkError<E, R>>) -> Result<(), StoreError>
where
    E: StdError + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_condition_failure(&e) => Ok(()),
        Err(e) => Err(sdk_error(e)),
    }
}

fn is_condition_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .is_some_and(|se| se.code() == Some("ConditionalCheckFailedException"))
}

/// Sorts SDK failures into "try later" (503) and everything else (500). The SDK has already
/// retried throttling and transient faults by the time an error reaches here.
fn sdk_error<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: StdError + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let transient = match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(se) => matches!(
            se.err().code(),
            Some(
                "ResourceNotFoundException"
                    | "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "TransactionInProgressException"
            )
        ),
        _ => false,
    };
    let detail: Box<dyn StdError + Send + Sync> = DisplayErrorContext(&e).to_string().into();
    if transient {
        StoreError::Unavailable(detail)
    } else {
        StoreError::Failed(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_is_conditional_on_the_version_read() {
        let schema = KeySchema::default();
        let new = version_condition(Version::New, &schema);
        assert_eq!(new.expression, "attribute_not_exists(#pk)");
        assert_eq!(new.names["#pk"], "id");
        let old = version_condition(Version::Unversioned, &schema);
        assert_eq!(old.names["#version"], attr::VERSION);
        let at = version_condition(Version::At(7), &schema);
        assert_eq!(at.expression, "#version = :read");
        assert_eq!(at.values.unwrap()[":read"], n(7));
    }
}
