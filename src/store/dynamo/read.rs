//! Reads: the session item (of the log, or still of the item shape), its pages and parts,
//! receipts, and history pages (their rules are [`crate::store::history`]'s).

use std::borrow::Cow;
use std::collections::HashMap;

use super::DynamoStore;
use crate::input::{IdempotencyKey, SessionKey};
use crate::memory::{Memory, Run};
use crate::store::history::Window;
use crate::store::item::{count, decode_session, text, Now};
use crate::store::keys::{part_key, run_key};
use crate::store::layout::Layout;
use crate::store::log::{written_over, SlotState, SLOTS_PER_READ};
use crate::store::log_item::{decode_slot, feedback_of, slot_spill};
use crate::store::spill::Field;
use crate::store::{attr, HistoryPage, PageLimit, Receipt, Snapshot, Span, StoreError};

impl DynamoStore {
    /// The session item, read; `None` if there is none.
    pub(super) async fn snapshot(
        &self,
        session: &SessionKey,
    ) -> Result<Option<Snapshot>, StoreError> {
        let Some(item) = self.get(session.as_str().to_owned()).await? else {
            return Ok(None);
        };
        self.decoded(session, item).await.map(Some)
    }

    /// A session item read, decoded (an earlier release's pages numbered).
    pub(super) async fn decoded(
        &self,
        session: &SessionKey,
        item: crate::store::item::Item,
    ) -> Result<Snapshot, StoreError> {
        let mut snapshot = decode_session(item, &self.schema)?;
        if snapshot.layout.pages.iter().any(|p| p.1 == u64::MAX) {
            self.number_legacy_pages(session, &mut snapshot.layout)
                .await?;
        }
        Ok(snapshot)
    }

    /// Pages written by earlier releases do not say which runs they hold: count them once;
    /// the next save records it.
    pub(super) async fn number_legacy_pages(
        &self,
        session: &SessionKey,
        layout: &mut Layout,
    ) -> Result<(), StoreError> {
        let mut next = 0;
        for i in 0..layout.pages.len() {
            let page = layout.pages[i].0;
            let runs = self.page_runs(session, layout, page).await?;
            let runs =
                runs.ok_or_else(|| StoreError::corrupt(format!("archive page {page} is missing")))?;
            layout.pages[i].1 = next;
            next += runs.len() as u64;
        }
        layout.first_run = next;
        Ok(())
    }

    /// The runs of one page; `None` if it is gone.
    pub(super) async fn page_runs(
        &self,
        session: &SessionKey,
        layout: &Layout,
        page: u64,
    ) -> Result<Option<Vec<Run>>, StoreError> {
        let Some(item) = self.get(layout.page_key(session, page)).await? else {
            return Ok(None);
        };
        let value = text(&item, attr::PAGE_VALUE)?
            .ok_or_else(|| StoreError::corrupt(format!("page {page} has no value")))?;
        let memory = Memory::decode(value).map_err(StoreError::Corrupt)?;
        Ok(Some(memory.runs))
    }

    /// The full text of a spilled field, from its parts.
    pub(super) async fn read_parts(
        &self,
        session: &SessionKey,
        layout: &Layout,
        run_id: &str,
        field: Field,
        parts: u32,
    ) -> Result<Option<String>, StoreError> {
        let mut whole = String::new();
        for part in 1..=parts {
            let key = part_key(session, &layout.generation, run_id, field.name(), part);
            let Some(item) = self.get(key).await? else {
                return Ok(None);
            };
            whole.push_str(text(&item, attr::TEXT)?.unwrap_or(""));
        }
        Ok(Some(whole))
    }

    /// Gives a spilled run its full texts back; `None` if a part is gone (the session was
    /// deleted meanwhile).
    pub(super) async fn unspill(
        &self,
        session: &SessionKey,
        layout: &Layout,
        run: &mut Run,
    ) -> Result<Option<()>, StoreError> {
        let Some(spill) = layout.spilled.get(&run.id).copied() else {
            return Ok(Some(()));
        };
        for (field, parts) in [
            (Field::Input, spill.input_parts),
            (Field::Output, spill.output_parts),
        ] {
            if parts == 0 {
                continue;
            }
            let Some(whole) = self
                .read_parts(session, layout, &run.id, field, parts)
                .await?
            else {
                return Ok(None);
            };
            match field {
                Field::Input => run.input = whole,
                Field::Output => run.output = whole,
            }
        }
        Ok(Some(()))
    }

    /// The run with this id, whole, from the item or (newest first) its pages.
    pub(super) async fn find_run(
        &self,
        session: &SessionKey,
        read: &Snapshot,
        run_id: &str,
    ) -> Result<Option<Run>, StoreError> {
        let mut found = read.memory.runs.iter().find(|r| r.id == run_id).cloned();
        if found.is_none() {
            for (page, _) in read.layout.pages.iter().rev() {
                let runs = self.page_runs(session, &read.layout, *page).await?;
                if let Some(run) = runs.into_iter().flatten().find(|r| r.id == run_id) {
                    found = Some(run);
                    break;
                }
            }
        }
        let Some(mut run) = found else {
            return Ok(None);
        };
        let whole = self.unspill(session, &read.layout, &mut run).await?;
        Ok(whole.map(|()| run))
    }

    pub(super) async fn read_receipt(
        &self,
        session: &SessionKey,
        read: &Snapshot,
        key: &IdempotencyKey,
    ) -> Result<Option<Receipt>, StoreError> {
        if read.fresh {
            // A receipt belongs to a generation; a fresh session has none yet.
            return Ok(None);
        }
        let Some(item) = self.get(read.layout.receipt_key(session, key)).await? else {
            return Ok(None);
        };
        // DynamoDB's TTL deletes within days, not on the second: expired is gone.
        if count(&item, attr::EXPIRES_AT)?.is_some_and(|t| t < Now::current().secs) {
            return Ok(None);
        }
        let field = |name: &str| {
            let value = text(&item, name)?.map(str::to_owned);
            value.ok_or_else(|| {
                StoreError::corrupt(format!("the idempotency receipt has no {name}"))
            })
        };
        let run_id = field(attr::RUN_ID)?;
        let message_digest = field(attr::MESSAGE_DIGEST)?;
        // The reply is the run's: a run since dropped (MAX_RUNS) leaves nothing to replay, and
        // the key counts as new.
        let found = match (&read.log, count(&item, attr::SLOT)?) {
            (Some(turn), Some(slot)) => {
                let found = self.slot_run(session, turn, slot).await?;
                if found.as_ref().is_none_or(|r| r.id != run_id) {
                    // The run was deleted or dropped (its slot is read as it is now, and a
                    // receipt lands with its run): the key counts as new, so its receipt goes,
                    // or the retry's save would meet it and never land.
                    self.delete_naming(read.layout.receipt_key(session, key), &run_id)
                        .await?;
                    return Ok(None);
                }
                found
            }
            _ => self.find_run(session, read, &run_id).await?,
        };
        let Some(run) = found.filter(|r| r.id == run_id) else {
            return Ok(None);
        };
        Ok(Some(Receipt {
            key: key.clone(),
            message_digest,
            run_id,
            reply: run.output,
        }))
    }

    /// A history page: the pages that overlap its window, then the item's runs, then the
    /// parts of spilled runs.
    pub(super) async fn read_history(
        &self,
        session: &SessionKey,
        span: Span<'_>,
        limit: PageLimit,
    ) -> Result<Option<HistoryPage>, StoreError> {
        let Some(snapshot) = self.adopt_before_reading(session).await? else {
            return Ok(None);
        };
        if snapshot.fresh {
            return Ok(None);
        }
        if snapshot.log_view {
            return self.history_log(session, &snapshot, span, limit).await;
        }
        let layout = &snapshot.layout;
        let held = &snapshot.memory;
        let end = layout.first_run + held.runs.len() as u64;
        let window = Window::new(span, limit, &layout.generation, end, held.max_runs)?;
        let mut fill = window.fill();
        for (i, &(page, first)) in layout.pages.iter().enumerate() {
            if fill.is_full() {
                break;
            }
            if !fill.window().overlaps(first, layout.page_end(i)) {
                continue;
            }
            let Some(runs) = self.page_runs(session, layout, page).await? else {
                return self.page_gone(session, layout, page).await;
            };
            fill.offer_all(first, runs.into_iter().map(Cow::Owned), layout);
        }
        if !fill.is_full() {
            let runs = held.runs.iter().map(Cow::Borrowed);
            fill.offer_all(layout.first_run, runs, layout);
        }
        let mut page = fill.finish(layout);
        for run in &mut page.runs {
            if self.unspill(session, layout, run).await?.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(page))
    }

    /// Griptape wrote over a log session's view: its runs after the view's newest take their
    /// slots first, so history shows them (and where they will stay).
    /// The session as read, after that.
    pub(super) async fn adopt_before_reading(
        &self,
        session: &SessionKey,
    ) -> Result<Option<Snapshot>, StoreError> {
        let Some(item) = self.get(session.as_str().to_owned()).await? else {
            return Ok(None);
        };
        let value = text(&item, &self.schema.value_attribute)?.unwrap_or_default();
        let ours = item.contains_key(attr::LOG) && !item.contains_key(attr::TOMBSTONE);
        if !ours || !written_over(value, count(&item, attr::VIEW_SIZE)?) {
            return self.decoded(session, item).await.map(Some);
        }
        let generation = text(&item, attr::GENERATION)?
            .unwrap_or_default()
            .to_owned();
        if let Some(head) = self.read_head(session).await? {
            if !head.closed && head.generation == generation {
                self.adopt(session, item, &head, None).await?;
            }
        }
        self.snapshot(session).await
    }

    /// A page a read needed is gone: a delete got here first (no session, `None`), unless the
    /// session is still there in the same generation (corrupt).
    pub(super) async fn page_gone(
        &self,
        session: &SessionKey,
        layout: &Layout,
        page: u64,
    ) -> Result<Option<HistoryPage>, StoreError> {
        match self.snapshot(session).await? {
            Some(now) if !now.fresh && now.layout.generation == layout.generation => {
                Err(StoreError::corrupt(format!("page {page} is missing")))
            }
            _ => Ok(None),
        }
    }

    /// A history page of a log session: its slots, read in batches; a forward page stops at
    /// the first pending slot, so its cursor never passes a run still being written.
    pub(super) async fn history_log(
        &self,
        session: &SessionKey,
        root: &Snapshot,
        span: Span<'_>,
        limit: PageLimit,
    ) -> Result<Option<HistoryPage>, StoreError> {
        let Some(head) = self.read_head(session).await? else {
            return Ok(None);
        };
        if head.generation != root.layout.generation || head.closed {
            return Ok(None);
        }
        let window = Window::new(
            span,
            limit,
            &head.generation,
            head.next,
            root.memory.max_runs,
        )?;
        let forward = matches!(span, Span::From(_));
        let (start, stop) = (window.start, window.stop);
        let mut fill = window.fill();
        // A migrated session's runs before `base` are in its pages, as the item shape kept them; the
        // parts of spilled runs are found through it.
        let mut layout = root.layout.clone();
        let pages = layout.pages.clone();
        for (i, &(page, first)) in pages.iter().enumerate() {
            let end = layout.page_end(i).min(head.base);
            if fill.is_full() || !fill.window().overlaps(first, end) {
                continue;
            }
            let Some(runs) = self.page_runs(session, &layout, page).await? else {
                return self.page_gone(session, &layout, page).await;
            };
            let runs = runs.into_iter().take((end - first) as usize);
            fill.offer_all(first, runs.map(std::borrow::Cow::Owned), &layout);
        }
        // An edited conversation shows its active path; each run with its versions.
        let tree = head.tree();
        let active = (!tree.is_linear()).then(|| tree.active(None));
        let mut slots_of: HashMap<String, u64> = HashMap::new();
        let mut feedback = HashMap::new();
        let mut at = start.max(head.base);
        'read: while at < stop && !fill.is_full() {
            let end = (at + SLOTS_PER_READ as u64).min(stop);
            let keys: Vec<String> = (at..end)
                .map(|i| run_key(session, &head.generation, i))
                .collect();
            let mut got = self.batch_get(&keys).await?;
            for (i, key) in (at..end).zip(&keys) {
                if active.as_ref().is_some_and(|a| !a.contains(&i)) {
                    continue;
                }
                let item = got.remove(key);
                if let Some(found) = &item {
                    if let Some(spill) = slot_spill(found)? {
                        let id = text(found, attr::RUN_ID)?.unwrap_or_default();
                        layout.spilled.insert(id.to_owned(), spill);
                    }
                    if let (Some(given), Some(id)) =
                        (feedback_of(found), text(found, attr::RUN_ID)?)
                    {
                        feedback.insert(id.to_owned(), given);
                    }
                }
                match decode_slot(item)? {
                    SlotState::Run { run, .. } => {
                        slots_of.insert(run.id.clone(), i);
                        if fill.offer(i, std::borrow::Cow::Owned(run), &layout) {
                            break 'read;
                        }
                    }
                    SlotState::Hole { .. } => {}
                    SlotState::Pending if forward => {
                        fill.stop_at(i);
                        break 'read;
                    }
                    SlotState::Pending => {}
                }
            }
            at = end;
        }
        let mut page = fill.finish(&layout);
        for run in &mut page.runs {
            if self.unspill(session, &layout, run).await?.is_none() {
                return Ok(None);
            }
        }
        slots_of.retain(|id, _| page.runs.iter().any(|r| r.id == *id));
        page.notes = self.notes_of(session, &head, &slots_of, feedback).await?;
        Ok(Some(page))
    }
}
