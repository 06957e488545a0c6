//! The DynamoDB I/O of the session store. What is written where, and why it is safe, is
//! `docs/storage.md`; the pure parts are in [`super::policy`] and [`super::item`].

use std::borrow::Cow;
use std::error::Error as StdError;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, DeleteRequest, Put, TransactWriteItem, WriteRequest};
use aws_sdk_dynamodb::Client;

use super::attr;
use super::item::{count, decode_session, n, put_layout, s, text, Item, Kept};
use super::layout::{Field, Layout};
use super::policy::{plan_save, NewItem, Removed, PART_MAX_BYTES};
use super::{
    Changes, Cursor, Deleted, HistoryPage, KeySchema, Listed, PageLimit, Receipt, SessionList,
    SessionStore, Snapshot, Span, StoreError, Version,
};
use crate::deadline::{Deadline, CLEANUP_MARGIN};
use crate::input::{IdempotencyKey, SessionKey};
use crate::memory::{Memory, Run};

/// A delete starts over when a turn is saved meanwhile, at most this often.
const DELETE_ATTEMPTS: u32 = 8;
/// Receipts answer retries for this long.
const RECEIPT_TTL_SECS: u64 = 24 * 60 * 60;
/// A call cut off at `stop`; `None` when time ran out.
async fn within<T>(stop: Deadline, call: impl std::future::Future<Output = T>) -> Option<T> {
    stop.bound(call).await.ok()
}

fn out_of_time() -> StoreError {
    StoreError::OutOfTime
}

pub struct DynamoStore {
    client: Client,
    table: String,
    max_item_bytes: usize,
    /// Sessions (and their pages) expire this long after their last save.
    session_ttl_secs: Option<u64>,
    schema: KeySchema,
    /// The global secondary index on `owner_key` and `updated_at`, for listings.
    owner_index: Option<String>,
}

/// Preview of a session in listings: the start of its first message.
pub const PREVIEW_CHARS: usize = 100;

fn epoch_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn epoch_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn built<T, E: StdError + Send + Sync + 'static>(r: Result<T, E>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::Failed(e.into()))
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
        }
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

    async fn snapshot(&self, id: &SessionKey) -> Result<Option<Snapshot>, StoreError> {
        let Some(item) = self.get(id.as_str().to_owned()).await? else {
            return Ok(None);
        };
        let mut snapshot = decode_session(item, &self.schema)?;
        if snapshot.layout.pages.iter().any(|p| p.1 == u64::MAX) {
            self.number_legacy_pages(id, &mut snapshot.layout).await?;
        }
        Ok(Some(snapshot))
    }

    /// Pages written by earlier releases do not say which runs they hold: count them once;
    /// the next save records it.
    async fn number_legacy_pages(
        &self,
        id: &SessionKey,
        layout: &mut Layout,
    ) -> Result<(), StoreError> {
        let mut next = 0;
        for i in 0..layout.pages.len() {
            let page = layout.pages[i].0;
            let runs = self
                .page_runs(id, layout, page)
                .await?
                .ok_or_else(|| StoreError::corrupt(format!("archive page {page} is missing")))?;
            layout.pages[i].1 = next;
            next += runs.len() as u64;
        }
        layout.first_run = next;
        Ok(())
    }

    async fn page_runs(
        &self,
        id: &SessionKey,
        layout: &Layout,
        page: u64,
    ) -> Result<Option<Vec<Run>>, StoreError> {
        let Some(item) = self.get(layout.page_key(id, page)).await? else {
            return Ok(None);
        };
        let value = text(&item, attr::PAGE_VALUE)?
            .ok_or_else(|| StoreError::corrupt(format!("page {page} has no value")))?;
        Ok(Some(
            Memory::decode(value).map_err(StoreError::Corrupt)?.runs,
        ))
    }

    /// The full text of a spilled field, from its parts.
    async fn read_parts(
        &self,
        id: &SessionKey,
        layout: &Layout,
        run_id: &str,
        field: Field,
        parts: u32,
    ) -> Result<Option<String>, StoreError> {
        let mut whole = String::new();
        for part in 1..=parts {
            let Some(item) = self.get(layout.part_key(id, run_id, field, part)).await? else {
                return Ok(None);
            };
            whole.push_str(text(&item, attr::TEXT)?.unwrap_or(""));
        }
        Ok(Some(whole))
    }

    /// Gives a spilled run its full texts back; `None` if a part is gone (the session was
    /// deleted meanwhile).
    async fn unspill(
        &self,
        id: &SessionKey,
        layout: &Layout,
        run: &mut Run,
    ) -> Result<Option<()>, StoreError> {
        let Some(spill) = layout.spilled.get(&run.id).copied() else {
            return Ok(Some(()));
        };
        if spill.input_parts > 0 {
            match self
                .read_parts(id, layout, &run.id, Field::Input, spill.input_parts)
                .await?
            {
                Some(t) => run.input = t,
                None => return Ok(None),
            }
        }
        if spill.output_parts > 0 {
            match self
                .read_parts(id, layout, &run.id, Field::Output, spill.output_parts)
                .await?
            {
                Some(t) => run.output = t,
                None => return Ok(None),
            }
        }
        Ok(Some(()))
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

    /// Deletes items in batches of 25 until done or the deadline; `true` when all are gone.
    async fn delete_keys(&self, keys: Vec<String>, deadline: Deadline) -> Result<bool, StoreError> {
        let stop = deadline.less(CLEANUP_MARGIN);
        let mut pending: Vec<WriteRequest> = Vec::with_capacity(keys.len());
        for key in keys {
            let delete = built(
                DeleteRequest::builder()
                    .set_key(Some(self.schema.key(key)))
                    .build(),
            )?;
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
            let out = out.map_err(sdk_error)?;
            let unprocessed = out
                .unprocessed_items
                .and_then(|mut m| m.remove(&self.table))
                .unwrap_or_default();
            if !unprocessed.is_empty() {
                pending.extend(unprocessed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
        Ok(true)
    }

    /// Removes the side items of deleted generations; `true` when all are gone.
    async fn clean(
        &self,
        id: &SessionKey,
        layouts: &[Layout],
        deadline: Deadline,
    ) -> Result<bool, StoreError> {
        let keys: Vec<String> = layouts.iter().flat_map(|l| l.side_keys(id)).collect();
        self.delete_keys(keys, deadline).await
    }

    fn receipt_put(
        &self,
        id: &SessionKey,
        layout: &Layout,
        r: &Receipt,
        now: u64,
    ) -> Result<Put, StoreError> {
        let mut item = self.schema.key(layout.receipt_key(id, &r.key));
        item.insert(attr::MESSAGE_DIGEST.into(), s(r.message_digest.as_str()));
        item.insert(attr::RUN_ID.into(), s(r.run_id.as_str()));
        item.insert(attr::CREATED_AT.into(), n(now));
        item.insert(attr::EXPIRES_AT.into(), n(now + RECEIPT_TTL_SECS));
        built(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                // An expired receipt (TTL deletes lazily) is as good as none.
                .condition_expression("attribute_not_exists(#pk) OR #e < :now")
                .expression_attribute_names("#pk", &self.schema.partition_key)
                .expression_attribute_names("#e", attr::EXPIRES_AT)
                .expression_attribute_values(":now", n(now))
                .build(),
        )
    }

    /// The run with this id, whole, from the item or (newest first) its pages.
    async fn find_run(
        &self,
        id: &SessionKey,
        read: &Snapshot,
        run_id: &str,
    ) -> Result<Option<Run>, StoreError> {
        let mut found = read.memory.runs.iter().find(|r| r.id == run_id).cloned();
        if found.is_none() {
            for (page, _) in read.layout.pages.iter().rev() {
                let runs = self.page_runs(id, &read.layout, *page).await?;
                if let Some(run) = runs.into_iter().flatten().find(|r| r.id == run_id) {
                    found = Some(run);
                    break;
                }
            }
        }
        let Some(mut run) = found else {
            return Ok(None);
        };
        Ok(self
            .unspill(id, &read.layout, &mut run)
            .await?
            .map(|()| run))
    }
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn load(&self, id: &SessionKey) -> Result<Snapshot, StoreError> {
        Ok(self
            .snapshot(id)
            .await?
            .unwrap_or_else(Snapshot::new_session))
    }

    async fn save(
        &self,
        id: &SessionKey,
        changes: Changes<'_>,
        read: &Snapshot,
    ) -> Result<(), StoreError> {
        let read_ids: Vec<&str> = read.memory.runs.iter().map(|r| r.id.as_str()).collect();
        let mut plan = plan_save(&read.layout, &read_ids, changes.memory, self.max_item_bytes)?;
        let now = epoch_seconds();
        let expires_at = self.session_ttl_secs.map(|ttl| now + ttl);

        // Side items never expire before their session: they get half a TTL more, and are
        // pushed out again before the session's expiry could pass theirs. With TTL off they
        // stop expiring.
        let side_expires_at = self.session_ttl_secs.map(|ttl| now + ttl + ttl / 2);
        match (expires_at, side_expires_at) {
            (Some(e), Some(side)) => {
                let due = read.layout.archive_expires_at.is_none_or(|t| t < e);
                if read.layout.has_side_items() && due {
                    self.set_expiry(&read.layout.side_keys(id), Some(side))
                        .await?;
                    plan.layout.archive_expires_at = Some(side);
                } else if plan.layout.archive_expires_at.is_none() {
                    plan.layout.archive_expires_at = Some(side);
                }
            }
            _ => {
                if read.layout.archive_expires_at.is_some() {
                    self.set_expiry(&read.layout.side_keys(id), None).await?;
                }
                plan.layout.archive_expires_at = None;
            }
        }

        let (condition, next) = match read.version {
            Version::New => ("attribute_not_exists(#pk)", 1),
            Version::Unversioned => (
                "attribute_exists(#pk) AND attribute_not_exists(#version)",
                1,
            ),
            Version::At(v) => ("#version = :read", v + 1),
        };
        // The whole item is written, starting from every attribute as read, so attributes
        // other tools keep survive; the version condition makes that safe.
        let mut item = read
            .foreign
            .get::<Kept>()
            .map(|k| k.0.clone())
            .unwrap_or_default();
        item.extend(self.schema.key(id.as_str()));
        item.insert(
            self.schema.value_attribute.clone(),
            s(std::mem::take(&mut plan.value)),
        );
        item.insert(attr::VERSION.into(), n(next));
        // What a listing shows: whose session, which, how long, how it began, its title.
        if let Some(owner) = read.owner.as_deref().or(changes.owner) {
            item.insert(attr::OWNER_KEY.into(), s(owner));
        }
        item.insert(attr::SESSION_ID.into(), s(id.session_id()));
        item.insert(attr::RUN_COUNT.into(), n(plan.runs_kept));
        let preview = read.preview.clone().or_else(|| {
            let first = changes.memory.runs.first()?;
            Some(first.input.chars().take(PREVIEW_CHARS).collect())
        });
        if let Some(preview) = preview {
            item.insert(attr::PREVIEW.into(), s(preview));
        }
        if let Some(title) = &read.title {
            item.insert(attr::TITLE.into(), s(title.as_str()));
        }
        put_layout(&mut item, &plan.layout);
        item.insert(attr::UPDATED_AT.into(), n(now));
        item.insert(attr::ACTIVE_MS.into(), n(epoch_millis()));
        item.entry(attr::CREATED_AT.into())
            .or_insert_with(|| n(now));
        match expires_at {
            Some(e) => item.insert(attr::EXPIRES_AT.into(), n(e)),
            None => item.remove(attr::EXPIRES_AT),
        };
        let summary = changes.summary.or(read.summary.as_ref());
        if let Some(summary) = summary {
            item.insert(attr::SUMMARY.into(), s(summary.text.as_str()));
            item.insert(attr::SUMMARY_THROUGH.into(), s(summary.through.as_str()));
        }
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition);
        put = match read.version {
            Version::New => put.expression_attribute_names("#pk", &self.schema.partition_key),
            Version::Unversioned => put
                .expression_attribute_names("#pk", &self.schema.partition_key)
                .expression_attribute_names("#version", attr::VERSION),
            Version::At(_) => put.expression_attribute_names("#version", attr::VERSION),
        };
        if let Version::At(v) = read.version {
            put = put.expression_attribute_values(":read", n(v));
        }
        let put = built(put.build())?;

        if plan.new_items.is_empty() && plan.removed.is_empty() && changes.receipt.is_none() {
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
                Err(e) if is_condition_failure(&e) => Err(StoreError::Conflict),
                Err(e) => Err(sdk_error(e)),
            };
        }

        let layout = &plan.layout;
        let mut items = vec![TransactWriteItem::builder().put(put).build()];
        for new in &plan.new_items {
            let key = match new {
                NewItem::Page { page, .. } => layout.page_key(id, *page),
                NewItem::Part {
                    run_id,
                    field,
                    part,
                    ..
                } => layout.part_key(id, run_id, *field, *part),
            };
            let mut side = Put::builder()
                .table_name(&self.table)
                .set_item(Some(self.schema.key(key)))
                .item(attr::CREATED_AT, n(now));
            side = match new {
                NewItem::Page { first, value, .. } => side
                    .item(attr::KIND, s(attr::KIND_RUNS))
                    .item(attr::FIRST, n(*first))
                    .item(attr::PAGE_VALUE, s(value.as_str())),
                NewItem::Part {
                    run_id,
                    field,
                    text,
                    ..
                } => side
                    .item(attr::KIND, s(attr::KIND_PART))
                    .item(attr::RUN, s(run_id.as_str()))
                    .item(attr::FIELD, s(field.name()))
                    .item(attr::TEXT, s(text.as_str())),
            };
            if let Some(e) = side_expires_at {
                side = side.item(attr::EXPIRES_AT, n(e));
            }
            items.push(
                TransactWriteItem::builder()
                    .put(built(side.build())?)
                    .build(),
            );
        }
        for removed in &plan.removed {
            let key = match removed {
                Removed::Page(page) => layout.page_key(id, *page),
                Removed::Part {
                    run_id,
                    field,
                    part,
                } => layout.part_key(id, run_id, *field, *part),
            };
            let delete = built(
                Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(self.schema.key(key)))
                    .build(),
            )?;
            items.push(TransactWriteItem::builder().delete(delete).build());
        }
        let receipt_index = items.len();
        if let Some(r) = changes.receipt {
            let put = self.receipt_put(id, layout, r, now)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        // DynamoDB answers a retried transaction with the same token as the first (for ten
        // minutes), so a retry after a lost answer is not a conflict there.
        let token = layout.last_runs.last().map(|run| {
            let version = match read.version {
                Version::At(v) => v,
                _ => 0,
            };
            format!("{}{:x}", &run[..run.len().min(20)], version)
        });
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .set_client_request_token(token)
            .send()
            .await
        {
            Ok(_) => {
                if plan.archived_runs > 0 {
                    tracing::info!(session_id = %id, runs = plan.archived_runs, pages = layout.pages.len(), "moved old runs to pages");
                }
                Ok(())
            }
            Err(e) => {
                let reasons: Vec<Option<String>> = match e.as_service_error() {
                    Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                };
                let failed = |i: usize| {
                    reasons
                        .get(i)
                        .and_then(|c| c.as_deref())
                        .is_some_and(|c| c == "ConditionalCheckFailed")
                };
                if changes.receipt.is_some() && failed(receipt_index) && !failed(0) {
                    Err(StoreError::ReceiptExists)
                } else if failed(0) || reasons.iter().flatten().any(|c| c == "TransactionConflict")
                {
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
        read: &Snapshot,
        key: &IdempotencyKey,
    ) -> Result<Option<Receipt>, StoreError> {
        if read.fresh {
            // A receipt belongs to a generation; a fresh session has none yet.
            return Ok(None);
        }
        let Some(item) = self.get(read.layout.receipt_key(id, key)).await? else {
            return Ok(None);
        };
        // DynamoDB's TTL deletes within days, not on the second: expired is gone.
        if count(&item, attr::EXPIRES_AT)?.is_some_and(|t| t < epoch_seconds()) {
            return Ok(None);
        }
        let field = |name: &str| {
            text(&item, name)?.map(str::to_owned).ok_or_else(|| {
                StoreError::corrupt(format!("the idempotency receipt has no {name}"))
            })
        };
        let run_id = field(attr::RUN_ID)?;
        let message_digest = field(attr::MESSAGE_DIGEST)?;
        // The reply is the run's: a run since dropped (MAX_RUNS) leaves nothing to replay, and
        // the key counts as new.
        let Some(run) = self.find_run(id, read, &run_id).await? else {
            return Ok(None);
        };
        Ok(Some(Receipt {
            key: key.clone(),
            message_digest,
            run_id,
            reply: run.output,
        }))
    }

    async fn history(
        &self,
        id: &SessionKey,
        span: Span<'_>,
        limit: PageLimit,
    ) -> Result<Option<HistoryPage>, StoreError> {
        let Some(snapshot) = self.snapshot(id).await? else {
            return Ok(None);
        };
        if snapshot.fresh {
            return Ok(None);
        }
        let layout = &snapshot.layout;
        let (Span::From(cursor) | Span::Before(cursor)) = span;
        if cursor.is_some_and(|c| c.generation != layout.generation) {
            return Err(StoreError::InvalidCursor);
        }
        let end = layout.first_run + snapshot.memory.runs.len() as u64;
        let keep_from = snapshot
            .memory
            .max_runs
            .map_or(0, |max| end.saturating_sub(max));
        // The run numbers the page may hold, [start, stop): forward pages fill from `start`
        // and stop when full; backward pages take the `limit.runs` runs before `stop`, then
        // drop the oldest while over the byte budget.
        let forward = matches!(span, Span::From(_));
        let (start, stop) = if forward {
            (cursor.map_or(0, |c| c.run).max(keep_from), end)
        } else {
            let stop = cursor.map_or(end, |c| c.run.min(end));
            let start = stop.saturating_sub(limit.runs as u64).max(keep_from);
            (start, stop)
        };
        let mut runs: Vec<(u64, Run)> = Vec::new();
        let mut bytes = 0;
        let mut next = None;
        let size = |run: &Run| {
            let spill = layout.spilled.get(&run.id).map_or(0, |s| {
                (s.input_parts + s.output_parts) as usize * PART_MAX_BYTES
            });
            run.input.len() + run.output.len() + spill + 96
        };
        // Takes run `number` into the page if it is in range; `true` once the page is full
        // (forward reads stop at the limit, backward ones are cut from the front below).
        let mut offer = |number: u64, run: Cow<'_, Run>| {
            if number < start || number >= stop {
                return false;
            }
            let full =
                forward && (runs.len() >= limit.runs || (bytes >= limit.bytes && !runs.is_empty()));
            if full {
                next = Some(number);
                return true;
            }
            bytes += size(&run);
            runs.push((number, run.into_owned()));
            false
        };
        let mut page_full = false;
        'pages: for (i, (page, first)) in layout.pages.iter().enumerate() {
            if layout.page_end(i) <= start || *first >= stop {
                continue;
            }
            let Some(page_runs) = self.page_runs(id, layout, *page).await? else {
                // Gone: a delete got here first, unless the session is corrupt.
                return match self.snapshot(id).await? {
                    Some(now) if !now.fresh && now.layout.generation == layout.generation => {
                        Err(StoreError::corrupt(format!("page {page} is missing")))
                    }
                    _ => Ok(None),
                };
            };
            for (j, run) in page_runs.into_iter().enumerate() {
                if offer(first + j as u64, Cow::Owned(run)) {
                    page_full = true;
                    break 'pages;
                }
            }
        }
        if !page_full {
            for (j, run) in snapshot.memory.runs.iter().enumerate() {
                if offer(layout.first_run + j as u64, Cow::Borrowed(run)) {
                    break;
                }
            }
        }
        if !forward {
            let mut drop = 0;
            while runs.len() - drop > 1 && bytes > limit.bytes {
                bytes -= size(&runs[drop].1);
                drop += 1;
            }
            runs.drain(..drop);
            next = (stop < end).then_some(stop);
        }
        let first = runs.first().map_or(start, |(number, _)| *number);
        let mut runs: Vec<Run> = runs.into_iter().map(|(_, run)| run).collect();
        for run in &mut runs {
            if self.unspill(id, layout, run).await?.is_none() {
                return Ok(None);
            }
        }
        let at = |run| Cursor {
            generation: layout.generation.clone(),
            run,
        };
        Ok(Some(HistoryPage {
            runs,
            next: next.map(at),
            prev: (first > keep_from).then(|| at(first)),
        }))
    }

    async fn list(
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

    async fn set_title(&self, id: &SessionKey, title: &str) -> Result<bool, StoreError> {
        // Bumps the version, so a turn saving over what it read before the title starts over.
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(id.as_str())))
            .update_expression("SET #title = :t, #version = if_not_exists(#version, :zero) + :one")
            .condition_expression("attribute_exists(#pk) AND attribute_not_exists(#t)")
            .expression_attribute_names("#title", attr::TITLE)
            .expression_attribute_names("#t", attr::TOMBSTONE)
            .expression_attribute_names("#pk", &self.schema.partition_key)
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_values(":t", s(title))
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

    async fn delete(&self, id: &SessionKey, deadline: Deadline) -> Result<Deleted, StoreError> {
        // Until the tombstone is written an error leaves the session whole; after it, the
        // session is gone and what is left of the cleanup is for a repeated delete.
        let stop = deadline.less(CLEANUP_MARGIN);
        for _ in 0..DELETE_ATTEMPTS {
            let read = within(stop, self.get(id.as_str().to_owned())).await;
            let Some(item) = read.ok_or_else(out_of_time)?? else {
                return Ok(Deleted::NotFound);
            };
            let version = count(&item, attr::VERSION)?;
            let format = match text(&item, &self.schema.value_attribute)?.map(Memory::decode) {
                Some(Ok(m)) => m.format,
                _ => Default::default(),
            };
            let tombstone = item.contains_key(attr::TOMBSTONE);
            // The layout, even of an item whose value is corrupt: a corrupt session can be
            // deleted.
            let mut readable = item;
            let owner = text(&readable, attr::OWNER_KEY)?.map(str::to_owned);
            readable.insert(
                self.schema.value_attribute.clone(),
                s(Memory::new(format).encode()),
            );
            let snapshot = decode_session(readable, &self.schema)?;
            let owed = if tombstone {
                snapshot.layout.cleanup.clone()
            } else {
                let mut owed = snapshot.layout.cleanup.clone();
                let mut current = snapshot.layout.clone();
                current.cleanup.clear();
                owed.push(current);
                owed
            };
            let tomb_version = if tombstone {
                version.unwrap_or(0)
            } else {
                // First the root becomes a tombstone: from here the session is gone for every
                // reader, and the tombstone remembers what is left to remove. Its value is an
                // empty memory, so griptape reads an empty session, not an error.
                let next = version.map_or(1, |v| v + 1);
                let mut tomb = self.schema.key(id.as_str());
                tomb.insert(
                    self.schema.value_attribute.clone(),
                    s(Memory::new(format).encode()),
                );
                tomb.insert(attr::VERSION.into(), n(next));
                tomb.insert(attr::TOMBSTONE.into(), n(epoch_seconds()));
                // Still found by its owner's erase, which finishes an unfinished cleanup.
                if let Some(owner) = owner {
                    tomb.insert(attr::OWNER_KEY.into(), s(owner));
                    tomb.insert(attr::ACTIVE_MS.into(), n(epoch_millis()));
                    tomb.insert(attr::SESSION_ID.into(), s(id.session_id()));
                }
                let mut layout = Layout::empty(snapshot.layout.generation.clone());
                layout.cleanup = owed.clone();
                put_layout(&mut tomb, &layout);
                let mut put = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(tomb))
                    .expression_attribute_names("#version", attr::VERSION);
                put = match version {
                    Some(v) => put
                        .condition_expression("#version = :read")
                        .expression_attribute_values(":read", n(v)),
                    None => put
                        .condition_expression(
                            "attribute_exists(#pk) AND attribute_not_exists(#version)",
                        )
                        .expression_attribute_names("#pk", &self.schema.partition_key),
                };
                match within(stop, put.send()).await.ok_or_else(out_of_time)? {
                    Ok(_) => next,
                    Err(e) if is_condition_failure(&e) => {
                        // A turn saved meanwhile: let the writers' burst pass, then again.
                        let jitter = rand::random_range(5..=40);
                        tokio::time::sleep(Duration::from_millis(jitter)).await;
                        continue;
                    }
                    Err(e) => return Err(sdk_error(e)),
                }
            };
            match self.clean(id, &owed, deadline).await {
                Ok(true) => {}
                Ok(false) => return Ok(Deleted::Gone { complete: false }),
                Err(e) => {
                    tracing::warn!(session_id = %id, error = %crate::error::chain(&e), "the session is deleted; its cleanup stopped and goes on at the next delete");
                    return Ok(Deleted::Gone { complete: false });
                }
            }
            let call = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(self.schema.key(id.as_str())))
                .condition_expression("#version = :v AND attribute_exists(#t)")
                .expression_attribute_names("#t", attr::TOMBSTONE)
                .expression_attribute_names("#version", attr::VERSION)
                .expression_attribute_values(":v", n(tomb_version))
                .send();
            return match within(stop, call).await {
                // A turn made a new session over the tombstone meanwhile: it carries the
                // (now done) cleanup list, harmlessly.
                Some(Ok(_)) => Ok(Deleted::Gone { complete: true }),
                Some(Err(e)) if is_condition_failure(&e) => Ok(Deleted::Gone { complete: true }),
                // The tombstone stays; a repeated delete removes it.
                Some(Err(_)) | None => Ok(Deleted::Gone { complete: false }),
            };
        }
        Err(StoreError::Conflict)
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

impl DynamoStore {
    /// `<updated_at>.<percent-encoded key>`: where a listing page ended.
    fn list_cursor(&self, last: &Item) -> Option<String> {
        let key = self.schema.key_of(last)?;
        let updated = last.get(attr::ACTIVE_MS)?.as_n().ok()?;
        Some(format!("{updated}.{}", crate::input::encode_component(key)))
    }

    fn list_start(&self, owner: &str, cursor: &str) -> Result<Item, StoreError> {
        let bad = || StoreError::InvalidCursor;
        let (updated, key) = cursor.split_once('.').ok_or_else(bad)?;
        let updated: u64 = updated.parse().map_err(|_| bad())?;
        let key = percent_encoding::percent_decode_str(key)
            .decode_utf8()
            .map_err(|_| bad())?;
        let mut start = self.schema.key(key.into_owned());
        start.insert(attr::OWNER_KEY.into(), s(owner));
        start.insert(attr::ACTIVE_MS.into(), n(updated));
        Ok(start)
    }
}

/// A session as the owner index lists it.
fn listed(schema: &KeySchema, item: &Item) -> Option<Listed> {
    let key = schema.key_of(item)?.to_owned();
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
    };
    let string = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    Some(Listed {
        session_id: string(attr::SESSION_ID)
            .unwrap_or_else(|| key.rsplit('/').next().unwrap_or(&key).to_owned()),
        key,
        created_at: number(attr::CREATED_AT).unwrap_or(0),
        updated_at: number(attr::UPDATED_AT).unwrap_or(0),
        runs: number(attr::RUN_COUNT).unwrap_or(0),
        preview: string(attr::PREVIEW),
        title: string(attr::TITLE),
        deleted: item.contains_key(attr::TOMBSTONE),
    })
}
