//! Griptape's view: the session item's `value`, the newest runs of the active path within
//! `VIEW_BYTES`, written by the turn that settles a burst, and only forward.

use std::collections::HashMap;

use super::{is_condition_failure, sdk_error, DynamoStore};
use crate::input::SessionKey;
use crate::memory::{Memory, Run};
use crate::store::item::{count, n, preview_of, s, text, Now};
use crate::store::keys::run_key;
use crate::store::log::{view, written_over, Head, SlotState, SLOTS_PER_READ};
use crate::store::log_item::decode_slot;
use crate::store::{attr, Changes, LogTurn, StoreError};

/// How many times a view write reads again when another writer's view came first.
const VIEW_ATTEMPTS: usize = 4;

impl DynamoStore {
    /// The runs a view shows, oldest first, and its newest slot: what the turn read, its own
    /// run, and (one BatchGetItem) the slots it did not see filled.
    pub(super) async fn view_runs(
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
    pub(super) async fn write_view(
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
        for _ in 0..VIEW_ATTEMPTS {
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
    pub(super) async fn view_to_replace(
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
