//! Item mapping, pure: DynamoDB attribute maps to and from the store's domain types, and every
//! item a write puts (the session item, its side items, a receipt, a tombstone).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;

use super::layout::{encode_pages, parse_pages, Layout, LEGACY_GENERATION};
use super::spill::Spill;
use super::{attr, Listed, Receipt};
use super::{KeySchema, Snapshot, SortValue, StoreError, Summary, Version};
use crate::input::SessionKey;
use crate::memory::{Format, Memory};

pub type Item = HashMap<String, AttributeValue>;

/// Preview of a session in listings: the start of its first message.
pub const PREVIEW_CHARS: usize = 100;

/// A message's preview: its first [`PREVIEW_CHARS`] characters.
pub fn preview_of(message: &str) -> String {
    message.chars().take(PREVIEW_CHARS).collect()
}
/// Receipts answer retries for this long.
pub const RECEIPT_TTL_SECS: u64 = 24 * 60 * 60;

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// When a write happens: epoch seconds (what the `*_at` attributes hold) and milliseconds
/// (`active_ms`, so sessions of one second keep their order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub secs: u64,
    pub millis: u64,
}

impl Now {
    pub fn current() -> Now {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Now {
            secs: since.as_secs(),
            millis: since.as_millis() as u64,
        }
    }
}

pub fn count(item: &Item, name: &str) -> Result<Option<u64>, StoreError> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(v)) => v
            .parse()
            .map(Some)
            .map_err(|_| StoreError::corrupt(format!("the item's {name} is not a count"))),
        Some(_) => Err(StoreError::corrupt(format!(
            "the item's {name} is not a number"
        ))),
    }
}

pub fn text<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, StoreError> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v)),
        Some(_) => Err(StoreError::corrupt(format!(
            "the item's {name} is not a string"
        ))),
    }
}

fn strings(item: &Item, name: &str) -> Result<Vec<String>, StoreError> {
    let not_a = |what: &str| StoreError::corrupt(format!("the item's {name} {what}"));
    match item.get(name) {
        None => Ok(Vec::new()),
        Some(AttributeValue::L(list)) => list
            .iter()
            .map(|v| v.as_s().cloned().map_err(|_| not_a("holds a non-string")))
            .collect(),
        Some(_) => Err(not_a("is not a list")),
    }
}

fn owned_text(item: &Item, name: &str) -> Result<Option<String>, StoreError> {
    Ok(text(item, name)?.map(str::to_owned))
}

fn read_version(item: &Item) -> Result<Version, StoreError> {
    Ok(count(item, attr::VERSION)?.map_or(Version::Unversioned, Version::At))
}

/// Reads a session item. A tombstone (a delete's first step) reads as a fresh session that
/// still owes the cleanup of the generations listed.
pub fn decode_session(mut item: Item, schema: &KeySchema) -> Result<Snapshot, StoreError> {
    let version = read_version(&item)?;
    let layout = decode_layout(&item)?;
    let summary = decode_summary(&item)?;
    let window_from = owned_text(&item, attr::WINDOW_FROM)?;
    let token_scale = count(&item, attr::TOKEN_SCALE)?;
    let tombstone = item.contains_key(attr::TOMBSTONE);
    let log_view = item.contains_key(attr::LOG) && !tombstone;
    let owner = owned_text(&item, attr::OWNER_KEY)?;
    let preview = owned_text(&item, attr::PREVIEW)?;
    let title = owned_text(&item, attr::TITLE)?;
    // Taken out: the snapshot holds it decoded, and a save writes a new one.
    let value = match item.remove(&schema.value_attribute) {
        Some(AttributeValue::S(text)) => text,
        _ if tombstone => String::new(),
        _ => {
            return Err(StoreError::corrupt(format!(
                "the item has no string attribute {:?}",
                schema.value_attribute
            )))
        }
    };
    if tombstone {
        // The deleted generation and any it still owed are cleaned by the next delete.
        let mut fresh = Layout::new_generation();
        fresh.cleanup = owed(layout);
        return Ok(Snapshot {
            layout: fresh,
            version,
            owner,
            ..Snapshot::new_session()
        });
    }
    Ok(Snapshot {
        memory: Memory::decode(&value).map_err(StoreError::Corrupt)?,
        version,
        fresh: false,
        summary,
        window_from,
        token_scale,
        layout,
        owner,
        preview,
        title,
        log: None,
        log_view,
    })
}

/// What a delete of `layout`'s session must remove: the generations it still owed, and its own.
pub fn owed(mut layout: Layout) -> Vec<Layout> {
    let mut owed = std::mem::take(&mut layout.cleanup);
    owed.push(layout);
    owed
}

/// The layout attributes of a session item (or tombstone). Items without a generation are the
/// Python original's or griptape's, or (with `archived`) an earlier release's.
fn decode_layout(item: &Item) -> Result<Layout, StoreError> {
    let legacy_pages = count(item, attr::LEGACY_ARCHIVED)?.unwrap_or(0);
    let mut layout = match text(item, attr::GENERATION)? {
        Some(g) => Layout::empty(g.to_owned()),
        // Earlier releases kept pages at `<id>#archive#<n>`; griptape and the Python original
        // none: either way no later generation's keys can meet these.
        None if legacy_pages > 0 => Layout::empty(LEGACY_GENERATION.into()),
        None => Layout::new_generation(),
    };
    layout.first_run = count(item, attr::FIRST_RUN)?.unwrap_or(0);
    layout.pages_next = count(item, attr::PAGES_NEXT)?.unwrap_or(1);
    if let Some(pages) = text(item, attr::PAGES)? {
        layout.pages = parse_pages(pages)
            .ok_or_else(|| StoreError::corrupt("the item's pages are not a page list"))?;
    } else if legacy_pages > 0 {
        // Run numbers of legacy pages are not known until they are read; see `dynamo::read`.
        layout.pages = (1..=legacy_pages).map(|p| (p, u64::MAX)).collect();
        layout.pages_next = legacy_pages + 1;
    }
    layout.spilled = decode_spilled(item)?;
    layout.archive_expires_at = count(item, attr::ARCHIVE_EXPIRES_AT)?;
    for line in strings(item, attr::CLEANUP)? {
        let owed = Layout::parse_cleanup(&line)
            .ok_or_else(|| StoreError::corrupt("the item's cleanup list is not valid"))?;
        layout.cleanup.push(owed);
    }
    Ok(layout)
}

fn decode_spilled(item: &Item) -> Result<std::collections::BTreeMap<String, Spill>, StoreError> {
    let map = match item.get(attr::SPILLED) {
        None => return Ok(Default::default()),
        Some(AttributeValue::M(map)) => map,
        Some(_) => return Err(StoreError::corrupt("the item's spilled is not a map")),
    };
    map.iter()
        .map(|(id, v)| {
            let spill = v.as_s().ok().and_then(|t| Spill::parse(t));
            let spill =
                spill.ok_or_else(|| StoreError::corrupt("the item's spilled map is not valid"))?;
            Ok((id.clone(), spill))
        })
        .collect()
}

fn decode_summary(item: &Item) -> Result<Option<Summary>, StoreError> {
    Ok(
        match (
            text(item, attr::SUMMARY)?,
            text(item, attr::SUMMARY_THROUGH)?,
        ) {
            (Some(text), Some(through)) => Some(Summary {
                text: text.to_owned(),
                through: through.to_owned(),
            }),
            _ => None,
        },
    )
}

/// A receipt under the generation of `layout`; it expires in a day.
pub fn receipt_item(
    schema: &KeySchema,
    session: &SessionKey,
    layout: &Layout,
    receipt: &Receipt,
    now: Now,
) -> Item {
    let mut item = schema.key(layout.receipt_key(session, &receipt.key));
    item.insert(
        attr::MESSAGE_DIGEST.into(),
        s(receipt.message_digest.as_str()),
    );
    item.insert(attr::RUN_ID.into(), s(receipt.run_id.as_str()));
    item.insert(attr::CREATED_AT.into(), n(now.secs));
    item.insert(attr::EXPIRES_AT.into(), n(now.secs + RECEIPT_TTL_SECS));
    item
}

/// A session item as a delete reads it: enough to replace it by a tombstone, even when its
/// value is corrupt (a corrupt session can be deleted).
#[derive(Debug, Clone)]
pub struct Doomed {
    pub version: Version,
    /// A tombstone already: a delete before this one did not finish.
    pub tombstone: bool,
    pub generation: String,
    /// Every generation whose side items are to be removed.
    pub owed: Vec<Layout>,
    /// The value's shape, so the tombstone's empty memory is griptape's to read.
    pub format: Format,
    pub owner: Option<String>,
}

pub fn doomed(item: &Item, schema: &KeySchema) -> Result<Doomed, StoreError> {
    let value = text(item, &schema.value_attribute)?;
    let format = match value.map(Memory::decode) {
        Some(Ok(m)) => m.format,
        _ => Format::default(),
    };
    let layout = decode_layout(item)?;
    Ok(Doomed {
        version: read_version(item)?,
        tombstone: item.contains_key(attr::TOMBSTONE),
        generation: layout.generation.clone(),
        owed: owed(layout),
        format,
        owner: owned_text(item, attr::OWNER_KEY)?,
    })
}

/// The tombstone that replaces a session item: from its write on, the session is gone for every
/// reader, and it remembers what is left to remove. Its value is an empty memory, so griptape
/// reads an empty session, not an error.
pub fn tombstone_item(schema: &KeySchema, session: &SessionKey, doomed: &Doomed, now: Now) -> Item {
    let mut item = schema.key(session.as_str());
    let empty = Memory::new(doomed.format).encode();
    item.insert(schema.value_attribute.clone(), s(empty));
    item.insert(attr::VERSION.into(), n(doomed.version.next()));
    item.insert(attr::TOMBSTONE.into(), n(now.secs));
    // Still found by its owner's erase, which finishes an unfinished cleanup.
    if let Some(owner) = &doomed.owner {
        item.insert(attr::OWNER_KEY.into(), s(owner.as_str()));
        item.insert(attr::ACTIVE_MS.into(), n(now.millis));
        item.insert(attr::SESSION_ID.into(), s(session.session_id()));
    }
    let mut layout = Layout::empty(doomed.generation.clone());
    layout.cleanup = doomed.owed.clone();
    put_layout(&mut item, &layout);
    item
}

/// Writes the layout's attributes into a session item.
pub fn put_layout(item: &mut Item, layout: &Layout) {
    let mut set = |name: &str, value: Option<AttributeValue>| match value {
        Some(v) => item.insert(name.into(), v),
        None => item.remove(name),
    };
    set(attr::GENERATION, Some(s(layout.generation.as_str())));
    set(attr::FIRST_RUN, Some(n(layout.first_run)));
    set(attr::PAGES_NEXT, Some(n(layout.pages_next)));
    let pages = (!layout.pages.is_empty()).then(|| s(encode_pages(&layout.pages)));
    set(attr::PAGES, pages);
    let spilled = layout.spilled.iter();
    let spilled = spilled.map(|(id, spill)| (id.clone(), s(spill.encode())));
    let spilled = (!layout.spilled.is_empty()).then(|| AttributeValue::M(spilled.collect()));
    set(attr::SPILLED, spilled);
    let expires = layout
        .archive_expires_at
        .filter(|_| layout.has_side_items());
    set(attr::ARCHIVE_EXPIRES_AT, expires.map(n));
    let cleanup = layout.cleanup.iter().map(|l| s(l.encode_for_cleanup()));
    let cleanup = (!layout.cleanup.is_empty()).then(|| AttributeValue::L(cleanup.collect()));
    set(attr::CLEANUP, cleanup);
}

/// A session as the owner index lists it.
pub fn listed(schema: &KeySchema, item: &Item) -> Option<Listed> {
    let key = schema.key_of(item)?.to_owned();
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
    };
    let string = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let session_id = string(attr::SESSION_ID).unwrap_or_else(|| {
        let stored = SessionKey::from_stored(key.clone());
        stored.session_id().to_owned()
    });
    Some(Listed {
        session_id,
        key,
        created_at: number(attr::CREATED_AT).unwrap_or(0),
        updated_at: number(attr::UPDATED_AT).unwrap_or(0),
        runs: number(attr::RUN_COUNT).unwrap_or(0),
        preview: string(attr::PREVIEW),
        title: string(attr::TITLE),
        deleted: item.contains_key(attr::TOMBSTONE),
    })
}

impl KeySchema {
    /// The key of the item stored under `key`.
    pub fn key(&self, key: impl Into<String>) -> Item {
        let mut item = Item::with_capacity(2);
        item.insert(self.partition_key.clone(), s(key));
        if let Some((name, value)) = &self.sort_key {
            item.insert(name.clone(), sort_value(value));
        }
        item
    }

    /// The partition key's value of an item.
    pub fn key_of<'a>(&self, item: &'a Item) -> Option<&'a str> {
        item.get(&self.partition_key)
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
    }
}

fn sort_value(value: &SortValue) -> AttributeValue {
    match value {
        SortValue::S(v) => AttributeValue::S(v.clone()),
        SortValue::N(v) => AttributeValue::N(v.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::SessionId;

    fn session() -> SessionKey {
        SessionKey::new(&SessionId::parse("s").unwrap(), None)
    }

    #[test]
    fn a_corrupt_session_can_still_be_doomed() {
        let schema = KeySchema::default();
        let mut item = schema.key("s");
        item.insert("value".into(), s("not json"));
        item.insert(attr::GENERATION.into(), s("g"));
        item.insert(attr::PAGES.into(), s("1:0"));
        let doomed = doomed(&item, &schema).unwrap();
        assert_eq!(doomed.version, Version::Unversioned);
        assert_eq!(doomed.owed.len(), 1);
        assert_eq!(doomed.owed[0].side_keys(&session()), ["s#g#00000001"]);
        let tomb = tombstone_item(&schema, &session(), &doomed, Now { secs: 1, millis: 1 });
        assert_eq!(tomb[attr::VERSION], n(1));
        let back = decode_session(tomb, &schema).unwrap();
        assert!(back.fresh);
        assert_eq!(
            back.layout.cleanup.len(),
            2,
            "the deleted generation's and its own"
        );
    }
}
