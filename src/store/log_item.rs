//! Item mapping of the log's items, pure: the head and a slot as DynamoDB holds them, to the
//! domain's [`Head`] and [`SlotState`] (docs/storage.md, "Items").

use aws_sdk_dynamodb::types::AttributeValue;

use super::attr;
use super::branch::parse_fork;
use super::item::{count, text, Item};
use super::log::{parse_spilled, Head, SlotState};
use super::spill::Spill;
use super::{Feedback, StoreError};
use crate::memory::Memory;

/// The head's attribute naming a reserving turn's slot until the turn is counted done.
pub fn token_attribute(token: &str) -> String {
    format!("{}{token}", attr::TOKEN_PREFIX)
}

/// Whether a head takes reservations: not closed by a delete, not expired with its session.
pub fn is_open(head: &Item, now_secs: u64) -> Result<bool, StoreError> {
    let expired = count(head, attr::EXPIRES_AT)?.is_some_and(|t| t <= now_secs);
    Ok(!head.contains_key(attr::CLOSED) && !expired)
}

pub fn decode_head(item: &Item) -> Result<Head, StoreError> {
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
pub fn slot_spill(item: &Item) -> Result<Option<Spill>, StoreError> {
    match text(item, attr::SPILLED)? {
        Some(t) => Spill::parse(t)
            .map(Some)
            .ok_or_else(|| StoreError::corrupt("a slot's spilled is not valid")),
        None => Ok(None),
    }
}

pub fn decode_slot(item: Option<Item>) -> Result<SlotState, StoreError> {
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

/// A slot's feedback, if given.
pub fn feedback_of(item: &Item) -> Option<Feedback> {
    let AttributeValue::M(fields) = item.get(attr::FEEDBACK)? else {
        return None;
    };
    let rating = fields.get(attr::RATING)?.as_s().ok()?;
    Some(Feedback {
        up: rating == "up",
        comment: fields
            .get(attr::COMMENT)
            .and_then(|c| c.as_s().ok())
            .cloned(),
        at: fields
            .get(attr::AT)
            .and_then(|a| a.as_n().ok())
            .and_then(|a| a.parse().ok())
            .unwrap_or(0),
    })
}
