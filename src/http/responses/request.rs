//! A `POST /v1/responses` body as typed values, and the ids of responses and items. Every
//! field the API defines is either used, accepted with its one supported value, or refused
//! with a 400 that names it (docs/responses.md, "What is supported").

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::http::ApiError;
use crate::input::{Message, RunId, SessionId};
use crate::model::ModelOptions;

/// Metadata as the API bounds it: 16 pairs, keys to 64 characters, values to 512.
const MAX_METADATA_PAIRS: usize = 16;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;

/// A checked `POST /v1/responses` body.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateResponse {
    pub model: Option<String>,
    /// The user's text: the run's input.
    pub message: Message,
    /// `instructions`, and the input's system and developer messages, in order.
    pub instructions: Option<String>,
    pub chain: Chain,
    pub store: bool,
    pub stream: bool,
    pub background: bool,
    pub metadata: Map<String, Value>,
    pub options: ModelOptions,
    pub tools: Tools,
    /// `function_call_output` items: `(call id, output)`, in order.
    pub outputs: Vec<(String, String)>,
    /// `user`: the end user a trusted backend says this is for (the session's owner, as
    /// `POST /chat`'s `owner`); ignored in JWT mode, where the owner is the token's.
    pub user: Option<String>,
}

/// Function tools as the request gave them (for the response) and as chat completions take
/// them (for the model); empty when none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tools {
    pub given: Vec<Value>,
    pub choice: Option<Value>,
    pub for_model: Option<Value>,
    pub choice_for_model: Option<Value>,
}

/// The most bytes of `tools` a request may send (kept in the response's record).
const MAX_TOOLS_BYTES: usize = 64 * 1024;

/// What the new response follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chain {
    /// Nothing: a new conversation of its own.
    Alone,
    /// `previous_response_id`.
    After(ResponseId),
    /// `conversation`: a session, answered after its last run.
    Conversation(SessionId),
}

/// A response's id: `resp_<run id>.<session id, base64url>`, so a response is found from its
/// id alone (docs/responses.md, "Ids").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseId {
    pub run: RunId,
    pub session: SessionId,
}

impl ResponseId {
    pub fn parse(raw: &str) -> Option<ResponseId> {
        let rest = raw.strip_prefix("resp_")?;
        let (run, session) = rest.split_once('.')?;
        let session = URL_SAFE_NO_PAD.decode(session).ok()?;
        let session = SessionId::parse(std::str::from_utf8(&session).ok()?).ok()?;
        Some(ResponseId {
            run: RunId::parse(run).ok()?,
            session,
        })
    }

    pub fn format(run: &str, session: &SessionId) -> String {
        format!(
            "resp_{run}.{}",
            URL_SAFE_NO_PAD.encode(session.as_str().as_bytes())
        )
    }
}

/// Which half of a run a conversation item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Input,
    Output,
}

/// A conversation item's id: `msg_<run id>.in` (the user's message) or `.out` (the reply).
pub fn item_id(run: &str, half: Half) -> String {
    match half {
        Half::Input => format!("msg_{run}.in"),
        Half::Output => format!("msg_{run}.out"),
    }
}

pub fn parse_item_id(raw: &str) -> Option<(RunId, Half)> {
    let rest = raw.strip_prefix("msg_")?;
    let (run, half) = rest.rsplit_once('.')?;
    let half = match half {
        "in" => Half::Input,
        "out" => Half::Output,
        _ => return None,
    };
    Some((RunId::parse(run).ok()?, half))
}

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::Param {
        param: param.to_owned(),
        message: message.into(),
    }
}

fn unsupported(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::Unsupported {
        param: param.to_owned(),
        message: message.into(),
    }
}

/// Fields taken with their default (or one value) only; anything else is refused by name.
fn check_accepted(fields: &Map<String, Value>) -> Result<(), ApiError> {
    for (name, value) in fields {
        let ok = match name.as_str() {
            "model"
            | "input"
            | "instructions"
            | "previous_response_id"
            | "conversation"
            | "store"
            | "stream"
            | "background"
            | "metadata"
            | "max_output_tokens"
            | "temperature"
            | "tools"
            | "tool_choice" => continue,
            // Accepted as the defaults they name.
            "user" | "safety_identifier" | "prompt_cache_key" => {
                value.is_null() || value.is_string()
            }
            "truncation" => matches!(value.as_str(), Some("disabled")) || value.is_null(),
            "parallel_tool_calls" => value.is_boolean() || value.is_null(),
            "service_tier" => matches!(value.as_str(), Some("auto" | "default")) || value.is_null(),
            "top_p" => value.as_f64() == Some(1.0) || value.is_null(),
            "include" => value.as_array().is_some_and(Vec::is_empty) || value.is_null(),
            "reasoning" | "max_tool_calls" => value.is_null(),
            "top_logprobs" | "presence_penalty" | "frequency_penalty" => {
                value.as_f64() == Some(0.0) || value.is_null()
            }
            "text" => {
                value.is_null()
                    || value
                        .get("format")
                        .is_none_or(|f| f.get("type").and_then(Value::as_str) == Some("text"))
            }
            "stream_options" => value.is_null() || value.is_object(),
            _ => {
                return Err(ApiError::Param {
                    param: name.clone(),
                    message: format!("unknown parameter: {name}"),
                })
            }
        };
        if !ok {
            return Err(ApiError::Unsupported {
                param: name.clone(),
                message: format!("{name}: only its default is supported here (docs/responses.md)"),
            });
        }
    }
    Ok(())
}

/// Parses a `POST /v1/responses` body.
pub fn parse_create(bytes: &[u8], max_message_bytes: usize) -> Result<CreateResponse, ApiError> {
    let fields = object(bytes)?;
    check_accepted(&fields)?;
    let optional_string = |name: &'static str| match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(name, format!("{name} must be a string"))),
    };
    let flag = |name: &'static str, default: bool| match fields.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(name, format!("{name} must be true or false"))),
    };
    let model = optional_string("model")?;
    let mut instructions: Vec<String> = optional_string("instructions")?.into_iter().collect();
    let mut said = Vec::new();
    let mut outputs = Vec::new();
    match fields.get("input") {
        Some(Value::String(text)) => said.push(text.clone()),
        Some(Value::Array(items)) if !items.is_empty() => {
            for item in items {
                read_input_item(item, &mut said, &mut instructions, &mut outputs)?;
            }
        }
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(bad("input", "input is required: a string or input items"))
        }
        Some(_) => return Err(bad("input", "input must be a string or an array of items")),
    }
    if said.is_empty() && outputs.is_empty() {
        return Err(bad("input", "input holds no user message"));
    }
    // Function results are kept in the run's input as text (griptape's view, later prompts).
    let mut text: Vec<String> = outputs
        .iter()
        .map(|(id, output)| format!("[function result] {id}: {output}"))
        .collect();
    text.extend(said);
    let message = Message::parse(&text.join("\n\n"), max_message_bytes)?;
    let instructions = match instructions.join("\n\n") {
        joined if joined.trim().is_empty() => None,
        joined if joined.len() > max_message_bytes => {
            return Err(bad(
                "instructions",
                format!("instructions are over {max_message_bytes} bytes"),
            ))
        }
        joined => Some(joined),
    };
    let chain = parse_chain(&fields)?;
    if !outputs.is_empty() && !matches!(chain, Chain::After(_)) {
        return Err(unsupported(
            "input",
            "function_call_output answers the calls of a previous_response_id",
        ));
    }
    let tools = parse_tools(&fields)?;
    let store = flag("store", true)?;
    let stream = flag("stream", false)?;
    let background = flag("background", false)?;
    if !store {
        return Err(unsupported(
            "store",
            "store: false is not supported: every response is kept (docs/responses.md)",
        ));
    }
    if background && !stream {
        return Err(unsupported(
            "background",
            "background needs stream: true here; resume it with GET /v1/responses/{id}?stream=true",
        ));
    }
    let metadata = parse_metadata(fields.get("metadata"))?;
    let options = parse_options(&fields)?;
    Ok(CreateResponse {
        model,
        message,
        instructions,
        chain,
        store,
        stream,
        background,
        metadata,
        options,
        tools,
        outputs,
        user: optional_string("user")?,
    })
}

/// `tools` (functions only) and `tool_choice`, given and as chat completions take them.
fn parse_tools(fields: &Map<String, Value>) -> Result<Tools, ApiError> {
    let given = match fields.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tools)) => tools.clone(),
        Some(_) => return Err(bad("tools", "tools must be an array")),
    };
    if Value::Array(given.clone()).to_string().len() > MAX_TOOLS_BYTES {
        return Err(bad("tools", "tools are over 64 KiB"));
    }
    let mut for_model = Vec::with_capacity(given.len());
    for tool in &given {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(unsupported(
                "tools",
                "only function tools are supported here",
            ));
        }
        let name = match tool.get("name") {
            Some(Value::String(n)) if !n.is_empty() && n.len() <= 64 => n,
            _ => {
                return Err(bad(
                    "tools",
                    "a function tool needs a name (1-64 characters)",
                ))
            }
        };
        let mut function = Map::new();
        function.insert("name".into(), json!(name));
        for key in ["description", "parameters", "strict"] {
            if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
                function.insert(key.into(), v.clone());
            }
        }
        for_model.push(json!({"type": "function", "function": function}));
    }
    let choice = fields.get("tool_choice").filter(|v| !v.is_null()).cloned();
    let choice_for_model = match &choice {
        None => None,
        Some(Value::String(c)) if matches!(c.as_str(), "auto" | "none" | "required") => {
            Some(json!(c))
        }
        Some(Value::Object(c)) if c.get("type").and_then(Value::as_str) == Some("function") => {
            match c.get("name").and_then(Value::as_str) {
                Some(name) => Some(json!({"type": "function", "function": {"name": name}})),
                None => {
                    return Err(bad(
                        "tool_choice",
                        "tool_choice names a function: {\"type\": \"function\", \"name\"}",
                    ))
                }
            }
        }
        Some(_) => {
            return Err(unsupported(
                "tool_choice",
                "tool_choice is auto, none, required or a function",
            ))
        }
    };
    let none = given.is_empty();
    Ok(Tools {
        for_model: (!none).then(|| Value::Array(for_model)),
        choice_for_model: choice_for_model.filter(|_| !none),
        given,
        choice,
    })
}

/// What a new response follows: `previous_response_id`, `conversation` (an id or `{"id"}`), or
/// nothing; not both.
fn parse_chain(fields: &Map<String, Value>) -> Result<Chain, ApiError> {
    let previous = match fields.get("previous_response_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(bad(
                "previous_response_id",
                "previous_response_id must be a string",
            ))
        }
    };
    let conversation = match fields.get("conversation") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(Value::Object(c)) => match c.get("id") {
            Some(Value::String(id)) => Some(id.clone()),
            _ => return Err(bad("conversation", "conversation.id must be a string")),
        },
        Some(_) => {
            return Err(bad(
                "conversation",
                "conversation must be an id or {\"id\": ...}",
            ))
        }
    };
    Ok(match (previous, conversation) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "previous_response_id",
                "give previous_response_id or conversation, not both",
            ))
        }
        (Some(id), None) => Chain::After(ResponseId::parse(&id).ok_or_else(|| {
            bad(
                "previous_response_id",
                "previous_response_id is not a response id of this API",
            )
        })?),
        (None, Some(id)) => Chain::Conversation(
            SessionId::parse(&id).map_err(|_| bad("conversation", "not a conversation id"))?,
        ),
        (None, None) => Chain::Alone,
    })
}

/// `max_output_tokens` (1 to a million) and `temperature` (0 to 2).
fn parse_options(fields: &Map<String, Value>) -> Result<ModelOptions, ApiError> {
    let max_output_tokens = match fields.get("max_output_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| (1..=1_000_000).contains(n))
                .map(|n| n as u32)
                .ok_or_else(|| {
                    bad(
                        "max_output_tokens",
                        "max_output_tokens must be a whole number from 1",
                    )
                })?,
        ),
    };
    let temperature = match fields.get("temperature") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|t| (0.0..=2.0).contains(t))
                .map(|t| t as f32)
                .ok_or_else(|| bad("temperature", "temperature must be a number from 0 to 2"))?,
        ),
    };
    Ok(ModelOptions {
        max_output_tokens,
        temperature,
    })
}

/// One input item: a message (`role` and `content`, `type` optional); user text goes to the
/// run's input, system and developer text to the turn's instructions.
fn read_input_item(
    item: &Value,
    said: &mut Vec<String>,
    instructions: &mut Vec<String>,
    outputs: &mut Vec<(String, String)>,
) -> Result<(), ApiError> {
    let Value::Object(item) = item else {
        return Err(bad("input", "each input item must be an object"));
    };
    match item.get("type").and_then(Value::as_str) {
        None | Some("message") => {}
        // The previous response's own call, sent back: it is in that response already.
        Some("function_call") => return Ok(()),
        Some("function_call_output") => {
            let call_id = item.get("call_id").and_then(Value::as_str);
            let output = match item.get("output") {
                Some(Value::String(o)) => Some(o.clone()),
                Some(Value::Array(_)) => Some(message_text(item.get("output"))?),
                _ => None,
            };
            match (call_id, output) {
                (Some(id), Some(output)) if !id.is_empty() => {
                    outputs.push((id.to_owned(), output));
                    return Ok(());
                }
                _ => {
                    return Err(bad(
                        "input",
                        "a function_call_output needs a call_id and an output",
                    ))
                }
            }
        }
        Some(other) => {
            return Err(unsupported(
                "input",
                format!("input items of type {other} are not supported"),
            ))
        }
    }
    let text = message_text(item.get("content"))?;
    match item.get("role").and_then(Value::as_str) {
        Some("user") => said.push(text),
        Some("system" | "developer") => instructions.push(text),
        Some("assistant") => {
            return Err(unsupported(
                "input",
                "assistant messages go into a conversation with POST /v1/conversations/{id}/items",
            ))
        }
        _ => {
            return Err(bad(
                "input",
                "an input message's role must be user, system or developer",
            ))
        }
    }
    Ok(())
}

/// A message's text: a string, or its `input_text` parts joined.
pub fn message_text(content: Option<&Value>) -> Result<String, ApiError> {
    match content {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text")) {
                    (Some("input_text" | "output_text" | "text"), Some(Value::String(t))) => {
                        text.push_str(t)
                    }
                    (Some(kind), _) if kind.starts_with("input_") => {
                        return Err(unsupported(
                            "input",
                            format!("{kind} content is not supported: text only"),
                        ))
                    }
                    _ => return Err(bad("input", "a content part must be input_text with text")),
                }
            }
            Ok(text)
        }
        _ => Err(bad(
            "input",
            "a message's content must be a string or content parts",
        )),
    }
}

/// `metadata`: at most 16 string pairs (keys to 64 characters, values to 512).
pub fn parse_metadata(value: Option<&Value>) -> Result<Map<String, Value>, ApiError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(bad("metadata", "metadata must be an object of strings")),
    };
    if map.len() > MAX_METADATA_PAIRS {
        return Err(bad("metadata", "metadata holds at most 16 pairs"));
    }
    for (key, value) in map {
        let ok = key.chars().count() <= MAX_METADATA_KEY
            && value
                .as_str()
                .is_some_and(|v| v.chars().count() <= MAX_METADATA_VALUE);
        if !ok {
            return Err(bad(
                "metadata",
                "metadata keys are strings to 64 characters, values strings to 512",
            ));
        }
    }
    Ok(map.clone())
}

pub fn object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(bad("body", "the request body must be a JSON object")),
        Err(e) => Err(bad(
            "body",
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_ids_name_their_run_and_session() {
        let session = SessionId::parse("user@x:1.a").unwrap();
        let id = ResponseId::format("0123abcd", &session);
        let parsed = ResponseId::parse(&id).unwrap();
        assert_eq!((parsed.run.as_str(), parsed.session), ("0123abcd", session));
        for bad in ["", "resp_", "resp_x", "msg_a.b", "resp_a.!!", "resp_a b.cw"] {
            assert_eq!(ResponseId::parse(bad), None, "{bad}");
        }
        assert_eq!(
            parse_item_id(&item_id("r_1", Half::Output)),
            Some((RunId::parse("r_1").unwrap(), Half::Output))
        );
        assert_eq!(parse_item_id("msg_r.side"), None);
    }

    #[test]
    fn bodies() {
        let ok = parse_create(
            br#"{"model": "m", "input": [{"role": "developer", "content": "Be brief."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
                "metadata": {"k": "v"}, "temperature": 0.5, "max_output_tokens": 20}"#,
            100,
        )
        .unwrap();
        assert_eq!(ok.message.as_str(), "hi");
        assert_eq!(ok.instructions.as_deref(), Some("Be brief."));
        assert_eq!(ok.options.max_output_tokens, Some(20));
        assert_eq!(ok.chain, Chain::Alone);
        for (body, param) in [
            (&br#"{"input": 3}"#[..], "input"),
            (br#"{}"#, "input"),
            (br#"{"input": "hi", "store": false}"#, "store"),
            (br#"{"input": "hi", "temperature": 9}"#, "temperature"),
            (
                br#"{"input": "hi", "previous_response_id": "x"}"#,
                "previous_response_id",
            ),
            (br#"{"input": "hi", "conversation": "a b"}"#, "conversation"),
            (br#"{"input": "hi", "metadata": {"k": 1}}"#, "metadata"),
            (br#"{"input": "hi", "frobnicate": 1}"#, "frobnicate"),
            (br#"{"input": "hi", "top_p": 0.5}"#, "top_p"),
            (
                br#"{"input": "hi", "tool_choice": "sometimes"}"#,
                "tool_choice",
            ),
            (
                br#"{"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}"#,
                "input",
            ),
            (
                br#"{"input": "hi", "tools": [{"type": "web_search"}]}"#,
                "tools",
            ),
            (
                br#"{"input": [{"role": "assistant", "content": "x"}]}"#,
                "input",
            ),
            (br#"[1]"#, "body"),
        ] {
            match parse_create(body, 100) {
                Err(ApiError::Param { param: p, .. } | ApiError::Unsupported { param: p, .. }) => {
                    assert_eq!(p, *param, "{}", String::from_utf8_lossy(body))
                }
                other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }
}
