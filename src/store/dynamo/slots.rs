//! Holes and counts: a slot a turn gives back (a failed turn, a replay) or a reader fills for
//! a writer that died becomes a hole, and every filled slot is counted done on the head, once.

use aws_sdk_dynamodb::types::ReturnValue;

use super::{is_condition_failure, refused_is_done, sdk_error, DynamoStore};
use crate::input::SessionKey;
use crate::store::item::{count, n, s, Now};
use crate::store::keys::{head_key, run_key};
use crate::store::log::{dead_slots, Head};
use crate::store::log_item::{decode_head, token_attribute};
use crate::store::{attr, Changes, LogTurn, Snapshot, StoreError};

impl DynamoStore {
    /// A reservation that failed may have landed with its answer lost past the SDK's retries:
    /// the slot its token names, if any, is given back as a hole, so it does not stay pending
    /// for `MAX_PENDING` (a forward page stops before a pending slot, and no view is written
    /// until it is filled). Best effort: a table that is down leaves it to `fill_dead`.
    pub(super) async fn give_back_lost(&self, session: &SessionKey, token: &str) {
        let given = async {
            let Some(item) = self.get(head_key(session)).await? else {
                return Ok(());
            };
            let Some(slot) = count(&item, &token_attribute(token))? else {
                return Ok(());
            };
            let head = decode_head(&item)?;
            tracing::warn!(session_id = %session, slot, "a reservation's answer was lost: its slot is given back");
            self.hole(session, &head.generation, slot, 0, Some(token))
                .await
                .map(drop)
        };
        if let Err(e) = given.await {
            let e: StoreError = e;
            tracing::warn!(session_id = %session, error = %crate::error::chain(&e), "a lost reservation's slot was not given back");
        }
    }

    /// Fills the slots of writers that died with holes, so the burst they were in settles.
    pub(super) async fn fill_dead(
        &self,
        session: &SessionKey,
        turn: &LogTurn,
    ) -> Result<(), StoreError> {
        let now = Now::current();
        for slot in dead_slots(turn.first, &turn.slots, turn.head.reserved_ms, now.millis) {
            tracing::warn!(session_id = %session, slot, "a writer died holding a slot: filled with a hole");
            self.hole(session, &turn.head.generation, slot, 0, None)
                .await?;
        }
        Ok(())
    }

    /// Writes a hole into a free slot and counts it done: the head after it; `None` if the
    /// slot was filled, or the head closed meanwhile.
    pub(super) async fn hole(
        &self,
        session: &SessionKey,
        generation: &str,
        slot: u64,
        reserved_ms: u64,
        token: Option<&str>,
    ) -> Result<Option<Head>, StoreError> {
        if !self
            .put_hole(session, generation, slot, reserved_ms)
            .await?
        {
            return Ok(None);
        }
        self.count_done(session, generation, (1, 1), token).await
    }

    /// Writes a hole into a free slot; `false` if the slot was filled.
    pub(super) async fn put_hole(
        &self,
        session: &SessionKey,
        generation: &str,
        slot: u64,
        reserved_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut item = self.schema.key(run_key(session, generation, slot));
        item.insert(attr::KIND.into(), s(attr::KIND_HOLE));
        item.insert(attr::RESERVED_MS.into(), n(reserved_ms));
        item.insert(attr::CREATED_AT.into(), n(Now::current().secs));
        self.side_expiry(&mut item);
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

    /// `ADD done` on the head (and `holes`), clearing the turn's reservation token so that a
    /// retry of it (an answer lost) counts nothing twice; the head after it, `None` if it was
    /// closed or replaced meanwhile.
    pub(super) async fn count_done(
        &self,
        session: &SessionKey,
        generation: &str,
        (done, holes): (u64, u64),
        token: Option<&str>,
    ) -> Result<Option<Head>, StoreError> {
        self.count_done_dropping(session, generation, (done, holes), token, (None, false))
            .await
    }

    /// [`Self::count_done`], recording that the slots before `dropped_to` are gone (MAX_RUNS).
    pub(super) async fn count_done_dropping(
        &self,
        session: &SessionKey,
        generation: &str,
        (done, holes): (u64, u64),
        token: Option<&str>,
        (dropped_to, viewed): (Option<u64>, bool),
    ) -> Result<Option<Head>, StoreError> {
        let mut sets = Vec::new();
        if dropped_to.is_some() {
            sets.push("#dt = :dt");
        }
        if viewed {
            sets.push("#vw = :one");
        }
        let set = match sets.is_empty() {
            true => String::new(),
            false => format!(" SET {}", sets.join(", ")),
        };
        let mut update = self
            .update_head(session)
            .expression_attribute_names("#d", attr::DONE)
            .expression_attribute_names("#h", attr::HOLES)
            .expression_attribute_names("#g", attr::GENERATION)
            .expression_attribute_names("#c", attr::CLOSED)
            .expression_attribute_values(":d", n(done))
            .expression_attribute_values(":h", n(holes))
            .expression_attribute_values(":g", s(generation))
            .return_values(ReturnValue::AllNew);
        if let Some(to) = dropped_to {
            update = update
                .expression_attribute_names("#dt", attr::DROPPED_TO)
                .expression_attribute_values(":dt", n(to));
        }
        if viewed {
            update = update
                .expression_attribute_names("#vw", attr::VIEWED)
                .expression_attribute_values(":one", n(1));
        }
        update = match token {
            Some(token) => update
                .update_expression(format!("ADD #d :d, #h :h{set} REMOVE #tok"))
                .condition_expression(
                    "#g = :g AND attribute_not_exists(#c) AND attribute_exists(#tok)",
                )
                .expression_attribute_names("#tok", token_attribute(token)),
            None => update
                .update_expression(format!("ADD #d :d, #h :h{set}"))
                .condition_expression("#g = :g AND attribute_not_exists(#c)"),
        };
        match update.send().await {
            Ok(out) => decode_head(&out.attributes.unwrap_or_default()).map(Some),
            Err(e) if is_condition_failure(&e) => {
                // Counted already (this is a retry whose first answer was lost), or closed.
                let head = self.read_head(session).await?;
                Ok(head.filter(|h| token.is_some() && !h.closed && h.generation == generation))
            }
            Err(e) => Err(sdk_error(e)),
        }
    }

    /// Gives a turn's slot back as a hole (a failed turn, a replay).
    pub(super) async fn release_slot(
        &self,
        session: &SessionKey,
        turn: &LogTurn,
        read: Option<&Snapshot>,
    ) -> Result<(), StoreError> {
        let generation = &turn.head.generation;
        if turn.first_turn && turn.slot == turn.head.base {
            // The session's first turn, and nobody reserved after it: no head is left either.
            let result = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(self.schema.key(head_key(session))))
                .condition_expression(
                    "#g = :g AND #next = :next AND #d = :zero AND attribute_exists(#tok)",
                )
                .expression_attribute_names("#g", attr::GENERATION)
                .expression_attribute_names("#next", attr::NEXT)
                .expression_attribute_names("#d", attr::DONE)
                .expression_attribute_names("#tok", token_attribute(&turn.token))
                .expression_attribute_values(":g", s(generation.as_str()))
                .expression_attribute_values(":next", n(turn.slot + 1))
                .expression_attribute_values(":zero", n(0))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(e) if is_condition_failure(&e) => {
                    // Gone already (a retry of this delete, its answer lost): nothing to fill.
                    let head = self.read_head(session).await?;
                    if head.is_none_or(|h| h.generation != *generation) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(sdk_error(e)),
            }
        }
        if read.is_some() && turn.fork.is_some() {
            // A failed regeneration or edit leaves the active path as it was.
            self.restore_path(session, turn).await?;
        }
        let after = self
            .hole(
                session,
                generation,
                turn.slot,
                turn.head.reserved_ms,
                Some(&turn.token),
            )
            .await?;
        // The hole was the burst's last slot: its view is this turn's to write.
        // Nothing new to show when the view already held every slot before this one.
        let news = turn.view_through.is_none_or(|t| t + 1 < turn.slot)
            || after.as_ref().is_some_and(|a| a.next > turn.slot + 1);
        match (after, read) {
            (Some(after), Some(read)) if after.settled() && news => {
                let changes = Changes {
                    memory: &read.memory,
                    receipt: None,
                    summary: None,
                    window_from: None,
                    token_scale: None,
                    owner: read.owner.as_deref(),
                    record: None,
                };
                self.write_view(session, &changes, turn, None, &after).await
            }
            _ => Ok(()),
        }
    }

    /// Sets `done` to every slot reserved, when this turn knows none is pending.
    pub(super) async fn set_done(
        &self,
        session: &SessionKey,
        after: &Head,
    ) -> Result<(), StoreError> {
        let result = self
            .update_head(session)
            .update_expression("SET #d = :d")
            .condition_expression("#g = :g AND #next = :next")
            .expression_attribute_names("#d", attr::DONE)
            .expression_attribute_names("#g", attr::GENERATION)
            .expression_attribute_names("#next", attr::NEXT)
            .expression_attribute_values(":d", n(after.next - after.base))
            .expression_attribute_values(":g", s(after.generation.as_str()))
            .expression_attribute_values(":next", n(after.next))
            .send()
            .await;
        refused_is_done(result)
    }
}
