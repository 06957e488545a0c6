//! The log (docs/storage.md): a run an item, written once; writers that never queue; griptape's
//! view of the newest runs; sessions of the item shape moved into it.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{json, Value};
use session_chat::http::App;

use crate::storage::{all_runs, delete, get_history};
use crate::support::*;

fn ids(runs: &[Value]) -> Vec<String> {
    runs.iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn number(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    name: &str,
) -> u64 {
    item[name].as_n().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_log_session_writes_a_run_an_item_and_keeps_a_bounded_view() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[]).await;
    let mut answered = Vec::new();
    for i in 0..6 {
        let message = format!("turn {i}: {}", "words ".repeat(60));
        let (status, body) = Req::chat("log", &message).call_json(&app).await;
        assert_eq!(status, 200, "{body}");
        answered.push(body["run_id"].as_str().unwrap().to_owned());
    }
    let runs = all_runs(&app, "log", 4).await.unwrap();
    assert_eq!(
        ids(&runs),
        answered,
        "every run once, in order, across pages"
    );
    // One item a run, under the session's generation; the head counts them.
    let head = env.item("log#head").await.unwrap();
    assert_eq!((number(&head, "next"), number(&head, "done")), (6, 6));
    let generation = head["generation"].as_s().unwrap();
    for slot in 0..6 {
        let item = env.item(&format!("log#{generation}#run#{slot:010}")).await;
        assert!(item.is_some(), "slot {slot}");
    }
    // Griptape's item: the recipe's shape, the newest runs within VIEW_BYTES (2,048).
    let value: Value = serde_json::from_str(&env.value("log").await.unwrap()).unwrap();
    assert_eq!(value["type"], "ConversationMemory");
    let shown = ids(value["runs"].as_array().unwrap());
    assert!(!shown.is_empty() && shown.len() < 6, "{shown:?}");
    assert_eq!(shown[..], answered[6 - shown.len()..], "the newest runs");
    assert!(env.value("log").await.unwrap().len() <= 2048 + 200);
    let root = env.item("log").await.unwrap();
    assert_eq!(number(&root, "run_count"), 6);
    assert!(root["preview"].as_s().unwrap().starts_with("turn 0"));
}

#[tokio::test]
async fn a_busy_group_thread_keeps_every_run_once() {
    const WRITERS: usize = 64;
    let env = TestEnv::new().await;
    // A model that thinks for a second, so every turn overlaps every other.
    let model = ScriptedModel::start_with(&["--answer-delay", "1"]);
    let url = model.base_url();
    let extra = [("OPENAI_BASE_URL", url.as_str())];
    // Two execution environments.
    let apps = [
        Arc::new(env.app_with(&extra).await),
        Arc::new(env.app_with(&extra).await),
    ];
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let app = Arc::clone(&apps[i % 2]);
        tasks.push(tokio::spawn(async move {
            let message = format!("I'm Member{i}");
            let (status, body) = Req::chat("busy", &message).call_json(&app).await;
            (status, body, message)
        }));
    }
    let mut answered = Vec::new();
    for task in tasks {
        let (status, body, message) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        answered.push((body["run_id"].as_str().unwrap().to_owned(), message));
    }
    let wall = started.elapsed();
    let runs = all_runs(&apps[0], "busy", 200).await.unwrap();
    let stored = ids(&runs);
    let unique: HashSet<&String> = stored.iter().collect();
    eprintln!(
        "busy group (log layout): {WRITERS} turns, {} answered, {} stored, {:.2} s",
        answered.len(),
        stored.len(),
        wall.as_secs_f64()
    );
    assert_eq!(unique.len(), stored.len(), "a run stored twice");
    assert_eq!(stored.len(), WRITERS, "every answered run is stored");
    for (run_id, message) in &answered {
        let run = runs.iter().find(|r| r["id"] == run_id.as_str()).unwrap();
        assert_eq!(run["input"], message.as_str());
    }
    // The burst is over: the view shows its newest runs, the listing counts them all.
    let root = env.item("busy").await.unwrap();
    assert_eq!(number(&root, "view_through"), WRITERS as u64 - 1);
    assert_eq!(number(&root, "run_count"), WRITERS as u64);
    let value: Value = serde_json::from_str(&env.value("busy").await.unwrap()).unwrap();
    let shown = ids(value["runs"].as_array().unwrap());
    assert_eq!(shown[..], stored[stored.len() - shown.len()..]);
}

#[tokio::test]
async fn a_failed_turn_leaves_a_hole_nothing_reads() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[]).await;
    let (status, _) = Req::chat("holes", "first").call_json(&app).await;
    assert_eq!(status, 200);
    env.model.script(json!([{"status": 400}])).await;
    let (status, body) = Req::chat("holes", "fails").call_json(&app).await;
    assert_eq!(status, 502, "{body}");
    let (status, _) = Req::chat("holes", "third").call_json(&app).await;
    assert_eq!(status, 200);
    let runs = all_runs(&app, "holes", 50).await.unwrap();
    let inputs: Vec<&str> = runs.iter().map(|r| r["input"].as_str().unwrap()).collect();
    assert_eq!(inputs, ["first", "third"]);
    let head = env.item("holes#head").await.unwrap();
    assert_eq!((number(&head, "next"), number(&head, "done")), (3, 3));
    assert_eq!(number(&head, "holes"), 1);
    assert_eq!(number(&env.item("holes").await.unwrap(), "run_count"), 2);
}

#[tokio::test]
async fn a_keyed_retry_of_a_log_turn_is_replayed_from_its_slot() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[]).await;
    let keyed = || Req::chat("keyed", "hello").header("Idempotency-Key", "k-1");
    let (status, first) = keyed().call_json(&app).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = keyed().call_json(&app).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["run_id"], first["run_id"]);
    assert_eq!(again["reply"], first["reply"]);
    let runs = all_runs(&app, "keyed", 50).await.unwrap();
    assert_eq!(runs.len(), 1);
}

#[tokio::test]
async fn a_late_or_lost_run_write_stores_the_run_once() {
    let env = TestEnv::new().await;
    let proxy = FaultProxy::start();
    let app = env.app_via(&proxy, &[]).await;
    let mut answered = Vec::new();
    let (status, body) = Req::chat("lost-log", "first").call_json(&app).await;
    assert_eq!(status, 200, "{body}");
    answered.push(body["run_id"].as_str().unwrap().to_owned());
    // The run's write (a PutItem, or with a key a transaction with its receipt) late past the
    // SDK's attempt timeout or dropped after it landed; the reservation dropped after it landed.
    let faults = [
        json!({"op": "PutItem", "action": "delay", "seconds": 4}),
        json!({"op": "PutItem", "action": "drop_after"}),
        json!({"op": "TransactWriteItems", "action": "drop_after"}),
        json!({"op": "UpdateItem", "action": "drop_after"}),
    ];
    for (i, fault) in faults.iter().enumerate() {
        proxy.arm(json!([fault])).await;
        let key = format!("key-{i}");
        let headers: &[(&str, &str)] = if fault["op"] == "TransactWriteItems" {
            &[("Idempotency-Key", key.as_str())]
        } else {
            &[]
        };
        let (status, body) = Req::chat("lost-log", &format!("turn {i}"))
            .headers(headers)
            .call_json(&app)
            .await;
        assert_eq!(status, 200, "{fault}: {body}");
        answered.push(body["run_id"].as_str().unwrap().to_owned());
    }
    let log = proxy.log().await;
    assert!(log.iter().any(|l| l["action"] == "delay"));
    assert_eq!(
        log.iter().filter(|l| l["action"] == "drop_after").count(),
        3
    );
    let runs = all_runs(&app, "lost-log", 50).await.unwrap();
    assert_eq!(
        ids(&runs),
        answered,
        "each turn stored exactly once, in order"
    );
    let head = env.item("lost-log#head").await.unwrap();
    assert_eq!(number(&head, "next"), 5, "no slot taken twice");
    assert_eq!(number(&head, "done"), 5, "no slot counted twice");
}

#[tokio::test]
async fn a_deleted_log_session_leaves_nothing_and_begins_anew() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[]).await;
    for i in 0..5 {
        let (status, _) = Req::chat("gone", &format!("m{i}")).call_json(&app).await;
        assert_eq!(status, 200);
    }
    let reply = delete("gone").call(&app).await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(env.item("gone").await.is_none());
    assert!(items_with_prefix(&env, "gone#").await.is_empty());
    let (status, _) = get_history("gone", &[]).call_json(&app).await;
    assert_eq!(status, 404);
    let (status, _) = Req::chat("gone", "again").call_json(&app).await;
    assert_eq!(status, 200);
    let runs = all_runs(&app, "gone", 50).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["input"], "again");
}

#[tokio::test]
async fn a_streamed_log_turn_stores_what_was_streamed_and_a_cut_stream_nothing() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[]).await;
    let reply = Req::chat("streamed", "Hello my name is Ada.")
        .sse()
        .call(&app)
        .await;
    assert_eq!(reply.status, 200);
    let events = reply.events();
    let streamed = deltas(&events);
    assert!(!streamed.is_empty());
    env.model.script(json!([{"cut_after": 2}])).await;
    let cut = Req::chat("streamed", "cut me off").sse().call(&app).await;
    let (last, _) = cut.events().last().cloned().unwrap();
    assert_eq!(last, "error");
    let runs = all_runs(&app, "streamed", 50).await.unwrap();
    assert_eq!(runs.len(), 1, "the cut stream stored nothing");
    assert_eq!(runs[0]["output"].as_str().unwrap(), streamed);
    let head = env.item("streamed#head").await.unwrap();
    assert_eq!((number(&head, "next"), number(&head, "holes")), (2, 1));
}

#[tokio::test]
async fn an_expired_log_session_is_never_continued() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("SESSION_TTL_DAYS", "1")]).await;
    for i in 0..3 {
        let (status, _) = Req::chat("expiring", &format!("old {i}"))
            .call_json(&app)
            .await;
        assert_eq!(status, 200);
    }
    let head = env.item("expiring#head").await.unwrap();
    assert!(number(&head, "expires_at") > number(&head, "created_at"));
    // As DynamoDB's TTL does, in its own order: the session item went first; the head is due.
    let past = aws_sdk_dynamodb::types::AttributeValue::N("1".into());
    let mut expired = head.clone();
    expired.insert("expires_at".into(), past);
    env.dynamodb
        .put_item()
        .table_name(&env.table)
        .set_item(Some(expired))
        .send()
        .await
        .unwrap();
    env.dynamodb
        .delete_item()
        .table_name(&env.table)
        .key(
            "id",
            aws_sdk_dynamodb::types::AttributeValue::S("expiring".into()),
        )
        .send()
        .await
        .unwrap();
    let (status, _) = Req::chat("expiring", "new start").call_json(&app).await;
    assert_eq!(status, 200);
    let runs = all_runs(&app, "expiring", 50).await.unwrap();
    let inputs: Vec<&str> = runs.iter().map(|r| r["input"].as_str().unwrap()).collect();
    assert_eq!(
        inputs,
        ["new start"],
        "a new generation, none of the expired runs"
    );
    let now = env.item("expiring#head").await.unwrap();
    assert_ne!(now["generation"], head["generation"]);
}

#[tokio::test]
async fn max_runs_bounds_every_copy_of_a_log_sessions_runs() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("MAX_RUNS", "3")]).await;
    for i in 0..6 {
        let (status, body) = Req::chat("bounded", &format!("m{i}")).call_json(&app).await;
        assert_eq!(status, 200, "{body}");
    }
    let runs = all_runs(&app, "bounded", 2).await.unwrap();
    let inputs: Vec<&str> = runs.iter().map(|r| r["input"].as_str().unwrap()).collect();
    assert_eq!(
        inputs,
        ["m3", "m4", "m5"],
        "forward pages hold the kept runs"
    );
    let back = crate::storage::all_runs_backward(&app, "bounded", 2).await;
    assert_eq!(ids(&back), ids(&runs), "and backward pages the same");
    let head = env.item("bounded#head").await.unwrap();
    let generation = head["generation"].as_s().unwrap();
    let kept = items_with_prefix(&env, &format!("bounded#{generation}#run#")).await;
    assert_eq!(kept.len(), 3, "a dropped run's item is gone");
    let root = env.item("bounded").await.unwrap();
    assert_eq!(number(&root, "run_count"), 3);
    assert_eq!(root["preview"].as_s().unwrap(), "m3");
    let value = env.value("bounded").await.unwrap();
    assert!(!value.contains("\"m2\""), "{value}");
}

/// A history page's runs' ids and its next cursor.
async fn page(app: &App, session: &str, query: &[(&str, &str)]) -> (Vec<String>, Option<String>) {
    let (status, body) = get_history(session, query).call_json(app).await;
    assert_eq!(status, 200, "{body}");
    let runs = ids(body["runs"].as_array().unwrap());
    (runs, body["next_cursor"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn an_item_layout_session_moves_into_the_log_with_nothing_lost() {
    let env = TestEnv::new().await;
    // As an earlier release stored it: 14 runs, the oldest 10 in pages of 4.
    let before = env.put_item_layout("moving", 14, (4, 4), false).await;
    let app = env.app_with(&[("MAX_ITEM_BYTES", "4096")]).await;
    // Read as it is, before any turn: pages, then the item's runs; a cursor into the pages.
    assert_eq!(ids(&all_runs(&app, "moving", 50).await.unwrap()), before);
    let (first, cursor) = page(&app, "moving", &[("limit", "4")]).await;
    assert_eq!(first[..], before[..4]);
    let cursor = cursor.unwrap();
    // The next turn migrates the session.
    let (status, body) = Req::chat("moving", "after the move").call_json(&app).await;
    assert_eq!(status, 200, "{body}");
    let after = ids(&all_runs(&app, "moving", 3).await.unwrap());
    assert_eq!(
        after[..before.len()],
        before[..],
        "every run kept, in order"
    );
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after.last().unwrap(), body["run_id"].as_str().unwrap());
    let back = crate::storage::all_runs_backward(&app, "moving", 4).await;
    assert_eq!(ids(&back), after, "and backward");
    // A cursor handed out before the move goes on where it was.
    let (next, _) = page(&app, "moving", &[("limit", "4"), ("cursor", &cursor)]).await;
    assert_eq!(next[..], before[4..8]);
    let head = env.item("moving#head").await.unwrap();
    assert_eq!(number(&head, "next"), before.len() as u64 + 1);
    let root = env.item("moving").await.unwrap();
    assert!(root.contains_key("log"));
    assert!(
        !root.contains_key("last_runs"),
        "the item layout's bookkeeping goes"
    );
    assert_eq!(number(&root, "run_count"), before.len() as u64 + 1);
    assert!(env.value("moving").await.unwrap().len() <= 2048 + 400);
    // Later turns write what they add; a delete leaves nothing of either shape.
    let (status, _) = Req::chat("moving", "and one more").call_json(&app).await;
    assert_eq!(status, 200);
    let reply = delete("moving").call(&app).await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(items_with_prefix(&env, "moving#").await.is_empty());
    assert!(env.item("moving").await.is_none());
}

#[tokio::test]
async fn an_earlier_releases_archived_session_moves_into_the_log() {
    let env = TestEnv::new().await;
    // The earliest releases' pages say nothing of their runs' numbers: counted when read.
    let before = env.put_item_layout("old", 9, (3, 3), true).await;
    let app = env.app().await;
    assert_eq!(ids(&all_runs(&app, "old", 4).await.unwrap()), before);
    let (status, body) = Req::chat("old", "what came before?").call_json(&app).await;
    assert_eq!(status, 200, "{body}");
    let requests = env.model.requests().await;
    let sent = requests.last().expect("the model was asked")["body"]["messages"].to_string();
    assert!(
        sent.contains("\"m8\"") && sent.contains("what came before?"),
        "{sent}"
    );
    let after = ids(&all_runs(&app, "old", 4).await.unwrap());
    assert_eq!(after[..9], before[..], "every run kept, in order");
    assert_eq!(after.len(), 10);
    let root = env.item("old").await.unwrap();
    assert!(root.contains_key("log") && !root.contains_key("archived"));
    assert_eq!(
        root["pages"].as_s().unwrap(),
        "1:0,2:3",
        "the pages numbered"
    );
    // Its pages keep their keys, and a delete removes them with the rest.
    assert!(env.item("old#archive#00000002").await.is_some());
    let reply = delete("old").call(&app).await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(items_with_prefix(&env, "old#").await.is_empty());
}

#[tokio::test]
async fn griptapes_items_move_into_the_log_and_griptape_writes_over_the_view_go_on() {
    let env = TestEnv::new().await;
    crate::griptape::put_fixture(&env, "v1", "user-id-123").await;
    let app = env.app_with(&[("MEMORY_FORMAT", "griptape")]).await;
    let (status, body) = Req::chat("user-id-123", "What is my name?")
        .call_json(&app)
        .await;
    assert_eq!(
        (status, body["reply"].as_str()),
        (200, Some("Your name is Collin.")),
        "{body}"
    );
    assert!(env.item("user-id-123#head").await.is_some(), "migrated");
    // Griptape 1.x continues the view (its UpdateItem of `value`)...
    assert_eq!(
        crate::griptape::griptape_turn(&env, "user-id-123", "Who am I?"),
        "Your name is Collin."
    );
    // ...and its run is continued here, before the next one.
    let (status, body) = Req::chat("user-id-123", "And again, who am I?")
        .call_json(&app)
        .await;
    assert_eq!(status, 200, "{body}");
    let runs = all_runs(&app, "user-id-123", 50).await.unwrap();
    let inputs: Vec<&str> = runs.iter().map(|r| r["input"].as_str().unwrap()).collect();
    assert_eq!(inputs.len(), 5, "{inputs:?}");
    assert_eq!(
        inputs[2..],
        ["What is my name?", "Who am I?", "And again, who am I?"]
    );
    let unique: HashSet<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), 5, "no run twice");
    let value: Value = serde_json::from_str(&env.value("user-id-123").await.unwrap()).unwrap();
    let shown = value["runs"].as_array().unwrap();
    assert_eq!(
        shown.last().unwrap()["id"],
        runs[4]["id"],
        "griptape sees the newest"
    );
}

#[tokio::test]
async fn a_python_original_item_near_400_kb_moves_into_the_log() {
    let env = TestEnv::new().await;
    let mut value = String::from(r#"{"type": "ConversationMemory", "runs": ["#);
    let mut n = 0;
    while value.len() < 396_000 {
        if n > 0 {
            value.push_str(", ");
        }
        let output = "o".repeat(900);
        value.push_str(&format!(
            r#"{{"type": "Run", "id": "{n:032x}", "input": "q{n}", "output": "{output}"}}"#
        ));
        n += 1;
    }
    value.push_str(r#"], "max_runs": null}"#);
    env.put_value("original", &value).await;
    let app = env.app_with(&[]).await;
    let (status, body) = Req::chat("original", "still here?").call_json(&app).await;
    assert_eq!(status, 200, "{body}");
    let runs = all_runs(&app, "original", 100).await.unwrap();
    assert_eq!(runs.len(), n + 1);
    for (i, run) in runs[..n].iter().enumerate() {
        assert_eq!(run["id"], format!("{i:032x}"));
    }
    assert!(env.value("original").await.unwrap().len() < 4096);
    // The newest runs took slots, the oldest one more page, in the one transaction.
    let head = env.item("original#head").await.unwrap();
    assert_eq!(number(&head, "base"), n as u64 - 96);
    assert_eq!(number(&head, "next"), n as u64 + 1);
}

#[tokio::test]
async fn concurrent_first_turns_migrate_a_session_once() {
    let env = TestEnv::new().await;
    let item_app = env.app().await;
    for i in 0..3 {
        let (status, _) = Req::chat("racing", &format!("before {i}"))
            .call_json(&item_app)
            .await;
        assert_eq!(status, 200);
    }
    let app = Arc::new(env.app_with(&[]).await);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let app = Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            Req::chat("racing", &format!("after {i}"))
                .call_json(&app)
                .await
        }));
    }
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let runs = all_runs(&app, "racing", 50).await.unwrap();
    let inputs: Vec<&str> = runs.iter().map(|r| r["input"].as_str().unwrap()).collect();
    assert_eq!(inputs.len(), 11, "{inputs:?}");
    assert_eq!(inputs[..3], ["before 0", "before 1", "before 2"]);
    let unique: HashSet<&str> = inputs.iter().copied().collect();
    assert_eq!(unique.len(), 11);
    let head = env.item("racing#head").await.unwrap();
    assert_eq!((number(&head, "base"), number(&head, "next")), (0, 11));
}

#[tokio::test]
async fn a_reservation_whose_answers_are_all_lost_gives_its_slot_back() {
    let env = TestEnv::new().await;
    let proxy = FaultProxy::start();
    let app = env.app_via(&proxy, &[]).await;
    let (status, body) = Req::chat("lost-res", "first").call_json(&app).await;
    assert_eq!(status, 200, "{body}");
    // Every attempt of the next reservation lands and loses its answer (the SDK tries 4 times).
    proxy
        .arm(json!([{"op": "UpdateItem", "action": "drop_after", "times": 4, "match": "reserved_ms"}]))
        .await;
    let (status, body) = Req::chat("lost-res", "second").call_json(&app).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("store_unavailable")),
        "{body}"
    );
    assert_eq!(
        proxy
            .log()
            .await
            .iter()
            .filter(|l| l["action"] == "drop_after")
            .count(),
        4
    );
    // Its slot was given back as a hole: nothing is pending.
    let head = env.item("lost-res#head").await.unwrap();
    assert_eq!(number(&head, "next"), 2);
    assert_eq!(number(&head, "done"), 2, "the lost slot is counted done");
    let (status, body) = Req::chat("lost-res", "third").call_json(&app).await;
    assert_eq!(status, 200, "{body}");
    let runs = all_runs(&app, "lost-res", 1).await.unwrap();
    let inputs: Vec<&str> = runs.iter().map(|r| r["input"].as_str().unwrap()).collect();
    assert_eq!(inputs, ["first", "third"], "a forward page passes the hole");
}
