//! The storage promises at their edges (docs/storage.md): lost and late write answers,
//! deadlines, replies of any size, idempotency bookkeeping, deletes racing turns, leftovers,
//! settings changed on live data, keys no identity can collide on, paged history.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};
use session_chat::http::App;

use crate::support::{items_with_prefix, now, wall_clock_lock, FaultProxy, Req, TestEnv};

/// `GET /sessions/{id}` with query parameters, as an HTTP API event.
pub fn get_history(session_id: &str, query: &[(&str, &str)]) -> Req {
    Req::http("GET", &format!("/sessions/{session_id}")).query(query)
}

/// Every run of a session through the API, from the newest page back (`before=end`, then each
/// page's `prev_cursor`), oldest first; each response checked.
pub async fn all_runs_backward(app: &App, session_id: &str, limit: usize) -> Vec<Value> {
    let mut pages: Vec<Vec<Value>> = Vec::new();
    let mut before = "end".to_owned();
    loop {
        let most = limit.to_string();
        let query = [("limit", most.as_str()), ("before", before.as_str())];
        let reply = get_history(session_id, &query).call(app).await;
        let (status, text) = (reply.status, reply.text());
        assert_eq!(status, 200, "{text}");
        assert!(
            text.len() < 4 * 1024 * 1024,
            "a response of {} bytes",
            text.len()
        );
        let body: Value = serde_json::from_str(&text).unwrap();
        let runs = body["runs"].as_array().unwrap().clone();
        assert!(
            !runs.is_empty() && runs.len() <= limit,
            "{} runs",
            runs.len()
        );
        // A page back ends where the page after it began.
        let newer = Some(before.as_str()).filter(|b| *b != "end");
        assert_eq!(body["next_cursor"].as_str(), newer, "{session_id}");
        pages.push(runs);
        match body["prev_cursor"].as_str() {
            Some(c) => before = c.to_owned(),
            None => break,
        }
    }
    pages.into_iter().rev().flatten().collect()
}

pub fn delete(session_id: &str) -> Req {
    Req::http("DELETE", &format!("/sessions/{session_id}"))
}

/// Every run of a session through the API, following cursors; each response checked.
pub async fn all_runs(app: &App, session_id: &str, limit: usize) -> Option<Vec<Value>> {
    let mut runs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let limit = limit.to_string();
        let mut query = vec![("limit", limit.as_str())];
        if let Some(c) = &cursor {
            query.push(("cursor", c.as_str()));
        }
        let reply = get_history(session_id, &query).call(app).await;
        let (status, text) = (reply.status, reply.text());
        if status == 404 {
            return None;
        }
        if status == 400 && cursor.is_some() && text.contains("invalid_cursor") {
            // The session was deleted and begun anew between two pages.
            return None;
        }
        assert_eq!(status, 200, "{text}");
        assert!(
            text.len() < 4 * 1024 * 1024,
            "a response of {} bytes",
            text.len()
        );
        let body: Value = serde_json::from_str(&text).unwrap();
        runs.extend(body["runs"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => {
                // A cursor that does not move would page forever.
                assert_ne!(
                    cursor.as_deref(),
                    Some(c),
                    "{session_id}: the same cursor again"
                );
                cursor = Some(c.to_owned());
            }
            None => return Some(runs),
        }
    }
}

fn ids(runs: &[Value]) -> Vec<String> {
    runs.iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_unique(runs: &[Value]) {
    let ids = ids(runs);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a run id appears twice");
}

#[tokio::test]
async fn a_late_or_lost_write_answer_stores_the_run_once() {
    let env = TestEnv::new().await;
    let proxy = FaultProxy::start();
    let app = env.app_via(&proxy, &[]).await;
    // Late past the SDK's 3 s attempt timeout, or the connection dropped after the write: the
    // write landed, the SDK retries it and meets its own version.
    let faults = [
        json!({"op": "PutItem", "action": "delay", "seconds": 4}),
        json!({"op": "PutItem", "action": "drop_after"}),
        json!({"op": "TransactWriteItems", "action": "drop_after"}),
    ];
    let mut answered = Vec::new();
    let (status, body) = Req::chat("lost", "first").call_json(&app).await;
    assert_eq!(status, 200, "{body}");
    answered.push(body["run_id"].as_str().unwrap().to_owned());
    for (i, fault) in faults.iter().enumerate() {
        proxy.arm(json!([fault])).await;
        let key = format!("key-{i}");
        let headers: &[(&str, &str)] = if fault["op"] == "TransactWriteItems" {
            &[("Idempotency-Key", key.as_str())]
        } else {
            &[]
        };
        let (status, body) = Req::chat("lost", &format!("turn {i}"))
            .headers(headers)
            .call_json(&app)
            .await;
        assert_eq!(status, 200, "{fault}: {body}");
        answered.push(body["run_id"].as_str().unwrap().to_owned());
    }
    let log = proxy.log().await;
    assert!(log.iter().any(|l| l["action"] == "delay"));
    assert!(log.iter().filter(|l| l["action"] == "drop_after").count() == 2);
    let runs = all_runs(&app, "lost", 50).await.unwrap();
    assert_unique(&runs);
    assert_eq!(
        ids(&runs),
        answered,
        "each turn stored exactly once, in order"
    );
}

#[tokio::test]
async fn a_hanging_save_answers_before_the_deadline() {
    let _alone = wall_clock_lock().await;
    let env = TestEnv::new().await;
    let proxy = FaultProxy::start();
    let app = env.app_via(&proxy, &[]).await;
    proxy
        .arm(json!([{"op": "PutItem", "action": "hang", "seconds": 60, "times": 0}]))
        .await;
    let started = std::time::Instant::now();
    let deadline = Duration::from_secs(6);
    let request = Req::chat("hang", "hello").deadline(deadline);
    let (status, body) = request.call_json(&app).await;
    let took = started.elapsed();
    assert!(took < deadline, "answered after {took:?}");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "save_unconfirmed");
    eprintln!("hanging save: answered {status} after {took:?} of a {deadline:?} invocation");
}

#[tokio::test]
async fn replies_of_any_size_are_stored_and_read_back_in_full() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let cases = [
        ("a", 450 * 1024),  // 450 KB ASCII
        ("b", 1024 * 1024), // 1 MB ASCII
        ("語", 70 * 1024),  // 210 KB of CJK: ~420 KB as escaped JSON
    ];
    let mut expected = Vec::new();
    for (i, (unit, repeat)) in cases.iter().enumerate() {
        env.model
            .script(json!([{"reply": unit, "repeat": repeat}]))
            .await;
        let key = format!("big-{i}");
        let (status, body) = Req::chat("big", &format!("say {i}"))
            .header("Idempotency-Key", &key)
            .call_json(&app)
            .await;
        assert_eq!(status, 200, "{}", body["error"]);
        let reply = unit.repeat(*repeat);
        assert_eq!(body["reply"].as_str().unwrap().len(), reply.len());
        expected.push(reply);
        // A retry with the key gets the whole reply without paying again.
        let calls = env.model.requests().await.len();
        let (status, again) = Req::chat("big", &format!("say {i}"))
            .header("Idempotency-Key", &key)
            .call_json(&app)
            .await;
        assert_eq!(status, 200);
        assert_eq!(again["reply"], body["reply"]);
        assert_eq!(env.model.requests().await.len(), calls);
    }
    let item = env.item("big").await.unwrap();
    let value = item["value"].as_s().unwrap();
    let size: usize = item
        .iter()
        .map(|(k, v)| k.len() + v.as_s().map_or(16, |s| s.len()))
        .sum();
    assert!(size < 100 * 1024, "session item {size} bytes");
    // Still the recipe's shape, readable by griptape: three runs, texts shortened.
    let memory: Value = serde_json::from_str(value).unwrap();
    assert_eq!(memory["type"], "ConversationMemory");
    // Every run in the item layout; the newest ones within VIEW_BYTES in the log layout.
    let shown = memory["runs"].as_array().unwrap().len();
    assert!((1..=3).contains(&shown), "{shown}");
    let runs = all_runs(&app, "big", 50).await.unwrap();
    let outputs: Vec<&str> = runs.iter().map(|r| r["output"].as_str().unwrap()).collect();
    assert_eq!(
        outputs,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    for item in items_with_prefix(&env, "big#").await {
        let size: usize = item
            .values()
            .map(|v| v.as_s().map_or(16, |s| s.len()))
            .sum();
        assert!(size < 300 * 1024, "a side item of {size} bytes");
    }
    eprintln!(
        "replies of 450 KB, 1 MB and 210 KB CJK: stored, read back whole; session item {size} bytes, {} side items",
        items_with_prefix(&env, "big#").await.len()
    );
    // Paging back from the newest: a page holds the newest runs that fit in about 2 MB (one more
    // 1 MB reply makes 2.75 MB in all), and the runs before them come on the page before.
    env.model
        .script(json!([{"reply": "d", "repeat": 1024 * 1024}]))
        .await;
    let (status, _) = Req::chat("big", "say 3").call_json(&app).await;
    assert_eq!(status, 200);
    expected.push("d".repeat(1024 * 1024));
    let (_, newest) = get_history("big", &[("before", "end")])
        .call_json(&app)
        .await;
    let shown = newest["runs"].as_array().unwrap().len();
    assert!((1..4).contains(&shown), "cut by size: {shown} runs");
    let runs = all_runs_backward(&app, "big", 50).await;
    let outputs: Vec<&str> = runs.iter().map(|r| r["output"].as_str().unwrap()).collect();
    assert_eq!(
        outputs,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn keyed_turns_never_grow_the_session_item() {
    const TURNS: usize = 1200;
    let env = TestEnv::new().await;
    let app = env.app().await;
    let mut sizes = Vec::new();
    let mut retried = 0;
    for i in 0..TURNS {
        let key = format!("{i:05}{}", "k".repeat(250));
        let send = || async {
            Req::chat("keyed", &format!("m{i}"))
                .header("idempotency-key", &key)
                .call_json(&app)
                .await
        };
        let (mut status, mut body) = send().await;
        // As a client does on a 503 (a local server slow on a busy machine): retry with the
        // same key, which the receipts make safe.
        for _ in 0..2 {
            if status != 503 {
                break;
            }
            retried += 1;
            (status, body) = send().await;
        }
        assert_eq!(status, 200, "turn {i}: {body}");
        if i % 200 == 199 {
            let item = env.item("keyed").await.unwrap();
            assert!(!item.contains_key("receipts"));
            sizes.push(item["value"].as_s().unwrap().len());
        }
    }
    eprintln!("{TURNS} keyed turns with 255-character keys ({retried} retried after a 503): value sizes every 200 turns {sizes:?}");
    let stored = crate::storage::all_runs(&app, "keyed", 200).await.unwrap();
    assert_eq!(stored.len(), TURNS, "each keyed turn stored once");
    assert!(sizes.iter().all(|s| *s < 96 * 1024));

    // A key reused after its receipt expired (TTL not yet run) is a new key.
    let item = env.item("keyed").await.unwrap();
    let generation = item["generation"].as_s().unwrap().clone();
    env.dynamodb
        .put_item()
        .table_name(&env.table)
        .item(
            "id",
            AttributeValue::S(format!("keyed#{generation}#idem#old-key")),
        )
        .item("message", AttributeValue::S("something else".into()))
        .item("run_id", AttributeValue::S("0".repeat(32)))
        .item("reply", AttributeValue::S("old".into()))
        .item("expires_at", AttributeValue::N((now() - 10).to_string()))
        .send()
        .await
        .unwrap();
    for _ in 0..2 {
        let (status, body) = Req::chat("keyed", "new use")
            .header("Idempotency-Key", "old-key")
            .call_json(&app)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_ne!(body["reply"], "old");
    }
}

#[tokio::test]
async fn reads_racing_a_delete_see_a_whole_session_or_404() {
    let env = TestEnv::new().await;
    let extra = [("MAX_ITEM_BYTES", "4096")];
    let app = Arc::new(env.app_with(&extra).await);
    for i in 0..60 {
        let (status, _) = Req::chat("race", &format!("{i} {}", "w".repeat(600)))
            .call_json(&app)
            .await;
        assert_eq!(status, 200);
    }
    let before = all_runs(&app, "race", 200).await.unwrap();
    assert_eq!(before.len(), 60);
    let pages = items_with_prefix(&env, "race#").await.len();
    assert!(pages >= 5, "{pages} pages");

    // A DELETE that fails leaves the session whole.
    let proxy = FaultProxy::start();
    let failing = env.app_via(&proxy, &extra).await;
    proxy
        .arm(json!([{"op": "PutItem", "action": "error", "times": 0}]))
        .await;
    let status = delete("race").call(&failing).await.status;
    assert!(status >= 500, "{status}");
    assert_eq!(all_runs(&app, "race", 200).await.unwrap(), before);

    // Now a delete races readers and writers.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let app = Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..6 {
                seen.push(all_runs(&app, "race", 7 + i).await);
            }
            seen
        }));
    }
    let writer = {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..8 {
                let (status, _) = Req::chat("race", &format!("late {i} {}", "z".repeat(600)))
                    .call_json(&app)
                    .await;
                statuses.push(status);
            }
            statuses
        })
    };
    let reply = delete("race").call(&app).await;
    let (status, text) = (reply.status, reply.text());
    // Writers that keep saving can outlast a delete's attempts: then it says so and changes
    // nothing (the readers below see the session whole), and a later delete goes through.
    assert!(
        status == 204 || status == 202 || (status == 503 && text.contains("session_busy")),
        "{status} {text}"
    );
    let before_ids = ids(&before);
    let mut whole = 0;
    for task in tasks {
        for runs in task.await.unwrap().into_iter().flatten() {
            // A whole session: the old one from its first run (perhaps with late turns), or
            // a new one of late turns only; never a part of one.
            assert_unique(&runs);
            let got = ids(&runs);
            let old = got.len() >= before_ids.len() && got[..before_ids.len()] == before_ids[..];
            let new = runs
                .iter()
                .all(|r| r["input"].as_str().unwrap().starts_with("late "));
            assert!(old || new, "a partial session of {} runs", runs.len());
            whole += 1;
        }
    }
    eprintln!("delete racing 6 readers and a writer: {whole} whole reads, the rest 404, no 5xx");
    let statuses = writer.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    if status == 503 {
        let reply = delete("race").call(&app).await;
        let (status, text) = (reply.status, reply.text());
        assert_eq!(status, 204, "{text}");
    }
    // After it: the old conversation is gone; what is there is new turns only.
    if let Some(runs) = all_runs(&app, "race", 50).await {
        assert_unique(&runs);
        assert!(runs
            .iter()
            .all(|r| r["input"].as_str().unwrap().starts_with("late ")));
    }
    let status = delete("race").call(&app).await.status;
    assert!(status == 204 || status == 404);
    let left = items_with_prefix(&env, "race").await;
    assert!(left.is_empty(), "{} items left", left.len());
}

#[tokio::test]
async fn leftovers_of_a_deleted_or_expired_session_never_reach_a_new_one() {
    let env = TestEnv::new().await;
    let extra = [("MAX_ITEM_BYTES", "4096"), ("SESSION_TTL_DAYS", "1")];
    let app = env.app_with(&extra).await;
    for i in 0..30 {
        let (status, _) = Req::chat("reuse", &format!("old {i} {}", "o".repeat(500)))
            .call_json(&app)
            .await;
        assert_eq!(status, 200);
    }
    let root = env.item("reuse").await.unwrap();
    let expires: u64 = root["expires_at"].as_n().unwrap().parse().unwrap();
    let side = items_with_prefix(&env, "reuse#").await;
    assert!(side.len() >= 3);
    for item in &side {
        let e: u64 = item["expires_at"].as_n().unwrap().parse().unwrap();
        assert!(e >= expires, "a page would expire before its session");
    }
    // TTL removes the session item first (DynamoDB keeps no order).
    env.dynamodb
        .delete_item()
        .table_name(&env.table)
        .key("id", AttributeValue::S("reuse".into()))
        .send()
        .await
        .unwrap();
    for i in 0..30 {
        let (status, body) = Req::chat("reuse", &format!("new {i} {}", "n".repeat(500)))
            .call_json(&app)
            .await;
        assert_eq!(status, 200, "turn {i} of the new session: {body}");
    }
    let runs = all_runs(&app, "reuse", 200).await.unwrap();
    assert_eq!(runs.len(), 30);
    assert!(runs
        .iter()
        .all(|r| r["input"].as_str().unwrap().starts_with("new ")));
    // The old generation's pages are still there, unreachable, and expire by themselves.
    let new_generation = env.item("reuse").await.unwrap()["generation"]
        .as_s()
        .unwrap()
        .clone();
    let old: Vec<_> = items_with_prefix(&env, "reuse#")
        .await
        .into_iter()
        .filter(|i| !i["id"].as_s().unwrap().contains(&new_generation))
        .collect();
    assert_eq!(old.len(), side.len());
    assert!(old.iter().all(|i| i.contains_key("expires_at")));
}

#[tokio::test]
async fn settings_changed_on_live_data() {
    let env = TestEnv::new().await;
    // SESSION_TTL_DAYS on, then off: the next save removes every expiry.
    let with_ttl = env
        .app_with(&[("MAX_ITEM_BYTES", "4096"), ("SESSION_TTL_DAYS", "3")])
        .await;
    for i in 0..12 {
        Req::chat("ttl", &format!("{i} {}", "t".repeat(600)))
            .call_json(&with_ttl)
            .await;
    }
    assert!(env.item("ttl").await.unwrap().contains_key("expires_at"));
    let without = env.app_with(&[("MAX_ITEM_BYTES", "4096")]).await;
    let (status, _) = Req::chat("ttl", "no more expiry").call_json(&without).await;
    assert_eq!(status, 200);
    assert!(!env.item("ttl").await.unwrap().contains_key("expires_at"));
    for item in items_with_prefix(&env, "ttl#").await {
        assert!(!item.contains_key("expires_at"), "{:?}", item["id"]);
    }

    // MAX_RUNS bounds everything kept, archive included.
    let archiving = env.app_with(&[("MAX_ITEM_BYTES", "4096")]).await;
    for i in 0..20 {
        Req::chat("few", &format!("{i} {}", "f".repeat(600)))
            .call_json(&archiving)
            .await;
    }
    assert!(items_with_prefix(&env, "few#").await.len() >= 3);
    let bounded = env
        .app_with(&[("MAX_ITEM_BYTES", "4096"), ("MAX_RUNS", "3")])
        .await;
    for i in 0..3 {
        let (status, _) = Req::chat("few", &format!("bounded {i}"))
            .call_json(&bounded)
            .await;
        assert_eq!(status, 200);
    }
    let runs = all_runs(&bounded, "few", 50).await.unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(
        all_runs_backward(&bounded, "few", 2).await,
        runs,
        "MAX_RUNS bounds both ways"
    );
    // No page, slot or part keeps a dropped run's text.
    for item in items_with_prefix(&env, "few#").await {
        let texts = item.values().filter_map(|v| v.as_s().ok());
        assert!(
            texts.clone().all(|t| !t.contains(&"f".repeat(600))),
            "{:?} keeps a dropped run",
            item["id"]
        );
    }
    let preview = env.item("few").await.unwrap()["preview"].clone();
    assert_eq!(
        preview.as_s().unwrap(),
        "bounded 0",
        "the preview is a kept message"
    );

    // A 397 KB item written by the Python original keeps working when MAX_ITEM_BYTES is low.
    let mut value = String::from(r#"{"type": "ConversationMemory", "runs": ["#);
    let mut n = 0;
    while value.len() < 396_000 {
        if n > 0 {
            value.push_str(", ");
        }
        value.push_str(&format!(
            r#"{{"type": "Run", "id": "{n:032x}", "input": "q{n}", "output": "{}"}}"#,
            "p".repeat(1000)
        ));
        n += 1;
    }
    value.push_str(r#"], "max_runs": null}"#);
    env.put_value("python", &value).await;
    let low = env.app_with(&[("MAX_ITEM_BYTES", "4096")]).await;
    let (status, body) = Req::chat("python", "still there?").call_json(&low).await;
    assert_eq!(status, 200, "{body}");
    let runs = all_runs(&low, "python", 200).await.unwrap();
    assert_eq!(runs.len(), n + 1);
    assert_eq!(all_runs_backward(&low, "python", 64).await, runs);
    assert!(
        env.item("python").await.unwrap()["value"]
            .as_s()
            .unwrap()
            .len()
            <= 4096
    );
}

/// A JWT caller's request, as API Gateway passes it after verifying the token.
fn as_sub(body: &Value, sub: &str, key: &str) -> Req {
    Req::http("POST", "/chat")
        .body(body.clone())
        .header("idempotency-key", key)
        .sub(sub)
}

#[tokio::test]
async fn any_sub_is_its_own_namespace() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("AUTH_MODE", "JWT")]).await;
    let long = "s".repeat(3000);
    let subs = [
        "alice",
        "alice/s#idem#x",
        " alice\n",
        "alice%2Fs",
        "#",
        "/",
        "~",
        long.as_str(),
    ];
    // The same session id and the same key for every caller.
    for sub in subs {
        let body = json!({"session_id": "s", "message": format!("I am {sub:?}")});
        let (status, reply) = as_sub(&body, sub, "x/../#idem#k").call_json(&app).await;
        assert_eq!(status, 200, "{sub:?}: {reply}");
    }
    for sub in subs {
        let (status, body) = Req::http("GET", "/sessions/s")
            .sub(sub)
            .call_json(&app)
            .await;
        assert_eq!(status, 200, "{sub:?}");
        let runs = body["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{sub:?} sees only its own run");
        assert_eq!(runs[0]["input"], format!("I am {sub:?}"));
    }
    let keys: Vec<String> = items_with_prefix(&env, "")
        .await
        .iter()
        .map(|i| i["id"].as_s().unwrap().clone())
        .collect();
    assert!(keys.iter().all(|k| k.len() < 1200), "{keys:?}");
}

#[tokio::test]
async fn history_pages_follow_cursors() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("MAX_ITEM_BYTES", "8192")]).await;
    let mut answered = Vec::new();
    for i in 0..130 {
        let (_, body) = Req::chat("paged", &format!("{i} {}", "h".repeat(300)))
            .call_json(&app)
            .await;
        answered.push(body["run_id"].as_str().unwrap().to_owned());
    }
    let (status, first) = get_history("paged", &[]).call_json(&app).await;
    assert_eq!(status, 200);
    assert_eq!(first["runs"].as_array().unwrap().len(), 50, "default limit");
    assert!(first["next_cursor"].is_string());
    assert!(
        first["prev_cursor"].is_null(),
        "the first page starts at the first run"
    );
    for limit in [1, 7, 50, 200] {
        let runs = all_runs(&app, "paged", limit).await.unwrap();
        assert_eq!(ids(&runs), answered, "limit {limit}");
        let runs = all_runs_backward(&app, "paged", limit).await;
        assert_eq!(ids(&runs), answered, "backward, limit {limit}");
    }
    // The newest page, then the one before it: what a chat client shows first.
    let (status, newest) = get_history("paged", &[("before", "end"), ("limit", "30")])
        .call_json(&app)
        .await;
    assert_eq!(status, 200);
    assert_eq!(ids(newest["runs"].as_array().unwrap()), answered[100..]);
    assert!(newest["next_cursor"].is_null());
    let prev = newest["prev_cursor"].as_str().unwrap();
    let (_, older) = get_history("paged", &[("before", prev), ("limit", "30")])
        .call_json(&app)
        .await;
    assert_eq!(ids(older["runs"].as_array().unwrap()), answered[70..100]);
    assert_eq!(older["next_cursor"].as_str(), Some(prev));
    // A forward page from a backward page's cursor reads on from there.
    let (_, on) = get_history("paged", &[("cursor", prev), ("limit", "5")])
        .call_json(&app)
        .await;
    assert_eq!(ids(on["runs"].as_array().unwrap()), answered[100..105]);
    assert_eq!(on["prev_cursor"].as_str(), Some(prev));
    let (status, body) = get_history("paged", &[("before", "end"), ("cursor", prev)])
        .call_json(&app)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    for bad in ["0", "201", "ten"] {
        let (status, body) = get_history("paged", &[("limit", bad)])
            .call_json(&app)
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_request"))
        );
    }
    for bad in ["x", "5.nothex!", "5.0123456789abcdef0123456789abcdef"] {
        for param in ["cursor", "before"] {
            let (status, body) = get_history("paged", &[(param, bad)]).call_json(&app).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (400, Some("invalid_cursor")),
                "{param}={bad}"
            );
        }
    }
}

#[tokio::test]
async fn a_delete_out_of_time_is_finished_by_the_next() {
    let _alone = wall_clock_lock().await;
    let env = TestEnv::new().await;
    let extra = [("MAX_ITEM_BYTES", "4096")];
    let app = env.app_with(&extra).await;
    for i in 0..30 {
        Req::chat("slow", &format!("{i} {}", "d".repeat(600)))
            .call_json(&app)
            .await;
    }
    let pages = items_with_prefix(&env, "slow#").await.len();
    assert!(pages >= 5);
    // The cleanup's first batch answers past the invocation's deadline.
    let proxy = FaultProxy::start();
    let slow = env.app_via(&proxy, &extra).await;
    proxy
        .arm(json!([{"op": "BatchWriteItem", "action": "delay", "seconds": 3}]))
        .await;
    let started = std::time::Instant::now();
    let reply = delete("slow")
        .deadline(Duration::from_secs(2))
        .call(&slow)
        .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let (status, text) = (reply.status, reply.text());
    assert_eq!(status, 202, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body, json!({"deleted": true, "complete": false}));
    // Gone for readers at once; a new turn begins a new session; the next delete finishes.
    let (status, _) = get_history("slow", &[]).call_json(&app).await;
    assert_eq!(status, 404);
    let (status, _) = Req::chat("slow", "a new start").call_json(&app).await;
    assert_eq!(status, 200);
    let reply = delete("slow").call(&app).await;
    let (status, text) = (reply.status, reply.text());
    assert_eq!(status, 204, "{text}");
    assert!(items_with_prefix(&env, "slow").await.is_empty());
}
