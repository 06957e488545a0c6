//! Metrics in CloudWatch's embedded metric format (EMF), carried on each request's one log
//! line: no extra call and nothing added to a request's latency. A line's values are written
//! as its `emf` field ([`Values`]); the log formatter (`telemetry`) lifts them to the line's
//! top level beside the `_aws` directive that names them, which CloudWatch Logs turns into
//! metrics of the namespace `METRICS_NAMESPACE` (default `SessionChat`).
//!
//! Every metric has no dimension (one series each, for alarms and the dashboard) except
//! `Errors`, also by `ErrorCode`. What each means: docs/operations.md.

use std::fmt;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

pub const DEFAULT_NAMESPACE: &str = "SessionChat";

/// The one dimension, on `Errors` only.
pub const ERROR_CODE: &str = "ErrorCode";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// A metric this function emits.
#[derive(Debug)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
}

const fn count(name: &'static str) -> Metric {
    Metric {
        name,
        unit: Unit::Count,
    }
}

const fn ms(name: &'static str) -> Metric {
    Metric {
        name,
        unit: Unit::Milliseconds,
    }
}

pub const REQUESTS: &str = "Requests";
pub const SERVER_ERRORS: &str = "ServerErrors";
pub const ERRORS: &str = "Errors";
pub const LATENCY: &str = "Latency";
pub const TURNS: &str = "Turns";
pub const REPLAYS: &str = "Replays";
pub const MODEL_LATENCY: &str = "ModelLatency";
pub const FIRST_TOKEN_LATENCY: &str = "FirstTokenLatency";
pub const SAVE_ATTEMPTS: &str = "SaveAttempts";
pub const SAVE_CONFLICTS: &str = "SaveConflicts";
pub const TOKENS_IN: &str = "TokensIn";
pub const TOKENS_OUT: &str = "TokensOut";
pub const TOKENS_CACHED: &str = "TokensCached";
pub const MODEL_ERRORS: &str = "ModelErrors";
pub const STORE_ERRORS: &str = "StoreErrors";
pub const QUOTA_REFUSALS: &str = "QuotaRefusals";

/// Every metric emitted. The template's alarms and dashboard read only these (its test checks).
pub const METRICS: &[Metric] = &[
    count(REQUESTS),
    count(SERVER_ERRORS),
    count(ERRORS),
    ms(LATENCY),
    count(TURNS),
    count(REPLAYS),
    ms(MODEL_LATENCY),
    ms(FIRST_TOKEN_LATENCY),
    count(SAVE_ATTEMPTS),
    count(SAVE_CONFLICTS),
    count(TOKENS_IN),
    count(TOKENS_OUT),
    count(TOKENS_CACHED),
    count(MODEL_ERRORS),
    count(STORE_ERRORS),
    count(QUOTA_REFUSALS),
];

static NAMESPACE: OnceLock<String> = OnceLock::new();

/// The namespace, set once from the configuration (`DEFAULT_NAMESPACE` until then).
pub fn set_namespace(namespace: &str) {
    let _ = NAMESPACE.set(namespace.to_owned());
}

fn namespace() -> &'static str {
    NAMESPACE.get().map_or(DEFAULT_NAMESPACE, String::as_str)
}

/// One request's metric values, for its log line's `emf` field.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Values {
    values: Vec<(&'static str, f64)>,
    error_code: Option<&'static str>,
}

impl Values {
    /// A request answered with `status`, `started` when it came: `Requests` 1, `ServerErrors`
    /// 1 or 0 (so its average is the 5xx rate), `Latency`.
    pub fn request(started: Instant, status: u16) -> Values {
        let mut v = Values::default();
        v.set(REQUESTS, 1.0);
        v.set(SERVER_ERRORS, if status >= 500 { 1.0 } else { 0.0 });
        v.set(LATENCY, started.elapsed().as_secs_f64() * 1000.0);
        v
    }

    pub fn set(&mut self, name: &'static str, value: f64) {
        debug_assert!(METRICS.iter().any(|m| m.name == name), "{name}");
        match self.values.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.values.push((name, value)),
        }
    }

    pub fn set_some(&mut self, name: &'static str, value: Option<u64>) {
        if let Some(value) = value {
            self.set(name, value as f64);
        }
    }

    /// An error answer: `Errors` 1, by its code too.
    pub fn error(&mut self, code: &'static str) {
        self.set(ERRORS, 1.0);
        self.error_code = Some(code);
    }
}

/// The values as a JSON object (the `emf` field's text).
impl fmt::Display for Values {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = Map::new();
        for (name, value) in &self.values {
            map.insert((*name).to_owned(), json!(value));
        }
        if let Some(code) = self.error_code {
            map.insert(ERROR_CODE.to_owned(), json!(code));
        }
        write!(f, "{}", Value::Object(map))
    }
}

/// A log line with an `emf` field (under `fields`), made an EMF document: the values lifted
/// to the top level and the `_aws` directive naming them. `None` when the line has none.
pub fn lift(line: &str) -> Option<String> {
    if !line.contains("\"emf\":") {
        return None;
    }
    let mut doc: Map<String, Value> = serde_json::from_str(line.trim_end()).ok()?;
    let emf = doc.get_mut("fields")?.as_object_mut()?.remove("emf")?;
    let values: Map<String, Value> = serde_json::from_str(emf.as_str()?).ok()?;
    let mut plain = Vec::new();
    let mut by_code = Vec::new();
    for metric in METRICS {
        if values.get(metric.name).is_some_and(Value::is_number) {
            let def = json!({"Name": metric.name, "Unit": metric.unit.as_str()});
            if metric.name == ERRORS && values.contains_key(ERROR_CODE) {
                by_code.push(def.clone());
            }
            plain.push(def);
        }
    }
    let mut directives =
        vec![json!({"Namespace": namespace(), "Dimensions": [[]], "Metrics": plain})];
    if !by_code.is_empty() {
        directives.push(
            json!({"Namespace": namespace(), "Dimensions": [[ERROR_CODE]], "Metrics": by_code}),
        );
    }
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    doc.extend(values);
    doc.insert(
        "_aws".to_owned(),
        json!({"Timestamp": timestamp, "CloudWatchMetrics": directives}),
    );
    serde_json::to_string(&doc).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_with_values_becomes_an_emf_document() {
        let mut v = Values::request(Instant::now(), 502);
        v.error("model_error");
        v.set(MODEL_ERRORS, 1.0);
        let line = json!({"level": "ERROR", "fields": {"message": "request failed", "emf": v.to_string(), "status": 502},
            "span": {"requestId": "r1"}})
        .to_string();
        let doc: Value = serde_json::from_str(&lift(&line).unwrap()).unwrap();
        assert_eq!(
            doc["fields"]["message"], "request failed",
            "the line keeps its fields"
        );
        assert!(doc["fields"].get("emf").is_none());
        assert_eq!(doc["span"]["requestId"], "r1");
        assert_eq!(
            (doc["Requests"].as_f64(), doc["ServerErrors"].as_f64()),
            (Some(1.0), Some(1.0))
        );
        assert_eq!(doc["ErrorCode"], "model_error");
        let directives = doc["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives[0]["Namespace"], DEFAULT_NAMESPACE);
        assert_eq!(directives[0]["Dimensions"], json!([[]]));
        let names: Vec<&str> = directives[0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [REQUESTS, SERVER_ERRORS, ERRORS, LATENCY, MODEL_ERRORS]
        );
        assert_eq!(directives[1]["Dimensions"], json!([[ERROR_CODE]]));
        assert_eq!(
            directives[1]["Metrics"],
            json!([{"Name": "Errors", "Unit": "Count"}])
        );
        assert!(doc["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    }

    #[test]
    fn a_line_without_values_is_left_alone() {
        assert_eq!(lift(r#"{"fields":{"message":"initialized"}}"#), None);
        assert_eq!(lift("not json \"emf\":"), None);
    }
}
