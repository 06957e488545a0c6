//! The DynamoDB I/O of the session store, one concern per file. A turn: [`begin`] (its slot
//! reserved, its window read), [`window`] (the snapshot it works from), [`append`] (its run into
//! its slot), [`slots`] (holes and counts), [`summary`] (the prompt's context it saves),
//! [`retention`] (`MAX_RUNS` and TTL), [`view`] (griptape's view). Beside turns: [`read`]
//! (history, receipts, parts), [`migrate`] (sessions of the item shape, griptape's writes),
//! [`versions`] and [`one_run`] (editing), [`lookup`] (one run by id), [`about`] (a session's names), [`live`] (replies in progress), [`delete`], [`list`], [`quota`]. What is written
//! where, and why it is safe, is `docs/storage.md`; the pure rules are in the modules of
//! [`super`].

mod about;
mod append;
mod begin;
mod delete;
mod list;
mod live;
mod lookup;
mod migrate;
mod one_run;
mod quota;
mod read;
mod retention;
mod slots;
mod summary;
mod versions;
mod view;
mod window;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use aws_sdk_dynamodb::Client;

use super::item::{n, text, Item};
use super::keys::head_key;
use super::log::Head;
use super::log_item::decode_head;
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
    /// Bytes of griptape's view in a session's item.
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
            view_bytes: super::log::DEFAULT_VIEW_BYTES,
        }
    }

    /// Griptape's view holds the newest runs within `view_bytes`.
    pub fn with_view_bytes(mut self, view_bytes: usize) -> Self {
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

    /// An UpdateItem of the session's head item, the rest to be said.
    fn update_head(
        &self,
        session: &SessionKey,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(head_key(session))))
    }

    /// Deletes the item under `key` while it still names `run_id` (a slot's run, a receipt's):
    /// refused, it is gone or another run's is there, and that one stays.
    async fn delete_naming(&self, key: String, run_id: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(key)))
            .condition_expression("#r = :r")
            .expression_attribute_names("#r", attr::RUN_ID)
            .expression_attribute_values(":r", super::item::s(run_id))
            .send()
            .await;
        refused_is_done(result)
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

    /// The head item as it is, if any.
    pub(super) async fn read_head(&self, session: &SessionKey) -> Result<Option<Head>, StoreError> {
        match self.get(head_key(session)).await? {
            Some(item) => decode_head(&item).map(Some),
            None => Ok(None),
        }
    }

    /// Consistent reads of many items, by key; the ones that exist.
    pub(super) async fn batch_get(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, Item>, StoreError> {
        let mut found = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut pending = KeysAndAttributes::builder()
                .set_keys(Some(
                    chunk.iter().map(|k| self.schema.key(k.as_str())).collect(),
                ))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Failed(e.into()))?;
            let mut backoff = Duration::from_millis(10);
            loop {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(sdk_error)?;
                for item in out
                    .responses
                    .and_then(|mut r| r.remove(&self.table))
                    .into_iter()
                    .flatten()
                {
                    if let Some(key) = self.schema.key_of(&item) {
                        found.insert(key.to_owned(), item);
                    }
                }
                match out.unprocessed_keys.and_then(|mut u| u.remove(&self.table)) {
                    Some(rest) if !rest.keys().is_empty() => {
                        pending = rest;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                    _ => break,
                }
            }
        }
        Ok(found)
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
        self.begin_turn(session, &Branch::Append).await
    }

    async fn save(
        &self,
        session: &SessionKey,
        changes: Changes<'_>,
        read: &Snapshot,
    ) -> Result<(), StoreError> {
        match &read.log {
            Some(turn) => self.save_run(session, changes, read, turn).await,
            // Every turn's read takes a slot: a snapshot without one was not read for a turn.
            None => Err(StoreError::Failed(
                "a save of a session not read for a turn".into(),
            )),
        }
    }

    async fn release(&self, session: &SessionKey, read: &Snapshot) -> Result<(), StoreError> {
        match &read.log {
            Some(turn) => self.release_slot(session, turn, Some(read)).await,
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
        self.begin_turn(session, branch).await
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

    async fn find_run(
        &self,
        session: &SessionKey,
        run_id: &str,
    ) -> Result<Option<super::FoundRun>, StoreError> {
        self.lookup_run(session, run_id).await
    }

    async fn about(&self, session: &SessionKey) -> Result<Option<super::About>, StoreError> {
        self.read_about(session).await
    }

    async fn create_empty(
        &self,
        session: &SessionKey,
        memory: &crate::memory::Memory,
        owner: Option<&str>,
        about: &super::About,
    ) -> Result<bool, StoreError> {
        self.put_empty(session, memory, owner, about).await
    }

    async fn set_metadata(&self, session: &SessionKey, metadata: &str) -> Result<bool, StoreError> {
        self.write_metadata(session, metadata).await
    }

    async fn live_begin(
        &self,
        session: &SessionKey,
        run_id: &str,
        record: Option<&str>,
    ) -> Result<(), StoreError> {
        self.put_live(session, run_id, record).await
    }

    async fn live_append(
        &self,
        session: &SessionKey,
        run_id: &str,
        pieces: &[String],
        capped: bool,
    ) -> Result<super::LiveWrite, StoreError> {
        self.append_live(session, run_id, pieces, capped).await
    }

    async fn live_end(&self, session: &SessionKey, run_id: &str) -> Result<(), StoreError> {
        self.end_live(session, run_id).await
    }

    async fn live_read(
        &self,
        session: &SessionKey,
        run_id: &str,
    ) -> Result<Option<super::Live>, StoreError> {
        self.read_live(session, run_id).await
    }

    async fn live_cancel(&self, session: &SessionKey, run_id: &str) -> Result<bool, StoreError> {
        self.cancel_live(session, run_id).await
    }
}

/// Which items of a cancelled transaction their condition refused, in order; `None` when the
/// transaction failed otherwise.
pub(super) fn refused_items<R>(
    e: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, R>,
) -> Option<Vec<bool>> {
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(c)) => Some(
            c.cancellation_reasons()
                .iter()
                .map(|r| r.code() == Some("ConditionalCheckFailed"))
                .collect(),
        ),
        _ => None,
    }
}
pub(super) fn is_cancelled<R>(
    e: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, R>,
) -> bool {
    matches!(
        e.as_service_error(),
        Some(TransactWriteItemsError::TransactionCanceledException(_))
    )
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
