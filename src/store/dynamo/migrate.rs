//! Moving runs into the log (docs/storage.md, "Migration and griptape's writes"): a session of
//! the item shape (griptape's, the Python original's, an earlier release's) on its first turn
//! or edit, and the runs griptape wrote over a session's view. Each is one transaction
//! conditional on the session item as read, so nothing is moved twice and a write that came in
//! between is never lost. Reading the item shape itself is [`crate::store::item`]'s and
//! `read`'s.

use std::collections::HashSet;

use aws_sdk_dynamodb::types::{Put, TransactWriteItem};

use super::begin::Reserved;
use super::{built, is_cancelled, sdk_error, DynamoStore};
use crate::input::SessionKey;
use crate::memory::{new_run_id, Memory, Run};
use crate::store::item::{count, n, preview_of, put_layout, s, text, Item, Now};
use crate::store::layout::Layout;
use crate::store::log::{adopted, migrated_to_page, view, Head};
use crate::store::{attr, StoreError};

/// Largest run a migrated slot holds: whatever a session item held fits its own item.
const MIGRATED_SLOT_BYTES: usize = 400_000;

impl DynamoStore {
    /// The session item, when it is of the item shape, moved into the log: `false` when there
    /// is nothing to move (no session item, a tombstone, or a session in the log already).
    pub(super) async fn migrate_item_shaped(
        &self,
        session: &SessionKey,
    ) -> Result<bool, StoreError> {
        let Some(root) = self.get(session.as_str().to_owned()).await? else {
            return Ok(false);
        };
        if root.contains_key(attr::LOG) || root.contains_key(attr::TOMBSTONE) {
            return Ok(false);
        }
        self.migrate(session, root).await.map(|()| true)
    }

    /// Migrates a session item of the item shape that has no head with a counted slot: its
    /// runs go into slots numbered as its runs were (cursors stay valid, pages keep the older
    /// runs; an earlier release's pages are counted first), the oldest beyond one transaction
    /// into one more page. Refused (another turn moved it first, or a writer changed the item),
    /// nothing changes and the caller reads again.
    pub(super) async fn migrate(&self, session: &SessionKey, root: Item) -> Result<(), StoreError> {
        let seen = self.value_of(&root)?.to_owned();
        let version = count(&root, attr::VERSION)?;
        let read = self.decoded(session, root.clone()).await?;
        let mut layout = read.layout.clone();
        let runs = &read.memory.runs;
        let to_page = migrated_to_page(runs.len());
        let first = layout.first_run;
        let now = Now::current();
        let mut items = Vec::new();
        if to_page > 0 {
            let page = layout.pages_next;
            layout.pages.push((page, first));
            layout.pages_next += 1;
            let mut item = self.schema.key(layout.page_key(session, page));
            item.insert(attr::KIND.into(), s(attr::KIND_RUNS));
            item.insert(attr::FIRST.into(), n(first));
            let older = read.memory.with_runs(runs[..to_page].to_vec()).encode();
            item.insert(attr::PAGE_VALUE.into(), s(older));
            item.insert(attr::CREATED_AT.into(), n(now.secs));
            if let Some(expires) = layout.archive_expires_at {
                item.insert(attr::EXPIRES_AT.into(), n(expires));
            }
            items.push(self.put_new(item)?);
        }
        let base = first + to_page as u64;
        layout.first_run = base;
        let slotted = &runs[to_page..];
        let slot_of = |id: &str| {
            let i = slotted.iter().position(|r| r.id == id)?;
            Some(base + i as u64)
        };
        let generation = layout.generation.clone();
        for (i, run) in slotted.iter().enumerate() {
            let slot = (generation.as_str(), base + i as u64, now.millis);
            let item = self.run_item(session, slot, &read.memory, run, MIGRATED_SLOT_BYTES)?;
            items.push(self.put_new(item)?);
        }
        if let Some(summary) = &read.summary {
            let through = slot_of(&summary.through).unwrap_or(base);
            let item = self.summary_item(session, &generation, summary, through);
            items.push(self.put_new(item)?);
        }
        let head = Head {
            base,
            next: base + slotted.len() as u64,
            done: slotted.len() as u64,
            reserved_ms: now.millis,
            window_from: read
                .window_from
                .as_deref()
                .and_then(slot_of)
                .unwrap_or(base),
            viewed: true,
            ..Head::empty(generation.clone())
        };
        // Over no head, or the head a turn's reservation made before it found this item (no
        // slot of it counted done): its turns reserve again in this one.
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.head_item(session, &head, now)))
            .condition_expression("attribute_not_exists(#pk) OR #d = :zero")
            .expression_attribute_names("#pk", &self.schema.partition_key)
            .expression_attribute_names("#d", attr::DONE)
            .expression_attribute_values(":zero", n(0));
        items.push(
            TransactWriteItem::builder()
                .put(built(put.build())?)
                .build(),
        );
        let shown = view(
            &read.memory,
            slotted,
            self.view_bytes,
            self.max_item_bytes / 2,
        );
        let through = head.next.checked_sub(1).filter(|t| *t >= base);
        let root = self.migrated_root(session, (root, &seen, version), &layout, &shown, through);
        items.push(root?);
        tracing::info!(session_id = %session, runs = runs.len(), paged = to_page, "moving a session of the item shape into the log");
        self.transact_all(items).await.map(drop)
    }

    /// The session item after a migration: the view of the slotted runs, its bookkeeping kept
    /// for the pages, written only over the item as read.
    pub(super) fn migrated_root(
        &self,
        session: &SessionKey,
        (root, seen, version): (Item, &str, Option<u64>),
        layout: &Layout,
        shown: &Memory,
        through: Option<u64>,
    ) -> Result<TransactWriteItem, StoreError> {
        let now = Now::current();
        let mut item = root;
        put_layout(&mut item, layout);
        for name in [
            attr::LAST_RUNS,
            // An earlier release's: its pages are numbered now, its receipts expire by themselves.
            attr::LEGACY_ARCHIVED,
            attr::LEGACY_RECEIPTS,
            attr::SUMMARY,
            attr::SUMMARY_THROUGH,
            attr::WINDOW_FROM,
        ] {
            item.remove(name);
        }
        item.insert(attr::VERSION.into(), n(version.map_or(1, |v| v + 1)));
        // Griptape's item counts none yet: every run, pages included.
        let runs = through.map_or(layout.first_run, |t| t + 1);
        item.entry(attr::RUN_COUNT.into())
            .or_insert_with(|| n(runs));
        if let (false, Some(first)) = (item.contains_key(attr::PREVIEW), shown.runs.first()) {
            item.insert(attr::PREVIEW.into(), s(preview_of(&first.input)));
        }
        item.entry(attr::CREATED_AT.into())
            .or_insert_with(|| n(now.secs));
        let last = shown.runs.last().map(|r| r.id.as_str());
        self.mark_view(&mut item, session, (shown.encode(), last), through);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .expression_attribute_names("#val", &self.schema.value_attribute)
            .expression_attribute_names("#ver", attr::VERSION)
            .expression_attribute_values(":seen", s(seen));
        let put = match version {
            Some(v) => put
                .condition_expression("#val = :seen AND #ver = :ver")
                .expression_attribute_values(":ver", n(v)),
            None => put.condition_expression("#val = :seen AND attribute_not_exists(#ver)"),
        };
        Ok(TransactWriteItem::builder()
            .put(built(put.build())?)
            .build())
    }

    /// Griptape wrote over a log session's view (`UpdateItem` of `value`, or a `PutItem` of the
    /// recipe's item): the runs it added, after the view's newest, take slots of their own, in
    /// one transaction conditional on the item as read. `held`: the run ids the turn read.
    pub(super) async fn adopt(
        &self,
        session: &SessionKey,
        root: Item,
        head: &Head,
        held: Option<&HashSet<&str>>,
    ) -> Result<(), StoreError> {
        let seen = self.value_of(&root)?.to_owned();
        let memory = Memory::decode(&seen).map_err(StoreError::Corrupt)?;
        let view_last = text(&root, attr::VIEW_LAST)?;
        let new = adopted(&memory.runs, view_last, held);
        let all = new.last().map(|r| r.id.as_str()) == memory.runs.last().map(|r| r.id.as_str());
        let token = new_run_id();
        let first = if new.is_empty() {
            head.next
        } else {
            match self.reserve(session, &token, new.len() as u64).await? {
                Reserved::Slot(_, first) => first,
                // Closed or replaced meanwhile: the turn begins again and sees why.
                Reserved::Refused(_) => return Ok(()),
            }
        };
        let now = Now::current();
        let mut items = Vec::new();
        for (i, run) in new.iter().enumerate() {
            let slot = (head.generation.as_str(), first + i as u64, now.millis);
            let item = self.run_item(session, slot, &memory, run, MIGRATED_SLOT_BYTES)?;
            items.push(self.put_new(item)?);
        }
        let last = first + new.len() as u64;
        items.push(self.adopted_root(session, root, head, (&seen, new, all), last)?);
        tracing::info!(session_id = %session, runs = new.len(), "continuing runs griptape wrote over the view");
        let landed = self.transact_all(items).await?;
        if new.is_empty() {
            return Ok(());
        }
        let holes = if landed {
            0
        } else {
            // Another turn adopted them, or the item changed: these slots hold nothing.
            for slot in first..last {
                self.put_hole(session, &head.generation, slot, now.millis)
                    .await?;
            }
            new.len() as u64
        };
        self.count_done(
            session,
            &head.generation,
            (new.len() as u64, holes),
            Some(&token),
        )
        .await
        .map(|_| ())
    }

    /// The session item's write in an adoption: griptape's `value` kept as it is (its bytes),
    /// now a view through the adopted runs; over griptape's `PutItem`, our bookkeeping again.
    pub(super) fn adopted_root(
        &self,
        session: &SessionKey,
        root: Item,
        head: &Head,
        (seen, new, all): (&str, &[Run], bool),
        last: u64,
    ) -> Result<TransactWriteItem, StoreError> {
        let ours = root.contains_key(attr::LOG);
        let old_size = count(&root, attr::VIEW_SIZE)?;
        let old_through = count(&root, attr::VIEW_THROUGH)?;
        let mut item = root;
        let through = new.last().map(|_| last - 1).or(old_through);
        let newest = new.last().map(|r| r.id.as_str());
        let newest = newest.or(text(&item, attr::VIEW_LAST)?.filter(|_| ours));
        let newest = newest.map(str::to_owned);
        self.mark_view(
            &mut item,
            session,
            (seen.to_owned(), newest.as_deref()),
            through,
        );
        if !all {
            // More to adopt than one transaction holds: the next turn takes the rest.
            item.insert(attr::VIEW_SIZE.into(), n(u64::MAX));
        }
        item.insert(attr::GENERATION.into(), s(head.generation.as_str()));
        let before = match count(&item, attr::RUN_COUNT)? {
            Some(kept) if ours => kept,
            _ => head.done.saturating_sub(head.holes),
        };
        let kept = before + new.len() as u64;
        item.insert(attr::RUN_COUNT.into(), n(kept));
        let version = count(&item, attr::VERSION)?.unwrap_or(0);
        item.insert(attr::VERSION.into(), n(version + 1));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .expression_attribute_names("#val", &self.schema.value_attribute)
            .expression_attribute_names("#vs", attr::VIEW_SIZE)
            .expression_attribute_values(":seen", s(seen));
        let put = match (ours, old_size) {
            (true, Some(size)) => put
                .condition_expression("#val = :seen AND #vs = :vs")
                .expression_attribute_values(":vs", n(size)),
            _ => put.condition_expression("#val = :seen AND attribute_not_exists(#vs)"),
        };
        Ok(TransactWriteItem::builder()
            .put(built(put.build())?)
            .build())
    }

    /// Marks `item` as a log session's view: `value`, whose newest run is `last`, through slot
    /// `through`.
    pub(super) fn mark_view(
        &self,
        item: &mut Item,
        session: &SessionKey,
        (value, last): (String, Option<&str>),
        through: Option<u64>,
    ) {
        item.insert(attr::VIEW_SIZE.into(), n(value.len() as u64));
        match last {
            Some(last) => item.insert(attr::VIEW_LAST.into(), s(last)),
            None => item.remove(attr::VIEW_LAST),
        };
        item.insert(self.schema.value_attribute.clone(), s(value));
        item.insert(attr::LOG.into(), n(1));
        match through {
            Some(t) => item.insert(attr::VIEW_THROUGH.into(), n(t)),
            None => item.remove(attr::VIEW_THROUGH),
        };
        item.insert(attr::SESSION_ID.into(), s(session.session_id()));
        item.insert(attr::UPDATED_AT.into(), n(Now::current().secs));
    }

    pub(super) fn value_of<'a>(&self, item: &'a Item) -> Result<&'a str, StoreError> {
        text(item, &self.schema.value_attribute)?
            .ok_or_else(|| StoreError::corrupt("the session item has no value"))
    }

    /// A put of an item that must not exist yet.
    pub(super) fn put_new(&self, item: Item) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", &self.schema.partition_key);
        Ok(TransactWriteItem::builder()
            .put(built(put.build())?)
            .build())
    }

    /// A transaction; `false` when a condition refused it (another writer got there first).
    pub(super) async fn transact_all(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_cancelled(&e) => Ok(false),
            Err(e) => Err(sdk_error(e)),
        }
    }
}
