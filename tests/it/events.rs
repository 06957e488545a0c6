//! The function's entry adapter (`session_chat::lambda::answer`) driven with raw JSON events, as
//! the Lambda Runtime API hands them over: events lambda_http would panic on, events that are not
//! from API Gateway, routing under any stage name, and session ids that URLs cannot address.

use base64::Engine as _;
use serde_json::{json, Value};
use session_chat::http::App;

use crate::support::{Req, TestEnv};

/// An event file under `events/`, as it is.
fn event_json(name: &str) -> Value {
    Req::file(name).event()
}

/// What the function answered: status, JSON body (`null` when empty), the answer itself.
struct Answer {
    status: u64,
    body: Value,
    raw: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        header(&self.raw, name)
    }

    fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
}

/// A header's value in either API Gateway format (REST: `multiValueHeaders`, HTTP API:
/// `headers`).
fn header(answer: &Value, name: &str) -> Option<String> {
    if let Some(values) = answer["multiValueHeaders"][name].as_array() {
        let values: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
        return Some(values.join(", "));
    }
    answer["headers"][name].as_str().map(str::to_owned)
}

/// One invocation through the entry adapter, answered buffered and decoded.
async fn answer_to(app: &App, event: Value) -> Answer {
    let lambda_http::lambda_runtime::FunctionResponse::BufferedResponse(raw) =
        crate::support::invoke(app, event).await
    else {
        panic!("an API Gateway event without a streaming mark is answered buffered");
    };
    let status = raw["statusCode"].as_u64().expect("an API Gateway response");
    let text = match raw["body"].as_str() {
        Some(b) if raw["isBase64Encoded"] == true => String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .expect("base64 body"),
        )
        .expect("UTF-8 body"),
        Some(b) => b.to_owned(),
        None => String::new(),
    };
    let body = if text.is_empty() {
        Value::Null
    } else {
        assert_eq!(
            header(&raw, "content-type").as_deref(),
            Some("application/json"),
            "a body is JSON: {raw}"
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("body {text:?}: {e}"))
    };
    Answer { status, body, raw }
}

/// A REST API (v1) event for `method path` under `stage`, as API Gateway sends it: `path`
/// without the stage, `requestContext.path` with it.
fn rest(stage: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    Req::rest(method, path).stage(stage).body(body).event()
}

/// An HTTP API (v2) event for `method path` under `stage`: `rawPath` starts with a named stage.
fn http(stage: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let raw_path = if stage == "$default" {
        path.to_owned()
    } else {
        format!("/{stage}{path}")
    };
    http_raw(stage, method, &raw_path, body)
}

/// An HTTP API (v2) event with this exact `rawPath`.
fn http_raw(stage: &str, method: &str, raw_path: &str, body: Option<Value>) -> Value {
    Req::http(method, raw_path).stage(stage).body(body).event()
}

fn chat(session_id: &str) -> Option<Value> {
    Some(json!({"session_id": session_id, "message": "Hello my name is Ada."}))
}

/// The seed's base64 event: a good request, answered with a reply and stored.
async fn good_event_still_works(env: &TestEnv, app: &App) {
    let answer = answer_to(app, event_json("http-api/base64-body.json")).await;
    assert_eq!(answer.status, 200, "{}", answer.raw);
    assert_eq!(answer.body["session_id"], "b64-session");
    assert!(answer.body["reply"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(env.value("b64-session").await.is_some());
}

#[tokio::test]
async fn a_body_that_is_not_base64_gets_a_400_not_a_crash() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    for mut event in [
        event_json("http-api/base64-body.json"),
        rest("prod", "POST", "/chat", chat("b64-session")),
    ] {
        event["isBase64Encoded"] = true.into();
        event["body"] = "this is not base64!".into();
        let answer = answer_to(&app, event).await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, Some("invalid_request")),
            "{}",
            answer.raw
        );
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("base64"),
            "{}",
            answer.body
        );
    }
    assert_eq!(env.item_count().await, 0, "nothing stored");
    assert!(
        env.model.requests().await.is_empty(),
        "the model was never called"
    );
    good_event_still_works(&env, &app).await;
}

/// Every other input found to make lambda_http 1.3.2 panic while it converts an event.
#[tokio::test]
async fn events_lambda_http_cannot_convert_get_a_400() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let http_event = || event_json("http-api/1-collin-hello.json");
    let rest_event = || event_json("rest-api/1-collin-hello.json");
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut e = http_event();
    e["headers"]["host"] = "bad host".into();
    cases.push(("Host with a space", e));
    let mut e = rest_event();
    e["headers"]["Host"] = "[::".into();
    e["multiValueHeaders"]["Host"] = json!(["[::"]);
    cases.push(("Host an unclosed IPv6 address", e));
    let mut e = http_event();
    e["headers"]["host"] = "xn--a.example".into();
    cases.push(("Host not valid punycode", e));
    let mut e = http_event();
    e["headers"]["x-forwarded-proto"] = "h t".into();
    cases.push(("X-Forwarded-Proto not a scheme", e));
    let mut e = http_event();
    e["rawPath"] = ":x".into();
    cases.push(("a path read as a port", e));
    let mut e = http_event();
    e["rawQueryString"] = "q=a b".into();
    cases.push(("a raw query string with a space", e));
    let mut e = rest_event();
    e["path"] = format!("/{}", "a".repeat(70_000)).into();
    cases.push(("a URI past 65534 bytes", e));
    let mut e = rest_event();
    e["multiValueHeaders"] = (0..40_000)
        .map(|i| (format!("x-h{i}"), json!(["v"])))
        .collect::<serde_json::Map<_, _>>()
        .into();
    cases.push(("more header names than a HeaderMap holds", e));
    for (what, event) in cases {
        let answer = answer_to(&app, event).await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, Some("invalid_request")),
            "{what}: {}",
            answer.body
        );
    }
    assert_eq!(env.item_count().await, 0, "nothing stored");
    assert!(
        env.model.requests().await.is_empty(),
        "the model was never called"
    );
    good_event_still_works(&env, &app).await;
}

#[tokio::test]
async fn events_that_are_not_from_api_gateway_get_a_400() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let mut bad_method = event_json("rest-api/1-collin-hello.json");
    bad_method["httpMethod"] = "NOT A METHOD".into();
    let mut bad_header = event_json("http-api/1-collin-hello.json");
    bad_header["headers"]["x-bad"] = "a\u{1}b".into();
    for event in [
        json!({}),
        json!(null),
        json!("POST /chat"),
        json!({"Records": [{"eventSource": "aws:s3", "s3": {}}]}),
        json!({"version": "2.0", "rawPath": "/chat"}),
        bad_method,
        bad_header,
    ] {
        let answer = answer_to(&app, event.clone()).await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, Some("invalid_request")),
            "{event}"
        );
        assert!(answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("API Gateway"));
    }
    good_event_still_works(&env, &app).await;
}

/// The whole API under one stage: `event(method, path, body)` builds the event.
async fn api_under_stage(
    app: &App,
    what: &str,
    event: impl Fn(&str, &str, Option<Value>) -> Value,
) {
    // A session named like a route or a stage: reached by its id, whatever the stage is called.
    for id in ["stage-test", "chat", "sessions", "prod"] {
        let answer = answer_to(app, event("POST", "/chat", chat(id))).await;
        assert_eq!(
            answer.status, 200,
            "{what}: POST /chat for {id}: {}",
            answer.body
        );
        assert_eq!(answer.body["session_id"], id);
        let path = format!("/sessions/{id}");
        let answer = answer_to(app, event("GET", &path, None)).await;
        assert_eq!(answer.status, 200, "{what}: GET {path}: {}", answer.body);
        assert_eq!(answer.body["session_id"], id);
        assert_eq!(answer.body["runs"].as_array().unwrap().len(), 1, "{what}");
        let answer = answer_to(app, event("PUT", &path, None)).await;
        assert_eq!(
            (answer.status, answer.code()),
            (405, Some("method_not_allowed")),
            "{what}"
        );
        assert_eq!(
            answer.header("allow").as_deref(),
            Some("GET, DELETE, PATCH"),
            "{what}"
        );
        let answer = answer_to(app, event("DELETE", &path, None)).await;
        assert_eq!(answer.status, 204, "{what}: DELETE {path}: {}", answer.raw);
        let answer = answer_to(app, event("GET", &path, None)).await;
        assert_eq!(
            (answer.status, answer.code()),
            (404, Some("session_not_found")),
            "{what}"
        );
    }
    let answer = answer_to(app, event("GET", "/chat", None)).await;
    assert_eq!(
        (answer.status, answer.code()),
        (405, Some("method_not_allowed")),
        "{what}"
    );
    assert_eq!(answer.header("allow").as_deref(), Some("POST"), "{what}");
    // The chat page, at the API's root under any stage.
    let lambda_http::lambda_runtime::FunctionResponse::BufferedResponse(page) =
        crate::support::invoke(app, event("GET", "/", None)).await
    else {
        panic!("{what}: the page is answered buffered");
    };
    assert_eq!(page["statusCode"], 200, "{what}: GET /");
    assert_eq!(
        header(&page, "content-type").as_deref(),
        Some("text/html; charset=utf-8"),
        "{what}"
    );
    assert!(
        page["body"].as_str().unwrap_or_default().contains("<html"),
        "{what}"
    );
    let answer = answer_to(app, event("POST", "/", chat("unrouted"))).await;
    assert_eq!(
        (answer.status, answer.code()),
        (405, Some("method_not_allowed")),
        "{what}: POST /"
    );
    assert_eq!(answer.header("allow").as_deref(), Some("GET"), "{what}");
    for (method, path) in [
        ("POST", "/nope"),
        ("POST", "/nope/chat"),
        ("GET", "/sessions/a/b"),
        ("GET", "/index.html"),
    ] {
        let answer = answer_to(app, event(method, path, chat("unrouted"))).await;
        assert_eq!(
            (answer.status, answer.code()),
            (404, Some("not_found")),
            "{what}: {method} {path}"
        );
    }
}

#[tokio::test]
async fn routes_do_not_depend_on_the_stage_name() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    for stage in ["sessions", "chat", "prod"] {
        api_under_stage(&app, &format!("REST API, stage {stage}"), |m, p, b| {
            rest(stage, m, p, b)
        })
        .await;
    }
    for stage in ["$default", "prod", "sessions", "chat"] {
        api_under_stage(&app, &format!("HTTP API, stage {stage}"), |m, p, b| {
            http(stage, m, p, b)
        })
        .await;
    }
    // A named stage's name missing from rawPath (a stage-less path), and `cargo lambda watch`'s
    // function-URL prefix.
    api_under_stage(&app, "HTTP API, stage-less path", |m, p, b| {
        http_raw("prod", m, p, b)
    })
    .await;
    api_under_stage(&app, "cargo lambda watch", |m, p, b| {
        http_raw("$default", m, &format!("/lambda-url/session-chat{p}"), b)
    })
    .await;
    // Trailing slashes are not a different route.
    let answer = answer_to(&app, rest("sessions", "POST", "/chat/", chat("slash"))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        env.session_count().await,
        1,
        "only the last session is left"
    );
    for key in env.keys().await {
        assert!(key == "slash" || key.starts_with("slash#"), "{key} left");
    }
}

#[tokio::test]
async fn session_ids_of_only_dots_are_refused() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    for id in [".", ".."] {
        for event in [
            http("$default", "POST", "/chat", chat(id)),
            rest("prod", "POST", "/chat", chat(id)),
        ] {
            let answer = answer_to(&app, event).await;
            assert_eq!(
                (answer.status, answer.code()),
                (400, Some("invalid_session_id")),
                "{id:?}: {}",
                answer.body
            );
            assert!(answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("dots"));
        }
    }
    assert_eq!(env.item_count().await, 0, "nothing stored");
    // Paths whose session id is only dots (as sent, or percent-encoded) are refused alike.
    for path in ["/sessions/.", "/sessions/..", "/sessions/%2e%2E"] {
        let answer = answer_to(&app, http("$default", "GET", path, None)).await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, Some("invalid_session_id")),
            "{path}"
        );
    }
    // Dots among other characters are fine: stored, read and deleted.
    for id in ["a.b", "...x", ".a."] {
        let answer = answer_to(&app, http("$default", "POST", "/chat", chat(id))).await;
        assert_eq!(answer.status, 200, "{id}: {}", answer.body);
        for event in [
            http("$default", "GET", &format!("/sessions/{id}"), None),
            rest("prod", "GET", &format!("/sessions/{id}"), None),
        ] {
            let answer = answer_to(&app, event).await;
            assert_eq!(answer.status, 200, "{id}: {}", answer.body);
            assert_eq!(answer.body["session_id"], id);
        }
        let answer = answer_to(
            &app,
            rest("prod", "DELETE", &format!("/sessions/{id}"), None),
        )
        .await;
        assert_eq!(answer.status, 204, "{id}");
    }
    assert_eq!(env.item_count().await, 0, "all deleted");
}
