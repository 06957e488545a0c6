//! The conversation memory and its stored formats.
//!
//! A session's memory is an ordered list of runs (one user input, one assistant output), stored
//! as JSON in one of the three shapes griptape has written over its life:
//!
//! - [`Format::Seed`] (griptape <= 0.27, the recipe's): `{"type": "ConversationMemory", "runs":
//!   [{"type": "Run", "id", "input": "<text>", "output": "<text>"}], "max_runs": null}`;
//! - [`Format::Artifacts`] (0.28-0.30): the same envelope, `input`/`output` as `TextArtifact`s;
//! - [`Format::Griptape`] (0.31 and 1.x): `{"runs": [{"type": "Run", "id", "meta", "input":
//!   <TextArtifact>, "output": <TextArtifact>}], "metadata": {}}`.
//!
//! A memory keeps the shape it was read in, and every stored run and key is written back exactly
//! as read (in its order), so sessions shared with griptape never change shape or lose fields.
//! The JSON is written byte for byte as Python's `json.dumps` writes it (`", "` / `": "`
//! separators, non-ASCII escaped).

use std::fmt::Write as _;
use std::io;

use serde::Serialize;
use serde_json::{json, Map, Value};

/// Which of griptape's shapes a memory is stored in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// The recipe's shape, plain-text runs (griptape <= 0.27).
    #[default]
    Seed,
    /// The recipe's envelope with `TextArtifact` inputs and outputs (griptape 0.28-0.30).
    Artifacts,
    /// griptape 0.31 and later: no envelope type, `metadata`, artifact runs.
    Griptape,
}

/// One exchange: what the user said and what the model answered.
#[derive(Debug, Clone)]
pub struct Run {
    /// 32 lowercase hex digits, like griptape's `uuid4().hex`.
    pub id: String,
    pub input: String,
    pub output: String,
    /// The run as it was stored, written back unchanged; `None` for a new run.
    stored: Option<Map<String, Value>>,
}

impl Run {
    /// A new run with a fresh random id.
    pub fn new(input: impl Into<String>, output: impl Into<String>) -> Self {
        Run {
            id: new_run_id(),
            input: input.into(),
            output: output.into(),
            stored: None,
        }
    }

    /// Bytes this run takes in the stored JSON of a memory in `format`.
    pub fn encoded_len(&self, format: Format) -> usize {
        python_json(&self.to_value(format), 128).len()
    }

    fn to_value(&self, format: Format) -> Value {
        if let Some(stored) = &self.stored {
            return Value::Object(stored.clone());
        }
        match format {
            Format::Seed => json!({
                "type": "Run", "id": self.id, "input": self.input, "output": self.output,
            }),
            Format::Artifacts => json!({
                "type": "Run", "id": self.id,
                "input": text_artifact(&self.input), "output": text_artifact(&self.output),
            }),
            Format::Griptape => json!({
                "type": "Run", "id": self.id, "meta": null,
                "input": text_artifact(&self.input), "output": text_artifact(&self.output),
            }),
        }
    }
}

/// A `TextArtifact` as griptape writes it, with a fresh id that doubles as its name (what
/// griptape does when none is given), so griptape keeps both stable when it rewrites the item.
fn text_artifact(value: &str) -> Value {
    let id = new_run_id();
    json!({"type": "TextArtifact", "id": id, "reference": null, "meta": {}, "name": id, "value": value})
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
#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub runs: Vec<Run>,
    /// Oldest runs beyond this are dropped when a run is added (`null` in the seed).
    pub max_runs: Option<u64>,
    pub format: Format,
    /// The top-level object as stored (without its runs), written back in its order.
    stored: Option<Map<String, Value>>,
}

/// Runs are equal when they are the same exchange, however they were stored.
impl PartialEq for Run {
    fn eq(&self, other: &Self) -> bool {
        (&self.id, &self.input, &self.output) == (&other.id, &other.input, &other.output)
    }
}

/// Memories are equal when they hold the same conversation in the same shape.
impl PartialEq for Memory {
    fn eq(&self, other: &Self) -> bool {
        (&self.runs, self.max_runs, self.format) == (&other.runs, other.max_runs, other.format)
    }
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
    /// An empty memory that will be stored in `format`.
    pub fn new(format: Format) -> Memory {
        Memory {
            format,
            ..Memory::default()
        }
    }

    /// A memory of just these runs, in the same shape as `self` (an archive chunk).
    pub fn with_runs(&self, runs: Vec<Run>) -> Memory {
        Memory {
            runs,
            max_runs: None,
            format: self.format,
            stored: None,
        }
    }

    /// The first `n` runs, as a memory of their own.
    pub fn with_prefix(&self, n: usize) -> Memory {
        self.with_runs(self.runs[..n.min(self.runs.len())].to_vec())
    }

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

    /// Reads stored JSON in any of the three shapes. Anything else is an error, never a guess.
    pub fn decode(text: &str) -> Result<Memory, DecodeError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| DecodeError(format!("not JSON: {e}")))?;
        let Value::Object(mut top) = value else {
            return Err(DecodeError("not a JSON object".into()));
        };
        let envelope = match top.get("type") {
            Some(Value::String(t)) if t == "ConversationMemory" => true,
            Some(other) => {
                return Err(DecodeError(format!(
                    "type is {other}, expected \"ConversationMemory\""
                )))
            }
            None => false,
        };
        let runs = match top.get_mut("runs") {
            Some(Value::Array(runs)) => std::mem::take(runs),
            Some(_) => return Err(DecodeError("\"runs\" is not a list".into())),
            None => return Err(DecodeError("no \"runs\" key".into())),
        };
        if !envelope
            && !matches!(
                top.get("metadata"),
                None | Some(Value::Object(_)) | Some(Value::Null)
            )
        {
            return Err(DecodeError("\"metadata\" is not an object".into()));
        }
        let max_runs = match top.get("max_runs") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .ok_or_else(|| DecodeError(format!("max_runs {n} is not a count")))?,
            ),
            Some(other) => return Err(DecodeError(format!("max_runs {other} is not a count"))),
        };
        let mut artifacts = None;
        let runs = runs
            .into_iter()
            .enumerate()
            .map(|(i, run)| {
                let (run, artifact) =
                    decode_run(run).map_err(|e| DecodeError(format!("run {i}: {e}")))?;
                artifacts.get_or_insert(artifact);
                Ok(run)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let format = match (envelope, artifacts) {
            (false, _) => Format::Griptape,
            (true, Some(true)) => Format::Artifacts,
            (true, _) => Format::Seed,
        };
        Ok(Memory {
            runs,
            max_runs,
            format,
            stored: Some(top),
        })
    }

    /// The stored JSON, in the memory's shape, formatted as Python's `json.dumps` formats it.
    pub fn encode(&self) -> String {
        let mut top = self.stored.clone().unwrap_or_else(|| match self.format {
            Format::Seed | Format::Artifacts => {
                let mut m = Map::new();
                m.insert("type".into(), "ConversationMemory".into());
                m.insert("runs".into(), Value::Null);
                m.insert("max_runs".into(), Value::Null);
                m
            }
            Format::Griptape => {
                let mut m = Map::new();
                m.insert("runs".into(), Value::Null);
                m.insert("metadata".into(), json!({}));
                m
            }
        });
        let runs = self.runs.iter().map(|r| r.to_value(self.format)).collect();
        top.insert("runs".into(), Value::Array(runs));
        if self.format != Format::Griptape {
            top.insert("max_runs".into(), self.max_runs.into());
        }
        python_json(&Value::Object(top), 256 + self.runs.len() * 256)
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

/// Reads one stored run; also says whether its texts are artifacts.
fn decode_run(run: Value) -> Result<(Run, bool), String> {
    let Value::Object(run) = run else {
        return Err("not an object".into());
    };
    match run.get("type") {
        Some(Value::String(t)) if t == "Run" => {}
        _ => return Err("type is not \"Run\"".into()),
    }
    let id = match run.get("id") {
        Some(Value::String(id)) => id.clone(),
        _ => return Err("no string \"id\"".into()),
    };
    let (input, input_artifact) = text(&run, "input")?;
    let (output, output_artifact) = text(&run, "output")?;
    if input_artifact != output_artifact {
        return Err("input and output are of different kinds".into());
    }
    Ok((
        Run {
            id,
            input,
            output,
            stored: Some(run),
        },
        input_artifact,
    ))
}

/// A run's text: a plain string, or a `TextArtifact`'s `value`.
fn text(run: &Map<String, Value>, key: &str) -> Result<(String, bool), String> {
    match run.get(key) {
        Some(Value::String(s)) => Ok((s.clone(), false)),
        Some(Value::Object(artifact)) => match (artifact.get("type"), artifact.get("value")) {
            (Some(Value::String(t)), Some(Value::String(v))) if t == "TextArtifact" => {
                Ok((v.clone(), true))
            }
            _ => Err(format!("\"{key}\" is not a TextArtifact")),
        },
        Some(_) => Err(format!("\"{key}\" is not text")),
        None => Err(format!("no \"{key}\"")),
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

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(python_float_repr(value).as_bytes())
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

/// A float as Python's `repr` writes it: the shortest digits that read back to the same value
/// (as Rust's formatting finds them), fixed-point when the decimal point falls within 16 digits
/// (`0.0001`, `1000000000000000.0`), else `1e-05`, `1.5e+16`. A float kept in a foreign field
/// thus stays byte-identical across saves.
fn python_float_repr(value: f64) -> String {
    if value == 0.0 {
        return if value.is_sign_negative() {
            "-0.0"
        } else {
            "0.0"
        }
        .to_owned();
    }
    let sign = if value < 0.0 { "-" } else { "" };
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    // Where the decimal point falls, counted from the left of the digits.
    let point = exponent + 1;
    if point > -4 && point <= 16 {
        if point <= 0 {
            let zeros = "0".repeat(point.unsigned_abs() as usize);
            format!("{sign}0.{zeros}{digits}")
        } else {
            let point = point as usize;
            if point >= digits.len() {
                format!("{sign}{digits}{}.0", "0".repeat(point - digits.len()))
            } else {
                format!("{sign}{}.{}", &digits[..point], &digits[point..])
            }
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() {
            first.to_owned()
        } else {
            format!("{first}.{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_written_as_python_writes_them() {
        // Expected strings from CPython 3.11's repr().
        let cases = [
            (2.5, "2.5"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1234567890123456.0, "1234567890123456.0"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1.4306815111111101e25, "1.4306815111111101e+25"),
            (123.456, "123.456"),
            (-3.0, "-3.0"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (100.0, "100.0"),
            (0.000123, "0.000123"),
        ];
        for (value, python) in cases {
            assert_eq!(python_float_repr(value), python, "{value:e}");
        }
    }

    #[test]
    fn numbers_in_foreign_fields_survive_saves() {
        // A fuzzing find: an integer past 64 bits is read as a float; its text must then be
        // stable across saves (it was not, before floats were parsed exactly).
        let stored = r#"{"type": "ConversationMemory", "runs": [{"type": "Run", "id": "a", "input": "hi", "output": "ho", "meta": {"k": [10, 2.5, 1e-05, 14306815111111101100430111, null]}}], "max_runs": null}"#;
        let once = Memory::decode(stored).unwrap().encode();
        assert!(
            once.contains(r#"[10, 2.5, 1e-05, 1.4306815111111101e+25, null]"#),
            "{once}"
        );
        let twice = Memory::decode(&once).unwrap().encode();
        assert_eq!(twice, once);
    }

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

    fn fixture(shape: &str, session: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/griptape/{shape}/{session}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let item: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        item["value"]["S"].as_str().unwrap().to_owned()
    }

    #[test]
    fn every_griptape_shape_reads_and_round_trips_byte_for_byte() {
        for (shape, format) in [
            ("v0_27", Format::Seed),
            ("v0_30", Format::Artifacts),
            ("v1", Format::Griptape),
        ] {
            for session in ["user-id-123", "group-id-123"] {
                let text = fixture(shape, session);
                let memory = Memory::decode(&text).unwrap();
                assert_eq!(memory.format, format, "{shape}");
                assert_eq!(memory.encode(), text, "{shape} {session}");
            }
            let memory = Memory::decode(&fixture(shape, "user-id-123")).unwrap();
            assert_eq!(memory.runs[0].input, "Hello my name is Collin.");
            assert_eq!(memory.runs[1].output, "Your name is Collin.");
        }
    }

    #[test]
    fn new_runs_take_the_memory_s_shape() {
        for shape in ["v0_27", "v0_30", "v1"] {
            let text = fixture(shape, "user-id-123");
            let mut memory = Memory::decode(&text).unwrap();
            memory.push(Run::new("And now?", "Now."));
            let encoded = memory.encode();
            let again = Memory::decode(&encoded).unwrap();
            assert_eq!(again.format, memory.format, "{shape}");
            assert_eq!(again.runs[2].output, "Now.");
            // The stored runs are untouched, byte for byte.
            let cut = text.rfind("}]").unwrap();
            assert_eq!(&encoded[..cut], &text[..cut], "{shape}");
        }
        let mut fresh = Memory::new(Format::Griptape);
        fresh.push(Run::new("hi", "hello"));
        let v: Value = serde_json::from_str(&fresh.encode()).unwrap();
        assert_eq!(v["metadata"], json!({}));
        assert!(v.get("type").is_none() && v.get("max_runs").is_none());
        let input = &v["runs"][0]["input"];
        assert_eq!(input["type"], "TextArtifact");
        assert_eq!(input["id"], input["name"]);
        assert_eq!(input["value"], "hi");
        assert!(fresh
            .encode()
            .starts_with(r#"{"runs": [{"type": "Run", "id": ""#));
    }

    #[test]
    fn unknown_keys_survive() {
        let text = r#"{"type": "ConversationMemory", "runs": [{"type": "Run", "id": "a", "input": "i", "output": "o", "meta": {"k": 1}}], "autoprune": true, "max_runs": 5}"#;
        let m = Memory::decode(text).unwrap();
        assert_eq!(m.max_runs, Some(5));
        let again = Memory::decode(&m.encode()).unwrap();
        assert_eq!(again, m);
        assert_eq!(m.encode(), text, "kept in place, in order");
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
            "{\"type\": \"Other\", \"runs\": []}",
            "{\"type\": \"ConversationMemory\", \"runs\": {}}",
            "{\"type\": \"ConversationMemory\", \"runs\": [1]}",
            "{\"type\": \"ConversationMemory\", \"runs\": [{\"type\": \"Run\", \"id\": \"a\", \"input\": 1, \"output\": \"o\"}]}",
            "{\"type\": \"ConversationMemory\", \"runs\": [], \"max_runs\": -1}",
            "{\"runs\": [], \"metadata\": 5}",
            "{\"type\": \"ConversationMemory\", \"runs\": [{\"type\": \"Run\", \"id\": \"a\", \"input\": {\"type\": \"ImageArtifact\", \"value\": \"x\"}, \"output\": \"o\"}]}",
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
