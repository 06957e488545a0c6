//! Item mapping, pure: DynamoDB attribute maps to and from the store's domain types, and every
//! item a write puts (the session item, its side items, a receipt, a tombstone).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::layout::{encode_pages, parse_pages, Layout, Spill, LEGACY_GENERATION};
use super::policy::{NewItem, Plan};
use super::{attr, Attribute, Changes, KeptAttributes, Listed, Receipt};
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
    let kept = keep(item, schema);
    if tombstone {
        // The deleted generation and any it still owed are cleaned by the next delete.
        let mut fresh = Layout::new_generation();
        fresh.cleanup = owed(layout);
        return Ok(Snapshot {
            layout: fresh,
            version,
            owner,
            kept,
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
        kept,
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
    layout.last_runs = strings(item, attr::LAST_RUNS)?;
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

/// What a save writes back as read: every attribute but ours and the key.
fn keep(item: Item, schema: &KeySchema) -> KeptAttributes {
    let theirs = item
        .into_iter()
        .filter(|(k, _)| !attr::OWNED.contains(&k.as_str()) && !schema.is_key(k));
    KeptAttributes(theirs.map(|(k, v)| (k, to_attribute(v))).collect())
}

fn to_attribute(value: AttributeValue) -> Attribute {
    let bytes = |b: Blob| b.into_inner();
    match value {
        AttributeValue::S(v) => Attribute::S(v),
        AttributeValue::N(v) => Attribute::N(v),
        AttributeValue::B(v) => Attribute::B(bytes(v)),
        AttributeValue::Bool(v) => Attribute::Bool(v),
        AttributeValue::Null(v) => Attribute::Null(v),
        AttributeValue::L(v) => Attribute::L(v.into_iter().map(to_attribute).collect()),
        AttributeValue::M(v) => {
            Attribute::M(v.into_iter().map(|(k, v)| (k, to_attribute(v))).collect())
        }
        AttributeValue::Ss(v) => Attribute::Ss(v),
        AttributeValue::Ns(v) => Attribute::Ns(v),
        AttributeValue::Bs(v) => Attribute::Bs(v.into_iter().map(bytes).collect()),
        _ => Attribute::Unknown,
    }
}

fn to_value(attribute: &Attribute) -> Result<AttributeValue, StoreError> {
    let list = |items: &[Attribute]| items.iter().map(to_value).collect::<Result<_, _>>();
    Ok(match attribute {
        Attribute::S(v) => AttributeValue::S(v.clone()),
        Attribute::N(v) => AttributeValue::N(v.clone()),
        Attribute::B(v) => AttributeValue::B(Blob::new(v.clone())),
        Attribute::Bool(v) => AttributeValue::Bool(*v),
        Attribute::Null(v) => AttributeValue::Null(*v),
        Attribute::L(v) => AttributeValue::L(list(v)?),
        Attribute::M(v) => AttributeValue::M(
            v.iter()
                .map(|(k, v)| Ok((k.clone(), to_value(v)?)))
                .collect::<Result<_, StoreError>>()?,
        ),
        Attribute::Ss(v) => AttributeValue::Ss(v.clone()),
        Attribute::Ns(v) => AttributeValue::Ns(v.clone()),
        Attribute::Bs(v) => AttributeValue::Bs(v.iter().map(|b| Blob::new(b.clone())).collect()),
        Attribute::Unknown => {
            return Err(StoreError::Failed(
                "the item holds an attribute of a type this build cannot write back".into(),
            ))
        }
    })
}

/// What a save writes as the session item, taking the plan's value: every attribute kept as
/// read (so other tools' survive; the version condition makes that safe), the new value and
/// bookkeeping, and what a listing shows. The plan's `expires_at` is set by `plan_expiry`.
pub fn session_item(
    schema: &KeySchema,
    session: &SessionKey,
    read: &Snapshot,
    changes: Changes<'_>,
    plan: &mut Plan,
    now: Now,
) -> Result<Item, StoreError> {
    let mut item: Item = read
        .kept
        .0
        .iter()
        .map(|(k, v)| Ok((k.clone(), to_value(v)?)))
        .collect::<Result<_, StoreError>>()?;
    item.extend(schema.key(session.as_str()));
    let value = std::mem::take(&mut plan.value);
    item.insert(schema.value_attribute.clone(), s(value));
    item.insert(attr::VERSION.into(), n(read.version.next()));
    // What a listing shows: whose session, which, how long, how it began, its title.
    if let Some(owner) = read.owner.as_deref().or(changes.owner) {
        item.insert(attr::OWNER_KEY.into(), s(owner));
    }
    item.insert(attr::SESSION_ID.into(), s(session.session_id()));
    item.insert(attr::RUN_COUNT.into(), n(plan.runs_kept));
    // MAX_RUNS bounds every copy of a run's text: once the first run is dropped, the preview
    // is the oldest kept message (the item's first run always is).
    let end = read.layout.first_run + read.memory.runs.len() as u64 + 1;
    let dropped = changes.memory.max_runs.is_some_and(|max| end > max);
    let preview = read.preview.clone().filter(|_| !dropped).or_else(|| {
        let first = changes.memory.runs.first()?;
        Some(preview_of(&first.input))
    });
    if let Some(preview) = preview {
        item.insert(attr::PREVIEW.into(), s(preview));
    }
    if let Some(title) = &read.title {
        item.insert(attr::TITLE.into(), s(title.as_str()));
    }
    put_layout(&mut item, &plan.layout);
    item.insert(attr::UPDATED_AT.into(), n(now.secs));
    item.insert(attr::ACTIVE_MS.into(), n(now.millis));
    item.entry(attr::CREATED_AT.into())
        .or_insert_with(|| n(now.secs));
    match plan.expires_at {
        Some(e) => item.insert(attr::EXPIRES_AT.into(), n(e)),
        None => item.remove(attr::EXPIRES_AT),
    };
    if let Some(summary) = changes.summary.or(read.summary.as_ref()) {
        item.insert(attr::SUMMARY.into(), s(summary.text.as_str()));
        item.insert(attr::SUMMARY_THROUGH.into(), s(summary.through.as_str()));
    }
    if let Some(first) = changes.window_from.or(read.window_from.as_deref()) {
        item.insert(attr::WINDOW_FROM.into(), s(first));
    }
    if let Some(scale) = changes.token_scale.or(read.token_scale) {
        item.insert(attr::TOKEN_SCALE.into(), n(scale));
    }
    Ok(item)
}

/// A page or part a save creates, expiring with the plan's side items.
pub fn side_item(
    schema: &KeySchema,
    session: &SessionKey,
    plan: &Plan,
    new: &NewItem,
    now: Now,
) -> Item {
    let mut item = schema.key(new.key(&plan.layout, session));
    item.insert(attr::CREATED_AT.into(), n(now.secs));
    match new {
        NewItem::Page { first, value, .. } => {
            item.insert(attr::KIND.into(), s(attr::KIND_RUNS));
            item.insert(attr::FIRST.into(), n(*first));
            item.insert(attr::PAGE_VALUE.into(), s(value.as_str()));
        }
        NewItem::Part {
            run_id,
            field,
            text,
            ..
        } => {
            item.insert(attr::KIND.into(), s(attr::KIND_PART));
            item.insert(attr::RUN.into(), s(run_id.as_str()));
            item.insert(attr::FIELD.into(), s(field.name()));
            item.insert(attr::TEXT.into(), s(text.as_str()));
        }
    }
    if let Some(e) = plan.side_expires_at {
        item.insert(attr::EXPIRES_AT.into(), n(e));
    }
    item
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
    let last = layout.last_runs.iter().map(|id| s(id.as_str())).collect();
    set(attr::LAST_RUNS, Some(AttributeValue::L(last)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::SessionId;

    fn session() -> SessionKey {
        SessionKey::new(&SessionId::parse("s").unwrap(), None)
    }

    #[test]
    fn other_tools_attributes_are_written_back_as_read() {
        let schema = KeySchema::default();
        let mut item = schema.key("s");
        item.insert("value".into(), s(Memory::default().encode()));
        item.insert(attr::VERSION.into(), n(4));
        let theirs = AttributeValue::M(HashMap::from([
            ("n".to_owned(), AttributeValue::N("1.50".into())),
            ("b".to_owned(), AttributeValue::B(Blob::new(vec![0, 255]))),
            (
                "l".to_owned(),
                AttributeValue::L(vec![AttributeValue::Null(true)]),
            ),
            ("ss".to_owned(), AttributeValue::Ss(vec!["x".into()])),
        ]));
        item.insert("theirs".into(), theirs.clone());
        item.insert(attr::CREATED_AT.into(), n(7));
        let read = decode_session(item, &schema).unwrap();
        assert_eq!(read.version, Version::At(4));
        let memory = Memory::default();
        let changes = Changes {
            memory: &memory,
            receipt: None,
            summary: None,
            window_from: None,
            token_scale: None,
            owner: None,
        };
        let mut plan = super::super::policy::plan_save(&read.layout, &[], &memory, 4096).unwrap();
        let now = Now {
            secs: 100,
            millis: 100_000,
        };
        let out = session_item(&schema, &session(), &read, changes, &mut plan, now).unwrap();
        assert_eq!(out["theirs"], theirs);
        assert_eq!(out[attr::CREATED_AT], n(7));
        assert_eq!(out[attr::VERSION], n(5));
        assert!(!out.contains_key(attr::EXPIRES_AT));
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
