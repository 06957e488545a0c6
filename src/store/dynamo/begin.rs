//! A turn's beginning (docs/storage.md, "A turn"): its slot reserved on the head item (a new
//! generation's head first, when there is none or a closed one), its window read in one
//! BatchGetItem, and what the session item says about the head sorted out: a session of the
//! item shape is migrated, griptape's writes over the view are continued.

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};

use super::{built, is_condition_failure, refused_is_done, sdk_error, DynamoStore};
use crate::input::SessionKey;
use crate::memory::new_run_id;
use crate::store::branch::MAX_FORK_ENTRIES;
use crate::store::item::{count, n, s, text, Item, Now};
use crate::store::keys::{head_key, run_key, summary_key};
use crate::store::layout::Layout;
use crate::store::log::{written_over, Head, MAX_WINDOW_SLOTS};
use crate::store::log_item::{decode_head, decode_slot, is_open, token_attribute};
use crate::store::{attr, Branch, Fork, LogTurn, Snapshot, StoreError};

/// How many times a turn begins again when a delete or another turn's new generation gets in
/// its way.
pub(super) const BEGIN_ATTEMPTS: usize = 4;
/// How many times a regeneration or an edit reserves again when other turns take the slot it
/// asked for (its reservation is conditional on the head's `next`).
const FORK_ATTEMPTS: usize = 8;

/// What a reservation gave: a slot, or the head as it was when it was refused (none, closed,
/// expired).
pub(super) enum Reserved {
    Slot(Head, u64),
    Refused(Option<Item>),
}
/// What [`DynamoStore::take_slot`] did.
enum Taken {
    Slot(Box<Head>, u64, Option<Fork>),
    /// Lost a race (or began a generation, or moved a session into the log): reserve again.
    Again,
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
    /// A session item of the item shape (griptape's, the Python original's, an earlier
    /// release's, or griptape's `PutItem` over a view): moved into the log first.
    ItemShaped(Item),
}
impl DynamoStore {
    /// Begins a turn: its slot reserved (in the place `branch` says) and its window read.
    pub(super) async fn begin_turn(
        &self,
        session: &SessionKey,
        branch: &Branch,
    ) -> Result<Snapshot, StoreError> {
        let attempts = match branch {
            Branch::Append => BEGIN_ATTEMPTS,
            Branch::Regenerate | Branch::Edit(_) => FORK_ATTEMPTS,
        };
        for _ in 0..attempts {
            let token = new_run_id();
            let (head, slot, fork) = match self.take_slot(session, &token, branch).await? {
                Taken::Slot(head, slot, fork) => (*head, slot, fork),
                Taken::Again => continue,
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
                Root::ItemShaped(item) => {
                    let slots = (first..slot)
                        .map(|i| decode_slot(got.remove(&run_key(session, &head.generation, i))))
                        .collect::<Result<Vec<_>, _>>()?;
                    let mut turn = LogTurn::new(head, slot, token, (first, slots), None);
                    turn.fork = fork;
                    self.over_item_shaped(session, item, &turn).await?;
                    continue;
                }
                root @ (Root::Fresh(_) | Root::Live(_)) => {
                    let root = match root {
                        Root::Fresh(root) => root,
                        Root::Live(root) => Some(root),
                        Root::Stale | Root::Expired | Root::ItemShaped(_) => None,
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
                            self.release_slot(session, &turn, None).await?;
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
                    return self.snapshot_of(root, summary, turn);
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
            let head = self.editable_head(session).await?;
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
        // A closed or expired head (a session item of the item shape over it is moved into the
        // log once its new generation's head is there).
        let root = self.get(session.as_str().to_owned()).await?;
        self.start_generation(session, root.as_ref(), head.as_ref())
            .await?;
        Ok(Taken::Again)
    }

    /// A turn that found a session item of the item shape: griptape's `PutItem` over a
    /// session's view (its runs continue in the log), or a session to migrate. Either way the
    /// turn begins again.
    pub(super) async fn over_item_shaped(
        &self,
        session: &SessionKey,
        item: Item,
        turn: &LogTurn,
    ) -> Result<(), StoreError> {
        if turn.head.done > 0 {
            self.release_slot(session, turn, None).await?;
            let held = turn.run_ids();
            return self.adopt(session, item, &turn.head, Some(&held)).await;
        }
        // Our slot was of a head the migration replaces (none of its slots counted): we
        // reserve again in the migrated one. A migration that lost its race changed nothing.
        self.migrate(session, item).await
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
            .update_head(session)
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
    pub(super) async fn start_generation(
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
            .update_head(session)
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
    pub(super) async fn remove_expired(&self, session: &SessionKey) -> Result<(), StoreError> {
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
        return Root::ItemShaped(item);
    }
    if generation(attr::GENERATION).as_deref() == Some(&head.generation) {
        Root::Live(item)
    } else {
        Root::Stale
    }
}
