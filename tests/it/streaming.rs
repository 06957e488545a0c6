//! Streamed turns (`Accept: text/event-stream`) in-process: what is stored, failures mid-stream,
//! replays, Bedrock's ConverseStream, and each invocation answered the way it was invoked. The
//! same over real HTTP, as the deltas arrive, is in `watch.rs`.

use std::time::{Duration, Instant};

use lambda_http::lambda_runtime::FunctionResponse;
use serde_json::{json, Value};

use crate::support::{bedrock_app, deltas, invoke, sse_events, wall_clock_lock, Req, TestEnv};

#[tokio::test]
async fn a_streamed_turn_stores_exactly_what_was_streamed() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let reply = Req::chat("s1", "Hello my name is Collin.")
        .sse()
        .call(&app)
        .await;
    assert_eq!(
        (reply.status, reply.content_type()),
        (200, "text/event-stream")
    );
    let events = reply.events();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.len() > 4, "word by word: {names:?}");
    // `started` names the run before it is saved (a client can follow it after a reload).
    assert_eq!(names[0], "started");
    assert!(names[1..names.len() - 1].iter().all(|n| *n == "delta"));
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "done");
    assert_eq!(events[0].1["run_id"], done["run_id"]);
    let streamed = deltas(&events);
    assert_eq!(streamed, "Hello Collin! How can I assist you today?");
    assert_eq!(done["reply"], streamed.as_str());
    assert_eq!(done["session_id"], "s1");
    let value = env.value("s1").await.expect("stored");
    assert!(value.contains(&format!(
        r#""id": "{}", "input": "Hello my name is Collin.", "output": "{streamed}""#,
        done["run_id"].as_str().unwrap()
    )));
    // The model was asked to stream, with the usage chunk.
    let body = &env.model.requests().await[0]["body"];
    assert_eq!(
        (&body["stream"], &body["stream_options"]),
        (&json!(true), &json!({"include_usage": true}))
    );
    // The memory reached the model as before: the next turn knows the name.
    let events = Req::chat("s1", "What is my name?")
        .sse()
        .call(&app)
        .await
        .events();
    assert_eq!(deltas(&events), "Your name is Collin.");
}

#[tokio::test]
async fn failures_mid_stream_end_in_an_error_event_and_store_nothing() {
    let _alone = wall_clock_lock().await;
    let env = TestEnv::new().await;
    let app = env.app_with(&[("MODEL_TIMEOUT_SECS", "2")]).await;
    for (step, code) in [
        (json!({"cut_after": 2}), "model_error"),
        (json!({"error_after": 2}), "model_error"),
        (json!({"no_finish": true}), "model_error"),
        (json!({"stall_after": 2, "stall": 30}), "model_timeout"),
    ] {
        env.model.script(json!([step])).await;
        let started = Instant::now();
        let reply = Req::chat("s", "Hello my name is Ada.")
            .sse()
            .deadline(Duration::from_secs(6))
            .call(&app)
            .await;
        let events = reply.events();
        assert_eq!(reply.status, 200, "{step}: the events had begun");
        let (last, data) = events.last().unwrap();
        assert_eq!(
            (last.as_str(), data["error"]["code"].as_str()),
            ("error", Some(code)),
            "{step}"
        );
        let text = data.to_string();
        assert!(
            !text.contains("127.0.0.1") && !text.contains("scripted"),
            "{text}"
        );
        if step.get("no_finish").is_none() {
            assert_eq!(deltas(&events), "Hello Ada! ", "{step}: two words went out");
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{step}: before the deadline"
        );
        assert_eq!(env.item_count().await, 0, "{step}: nothing stored");
    }
    // A model failing before its first word: still an error event, nothing stored.
    env.model.script(json!([{"status": 400}])).await;
    let events = Req::chat("s", "hi").sse().call(&app).await.events();
    assert_eq!(events.last().unwrap().1["error"]["code"], "model_error");
    assert_eq!(env.item_count().await, 0);
}

#[tokio::test]
async fn refusals_before_the_model_stay_json() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let (status, body) = Req::file("http-api/1-collin-hello.json")
        .sse()
        .raw_body(r#"{"session_id": "no spaces", "message": "hi"}"#)
        .call_json(&app)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_session_id"))
    );

    let key = [("Idempotency-Key", "k-1")];
    let status = Req::chat("s", "one")
        .sse()
        .headers(&key)
        .call(&app)
        .await
        .status;
    assert_eq!(status, 200);
    let (status, body) = Req::chat("s", "another")
        .sse()
        .headers(&key)
        .call_json(&app)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    assert_eq!(env.model.requests().await.len(), 1);
}

#[tokio::test]
async fn a_streamed_turn_is_replayed_from_its_receipt() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let key = [("Idempotency-Key", "retry-me")];
    let first = Req::chat("s", "Hello my name is Zach.")
        .sse()
        .headers(&key)
        .call(&app)
        .await
        .events();
    let first_done = &first.last().unwrap().1;

    let reply = Req::chat("s", "Hello my name is Zach.")
        .sse()
        .headers(&key)
        .call(&app)
        .await;
    assert_eq!(reply.headers["idempotent-replayed"], "true");
    let (status, text) = (reply.status, reply.text());
    let again = sse_events(&text);
    assert_eq!(status, 200);
    let names: Vec<&str> = again.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["delta", "done"], "the saved reply as one delta");
    assert_eq!(deltas(&again), deltas(&first));
    assert_eq!(&again[1].1, first_done, "same run id and reply");
    // A JSON retry of a streamed turn gets it too, and the model was asked once.
    let (status, body) = Req::chat("s", "Hello my name is Zach.")
        .headers(&key)
        .call_json(&app)
        .await;
    assert_eq!((status, &body["run_id"]), (200, &first_done["run_id"]));
    assert_eq!(env.model.requests().await.len(), 1);
    assert_eq!(
        env.value("s").await.unwrap().matches("\"input\"").count(),
        1
    );
}

#[tokio::test]
async fn bedrock_converse_stream() {
    let env = TestEnv::new().await;
    let app = bedrock_app(&env, &[]).await;
    let reply = Req::chat("b", "Hello my name is Collin.")
        .sse()
        .call(&app)
        .await;
    let (status, events) = (reply.status, reply.events());
    assert_eq!(status, 200);
    assert!(events.len() > 3, "word by word: {events:?}");
    let streamed = deltas(&events);
    assert_eq!(streamed, "Hello Collin! How can I assist you today?");
    assert_eq!(events.last().unwrap().1["reply"], streamed.as_str());
    let request = &env.model.requests().await[0];
    assert_eq!(
        request["path"],
        "/model/amazon.nova-lite-v1%3A0/converse-stream"
    );
    assert!(request["authorization"]
        .as_str()
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256 "));
    assert!(env.value("b").await.unwrap().contains(&streamed));

    // An exception inside the event stream, and a stream without a stop reason: nothing stored.
    for step in [json!({"error_after": 2}), json!({"no_finish": true})] {
        env.model.script(json!([step])).await;
        let events = Req::chat("b2", "Hello my name is Ada.")
            .sse()
            .call(&app)
            .await
            .events();
        assert_eq!(
            events.last().unwrap().1["error"]["code"],
            "model_error",
            "{step}"
        );
        assert!(env.item("b2").await.is_none(), "{step}");
    }
}

/// The body of a streamed answer, read to its end.
async fn read_stream(stream: &mut session_chat::lambda::StreamBody) -> String {
    use futures_core::Stream;
    let mut body = Vec::new();
    while let Some(chunk) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
    {
        let Ok(chunk) = chunk;
        body.extend(chunk);
    }
    String::from_utf8(body).unwrap()
}

/// The REST API event of the template's streaming entry: its stage marks it.
fn streaming_rest_event(body: &str, accept: &str) -> Req {
    Req::file("rest-api/1-collin-hello.json")
        .stage_variables(json!({"invokeMode": "RESPONSE_STREAM"}))
        .header("Accept", accept)
        .raw_body(body)
}

#[tokio::test]
async fn each_invocation_is_answered_the_way_it_was_invoked() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let body = r#"{"session_id": "r", "message": "Hello my name is Collin."}"#;

    // Through the streaming entry: events, and JSON answers too, in the streaming format.
    let FunctionResponse::StreamingResponse(mut events) = invoke(
        &app,
        streaming_rest_event(body, "text/event-stream").event(),
    )
    .await
    else {
        panic!("a streaming invocation got a buffered answer");
    };
    assert_eq!(events.metadata_prelude.status_code, 200);
    assert_eq!(
        events.metadata_prelude.headers["content-type"],
        "text/event-stream"
    );
    let text = read_stream(&mut events.stream).await;
    assert_eq!(
        deltas(&sse_events(&text)),
        "Hello Collin! How can I assist you today?"
    );

    for (body, status) in [
        (r#"{"session_id": "r", "message": "What is my name?"}"#, 200),
        ("not json", 400),
    ] {
        let FunctionResponse::StreamingResponse(mut json) =
            invoke(&app, streaming_rest_event(body, "application/json").event()).await
        else {
            panic!("a streaming invocation got a buffered answer");
        };
        assert_eq!(json.metadata_prelude.status_code, status);
        assert_eq!(
            json.metadata_prelude.headers["content-type"],
            "application/json"
        );
        let answer: Value = serde_json::from_str(&read_stream(&mut json.stream).await).unwrap();
        if status == 200 {
            assert_eq!(answer["reply"], "Your name is Collin.");
        } else {
            assert_eq!(answer["error"]["code"], "invalid_request");
        }
    }
    // An event refused before conversion, in the streaming format too.
    let mut malformed = streaming_rest_event(body, "application/json").event();
    malformed["isBase64Encoded"] = true.into();
    let FunctionResponse::StreamingResponse(refused) = invoke(&app, malformed).await else {
        panic!("a streaming invocation got a buffered answer");
    };
    assert_eq!(refused.metadata_prelude.status_code, 400);

    // Without the mark (the HTTP API, a buffered REST integration): one API Gateway response,
    // events all at once.
    let plain = Req::file("http-api/1-collin-hello.json").sse().event();
    let FunctionResponse::BufferedResponse(buffered) = invoke(&app, plain).await else {
        panic!("a buffered invocation got a streamed answer");
    };
    assert_eq!(buffered["statusCode"], 200);
    assert_eq!(buffered["headers"]["content-type"], "text/event-stream");
    let events = sse_events(buffered["body"].as_str().unwrap());
    assert_eq!(events.last().unwrap().0, "done");
}

#[tokio::test]
async fn rest_cognito_callers_are_scoped_and_must_name_the_audience() {
    let env = TestEnv::new().await;
    let app = env
        .app_with(&[("AUTH_MODE", "JWT"), ("JWT_AUDIENCE", "app-client-1")])
        .await;
    let body = r#"{"session_id": "mine", "message": "Hello my name is Ada."}"#;
    let as_user = |claims: Value| {
        streaming_rest_event(body, "application/json")
            .claims(claims)
            .event()
    };
    for (claims, status) in [
        (json!({"sub": "alice", "aud": "app-client-1"}), 200),
        (
            json!({"sub": "bob", "client_id": "app-client-1", "token_use": "access"}),
            200,
        ),
        (json!({"sub": "eve", "aud": "another-client"}), 401),
        (json!({"aud": "app-client-1"}), 401),
    ] {
        let FunctionResponse::StreamingResponse(answer) =
            invoke(&app, as_user(claims.clone())).await
        else {
            panic!("buffered");
        };
        assert_eq!(answer.metadata_prelude.status_code, status, "{claims}");
    }
    assert!(env.item("alice/mine").await.is_some());
    assert!(env.item("bob/mine").await.is_some());
    assert!(env.item("eve/mine").await.is_none() && env.item("mine").await.is_none());
    // Without the authorizer's claims, nothing.
    let (status, _) = Req::http("POST", "/chat")
        .raw_body(body)
        .call_json(&app)
        .await;
    assert_eq!(status, 401);
}
