//! Requests to the handler, built from the real API Gateway events in `events/`: one builder,
//! [`Req`], for every test.
//!
//! ```ignore
//! let reply = Req::chat("s1", "hi").sub("alice").header("idempotency-key", "k").call(&app).await;
//! let (status, body) = Req::http("GET", "/sessions").query(&[("owner", "ada")]).call_json(&app).await;
//! ```

use std::time::Duration;

use lambda_http::lambda_runtime::Context;
use lambda_http::{Request, RequestExt};
use serde_json::{json, Map, Value};
use session_chat::config::InvokeMode;
use session_chat::http::App;
use session_chat::lambda::Outcome;

use super::{now_ms, repo, Reply};

/// The seeds every built event starts from.
const HTTP_API_EVENT: &str = "http-api/1-collin-hello.json";
const REST_API_EVENT: &str = "rest-api/1-collin-hello.json";

/// An API Gateway event under construction: a real one from `events/`, changed only where the
/// test says. Knows both shapes: HTTP API (v2) and REST API (v1).
pub struct Req {
    event: Value,
    deadline: Option<Duration>,
}

impl Req {
    /// An event file under `events/` as it is, e.g. `Req::file("rest-api/get-session.json")`.
    pub fn file(name: &str) -> Req {
        let path = repo().join("events").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let event = serde_json::from_str(&text).expect("event is JSON");
        Req {
            event,
            deadline: None,
        }
    }

    /// `method path` as an HTTP API (v2) event, without a body.
    pub fn http(method: &str, path: &str) -> Req {
        let mut req = Req::file(HTTP_API_EVENT);
        let e = &mut req.event;
        e["rawPath"] = path.into();
        e["routeKey"] = format!("{method} {path}").into();
        e["requestContext"]["routeKey"] = e["routeKey"].clone();
        e["requestContext"]["http"]["method"] = method.into();
        e["requestContext"]["http"]["path"] = path.into();
        e["body"] = Value::Null;
        req
    }

    /// `method path` as a REST API (v1) event under the seed's stage (`prod`), without a body.
    pub fn rest(method: &str, path: &str) -> Req {
        let mut req = Req::file(REST_API_EVENT);
        let e = &mut req.event;
        e["httpMethod"] = method.into();
        e["path"] = path.into();
        e["requestContext"]["httpMethod"] = method.into();
        e["body"] = Value::Null;
        let stage = e["requestContext"]["stage"].as_str().unwrap().to_owned();
        req.stage(&stage)
    }

    /// `POST /chat` of `message` to `session_id`, as an HTTP API event.
    pub fn chat(session_id: &str, message: &str) -> Req {
        Req::http("POST", "/chat").body(json!({"session_id": session_id, "message": message}))
    }

    fn is_rest(&self) -> bool {
        self.event.get("httpMethod").is_some()
    }

    /// A JSON body (`None`: no body).
    pub fn body(mut self, body: impl Into<Option<Value>>) -> Req {
        self.event["body"] = body.into().map_or(Value::Null, |b| b.to_string().into());
        self
    }

    /// A body of exactly this text.
    pub fn raw_body(mut self, text: &str) -> Req {
        self.event["body"] = text.into();
        self
    }

    /// Sets a header, replacing the event's own of any case (an HTTP API event's names are lower
    /// case; a REST event has it in `multiValueHeaders` too).
    pub fn header(mut self, name: &str, value: &str) -> Req {
        let rest = self.is_rest();
        let name = if rest {
            name.to_owned()
        } else {
            name.to_ascii_lowercase()
        };
        let mut set = |field: &str, value: Value| {
            let headers = object(&mut self.event[field]);
            headers.retain(|k, _| !k.eq_ignore_ascii_case(&name));
            headers.insert(name.clone(), value);
        };
        set("headers", value.into());
        if rest {
            set("multiValueHeaders", json!([value]));
        }
        self
    }

    /// Sets each of `headers` as [`Req::header`] does.
    pub fn headers(self, headers: &[(&str, &str)]) -> Req {
        headers
            .iter()
            .fold(self, |req, (name, value)| req.header(name, value))
    }

    /// Asks for server-sent events (`Accept: text/event-stream`).
    pub fn sse(self) -> Req {
        self.header("accept", "text/event-stream")
    }

    /// Query parameters (values with spaces are percent-encoded in an HTTP API's raw string).
    pub fn query(mut self, params: &[(&str, &str)]) -> Req {
        let single: Map<String, Value> = params
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        if self.is_rest() {
            let multi: Map<String, Value> = params
                .iter()
                .map(|(k, v)| (k.to_string(), json!([v])))
                .collect();
            self.event["multiValueQueryStringParameters"] = multi.into();
        } else {
            let raw: Vec<String> = params
                .iter()
                .map(|(k, v)| format!("{k}={}", v.replace(' ', "%20")))
                .collect();
            self.event["rawQueryString"] = raw.join("&").into();
        }
        self.event["queryStringParameters"] = single.into();
        self
    }

    /// The claims of a token API Gateway's authorizer verified: an HTTP API's JWT authorizer,
    /// a REST API's Cognito authorizer.
    pub fn claims(mut self, claims: Value) -> Req {
        self.event["requestContext"]["authorizer"] = if self.is_rest() {
            json!({ "claims": claims })
        } else {
            json!({"jwt": {"claims": claims, "scopes": null}})
        };
        self
    }

    /// A caller whose verified token's subject is `sub`.
    pub fn sub(self, sub: &str) -> Req {
        self.claims(json!({ "sub": sub }))
    }

    /// The stage the event came through. A REST event's `requestContext.path` starts with it
    /// (its `path` never does); an HTTP API's `rawPath` is left as the test wrote it.
    pub fn stage(mut self, stage: &str) -> Req {
        self.event["requestContext"]["stage"] = stage.into();
        if self.is_rest() {
            let path = self.event["path"].as_str().unwrap().to_owned();
            self.event["requestContext"]["path"] = format!("/{stage}{path}").into();
        }
        self
    }

    /// The stage's variables, e.g. the streaming REST API's `{"invokeMode": "RESPONSE_STREAM"}`.
    pub fn stage_variables(mut self, variables: Value) -> Req {
        self.event["stageVariables"] = variables;
        self
    }

    /// A Lambda context whose deadline is `remaining` from when the request is made.
    pub fn deadline(mut self, remaining: Duration) -> Req {
        self.deadline = Some(remaining);
        self
    }

    /// The event as the Lambda Runtime API hands it over.
    pub fn event(self) -> Value {
        self.event
    }

    /// The event as lambda_http converts it.
    pub fn request(self) -> Request {
        let request = lambda_http::request::from_str(&self.event.to_string())
            .expect("a valid API Gateway event");
        match self.deadline {
            Some(remaining) => request.with_lambda_context(context(Some(remaining))),
            None => request,
        }
    }

    /// Sends the request to `app`; its answer.
    pub async fn call(self, app: &App) -> Reply {
        Reply::of(app.handle(self.request()).await)
    }

    /// Sends the request to `app`; the status and JSON body (checked to be served as JSON).
    pub async fn call_json(self, app: &App) -> (u16, Value) {
        self.call(app).await.parts()
    }
}

/// The JSON object at `value`, made one if it is not (an event's `null` headers).
fn object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    value.as_object_mut().unwrap()
}

/// A Lambda context, with a deadline `remaining` from now if given.
fn context(remaining: Option<Duration>) -> Context {
    let mut context = Context::default();
    context.request_id = "test-request".into();
    if let Some(remaining) = remaining {
        context.deadline = now_ms() + remaining.as_millis() as u64;
    }
    context
}

/// Runs one invocation of `event` through the entry adapter, as the Lambda runtime would.
pub async fn invoke(app: &App, event: Value) -> Outcome {
    session_chat::lambda::answer(app, InvokeMode::Buffered, event, context(None)).await
}
