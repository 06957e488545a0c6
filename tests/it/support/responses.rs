//! Reading the handler's answers: [`Reply`] (status, headers, body), server-sent events.

use lambda_http::http::HeaderMap;
use lambda_http::{Body, Response};
use serde_json::Value;

/// What the handler answered.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    pub fn of(response: Response<Body>) -> Reply {
        let (parts, body) = response.into_parts();
        let body = match body {
            Body::Text(t) => t.into_bytes(),
            Body::Binary(b) => b,
            _ => Vec::new(),
        };
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    /// The body as text, whatever it is (JSON, events, empty).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, checked to be served as JSON.
    pub fn json(&self) -> Value {
        assert_eq!(
            self.content_type(),
            "application/json",
            "every response is JSON"
        );
        let body = std::str::from_utf8(&self.body).expect("UTF-8 body");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("body {body:?}: {e}"))
    }

    /// Status and JSON body (checked to be served as JSON).
    pub fn parts(&self) -> (u16, Value) {
        (self.status, self.json())
    }

    /// The content type, or "" without one.
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The server-sent events of an event stream (none if the answer is not one).
    pub fn events(&self) -> Vec<(String, Value)> {
        if self.content_type() == "text/event-stream" {
            sse_events(&self.text())
        } else {
            Vec::new()
        }
    }
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
            // The Responses API's streams end with `data: [DONE]`.
            if data == "[DONE]" {
                return ("[DONE]".to_owned(), Value::Null);
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
