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
//! A memory keeps the shape it was read in. Bytes we do not own are written back exactly as read:
//! every stored run, and the value of every top-level key but `runs` (and an envelope's
//! `max_runs`), is kept as its raw JSON text, in its order, so sessions shared with griptape
//! never change shape, lose fields or have a number rewritten. What we write ourselves (new runs,
//! the top-level keys and separators) is formatted as Python's `json.dumps` formats it (`", "` /
//! `": "` separators, non-ASCII escaped), byte for byte what griptape writes.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::error::Category;
use serde_json::value::RawValue;
use serde_json::{json, Value};

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
    source: Source,
}

/// Where a run's JSON comes from.
#[derive(Debug, Clone)]
enum Source {
    /// Its text as it was stored, written back unchanged.
    Stored(Box<RawValue>),
    /// A new run. The ids of its `TextArtifact`s (in the shapes that have them) are minted
    /// once, with the run, so every encode of it writes the same bytes.
    New {
        input_artifact: String,
        output_artifact: String,
    },
}

impl Run {
    /// A new run with a fresh random id.
    pub fn new(input: impl Into<String>, output: impl Into<String>) -> Self {
        Run {
            id: new_run_id(),
            input: input.into(),
            output: output.into(),
            source: Source::New {
                input_artifact: new_run_id(),
                output_artifact: new_run_id(),
            },
        }
    }

    /// This run (same id, same artifact ids) with other texts, as a new run: what the item
    /// keeps of a spilled run.
    pub fn with_texts(&self, input: String, output: String) -> Run {
        let source = match &self.source {
            Source::New { .. } => self.source.clone(),
            Source::Stored(_) => Run::new("", "").source,
        };
        Run {
            id: self.id.clone(),
            input,
            output,
            source,
        }
    }

    /// Bytes this run takes in the stored JSON of a memory in `format`.
    pub fn encoded_len(&self, format: Format) -> usize {
        match &self.source {
            Source::Stored(raw) => raw.get().len(),
            Source::New { .. } => python_json(&self.to_value(format), 128).len(),
        }
    }

    /// Appends this run's JSON: as stored, or a new run in the shape of `format`.
    fn write(&self, format: Format, out: &mut String) {
        match &self.source {
            Source::Stored(raw) => out.push_str(raw.get()),
            Source::New { .. } => out.push_str(&python_json(&self.to_value(format), 512)),
        }
    }

    /// The text this run was stored as, if it was read from storage.
    fn stored_len(&self) -> Option<usize> {
        match &self.source {
            Source::Stored(raw) => Some(raw.get().len()),
            Source::New { .. } => None,
        }
    }

    /// A new run as griptape writes one in `format`.
    fn to_value(&self, format: Format) -> Value {
        let (input_id, output_id) = match &self.source {
            Source::New {
                input_artifact,
                output_artifact,
            } => (input_artifact.as_str(), output_artifact.as_str()),
            Source::Stored(_) => ("", ""),
        };
        let input = || text_artifact(input_id, &self.input);
        let output = || text_artifact(output_id, &self.output);
        match format {
            Format::Seed => json!({
                "type": "Run", "id": self.id, "input": self.input, "output": self.output,
            }),
            Format::Artifacts => json!({
                "type": "Run", "id": self.id, "input": input(), "output": output(),
            }),
            Format::Griptape => json!({
                "type": "Run", "id": self.id, "meta": null, "input": input(), "output": output(),
            }),
        }
    }
}

/// A `TextArtifact` as griptape writes it, its id doubling as its name (what griptape does
/// when none is given), so griptape keeps both stable when it rewrites the item.
fn text_artifact(id: &str, value: &str) -> Value {
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
    /// The top-level keys as stored, in their order, written back in it.
    stored: Option<Vec<(String, TopValue)>>,
}

/// The value of a stored top-level key.
#[derive(Debug, Clone)]
enum TopValue {
    /// Its JSON text as read.
    Raw(Box<RawValue>),
    /// The `runs`, rebuilt from [`Memory::runs`] (which keep their own stored text).
    Runs,
}

/// What `encode` writes as the value of a top-level key.
enum Part<'a> {
    Raw(&'a str),
    Runs,
    MaxRuns,
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
        let TopLevel(top) = serde_json::from_str(text).map_err(|e| match e.classify() {
            Category::Data => DecodeError("not a JSON object".into()),
            _ => DecodeError(format!("not JSON: {e}")),
        })?;
        let get = |key: &str| top.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
        let envelope = is_envelope(get("type"))?;
        let runs: Vec<&RawValue> = match get("runs") {
            Some(runs) if runs.get().starts_with('[') => serde_json::from_str(runs.get())
                .map_err(|e| DecodeError(format!("\"runs\": {e}")))?,
            Some(_) => return Err(DecodeError("\"runs\" is not a list".into())),
            None => return Err(DecodeError("no \"runs\" key".into())),
        };
        if !envelope {
            if let Some(metadata) = get("metadata") {
                if !metadata.get().starts_with('{') && metadata.get() != "null" {
                    return Err(DecodeError("\"metadata\" is not an object".into()));
                }
            }
        }
        let max_runs = match get("max_runs") {
            None => None,
            Some(raw) => serde_json::from_str::<Option<u64>>(raw.get())
                .map_err(|_| DecodeError(format!("max_runs {raw} is not a count")))?,
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
        let stored = top
            .into_iter()
            .map(|(key, raw)| {
                let value = match key.as_str() {
                    "runs" => TopValue::Runs,
                    _ => TopValue::Raw(raw.to_owned()),
                };
                (key, value)
            })
            .collect();
        Ok(Memory {
            runs,
            max_runs,
            format,
            stored: Some(stored),
        })
    }

    /// The stored JSON, in the memory's shape: the stored runs and keys as read, in their order,
    /// what is new formatted as Python's `json.dumps` formats it.
    pub fn encode(&self) -> String {
        let parts = self.parts();
        let capacity = 64
            + parts
                .iter()
                .map(|(key, part)| match part {
                    Part::Raw(raw) => key.len() + raw.len() + 8,
                    Part::Runs | Part::MaxRuns => key.len() + 32,
                })
                .sum::<usize>()
            + self
                .runs
                .iter()
                .map(|run| run.stored_len().unwrap_or(512) + 2)
                .sum::<usize>();
        let mut out = String::with_capacity(capacity);
        out.push('{');
        for (i, (key, part)) in parts.into_iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&python_json(key, key.len() + 2));
            out.push_str(": ");
            match part {
                Part::Raw(raw) => out.push_str(raw),
                Part::MaxRuns => out.push_str(&python_json(&self.max_runs, 20)),
                Part::Runs => {
                    out.push('[');
                    for (i, run) in self.runs.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        run.write(self.format, &mut out);
                    }
                    out.push(']');
                }
            }
        }
        out.push('}');
        out
    }

    /// The top-level keys `encode` writes, in order, and what each holds: as stored, or (for a
    /// memory not read from storage) the shape's own.
    fn parts(&self) -> Vec<(&str, Part<'_>)> {
        let envelope = self.format != Format::Griptape;
        match &self.stored {
            Some(top) => {
                let mut parts: Vec<_> = top
                    .iter()
                    .map(|(key, kept)| {
                        let part = match kept {
                            TopValue::Runs => Part::Runs,
                            TopValue::Raw(_) if envelope && key == "max_runs" => Part::MaxRuns,
                            TopValue::Raw(raw) => Part::Raw(raw.get()),
                        };
                        (key.as_str(), part)
                    })
                    .collect();
                if envelope && !top.iter().any(|(key, _)| key == "max_runs") {
                    parts.push(("max_runs", Part::MaxRuns));
                }
                parts
            }
            None if envelope => vec![
                ("type", Part::Raw("\"ConversationMemory\"")),
                ("runs", Part::Runs),
                ("max_runs", Part::MaxRuns),
            ],
            None => vec![("runs", Part::Runs), ("metadata", Part::Raw("{}"))],
        }
    }
}

/// Whether a top-level `type` says this is the recipe's envelope (`ConversationMemory`);
/// griptape 0.31 and later write none.
fn is_envelope(kind: Option<&RawValue>) -> Result<bool, DecodeError> {
    match kind {
        Some(t) if string(t).as_deref() == Some("ConversationMemory") => Ok(true),
        Some(other) => Err(DecodeError(format!(
            "type is {other}, expected \"ConversationMemory\""
        ))),
        None => Ok(false),
    }
}

/// JSON as Python's `json.dumps` writes it.
fn python_json(value: &(impl Serialize + ?Sized), capacity: usize) -> String {
    let mut out = Vec::with_capacity(capacity);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Writing into a Vec cannot fail, and every map key here is a string.
    if value.serialize(&mut ser).is_err() {
        unreachable!("serializing memory into a Vec cannot fail");
    }
    // serde_json only ever writes UTF-8, and the formatter writes ASCII escapes.
    String::from_utf8(out).unwrap_or_default()
}

/// The top-level object: its keys in their stored order, each with its value's JSON text,
/// borrowed from the stored text. A repeated key keeps its first place and its last value, as
/// Python's `json.loads` reads it.
struct TopLevel<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TopLevelVisitor)
    }
}

struct TopLevelVisitor;

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Vec<(String, &'de RawValue)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            entries.push((key, map.next_value()?));
        }
        // Fold repeated keys (linearly: a stored item may hold many keys).
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
        let mut later = Vec::new();
        for (i, (key, _)) in entries.iter().enumerate() {
            if let Some(&at) = first.get(key.as_str()) {
                later.push((at, i));
            } else {
                first.insert(key, i);
            }
        }
        if later.is_empty() {
            return Ok(TopLevel(entries));
        }
        let mut repeated = vec![false; entries.len()];
        for (at, i) in later {
            entries[at].1 = entries[i].1;
            repeated[i] = true;
        }
        let mut repeated = repeated.into_iter();
        entries.retain(|_| !repeated.next().unwrap_or(false));
        Ok(TopLevel(entries))
    }
}

/// The values of `keys` in a JSON object's text (the last, if a key repeats, as Python reads
/// it), borrowed from the text; every other value is only skipped. `None` if it is not an object.
fn pick<'a, const N: usize>(
    text: &'a str,
    keys: [&'static str; N],
) -> Result<Option<[Option<&'a RawValue>; N]>, String> {
    if !text.starts_with('{') {
        return Ok(None);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(Pick(keys))
        .map(Some)
        .map_err(|e| e.to_string())
}

struct Pick<const N: usize>([&'static str; N]);

impl<'de, const N: usize> Visitor<'de> for Pick<N> {
    type Value = [Option<&'de RawValue>; N];

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = [None; N];
        while let Some(key) = map.next_key_seed(KeyIndex(&self.0))? {
            match key {
                Some(i) => found[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// A map key, read as its index among the wanted keys, without copying it.
struct KeyIndex<'k>(&'k [&'static str]);

impl<'de> DeserializeSeed<'de> for KeyIndex<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIndex<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|k| *k == key))
    }
}

/// A JSON text's string, if it is one.
fn string(raw: &RawValue) -> Option<String> {
    serde_json::from_str(raw.get()).ok()
}

/// Reads one stored run, keeping its text; also says whether its texts are artifacts.
fn decode_run(run: &RawValue) -> Result<(Run, bool), String> {
    let Some([kind, id, input, output]) = pick(run.get(), ["type", "id", "input", "output"])?
    else {
        return Err("not an object".into());
    };
    if kind.and_then(string).as_deref() != Some("Run") {
        return Err("type is not \"Run\"".into());
    }
    let Some(id) = id.and_then(string) else {
        return Err("no string \"id\"".into());
    };
    let (input, input_artifact) = text(input, "input")?;
    let (output, output_artifact) = text(output, "output")?;
    if input_artifact != output_artifact {
        return Err("input and output are of different kinds".into());
    }
    Ok((
        Run {
            id,
            input,
            output,
            source: Source::Stored(run.to_owned()),
        },
        input_artifact,
    ))
}

/// A run's text: a plain string, or a `TextArtifact`'s `value`.
fn text(raw: Option<&RawValue>, key: &str) -> Result<(String, bool), String> {
    let Some(raw) = raw else {
        return Err(format!("no \"{key}\""));
    };
    if raw.get().starts_with('"') {
        return string(raw)
            .map(|s| (s, false))
            .ok_or_else(|| format!("\"{key}\" is not text"));
    }
    match pick(raw.get(), ["type", "value"])? {
        Some([kind, value]) => match (kind.and_then(string), value.and_then(string)) {
            (Some(t), Some(v)) if t == "TextArtifact" => Ok((v, true)),
            _ => Err(format!("\"{key}\" is not a TextArtifact")),
        },
        None => Err(format!("\"{key}\" is not text")),
    }
}

/// Formats JSON like Python's `json.dumps` with its defaults, so what we write is byte-identical
/// to griptape's: `", "` and `": "` separators, and every non-ASCII or DEL character as `\uXXXX`.
/// (No float is ever written: new runs hold strings, and `max_runs` is a count.)
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

    #[test]
    fn numbers_in_foreign_fields_survive_saves() {
        // A fuzzing find: an integer past 64 bits was read as a float and written back as
        // `1.4306815111111101e+25`. Python keeps it, and so do we: what we do not own is kept
        // as its text.
        let stored = r#"{"type": "ConversationMemory", "runs": [{"type": "Run", "id": "a", "input": "hi", "output": "ho", "meta": {"k": [10, 2.5, 1e-05, 14306815111111101100430111, null]}}], "max_runs": null}"#;
        let once = Memory::decode(stored).unwrap().encode();
        assert_eq!(once, stored);
        let twice = Memory::decode(&once).unwrap().encode();
        assert_eq!(twice, stored);
        let mut memory = Memory::decode(&twice).unwrap();
        memory.push(Run::new("and", "more"));
        let pushed = memory.encode();
        let cut = stored.rfind("}]").unwrap() + 1;
        assert_eq!(&pushed[..cut], &stored[..cut]);
        assert!(pushed.ends_with(r#"}], "max_runs": null}"#), "{pushed}");
        assert_eq!(Memory::decode(&pushed).unwrap(), memory);
    }

    /// A griptape 1.x item whose foreign fields hold what Python and other tools may write: big
    /// integers, `1.0`, `-0.0`, an exponent, escaped and unescaped non-ASCII, odd spacing, and
    /// an unknown top-level key between `runs` and `metadata`.
    const GRIPTAPE_1_FOREIGN: &str = r#"{"runs": [{"type": "Run", "id": "6ef430eacab243bba147c0742f1c84ab", "meta": {"big": 14306815111111101100430111, "neg": -98765432109876543210, "one": 1.0, "zero": -0.0, "exp": 1E+2, "esc": "\u00e9", "raw": "é", "nested": { "a" :[ 1 ,{"b":  null} ], "c":{}}}, "input": {"type": "TextArtifact", "id": "a7", "reference": null, "meta": {}, "name": "a7", "value": "Hello \u00e9"}, "output": {"type": "TextArtifact", "id": "23", "reference": null, "meta": {"is_react_prompt": false, "score": 0.10000000000000001}, "name": "23", "value": "Hi é"}}, {"type":"Run","id":"b","meta":null,"input":{"type":"TextArtifact","value":"x"},"output":{ "value" : "y", "type" : "TextArtifact" }}], "driver": {"type": "X", "n": 1.50, "big": 99999999999999999999}, "metadata": {"count": 14306815111111101100430111, "ratio": 1.0, "z": -0.0, "who": "\u00e9", "raw": "é", "deep": {"x" : [ ] , "y":{"z":{}}}}}"#;

    #[test]
    fn griptape_1_foreign_values_are_kept_byte_for_byte() {
        let text = GRIPTAPE_1_FOREIGN;
        let memory = Memory::decode(text).unwrap();
        assert_eq!(memory.format, Format::Griptape);
        assert_eq!(memory.runs.len(), 2);
        assert_eq!(memory.runs[0].input, "Hello é");
        assert_eq!(memory.runs[0].output, "Hi é");
        assert_eq!(
            (
                memory.runs[1].input.as_str(),
                memory.runs[1].output.as_str()
            ),
            ("x", "y")
        );
        assert_eq!(memory.encode(), text);
        assert_eq!(Memory::decode(&memory.encode()).unwrap().encode(), text);

        let mut memory = memory;
        memory.push(Run::new("And now?", "Now."));
        let pushed = memory.encode();
        // Everything stored is untouched; the new run goes at the end of the runs.
        let cut = text.find(r#"], "driver""#).unwrap();
        assert!(pushed.starts_with(&format!("{}, {{\"type\": \"Run\", ", &text[..cut])));
        assert!(pushed.ends_with(&text[cut..]), "{pushed}");
        let again = Memory::decode(&pushed).unwrap();
        assert_eq!(again, memory);
        assert_eq!(again.runs[2].output, "Now.");
        assert_eq!(again.encode(), pushed);
    }

    #[test]
    fn unknown_top_level_keys_keep_their_place() {
        let run = r#"{"type": "Run", "id": "a", "input": "i", "output": "o"}"#;
        for text in [
            format!(
                r#"{{"first": [1.0, -0.0], "type": "ConversationMemory", "mid": {{"k" :1}}, "runs": [{run}], "last": "\u00e9", "max_runs": 7, "after": 14306815111111101100430111}}"#
            ),
            format!(
                r#"{{"before": -1.5E-7, "runs": [{run}], "between": null, "metadata": {{ }}, "after": "é"}}"#
            ),
        ] {
            let mut memory = Memory::decode(&text).unwrap();
            assert_eq!(memory.encode(), text);
            memory.push(Run::new("n", "m"));
            let pushed = memory.encode();
            let cut = text.find(run).unwrap() + run.len();
            assert_eq!(&pushed[..cut], &text[..cut]);
            assert!(pushed.ends_with(&text[cut..]), "{pushed}");
        }
        // An envelope's max_runs is ours: written from the memory, in its place.
        let text =
            format!(r#"{{"type": "ConversationMemory", "max_runs": 7, "runs": [{run}], "x": 1}}"#);
        let mut memory = Memory::decode(&text).unwrap();
        memory.max_runs = None;
        assert_eq!(
            memory.encode(),
            format!(
                r#"{{"type": "ConversationMemory", "max_runs": null, "runs": [{run}], "x": 1}}"#
            )
        );
        // ... and added at the end when the stored envelope has none, as before.
        let memory =
            Memory::decode(r#"{"type": "ConversationMemory", "runs": [], "x": 1}"#).unwrap();
        assert_eq!(
            memory.encode(),
            r#"{"type": "ConversationMemory", "runs": [], "x": 1, "max_runs": null}"#
        );
    }

    #[test]
    fn top_level_keys_and_separators_are_written_as_python_writes_them() {
        // Other tools' spacing and key escapes at the top level become Python's; the values
        // stay as read.
        let text = "{\"runs\":[ ],\n \"m\u{e9}ta\\u00e9\" :{\"a\":1.0} , \"metadata\":null }";
        let memory = Memory::decode(text).unwrap();
        assert_eq!(
            memory.encode(),
            r#"{"runs": [], "m\u00e9ta\u00e9": {"a":1.0}, "metadata": null}"#
        );
    }

    #[test]
    fn repeated_top_level_keys_read_as_python_reads_them() {
        // json.loads keeps a repeated key's first place and its last value.
        let text = r#"{"runs": [], "metadata": {"a": 1}, "runs": [{"type": "Run", "id": "a", "input": "i", "output": "o"}]}"#;
        let memory = Memory::decode(text).unwrap();
        assert_eq!(memory.runs.len(), 1);
        let once = memory.encode();
        assert_eq!(
            once,
            r#"{"runs": [{"type": "Run", "id": "a", "input": "i", "output": "o"}], "metadata": {"a": 1}}"#
        );
        assert_eq!(Memory::decode(&once).unwrap().encode(), once);
        // The same inside a run, for the fields we read.
        let text =
            r#"{"runs": [{"type": "Run", "id": "a", "input": "i", "output": "o", "id": "b"}]}"#;
        let memory = Memory::decode(text).unwrap();
        assert_eq!(memory.runs[0].id, "b");
        assert_eq!(memory.encode(), text);
    }

    #[test]
    fn a_stored_run_s_length_is_its_stored_text_s() {
        let mut memory = Memory::decode(GRIPTAPE_1_FOREIGN).unwrap();
        memory.push(Run::new("new", "run"));
        let encoded = memory.encode();
        let runs: usize = memory
            .runs
            .iter()
            .map(|r| r.encoded_len(memory.format))
            .sum();
        let first = GRIPTAPE_1_FOREIGN.find(r#"{"type": "Run""#).unwrap();
        let end = GRIPTAPE_1_FOREIGN.find(r#"], "driver""#).unwrap();
        assert_eq!(
            memory.runs[0].encoded_len(memory.format) + memory.runs[1].encoded_len(memory.format),
            end - first - 2
        );
        assert_eq!(
            encoded.len(),
            GRIPTAPE_1_FOREIGN.len() + 2 + runs - (end - first - 2)
        );
        // The top level keeps no copy of the runs' text: only the runs do.
        let stored = memory.stored.as_ref().unwrap();
        assert!(matches!(stored[0], (ref k, TopValue::Runs) if k == "runs"));
        assert!(stored[1..]
            .iter()
            .all(|(_, kept)| matches!(kept, TopValue::Raw(_))));
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
            "{\"runs\": [{\"type\": \"Run\", \"id\": \"a\", \"input\": \"\\ud800\", \"output\": \"o\"}]}",
            "{\"runs\": [{\"type\": \"Run\", \"id\": 1, \"input\": \"i\", \"output\": \"o\"}]}",
            "{\"runs\": [{\"type\": \"Run\", \"id\": \"a\", \"input\": \"i\", \"output\": {\"type\": \"TextArtifact\", \"value\": \"o\"}}]}",
            "{\"runs\": [], \"metadata\": {}} x",
            "{\"runs\": [], \"metadata\": {}",
            "{\"runs\": [], \"max_runs\": 1.5, \"type\": \"ConversationMemory\"}",
        ] {
            assert!(Memory::decode(bad).is_err(), "{bad:?} decoded");
        }
    }

    #[test]
    fn decode_errors_say_what_is_wrong() {
        for (bad, reason) in [
            ("[]", "not a JSON object"),
            ("{\"type\": \"Other\", \"runs\": []}", "type is \"Other\", expected \"ConversationMemory\""),
            ("{\"type\": \"ConversationMemory\", \"runs\": {}}", "\"runs\" is not a list"),
            ("{\"metadata\": {}}", "no \"runs\" key"),
            ("{\"runs\": [], \"metadata\": 5}", "\"metadata\" is not an object"),
            ("{\"type\": \"ConversationMemory\", \"runs\": [], \"max_runs\": -1}", "max_runs -1 is not a count"),
            ("{\"runs\": [1]}", "run 0: not an object"),
            ("{\"runs\": [{\"type\": \"Task\"}]}", "run 0: type is not \"Run\""),
            ("{\"runs\": [{\"type\": \"Run\"}]}", "run 0: no string \"id\""),
            ("{\"runs\": [{\"type\": \"Run\", \"id\": \"a\", \"output\": \"o\"}]}", "run 0: no \"input\""),
            ("{\"runs\": [{\"type\": \"Run\", \"id\": \"a\", \"input\": 1, \"output\": \"o\"}]}", "run 0: \"input\" is not text"),
            ("{\"runs\": [{\"type\": \"Run\", \"id\": \"a\", \"input\": \"i\", \"output\": {\"value\": \"o\"}}]}", "run 0: \"output\" is not a TextArtifact"),
            ("{\"runs\": [{\"type\": \"Run\", \"id\": \"a\", \"input\": \"i\", \"output\": {\"type\": \"TextArtifact\", \"value\": \"o\"}}]}", "run 0: input and output are of different kinds"),
        ] {
            assert_eq!(Memory::decode(bad), Err(DecodeError::new(reason)), "{bad}");
        }
        let Err(DecodeError(reason)) = Memory::decode("{\"runs\": [}") else {
            panic!("decoded");
        };
        assert!(reason.starts_with("not JSON: "), "{reason}");
    }

    #[test]
    fn the_fuzz_corpus_keeps_the_fuzz_target_s_invariant() {
        // What fuzz/fuzz_targets/stored_memory.rs checks, on its seeds; a stored item that
        // decodes also comes back byte for byte.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/stored_memory");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let memory = Memory::decode(&text).unwrap();
            let encoded = memory.encode();
            assert_eq!(encoded, text, "{path:?}");
            let again = Memory::decode(&encoded).unwrap();
            assert_eq!(again, memory);
            assert_eq!(again.encode(), encoded);
        }
    }

    #[test]
    fn artifact_ids_are_minted_once_per_run() {
        // Two encodes of one memory give the same bytes: a size check and the write that
        // follows it agree, and a retried save writes what the first one did.
        for format in [Format::Artifacts, Format::Griptape] {
            let mut m = Memory::new(format);
            m.push(Run::new("hi", "hello"));
            assert_eq!(m.encode(), m.encode(), "{format:?}");
            let v: Value = serde_json::from_str(&m.encode()).unwrap();
            let (input, output) = (&v["runs"][0]["input"], &v["runs"][0]["output"]);
            assert_eq!(input["id"], input["name"]);
            assert_ne!(input["id"], output["id"]);
            assert_eq!(input["id"].as_str().map(str::len), Some(32));
            let short = m.runs[0].with_texts("h".into(), "he".into());
            let v2: Value = serde_json::from_str(&m.with_runs(vec![short]).encode()).unwrap();
            assert_eq!(v2["runs"][0]["input"]["id"], input["id"]);
            assert_eq!(v2["runs"][0]["output"]["value"], "he");
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
