//! No lost turns, no duplicated turns, no poisoned memory, no size ceiling.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;

use crate::support::{items_with_prefix, Req, TestEnv};

#[tokio::test]
async fn concurrent_messages_to_one_session_are_all_kept() {
    const INSTANCES: usize = 3;
    const PER_INSTANCE: usize = 8;
    let env = TestEnv::new().await;
    // Separate app instances, like separate Lambda execution environments.
    let mut apps = Vec::new();
    for _ in 0..INSTANCES {
        apps.push(Arc::new(env.app().await));
    }
    let mut tasks = Vec::new();
    for i in 0..INSTANCES * PER_INSTANCE {
        let app = Arc::clone(&apps[i % INSTANCES]);
        tasks.push(tokio::spawn(async move {
            let message = format!("I'm Person{i}");
            let (status, body) = Req::chat("group-concurrent", &message)
                .call_json(&app)
                .await;
            (status, body, message)
        }));
    }
    let mut answered = Vec::new();
    for task in tasks {
        let (status, body, message) = task.await.expect("task");
        match status {
            200 => answered.push((body["run_id"].as_str().unwrap().to_owned(), message)),
            503 => assert_eq!(body["error"]["code"], "session_busy"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let stored = env.stored_runs("group-concurrent").await;
    let stored_ids: Vec<&str> = stored.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let unique: HashSet<&str> = stored_ids.iter().copied().collect();
    eprintln!(
        "concurrency: {} requests, {} answered, {} runs stored, {} duplicates",
        INSTANCES * PER_INSTANCE,
        answered.len(),
        stored.len(),
        stored_ids.len() - unique.len()
    );
    for (run_id, _) in &answered {
        if !unique.contains(run_id.as_str()) {
            eprintln!("TEMP lost run {run_id}");
        }
    }
    assert_eq!(unique.len(), stored_ids.len(), "a run was stored twice");
    assert_eq!(
        stored.len(),
        answered.len(),
        "every answered run is stored, no other"
    );
    for (run_id, message) in &answered {
        let run = stored
            .iter()
            .find(|r| r["id"] == run_id.as_str())
            .expect("answered run stored");
        assert_eq!(run["input"], message.as_str());
    }
    assert!(
        answered.len() >= 20,
        "only {} of 24 answered",
        answered.len()
    );
}

#[tokio::test]
async fn idempotent_retries_across_instances_store_one_run() {
    let env = TestEnv::new().await;
    let first_instance = env.app().await;
    let second_instance = env.app().await;
    let key = [("Idempotency-Key", "3f1c2a9e-7a1b-4e0f-9d55-0c9b6c1e2f3a")];

    let (status, first) = Req::chat("user-1", "Hello my name is Ada.")
        .headers(&key)
        .call_json(&first_instance)
        .await;
    assert_eq!(status, 200);
    let reply = Req::chat("user-1", "Hello my name is Ada.")
        .headers(&key)
        .call(&second_instance)
        .await;
    assert_eq!(reply.headers["idempotent-replayed"], "true");
    let (status, retry) = reply.parts();
    assert_eq!(status, 200);
    assert_eq!(
        retry, first,
        "the retry gets the first reply, run id included"
    );

    let (status, reused) = Req::chat("user-1", "Something else")
        .headers(&key)
        .call_json(&second_instance)
        .await;
    assert_eq!(status, 409);
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");

    // A key is per session: the same key on another session is a new request.
    let (status, _) = Req::chat("user-2", "Hello my name is Ada.")
        .headers(&key)
        .call_json(&first_instance)
        .await;
    assert_eq!(status, 200);

    assert_eq!(
        env.model.requests().await.len(),
        2,
        "the model answered each session once"
    );
    assert_eq!(env.stored_runs("user-1").await.len(), 1);

    let (status, bad) = Req::chat("user-1", "hi")
        .header("Idempotency-Key", "has space")
        .call_json(&first_instance)
        .await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );
}

#[tokio::test]
async fn simultaneous_retries_with_one_key_store_one_run() {
    let env = TestEnv::new().await;
    let apps = [Arc::new(env.app().await), Arc::new(env.app().await)];
    let mut tasks = Vec::new();
    for i in 0..6 {
        let app = Arc::clone(&apps[i % 2]);
        tasks.push(tokio::spawn(async move {
            Req::chat("user-1", "Hello my name is Ada.")
                .header("Idempotency-Key", "same")
                .call_json(&app)
                .await
        }));
    }
    let mut run_ids = HashSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        run_ids.insert(body["run_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(run_ids.len(), 1, "every retry got the one stored run");
    let stored = env.stored_runs("user-1").await;
    assert_eq!(stored.len(), 1);
    assert!(run_ids.contains(stored[0]["id"].as_str().unwrap()));
}

#[tokio::test]
async fn a_cut_off_answer_is_kept() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    env.model.script(json!([{"length": true}])).await;
    let (status, body) = Req::chat("s", "Hello my name is Collin.")
        .call_json(&app)
        .await;
    assert_eq!(status, 200);
    let stored = env.stored_runs("s").await;
    assert_eq!(stored[0]["output"], body["reply"]);
}

#[tokio::test]
async fn a_multi_megabyte_conversation_never_hits_the_item_limit() {
    const TURNS: usize = 60;
    let env = TestEnv::new().await;
    let app = env.app().await; // default MAX_ITEM_BYTES: 96 KiB
    let mut sent = Vec::new();
    for turn in 0..TURNS {
        // ~30 KB each way: the scripted model echoes the message.
        let message = format!("turn {turn}: {}", "lorem ipsum ".repeat(2500));
        let (status, body) = Req::chat("long-talk", &message).call_json(&app).await;
        assert_eq!(status, 200, "turn {turn}: {body}");
        sent.push((body["run_id"].as_str().unwrap().to_owned(), message));
    }
    // Every item stays small; the API reads every run back whole, once, oldest first.
    let mut total_bytes = 0;
    for item in items_with_prefix(&env, "long-talk").await {
        let size: usize = item
            .values()
            .map(|v| v.as_s().map_or(16, |s| s.len()))
            .sum();
        assert!(size < 360_000, "an item of {size} bytes");
        total_bytes += size;
    }
    assert!(total_bytes > 3_000_000, "a few MB in all: {total_bytes}");
    let all = crate::storage::all_runs(&app, "long-talk", 200)
        .await
        .unwrap();
    assert_eq!(all.len(), TURNS);
    for (run, (run_id, message)) in all.iter().zip(&sent) {
        assert_eq!(run["id"], run_id.as_str());
        assert_eq!(run["input"], message.as_str());
        assert!(run["output"].as_str().unwrap().contains(message.as_str()));
    }
    let main = env.item("long-talk").await.unwrap();
    // The session item is still the seed's shape.
    assert!(main["value"]
        .as_s()
        .unwrap()
        .starts_with(r#"{"type": "ConversationMemory", "runs": [{"type": "Run", "id": ""#));
}
