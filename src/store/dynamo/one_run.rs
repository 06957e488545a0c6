//! Edits of one run (docs/storage.md, "Versions"): deleting it (its texts from its slot,
//! parts, summary, view and preview) and a reader's feedback on it; the view written again
//! after a change of the path.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::versions::EDIT_ATTEMPTS;
use super::{is_condition_failure, refused_is_done, sdk_error, DynamoStore};
use crate::deadline::Deadline;
use crate::input::SessionKey;
use crate::memory::Memory;
use crate::store::item::{count, n, preview_of, s, text, Now};
use crate::store::keys::{run_key, summary_key};
use crate::store::layout::Layout;
use crate::store::log::{encode_spilled, view, Head, SlotState, SLOTS_PER_READ};
use crate::store::log_item::{decode_head, decode_slot, slot_spill};
use crate::store::{attr, Changes, Feedback, StoreError};

impl DynamoStore {
    /// Removes one run's texts: its slot becomes a hole marked `deleted` (the path goes on
    /// through it), its parts go, the summary goes when the run was folded into it, and the
    /// view is written again without it.
    pub(super) async fn delete_one(
        &self,
        session: &SessionKey,
        run_id: &str,
    ) -> Result<(), StoreError> {
        let head = self.editable_head(session).await?;
        let Some((slot, item)) = self.find_slot(session, &head, run_id).await? else {
            return Err(StoreError::RunNotFound);
        };
        let generation = head.generation.as_str();
        // The listing's preview is the first message's start: it may be this one's.
        let preview = match decode_slot(Some(item.clone()))? {
            SlotState::Run { run, .. } => Some(preview_of(&run.input)),
            _ => None,
        };
        let mut hole = self.schema.key(run_key(session, generation, slot));
        hole.insert(attr::KIND.into(), s(attr::KIND_HOLE));
        // Names this delete, so the SDK's retry of a put that landed (its answer lost) passes.
        let by = crate::memory::new_run_id();
        hole.insert(attr::DELETED.into(), s(by.as_str()));
        let reserved = count(&item, attr::RESERVED_MS)?.unwrap_or(0);
        hole.insert(attr::RESERVED_MS.into(), n(reserved));
        hole.insert(attr::CREATED_AT.into(), n(Now::current().secs));
        self.side_expiry(&mut hole);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(hole))
            .condition_expression("#rid = :rid OR #del = :by")
            .expression_attribute_names("#rid", attr::RUN_ID)
            .expression_attribute_names("#del", attr::DELETED)
            .expression_attribute_values(":rid", s(run_id))
            .expression_attribute_values(":by", s(by.as_str()))
            .send()
            .await;
        match put {
            Ok(_) => {}
            // Deleted meanwhile by another request, which finishes the rest: as good.
            Err(e) if is_condition_failure(&e) => return Ok(()),
            Err(e) => return Err(sdk_error(e)),
        }
        let spill = slot_spill(&item)?;
        if let Some(spill) = spill {
            let mut layout = Layout::empty(generation.to_owned());
            layout.spilled.insert(run_id.to_owned(), spill);
            self.delete_keys(layout.side_keys(session), Deadline::NONE)
                .await?;
        }
        let after = self.count_deleted(session, &head, run_id, spill).await?;
        self.drop_folded_summary(session, &after, slot).await?;
        self.refresh_view(session, &after, Some(run_id)).await?;
        match preview {
            Some(gone) => self.replace_preview(session, &after, &gone).await,
            None => Ok(()),
        }
    }

    /// When the listing's preview is the deleted message's start, it becomes the first message
    /// left on the active path (or goes, when none is near its start): the text is nowhere.
    pub(super) async fn replace_preview(
        &self,
        session: &SessionKey,
        head: &Head,
        gone: &str,
    ) -> Result<(), StoreError> {
        let Some(root) = self.get(session.as_str().to_owned()).await? else {
            return Ok(());
        };
        if text(&root, attr::PREVIEW)? != Some(gone) {
            return Ok(());
        }
        let tree = head.tree();
        let floor = head.dropped_to.max(head.base).checked_sub(1);
        let mut first_slots = tree
            .leaf()
            .map_or_else(Vec::new, |l| tree.path_from(l, floor));
        first_slots.reverse();
        first_slots.truncate(8);
        let keys: Vec<String> = first_slots
            .iter()
            .map(|i| run_key(session, &head.generation, *i))
            .collect();
        let mut got = self.batch_get(&keys).await?;
        let mut next = None;
        for key in &keys {
            if let SlotState::Run { run, .. } = decode_slot(got.remove(key))? {
                next = Some(preview_of(&run.input));
                break;
            }
        }
        // Runs before the log (a migrated session's pages) hold the first message: none here.
        let next = next.filter(|_| head.base == 0);
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(session.as_str())))
            .condition_expression("#prev = :gone")
            .expression_attribute_names("#prev", attr::PREVIEW)
            .expression_attribute_values(":gone", s(gone));
        let update = match next {
            Some(text) => update
                .update_expression("SET #prev = :next")
                .expression_attribute_values(":next", s(text)),
            None => update.update_expression("REMOVE #prev"),
        };
        refused_is_done(update.send().await)
    }

    /// Counts a deleted run as a hole on the head, and takes its parts off `spilled`.
    pub(super) async fn count_deleted(
        &self,
        session: &SessionKey,
        head: &Head,
        run_id: &str,
        spill: Option<crate::store::spill::Spill>,
    ) -> Result<Head, StoreError> {
        let mut update = self
            .update_head(session)
            .condition_expression("#g = :g")
            .expression_attribute_names("#g", attr::GENERATION)
            .expression_attribute_names("#h", attr::HOLES)
            .expression_attribute_names("#mv", attr::MOVES)
            .expression_attribute_values(":g", s(head.generation.as_str()))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew);
        update = match spill {
            Some(spill) => update
                .update_expression("ADD #h :one, #mv :one DELETE #sp :sp")
                .expression_attribute_names("#sp", attr::SPILLED)
                .expression_attribute_values(
                    ":sp",
                    AttributeValue::Ss(vec![encode_spilled(run_id, &spill)]),
                ),
            None => update.update_expression("ADD #h :one, #mv :one"),
        };
        match update.send().await {
            Ok(out) => decode_head(&out.attributes.unwrap_or_default()),
            // Closed or begun anew meanwhile (a delete of the session): nothing left to fix.
            Err(e) if is_condition_failure(&e) => Err(StoreError::RunNotFound),
            Err(e) => Err(sdk_error(e)),
        }
    }

    /// Deletes the summary when the run in `slot` was folded into it, and starts the window
    /// over: the next step folds again from what is left.
    pub(super) async fn drop_folded_summary(
        &self,
        session: &SessionKey,
        head: &Head,
        slot: u64,
    ) -> Result<(), StoreError> {
        let key = summary_key(session, &head.generation);
        let Some(summary) = self.get(key.clone()).await? else {
            return Ok(());
        };
        let Some(through) = count(&summary, attr::SLOT)? else {
            return Ok(());
        };
        if through < slot || !head.tree().is_on_path(slot, through) {
            return Ok(());
        }
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(key)))
            .condition_expression("#slot = :slot")
            .expression_attribute_names("#slot", attr::SLOT)
            .expression_attribute_values(":slot", n(through))
            .send()
            .await;
        refused_is_done(result)?;
        // The window starts over from the first run kept: the next turn's prompt holds what is
        // left, and its step folds it again.
        let result = self
            .update_head(session)
            .update_expression("SET #w = :w")
            .condition_expression("#g = :g")
            .expression_attribute_names("#w", attr::WINDOW_FROM)
            .expression_attribute_names("#g", attr::GENERATION)
            .expression_attribute_values(":w", n(head.dropped_to.max(head.base)))
            .expression_attribute_values(":g", s(head.generation.as_str()))
            .send()
            .await;
        refused_is_done(result)
    }

    /// Keeps a reader's rating with a run's slot, replacing an earlier one.
    pub(super) async fn put_feedback(
        &self,
        session: &SessionKey,
        run_id: &str,
        feedback: &Feedback,
    ) -> Result<(), StoreError> {
        let head = self.editable_head(session).await?;
        let Some((slot, _)) = self.find_slot(session, &head, run_id).await? else {
            return Err(StoreError::RunNotFound);
        };
        let mut fields = HashMap::from([
            (
                attr::RATING.to_owned(),
                s(if feedback.up { "up" } else { "down" }),
            ),
            (attr::AT.to_owned(), n(feedback.at)),
        ]);
        if let Some(comment) = &feedback.comment {
            fields.insert(attr::COMMENT.to_owned(), s(comment.as_str()));
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(run_key(
                session,
                &head.generation,
                slot,
            ))))
            .update_expression("SET #fb = :fb")
            .condition_expression("#rid = :rid AND #k = :run")
            .expression_attribute_names("#fb", attr::FEEDBACK)
            .expression_attribute_names("#rid", attr::RUN_ID)
            .expression_attribute_names("#k", attr::KIND)
            .expression_attribute_values(":fb", AttributeValue::M(fields))
            .expression_attribute_values(":rid", s(run_id))
            .expression_attribute_values(":run", s(attr::KIND_RUN))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Deleted in between.
            Err(e) if is_condition_failure(&e) => Err(StoreError::RunNotFound),
            Err(e) => Err(sdk_error(e)),
        }
    }

    /// Writes griptape's view of the active path again (after a select or a delete): over the
    /// view read, retried when a turn's view came in between and still shows `gone`.
    pub(super) async fn refresh_view(
        &self,
        session: &SessionKey,
        head: &Head,
        gone: Option<&str>,
    ) -> Result<(), StoreError> {
        let tree = head.tree();
        let floor = head.dropped_to.max(head.base).checked_sub(1);
        for attempt in 0..EDIT_ATTEMPTS {
            let Some(root) = self.get(session.as_str().to_owned()).await? else {
                return Ok(());
            };
            let ours = root.contains_key(attr::LOG)
                && !root.contains_key(attr::TOMBSTONE)
                && text(&root, attr::GENERATION)? == Some(head.generation.as_str());
            let seen = text(&root, &self.schema.value_attribute)?
                .unwrap_or_default()
                .to_owned();
            // A turn's view came in between: done once it no longer shows the deleted run.
            let shown_gone = attempt > 0 && gone.is_some_and(|id| !seen.contains(id));
            if !ours || shown_gone {
                return Ok(());
            }
            let template = Memory::decode(&seen).map_err(StoreError::Corrupt)?;
            let leaf = tree.leaf().unwrap_or(head.base);
            let mut path = tree.path_from(leaf, floor);
            path.truncate(SLOTS_PER_READ);
            path.reverse();
            let keys: Vec<String> = path
                .iter()
                .map(|i| run_key(session, &head.generation, *i))
                .collect();
            let mut got = self.batch_get(&keys).await?;
            let mut runs = Vec::new();
            for key in &keys {
                if let SlotState::Run { run, .. } = decode_slot(got.remove(key))? {
                    runs.push(run);
                }
            }
            let shown = view(&template, &runs, self.view_bytes, self.max_item_bytes / 2);
            let changes = Changes {
                memory: &template,
                receipt: None,
                summary: None,
                window_from: None,
                token_scale: None,
                owner: None,
                record: None,
            };
            let result = self
                .view_update(session, &changes, &shown, head, leaf)
                .expression_attribute_values(":seen", s(seen.as_str()))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(e) if is_condition_failure(&e) && gone.is_some() => continue,
                Err(e) if is_condition_failure(&e) => return Ok(()),
                Err(e) => return Err(sdk_error(e)),
            }
        }
        Ok(())
    }
}
