//! The Responses API's objects as JSON: a response (Open Responses' `ResponseResource`), its
//! output message, conversation items and lists, and the record a response keeps with its run.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::request::{item_id, Half};
use crate::input::SessionId;

/// What a response keeps beside its run (the slot's `response` attribute): what was asked,
/// and (added by the chat cycle) the usage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    /// The conversation the response was made in, when it named one.
    #[serde(default)]
    pub conversation: Option<String>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub background: bool,
    #[serde(default)]
    pub created_at: u64,
    #[serde(default)]
    pub usage: Option<StoredUsage>,
    /// A streamed reply's pieces, their lengths in bytes (added by the chat cycle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pieces: Option<Vec<usize>>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub cached_tokens: u64,
}

impl From<crate::model::Usage> for StoredUsage {
    fn from(u: crate::model::Usage) -> Self {
        StoredUsage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            cached_tokens: u.cached_tokens.unwrap_or(0),
        }
    }
}

impl Record {
    /// A stored record; one that cannot be read (or a run made by `POST /chat` or griptape,
    /// with none) gives the deployment's model and nothing else.
    pub fn read(stored: Option<&str>, model: &str) -> Record {
        let mut record: Record = stored
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default();
        if record.model.is_empty() {
            record.model = model.to_owned();
        }
        record
    }
}

/// Where a response is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// A reply kept while it is written, as a response's status.
    pub fn of(live: crate::chat::LiveStatus) -> Status {
        match live {
            crate::chat::LiveStatus::InProgress => Status::InProgress,
            crate::chat::LiveStatus::Failed => Status::Failed,
            crate::chat::LiveStatus::Cancelled => Status::Cancelled,
        }
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A message item: the user's (`Half::Input`) or the reply (`Half::Output`).
pub fn message_item(run: &str, half: Half, text: &str, status: Status) -> Value {
    match half {
        Half::Input => json!({
            "type": "message",
            "id": item_id(run, half),
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }),
        Half::Output => json!({
            "type": "message",
            "id": item_id(run, half),
            "status": match status {
                Status::Completed => "completed",
                Status::InProgress => "in_progress",
                Status::Failed | Status::Cancelled => "incomplete",
            },
            "role": "assistant",
            "content": if status == Status::InProgress && text.is_empty() {
                json!([])
            } else {
                json!([output_text(text)])
            },
        }),
    }
}

pub fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn usage_json(usage: Option<StoredUsage>) -> Value {
    match usage {
        None => Value::Null,
        Some(u) => json!({
            "input_tokens": u.input_tokens,
            "input_tokens_details": {"cached_tokens": u.cached_tokens},
            "output_tokens": u.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u.input_tokens + u.output_tokens,
        }),
    }
}

/// A response as the API returns it.
pub struct Response<'a> {
    pub id: &'a str,
    pub run: &'a str,
    pub record: &'a Record,
    pub status: Status,
    /// The reply so far (all of it once completed).
    pub text: &'a str,
    pub error: Option<Value>,
}

impl Response<'_> {
    pub fn json(&self) -> Value {
        let r = self.record;
        let output = match self.status {
            Status::InProgress if self.text.is_empty() => json!([]),
            Status::Failed => json!([]),
            Status::Cancelled if self.text.is_empty() => json!([]),
            // What was written of a cancelled reply: never stored, shown as incomplete.
            Status::Cancelled => json!([message_item(
                self.run,
                Half::Output,
                self.text,
                Status::Cancelled
            )]),
            status => json!([message_item(self.run, Half::Output, self.text, status)]),
        };
        let completed = self.status == Status::Completed;
        json!({
            "id": self.id,
            "object": "response",
            "created_at": r.created_at,
            "completed_at": if completed { Some(r.created_at.max(now_secs())) } else { None },
            "status": self.status.as_str(),
            "incomplete_details": null,
            "model": r.model,
            "previous_response_id": r.previous_response_id,
            "instructions": r.instructions,
            "output": output,
            "error": self.error,
            "tools": [],
            "tool_choice": "auto",
            "truncation": "disabled",
            "parallel_tool_calls": true,
            "text": {"format": {"type": "text"}},
            "top_p": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "top_logprobs": 0,
            "temperature": r.temperature.map_or(1.0, f64::from),
            "reasoning": null,
            "usage": if completed { usage_json(r.usage) } else { Value::Null },
            "max_output_tokens": r.max_output_tokens,
            "max_tool_calls": null,
            "store": true,
            "background": r.background,
            "service_tier": "default",
            "metadata": r.metadata,
            "safety_identifier": null,
            "prompt_cache_key": null,
            "conversation": r.conversation.as_ref().map(|id| json!({"id": id})),
        })
    }
}

/// A conversation object.
pub fn conversation(id: &SessionId, created_at: u64, metadata: &Map<String, Value>) -> Value {
    json!({
        "id": id.as_str(),
        "object": "conversation",
        "created_at": created_at,
        "metadata": metadata,
    })
}

/// A list of items, as the API pages them.
pub fn list(items: Vec<Value>, has_more: bool) -> Value {
    let id = |v: Option<&Value>| v.and_then(|i| i.get("id")).cloned();
    json!({
        "object": "list",
        "first_id": id(items.first()),
        "last_id": id(items.last()),
        "has_more": has_more,
        "data": items,
    })
}
