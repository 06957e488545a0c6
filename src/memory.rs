//! The conversation memory and its stored format.
//!
//! A session's memory is an ordered list of runs (one user input, one assistant output). It is
//! stored as the seed's `ConversationMemory` JSON, byte for byte as griptape writes it with
//! Python's `json.dumps` (`", "` / `": "` separators, non-ASCII escaped), so a table can be shared
//! with the Python original. Keys we do not use are kept and written back, so a load and save never
//! loses what another writer put there.

use std::fmt::Write as _;
use std::io;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// One exchange: what the user said and what the model answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// 32 lowercase hex digits, like griptape's `uuid4().hex`.
    pub id: String,
    pub input: String,
    pub output: String,
    /// Keys of the stored run that we do not interpret, kept for the round trip.
    extra: Map<String, Value>,
}

impl Run {
    /// Bytes this run takes in the stored JSON.
    pub fn encoded_len(&self) -> usize {
        python_json(self, 128).len()
    }

    /// A new run with a fresh random id.
    pub fn new(input: impl Into<String>, output: impl Into<String>) -> Self {
        Run {
            id: new_run_id(),
            input: input.into(),
            output: output.into(),
            extra: Map::new(),
        }
    }
}

/// A random 32-hex-digit id shaped like a version-4 UUID.
pub fn new_run_id() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut id = String::with_capacity(32);
    for b in bytes {
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// The whole memory of one session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    pub runs: Vec<Run>,
    /// Oldest runs beyond this are dropped when a run is added (`null` in the seed).
    pub max_runs: Option<u64>,
    /// Top-level keys we do not interpret, kept for the round trip.
    extra: Map<String, Value>,
}

/// Why a stored `value` could not be read as memory.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("stored memory is not valid: {0}")]
pub struct DecodeError(String);

impl DecodeError {
    pub fn new(reason: impl Into<String>) -> Self {
        DecodeError(reason.into())
    }
}

impl Memory {
    /// Appends a run, then drops the oldest runs beyond `max_runs`.
    pub fn push(&mut self, run: Run) {
        self.runs.push(run);
        if let Some(max) = self.max_runs {
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            if self.runs.len() > max {
                let excess = self.runs.len() - max;
                self.runs.drain(..excess);
            }
        }
    }

    /// The first `n` runs, as a memory of their own.
    pub fn with_prefix(&self, n: usize) -> Memory {
        Memory::with_runs(self.runs[..n.min(self.runs.len())].to_vec())
    }

    /// A memory of just these runs (an archive chunk).
    pub fn with_runs(runs: Vec<Run>) -> Memory {
        Memory {
            runs,
            ..Memory::default()
        }
    }

    /// Reads the stored JSON. Anything that is not the seed's shape is an error, never a guess.
    pub fn decode(text: &str) -> Result<Memory, DecodeError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| DecodeError(format!("not JSON: {e}")))?;
        let Value::Object(mut top) = value else {
            return Err(DecodeError("not a JSON object".into()));
        };
        match top.remove("type") {
            Some(Value::String(t)) if t == "ConversationMemory" => {}
            Some(other) => {
                return Err(DecodeError(format!(
                    "type is {other}, expected \"ConversationMemory\""
                )))
            }
            None => return Err(DecodeError("no \"type\" key".into())),
        }
        let runs = match top.remove("runs") {
            Some(Value::Array(runs)) => runs,
            Some(_) => return Err(DecodeError("\"runs\" is not a list".into())),
            None => return Err(DecodeError("no \"runs\" key".into())),
        };
        let max_runs = match top.remove("max_runs") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .ok_or_else(|| DecodeError(format!("max_runs {n} is not a count")))?,
            ),
            Some(other) => return Err(DecodeError(format!("max_runs {other} is not a count"))),
        };
        let runs = runs
            .into_iter()
            .enumerate()
            .map(|(i, run)| decode_run(run).map_err(|e| DecodeError(format!("run {i}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Memory {
            runs,
            max_runs,
            extra: top,
        })
    }

    /// The stored JSON, formatted as Python's `json.dumps` formats it.
    pub fn encode(&self) -> String {
        python_json(self, 256 + self.runs.len() * 128)
    }
}

/// JSON as Python's `json.dumps` writes it.
fn python_json(value: &impl Serialize, capacity: usize) -> String {
    let mut out = Vec::with_capacity(capacity);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Writing into a Vec cannot fail, and every map key here is a string.
    if value.serialize(&mut ser).is_err() {
        unreachable!("serializing memory into a Vec cannot fail");
    }
    // serde_json only ever writes UTF-8, and the formatter writes ASCII escapes.
    String::from_utf8(out).unwrap_or_default()
}

fn decode_run(run: Value) -> Result<Run, String> {
    let Value::Object(mut run) = run else {
        return Err("not an object".into());
    };
    match run.remove("type") {
        Some(Value::String(t)) if t == "Run" => {}
        _ => return Err("type is not \"Run\"".into()),
    }
    let mut text = |key: &str| match run.remove(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("\"{key}\" is not a string")),
        None => Err(format!("no \"{key}\"")),
    };
    let id = text("id")?;
    let input = text("input")?;
    let output = text("output")?;
    Ok(Run {
        id,
        input,
        output,
        extra: run,
    })
}

impl Serialize for Run {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(4 + self.extra.len()))?;
        map.serialize_entry("type", "Run")?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("input", &self.input)?;
        map.serialize_entry("output", &self.output)?;
        for (k, v) in &self.extra {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

struct Runs<'a>(&'a [Run]);

impl Serialize for Runs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for run in self.0 {
            seq.serialize_element(run)?;
        }
        seq.end()
    }
}

impl Serialize for Memory {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3 + self.extra.len()))?;
        map.serialize_entry("type", "ConversationMemory")?;
        map.serialize_entry("runs", &Runs(&self.runs))?;
        for (k, v) in &self.extra {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry("max_runs", &self.max_runs)?;
        map.end()
    }
}

/// Formats JSON like Python's `json.dumps` with its defaults, so our items are byte-identical to
/// griptape's: `", "` and `": "` separators, and every non-ASCII or DEL character as `\uXXXX`.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() && c != '\x7f' {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The item the seed shows for `user-id-123`, as stored.
    const SEED_USER: &str = r#"{"type": "ConversationMemory", "runs": [{"type": "Run", "id": "8c403fb92b134b14a0af8847e52e6212", "input": "Hello my name is Collin.", "output": "Hello Collin! How can I assist you today?"}, {"type": "Run", "id": "706d9fb072ca49e192bfed7fc1964925", "input": "What is my name?", "output": "Your name is Collin."}], "max_runs": null}"#;

    #[test]
    fn seed_item_round_trips_byte_for_byte() {
        let memory = Memory::decode(SEED_USER).unwrap();
        assert_eq!(memory.runs.len(), 2);
        assert_eq!(memory.runs[1].output, "Your name is Collin.");
        assert_eq!(memory.encode(), SEED_USER);
    }

    #[test]
    fn non_ascii_is_escaped_like_python() {
        let mut m = Memory::default();
        let mut run = Run::new("héllo 👋 \u{7f}\n\"", "ok");
        run.id = "0".repeat(32);
        m.push(run);
        // python3 -c 'import json; print(json.dumps("héllo 👋 \x7f\n\""))'
        assert!(m
            .encode()
            .contains(r#""input": "h\u00e9llo \ud83d\udc4b \u007f\n\"""#));
        assert_eq!(Memory::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn unknown_keys_survive() {
        let text = r#"{"type": "ConversationMemory", "runs": [{"type": "Run", "id": "a", "input": "i", "output": "o", "meta": {"k": 1}}], "autoprune": true, "max_runs": 5}"#;
        let m = Memory::decode(text).unwrap();
        assert_eq!(m.max_runs, Some(5));
        let again = Memory::decode(&m.encode()).unwrap();
        assert_eq!(again, m);
        assert!(m.encode().contains(r#""meta": {"k": 1}"#));
        assert!(m.encode().contains(r#""autoprune": true"#));
    }

    #[test]
    fn max_runs_drops_the_oldest() {
        let mut m = Memory {
            max_runs: Some(2),
            ..Memory::default()
        };
        for i in 0..5 {
            m.push(Run::new(format!("in {i}"), "out"));
        }
        let inputs: Vec<_> = m.runs.iter().map(|r| r.input.as_str()).collect();
        assert_eq!(inputs, ["in 3", "in 4"]);
    }

    #[test]
    fn bad_values_are_errors_not_guesses() {
        for bad in [
            "",
            "null",
            "[]",
            "{\"runs\": []}",
            "{\"type\": \"Other\", \"runs\": []}",
            "{\"type\": \"ConversationMemory\", \"runs\": {}}",
            "{\"type\": \"ConversationMemory\", \"runs\": [1]}",
            "{\"type\": \"ConversationMemory\", \"runs\": [{\"type\": \"Run\", \"id\": \"a\", \"input\": 1, \"output\": \"o\"}]}",
            "{\"type\": \"ConversationMemory\", \"runs\": [], \"max_runs\": -1}",
        ] {
            assert!(Memory::decode(bad).is_err(), "{bad:?} decoded");
        }
    }

    #[test]
    fn run_ids_look_like_uuid4_hex() {
        let id = new_run_id();
        assert_eq!(id.len(), 32);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(&id[12..13], "4");
        assert_ne!(id, new_run_id());
    }
}
