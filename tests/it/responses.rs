//! The Responses API (docs/responses.md) on the handler: responses chained and branched, their
//! records kept with their runs, conversations as sessions, streams followed after a reload,
//! cancelled, failed, and bad input. The `openai` client's own suite is tests/responses/.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use session_chat::http::{Answer, App};

use crate::support::{sse_events, Req, TestEnv};

fn create(body: Value) -> Req {
    Req::http("POST", "/v1/responses").body(body)
}

fn output_text(response: &Value) -> String {
    response["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The text of a Responses stream's `response.output_text.delta` events, concatenated.
fn text_deltas(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(name, _)| name == "response.output_text.delta")
        .map(|(_, e)| e["delta"].as_str().unwrap().to_owned())
        .collect()
}

/// Events of an answer as they are written, until `stop` says enough (or the stream ends).
async fn read_events(
    events: &mut session_chat::http::EventStream,
    mut stop: impl FnMut(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    while let Some(text) = events.next_event().await {
        seen.extend(sse_events(&text));
        if stop(&seen) {
            break;
        }
    }
    seen
}

async fn stream_of(app: &App, req: Req) -> session_chat::http::EventStream {
    match app.serve(req.request()).await {
        Answer::Events { events, .. } => events,
        Answer::Whole(r) => panic!("not a stream: {:?}", r.body()),
    }
}

/// Invariant (docs/storage.md, "Responses"): a response is a run, found by its id alone; its
/// record (metadata, usage, instructions) is kept in the run's slot and comes back on GET.
#[tokio::test]
async fn a_response_is_a_run_found_by_its_id_with_its_record() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let (status, first) = create(json!({
        "model": "m", "input": "Hello my name is Collin.", "metadata": {"k": "v"},
        "instructions": "Be brief.",
    }))
    .call_json(&app)
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "completed");
    assert_eq!(first["metadata"]["k"], "v");
    assert!(first["usage"]["input_tokens"].as_u64().unwrap() > 0);
    // Instructions go to the model just before the message, so the history stays a prefix.
    let asked = &env.model.requests().await[0]["body"]["messages"];
    let n = asked.as_array().unwrap().len();
    assert_eq!(
        asked[n - 2],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(asked[n - 1]["content"], "Hello my name is Collin.");

    let id = first["id"].as_str().unwrap();
    let (status, chained) =
        create(json!({"input": "What is my name?", "previous_response_id": id}))
            .call_json(&app)
            .await;
    assert_eq!(status, 200, "{chained}");
    assert_eq!(output_text(&chained), "Your name is Collin.");
    assert_eq!(chained["previous_response_id"], id);

    let (status, got) = Req::http("GET", &format!("/v1/responses/{id}"))
        .call_json(&app)
        .await;
    assert_eq!(status, 200, "{got}");
    for field in [
        "id",
        "output",
        "metadata",
        "usage",
        "instructions",
        "model",
        "created_at",
    ] {
        assert_eq!(got[field], first[field], "{field}");
    }
    let (_, items) = Req::http("GET", &format!("/v1/responses/{id}/input_items"))
        .call_json(&app)
        .await;
    assert_eq!(
        items["data"][0]["content"][0]["text"],
        "Hello my name is Collin."
    );
    let (status, deleted) = Req::http("DELETE", &format!("/v1/responses/{id}"))
        .call_json(&app)
        .await;
    assert_eq!((status, deleted["deleted"].clone()), (200, json!(true)));
    let (status, gone) = Req::http("GET", &format!("/v1/responses/{id}"))
        .call_json(&app)
        .await;
    assert_eq!(
        (status, gone["error"]["code"].clone()),
        (404, json!("response_not_found"))
    );
}

/// Chaining after a response that is not the conversation's last makes a new version of the
/// run after it (a branch); both stay retrievable.
#[tokio::test]
async fn chaining_from_an_earlier_response_branches() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let (_, first) = create(json!({"input": "Hello my name is Ada."}))
        .call_json(&app)
        .await;
    let id = first["id"].as_str().unwrap();
    let mut branches = Vec::new();
    for _ in 0..2 {
        let (status, r) = create(json!({"input": "What is my name?", "previous_response_id": id}))
            .call_json(&app)
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(output_text(&r), "Your name is Ada.");
        branches.push(r["id"].as_str().unwrap().to_owned());
    }
    assert_ne!(branches[0], branches[1]);
    for branch in &branches {
        let (status, got) = Req::http("GET", &format!("/v1/responses/{branch}"))
            .call_json(&app)
            .await;
        assert_eq!(status, 200, "{got}");
    }
    // The session shows the newest branch, the other as its alternative.
    let conversation = first["id"].as_str().unwrap().split('.').nth(1).unwrap();
    let session = String::from_utf8(
        base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            conversation,
        )
        .unwrap(),
    )
    .unwrap();
    let (_, history) = Req::http("GET", &format!("/sessions/{session}"))
        .call_json(&app)
        .await;
    let runs = history["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{history}");
    assert_eq!(runs[1]["alternatives"].as_array().unwrap().len(), 1);
}

/// A conversation is a session: made at once with its metadata, answered with its memory,
/// read as items, edited, deleted; griptape's view of it stays the recipe's item.
#[tokio::test]
async fn a_conversation_is_a_session() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let (status, conv) = Req::http("POST", "/v1/conversations")
        .body(json!({"metadata": {"topic": "demo"}}))
        .call_json(&app)
        .await;
    assert_eq!(status, 200, "{conv}");
    let id = conv["id"].as_str().unwrap().to_owned();
    let (_, got) = Req::http("GET", &format!("/v1/conversations/{id}"))
        .call_json(&app)
        .await;
    assert_eq!(got["metadata"]["topic"], "demo");
    assert!(got["created_at"].as_u64().unwrap() > 0);
    for (message, reply) in [
        (
            "Hello my name is Collin.",
            "Hello Collin! How can I assist you today?",
        ),
        ("What is my name?", "Your name is Collin."),
    ] {
        let (status, r) = create(json!({"input": message, "conversation": {"id": id}}))
            .call_json(&app)
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(output_text(&r), reply);
        assert_eq!(r["conversation"]["id"], id.as_str());
    }
    let value = env.value(&id).await.expect("griptape's item");
    assert!(value.contains(r#""input": "What is my name?", "output": "Your name is Collin.""#));

    let (_, added) = Req::http("POST", &format!("/v1/conversations/{id}/items"))
        .body(json!({"items": [
            {"role": "user", "content": "Told elsewhere"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Noted."}]},
        ]}))
        .call_json(&app)
        .await;
    assert_eq!(added["data"].as_array().unwrap().len(), 2, "{added}");

    let list = |query: &[(&str, &str)]| {
        Req::http("GET", &format!("/v1/conversations/{id}/items")).query(query)
    };
    let (_, newest) = list(&[("limit", "2")]).call_json(&app).await;
    assert_eq!(newest["data"][0]["content"][0]["text"], "Noted.");
    assert_eq!(newest["has_more"], true);
    let (_, asc) = list(&[("order", "asc")]).call_json(&app).await;
    let texts: Vec<&str> = asc["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["content"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 6, "{asc}");
    assert_eq!(texts[0], "Hello my name is Collin.");
    let after = asc["data"][1]["id"].as_str().unwrap();
    let (_, rest) = list(&[("order", "asc"), ("after", after)])
        .call_json(&app)
        .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 4);

    let item = asc["data"][5]["id"].as_str().unwrap();
    let (status, one) = Req::http("GET", &format!("/v1/conversations/{id}/items/{item}"))
        .call_json(&app)
        .await;
    assert_eq!(
        (status, one["content"][0]["text"].clone()),
        (200, json!("Noted."))
    );
    let (status, _) = Req::http("DELETE", &format!("/v1/conversations/{id}/items/{item}"))
        .call_json(&app)
        .await;
    assert_eq!(status, 200);
    let (_, after_delete) = list(&[]).call_json(&app).await;
    assert_eq!(after_delete["data"].as_array().unwrap().len(), 4);

    let (status, updated) = Req::http("POST", &format!("/v1/conversations/{id}"))
        .body(json!({"metadata": {"topic": "renamed"}}))
        .call_json(&app)
        .await;
    assert_eq!(
        (status, updated["metadata"]["topic"].clone()),
        (200, json!("renamed"))
    );
    let (status, _) = Req::http("DELETE", &format!("/v1/conversations/{id}"))
        .call_json(&app)
        .await;
    assert_eq!(status, 200);
    let (status, gone) = Req::http("GET", &format!("/v1/conversations/{id}"))
        .call_json(&app)
        .await;
    assert_eq!(
        (status, gone["error"]["code"].clone()),
        (404, json!("conversation_not_found"))
    );
}

/// Invariant (docs/storage.md, "Replies in progress"): a streamed reply's pieces are kept while
/// it is written, so a follower (a reload) gets every event after the one it names, the same
/// events the first stream sent; the live item goes when the turn ends.
#[tokio::test]
async fn a_streamed_response_is_followed_after_a_reload() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("LIVE_WRITE_MS", "100")]).await;
    env.model
        .script(json!([{"first_token_delay": 0.1, "word_delay": 0.25}]))
        .await;
    let mut first = stream_of(
        &app,
        create(json!({"input": "Hello my name is Collin.", "stream": true})).sse(),
    )
    .await;
    // Read until three deltas went out, then go away (a reload).
    let seen = read_events(&mut first, |e| {
        e.iter()
            .filter(|(n, _)| n == "response.output_text.delta")
            .count()
            == 3
    })
    .await;
    drop(first);
    assert_eq!(seen[0].0, "response.created");
    let id = seen[0].1["response"]["id"].as_str().unwrap().to_owned();
    let last = seen.last().unwrap().1["sequence_number"].as_u64().unwrap();
    // The reply is in progress: GET says so, with what was written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, now) = Req::http("GET", &format!("/v1/responses/{id}"))
        .call_json(&app)
        .await;
    assert_eq!(
        (status, now["status"].clone()),
        (200, json!("in_progress")),
        "{now}"
    );
    let followed = Req::http("GET", &format!("/v1/responses/{id}"))
        .query(&[("stream", "true"), ("starting_after", &last.to_string())])
        .call(&app)
        .await;
    let events = sse_events(&followed.text());
    assert_eq!(
        events[0].1["sequence_number"].as_u64().unwrap(),
        last + 1,
        "the event after the last one seen"
    );
    assert_eq!(events.last().unwrap().0, "[DONE]");
    let completed = &events[events.len() - 2].1;
    assert_eq!(completed["type"], "response.completed");
    let whole = format!("{}{}", text_deltas(&seen), text_deltas(&events));
    assert_eq!(whole, "Hello Collin! How can I assist you today?");
    assert_eq!(output_text(&completed["response"]), whole);
    // The same events again, from the saved run, once the live item is gone.
    assert!(!env.keys().await.iter().any(|k| k.contains("#live#")));
    let again = Req::http("GET", &format!("/v1/responses/{id}"))
        .query(&[("stream", "true"), ("starting_after", &last.to_string())])
        .call(&app)
        .await;
    assert_eq!(sse_events(&again.text()), events);
}

/// A cancelled reply stores nothing and leaves nothing: its stream ends `response.failed`.
#[tokio::test]
async fn a_cancelled_response_stores_nothing() {
    let env = TestEnv::new().await;
    let app = Arc::new(env.app_with(&[("LIVE_WRITE_MS", "100")]).await);
    env.model
        .script(json!([{"first_token_delay": 0.1, "word_delay": 0.4}]))
        .await;
    let mut stream = stream_of(
        &app,
        create(json!({"input": "Hello my name is Collin.", "stream": true})).sse(),
    )
    .await;
    let seen = read_events(&mut stream, |e| {
        e.iter().any(|(n, _)| n == "response.output_text.delta")
    })
    .await;
    let id = seen[0].1["response"]["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, cancelled) = Req::http("POST", &format!("/v1/responses/{id}/cancel"))
        .call_json(&app)
        .await;
    assert_eq!(
        (status, cancelled["status"].clone()),
        (200, json!("cancelled")),
        "{cancelled}"
    );
    let started = Instant::now();
    let rest = read_events(&mut stream, |_| false).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the turn stopped"
    );
    let failed = &rest[rest.len() - 2].1;
    assert_eq!(failed["type"], "response.failed");
    assert_eq!(failed["response"]["error"]["code"], "cancelled");
    assert_eq!(env.item_count().await, 0, "{:?}", env.keys().await);
    let (status, _) = Req::http("GET", &format!("/v1/responses/{id}"))
        .call_json(&app)
        .await;
    assert_eq!(status, 404);
    let (status, again) = Req::http("POST", &format!("/v1/responses/{id}/cancel"))
        .call_json(&app)
        .await;
    assert_eq!(status, 404, "{again}");
}

/// A stream that fails mid-reply ends in `response.failed` and leaves nothing behind.
#[tokio::test]
async fn a_failed_stream_leaves_nothing_behind() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("LIVE_WRITE_MS", "100")]).await;
    env.model
        .script(json!([{"cut_after": 3, "word_delay": 0.1}]))
        .await;
    let reply = create(json!({"input": "Hello my name is Ada.", "stream": true}))
        .sse()
        .call(&app)
        .await;
    let events = sse_events(&reply.text());
    let failed = &events[events.len() - 2].1;
    assert_eq!(failed["type"], "response.failed", "{events:?}");
    assert_eq!(failed["response"]["error"]["code"], "model_error");
    assert_eq!(env.item_count().await, 0, "{:?}", env.keys().await);
}

/// `POST /chat`'s stream gets the same resume: `started` names the run, the deltas are
/// numbered, and a follower gets the deltas after the one it names, then `done`.
#[tokio::test]
async fn a_chat_stream_is_followed_after_a_dropped_connection() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("LIVE_WRITE_MS", "100")]).await;
    env.model
        .script(json!([{"first_token_delay": 0.1, "word_delay": 0.25}]))
        .await;
    let mut first = stream_of(&app, Req::chat("s1", "Hello my name is Eve.").sse()).await;
    let seen = read_events(&mut first, |e| {
        e.iter().filter(|(n, _)| n == "delta").count() == 2
    })
    .await;
    drop(first);
    assert_eq!(seen[0].0, "started");
    let run = seen[0].1["run_id"].as_str().unwrap().to_owned();
    let followed = Req::http("GET", &format!("/sessions/s1/runs/{run}/stream"))
        .query(&[("after", "1")])
        .call(&app)
        .await;
    assert_eq!(followed.status, 200, "{}", followed.text());
    assert!(
        followed.text().starts_with("id: 2\n"),
        "{}",
        followed.text()
    );
    let events = followed.events();
    let (last, done) = events.last().unwrap();
    assert_eq!(
        (last.as_str(), done["run_id"].as_str()),
        ("done", Some(run.as_str()))
    );
    let whole = format!(
        "{}{}",
        crate::support::deltas(&seen),
        crate::support::deltas(&events)
    );
    assert_eq!(whole, "Hello Eve! How can I assist you today?");
    assert_eq!(done["reply"], whole.as_str());
    let (status, body) = Req::http("GET", "/sessions/s1/runs/0123abcd/stream")
        .call_json(&app)
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("run_not_found"))
    );
}

/// Concurrent responses in one conversation: every one answered is stored, once.
#[tokio::test]
async fn concurrent_responses_in_one_conversation_are_all_kept() {
    let env = TestEnv::new().await;
    let apps = [Arc::new(env.app().await), Arc::new(env.app().await)];
    let (_, conv) = Req::http("POST", "/v1/conversations")
        .call_json(&apps[0])
        .await;
    let id = conv["id"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let app = Arc::clone(&apps[i % 2]);
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            create(json!({"input": format!("I'm Person{i}"), "conversation": id}))
                .call_json(&app)
                .await
        }));
    }
    let mut answered = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            200 => answered += 1,
            503 => assert_eq!(body["error"]["code"], "session_busy"),
            other => panic!("{other}: {body}"),
        }
    }
    let stored = env.stored_runs(&id).await;
    assert_eq!(stored.len(), answered, "every answered response is stored");
    assert!(answered >= 10, "{answered} of 12");
}

/// Bad input: a 4xx in the Responses error shape, naming the parameter, and nothing stored.
#[tokio::test]
async fn bad_responses_requests_store_nothing() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let long = "x".repeat(40_000);
    for (body, status, code, param) in [
        (json!({}), 400, "invalid_request", Some("input")),
        (json!({"input": 3}), 400, "invalid_request", Some("input")),
        (
            json!({"input": "  "}),
            400,
            "invalid_message",
            Some("input"),
        ),
        (
            json!({"input": long}),
            413,
            "message_too_long",
            Some("input"),
        ),
        (
            json!({"input": "hi", "store": false}),
            400,
            "unsupported",
            Some("store"),
        ),
        (
            json!({"input": "hi", "temperature": 3}),
            400,
            "invalid_request",
            Some("temperature"),
        ),
        (
            json!({"input": "hi", "nonsense": 1}),
            400,
            "invalid_request",
            Some("nonsense"),
        ),
        (
            json!({"input": "hi", "tools": [{"type": "web_search"}]}),
            400,
            "unsupported",
            Some("tools"),
        ),
        (
            json!({"input": "hi", "previous_response_id": "nope"}),
            400,
            "invalid_request",
            Some("previous_response_id"),
        ),
        (
            json!({"input": "hi", "previous_response_id": "resp_0123.czE"}),
            400,
            "invalid_request",
            Some("previous_response_id"),
        ),
        (
            json!({"input": "hi", "previous_response_id": "resp_1.czE", "conversation": "c"}),
            400,
            "invalid_request",
            Some("previous_response_id"),
        ),
        (
            json!({"input": "hi", "metadata": {"a": 1}}),
            400,
            "invalid_request",
            Some("metadata"),
        ),
        (
            json!({"input": "hi", "background": true}),
            400,
            "unsupported",
            Some("background"),
        ),
        (
            json!({"input": [{"role": "assistant", "content": "x"}]}),
            400,
            "unsupported",
            Some("input"),
        ),
    ] {
        let (got, error) = create(body.clone()).call_json(&app).await;
        assert_eq!(got, status, "{body}: {error}");
        let e = &error["error"];
        assert_eq!(e["code"], code, "{body}: {error}");
        assert_eq!(e["param"].as_str(), param, "{body}: {error}");
        assert!(e["type"].is_string() && e["message"].is_string(), "{error}");
    }
    let (status, error) = Req::http("POST", "/v1/responses")
        .raw_body("{not json")
        .call_json(&app)
        .await;
    assert_eq!(
        (status, error["error"]["param"].clone()),
        (400, json!("body"))
    );
    for (method, path, status) in [
        ("GET", "/v1/responses/resp_x", 404),
        ("PUT", "/v1/responses", 405),
        ("GET", "/v1/nothing", 404),
        ("GET", "/v1/conversations/nope", 404),
    ] {
        let (got, error) = Req::http(method, path).call_json(&app).await;
        assert_eq!(got, status, "{method} {path}: {error}");
        assert!(error["error"]["type"].is_string(), "{error}");
    }
    assert_eq!(env.item_count().await, 0, "{:?}", env.keys().await);
}

/// A function-call round trip: the model's call is a `function_call` item (kept in the record,
/// the run's text its rendering), and the result, sent with `previous_response_id`, is answered
/// with the call and the result in the prompt, as chat completions take them; streamed, the
/// call's arguments come as their events.
#[tokio::test]
async fn a_function_call_round_trip() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let tools = json!([{
        "type": "function", "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }]);
    let (status, asked) = create(json!({"input": "What is the weather in Paris?", "tools": tools}))
        .call_json(&app)
        .await;
    assert_eq!(status, 200, "{asked}");
    let call = &asked["output"][0];
    assert_eq!(call["type"], "function_call", "{asked}");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], r#"{"city": "Paris"}"#);
    assert_eq!(asked["tools"][0]["name"], "get_weather");
    let sent = &env.model.requests().await[0]["body"];
    assert_eq!(
        sent["tools"][0]["function"]["name"], "get_weather",
        "{sent}"
    );
    let id = asked["id"].as_str().unwrap();
    let (_, again) = Req::http("GET", &format!("/v1/responses/{id}"))
        .call_json(&app)
        .await;
    assert_eq!(again["output"], asked["output"]);

    let call_id = call["call_id"].as_str().unwrap();
    let (status, answered) = create(json!({
        "previous_response_id": id, "tools": tools,
        "input": [{"type": "function_call_output", "call_id": call_id, "output": "15 C, sunny"}],
    }))
    .call_json(&app)
    .await;
    assert_eq!(status, 200, "{answered}");
    assert_eq!(output_text(&answered), "get_weather says: 15 C, sunny");
    let messages = env.model.requests().await[1]["body"]["messages"].clone();
    let n = messages.as_array().unwrap().len();
    assert_eq!(
        messages[n - 2]["tool_calls"][0]["id"],
        call_id,
        "{messages}"
    );
    assert_eq!(
        messages[n - 1],
        json!({"role": "tool", "content": "15 C, sunny", "tool_call_id": call_id})
    );
    // A result for a call the previous response did not make is refused.
    let (status, refused) = create(json!({
        "previous_response_id": id,
        "input": [{"type": "function_call_output", "call_id": "call_nope", "output": "x"}],
    }))
    .call_json(&app)
    .await;
    assert_eq!(
        (status, refused["error"]["param"].clone()),
        (400, json!("input"))
    );

    // Streamed: the call's item and its arguments' events.
    let streamed =
        create(json!({"input": "And the weather in Oslo?", "tools": tools, "stream": true}))
            .sse()
            .call(&app)
            .await;
    let events = sse_events(&streamed.text());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    for name in [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ] {
        assert!(names.contains(&name), "{name}: {names:?}");
    }
    let done = events
        .iter()
        .find(|(n, _)| n == "response.function_call_arguments.done");
    assert_eq!(done.unwrap().1["arguments"], r#"{"city": "Oslo"}"#);
}

/// Identity scoping: a backend's `user` owns the conversation (listed under it); in JWT mode a
/// response is the token's own, and another caller's id finds nothing.
#[tokio::test]
async fn responses_are_their_callers_own() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let (status, r) = create(json!({"input": "Hello my name is Ada.", "user": "ada"}))
        .call_json(&app)
        .await;
    assert_eq!(status, 200, "{r}");
    let (_, listed) = Req::http("GET", "/sessions")
        .query(&[("owner", "ada")])
        .call_json(&app)
        .await;
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1, "{listed}");
    let (status, _) = create(json!({"input": "hi", "user": "a b"}))
        .call_json(&app)
        .await;
    assert_eq!(status, 400);

    let jwt = env.app_with(&[("AUTH_MODE", "JWT")]).await;
    let (status, mine) = create(json!({"input": "Hello my name is Bo."}))
        .sub("alice")
        .call_json(&jwt)
        .await;
    assert_eq!(status, 200, "{mine}");
    let id = mine["id"].as_str().unwrap();
    let path = format!("/v1/responses/{id}");
    let (status, _) = Req::http("GET", &path).sub("alice").call_json(&jwt).await;
    assert_eq!(status, 200);
    let (status, theirs) = Req::http("GET", &path).sub("bob").call_json(&jwt).await;
    assert_eq!(
        (status, theirs["error"]["code"].clone()),
        (404, json!("response_not_found"))
    );
    let (status, _) = create(json!({"input": "What is my name?", "previous_response_id": id}))
        .sub("bob")
        .call_json(&jwt)
        .await;
    assert_eq!(status, 400, "bob cannot chain after alice's response");
    let (status, _) = Req::http("GET", &path).call_json(&jwt).await;
    assert_eq!(status, 401);
}
