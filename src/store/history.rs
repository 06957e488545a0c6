//! The rules of a history page, as pure functions: which run numbers a page may hold, when it is
//! full, where the pages before and after it start. Both stores read through them, so they page
//! alike; `docs/storage.md` "Reads" describes them.

use std::borrow::Cow;

use super::layout::Layout;
use super::spill::PART_MAX_BYTES;
use super::{Cursor, HistoryPage, PageLimit, Span, StoreError};
use crate::memory::Run;

/// The run numbers a page may hold, `[start, stop)`, and how it fills: forward pages fill from
/// `start` and stop when full; backward pages take the `limit.runs` runs before `stop`, then
/// drop the oldest while over the byte budget.
#[derive(Debug, Clone)]
pub struct Window {
    pub start: u64,
    pub stop: u64,
    /// The number after the session's newest run.
    end: u64,
    /// Runs before this one are beyond `max_runs`: never returned.
    keep_from: u64,
    forward: bool,
    limit: PageLimit,
    generation: String,
}

impl Window {
    /// The window of `span` over a session whose runs end before run `end`, in `generation`.
    pub fn new(
        span: Span<'_>,
        limit: PageLimit,
        generation: &str,
        end: u64,
        max_runs: Option<u64>,
    ) -> Result<Window, StoreError> {
        let (Span::From(cursor) | Span::Before(cursor)) = span;
        if cursor.is_some_and(|c| c.generation != generation) {
            return Err(StoreError::InvalidCursor);
        }
        let keep_from = max_runs.map_or(0, |max| end.saturating_sub(max));
        let forward = matches!(span, Span::From(_));
        let (start, stop) = if forward {
            (cursor.map_or(0, |c| c.run).max(keep_from), end)
        } else {
            let stop = cursor.map_or(end, |c| c.run.min(end));
            (stop.saturating_sub(limit.runs as u64).max(keep_from), stop)
        };
        Ok(Window {
            start,
            stop,
            end,
            keep_from,
            forward,
            limit,
            generation: generation.to_owned(),
        })
    }

    /// Whether runs `[first, end)` (a page's) hold any the page may take.
    pub fn overlaps(&self, first: u64, end: u64) -> bool {
        end > self.start && first < self.stop
    }

    pub fn fill(self) -> Fill {
        Fill {
            window: self,
            runs: Vec::new(),
            bytes: 0,
            next: None,
            full: false,
        }
    }
}

/// A page being filled, run by run, oldest first.
#[derive(Debug)]
pub struct Fill {
    window: Window,
    runs: Vec<(u64, Run)>,
    bytes: usize,
    /// Where the next page starts, once a forward page is full.
    next: Option<u64>,
    full: bool,
}

impl Fill {
    pub fn window(&self) -> &Window {
        &self.window
    }

    /// A forward page that has refused a run: nothing more goes in.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Takes runs numbered from `first` on, as long as the page is not full.
    pub fn offer_all<'a>(
        &mut self,
        first: u64,
        runs: impl IntoIterator<Item = Cow<'a, Run>>,
        layout: &Layout,
    ) {
        for (i, run) in runs.into_iter().enumerate() {
            if self.offer(first + i as u64, run, layout) {
                return;
            }
        }
    }

    /// Takes run `number` if it is in the window; `true` once the page is full (forward reads
    /// stop at the limit, backward ones are cut from the front in [`Fill::finish`]).
    /// Offers run `number`; `true` once the page is full (a forward page's next run).
    pub fn offer(&mut self, number: u64, run: Cow<'_, Run>, layout: &Layout) -> bool {
        let w = &self.window;
        if number < w.start || number >= w.stop {
            return false;
        }
        let at_limit = self.runs.len() >= w.limit.runs
            || (self.bytes >= w.limit.bytes && !self.runs.is_empty());
        if w.forward && at_limit {
            self.next = Some(number);
            self.full = true;
            return true;
        }
        self.bytes += run_bytes(&run, layout);
        self.runs.push((number, run.into_owned()));
        false
    }

    /// The page: a backward one less its oldest runs while over the byte budget (one run
    /// always stays), with the cursors before and after it. Spilled runs still hold their
    /// inline text; the store reads their parts.
    /// Ends a forward page before run `number` (a slot still being written): its cursor
    /// points there, so the run is read once it is.
    pub fn stop_at(&mut self, number: u64) {
        if number < self.window.stop {
            self.next = Some(number);
            self.full = true;
        }
    }

    pub fn finish(mut self, layout: &Layout) -> HistoryPage {
        let w = &self.window;
        let mut next = self.next;
        if !w.forward {
            let mut drop = 0;
            while self.runs.len() - drop > 1 && self.bytes > w.limit.bytes {
                self.bytes -= run_bytes(&self.runs[drop].1, layout);
                drop += 1;
            }
            self.runs.drain(..drop);
            next = (w.stop < w.end).then_some(w.stop);
        }
        let first = self.runs.first().map_or(w.start, |(number, _)| *number);
        let at = |run| Cursor {
            generation: w.generation.clone(),
            run,
        };
        HistoryPage {
            next: next.map(at),
            prev: (first > w.keep_from).then(|| at(first)),
            runs: self.runs.into_iter().map(|(_, run)| run).collect(),
            notes: Default::default(),
        }
    }
}

/// About the bytes a run adds to a page's JSON, its spilled parts counted in full.
fn run_bytes(run: &Run, layout: &Layout) -> usize {
    let spill = layout.spilled.get(&run.id).map_or(0, |s| {
        (s.input_parts + s.output_parts) as usize * PART_MAX_BYTES
    });
    run.input.len() + run.output.len() + spill + 96
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: PageLimit = PageLimit {
        runs: 3,
        bytes: 1 << 20,
    };

    fn runs(n: usize) -> Vec<Run> {
        (0..n).map(|i| Run::new(format!("in {i}"), "out")).collect()
    }

    /// Pages runs numbered from `first`, all in the item.
    fn page(span: Span<'_>, limit: PageLimit, first: u64, held: &[Run]) -> HistoryPage {
        let mut layout = Layout::empty("g".into());
        layout.first_run = first;
        let end = first + held.len() as u64;
        let mut fill = Window::new(span, limit, "g", end, None).unwrap().fill();
        fill.offer_all(first, held.iter().map(Cow::Borrowed), &layout);
        fill.finish(&layout)
    }

    fn at(run: u64) -> Cursor {
        Cursor {
            generation: "g".into(),
            run,
        }
    }

    #[test]
    fn forward_and_backward_pages_meet_at_the_same_cursors() {
        let held = runs(7);
        let first = page(Span::From(None), LIMIT, 0, &held);
        assert_eq!(first.runs, held[..3]);
        assert_eq!((first.next, first.prev), (Some(at(3)), None));
        let last = page(Span::Before(None), LIMIT, 0, &held);
        assert_eq!(last.runs, held[4..]);
        assert_eq!((last.next, last.prev), (None, Some(at(4))));
        let before = page(Span::Before(Some(&at(4))), LIMIT, 0, &held);
        assert_eq!(before.runs, held[1..4]);
        assert_eq!((before.next, before.prev), (Some(at(4)), Some(at(1))));
    }

    #[test]
    fn a_backward_page_over_its_bytes_keeps_its_newest_run() {
        let held = runs(4);
        let tight = PageLimit { runs: 4, bytes: 1 };
        let page = page(Span::Before(None), tight, 10, &held);
        assert_eq!(page.runs, held[3..]);
        assert_eq!(page.prev, Some(at(13)));
    }

    #[test]
    fn max_runs_bounds_both_ways_and_cursors_name_their_generation() {
        let w = Window::new(Span::From(None), LIMIT, "g", 10, Some(4)).unwrap();
        assert_eq!((w.start, w.stop), (6, 10));
        let w = Window::new(Span::Before(Some(&at(8))), LIMIT, "g", 10, Some(4)).unwrap();
        assert_eq!((w.start, w.stop), (6, 8));
        let other = Cursor {
            generation: "h".into(),
            run: 1,
        };
        let err = Window::new(Span::From(Some(&other)), LIMIT, "g", 10, None).unwrap_err();
        assert!(matches!(err, StoreError::InvalidCursor));
    }
}
