//! Bad requests, failing models and failing tables: a clear JSON error, and nothing stored.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{free_port, sdk_config, wall_clock_lock, Req, TestEnv};

const LEAKS: [&str; 6] = [
    "Exception",
    "dispatch",
    "reqwest",
    "sk-",
    "panicked",
    "127.0.0.1",
];

fn assert_no_internals(body: &serde_json::Value) {
    let text = body.to_string();
    for leak in LEAKS {
        assert!(!text.contains(leak), "{leak:?} leaked into {text}");
    }
}

#[tokio::test]
async fn bad_requests_get_4xx_json_and_store_nothing() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("MAX_MESSAGE_BYTES", "64")]).await;
    let long_id = "a".repeat(129);
    let cases: Vec<(String, u16, &str, &str)> = vec![
        ("".into(), 400, "invalid_request", "empty"),
        ("not json".into(), 400, "invalid_request", "not valid JSON"),
        ("[1, 2]".into(), 400, "invalid_request", "JSON object"),
        (
            r#"{"message": "hi"}"#.into(),
            400,
            "invalid_request",
            "session_id is required",
        ),
        (
            r#"{"session_id": "s"}"#.into(),
            400,
            "invalid_request",
            "message is required",
        ),
        (
            r#"{"session_id": 7, "message": "hi"}"#.into(),
            400,
            "invalid_request",
            "session_id must be a string",
        ),
        (
            r#"{"session_id": "s", "message": ["hi"]}"#.into(),
            400,
            "invalid_request",
            "message must be a string",
        ),
        (
            r#"{"session_id": "", "message": "hi"}"#.into(),
            400,
            "invalid_session_id",
            "1-128",
        ),
        (
            format!(r#"{{"session_id": "{long_id}", "message": "hi"}}"#),
            400,
            "invalid_session_id",
            "got 129",
        ),
        (
            r#"{"session_id": "a/b", "message": "hi"}"#.into(),
            400,
            "invalid_session_id",
            "'/'",
        ),
        (
            r#"{"session_id": "s", "message": "  \n "}"#.into(),
            400,
            "invalid_message",
            "blank",
        ),
        (
            format!(r#"{{"session_id": "s", "message": "{}"}}"#, "x".repeat(65)),
            413,
            "message_too_long",
            "65 bytes, the limit is 64",
        ),
    ];
    for (body, status, code, says) in cases {
        let (got, json) = Req::http("POST", "/chat")
            .raw_body(&body)
            .call_json(&app)
            .await;
        assert_eq!(got, status, "{body:?} -> {json}");
        assert_eq!(json["error"]["code"], code, "{body:?}");
        let message = json["error"]["message"].as_str().expect("message");
        assert!(
            message.contains(says),
            "{body:?}: {message:?} should say {says:?}"
        );
    }
    assert_eq!(env.item_count().await, 0);
    assert!(
        env.model.requests().await.is_empty(),
        "the model was never called"
    );
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let (status, body) = Req::http("POST", "/nope")
        .raw_body("{}")
        .call_json(&app)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, body) = Req::http("GET", "/chat").call_json(&app).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    assert_eq!(env.item_count().await, 0);
}

/// Plays the seed's first turn, then a second turn against a scripted fault; returns the
/// second turn's status and body after checking the session is exactly as the first left it.
async fn second_turn_with(
    env: &TestEnv,
    extra: &[(&str, &str)],
    steps: serde_json::Value,
) -> (u16, serde_json::Value) {
    let app = env.app_with(extra).await;
    let (status, _) = Req::file("http-api/1-collin-hello.json")
        .call_json(&app)
        .await;
    assert_eq!(status, 200);
    let before = env.item("user-id-123").await;
    env.model.script(steps).await;
    let result = Req::file("http-api/2-collin-what-is-my-name.json")
        .call_json(&app)
        .await;
    assert_eq!(env.item("user-id-123").await, before, "the session changed");
    assert_no_internals(&result.1);
    result
}

#[tokio::test]
async fn a_failing_model_is_a_502_and_stores_nothing() {
    let env = TestEnv::new().await;
    let (status, body) = second_turn_with(
        &env,
        &[],
        json!([{"status": 500}, {"status": 500}, {"status": 500}]),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("model_error"))
    );
    assert_eq!(
        env.model.requests().await.len(),
        4,
        "three attempts at the second turn"
    );
}

#[tokio::test]
async fn garbage_and_empty_answers_are_502s() {
    for step in [
        json!({"garbage": true}),
        json!({"empty": true}),
        json!({"status": 400}),
    ] {
        let env = TestEnv::new().await;
        let (status, body) = second_turn_with(&env, &[], json!([step])).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (502, Some("model_error")),
            "{step}"
        );
    }
}

#[tokio::test]
async fn a_model_that_fails_then_recovers_is_retried() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    env.model
        .script(json!([{"status": 503}, {"status": 429, "retry_after": 0.1}]))
        .await;
    let (status, body) = Req::file("http-api/1-collin-hello.json")
        .call_json(&app)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(env.model.requests().await.len(), 3);
}

#[tokio::test]
async fn a_slow_model_is_a_504_and_stores_nothing() {
    let _alone = wall_clock_lock().await;
    let env = TestEnv::new().await;
    let started = Instant::now();
    let (status, body) =
        second_turn_with(&env, &[("MODEL_TIMEOUT_SECS", "1")], json!([{"hang": 5}])).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (504, Some("model_timeout"))
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "gave up at the timeout"
    );
}

#[tokio::test]
async fn the_model_deadline_comes_from_the_invocation() {
    let _alone = wall_clock_lock().await;
    let env = TestEnv::new().await;
    let app = env.app().await; // default model timeout: 25 s
    env.model.script(json!([{"hang": 10}])).await;
    let started = Instant::now();
    let request = Req::file("http-api/1-collin-hello.json").deadline(Duration::from_secs(3));
    let (status, body) = request.call_json(&app).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (504, Some("model_timeout"))
    );
    // The answer came before the invocation's 3 s deadline, with time kept back for the save.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(env.item_count().await, 0);
}

#[tokio::test]
async fn an_unreachable_table_is_a_503_with_retry_after() {
    let env = TestEnv::new().await;
    // A port nothing listens on.
    let closed = free_port();
    let app = session_chat::build_app_with(
        &env.config(&[]),
        &sdk_config(&format!("http://127.0.0.1:{closed}")).await,
    )
    .await
    .unwrap();
    let reply = Req::file("http-api/1-collin-hello.json").call(&app).await;
    assert_eq!(reply.headers["retry-after"], "1");
    let (status, body) = reply.parts();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("store_unavailable"))
    );
    assert_no_internals(&body);
    assert!(env.model.requests().await.is_empty());
}

#[tokio::test]
async fn a_missing_table_is_a_503() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("TABLE_NAME", "no-such-table")]).await;
    let (status, body) = Req::file("http-api/1-collin-hello.json")
        .call_json(&app)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("store_unavailable"))
    );
    assert_no_internals(&body);
}

#[tokio::test]
async fn a_corrupt_item_is_a_500_and_left_as_it_is() {
    let env = TestEnv::new().await;
    env.put_value("user-id-123", "{not memory").await;
    let before = env.item("user-id-123").await;
    let app = env.app().await;
    let (status, body) = Req::file("http-api/2-collin-what-is-my-name.json")
        .call_json(&app)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (500, Some("corrupt_session"))
    );
    assert_eq!(env.item("user-id-123").await, before);
    assert!(
        env.model.requests().await.is_empty(),
        "no model call for a corrupt session"
    );
}
