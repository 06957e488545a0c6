//! Request inputs as typed values: bodies, headers, query parameters, path segments. Each
//! returns a checked value or the [`ApiError`] that tells the client what is wrong.

use lambda_http::http::header;
use lambda_http::{Body, Request};
use serde_json::{Map, Value};

use super::ApiError;
use crate::chat::{Cursor, Say, Span};
use crate::input::{IdempotencyKey, InputError, Message, Rating, RunId, SessionId, Title};

/// A checked `POST /chat` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequest {
    pub session_id: SessionId,
    /// A new message, a regeneration of the last reply, or an edit of an earlier message.
    pub say: Say,
    /// The user a trusted backend says the session is for (listings), if any.
    pub owner: Option<String>,
}

/// Parses a `POST /chat` body: a JSON object with string fields `session_id` and `message`,
/// and optionally `owner`; or `"regenerate": true` instead of `message`; or `"edit": "<run
/// id>"` beside it. Other fields are ignored; of a field given twice, the last counts.
pub fn parse_chat_body(bytes: &[u8], max_message_bytes: usize) -> Result<ChatRequest, ApiError> {
    let fields = json_object(bytes)?;
    let session_id = SessionId::parse(string_field(&fields, "session_id")?)?;
    let regenerate = match fields.get("regenerate") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "regenerate must be true or false".into(),
            ))
        }
    };
    let edit = match fields.get("edit") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(RunId::parse(id)?),
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "edit must be a run id (a string)".into(),
            ))
        }
    };
    let say = match (regenerate, edit) {
        (true, Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "give regenerate or edit, not both".into(),
            ))
        }
        (true, None) if fields.contains_key("message") => {
            return Err(ApiError::InvalidRequest(
                "regenerate answers the last message again: it takes no message".into(),
            ))
        }
        (true, None) => Say::Regenerate,
        (false, edit) => {
            let message = Message::parse(string_field(&fields, "message")?, max_message_bytes)?;
            match edit {
                Some(run) => Say::Edit(run.as_str().to_owned(), message),
                None => Say::New(message),
            }
        }
    };
    let owner = match fields.get("owner") {
        None | Some(Value::Null) => None,
        Some(Value::String(owner)) => Some(owner.clone()),
        Some(_) => return Err(ApiError::InvalidRequest("owner must be a string".into())),
    };
    Ok(ChatRequest {
        session_id,
        say,
        owner,
    })
}

/// Parses a `POST /sessions/{id}/select` body: `{"run_id": "..."}`.
pub fn parse_select_body(bytes: &[u8]) -> Result<RunId, ApiError> {
    let fields = json_object(bytes)?;
    Ok(RunId::parse(string_field(&fields, "run_id")?)?)
}

/// Parses a `PUT .../feedback` body: `{"rating": "up"|"down", "comment"?: "..."}`.
pub fn parse_feedback_body(bytes: &[u8]) -> Result<Rating, ApiError> {
    let fields = json_object(bytes)?;
    let comment = match fields.get("comment") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(c.as_str()),
        Some(_) => return Err(InputError::Feedback.into()),
    };
    let rating = match fields.get("rating") {
        Some(Value::String(r)) => r.as_str(),
        _ => return Err(InputError::Feedback.into()),
    };
    Ok(Rating::parse(rating, comment)?)
}

/// Parses a `PATCH /sessions/{id}` body: `{"title": "..."}`.
pub fn parse_title_body(bytes: &[u8]) -> Result<Title, ApiError> {
    let fields = json_object(bytes)?;
    Ok(Title::parse(string_field(&fields, "title")?)?)
}

/// The `Idempotency-Key` header, if sent.
pub fn idempotency_key(request: &Request) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = request.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| InputError::IdempotencyKey)?;
    Ok(Some(IdempotencyKey::parse(text)?))
}

/// Whether the client takes server-sent events (`Accept: text/event-stream`, any parameters).
pub fn wants_events(request: &Request) -> bool {
    request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let media = range.split(';').next().unwrap_or_default().trim();
            media.eq_ignore_ascii_case("text/event-stream")
        })
}

/// `limit`: a whole number from 1 to `max`, `default` when not given.
pub fn parse_limit(text: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match text {
        None => Ok(default),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::InvalidRequest(format!("limit must be a whole number from 1 to {max}"))
            }),
    }
}

/// Which runs a history read wants: from `cursor` on (newer), or before `before` (older; `end`
/// for the newest page).
pub fn parse_span(
    cursor: Option<&str>,
    before: Option<&str>,
) -> Result<(Option<Cursor>, bool), ApiError> {
    let parse = |text: &str| {
        Cursor::parse(text).ok_or(ApiError::Chat(crate::chat::ChatError::InvalidCursor))
    };
    match (cursor, before) {
        (None, None) => Ok((None, false)),
        (Some(text), None) => Ok((Some(parse(text)?), false)),
        (None, Some("end")) => Ok((None, true)),
        (None, Some(text)) => Ok((Some(parse(text)?), true)),
        (Some(_), Some(_)) => Err(ApiError::InvalidRequest(
            "give cursor (newer runs) or before (older runs), not both".into(),
        )),
    }
}

/// The span of a parsed history request.
pub fn span(cursor: &Option<Cursor>, before: bool) -> Span<'_> {
    if before {
        Span::Before(cursor.as_ref())
    } else {
        Span::From(cursor.as_ref())
    }
}

/// Decodes `%XX` escapes in a path segment; `None` if an escape is broken or not UTF-8.
pub fn percent_decode(segment: &str) -> Option<String> {
    // percent-encoding leaves a broken escape ("%", "%4", "%zz") as it is; here it is a bad path.
    let well_formed = segment
        .split('%')
        .skip(1)
        .all(|after| after.bytes().take(2).filter(u8::is_ascii_hexdigit).count() == 2);
    if !well_formed {
        return None;
    }
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// Base64-encoded bodies arrive already decoded as `Body::Binary`.
pub fn body_bytes(body: &Body) -> &[u8] {
    match body {
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => b"",
    }
}

fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidRequest(
            "the request body is empty; send a JSON object with session_id and message".into(),
        ));
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(ApiError::InvalidRequest(
            "the request body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::InvalidRequest(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

fn string_field<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, ApiError> {
    match fields.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::InvalidRequest(format!("{name} must be a string"))),
        None => Err(ApiError::InvalidRequest(format!("{name} is required"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments() {
        assert_eq!(percent_decode("user%40x%3A1").as_deref(), Some("user@x:1"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        for bad in ["%", "%4", "%zz", "%ff", "%e2%82"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn chat_bodies() {
        let ok = parse_chat_body(br#"{"session_id": "s", "message": "hi", "extra": 1}"#, 10);
        assert_eq!(ok.unwrap().say, Say::New(Message::parse("hi", 10).unwrap()));
        for (body, code) in [
            (&b""[..], "invalid_request"),
            (b"\xff\xfe", "invalid_request"),
            (b"null", "invalid_request"),
            (
                br#"{"session_id": "s", "message": "hello world"}"#,
                "message_too_long",
            ),
            (
                br#"{"session_id": "s s", "message": "hi"}"#,
                "invalid_session_id",
            ),
        ] {
            assert_eq!(parse_chat_body(body, 10).unwrap_err().code(), code);
        }
    }
}
