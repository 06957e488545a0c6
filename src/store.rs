//! Where sessions live: the [`SessionStore`] trait and its DynamoDB implementation.
//!
//! Items, all in the one table (partition key `id`, a string):
//! - the session, `id` = the session id: `value` (S) is the memory JSON (see [`crate::memory`]),
//!   `version` (N) is bumped by every save, `archived` (N) counts its archive chunks,
//!   `created_at` / `updated_at` (N) are epoch seconds, `expires_at` (N, the table's TTL) is set
//!   when sessions expire, and `receipts` (M) maps the idempotency keys of its live receipts to
//!   their expiry, so a delete can find them. Saves are conditional on the version read, so two
//!   writers can never overwrite each other's runs. Items written by the Python original have no
//!   `version`; the first save here adds it.
//! - archive chunks, `id` = `<session>#archive#<n>`: the session's oldest runs, moved out when the
//!   session item would pass the safe size, in the same JSON shape.
//! - idempotency receipts, `id` = `<session>#idem#<key>`: the message and reply of a request
//!   that carried an `Idempotency-Key`, expiring after a day (`expires_at`, the table's TTL).
//!
//! `#` cannot appear in a session id, so these keys never collide with a session. A save that
//! writes more than the session item is one transaction: all of it lands, or none.

use std::error::Error as StdError;
use std::time::{SystemTime, UNIX_EPOCH};

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;

use crate::input::{IdempotencyKey, SessionKey};
use crate::memory::{DecodeError, Memory, Run};

/// The version of a session as it was read; a save succeeds only if it is still the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// No item yet.
    New,
    /// An item without a version attribute (written by the Python original).
    Unversioned,
    At(u64),
}

/// A session as read from the store: its recent runs (archived ones stay in the archive).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub memory: Memory,
    pub version: Version,
    /// How many archive chunks the session has.
    pub archived: u64,
    /// When the archive chunks expire (epoch seconds), if they do.
    pub archive_expires_at: Option<u64>,
    /// Idempotency keys of the session's receipts, with their expiry.
    pub receipts: BTreeMap<String, u64>,
    /// The running summary of runs that fell out of the prompt window (`SUMMARIZE`).
    pub summary: Option<Summary>,
    /// Every attribute of the item as read but `value` (empty for a new session): a save writes
    /// them back.
    pub item: Item,
}

/// A running summary of a session's older runs, stored beside `value` (`summary`,
/// `summary_through`) so the memory JSON keeps its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub text: String,
    /// The id of the newest run folded in.
    pub through: String,
}

/// What a save writes: the session's memory and, in the same write, what else the turn produced.
#[derive(Debug, Clone, Copy)]
pub struct Changes<'a> {
    pub memory: &'a Memory,
    pub receipt: Option<&'a Receipt>,
    /// A new summary, replacing the stored one.
    pub summary: Option<&'a Summary>,
}

impl Snapshot {
    fn new_session() -> Snapshot {
        Snapshot {
            memory: Memory::default(),
            version: Version::New,
            archived: 0,
            archive_expires_at: None,
            receipts: BTreeMap::new(),
            summary: None,
            item: Item::new(),
        }
    }
}

/// What a request with an `Idempotency-Key` left behind, to answer its retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub key: IdempotencyKey,
    pub message: String,
    pub run_id: String,
    pub reply: String,
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer saved the session since it was read; read again and retry.
    #[error("the session changed since it was read")]
    Conflict,
    /// A request with the same idempotency key saved first.
    #[error("a request with the same idempotency key was saved first")]
    ReceiptExists,
    /// The stored item cannot be read as a session; it is left exactly as it is.
    #[error("the stored session is corrupt")]
    Corrupt(#[source] DecodeError),
    /// The table could not be reached, does not exist, or kept throttling (HTTP 503).
    #[error("the session table is unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else the store refused (HTTP 500).
    #[error("the session store failed")]
    Failed(#[source] BoxError),
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Reads a session; an unknown session is an empty memory at [`Version::New`].
    async fn load(&self, id: &SessionKey) -> Result<Snapshot, StoreError>;

    /// Saves the changes (the snapshot's runs plus new ones, a receipt, a summary) if the
    /// session is still as `read`, else [`StoreError::Conflict`]. All of it lands, or none.
    async fn save(
        &self,
        id: &SessionKey,
        changes: Changes<'_>,
        read: &Snapshot,
    ) -> Result<(), StoreError>;

    /// The receipt a request with this key left, if any.
    async fn receipt(
        &self,
        id: &SessionKey,
        key: &IdempotencyKey,
    ) -> Result<Option<Receipt>, StoreError>;

    /// Every run of a session, archived ones included, oldest first; `None` if unknown.
    async fn history(&self, id: &SessionKey) -> Result<Option<Vec<Run>>, StoreError>;

    /// Removes a session with its archive and receipts; `false` if it did not exist.
    async fn delete(&self, id: &SessionKey) -> Result<bool, StoreError>;
}

/// Default safe size of a session item's `value`: well under DynamoDB's 400 KB item limit, even
/// counting old and new value together as some DynamoDB-compatible servers do during an update.
pub const DEFAULT_MAX_ITEM_BYTES: usize = 160 * 1024;
/// A delete starts over when a turn is saved meanwhile, at most this often.
const DELETE_ATTEMPTS: u32 = 5;
/// Receipts answer retries for this long.
const RECEIPT_TTL_SECS: u64 = 24 * 60 * 60;

pub struct DynamoStore {
    client: Client,
    table: String,
    max_item_bytes: usize,
    /// Sessions (and their archives) expire this long after their last save.
    session_ttl_secs: Option<u64>,
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
        }
    }

    async fn get(&self, key: String) -> Result<Option<Item>, StoreError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("id", s(key))
            .consistent_read(true)
            .send()
            .await
            .map(|out| out.item)
            .map_err(sdk_error)
    }

    /// Pushes the expiry of existing archive chunks out to the session's, so a living session
    /// never loses its archive to TTL. Runs at most about twice per TTL period.
    async fn refresh_archive_expiry(
        &self,
        id: &SessionKey,
        chunks: u64,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        for chunk in 1..=chunks {
            self.client
                .update_item()
                .table_name(&self.table)
                .key("id", s(archive_key(id, chunk)))
                .update_expression("SET expires_at = :e")
                .condition_expression("attribute_exists(id)")
                .expression_attribute_values(":e", n(expires_at))
                .send()
                .await
                .map_err(sdk_error)?;
        }
        Ok(())
    }
}

pub type Item = HashMap<String, AttributeValue>;

pub fn archive_key(id: &SessionKey, chunk: u64) -> String {
    format!("{id}#archive#{chunk:08}")
}

fn receipt_key(id: &SessionKey, key: &str) -> String {
    format!("{id}#idem#{key}")
}

fn epoch_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn count(
    item: &std::collections::HashMap<String, AttributeValue>,
    name: &str,
) -> Result<Option<u64>, StoreError> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| {
            StoreError::Corrupt(DecodeError::new(format!(
                "the item's {name} is not a count"
            )))
        }),
        Some(_) => Err(StoreError::Corrupt(DecodeError::new(format!(
            "the item's {name} is not a number"
        )))),
    }
}

/// Splits the oldest runs off `memory` into archive chunks when its JSON passes `max_bytes`,
/// keeping about half the budget of recent runs in the session item. Each chunk stays within
/// `max_bytes` too (a single run larger than that gets a chunk of its own).
pub fn split_for_size(memory: &Memory, max_bytes: usize) -> (Memory, Vec<Memory>) {
    let total = memory.encode().len();
    if total <= max_bytes {
        return (memory.clone(), Vec::new());
    }
    let sizes: Vec<usize> = memory
        .runs
        .iter()
        .map(|r| r.encoded_len(memory.format) + 2)
        .collect();
    let keep_budget = max_bytes / 2;
    // Keep the newest runs that fit in half the budget, and always the newest one.
    let mut kept_bytes = 0;
    let mut first_kept = memory.runs.len();
    while first_kept > 0 {
        let size = sizes[first_kept - 1];
        if first_kept < memory.runs.len() && kept_bytes + size > keep_budget {
            break;
        }
        kept_bytes += size;
        first_kept -= 1;
    }
    let mut chunks = Vec::new();
    let mut chunk: Vec<Run> = Vec::new();
    let mut chunk_bytes = 0;
    for (run, size) in memory.runs[..first_kept].iter().zip(&sizes) {
        if !chunk.is_empty() && chunk_bytes + size > max_bytes.saturating_sub(128) {
            chunks.push(memory.with_runs(std::mem::take(&mut chunk)));
            chunk_bytes = 0;
        }
        chunk_bytes += size;
        chunk.push(run.clone());
    }
    if !chunk.is_empty() {
        chunks.push(memory.with_runs(chunk));
    }
    let mut recent = memory.clone();
    recent.runs.drain(..first_kept);
    (recent, chunks)
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn load(&self, id: &SessionKey) -> Result<Snapshot, StoreError> {
        let Some(mut item) = self.get(id.as_str().to_owned()).await? else {
            return Ok(Snapshot::new_session());
        };
        // Taken out: the snapshot holds it decoded, and a save writes a new one.
        let value = match item.remove("value") {
            Some(AttributeValue::S(text)) => text,
            _ => {
                return Err(StoreError::Corrupt(DecodeError::new(
                    "the item has no string attribute \"value\"",
                )))
            }
        };
        let memory = Memory::decode(&value).map_err(StoreError::Corrupt)?;
        let version = match count(&item, "version")? {
            None => Version::Unversioned,
            Some(v) => Version::At(v),
        };
        let receipts = match item.get("receipts") {
            None => BTreeMap::new(),
            Some(AttributeValue::M(map)) => map
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_n().ok()?.parse().ok()?)))
                .collect(),
            Some(_) => {
                return Err(StoreError::Corrupt(DecodeError::new(
                    "the item's receipts is not a map",
                )))
            }
        };
        let summary = match (item.get("summary"), item.get("summary_through")) {
            (Some(AttributeValue::S(text)), Some(AttributeValue::S(through))) => Some(Summary {
                text: text.clone(),
                through: through.clone(),
            }),
            _ => None,
        };
        Ok(Snapshot {
            memory,
            version,
            archived: count(&item, "archived")?.unwrap_or(0),
            archive_expires_at: count(&item, "archive_expires_at")?,
            receipts,
            summary,
            item,
        })
    }

    async fn save(
        &self,
        id: &SessionKey,
        changes: Changes<'_>,
        read: &Snapshot,
    ) -> Result<(), StoreError> {
        let Changes {
            memory,
            receipt,
            summary,
        } = changes;
        let (recent, chunks) = split_for_size(memory, self.max_item_bytes);
        let (condition, next) = match read.version {
            Version::New => ("attribute_not_exists(id)", 1),
            Version::Unversioned => ("attribute_exists(id) AND attribute_not_exists(#version)", 1),
            Version::At(v) => ("#version = :read", v + 1),
        };
        let now = epoch_seconds();
        let archived = read.archived + chunks.len() as u64;
        let expires_at = self.session_ttl_secs.map(|ttl| now + ttl);
        // The whole item is written, starting from every attribute as read, so attributes
        // this code does not know survive; the version condition makes that safe.
        let mut item = read.item.clone();
        item.insert("id".into(), s(id.as_str()));
        item.insert("value".into(), s(recent.encode()));
        item.insert("version".into(), n(next));
        item.insert("archived".into(), n(archived));
        item.insert("updated_at".into(), n(now));
        item.entry("created_at".into()).or_insert_with(|| n(now));
        if let Some(expires_at) = expires_at {
            item.insert("expires_at".into(), n(expires_at));
            if archived > 0 {
                // Chunks written now expire with the session; older ones are refreshed when
                // they would expire within half a TTL.
                let ttl = self.session_ttl_secs.unwrap_or(0);
                let mut archive_expiry = read.archive_expires_at.unwrap_or(0);
                if read.archived > 0 && archive_expiry < now + ttl / 2 {
                    self.refresh_archive_expiry(id, read.archived, expires_at)
                        .await?;
                    archive_expiry = expires_at;
                }
                if !chunks.is_empty() && read.archived == 0 {
                    archive_expiry = expires_at;
                }
                item.insert(
                    "archive_expires_at".into(),
                    n(archive_expiry.min(expires_at)),
                );
            }
        }
        let mut receipts: HashMap<String, AttributeValue> = read
            .receipts
            .iter()
            .filter(|(_, expiry)| **expiry > now)
            .map(|(k, expiry)| (k.clone(), n(*expiry)))
            .collect();
        if let Some(r) = receipt {
            receipts.insert(r.key.as_str().to_owned(), n(now + RECEIPT_TTL_SECS));
        }
        if receipts.is_empty() {
            item.remove("receipts");
        } else {
            item.insert("receipts".into(), AttributeValue::M(receipts));
        }
        if let Some(summary) = summary {
            item.insert("summary".into(), s(summary.text.as_str()));
            item.insert("summary_through".into(), s(summary.through.as_str()));
        }
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition);
        if !matches!(read.version, Version::New) {
            put = put.expression_attribute_names("#version", "version");
        }
        if let Version::At(v) = read.version {
            put = put.expression_attribute_values(":read", n(v));
        }
        let put = put.build().map_err(|e| StoreError::Failed(e.into()))?;

        if chunks.is_empty() && receipt.is_none() {
            // The common case: one conditional write.
            let result = self
                .client
                .put_item()
                .table_name(put.table_name)
                .set_item(Some(put.item))
                .set_condition_expression(put.condition_expression)
                .set_expression_attribute_names(put.expression_attribute_names)
                .set_expression_attribute_values(put.expression_attribute_values)
                .send()
                .await;
            return match result {
                Ok(_) => Ok(()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
                {
                    Err(StoreError::Conflict)
                }
                Err(e) => Err(sdk_error(e)),
            };
        }

        let mut items = vec![TransactWriteItem::builder().put(put).build()];
        for (i, chunk) in chunks.iter().enumerate() {
            let mut put = Put::builder()
                .table_name(&self.table)
                .item("id", s(archive_key(id, read.archived + 1 + i as u64)))
                .item("value", s(chunk.encode()))
                .item("created_at", n(now))
                .condition_expression("attribute_not_exists(id)");
            if let Some(expires_at) = expires_at {
                put = put.item("expires_at", n(expires_at));
            }
            let put = put.build().map_err(|e| StoreError::Failed(e.into()))?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        let receipt_index = items.len();
        if let Some(r) = receipt {
            let put = Put::builder()
                .table_name(&self.table)
                .item("id", s(receipt_key(id, r.key.as_str())))
                .item("message", s(r.message.as_str()))
                .item("run_id", s(r.run_id.as_str()))
                .item("reply", s(r.reply.as_str()))
                .item("created_at", n(now))
                .item("expires_at", n(now + RECEIPT_TTL_SECS))
                .condition_expression("attribute_not_exists(id)")
                .build()
                .map_err(|e| StoreError::Failed(e.into()))?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => {
                if !chunks.is_empty() {
                    tracing::info!(session_id = %id, chunks = chunks.len(), archived, "moved old runs to the archive");
                }
                Ok(())
            }
            Err(e) => {
                let reasons: Vec<Option<String>> = e
                    .as_service_error()
                    .and_then(|se| match se {
                        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => {
                            Some(c.cancellation_reasons().iter().map(|r| r.code().map(str::to_owned)).collect())
                        }
                        _ => None,
                    })
                    .unwrap_or_default();
                let failed = |i: usize| {
                    reasons
                        .get(i)
                        .and_then(|c| c.as_deref())
                        .is_some_and(|c| c == "ConditionalCheckFailed")
                };
                if receipt.is_some() && failed(receipt_index) {
                    Err(StoreError::ReceiptExists)
                } else if (0..receipt_index).any(failed) {
                    Err(StoreError::Conflict)
                } else if reasons.iter().flatten().any(|c| c == "TransactionConflict") {
                    // Another transaction touched the same items at the same moment.
                    Err(StoreError::Conflict)
                } else {
                    Err(sdk_error(e))
                }
            }
        }
    }

    async fn receipt(
        &self,
        id: &SessionKey,
        key: &IdempotencyKey,
    ) -> Result<Option<Receipt>, StoreError> {
        let Some(item) = self.get(receipt_key(id, key.as_str())).await? else {
            return Ok(None);
        };
        // DynamoDB's TTL deletes within days, not on the second: expired is gone.
        if count(&item, "expires_at")?.is_some_and(|t| t < epoch_seconds()) {
            return Ok(None);
        }
        let text = |name: &str| match item.get(name) {
            Some(AttributeValue::S(v)) => Ok(v.clone()),
            _ => Err(StoreError::Corrupt(DecodeError::new(format!(
                "the idempotency receipt has no {name}"
            )))),
        };
        Ok(Some(Receipt {
            key: key.clone(),
            message: text("message")?,
            run_id: text("run_id")?,
            reply: text("reply")?,
        }))
    }

    async fn history(&self, id: &SessionKey) -> Result<Option<Vec<Run>>, StoreError> {
        if self.get(id.as_str().to_owned()).await?.is_none() {
            return Ok(None);
        }
        let snapshot = self.load(id).await?;
        let mut runs = Vec::new();
        for chunk in 1..=snapshot.archived {
            let item = self.get(archive_key(id, chunk)).await?.ok_or_else(|| {
                StoreError::Corrupt(DecodeError::new(format!(
                    "archive chunk {chunk} is missing"
                )))
            })?;
            let Some(AttributeValue::S(value)) = item.get("value") else {
                return Err(StoreError::Corrupt(DecodeError::new(format!(
                    "archive chunk {chunk} has no value"
                ))));
            };
            runs.extend(Memory::decode(value).map_err(StoreError::Corrupt)?.runs);
        }
        runs.extend(snapshot.memory.runs);
        Ok(Some(runs))
    }

    async fn delete(&self, id: &SessionKey) -> Result<bool, StoreError> {
        for _ in 0..DELETE_ATTEMPTS {
            let Some(item) = self.get(id.as_str().to_owned()).await? else {
                return Ok(false);
            };
            let archived = count(&item, "archived")?.unwrap_or(0);
            let mut keys: Vec<String> = (1..=archived).map(|c| archive_key(id, c)).collect();
            if let Some(AttributeValue::M(receipts)) = item.get("receipts") {
                keys.extend(receipts.keys().map(|k| receipt_key(id, k)));
            }
            // Archive and receipts first, the session item last: a delete cut short leaves a
            // session that a second delete finishes, never orphans nobody can find.
            for key in keys {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .key("id", s(key))
                    .send()
                    .await
                    .map_err(sdk_error)?;
            }
            // Only if no turn was saved meanwhile (it may have archived more); else go again.
            let mut delete = Delete::builder()
                .table_name(&self.table)
                .key("id", s(id.as_str()));
            delete = match item.get("version") {
                Some(v) => delete
                    .condition_expression("#version = :read")
                    .expression_attribute_names("#version", "version")
                    .expression_attribute_values(":read", v.clone()),
                None => delete
                    .condition_expression("attribute_not_exists(#version)")
                    .expression_attribute_names("#version", "version"),
            };
            let d = delete.build().map_err(|e| StoreError::Failed(e.into()))?;
            let result = self
                .client
                .delete_item()
                .table_name(d.table_name)
                .set_key(Some(d.key))
                .set_condition_expression(d.condition_expression)
                .set_expression_attribute_names(d.expression_attribute_names)
                .set_expression_attribute_values(d.expression_attribute_values)
                .send()
                .await;
            match result {
                Ok(_) => return Ok(true),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
                {
                    continue
                }
                Err(e) => return Err(sdk_error(e)),
            }
        }
        Err(StoreError::Conflict)
    }
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
            )
        ),
        _ => false,
    };
    let detail: BoxError = DisplayErrorContext(&e).to_string().into();
    if transient {
        StoreError::Unavailable(detail)
    } else {
        StoreError::Failed(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(runs: usize, output_bytes: usize) -> Memory {
        let mut m = Memory::default();
        for i in 0..runs {
            m.push(Run::new(format!("message {i}"), "x".repeat(output_bytes)));
        }
        m
    }

    #[test]
    fn small_sessions_are_not_split() {
        let m = memory(10, 100);
        let (recent, chunks) = split_for_size(&m, 64 * 1024);
        assert_eq!(recent, m);
        assert!(chunks.is_empty());
    }

    #[test]
    fn large_sessions_move_their_oldest_runs_to_bounded_chunks() {
        let m = memory(400, 1000); // ~430 KB
        let max = 100 * 1024;
        let (recent, chunks) = split_for_size(&m, max);
        assert!(recent.encode().len() <= max / 2 + 2048);
        assert!(chunks.iter().all(|c| c.encode().len() <= max));
        assert!(chunks.len() >= 4);
        // Nothing lost, order kept: chunks oldest first, then the recent runs.
        let all: Vec<&Run> = chunks
            .iter()
            .flat_map(|c| &c.runs)
            .chain(&recent.runs)
            .collect();
        assert_eq!(all.len(), 400);
        assert!(all.iter().zip(&m.runs).all(|(a, b)| *a == b));
    }

    #[test]
    fn the_newest_run_is_always_kept_even_if_huge() {
        let mut m = memory(3, 10);
        m.push(Run::new("big", "y".repeat(50_000)));
        let (recent, chunks) = split_for_size(&m, 20_000);
        assert_eq!(recent.runs.len(), 1);
        assert_eq!(recent.runs[0].input, "big");
        assert_eq!(chunks.iter().map(|c| c.runs.len()).sum::<usize>(), 3);
    }
}
