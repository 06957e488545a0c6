//! Reading the handler's answers: status, JSON bodies, server-sent events.

use lambda_http::{Body, Request, Response};
use serde_json::Value;
use session_chat::http::App;

/// Status and JSON body of a response.
pub fn parts(response: Response<Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "every response is JSON"
    );
    let body = match response.body() {
        Body::Text(t) => t.clone(),
        Body::Binary(b) => String::from_utf8(b.clone()).expect("UTF-8 body"),
        _ => String::new(),
    };
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("body {body:?}: {e}"));
    (status, json)
}

/// Sends a request and returns status and JSON body.
pub async fn call(app: &App, request: Request) -> (u16, Value) {
    parts(app.handle(request).await)
}

/// Status and body text of any response (JSON or empty).
pub fn status_and_text(response: Response<Body>) -> (u16, String) {
    let status = response.status().as_u16();
    let body = match response.body() {
        Body::Text(t) => t.clone(),
        Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    (status, body)
}

/// The server-sent events of a body: (event name, JSON data) in order.
pub fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{data:?}: {e}"));
            (name, data)
        })
        .collect()
}

/// The text of the `delta` events, concatenated.
pub fn deltas(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(name, _)| name == "delta")
        .map(|(_, data)| data["text"].as_str().expect("delta text"))
        .collect()
}

/// Status, content type and events of a streamed turn answered in-process (events at once).
pub async fn stream_call(app: &App, request: Request) -> (u16, String, Vec<(String, Value)>) {
    let response = app.handle(request).await;
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (status, text) = status_and_text(response);
    let events = if content_type == "text/event-stream" {
        sse_events(&text)
    } else {
        Vec::new()
    };
    (status, content_type, events)
}
