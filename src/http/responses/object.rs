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
    /// The function tools and `tool_choice` as the request gave them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// The functions the reply called (added by the chat cycle).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<StoredCall>,
    /// When the run was saved (added by the chat cycle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<u64>,
}

/// A function call as a record keeps it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredCall {
    pub call_id: String,
    pub name: String,
    pub arguments: String,
}

impl From<&crate::model::ToolCall> for StoredCall {
    fn from(c: &crate::model::ToolCall) -> Self {
        StoredCall {
            call_id: c.id.clone(),
            name: c.name.clone(),
            arguments: c.arguments.clone(),
        }
    }
}

impl StoredCall {
    pub fn to_call(&self) -> crate::model::ToolCall {
        crate::model::ToolCall {
            id: self.call_id.clone(),
            name: self.name.clone(),
            arguments: self.arguments.clone(),
        }
    }
}

/// A function call output item (`fc_<run>_<n>`).
pub fn call_item(run: &str, n: usize, call: &StoredCall, status: Status) -> Value {
    json!({
        "type": "function_call",
        "id": format!("fc_{run}_{n}"),
        "call_id": call.call_id,
        "name": call.name,
        "arguments": call.arguments,
        "status": match status {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Failed | Status::Cancelled => "incomplete",
        },
    })
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
        let calls: Vec<crate::model::ToolCall> = r.calls.iter().map(StoredCall::to_call).collect();
        // A reply of calls alone is kept as their rendering: it is no message of the model's.
        let text_is_calls = !calls.is_empty() && self.text == crate::chat::render_calls(&calls);
        let mut output = Vec::new();
        match self.status {
            Status::Failed => {}
            _ if self.text.is_empty() || text_is_calls => {}
            // What was written of a cancelled reply (never stored) is shown as incomplete.
            status => output.push(message_item(self.run, Half::Output, self.text, status)),
        }
        if self.status == Status::Completed {
            for (n, call) in r.calls.iter().enumerate() {
                output.push(call_item(self.run, n, call, Status::Completed));
            }
        }
        let output = Value::Array(output);
        let completed = self.status == Status::Completed;
        json!({
            "id": self.id,
            "object": "response",
            "created_at": r.created_at,
            "completed_at": if completed { Some(r.completed_at.unwrap_or(r.created_at)) } else { None },
            "status": self.status.as_str(),
            "incomplete_details": null,
            "model": r.model,
            "previous_response_id": r.previous_response_id,
            "instructions": r.instructions,
            "output": output,
            "error": self.error,
            "tools": r.tools.iter().map(tool_json).collect::<Vec<_>>(),
            "tool_choice": r.tool_choice.clone().unwrap_or_else(|| json!("auto")),
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

/// A function tool as a response lists it (Open Responses' `FunctionTool`: every field there).
fn tool_json(tool: &Value) -> Value {
    json!({
        "type": "function",
        "name": tool.get("name").cloned().unwrap_or(Value::Null),
        "description": tool.get("description").cloned().unwrap_or(Value::Null),
        "parameters": tool.get("parameters").cloned().unwrap_or(Value::Null),
        "strict": tool.get("strict").cloned().unwrap_or(Value::Null),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_calls_reads_back() {
        let saved = r#"{"model":"scripted","instructions":null,"metadata":{},"previous_response_id":null,"conversation":null,"temperature":null,"max_output_tokens":null,"background":false,"created_at":1796695342,"usage":{"input_tokens":11,"output_tokens":6,"cached_tokens":0},"tools":[{"type":"function","name":"get_weather"}],"calls":[{"call_id":"call_7","name":"get_weather","arguments":"{\"city\": \"Paris\"}"}],"completed_at":1796695342}"#;
        let record = Record::read(Some(saved), "m");
        assert_eq!(record.calls.len(), 1);
        let text = crate::chat::render_calls(&[record.calls[0].to_call()]);
        let json = Response {
            id: "resp_r.cw",
            run: "r",
            record: &record,
            status: Status::Completed,
            text: &text,
            error: None,
        }
        .json();
        assert_eq!(json["output"][0]["type"], "function_call", "{json}");
        assert_eq!(json["output"].as_array().unwrap().len(), 1, "{json}");
    }
}
