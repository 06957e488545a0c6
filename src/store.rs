//! Where sessions live: the [`SessionStore`] trait and its DynamoDB implementation.
//!
//! Item layout (one item per session, the seed's):
//! - `id` (S): the session id, the table's partition key;
//! - `value` (S): the memory JSON, see [`crate::memory`];
//! - `version` (N): bumped by every save; saves are conditional on the version read, so two
//!   writers can never overwrite each other's runs;
//! - `created_at`, `updated_at` (N): epoch seconds.
//!
//! Items written by the Python original have no `version`; the first save here adds it.

use std::error::Error as StdError;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use crate::input::SessionId;
use crate::memory::{DecodeError, Memory};

/// The version of a session as it was read; a save succeeds only if it is still the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// No item yet.
    New,
    /// An item without a version attribute (written by the Python original).
    Unversioned,
    At(u64),
}

/// A session as read from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub memory: Memory,
    pub version: Version,
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer saved the session since it was read; read again and retry.
    #[error("the session changed since it was read")]
    Conflict,
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
    async fn load(&self, id: &SessionId) -> Result<Snapshot, StoreError>;

    /// Saves `memory` if the session is still at `read`, else [`StoreError::Conflict`].
    async fn save(&self, id: &SessionId, memory: &Memory, read: Version) -> Result<(), StoreError>;
}

pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
        }
    }
}

fn epoch_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn load(&self, id: &SessionId) -> Result<Snapshot, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(id.as_str().to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        let Some(item) = out.item else {
            return Ok(Snapshot {
                memory: Memory::default(),
                version: Version::New,
            });
        };
        let value = match item.get("value") {
            Some(AttributeValue::S(text)) => text,
            _ => {
                return Err(StoreError::Corrupt(DecodeError::new(
                    "the item has no string attribute \"value\"",
                )))
            }
        };
        let memory = Memory::decode(value).map_err(StoreError::Corrupt)?;
        let version = match item.get("version") {
            None => Version::Unversioned,
            Some(AttributeValue::N(n)) => Version::At(n.parse().map_err(|_| {
                StoreError::Corrupt(DecodeError::new("the item's version is not a count"))
            })?),
            Some(_) => {
                return Err(StoreError::Corrupt(DecodeError::new(
                    "the item's version is not a number",
                )))
            }
        };
        Ok(Snapshot { memory, version })
    }

    async fn save(&self, id: &SessionId, memory: &Memory, read: Version) -> Result<(), StoreError> {
        let (condition, next) = match read {
            Version::New => ("attribute_not_exists(id)", 1),
            Version::Unversioned => ("attribute_exists(id) AND attribute_not_exists(#version)", 1),
            Version::At(v) => ("#version = :read", v + 1),
        };
        let now = AttributeValue::N(epoch_seconds().to_string());
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(id.as_str().to_owned()))
            .update_expression(
                "SET #value = :value, #version = :next, updated_at = :now, \
                 created_at = if_not_exists(created_at, :now)",
            )
            .condition_expression(condition)
            .expression_attribute_names("#value", "value")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":value", AttributeValue::S(memory.encode()))
            .expression_attribute_values(":next", AttributeValue::N(next.to_string()))
            .expression_attribute_values(":now", now);
        if let Version::At(v) = read {
            update = update.expression_attribute_values(":read", AttributeValue::N(v.to_string()));
        }
        match update.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict)
            }
            Err(e) => Err(sdk_error(e)),
        }
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
