//! Requests to the handler, built from the real API Gateway events in `events/`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_http::lambda_runtime::Context;
use lambda_http::{Request, RequestExt};
use serde_json::Value;

use super::repo;

/// The text of an event file under `events/`.
pub fn event_json(name: &str) -> Value {
    let path = repo().join("events").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("event is JSON")
}

pub fn request(event: &Value) -> Request {
    lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway event")
}

/// An event file as a request.
pub fn event(name: &str) -> Request {
    request(&event_json(name))
}

/// The seed's first HTTP API event with another body.
pub fn with_body(body: &str) -> Request {
    let mut event = event_json("http-api/1-collin-hello.json");
    event["body"] = Value::String(body.to_owned());
    request(&event)
}

/// A request to `method path` with `body`, shaped as an HTTP API event.
pub fn http_request(method: &str, path: &str, body: &str) -> Request {
    let mut event = event_json("http-api/1-collin-hello.json");
    event["rawPath"] = path.into();
    event["routeKey"] = format!("{method} {path}").into();
    event["requestContext"]["http"]["method"] = method.into();
    event["requestContext"]["http"]["path"] = path.into();
    event["body"] = body.into();
    request(&event)
}

/// Gives the request a Lambda context whose deadline is `remaining` from now.
pub fn with_deadline(request: Request, remaining: Duration) -> Request {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let mut context = Context::default();
    context.request_id = "test-request".into();
    context.deadline = now_ms + remaining.as_millis() as u64;
    request.with_lambda_context(context)
}

/// A chat request for `session_id` and `message` with extra headers, as an HTTP API event.
pub fn chat_request(session_id: &str, message: &str, headers: &[(&str, &str)]) -> Request {
    let mut event = event_json("http-api/1-collin-hello.json");
    event["body"] = serde_json::json!({"session_id": session_id, "message": message})
        .to_string()
        .into();
    for (name, value) in headers {
        event["headers"][name.to_ascii_lowercase()] = (*value).into();
    }
    request(&event)
}

/// A `POST /chat` asking for server-sent events.
pub fn sse_request(session_id: &str, message: &str, headers: &[(&str, &str)]) -> Request {
    let mut all = vec![("accept", "text/event-stream")];
    all.extend_from_slice(headers);
    chat_request(session_id, message, &all)
}
