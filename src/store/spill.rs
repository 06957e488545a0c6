//! The size policy, as pure functions: every item stays under DynamoDB's 400 KB, and a run of
//! any size a model gives is kept. A run too large for its slot keeps a shortened text there
//! (griptape reads a valid run) and its whole texts go to parts (docs/storage.md, "Items").

use super::keys::part_key;
use super::StoreError;
use crate::input::SessionKey;
use crate::memory::{Format, Run};

/// Largest text of one part of a spilled run (UTF-8 bytes, as DynamoDB counts them).
pub const PART_MAX_BYTES: usize = 256 * 1024;
/// The most text one turn spills into parts (a larger reply is refused, not stored).
pub const MAX_SPILL_BYTES: usize = 2560 * 1024;
/// How much of a spilled text the slot (and griptape's view) keeps.
pub const INLINE_CHARS: usize = 2000;

/// Where a spilled run's full texts are: parts per field, and the run's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spill {
    pub run: u64,
    pub input_parts: u32,
    pub output_parts: u32,
}

impl Spill {
    pub fn encode(&self) -> String {
        format!("{}:{}:{}", self.run, self.input_parts, self.output_parts)
    }

    pub fn parse(text: &str) -> Option<Spill> {
        let mut it = text.split(':').map(|p| p.parse::<u64>().ok());
        let (run, i, o) = (it.next()??, it.next()??, it.next()??);
        if it.next().is_some() {
            return None;
        }
        Some(Spill {
            run,
            input_parts: u32::try_from(i).ok()?,
            output_parts: u32::try_from(o).ok()?,
        })
    }

    /// The keys of its parts, under `generation`.
    pub fn part_keys(&self, session: &SessionKey, generation: &str, run_id: &str) -> Vec<String> {
        let field = |field: Field, parts: u32| {
            (1..=parts).map(move |p| part_key(session, generation, run_id, field.name(), p))
        };
        field(Field::Input, self.input_parts)
            .chain(field(Field::Output, self.output_parts))
            .collect()
    }
}

/// Which text of a run a part holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Input,
    Output,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Input => "input",
            Field::Output => "output",
        }
    }
}

/// One part of a spilled run's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub run_id: String,
    pub field: Field,
    pub part: u32,
    pub text: String,
}

impl Part {
    pub fn key(&self, session: &SessionKey, generation: &str) -> String {
        part_key(
            session,
            generation,
            &self.run_id,
            self.field.name(),
            self.part,
        )
    }
}

/// A run too big for its slot (over `spill_over` bytes as JSON): the shortened run the slot
/// keeps, where its texts are, and the parts; `None` when it fits.
pub fn spill_slot(
    run: &Run,
    slot: u64,
    format: Format,
    spill_over: usize,
) -> Result<Option<(Run, Spill, Vec<Part>)>, StoreError> {
    if run.encoded_len(format) <= spill_over {
        return Ok(None);
    }
    let mut parts = Vec::new();
    let (short, spill) = spill_run(run, slot, &mut parts);
    let bytes: usize = parts.iter().map(|p| p.text.len()).sum();
    if bytes > MAX_SPILL_BYTES {
        return Err(StoreError::TooLarge(bytes));
    }
    Ok(Some((short, spill, parts)))
}

/// Run `number`'s long texts as parts, and the shortened run kept instead.
fn spill_run(run: &Run, number: u64, parts: &mut Vec<Part>) -> (Run, Spill) {
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
            parts.push(Part {
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

/// The start of a long text and a note saying where the rest is.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_run_spills_into_parts_and_its_slot_stays_small() {
        let reply = "語".repeat(350_000); // ~1 MB of UTF-8, ~2 MB as escaped JSON
        let run = Run::new("hi", reply.clone());
        let (short, spill, parts) = spill_slot(&run, 7, Format::Seed, 48 * 1024)
            .unwrap()
            .expect("spilled");
        assert!(short.output.len() < 20_000, "{}", short.output.len());
        assert_eq!(short.id, run.id);
        assert!(parts.iter().all(|p| p.text.len() <= PART_MAX_BYTES));
        let whole: String = parts.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(whole, reply);
        assert_eq!((spill.run, spill.input_parts), (7, 0));
        assert_eq!(spill.output_parts as usize, parts.len());
        assert!(spill_slot(&Run::new("a", "b"), 0, Format::Seed, 1024)
            .unwrap()
            .is_none());
    }

    #[test]
    fn more_than_a_transaction_can_hold_is_refused() {
        let run = Run::new("hi", "z".repeat(MAX_SPILL_BYTES + 1));
        let err = spill_slot(&run, 0, Format::Seed, 48 * 1024).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge(_)));
    }

    #[test]
    fn spills_round_trip_and_name_their_parts() {
        let spill = Spill {
            run: 5,
            input_parts: 1,
            output_parts: 2,
        };
        assert_eq!(Spill::parse(&spill.encode()), Some(spill));
        assert_eq!(Spill::parse("1:2"), None);
        let session = SessionKey::new(&crate::input::SessionId::parse("s").unwrap(), None);
        assert_eq!(
            spill.part_keys(&session, "g1", "r"),
            [
                "s#g1#part#r#input#0001",
                "s#g1#part#r#output#0001",
                "s#g1#part#r#output#0002"
            ]
        );
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
