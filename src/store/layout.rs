//! A session item's bookkeeping: its generation (which names its side items), the pages of
//! older runs a migrated session keeps, its spilled runs, and the generations a delete still
//! owes a cleanup. Pure data and key rules; see `docs/storage.md`.

use std::collections::BTreeMap;

use super::keys::{page_key, receipt_key, run_key, summary_key};
use super::spill::Spill;
use crate::input::{IdempotencyKey, SessionKey};
use crate::memory::new_run_id;

/// The generation of sessions written by the earliest session-chat releases, whose pages are
/// at `<session>#archive#<n:08>`.
pub const LEGACY_GENERATION: &str = "archive";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Names this incarnation of the session's side items.
    pub generation: String,
    /// The number of the first run after the pages (a migrated session's first slot).
    pub first_run: u64,
    /// Live pages of older runs, oldest first: (page number, number of its first run).
    pub pages: Vec<(u64, u64)>,
    /// The number the next new page gets.
    pub pages_next: u64,
    /// Runs whose texts are in parts, by run id.
    pub spilled: BTreeMap<String, Spill>,
    /// When the pages and parts expire (epoch seconds), if they do.
    pub archive_expires_at: Option<u64>,
    /// Layouts of deleted generations whose leftovers a delete has not finished removing.
    pub cleanup: Vec<Layout>,
    /// A deleted log generation's slots, `base..next`, and its summary (only in cleanup lists).
    pub log: Option<(u64, u64)>,
}

impl Layout {
    pub fn new_generation() -> Layout {
        Layout::empty(new_run_id())
    }

    pub fn empty(generation: String) -> Layout {
        Layout {
            generation,
            first_run: 0,
            pages: Vec::new(),
            pages_next: 1,
            spilled: BTreeMap::new(),
            archive_expires_at: None,
            cleanup: Vec::new(),
            log: None,
        }
    }

    /// Whether anything is stored beside the session item.
    pub fn has_side_items(&self) -> bool {
        !self.pages.is_empty() || !self.spilled.is_empty()
    }

    /// Run numbers covered by page `i` of `pages`: from its first to the next page's first (or
    /// the item's first run).
    pub fn page_end(&self, i: usize) -> u64 {
        self.pages.get(i + 1).map_or(self.first_run, |p| p.1)
    }

    pub fn page_key(&self, session: &SessionKey, page: u64) -> String {
        page_key(session, &self.generation, page)
    }

    pub fn receipt_key(&self, session: &SessionKey, key: &IdempotencyKey) -> String {
        receipt_key(session, &self.generation, key)
    }

    /// Every side item key of this layout: pages and parts (receipts are not listed: they
    /// expire by themselves and no later generation reaches them).
    pub fn side_keys(&self, session: &SessionKey) -> Vec<String> {
        let mut keys: Vec<String> = self
            .pages
            .iter()
            .map(|(page, _)| self.page_key(session, *page))
            .collect();
        for (run_id, spill) in &self.spilled {
            keys.extend(spill.part_keys(session, &self.generation, run_id));
        }
        if let Some((base, next)) = self.log {
            keys.extend((base..next).map(|slot| run_key(session, &self.generation, slot)));
            keys.push(summary_key(session, &self.generation));
        }
        keys
    }

    /// One line, for a tombstone's or a new session's `cleanup` list:
    /// `<generation> <page>:<first>,... <run>=<spill>,...[ <base>-<next>]`, the last for a
    /// log generation's slots.
    pub fn encode_for_cleanup(&self) -> String {
        let spilled: Vec<String> = self
            .spilled
            .iter()
            .map(|(id, s)| format!("{id}={}", s.encode()))
            .collect();
        let mut line = format!(
            "{} {} {}",
            self.generation,
            encode_pages(&self.pages),
            spilled.join(",")
        );
        if let Some((base, next)) = self.log {
            line.push_str(&format!(" {base}-{next}"));
        }
        line
    }

    pub fn parse_cleanup(text: &str) -> Option<Layout> {
        let mut parts = text.split(' ');
        let mut layout = Layout::empty(parts.next()?.to_owned());
        layout.pages = parse_pages(parts.next().unwrap_or(""))?;
        for entry in parts
            .next()
            .unwrap_or("")
            .split(',')
            .filter(|e| !e.is_empty())
        {
            let (id, spill) = entry.split_once('=')?;
            layout.spilled.insert(id.to_owned(), Spill::parse(spill)?);
        }
        if let Some(range) = parts.next() {
            let (base, next) = range.split_once('-')?;
            let (base, next) = (base.parse().ok()?, next.parse().ok()?);
            layout.log = (base <= next).then_some((base, next));
            layout.log?;
        }
        parts.next().is_none().then_some(layout)
    }
}

/// `"<page>:<first run>,..."`.
pub fn encode_pages(pages: &[(u64, u64)]) -> String {
    let pages: Vec<String> = pages.iter().map(|(p, f)| format!("{p}:{f}")).collect();
    pages.join(",")
}

pub fn parse_pages(text: &str) -> Option<Vec<(u64, u64)>> {
    text.split(',')
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (page, first) = entry.split_once(':')?;
            Some((page.parse().ok()?, first.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::SessionId;

    #[test]
    fn cleanup_lines_round_trip() {
        let mut layout = Layout::empty("abc".into());
        layout.pages = vec![(3, 10), (4, 25)];
        layout.spilled.insert(
            "r1".into(),
            Spill {
                run: 30,
                input_parts: 0,
                output_parts: 4,
            },
        );
        let line = layout.encode_for_cleanup();
        let back = Layout::parse_cleanup(&line).unwrap();
        assert_eq!(back.pages, layout.pages);
        assert_eq!(back.spilled, layout.spilled);
        assert_eq!(
            Layout::parse_cleanup("g  ").unwrap().pages,
            Vec::<(u64, u64)>::new()
        );
        let mut log = Layout::empty("g2".into());
        log.log = Some((4, 9));
        let back = Layout::parse_cleanup(&log.encode_for_cleanup()).unwrap();
        assert_eq!(back.log, Some((4, 9)));
        assert!(Layout::parse_cleanup("g   9-4").is_none());
    }

    #[test]
    fn side_keys_name_the_generation() {
        let session = SessionKey::new(&SessionId::parse("s").unwrap(), None);
        let mut layout = Layout::empty("g1".into());
        layout.pages = vec![(1, 0)];
        layout.spilled.insert(
            "r".into(),
            Spill {
                run: 5,
                input_parts: 1,
                output_parts: 2,
            },
        );
        assert_eq!(
            layout.side_keys(&session),
            [
                "s#g1#00000001",
                "s#g1#part#r#input#0001",
                "s#g1#part#r#output#0001",
                "s#g1#part#r#output#0002"
            ]
        );
    }
}
