//! Item mapping: DynamoDB attribute maps to and from the store's domain types.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::attr;
use super::layout::{encode_pages, parse_pages, Layout, Spill, LEGACY_GENERATION};
use super::{KeySchema, Snapshot, SortValue, StoreError, Summary, Version};
use crate::memory::Memory;

pub type Item = HashMap<String, AttributeValue>;

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
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

/// The attributes as read that a save writes back: those of other tools, and `created_at`.
#[derive(Debug, Clone, Default)]
pub struct Kept(pub Item);

/// Reads a session item. A tombstone (a delete's first step) reads as a fresh session that
/// still owes the cleanup of the generations listed.
pub fn decode_session(mut item: Item, schema: &KeySchema) -> Result<Snapshot, StoreError> {
    let version = match count(&item, attr::VERSION)? {
        None => Version::Unversioned,
        Some(v) => Version::At(v),
    };
    let generation = text(&item, attr::GENERATION)?.map(str::to_owned);
    let legacy_pages = count(&item, attr::LEGACY_ARCHIVED)?.unwrap_or(0);
    let mut layout = match generation {
        Some(g) => Layout::empty(g),
        // Earlier releases kept pages at `<id>#archive#<n>`; griptape and the Python original
        // none: either way no later generation's keys can meet these.
        None if legacy_pages > 0 => Layout::empty(LEGACY_GENERATION.into()),
        None => Layout::new_generation(),
    };
    layout.first_run = count(&item, attr::FIRST_RUN)?.unwrap_or(0);
    layout.pages_next = count(&item, attr::PAGES_NEXT)?.unwrap_or(1);
    if let Some(pages) = text(&item, attr::PAGES)? {
        layout.pages = parse_pages(pages)
            .ok_or_else(|| StoreError::corrupt("the item's pages are not a page list"))?;
    } else if legacy_pages > 0 {
        // Run numbers of legacy pages are not known until they are read; see `DynamoStore`.
        layout.pages = (1..=legacy_pages).map(|p| (p, u64::MAX)).collect();
        layout.pages_next = legacy_pages + 1;
    }
    match item.get(attr::SPILLED) {
        None => {}
        Some(AttributeValue::M(map)) => {
            for (id, v) in map {
                let spill =
                    v.as_s().ok().and_then(|t| Spill::parse(t)).ok_or_else(|| {
                        StoreError::corrupt("the item's spilled map is not valid")
                    })?;
                layout.spilled.insert(id.clone(), spill);
            }
        }
        Some(_) => return Err(StoreError::corrupt("the item's spilled is not a map")),
    }
    layout.last_runs = strings(&item, attr::LAST_RUNS)?;
    layout.archive_expires_at = count(&item, attr::ARCHIVE_EXPIRES_AT)?;
    for line in strings(&item, attr::CLEANUP)? {
        layout.cleanup.push(
            Layout::parse_cleanup(&line)
                .ok_or_else(|| StoreError::corrupt("the item's cleanup list is not valid"))?,
        );
    }
    let summary = match (
        text(&item, attr::SUMMARY)?,
        text(&item, attr::SUMMARY_THROUGH)?,
    ) {
        (Some(text), Some(through)) => Some(Summary {
            text: text.to_owned(),
            through: through.to_owned(),
        }),
        _ => None,
    };
    let tombstone = item.contains_key(attr::TOMBSTONE);
    let owner = text(&item, attr::OWNER_KEY)?.map(str::to_owned);
    let preview = text(&item, attr::PREVIEW)?.map(str::to_owned);
    let title = text(&item, attr::TITLE)?.map(str::to_owned);
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
    let mut kept = item;
    kept.retain(|k, _| !attr::OWNED.contains(&k.as_str()) && !schema.is_key(k));
    if tombstone {
        // The deleted generation and any it still owed are cleaned by the next delete.
        let mut fresh = Layout::new_generation();
        let mut owed = layout.cleanup.clone();
        layout.cleanup.clear();
        owed.push(layout);
        fresh.cleanup = owed;
        return Ok(Snapshot {
            memory: Memory::default(),
            version,
            fresh: true,
            summary: None,
            layout: fresh,
            owner,
            preview: None,
            title: None,
            foreign: super::Foreign::new(Kept(kept)),
        });
    }
    let memory = Memory::decode(&value).map_err(StoreError::Corrupt)?;
    Ok(Snapshot {
        memory,
        version,
        fresh: false,
        summary,
        layout,
        owner,
        preview,
        title,
        foreign: super::Foreign::new(Kept(kept)),
    })
}

fn strings(item: &Item, name: &str) -> Result<Vec<String>, StoreError> {
    match item.get(name) {
        None => Ok(Vec::new()),
        Some(AttributeValue::L(list)) => list
            .iter()
            .map(|v| {
                v.as_s().cloned().map_err(|_| {
                    StoreError::corrupt(format!("the item's {name} holds a non-string"))
                })
            })
            .collect(),
        Some(_) => Err(StoreError::corrupt(format!(
            "the item's {name} is not a list"
        ))),
    }
}

/// Writes the layout's attributes into a session item.
pub fn put_layout(item: &mut Item, layout: &Layout) {
    item.insert(attr::GENERATION.into(), s(layout.generation.as_str()));
    item.insert(attr::FIRST_RUN.into(), n(layout.first_run));
    item.insert(attr::PAGES_NEXT.into(), n(layout.pages_next));
    if layout.pages.is_empty() {
        item.remove(attr::PAGES);
    } else {
        item.insert(attr::PAGES.into(), s(encode_pages(&layout.pages)));
    }
    if layout.spilled.is_empty() {
        item.remove(attr::SPILLED);
    } else {
        let map = layout
            .spilled
            .iter()
            .map(|(id, spill)| (id.clone(), s(spill.encode())))
            .collect();
        item.insert(attr::SPILLED.into(), AttributeValue::M(map));
    }
    item.insert(
        attr::LAST_RUNS.into(),
        AttributeValue::L(layout.last_runs.iter().map(|id| s(id.as_str())).collect()),
    );
    match layout.archive_expires_at {
        Some(t) if layout.has_side_items() => {
            item.insert(attr::ARCHIVE_EXPIRES_AT.into(), n(t));
        }
        _ => {
            item.remove(attr::ARCHIVE_EXPIRES_AT);
        }
    }
    if layout.cleanup.is_empty() {
        item.remove(attr::CLEANUP);
    } else {
        let lines = layout
            .cleanup
            .iter()
            .map(|l| s(l.encode_for_cleanup()))
            .collect();
        item.insert(attr::CLEANUP.into(), AttributeValue::L(lines));
    }
}

impl KeySchema {
    /// Whether `name` is one of the key attributes.
    pub fn is_key(&self, name: &str) -> bool {
        name == self.partition_key || self.sort_key.as_ref().is_some_and(|(n, _)| n == name)
    }

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
