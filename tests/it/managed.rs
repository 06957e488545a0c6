//! Many conversations per execution environment (Lambda Managed Instances): one process, 32
//! workers, driven by a Runtime API that hands out invocations concurrently.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::support::{run_runtime, Req, ScriptedModel, TestEnv};

/// Runs tools/concurrent_runtime.py: the debug build of the function, 32 workers, `events`.
pub(crate) fn drive(
    env: &TestEnv,
    model: &ScriptedModel,
    events: Vec<Value>,
    extra: &[(&str, &str)],
) -> Value {
    let base_url = model.base_url();
    let mut vars = vec![
        ("OWNER_INDEX", "by_owner"),
        ("OPENAI_BASE_URL", base_url.as_str()),
        ("MODEL_ID", "scripted"),
    ];
    vars.extend_from_slice(extra);
    run_runtime(env, &["--workers", "32"], &vars, events)
}

#[tokio::test]
async fn streamed_turns_are_served_at_once_too() {
    let env = TestEnv::new().await;
    let model = ScriptedModel::start_with(&["--first-token-delay", "1"]);
    let mut events = Vec::new();
    for i in 0..32 {
        let event = Req::chat(&format!("stream-{i:02}"), &format!("I'm Streamer{i}")).sse();
        events.push(event.event());
    }
    let report = drive(&env, &model, events, &[("INVOKE_MODE", "RESPONSE_STREAM")]);
    for (i, inv) in report["invocations"].as_array().unwrap().iter().enumerate() {
        assert_eq!(inv["status"], 200, "{inv}");
        let body = inv["body"].as_str().unwrap();
        assert!(
            body.contains("event: delta") && body.contains("event: done"),
            "{body}"
        );
        let value = env.value(&format!("stream-{i:02}")).await.expect("stored");
        assert!(value.contains(&format!("I'm Streamer{i}")));
    }
    let wall = report["wall_s"].as_f64().unwrap();
    eprintln!(
        "32 streamed turns, first word after 1 s, in one process with 32 workers: {wall:.2} s"
    );
}

#[tokio::test]
async fn one_process_serves_32_conversations_at_once_and_loses_nothing() {
    let env = TestEnv::new().await;
    // A model that thinks for a second: turns overlap only if the process serves them at once.
    let model = ScriptedModel::start_with(&["--answer-delay", "1"]);
    let mut events = Vec::new();
    let mut sessions = Vec::new();
    for i in 0..64 {
        let session = format!("own-{i:02}");
        events.push(Req::chat(&session, &format!("I'm Person{i}")).event());
        sessions.push(session);
    }
    for i in 0..32 {
        events.push(Req::chat("together", &format!("I'm Member{i}")).event());
        sessions.push("together".into());
    }
    let report = drive(&env, &model, events, &[]);
    let invocations = report["invocations"].as_array().unwrap();

    // Every turn answered, each under its own request id.
    let mut by_request: HashMap<String, &str> = HashMap::new();
    for (inv, session) in invocations.iter().zip(&sessions) {
        assert_eq!(inv["status"], 200, "{inv}");
        by_request.insert(inv["id"].as_str().unwrap().to_owned(), session);
    }
    // Nothing lost: each own session has its run, the shared one all 32, none twice.
    for i in 0..64 {
        let runs = env.stored_runs(&format!("own-{i:02}")).await;
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0]["input"], format!("I'm Person{i}"));
    }
    let runs = env.stored_runs("together").await;
    let ids: HashSet<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!((runs.len(), ids.len()), (32, 32));

    // Each log line of a turn carries its own invocation's id, and only its own session.
    let mut turns = 0;
    for line in report["logs"].as_array().unwrap() {
        if line["fields"]["message"] != "chat turn" {
            continue;
        }
        turns += 1;
        let id = line["span"]["requestId"]
            .as_str()
            .expect("the invocation's span");
        assert_eq!(line["fields"]["request_id"], id);
        assert_eq!(
            line["fields"]["session_id"].as_str(),
            by_request.get(id).copied(),
            "{line}"
        );
    }
    assert_eq!(turns, 96);
    let wall = report["wall_s"].as_f64().unwrap();
    let mut seconds: Vec<f64> = invocations
        .iter()
        .map(|i| i["seconds"].as_f64().unwrap())
        .collect();
    seconds.sort_by(f64::total_cmp);
    eprintln!(
        "turn seconds: min {:.2}, median {:.2}, max {:.2}",
        seconds[0],
        seconds[seconds.len() / 2],
        seconds[seconds.len() - 1]
    );
    eprintln!(
        "one process, 32 workers, 96 turns with a 1 s model (64 sessions + 32 on one): {wall:.2} s wall, peak RSS {} kB",
        report["peak_rss_kb"]
    );
}
