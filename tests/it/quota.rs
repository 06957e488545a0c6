//! Per-owner quotas (docs/storage.md, "Quotas") and the metrics every request line carries
//! (docs/operations.md), read from the real binary's log lines.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use session_chat::metrics::METRICS;

use crate::managed::drive;
use crate::support::{items_with_prefix, FaultProxy, Req, ScriptedModel, TestEnv};

fn turn(session_id: &str, message: &str, owner: &str) -> Req {
    Req::http("POST", "/chat")
        .body(json!({"session_id": session_id, "message": message, "owner": owner}))
}

/// Waits until a minute has at least 40 seconds left, so a test's turns fall in one window.
pub(crate) async fn early_in_a_minute() {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if secs % 60 > 20 {
        tokio::time::sleep(Duration::from_secs(60 - secs % 60)).await;
    }
}

pub(crate) fn chat_calls(requests: &[Value]) -> usize {
    requests.iter().filter(|r| r["summary"] != true).count()
}

#[tokio::test]
async fn forty_turns_at_once_pass_a_quota_of_ten_exactly() {
    let env = TestEnv::new().await;
    let quota = [("QUOTA_TURNS_PER_MINUTE", "10")];
    // Two execution environments: each app has its own clients; the count is the table's.
    let apps = [
        Arc::new(env.app_with(&quota).await),
        Arc::new(env.app_with(&quota).await),
    ];
    early_in_a_minute().await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app = Arc::clone(&apps[i % 2]);
        tasks.push(tokio::spawn(async move {
            turn(&format!("heavy-{i:02}"), &format!("turn {i}"), "heavy")
                .call(&app)
                .await
        }));
    }
    let mut answered = 0;
    let mut refused = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.status {
            200 => answered += 1,
            429 => {
                refused += 1;
                let wait: u64 = reply.headers["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=60).contains(&wait), "{wait}");
                let (_, body) = reply.parts();
                assert_eq!(body["error"]["code"], "quota_exceeded");
            }
            other => panic!("{other}: {}", reply.text()),
        }
    }
    assert_eq!((answered, refused), (10, 30));
    assert_eq!(
        chat_calls(&env.model.requests().await),
        10,
        "the model was called 10 times"
    );
    let mut stored = 0;
    for i in 0..40 {
        stored += env.stored_runs(&format!("heavy-{i:02}")).await.len();
    }
    assert_eq!(stored, 10, "a refused turn stores nothing");
    // Another user is not held back by the first one's quota.
    let (status, body) = turn("light-1", "hello", "light").call_json(&apps[0]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_refused_turn_stores_nothing_and_a_saved_one_is_replayed() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("QUOTA_TURNS_PER_MINUTE", "2")]).await;
    early_in_a_minute().await;
    let keyed = turn("r-1", "I'm Ann", "ann").header("Idempotency-Key", "k-1");
    let (status, first) = keyed.call_json(&app).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(turn("r-1", "second", "ann").call(&app).await.status, 200);
    let over = turn("r-1", "third", "ann").call(&app).await;
    assert_eq!(over.status, 429, "{}", over.text());
    assert_eq!(chat_calls(&env.model.requests().await), 2);
    assert_eq!(env.stored_runs("r-1").await.len(), 2);
    // A keyed retry of the saved turn is its reply, quota or not.
    let again = turn("r-1", "I'm Ann", "ann")
        .header("Idempotency-Key", "k-1")
        .call(&app)
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.parts().1["run_id"], first["run_id"]);
    // A streamed turn over the quota is refused the same way, before any event.
    let streamed = turn("r-1", "fourth", "ann").sse().call(&app).await;
    assert_eq!(streamed.status, 429, "{}", streamed.text());
    assert!(streamed.headers.contains_key("retry-after"));
    assert_eq!(chat_calls(&env.model.requests().await), 2);
    // A session whose turns name no owner counts on its own.
    let anonymous = env.app_with(&[("QUOTA_TURNS_PER_MINUTE", "1")]).await;
    assert_eq!(Req::chat("anon-1", "hi").call(&anonymous).await.status, 200);
    assert_eq!(
        Req::chat("anon-1", "hi again")
            .call(&anonymous)
            .await
            .status,
        429
    );
    assert_eq!(Req::chat("anon-2", "hi").call(&anonymous).await.status, 200);
}

#[tokio::test]
async fn the_token_quota_refuses_once_spent() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("QUOTA_TOKENS_PER_DAY", "30")]).await;
    let (status, body) = turn("t-1", "I'm Ann", "ann").call_json(&app).await;
    assert_eq!(status, 200, "{body}");
    let requests = env.model.requests().await;
    let usage = &requests[0]["usage"];
    let spent =
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap();
    // The counter holds what the provider reported.
    let counters = items_with_prefix(&env, "#quota#tokens#user:ann#").await;
    assert_eq!(counters.len(), 1);
    assert_eq!(counters[0]["tokens"].as_n().unwrap(), &spent.to_string());
    assert!(counters[0].contains_key("expires_at"));
    if spent < 30 {
        // Spend the rest: the turn that reaches the quota still finishes.
        while {
            let (status, _) = turn("t-1", "more", "ann").call_json(&app).await;
            status == 200
        } {}
    }
    let over = turn("t-1", "what is my name?", "ann").call(&app).await;
    assert_eq!(over.status, 429, "{}", over.text());
    let wait: u64 = over.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=86_400).contains(&wait),
        "until the UTC day ends: {wait}"
    );
    assert!(over.text().contains("tokens"));
    let calls = chat_calls(&env.model.requests().await);
    assert_eq!(turn("t-1", "and now?", "ann").call(&app).await.status, 429);
    assert_eq!(
        chat_calls(&env.model.requests().await),
        calls,
        "no model call once spent"
    );
    assert_eq!(
        turn("t-2", "hello", "bob").call(&app).await.status,
        200,
        "bob has his own"
    );
}

/// Every metric line of the real binary (`_aws` present) checked as CloudWatch reads it.
fn metric_lines(report: &Value) -> Vec<&Value> {
    let lines: Vec<&Value> = report["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l.get("_aws").is_some())
        .collect();
    for line in &lines {
        let aws = &line["_aws"];
        assert!(aws["Timestamp"].as_u64().is_some(), "{line}");
        for directive in aws["CloudWatchMetrics"].as_array().unwrap() {
            assert_eq!(directive["Namespace"], "SessionChatTest", "{line}");
            for set in directive["Dimensions"].as_array().unwrap() {
                for dim in set.as_array().unwrap() {
                    assert!(
                        line[dim.as_str().unwrap()].is_string(),
                        "dimension {dim} in {line}"
                    );
                }
            }
            for metric in directive["Metrics"].as_array().unwrap() {
                let name = metric["Name"].as_str().unwrap();
                let declared = METRICS.iter().find(|m| m.name == name).expect(name);
                assert_eq!(metric["Unit"], declared.unit.as_str());
                assert!(
                    line[name].is_number(),
                    "{name} is a number at the top: {line}"
                );
            }
        }
    }
    lines
}

fn named(lines: &[&Value]) -> BTreeSet<String> {
    lines
        .iter()
        .flat_map(|l| l["_aws"]["CloudWatchMetrics"].as_array().unwrap())
        .flat_map(|d| d["Metrics"].as_array().unwrap())
        .map(|m| m["Name"].as_str().unwrap().to_owned())
        .collect()
}

fn sum(lines: &[&Value], name: &str) -> f64 {
    lines.iter().filter_map(|l| l[name].as_f64()).sum()
}

#[tokio::test]
async fn every_request_line_is_an_embedded_metric_document() {
    let env = TestEnv::new().await;
    let model = ScriptedModel::start();
    let vars = [
        ("METRICS_NAMESPACE", "SessionChatTest"),
        ("QUOTA_TURNS_PER_MINUTE", "3"),
    ];
    early_in_a_minute().await;
    // A stream; a refusal; a quota's refusals.
    let mut events = vec![
        turn("m-1", "I'm Ann", "ann")
            .header("Idempotency-Key", "m-k1")
            .event(),
        turn("m-2", "stream this", "bob").sse().event(),
        Req::http("GET", "/sessions/nobody-here").event(),
    ];
    for i in 0..5 {
        events.push(turn(&format!("m-q{i}"), "again", "carl").event());
    }
    let first = drive(&env, &model, events, &vars);
    // Then a keyed retry (a replay) and a turn the model fails, and a table that is not
    // there (the store's errors).
    model.script(json!([{"status": 400}])).await;
    let replay = vec![
        turn("m-1", "I'm Ann", "ann")
            .header("Idempotency-Key", "m-k1")
            .event(),
        turn("m-3", "fail me", "eve").event(),
    ];
    let second = drive(&env, &model, replay, &vars);
    let mut broken = vars.to_vec();
    broken.push(("TABLE_NAME", "no-such-table"));
    let third = drive(
        &env,
        &model,
        vec![turn("m-9", "hi", "dan").event()],
        &broken,
    );

    let mut lines = metric_lines(&first);
    assert_eq!(lines.len(), 8, "one metric line a request");
    assert_eq!(sum(&lines, "Requests"), 8.0);
    assert_eq!(sum(&lines, "QuotaRefusals"), 2.0, "carl's 4th and 5th");
    assert_eq!(sum(&lines, "Turns"), 5.0);
    let codes: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l["ErrorCode"].as_str())
        .collect();
    assert_eq!(
        codes,
        BTreeSet::from(["quota_exceeded", "session_not_found"])
    );
    lines.extend(metric_lines(&second));
    lines.extend(metric_lines(&third));
    assert_eq!(lines.len(), 11);
    assert_eq!(sum(&lines, "Replays"), 1.0);
    assert_eq!(sum(&lines, "ModelErrors"), 1.0);
    assert_eq!(sum(&lines, "StoreErrors"), 1.0);
    let server_errors: Vec<f64> = lines
        .iter()
        .filter_map(|l| l["ServerErrors"].as_f64())
        .collect();
    assert_eq!(
        server_errors.iter().sum::<f64>(),
        2.0,
        "the 502 and the 503"
    );
    let declared: BTreeSet<String> = METRICS.iter().map(|m| m.name.to_owned()).collect();
    assert_eq!(named(&lines), declared, "every declared metric is emitted");
}

/// The turn counter's count, read straight from the table.
async fn turns_counted(env: &TestEnv, who: &str) -> Vec<String> {
    items_with_prefix(env, &format!("#quota#turns#{who}#"))
        .await
        .iter()
        .map(|i| i["turns"].as_n().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_lost_quota_answer_never_loosens_the_quota() {
    let env = TestEnv::new().await;
    let proxy = FaultProxy::start();
    let app = env
        .app_via(&proxy, &[("QUOTA_TURNS_PER_MINUTE", "3")])
        .await;
    early_in_a_minute().await;
    let keyed = || turn("lost-q", "I'm Ann", "ann").header("Idempotency-Key", "lost-k1");
    assert_eq!(keyed().call(&app).await.status, 200);
    // The replay's give-back lands but its answer is lost: tried once, it subtracts once.
    proxy
        .arm(json!([{"op": "UpdateItem", "match": "\"N\":\"-1\"", "action": "drop_after"}]))
        .await;
    let again = keyed().call(&app).await;
    assert_eq!(
        (
            again.status,
            again.headers["idempotent-replayed"].to_str().unwrap()
        ),
        (200, "true")
    );
    assert_eq!(
        turns_counted(&env, "user:ann").await,
        ["1"],
        "the replay's count was given back once"
    );
    // A count lands but its answer is lost: the SDK's retry counts it again (stricter).
    proxy
        .arm(json!([{"op": "UpdateItem", "match": "#quota#turns", "action": "drop_after"}]))
        .await;
    assert_eq!(turn("lost-q", "second", "ann").call(&app).await.status, 200);
    assert_eq!(turns_counted(&env, "user:ann").await, ["3"]);
    let over = turn("lost-q", "third", "ann").call(&app).await;
    assert_eq!(over.status, 429, "{}", over.text());
    // Had the give-back been retried (subtracting twice), this third turn would have passed.
    assert_eq!(
        env.stored_runs("lost-q").await.len(),
        2,
        "never more than the quota"
    );
    assert_eq!(chat_calls(&env.model.requests().await), 2);
    let log = proxy.log().await;
    let dropped = log.iter().filter(|e| e["action"] == "drop_after").count();
    assert_eq!(dropped, 2, "both faults fired");
}
