//! The size policy, as pure functions: what a save writes so that every item stays under
//! DynamoDB's 400 KB, runs of any size are kept, and `MAX_RUNS` bounds what is kept.

use std::collections::HashSet;

use super::layout::{Field, Layout, Spill, LAST_RUNS};
use super::StoreError;
use crate::input::SessionKey;
use crate::memory::{Memory, Run};

/// Largest `value` of a page of older runs.
pub const PAGE_MAX_BYTES: usize = 300_000;
/// Largest text of one part of a spilled run (UTF-8 bytes, as DynamoDB counts them).
pub const PART_MAX_BYTES: usize = 256 * 1024;
/// The most text one save spills into parts, so the save's transaction stays within
/// DynamoDB's 4 MB (with the session item, up to two pages and a receipt).
pub const MAX_SPILL_BYTES: usize = 2560 * 1024;
/// How much of a spilled text the run in `value` keeps.
pub const INLINE_CHARS: usize = 2000;
/// New pages one save writes at most (a 400 KB item needs two).
pub const MAX_NEW_PAGES: usize = 4;
/// Side items one save removes at most when `MAX_RUNS` prunes; later saves go on.
pub const MAX_PRUNED: usize = 16;

/// An item a save creates beside the session item.
#[derive(Debug, Clone, PartialEq)]
pub enum NewItem {
    Page {
        page: u64,
        first: u64,
        value: String,
    },
    Part {
        run_id: String,
        field: Field,
        part: u32,
        text: String,
    },
}

/// A side item a save removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    Page(u64),
    Part {
        run_id: String,
        field: Field,
        part: u32,
    },
}

impl NewItem {
    /// Its key, under the generation of `layout`.
    pub fn key(&self, layout: &Layout, session: &SessionKey) -> String {
        match self {
            NewItem::Page { page, .. } => layout.page_key(session, *page),
            NewItem::Part {
                run_id,
                field,
                part,
                ..
            } => layout.part_key(session, run_id, *field, *part),
        }
    }
}

impl Removed {
    pub fn key(&self, layout: &Layout, session: &SessionKey) -> String {
        match self {
            Removed::Page(page) => layout.page_key(session, *page),
            Removed::Part {
                run_id,
                field,
                part,
            } => layout.part_key(session, run_id, *field, *part),
        }
    }
}

/// What one save writes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The session item's `value`.
    pub value: String,
    pub layout: Layout,
    pub new_items: Vec<NewItem>,
    pub removed: Vec<Removed>,
    /// Runs moved to new pages.
    pub archived_runs: usize,
    /// Runs kept, pages included (what a listing shows).
    pub runs_kept: u64,
    /// When the session item expires (epoch seconds); `None`: it does not. Set by
    /// [`plan_expiry`].
    pub expires_at: Option<u64>,
    /// When the side items this save writes expire.
    pub side_expires_at: Option<u64>,
}

/// Plans a save of `memory` over a session read with `read` layout and `read_ids` runs in its
/// item. New runs (ids not read) carry their full text. Expiry is planned apart
/// ([`plan_expiry`]): it depends on the clock and the settings, not on the runs.
pub fn plan_save(
    read: &Layout,
    read_ids: &[&str],
    memory: &Memory,
    max_item_bytes: usize,
) -> Result<Plan, StoreError> {
    let mut layout = read.clone();
    let read_set: HashSet<&str> = read_ids.iter().copied().collect();
    let mut removed = drop_runs(&mut layout, read_ids, memory);
    let (item_memory, mut new_items) = spill(&mut layout, &read_set, memory, max_item_bytes)?;
    let (item_memory, value, pages) = archive(&mut layout, item_memory, max_item_bytes);
    let archived_runs = pages.iter().map(|p| p.1).sum();
    new_items.extend(pages.into_iter().map(|p| p.0));
    let end = layout.first_run + item_memory.runs.len() as u64;
    if let Some(max) = memory.max_runs {
        prune(&mut layout, &mut removed, end.saturating_sub(max));
    }
    remember_new_runs(&mut layout, &read_set, memory);
    let live_from = layout.pages.first().map_or(layout.first_run, |p| p.1);
    let keep_from = memory.max_runs.map_or(0, |max| end.saturating_sub(max));
    Ok(Plan {
        value,
        layout,
        new_items,
        removed,
        archived_runs,
        runs_kept: end - live_from.max(keep_from).min(end),
        expires_at: None,
        side_expires_at: None,
    })
}

/// Runs dropped from the item's front (MAX_RUNS) are gone, with their parts.
fn drop_runs(layout: &mut Layout, read_ids: &[&str], memory: &Memory) -> Vec<Removed> {
    let kept: HashSet<&str> = memory.runs.iter().map(|r| r.id.as_str()).collect();
    let mut removed = Vec::new();
    for id in read_ids.iter().filter(|id| !kept.contains(*id)) {
        layout.first_run += 1;
        if let Some(spill) = layout.spilled.remove(*id) {
            removed.extend(parts_of(id, &spill));
        }
    }
    removed
}

/// New runs too big for the item keep a short inline text; the rest goes to parts. Returns
/// the memory the item holds and the parts.
fn spill(
    layout: &mut Layout,
    read: &HashSet<&str>,
    memory: &Memory,
    max_item_bytes: usize,
) -> Result<(Memory, Vec<NewItem>), StoreError> {
    let spill_over = max_item_bytes / 2;
    let mut parts = Vec::new();
    let mut runs = Vec::with_capacity(memory.runs.len());
    for (i, run) in memory.runs.iter().enumerate() {
        if read.contains(run.id.as_str()) || run.encoded_len(memory.format) <= spill_over {
            runs.push(run.clone());
            continue;
        }
        let (short, spill) = spill_run(run, layout.first_run + i as u64, &mut parts);
        runs.push(short);
        layout.spilled.insert(run.id.clone(), spill);
    }
    let spilled_bytes = part_bytes(&parts);
    if spilled_bytes > MAX_SPILL_BYTES {
        return Err(StoreError::TooLarge(spilled_bytes));
    }
    let mut item_memory = memory.clone();
    item_memory.runs = runs;
    Ok((item_memory, parts))
}

/// A run of the log layout too big for its slot (over `spill_over` bytes): the shortened run
/// the slot keeps, where its texts are, and the parts; `None` when it fits.
#[allow(clippy::type_complexity)]
pub fn spill_slot(
    run: &Run,
    slot: u64,
    format: crate::memory::Format,
    spill_over: usize,
) -> Result<Option<(Run, Spill, Vec<NewItem>)>, StoreError> {
    if run.encoded_len(format) <= spill_over {
        return Ok(None);
    }
    let mut parts = Vec::new();
    let (short, spill) = spill_run(run, slot, &mut parts);
    let bytes = part_bytes(&parts);
    if bytes > MAX_SPILL_BYTES {
        return Err(StoreError::TooLarge(bytes));
    }
    Ok(Some((short, spill, parts)))
}

/// The text bytes of the parts among `items`.
fn part_bytes(items: &[NewItem]) -> usize {
    items
        .iter()
        .map(|p| match p {
            NewItem::Part { text, .. } => text.len(),
            NewItem::Page { .. } => 0,
        })
        .sum()
}

/// Run `number`'s long texts as parts, and the shortened run the item keeps instead.
fn spill_run(run: &Run, number: u64, parts: &mut Vec<NewItem>) -> (Run, Spill) {
    let mut spill = Spill {
        run: number,
        input_parts: 0,
        output_parts: 0,
    };
    let mut inline = |text: &str, field: Field, count: &mut u32| -> String {
        if text.chars().count() <= INLINE_CHARS {
            return text.to_owned();
        }
        for (n, part) in split_text(text, PART_MAX_BYTES).into_iter().enumerate() {
            parts.push(NewItem::Part {
                run_id: run.id.clone(),
                field,
                part: n as u32 + 1,
                text: part.to_owned(),
            });
            *count += 1;
        }
        shortened(text)
    };
    let input = inline(&run.input, Field::Input, &mut spill.input_parts);
    let output = inline(&run.output, Field::Output, &mut spill.output_parts);
    (run.with_texts(input, output), spill)
}

/// Past the budget, the oldest runs move to pages; about half the budget stays. Returns the
/// memory the item keeps, its value, and each new page with its number of runs. The value is
/// encoded once on a turn that does not archive (the common case).
fn archive(
    layout: &mut Layout,
    item_memory: Memory,
    max_item_bytes: usize,
) -> (Memory, String, Vec<(NewItem, usize)>) {
    let value = item_memory.encode();
    if value.len() <= max_item_bytes {
        return (item_memory, value, Vec::new());
    }
    let (recent, pages) = split_for_size(&item_memory, max_item_bytes);
    let pages = pages
        .into_iter()
        .map(|page_memory| {
            let (page, first) = (layout.pages_next, layout.first_run);
            let runs = page_memory.runs.len();
            layout.pages_next += 1;
            layout.pages.push((page, first));
            layout.first_run += runs as u64;
            let value = page_memory.encode();
            (NewItem::Page { page, first, value }, runs)
        })
        .collect();
    let value = recent.encode();
    (recent, value, pages)
}

/// MAX_RUNS bounds everything kept: pages wholly before run `keep_from` go, with the parts of
/// the runs before it, at most [`MAX_PRUNED`] a save.
fn prune(layout: &mut Layout, removed: &mut Vec<Removed>, keep_from: u64) {
    while !layout.pages.is_empty() && layout.page_end(0) <= keep_from {
        if removed.len() >= MAX_PRUNED {
            break;
        }
        removed.push(Removed::Page(layout.pages.remove(0).0));
    }
    let old: Vec<String> = layout
        .spilled
        .iter()
        .filter(|(_, s)| s.run < keep_from)
        .map(|(id, _)| id.clone())
        .collect();
    for id in old {
        if removed.len() >= MAX_PRUNED {
            break;
        }
        if let Some(spill) = layout.spilled.remove(&id) {
            removed.extend(parts_of(&id, &spill));
        }
    }
}

/// The ids of the newest runs saved, to recognise a save whose answer was lost.
fn remember_new_runs(layout: &mut Layout, read: &HashSet<&str>, memory: &Memory) {
    let new = memory.runs.iter().filter(|r| !read.contains(r.id.as_str()));
    layout.last_runs.extend(new.map(|r| r.id.clone()));
    let excess = layout.last_runs.len().saturating_sub(LAST_RUNS);
    layout.last_runs.drain(..excess);
}

/// Plans when a save's items expire, with a session TTL of `ttl` seconds (`None`: off).
/// Side items never expire before their session: they get half a TTL more, and are pushed out
/// again before the session's expiry could pass theirs; with TTL off they stop expiring.
/// Returns the expiry to set first on the side items `read` has (`Some(None)`: remove it), if
/// they need it.
pub fn plan_expiry(
    plan: &mut Plan,
    read: &Layout,
    ttl: Option<u64>,
    now: u64,
) -> Option<Option<u64>> {
    let Some(ttl) = ttl else {
        plan.expires_at = None;
        plan.side_expires_at = None;
        plan.layout.archive_expires_at = None;
        return read.archive_expires_at.is_some().then_some(None);
    };
    let (session, side) = (now + ttl, now + ttl + ttl / 2);
    plan.expires_at = Some(session);
    plan.side_expires_at = Some(side);
    let due = read.archive_expires_at.is_none_or(|t| t < session);
    if read.has_side_items() && due {
        plan.layout.archive_expires_at = Some(side);
        return Some(Some(side));
    }
    if plan.layout.archive_expires_at.is_none() {
        plan.layout.archive_expires_at = Some(side);
    }
    None
}

fn parts_of(run_id: &str, spill: &Spill) -> Vec<Removed> {
    let part = |field, part| Removed::Part {
        run_id: run_id.to_owned(),
        field,
        part,
    };
    (1..=spill.input_parts)
        .map(|p| part(Field::Input, p))
        .chain((1..=spill.output_parts).map(|p| part(Field::Output, p)))
        .collect()
}

/// The start of a long text and a note saying where the rest is, for the run in `value`.
pub fn shortened(text: &str) -> String {
    let total = text.chars().count();
    let head: String = text.chars().take(INLINE_CHARS).collect();
    format!("{head} [... {total} characters in all; session-chat keeps the whole text beside this item]")
}

/// Splits text into pieces of at most `max_bytes` UTF-8 bytes, at character boundaries.
pub fn split_text(text: &str, max_bytes: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(max_bytes.max(4));
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// Splits the oldest runs off `memory` into pages when its JSON passes `max_bytes`, keeping
/// the newest runs that fit half the budget (always the newest one). Pages are filled up to
/// [`PAGE_MAX_BYTES`] whatever the budget, and at most [`MAX_NEW_PAGES`] are made; runs that
/// would need more stay in the item for the next save.
pub fn split_for_size(memory: &Memory, max_bytes: usize) -> (Memory, Vec<Memory>) {
    let total = memory.encode().len();
    if total <= max_bytes {
        return (memory.clone(), Vec::new());
    }
    let sizes: Vec<usize> = memory
        .runs
        .iter()
        .map(|r| r.encoded_len(memory.format) + 2)
        .collect();
    let keep_budget = max_bytes / 2;
    let mut kept_bytes = 0;
    let mut first_kept = memory.runs.len();
    while first_kept > 0 {
        let size = sizes[first_kept - 1];
        if first_kept < memory.runs.len() && kept_bytes + size > keep_budget {
            break;
        }
        kept_bytes += size;
        first_kept -= 1;
    }
    let mut pages: Vec<Vec<Run>> = Vec::new();
    let mut page: Vec<Run> = Vec::new();
    let mut page_bytes = 0;
    let mut moved = 0;
    for (run, size) in memory.runs[..first_kept].iter().zip(&sizes) {
        if !page.is_empty() && page_bytes + size > PAGE_MAX_BYTES - 256 {
            pages.push(std::mem::take(&mut page));
            page_bytes = 0;
            if pages.len() == MAX_NEW_PAGES {
                break;
            }
        }
        page_bytes += size;
        page.push(run.clone());
        moved += 1;
    }
    if !page.is_empty() && pages.len() < MAX_NEW_PAGES {
        pages.push(page);
    } else {
        moved -= page.len();
    }
    let mut recent = memory.clone();
    recent.runs.drain(..moved);
    let pages = pages
        .into_iter()
        .map(|runs| memory.with_runs(runs))
        .collect();
    (recent, pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(runs: usize, output_bytes: usize) -> Memory {
        let mut m = Memory::default();
        for i in 0..runs {
            m.push(Run::new(format!("message {i}"), "x".repeat(output_bytes)));
        }
        m
    }

    fn ids(m: &Memory) -> Vec<&str> {
        m.runs.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn small_sessions_are_not_split() {
        let m = memory(10, 100);
        let (recent, pages) = split_for_size(&m, 64 * 1024);
        assert_eq!(recent, m);
        assert!(pages.is_empty());
    }

    #[test]
    fn large_sessions_move_their_oldest_runs_to_bounded_pages() {
        let m = memory(400, 1000); // ~430 KB
        let (recent, pages) = split_for_size(&m, 100 * 1024);
        assert!(recent.encode().len() <= 50 * 1024 + 2048);
        assert!(pages.iter().all(|c| c.encode().len() <= PAGE_MAX_BYTES));
        assert_eq!(pages.len(), 2);
        let all: Vec<&Run> = pages
            .iter()
            .flat_map(|c| &c.runs)
            .chain(&recent.runs)
            .collect();
        assert_eq!(all.len(), 400);
        assert!(all.iter().zip(&m.runs).all(|(a, b)| *a == b));
    }

    #[test]
    fn a_lowered_budget_on_a_400_kb_item_needs_two_pages_not_a_hundred() {
        let m = memory(380, 1000);
        assert!(m.encode().len() > 395_000);
        let (recent, pages) = split_for_size(&m, 4096);
        assert!(pages.len() <= 2, "{} pages", pages.len());
        assert!(recent.encode().len() <= 4096);
        assert!(pages.iter().all(|c| c.encode().len() <= PAGE_MAX_BYTES));
    }

    #[test]
    fn the_newest_run_is_always_kept() {
        let mut m = memory(3, 10);
        m.push(Run::new("big", "y".repeat(50_000)));
        let (recent, pages) = split_for_size(&m, 20_000);
        assert_eq!(recent.runs.len(), 1);
        assert_eq!(recent.runs[0].input, "big");
        assert_eq!(pages.iter().map(|c| c.runs.len()).sum::<usize>(), 3);
    }

    #[test]
    fn a_huge_run_spills_into_parts_and_the_item_stays_small() {
        let read = memory(2, 10);
        let layout = Layout::empty("g".into());
        let mut m = read.clone();
        let reply = "語".repeat(350_000); // ~1 MB of UTF-8, ~2 MB as escaped JSON
        m.push(Run::new("hi", reply.clone()));
        let plan = plan_save(&layout, &ids(&read), &m, 96 * 1024).unwrap();
        assert!(plan.value.len() < 20_000, "{}", plan.value.len());
        let parts: Vec<&String> = plan
            .new_items
            .iter()
            .filter_map(|i| match i {
                NewItem::Part { text, .. } => Some(text),
                NewItem::Page { .. } => None,
            })
            .collect();
        assert!(parts.iter().all(|t| t.len() <= PART_MAX_BYTES));
        assert_eq!(parts.iter().map(|t| t.as_str()).collect::<String>(), reply);
        let spill = plan.layout.spilled[&m.runs[2].id];
        assert_eq!((spill.run, spill.input_parts), (2, 0));
        assert_eq!(spill.output_parts as usize, parts.len());
        assert_eq!(plan.layout.last_runs, [m.runs[2].id.clone()]);
    }

    #[test]
    fn more_than_a_transaction_can_hold_is_refused() {
        let mut m = Memory::default();
        m.push(Run::new("hi", "z".repeat(MAX_SPILL_BYTES + 1)));
        let err = plan_save(&Layout::empty("g".into()), &[], &m, 96 * 1024).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge(_)));
    }

    #[test]
    fn max_runs_prunes_pages_and_parts_beyond_it() {
        let mut layout = Layout::empty("g".into());
        layout.pages = vec![(1, 0), (2, 10), (3, 20)];
        layout.pages_next = 4;
        layout.first_run = 30;
        layout.spilled.insert(
            "old".into(),
            Spill {
                run: 5,
                input_parts: 0,
                output_parts: 2,
            },
        );
        let mut read = memory(5, 10); // runs 30..35
        read.max_runs = Some(8);
        let read_ids: Vec<String> = read.runs.iter().map(|r| r.id.clone()).collect();
        let read_ids: Vec<&str> = read_ids.iter().map(|s| s.as_str()).collect();
        let mut m = read.clone();
        m.push(Run::new("new", "n")); // 36 runs, keep the newest 8: from run 28
        let plan = plan_save(&layout, &read_ids, &m, 96 * 1024).unwrap();
        assert_eq!(plan.layout.pages, vec![(3, 20)]);
        assert!(plan.removed.contains(&Removed::Page(1)));
        assert!(plan.removed.contains(&Removed::Page(2)));
        assert_eq!(plan.removed.len(), 4, "two pages and two parts");
        assert!(plan.layout.spilled.is_empty());
    }

    #[test]
    fn runs_dropped_by_max_runs_advance_the_first_run() {
        let layout = Layout::empty("g".into());
        let read = memory(3, 10);
        let mut m = read.clone();
        m.max_runs = Some(3);
        m.push(Run::new("new", "n"));
        let plan = plan_save(&layout, &ids(&read), &m, 96 * 1024).unwrap();
        assert_eq!(plan.layout.first_run, 1);
    }

    #[test]
    fn side_items_never_expire_before_their_session() {
        let mut read = Layout::empty("g".into());
        read.pages = vec![(1, 0)];
        read.archive_expires_at = Some(1_000);
        let m = memory(1, 10);
        let mut plan = plan_save(&read, &[], &m, 96 * 1024).unwrap();
        // Their expiry would pass the session's: pushed out first, half a TTL past it.
        assert_eq!(
            plan_expiry(&mut plan, &read, Some(100), 950),
            Some(Some(1_100))
        );
        assert_eq!(plan.expires_at, Some(1_050));
        assert_eq!(plan.layout.archive_expires_at, Some(1_100));
        // Still later than the new session expiry: left alone.
        let mut plan = plan_save(&read, &[], &m, 96 * 1024).unwrap();
        assert_eq!(plan_expiry(&mut plan, &read, Some(100), 800), None);
        assert_eq!(plan.layout.archive_expires_at, Some(1_000));
        // TTL off: they stop expiring.
        let mut plan = plan_save(&read, &[], &m, 96 * 1024).unwrap();
        assert_eq!(plan_expiry(&mut plan, &read, None, 800), Some(None));
        assert_eq!((plan.expires_at, plan.side_expires_at), (None, None));
        assert_eq!(plan.layout.archive_expires_at, None);
    }

    #[test]
    fn text_splits_at_character_boundaries() {
        let text = "aé語😀".repeat(1000);
        let pieces = split_text(&text, 7);
        assert!(pieces.iter().all(|p| p.len() <= 7 && !p.is_empty()));
        assert_eq!(pieces.concat(), text);
        assert!(split_text("", 5).is_empty());
    }
}
