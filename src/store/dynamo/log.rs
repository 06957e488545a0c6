//! The log layout's I/O (docs/storage.md, "The log layout"): a turn reserves a slot on the head
//! item, reads its window in one BatchGetItem, writes its run into its slot once, counts it
//! done, and, when no slot is left pending, writes griptape's view. Its rules are
//! [`crate::store::log`]'s.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, KeysAndAttributes, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use super::versions::feedback_of;
use super::{built, is_condition_failure, refused_is_done, sdk_error, DynamoStore};
use crate::input::SessionKey;
use crate::memory::{new_run_id, Memory, Run};
use crate::store::branch::{parse_fork, MAX_FORK_ENTRIES};
use crate::store::history::Window;
use crate::store::item::{count, decode_session, n, preview_of, receipt_item, s, text, Item, Now};
use crate::store::layout::{Layout, Spill};
use crate::store::log::{
    dead_slots, dropped_by, encode_spilled, expiry_due, head_key, parse_spilled, run_key,
    step_bound, summary_key, view, written_over, Head, SlotState, SLOTS_PER_READ,
};
use crate::store::policy::{spill_slot, NewItem, MAX_PRUNED};
use crate::store::{
    attr, Branch, Changes, Fork, HistoryPage, LogTurn, PageLimit, Snapshot, Span, StoreError,
    Summary,
};

/// How many times a turn begins again when a delete or another turn's new generation gets in
/// its way.
const BEGIN_ATTEMPTS: usize = 4;
/// How many times a regeneration or an edit reserves again when other turns take the slot it
/// asked for (its reservation is conditional on the head's `next`).
const FORK_ATTEMPTS: usize = 8;
/// Slots a turn reads at most for its window (the window steps long before).
const MAX_WINDOW_SLOTS: u64 = 4 * SLOTS_PER_READ as u64;
/// Largest run a slot holds (the item stays under DynamoDB's 400 KB).
const MAX_SLOT_BYTES: usize = 350_000;

/// What a reservation gave: a slot, or the head as it was when it was refused (none, closed,
/// expired).
pub(super) enum Reserved {
    Slot(Head, u64),
    Refused(Option<Item>),
}

/// What [`DynamoStore::take_slot`] did.
enum Taken {
    Slot(Box<Head>, u64, Option<Fork>),
    /// Lost a race (or began a generation): reserve again.
    Again,
    /// The session is of the item layout.
    ItemLayout,
}

/// What the session item says about a log head.
enum Root {
    /// Not written yet (the first turns are in flight), or a tombstone a turn began this
    /// generation over.
    Fresh(Option<Item>),
    Live(Item),
    /// Of another generation, or deleted: the head is stale.
    Stale,
    /// Past its TTL, not yet removed by DynamoDB: removed now, as TTL would.
    Expired,
    /// A session of the item layout (written before, or by griptape over this one).
    ItemLayout(Item),
}

impl DynamoStore {
    /// Begins a turn of a log-layout session: its slot reserved (in the place `branch` says)
    /// and its window read. `None`: the session is of the item layout (and new sessions are
    /// too, by configuration).
    pub(super) async fn begin_log(
        &self,
        session: &SessionKey,
        branch: &Branch,
    ) -> Result<Option<Snapshot>, StoreError> {
        let attempts = match branch {
            Branch::Append => BEGIN_ATTEMPTS,
            Branch::Regenerate | Branch::Edit(_) => FORK_ATTEMPTS,
        };
        for _ in 0..attempts {
            let token = new_run_id();
            let (head, slot, fork) = match self.take_slot(session, &token, branch).await? {
                Taken::Slot(head, slot, fork) => (*head, slot, fork),
                Taken::Again => continue,
                Taken::ItemLayout => return Ok(None),
            };
            let first = head
                .window_from
                .clamp(head.base.max(slot.saturating_sub(MAX_WINDOW_SLOTS)), slot);
            let mut keys = vec![
                session.as_str().to_owned(),
                summary_key(session, &head.generation),
            ];
            keys.extend((first..slot).map(|i| run_key(session, &head.generation, i)));
            let mut got = self.batch_get(&keys).await?;
            let root = got.remove(session.as_str());
            match classify(root, &head, Now::current().secs) {
                Root::Stale => {
                    self.close_head(session, &head.generation).await?;
                    continue;
                }
                Root::Expired => {
                    self.remove_expired(session).await?;
                    self.close_head(session, &head.generation).await?;
                    continue;
                }
                Root::ItemLayout(item) => {
                    let slots = (first..slot)
                        .map(|i| decode_slot(got.remove(&run_key(session, &head.generation, i))))
                        .collect::<Result<Vec<_>, _>>()?;
                    let mut turn = LogTurn::new(head, slot, token, (first, slots), None);
                    turn.fork = fork;
                    if self.over_item_layout(session, item, &turn).await? {
                        continue;
                    }
                    return Ok(None);
                }
                root @ (Root::Fresh(_) | Root::Live(_)) => {
                    let root = match root {
                        Root::Fresh(root) => root,
                        Root::Live(root) => Some(root),
                        Root::Stale | Root::Expired | Root::ItemLayout(_) => None,
                    };
                    let summary = got.remove(&summary_key(session, &head.generation));
                    let slots = (first..slot)
                        .map(|i| decode_slot(got.remove(&run_key(session, &head.generation, i))))
                        .collect::<Result<Vec<_>, _>>()?;
                    let seen = root
                        .as_ref()
                        .filter(|r| !r.contains_key(attr::TOMBSTONE))
                        .and_then(|r| text(r, &self.schema.value_attribute).ok().flatten())
                        .map(str::to_owned);
                    let mut turn = LogTurn::new(head, slot, token, (first, slots), seen);
                    turn.fork = fork;
                    turn.view_through = match &root {
                        Some(r) if !r.contains_key(attr::TOMBSTONE) => {
                            count(r, attr::VIEW_THROUGH)?
                        }
                        _ => None,
                    };
                    if let (Some(item), Some(value)) = (&root, &turn.seen) {
                        if written_over(value, count(item, attr::VIEW_SIZE)?) {
                            // Griptape wrote over the view: its runs take slots before ours.
                            self.release_log(session, &turn, None).await?;
                            let held = turn.run_ids();
                            let item = item.clone();
                            self.adopt(session, item, &turn.head, Some(&held)).await?;
                            continue;
                        }
                    }
                    if !turn.head.tree().is_linear() {
                        self.widen_to_path(session, &mut turn, summary.as_ref())
                            .await?;
                    }
                    self.fill_dead(session, &turn).await?;
                    return self.snapshot_of(root, summary, turn).map(Some);
                }
            }
        }
        Err(StoreError::Conflict)
    }

    /// Reserves a turn's slot: the next one (after a select, in the selected path's place), or
    /// for a regeneration or an edit, one whose parent is the replaced run's.
    async fn take_slot(
        &self,
        session: &SessionKey,
        token: &str,
        branch: &Branch,
    ) -> Result<Taken, StoreError> {
        if !matches!(branch, Branch::Append) {
            let head = match self.get(head_key(session)).await? {
                Some(item) if is_open(&item, Now::current().secs)? => decode_head(&item)?,
                Some(_) | None => return Err(self.no_log_to_edit(session).await?),
            };
            let (parent, fork) = self.plan_fork(session, &head, branch).await?;
            return Ok(
                match self.reserve_after(session, token, &head, parent).await? {
                    Reserved::Slot(head, slot) => Taken::Slot(Box::new(head), slot, Some(fork)),
                    Reserved::Refused(_) => Taken::Again,
                },
            );
        }
        let reserved = match self.reserve(session, token, 1).await {
            Ok(reserved) => reserved,
            Err(e) => {
                self.give_back_lost(session, token).await;
                return Err(e);
            }
        };
        let head = match reserved {
            Reserved::Slot(head, slot) => return Ok(Taken::Slot(Box::new(head), slot, None)),
            Reserved::Refused(head) => head,
        };
        if let Some(open) = &head {
            if is_open(open, Now::current().secs)? {
                let met = decode_head(open)?;
                if met.tip.is_none() {
                    // Another turn began this generation meanwhile: take a slot of it.
                    return Ok(Taken::Again);
                }
                // The first turn after a select follows the selected path: a fork of its own,
                // so the head's bound holds here too.
                if met.forks.len() >= MAX_FORK_ENTRIES {
                    return Err(StoreError::TooManyVersions);
                }
                let fork = Fork {
                    replaces: None,
                    replaced_slot: None,
                    message: None,
                    prev_leaf: met.tip,
                };
                return Ok(
                    match self.reserve_after(session, token, &met, met.tip).await? {
                        Reserved::Slot(head, slot) => Taken::Slot(Box::new(head), slot, Some(fork)),
                        Reserved::Refused(_) => Taken::Again,
                    },
                );
            }
        }
        let root = self.get(session.as_str().to_owned()).await?;
        if root.as_ref().is_some_and(is_item_layout) {
            return Ok(Taken::ItemLayout);
        }
        if root.is_none() && head.is_none() && !self.log_layout {
            return Ok(Taken::ItemLayout);
        }
        self.start_generation(session, root.as_ref(), head.as_ref())
            .await?;
        Ok(Taken::Again)
    }

    /// A turn that found a session item of the item layout: griptape's `PutItem` over a log
    /// session's view (its runs continue in the log), or a session to migrate. `true`: the turn
    /// begins again; `false`: it goes on in the item layout (an earlier release's pages).
    async fn over_item_layout(
        &self,
        session: &SessionKey,
        item: Item,
        turn: &LogTurn,
    ) -> Result<bool, StoreError> {
        if turn.head.done > 0 {
            self.release_log(session, turn, None).await?;
            let held = turn.run_ids();
            self.adopt(session, item, &turn.head, Some(&held)).await?;
            return Ok(true);
        }
        if self.log_layout && self.migrate(session, item).await? {
            // Our slot was of a head the migration replaced: we reserve again.
            return Ok(true);
        }
        self.release_log(session, turn, None).await?;
        Ok(false)
    }

    /// `ADD next 1` on the head, recording the slot taken under this turn's token: a retry of
    /// a reservation that landed (its answer lost) finds its slot instead of taking another.
    /// `None`: no head, or a closed one.
    pub(super) async fn reserve(
        &self,
        session: &SessionKey,
        token: &str,
        slots: u64,
    ) -> Result<Reserved, StoreError> {
        let now = Now::current();
        let mut sets = vec!["#r = :now"];
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(head_key(session))))
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":secs", n(now.secs))
            .expression_attribute_names("#next", attr::NEXT)
            .expression_attribute_names("#r", attr::RESERVED_MS)
            .expression_attribute_names("#c", attr::CLOSED)
            .expression_attribute_names("#tok", token_attribute(token))
            // After a select, the next turn's slot follows the selected path: see `reserve_after`.
            .expression_attribute_names("#tip", attr::TIP)
            .expression_attribute_values(":one", n(slots))
            .expression_attribute_values(":now", n(now.millis))
            .return_values(ReturnValue::AllNew)
            // A refused reservation says why in the head it returns: no call to read it.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if self.log_layout {
            // The first turn of a new session creates the head with its reservation (another
            // writer racing it takes the next slot of the same head).
            sets.extend([
                "#tok = if_not_exists(#next, :zero)",
                "#g = if_not_exists(#g, :gen)",
                "#b = if_not_exists(#b, :zero)",
                "#d = if_not_exists(#d, :zero)",
                "#h = if_not_exists(#h, :zero)",
                "#w = if_not_exists(#w, :zero)",
                "#kind = :kind",
                "#ca = if_not_exists(#ca, :secs)",
            ]);
            update = update
                .condition_expression(
                    "attribute_not_exists(#c) AND attribute_not_exists(#tok) \
                     AND (attribute_not_exists(#exp) OR #exp > :secs) AND attribute_not_exists(#tip)",
                )
                .expression_attribute_names("#g", attr::GENERATION)
                .expression_attribute_names("#b", attr::BASE)
                .expression_attribute_names("#d", attr::DONE)
                .expression_attribute_names("#h", attr::HOLES)
                .expression_attribute_names("#w", attr::WINDOW_FROM)
                .expression_attribute_names("#kind", attr::KIND)
                .expression_attribute_names("#ca", attr::CREATED_AT)
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":gen", s(new_run_id()))
                .expression_attribute_values(":kind", s(attr::KIND_HEAD));
        } else {
            sets.push("#tok = #next");
            update = update
                .condition_expression(
                    "attribute_exists(#g) AND attribute_not_exists(#c) AND attribute_not_exists(#tok) \
                     AND (attribute_not_exists(#exp) OR #exp > :secs) AND attribute_not_exists(#tip)",
                )
                .expression_attribute_names("#g", attr::GENERATION);
        }
        // A head outlives its session item by half a TTL, as the other side items do (so TTL
        // never removes it first); an expired session item makes the next turn begin a new
        // generation, so an expired session's runs are never continued.
        let expression = match self.session_ttl_secs {
            Some(ttl) => {
                update = update.expression_attribute_values(":exp", n(now.secs + ttl + ttl / 2));
                format!("ADD #next :one SET {}, #exp = :exp", sets.join(", "))
            }
            None => format!("ADD #next :one SET {} REMOVE #exp", sets.join(", ")),
        };
        let result = update.update_expression(expression);
        let result = result.send().await;
        let item = match result {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(e) if is_condition_failure(&e) => {
                let head = match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => c.item().cloned(),
                    _ => None,
                };
                match head {
                    // Our own reservation, landed, its answer lost: the SDK retried it.
                    Some(item) if is_open(&item, now.secs)? => item,
                    other => return Ok(Reserved::Refused(other)),
                }
            }
            Err(e) => return Err(sdk_error(e)),
        };
        let slot = item
            .get(&token_attribute(token))
            .and_then(|v| v.as_n().ok());
        match slot.and_then(|v| v.parse().ok()) {
            Some(slot) => Ok(Reserved::Slot(decode_head(&item)?, slot)),
            None => Ok(Reserved::Refused(Some(item))),
        }
    }

    /// A new generation's head, over no head or a closed one; over a tombstone, the tombstone
    /// names it (so the first view may replace it) and takes the closed head's slots into its
    /// cleanup list. Losing a race to another turn is as good as winning it.
    async fn start_generation(
        &self,
        session: &SessionKey,
        root: Option<&Item>,
        head: Option<&Item>,
    ) -> Result<(), StoreError> {
        let generation = new_run_id();
        let now = Now::current();
        let item = self.head_item(session, &Head::empty(generation.clone()), now);
        let old = match head {
            Some(h) => Some(decode_head(h)?),
            None => None,
        };
        let put = Put::builder().table_name(&self.table).set_item(Some(item));
        let put = match &old {
            None => put
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", &self.schema.partition_key),
            Some(old) => put
                .condition_expression("#g = :g AND (attribute_exists(#c) OR #exp < :secs)")
                .expression_attribute_names("#g", attr::GENERATION)
                .expression_attribute_names("#c", attr::CLOSED)
                .expression_attribute_names("#exp", attr::EXPIRES_AT)
                .expression_attribute_values(":secs", n(now.secs))
                .expression_attribute_values(":g", s(old.generation.as_str())),
        };
        let mut items = vec![TransactWriteItem::builder()
            .put(built(put.build())?)
            .build()];
        if let Some(tomb) = root.filter(|r| r.contains_key(attr::TOMBSTONE)) {
            let version = count(tomb, attr::VERSION)?.unwrap_or(0);
            let mut line = Layout::empty(
                old.as_ref()
                    .map_or_else(String::new, |h| h.generation.clone()),
            );
            let lines: Vec<AttributeValue> = match &old {
                Some(h) => {
                    line.log = Some((h.base, h.next));
                    vec![s(line.encode_for_cleanup())]
                }
                None => Vec::new(),
            };
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(self.schema.key(session.as_str())))
                .update_expression(
                    "SET #ng = :ng, #cl = list_append(if_not_exists(#cl, :none), :lines)",
                )
                .condition_expression("#v = :v AND attribute_exists(#t)")
                .expression_attribute_names("#ng", attr::NEXT_GENERATION)
                .expression_attribute_names("#cl", attr::CLEANUP)
                .expression_attribute_names("#v", attr::VERSION)
                .expression_attribute_names("#t", attr::TOMBSTONE)
                .expression_attribute_values(":ng", s(generation.as_str()))
                .expression_attribute_values(":none", AttributeValue::L(Vec::new()))
                .expression_attribute_values(":lines", AttributeValue::L(lines))
                .expression_attribute_values(":v", n(version));
            items.push(
                TransactWriteItem::builder()
                    .update(built(update.build())?)
                    .build(),
            );
        }
        // Refused: another turn began the generation first, as good as winning.
        self.transact_all(items).await.map(|_| ())
    }

    /// A head's item as it begins: a new generation's, or a migrated session's. (A first turn's
    /// reservation writes the same attributes with `if_not_exists`, see [`Self::reserve`].)
    pub(super) fn head_item(&self, session: &SessionKey, head: &Head, now: Now) -> Item {
        let mut item = self.schema.key(head_key(session));
        item.insert(attr::KIND.into(), s(attr::KIND_HEAD));
        item.insert(attr::GENERATION.into(), s(head.generation.as_str()));
        for (name, value) in [
            (attr::BASE, head.base),
            (attr::NEXT, head.next),
            (attr::DONE, head.done),
            (attr::HOLES, head.holes),
            (attr::RESERVED_MS, head.reserved_ms),
            (attr::WINDOW_FROM, head.window_from),
            (attr::CREATED_AT, now.secs),
        ] {
            item.insert(name.into(), n(value));
        }
        if let Some(ttl) = self.session_ttl_secs {
            item.insert(attr::EXPIRES_AT.into(), n(now.secs + ttl + ttl / 2));
        }
        if head.viewed {
            item.insert(attr::VIEWED.into(), n(1));
        }
        item
    }

    /// Closes a head: no turn takes a slot of it any more. The head as closed, if it was of
    /// `generation`.
    pub(super) async fn close_head(
        &self,
        session: &SessionKey,
        generation: &str,
    ) -> Result<Option<Head>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(head_key(session))))
            .update_expression("SET #c = :now")
            .condition_expression("#g = :g")
            .expression_attribute_names("#c", attr::CLOSED)
            .expression_attribute_names("#g", attr::GENERATION)
            .expression_attribute_values(":now", n(Now::current().secs))
            .expression_attribute_values(":g", s(generation))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => decode_head(&out.attributes.unwrap_or_default()).map(Some),
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(sdk_error(e)),
        }
    }

    /// Removes a session item past its TTL, as DynamoDB's TTL will (within days).
    async fn remove_expired(&self, session: &SessionKey) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(session.as_str())))
            .condition_expression("#exp <= :now")
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":now", n(Now::current().secs))
            .send()
            .await;
        refused_is_done(result)
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

    /// A reservation that failed may have landed with its answer lost past the SDK's retries:
    /// the slot its token names, if any, is given back as a hole, so it does not stay pending
    /// for `MAX_PENDING` (a forward page stops before a pending slot, and no view is written
    /// until it is filled). Best effort: a table that is down leaves it to `fill_dead`.
    async fn give_back_lost(&self, session: &SessionKey, token: &str) {
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
    async fn fill_dead(&self, session: &SessionKey, turn: &LogTurn) -> Result<(), StoreError> {
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
    async fn hole(
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
    async fn count_done_dropping(
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
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(head_key(session))))
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
    pub(super) async fn release_log(
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
                };
                self.write_view(session, &changes, turn, None, &after).await
            }
            _ => Ok(()),
        }
    }

    /// Saves a turn of a log-layout session: its run into its slot, once; then it counts itself
    /// done, and writes the view when no slot is left pending.
    pub(super) async fn save_log(
        &self,
        session: &SessionKey,
        changes: Changes<'_>,
        read: &Snapshot,
        turn: &LogTurn,
    ) -> Result<(), StoreError> {
        let run = changes
            .memory
            .runs
            .last()
            .ok_or_else(|| StoreError::corrupt("a save without a run"))?;
        let generation = turn.head.generation.as_str();
        self.put_run(session, &changes, read, turn, run).await?;
        let dropped_to = self.drop_beyond(session, &changes, turn).await?;
        let Some(after) = self
            // A turn that read the view marks the head `viewed` (a session item missing later
            // was removed by TTL), at no extra call.
            .count_done_dropping(
                session,
                generation,
                (1, 0),
                Some(&turn.token),
                (dropped_to, turn.seen.is_some() && !turn.head.viewed),
            )
            .await?
        else {
            // A delete closed the log meanwhile: this run goes with it, and the turn begins
            // again in the session's next generation.
            self.remove_run(session, generation, turn.slot, &run.id)
                .await?;
            return Err(StoreError::Conflict);
        };
        self.side_writes(session, &changes, turn, run).await?;
        self.keep_side_items(session, read, &after).await?;
        let quiet = after.next == turn.slot + 1 && !turn.slots.contains(&SlotState::Pending);
        if !(after.settled() || quiet) {
            return Ok(());
        }
        if !after.settled() {
            // Counted short (an answer lost after a run landed): nothing is pending, set it right.
            self.set_done(session, &after).await?;
        }
        self.write_view(session, &changes, turn, Some(run), &after)
            .await
    }

    /// The run into its slot (with its receipt, in one transaction). A slot already holding
    /// this run is a save whose answer was lost; one holding a hole makes the turn start over.
    async fn put_run(
        &self,
        session: &SessionKey,
        changes: &Changes<'_>,
        read: &Snapshot,
        turn: &LogTurn,
        run: &Run,
    ) -> Result<(), StoreError> {
        let generation = turn.head.generation.as_str();
        let slot = (generation, turn.slot, turn.head.reserved_ms);
        let spill_over = self.max_item_bytes / 2;
        let item = match spill_slot(run, turn.slot, changes.memory.format, spill_over)? {
            None => self.run_item(session, slot, changes.memory, run, MAX_SLOT_BYTES)?,
            Some((short, spill, parts)) => {
                // The texts first, then the head names them (so a delete finds them), then
                // the slot with the shortened run, as the item layout keeps a spilled run.
                self.put_parts(session, generation, &parts).await?;
                self.note_spill(session, generation, &run.id, &spill)
                    .await?;
                let mut item =
                    self.run_item(session, slot, changes.memory, &short, MAX_SLOT_BYTES)?;
                item.insert(attr::SPILLED.into(), s(spill.encode()));
                item
            }
        };
        // A regeneration answers the replaced run's message: it lands only while that run is
        // there, so a delete of it meanwhile does not see its message stored again.
        let regenerated = turn
            .fork
            .as_ref()
            .filter(|f| f.message.is_some())
            .and_then(|f| Some((f.replaced_slot?, f.replaces.as_deref()?)));
        if changes.receipt.is_none() && regenerated.is_none() {
            // The common case: one conditional PutItem (a transaction would bill it twice).
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", &self.schema.partition_key)
                .send()
                .await;
            return match put {
                Ok(_) => Ok(()),
                Err(e) if is_condition_failure(&e) => self.slot_holds(session, turn, run).await,
                Err(e) => Err(sdk_error(e)),
            };
        }
        self.put_run_transacted(session, changes, read, turn, run, (item, regenerated))
            .await
    }

    /// [`Self::put_run`] with its receipt, or a regeneration's check of the run it replaces,
    /// in one transaction.
    async fn put_run_transacted(
        &self,
        session: &SessionKey,
        changes: &Changes<'_>,
        read: &Snapshot,
        turn: &LogTurn,
        run: &Run,
        (item, regenerated): (Item, Option<(u64, &str)>),
    ) -> Result<(), StoreError> {
        let generation = turn.head.generation.as_str();
        let now = Now::current();
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", &self.schema.partition_key);
        let mut items = vec![TransactWriteItem::builder()
            .put(built(put.build())?)
            .build()];
        if let Some(receipt) = changes.receipt {
            let mut receipt = receipt_item(&self.schema, session, &read.layout, receipt, now);
            receipt.insert(attr::SLOT.into(), n(turn.slot));
            items.push(self.receipt_put(receipt, now)?);
        }
        if let Some((slot, run_id)) = regenerated {
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(self.schema.key(run_key(session, generation, slot))))
                .condition_expression("#rid = :rid")
                .expression_attribute_names("#rid", attr::RUN_ID)
                .expression_attribute_values(":rid", s(run_id));
            items.push(
                TransactWriteItem::builder()
                    .condition_check(built(check.build())?)
                    .build(),
            );
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let Err(e) = result else {
            return Ok(());
        };
        let Some(reasons) = refused_items(&e) else {
            return Err(sdk_error(e));
        };
        let refused = |i: usize| reasons.get(i).copied().unwrap_or(false);
        let slot_taken = refused(0);
        if changes.receipt.is_some() && refused(1) && !slot_taken {
            return Err(StoreError::ReceiptExists);
        }
        if regenerated.is_some()
            && refused(1 + usize::from(changes.receipt.is_some()))
            && !slot_taken
        {
            // The replaced run was deleted meanwhile: its message is not stored again.
            return Err(StoreError::RunNotFound);
        }
        if !slot_taken {
            return Err(sdk_error(e));
        }
        self.slot_holds(session, turn, run).await
    }

    /// The item of slot `(generation, slot, reserved_ms)` holding `run` alone, in `memory`'s
    /// shape; refused over `limit` bytes.
    pub(super) fn run_item(
        &self,
        session: &SessionKey,
        (generation, slot, reserved_ms): (&str, u64, u64),
        memory: &Memory,
        run: &Run,
        limit: usize,
    ) -> Result<Item, StoreError> {
        let json = memory.with_runs(vec![run.clone()]).encode();
        if json.len() > limit {
            return Err(StoreError::TooLarge(json.len()));
        }
        let mut item = self.schema.key(run_key(session, generation, slot));
        item.insert(attr::KIND.into(), s(attr::KIND_RUN));
        item.insert(attr::MEMORY.into(), s(json));
        item.insert(attr::RUN_ID.into(), s(run.id.as_str()));
        item.insert(attr::RESERVED_MS.into(), n(reserved_ms));
        item.insert(attr::CREATED_AT.into(), n(Now::current().secs));
        self.side_expiry(&mut item);
        Ok(item)
    }

    /// A new side item of a log expires half a TTL after its session would.
    pub(super) fn side_expiry(&self, item: &mut Item) {
        if let Some(ttl) = self.session_ttl_secs {
            item.insert(
                attr::EXPIRES_AT.into(),
                n(Now::current().secs + ttl + ttl / 2),
            );
        }
    }

    /// Keeps the generation's side items (slots, summary, parts, a migrated session's pages)
    /// from expiring before their session, or removes their expiry once TTL is off.
    async fn keep_side_items(
        &self,
        session: &SessionKey,
        read: &Snapshot,
        after: &Head,
    ) -> Result<(), StoreError> {
        let now = Now::current();
        let Some(expiry) = expiry_due(after.slots_expire_at, self.session_ttl_secs, now.secs)
        else {
            return Ok(());
        };
        let mut layout = read.layout.clone();
        layout.log = Some((after.base, after.next));
        layout.spilled.extend(after.spilled.clone());
        let expression = match expiry {
            Some(_) => "SET #exp = :exp",
            None => "REMOVE #exp",
        };
        for key in layout.side_keys(session) {
            let update = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(self.schema.key(key)))
                .update_expression(expression)
                .condition_expression("attribute_exists(#pk)")
                .expression_attribute_names("#pk", &self.schema.partition_key)
                .expression_attribute_names("#exp", attr::EXPIRES_AT)
                .set_expression_attribute_values(
                    expiry.map(|e| HashMap::from([(":exp".to_owned(), n(e))])),
                );
            // Refused: a slot not written yet (it gets its own), or removed.
            refused_is_done(update.send().await)?;
        }
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(head_key(session))))
            .condition_expression("#g = :g")
            .expression_attribute_names("#g", attr::GENERATION)
            .expression_attribute_names("#se", attr::SLOTS_EXPIRE_AT)
            .expression_attribute_values(":g", s(after.generation.as_str()));
        let update = match expiry {
            Some(e) => update
                .update_expression("SET #se = :se")
                .expression_attribute_values(":se", n(e)),
            None => update.update_expression("REMOVE #se"),
        };
        refused_is_done(update.send().await)
    }

    /// A spilled run's parts, each put once (a retry writes the same text again).
    async fn put_parts(
        &self,
        session: &SessionKey,
        generation: &str,
        parts: &[NewItem],
    ) -> Result<(), StoreError> {
        let layout = Layout::empty(generation.to_owned());
        let now = Now::current();
        for part in parts {
            let NewItem::Part {
                run_id,
                field,
                text: body,
                ..
            } = part
            else {
                continue;
            };
            let mut item = self.schema.key(part.key(&layout, session));
            item.insert(attr::KIND.into(), s(attr::KIND_PART));
            item.insert(attr::RUN.into(), s(run_id.as_str()));
            item.insert(attr::FIELD.into(), s(field.name()));
            item.insert(attr::TEXT.into(), s(body.as_str()));
            item.insert(attr::CREATED_AT.into(), n(now.secs));
            self.side_expiry(&mut item);
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(sdk_error)?;
        }
        Ok(())
    }

    /// Names a spilled run on the head, for the delete that removes its parts.
    async fn note_spill(
        &self,
        session: &SessionKey,
        generation: &str,
        run_id: &str,
        spill: &Spill,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(head_key(session))))
            .update_expression("ADD #sp :sp")
            .condition_expression("#g = :g AND attribute_not_exists(#c)")
            .expression_attribute_names("#sp", attr::SPILLED)
            .expression_attribute_names("#g", attr::GENERATION)
            .expression_attribute_names("#c", attr::CLOSED)
            .expression_attribute_values(
                ":sp",
                AttributeValue::Ss(vec![encode_spilled(run_id, spill)]),
            )
            .expression_attribute_values(":g", s(generation))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Closed by a delete meanwhile: the turn begins again in the next generation.
            Err(e) if is_condition_failure(&e) => Err(StoreError::Conflict),
            Err(e) => Err(sdk_error(e)),
        }
    }

    /// After a refused run write: the slot holds this run (a write whose answer was lost, the
    /// SDK retried it), or a hole (the turn starts over in a new slot).
    async fn slot_holds(
        &self,
        session: &SessionKey,
        turn: &LogTurn,
        run: &Run,
    ) -> Result<(), StoreError> {
        let generation = turn.head.generation.as_str();
        let held = self.get(run_key(session, generation, turn.slot)).await?;
        match held
            .as_ref()
            .and_then(|i| text(i, attr::RUN_ID).ok().flatten())
        {
            Some(id) if id == run.id => Ok(()),
            _ => Err(StoreError::Conflict),
        }
    }

    /// Deletes this turn's run from its slot (a delete closed the log after it was written).
    async fn remove_run(
        &self,
        session: &SessionKey,
        generation: &str,
        slot: u64,
        run_id: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(run_key(session, generation, slot))))
            .condition_expression("#id = :id")
            .expression_attribute_names("#id", attr::RUN_ID)
            .expression_attribute_values(":id", s(run_id))
            .send()
            .await;
        refused_is_done(result)
    }

    /// What a turn changes beside its run: the window's start and the summary when it
    /// stepped, and the slot `MAX_RUNS` leaves behind. Each only moves forward.
    async fn side_writes(
        &self,
        session: &SessionKey,
        changes: &Changes<'_>,
        turn: &LogTurn,
        run: &Run,
    ) -> Result<(), StoreError> {
        let generation = turn.head.generation.as_str();
        let slot_of = |id: &str| {
            if id == run.id {
                Some(turn.slot)
            } else {
                turn.slot_of(id)
            }
        };
        // A summary and a step are of the runs this turn read: both land only while the head's
        // `moves` is the one it read under, so a run deleted since (a delete moves it first,
        // then drops the summary that folded the run) is never folded in again. Refused, the
        // window stays and a later step folds again.
        let moves = match turn.head.moves {
            0 => "attribute_not_exists(#mv)",
            _ => "#mv = :mv",
        };
        if let Some(summary) = changes.summary {
            if !self
                .put_summary(session, turn, summary, slot_of(&summary.through), moves)
                .await?
            {
                return Ok(());
            }
        }
        if let Some(from) = changes.window_from.and_then(slot_of) {
            let from = step_bound(from, turn.first, &turn.slots);
            let mut update = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(self.schema.key(head_key(session))))
                .update_expression("SET #w = :w")
                .condition_expression(format!("#g = :g AND #w < :w AND {moves}"))
                .expression_attribute_names("#w", attr::WINDOW_FROM)
                .expression_attribute_names("#g", attr::GENERATION)
                .expression_attribute_names("#mv", attr::MOVES)
                .expression_attribute_values(":w", n(from))
                .expression_attribute_values(":g", s(generation));
            if turn.head.moves > 0 {
                update = update.expression_attribute_values(":mv", n(turn.head.moves));
            }
            // Refused: another turn moved the window further already, or the path moved.
            refused_is_done(update.send().await)?;
        }
        Ok(())
    }

    /// MAX_RUNS bounds every stored copy of a run: the slots (and parts) it leaves behind are
    /// deleted, the one this turn drops and, after MAX_RUNS was set or lowered, up to
    /// `MAX_PRUNED` more a turn. The slot before which all are gone, for the head.
    async fn drop_beyond(
        &self,
        session: &SessionKey,
        changes: &Changes<'_>,
        turn: &LogTurn,
    ) -> Result<Option<u64>, StoreError> {
        let Some(keep_from) = dropped_by(turn.slot + 1, changes.memory.max_runs) else {
            return Ok(None);
        };
        let generation = turn.head.generation.as_str();
        let from = turn.head.dropped_to.max(turn.head.base);
        let to = keep_from.min(from + MAX_PRUNED as u64);
        for dropped in from..to {
            self.drop_slot(session, generation, dropped).await?;
        }
        Ok(Some(to.max(from)))
    }

    /// Deletes a slot and its run's parts.
    async fn drop_slot(
        &self,
        session: &SessionKey,
        generation: &str,
        dropped: u64,
    ) -> Result<(), StoreError> {
        let old = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(run_key(session, generation, dropped))))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(sdk_error)?
            .attributes;
        // A dropped run's parts go with it: MAX_RUNS bounds every copy of its text.
        if let Some(old) = old {
            if let Some(spill) = slot_spill(&old)? {
                let mut layout = Layout::empty(generation.to_owned());
                let id = text(&old, attr::RUN_ID)?.unwrap_or_default().to_owned();
                layout.spilled.insert(id, spill);
                for key in layout.side_keys(session) {
                    self.client
                        .delete_item()
                        .table_name(&self.table)
                        .set_key(Some(self.schema.key(key)))
                        .send()
                        .await
                        .map_err(sdk_error)?;
                }
            }
        }
        Ok(())
    }

    /// The summary, newer than the one stored, in one transaction with a check of the head's
    /// `moves` (`moves`: its condition); `false` when the path moved since the turn's read.
    async fn put_summary(
        &self,
        session: &SessionKey,
        turn: &LogTurn,
        summary: &Summary,
        through_slot: Option<u64>,
        moves: &str,
    ) -> Result<bool, StoreError> {
        let generation = turn.head.generation.as_str();
        let through_slot = through_slot.unwrap_or(0);
        let item = self.summary_item(session, generation, summary, through_slot);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR #slot < :slot")
            .expression_attribute_names("#pk", &self.schema.partition_key)
            .expression_attribute_names("#slot", attr::SLOT)
            .expression_attribute_values(":slot", n(through_slot));
        let mut check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(head_key(session))))
            .condition_expression(format!("#g = :g AND {moves}"))
            .expression_attribute_names("#g", attr::GENERATION)
            .expression_attribute_names("#mv", attr::MOVES)
            .expression_attribute_values(":g", s(generation));
        if turn.head.moves > 0 {
            check = check.expression_attribute_values(":mv", n(turn.head.moves));
        }
        let items = vec![
            TransactWriteItem::builder()
                .condition_check(built(check.build())?)
                .build(),
            TransactWriteItem::builder()
                .put(built(put.build())?)
                .build(),
        ];
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let Err(e) = result else {
            return Ok(true);
        };
        let Some(refused) = refused_items(&e) else {
            return Err(sdk_error(e));
        };
        match (refused.first().copied(), refused.get(1).copied()) {
            // The path moved: neither the summary nor the step.
            (Some(true), _) => Ok(false),
            // A newer summary is there already: the step goes on.
            (_, Some(true)) => Ok(true),
            _ => Err(sdk_error(e)),
        }
    }

    pub(super) fn summary_item(
        &self,
        session: &SessionKey,
        generation: &str,
        summary: &Summary,
        through_slot: u64,
    ) -> Item {
        let mut item = self.schema.key(summary_key(session, generation));
        item.insert(attr::KIND.into(), s(attr::KIND_SUMMARY));
        item.insert(attr::TEXT.into(), s(summary.text.as_str()));
        item.insert(attr::SUMMARY_THROUGH.into(), s(summary.through.as_str()));
        item.insert(attr::SLOT.into(), n(through_slot));
        item.insert(attr::CREATED_AT.into(), n(Now::current().secs));
        self.side_expiry(&mut item);
        item
    }

    /// Sets `done` to every slot reserved, when this turn knows none is pending.
    async fn set_done(&self, session: &SessionKey, after: &Head) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(head_key(session))))
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

    /// The runs a view shows, oldest first, and its newest slot: what the turn read, its own
    /// run, and (one BatchGetItem) the slots it did not see filled.
    async fn view_runs(
        &self,
        session: &SessionKey,
        turn: &LogTurn,
        run: Option<&Run>,
        after: &Head,
        max_runs: Option<u64>,
    ) -> Result<(Vec<Run>, u64), StoreError> {
        let generation = turn.head.generation.as_str();
        let tree = after.tree();
        // The active path's end (the newest slot, for a conversation never edited).
        let through = match tree.is_linear() {
            true => after.next.saturating_sub(1).max(turn.slot),
            false => tree.leaf().unwrap_or(turn.slot),
        };
        // Never a slot `MAX_RUNS` has dropped (this turn may have read it before dropping it).
        let kept_from = max_runs.map_or(0, |max| (through + 1).saturating_sub(max));
        let lo = turn
            .first
            .max(through.saturating_sub(SLOTS_PER_READ as u64 - 1))
            .max(kept_from);
        let mut states: HashMap<u64, SlotState> = HashMap::new();
        // A delete, a select or a fork since this turn's read (each moves the path) may have
        // changed what those slots hold: a deleted run's text must not come back, so they are
        // read again.
        if after.moves == turn.head.moves {
            for (i, state) in turn.slots.iter().enumerate() {
                states.insert(turn.first + i as u64, state.clone());
            }
        }
        let reserved_ms = turn.head.reserved_ms;
        let own = match run {
            Some(run) => SlotState::Run {
                run: run.clone(),
                reserved_ms,
            },
            None => SlotState::Hole { reserved_ms },
        };
        states.insert(turn.slot, own);
        let on_path: Option<std::collections::BTreeSet<u64>> = (!tree.is_linear()).then(|| {
            tree.path_from(through, lo.checked_sub(1))
                .into_iter()
                .collect()
        });
        let shown = |i: &u64| on_path.as_ref().is_none_or(|p| p.contains(i));
        let missing: Vec<u64> = (lo..=through)
            .filter(shown)
            .filter(|i| {
                !matches!(
                    states.get(i),
                    Some(SlotState::Run { .. } | SlotState::Hole { .. })
                )
            })
            .collect();
        let keys: Vec<String> = missing
            .iter()
            .map(|i| run_key(session, generation, *i))
            .collect();
        let mut got = self.batch_get(&keys).await?;
        for (i, key) in missing.iter().zip(&keys) {
            states.insert(*i, decode_slot(got.remove(key))?);
        }
        let runs: Vec<Run> = (lo..=through)
            .filter(shown)
            .filter_map(|i| match states.remove(&i) {
                Some(SlotState::Run { run, .. }) => Some(run),
                _ => None,
            })
            .collect();
        Ok((runs, through))
    }

    /// Griptape's view, by the turn that settled the burst: the newest runs within
    /// `VIEW_BYTES`, from what it read, its own run and the slots it did not see filled. It
    /// lands only over the value last read, so a write griptape made meanwhile is kept (the
    /// next turn continues it).
    async fn write_view(
        &self,
        session: &SessionKey,
        changes: &Changes<'_>,
        turn: &LogTurn,
        run: Option<&Run>,
        after: &Head,
    ) -> Result<(), StoreError> {
        let generation = turn.head.generation.as_str();
        let (runs, through) = self
            .view_runs(session, turn, run, after, changes.memory.max_runs)
            .await?;
        let shown = view(
            changes.memory,
            &runs,
            self.view_bytes,
            self.max_item_bytes / 2,
        );
        let update = self.view_update(session, changes, &shown, after, through);
        let mut seen = turn.seen.clone().unwrap_or_default();
        for _ in 0..BEGIN_ATTEMPTS {
            let result = update
                .clone()
                .expression_attribute_values(":seen", s(seen.as_str()))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(e) if is_condition_failure(&e) => {
                    match self
                        .view_to_replace(session, generation, (after.moves, through))
                        .await?
                    {
                        Some(now) => seen = now,
                        // A newer view, griptape's write, or a delete: nothing to write.
                        None => return Ok(()),
                    }
                }
                Err(e) => return Err(sdk_error(e)),
            }
        }
        Ok(())
    }

    /// The session item's value when it is an older view of ours, to be replaced by a view
    /// through `through`.
    async fn view_to_replace(
        &self,
        session: &SessionKey,
        generation: &str,
        (moves, through): (u64, u64),
    ) -> Result<Option<String>, StoreError> {
        let Some(item) = self.get(session.as_str().to_owned()).await? else {
            return Ok(None);
        };
        let value = text(&item, &self.schema.value_attribute)?.unwrap_or_default();
        let ours = item.contains_key(attr::LOG)
            && !item.contains_key(attr::TOMBSTONE)
            && text(&item, attr::GENERATION)? == Some(generation)
            && !written_over(value, count(&item, attr::VIEW_SIZE)?);
        let shown_moves = count(&item, attr::VIEW_MOVES)?.unwrap_or(0);
        let older = shown_moves < moves
            || (shown_moves == moves
                && count(&item, attr::VIEW_THROUGH)?.is_none_or(|t| t < through));
        Ok((ours && older).then(|| value.to_owned()))
    }

    /// The view's UpdateItem, but for `:seen` (the value it must land over).
    pub(super) fn view_update(
        &self,
        session: &SessionKey,
        changes: &Changes<'_>,
        shown: &Memory,
        after: &Head,
        through: u64,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        let now = Now::current();
        let value = shown.encode();
        // Runs kept: a migrated session's pages hold the runs before `base`.
        let mut kept = after.base + after.done.saturating_sub(after.holes);
        if let Some(max) = changes.memory.max_runs {
            kept = kept.min(max);
        }
        let preview = shown.runs.first().map(|r| preview_of(&r.input));
        let dropped = changes
            .memory
            .max_runs
            .is_some_and(|max| through + 1 > after.base + max);
        let mut set = vec![
            "#val = :val, #vt = :vt, #gen = :gen, #log = :one, #ver = if_not_exists(#ver, :one)",
            "#ca = if_not_exists(#ca, :secs), #sid = :sid, #ua = :secs, #am = :ms, #rc = :rc",
            "#vs = :vs, #vl = :vl, #vm = :vm",
        ];
        set.push(if dropped {
            "#prev = :prev"
        } else {
            "#prev = if_not_exists(#prev, :prev)"
        });
        let last = shown.runs.last().map_or("", |r| r.id.as_str());
        // A view of a newer path (more moves) or, on the same path, of a newer slot.
        let newer = match after.moves {
            0 => "((attribute_not_exists(#vm) OR #vm = :vm) AND #vt < :vt)",
            _ => "(attribute_not_exists(#vm) OR #vm < :vm OR (#vm = :vm AND #vt < :vt))",
        };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.schema.key(session.as_str())))
            .condition_expression(format!(
                "(attribute_not_exists(#pk) OR (attribute_exists(#tomb) AND #ng = :gen) \
                 OR (#gen = :gen AND attribute_not_exists(#tomb) AND attribute_exists(#log) \
                 AND #val = :seen)) \
                 AND (attribute_not_exists(#vt) OR attribute_exists(#tomb) OR {newer})"
            ))
            .expression_attribute_values(":vm", n(after.moves))
            .set_expression_attribute_names(Some(view_names(&self.schema)))
            .expression_attribute_values(":vs", n(value.len() as u64))
            .expression_attribute_values(":vl", s(last))
            .expression_attribute_values(":val", s(value))
            .expression_attribute_values(":vt", n(through))
            .expression_attribute_values(":gen", s(after.generation.as_str()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":secs", n(now.secs))
            .expression_attribute_values(":sid", s(session.session_id()))
            .expression_attribute_values(":ms", n(now.millis))
            .expression_attribute_values(":rc", n(kept))
            .expression_attribute_values(":prev", s(preview.unwrap_or_default()));
        if let Some(owner) = changes.owner {
            set.push("#ok = if_not_exists(#ok, :owner)");
            update = update
                .expression_attribute_names("#ok", attr::OWNER_KEY)
                .expression_attribute_values(":owner", s(owner));
        }
        if let Some(scale) = changes.token_scale {
            set.push("#ts = :ts");
            update = update
                .expression_attribute_names("#ts", attr::TOKEN_SCALE)
                .expression_attribute_values(":ts", n(scale));
        }
        let mut expression = format!("SET {} REMOVE #tomb, #ng", set.join(", "));
        match self.session_ttl_secs {
            Some(ttl) => {
                expression = format!("SET #exp = :exp, {}", &expression[4..]);
                update = update
                    .expression_attribute_names("#exp", attr::EXPIRES_AT)
                    .expression_attribute_values(":exp", n(now.secs + ttl));
            }
            None => {
                expression.push_str(", #exp");
                update = update.expression_attribute_names("#exp", attr::EXPIRES_AT);
            }
        }
        update.update_expression(expression)
    }

    /// An edited conversation's turn reads its path's runs below its window too: those after
    /// the summary when the summary is of its path, else after the slots MAX_RUNS dropped.
    async fn widen_to_path(
        &self,
        session: &SessionKey,
        turn: &mut LogTurn,
        summary: Option<&Item>,
    ) -> Result<(), StoreError> {
        let tree = turn.head.tree();
        let summarized = match summary {
            Some(item) => count(item, attr::SLOT)?,
            None => None,
        };
        let valid = summarized.filter(|s| tree.is_on_path(*s, turn.slot));
        let floor = valid.or(turn.head.dropped_to.max(turn.head.base).checked_sub(1));
        let path = tree.path_from(turn.slot, floor);
        let Some(&lowest) = path
            .iter()
            .skip(1)
            .take(MAX_WINDOW_SLOTS as usize)
            .next_back()
        else {
            return Ok(());
        };
        if lowest >= turn.first {
            return Ok(());
        }
        let generation = turn.head.generation.clone();
        let keys: Vec<String> = (lowest..turn.first)
            .map(|i| run_key(session, &generation, i))
            .collect();
        let mut got = self.batch_get(&keys).await?;
        let mut below = keys
            .iter()
            .map(|k| decode_slot(got.remove(k)))
            .collect::<Result<Vec<_>, _>>()?;
        below.append(&mut turn.slots);
        turn.slots = below;
        turn.first = lowest;
        Ok(())
    }

    /// The snapshot a turn of a log session works from: the view's envelope, the runs read.
    fn snapshot_of(
        &self,
        root: Option<Item>,
        summary: Option<Item>,
        turn: LogTurn,
    ) -> Result<Snapshot, StoreError> {
        let had_root = root
            .as_ref()
            .is_some_and(|r| !r.contains_key(attr::TOMBSTONE));
        let had_tombstone = root.is_some() && !had_root;
        let mut snapshot = match root {
            Some(item) => decode_session(item, &self.schema)?,
            None => Snapshot::new_session(),
        };
        // An edited conversation: the prompt holds the turn's own path only.
        let tree = turn.head.tree();
        let path: Option<std::collections::BTreeSet<u64>> =
            (!tree.is_linear()).then(|| tree.path_from(turn.slot, None).into_iter().collect());
        let on_path = |slot: u64| path.as_ref().is_none_or(|p| p.contains(&slot));
        let runs: Vec<Run> = turn
            .slots
            .iter()
            .enumerate()
            .filter(|(i, _)| on_path(turn.first + *i as u64))
            .filter_map(|(_, s)| match s {
                SlotState::Run { run, .. } => Some(run.clone()),
                _ => None,
            })
            .collect();
        let summary = match summary {
            Some(item) if count(&item, attr::SLOT)?.is_none_or(on_path) => Some(item),
            _ => None,
        };
        snapshot.fresh = !had_root && runs.is_empty() && turn.head.done == 0;
        let mut turn = turn;
        turn.first_turn = snapshot.fresh && !had_tombstone;
        let max_runs = snapshot.memory.max_runs;
        snapshot.memory = snapshot.memory.with_runs(runs);
        snapshot.memory.max_runs = max_runs;
        snapshot.window_from = None;
        snapshot.summary = match summary {
            Some(item) => Some(Summary {
                text: text(&item, attr::TEXT)?.unwrap_or("").to_owned(),
                through: text(&item, attr::SUMMARY_THROUGH)?.unwrap_or("").to_owned(),
            }),
            None => None,
        };
        // A live session's layout (a migrated one's pages, spilled runs); a fresh one's empty.
        if !had_root || snapshot.layout.generation != turn.head.generation {
            snapshot.layout = Layout::empty(turn.head.generation.clone());
        }
        snapshot.log = Some(turn);
        Ok(snapshot)
    }

    /// The run a receipt names, from its slot.
    pub(super) async fn slot_run(
        &self,
        session: &SessionKey,
        turn: &LogTurn,
        slot: u64,
    ) -> Result<Option<Run>, StoreError> {
        let key = run_key(session, &turn.head.generation, slot);
        let Some(item) = self.get(key).await? else {
            return Ok(None);
        };
        let mut layout = Layout::empty(turn.head.generation.clone());
        if let Some(spill) = slot_spill(&item)? {
            let id = text(&item, attr::RUN_ID)?.unwrap_or_default().to_owned();
            layout.spilled.insert(id, spill);
        }
        let SlotState::Run { mut run, .. } = decode_slot(Some(item))? else {
            return Ok(None);
        };
        // A replay answers with the whole reply, its parts joined.
        Ok(self
            .unspill(session, &layout, &mut run)
            .await?
            .map(|()| run))
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
        // A migrated session's runs before `base` are in its pages, as in the item layout; the
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

/// The attribute names a view write uses (beside those only some writes set).
fn view_names(schema: &crate::store::KeySchema) -> HashMap<String, String> {
    [
        ("#pk", schema.partition_key.as_str()),
        ("#val", schema.value_attribute.as_str()),
        ("#vt", attr::VIEW_THROUGH),
        ("#gen", attr::GENERATION),
        ("#log", attr::LOG),
        ("#ver", attr::VERSION),
        ("#ca", attr::CREATED_AT),
        ("#sid", attr::SESSION_ID),
        ("#ua", attr::UPDATED_AT),
        ("#am", attr::ACTIVE_MS),
        ("#rc", attr::RUN_COUNT),
        ("#prev", attr::PREVIEW),
        ("#tomb", attr::TOMBSTONE),
        ("#ng", attr::NEXT_GENERATION),
        ("#vs", attr::VIEW_SIZE),
        ("#vl", attr::VIEW_LAST),
        ("#vm", attr::VIEW_MOVES),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The head's attribute naming a reserving turn's slot until the turn is counted done.
pub(super) fn token_attribute(token: &str) -> String {
    format!("{}{token}", attr::TOKEN_PREFIX)
}

/// Whether a head takes reservations: not closed by a delete, not expired with its session.
pub(super) fn is_open(head: &Item, now_secs: u64) -> Result<bool, StoreError> {
    let expired = count(head, attr::EXPIRES_AT)?.is_some_and(|t| t <= now_secs);
    Ok(!head.contains_key(attr::CLOSED) && !expired)
}

/// Whether a session item is of the item layout (a session to be read as before).
fn is_item_layout(item: &Item) -> bool {
    !item.contains_key(attr::LOG) && !item.contains_key(attr::TOMBSTONE)
}

fn classify(root: Option<Item>, head: &Head, now_secs: u64) -> Root {
    let Some(item) = root else {
        // Never written yet (the first burst is in flight), or removed by TTL.
        return if head.viewed {
            Root::Stale
        } else {
            Root::Fresh(None)
        };
    };
    let expired = count(&item, attr::EXPIRES_AT).ok().flatten();
    if expired.is_some_and(|t| t <= now_secs) && !item.contains_key(attr::TOMBSTONE) {
        return Root::Expired;
    }
    let generation = |name: &str| text(&item, name).ok().flatten().map(str::to_owned);
    if item.contains_key(attr::TOMBSTONE) {
        return if generation(attr::NEXT_GENERATION).as_deref() == Some(&head.generation) {
            Root::Fresh(Some(item))
        } else {
            Root::Stale
        };
    }
    if !item.contains_key(attr::LOG) {
        return Root::ItemLayout(item);
    }
    if generation(attr::GENERATION).as_deref() == Some(&head.generation) {
        Root::Live(item)
    } else {
        Root::Stale
    }
}

pub(super) fn decode_head(item: &Item) -> Result<Head, StoreError> {
    let number = |name: &str| count(item, name).map(|v| v.unwrap_or(0));
    let generation = text(item, attr::GENERATION)?
        .ok_or_else(|| StoreError::corrupt("the head has no generation"))?;
    Ok(Head {
        generation: generation.to_owned(),
        base: number(attr::BASE)?,
        next: number(attr::NEXT)?,
        done: number(attr::DONE)?,
        holes: number(attr::HOLES)?,
        reserved_ms: number(attr::RESERVED_MS)?,
        window_from: number(attr::WINDOW_FROM)?,
        closed: item.contains_key(attr::CLOSED),
        spilled: match item.get(attr::SPILLED) {
            Some(AttributeValue::Ss(entries)) => entries
                .iter()
                .map(|e| parse_spilled(e).ok_or_else(|| StoreError::corrupt("the head's spilled")))
                .collect::<Result<_, _>>()?,
            _ => Default::default(),
        },
        slots_expire_at: count(item, attr::SLOTS_EXPIRE_AT)?,
        viewed: item.contains_key(attr::VIEWED),
        dropped_to: number(attr::DROPPED_TO)?,
        forks: match item.get(attr::FORKS) {
            Some(AttributeValue::Ss(entries)) => entries
                .iter()
                .map(|e| parse_fork(e).ok_or_else(|| StoreError::corrupt("the head's forks")))
                .collect::<Result<_, _>>()?,
            _ => Default::default(),
        },
        tip: count(item, attr::TIP)?,
        moves: number(attr::MOVES)?,
    })
}

/// Where a slot's spilled run has its texts, if it was spilled.
pub(super) fn slot_spill(item: &Item) -> Result<Option<Spill>, StoreError> {
    match text(item, attr::SPILLED)? {
        Some(t) => Spill::parse(t)
            .map(Some)
            .ok_or_else(|| StoreError::corrupt("a slot's spilled is not valid")),
        None => Ok(None),
    }
}

pub(super) fn decode_slot(item: Option<Item>) -> Result<SlotState, StoreError> {
    let Some(item) = item else {
        return Ok(SlotState::Pending);
    };
    let reserved_ms = count(&item, attr::RESERVED_MS)?.unwrap_or(0);
    if text(&item, attr::KIND)? == Some(attr::KIND_HOLE) {
        return Ok(SlotState::Hole { reserved_ms });
    }
    let memory =
        text(&item, attr::MEMORY)?.ok_or_else(|| StoreError::corrupt("a slot has no run"))?;
    let run = Memory::decode(memory)
        .map_err(StoreError::Corrupt)?
        .runs
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::corrupt("a slot's memory holds no run"))?;
    Ok(SlotState::Run { run, reserved_ms })
}

/// Which items of a cancelled transaction their condition refused, in order; `None` when the
/// transaction failed otherwise.
fn refused_items<R>(
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
