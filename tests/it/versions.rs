//! Conversations people can correct (docs/storage.md, "Versions"; docs/api.md): regenerate,
//! edit and branch, select a version, delete one message, rate a reply.

use std::sync::Arc;

use serde_json::{json, Value};
use session_chat::http::App;

use crate::storage::{delete, get_history};
use crate::support::*;

fn regenerate(session_id: &str) -> Req {
    Req::http("POST", "/chat").body(json!({"session_id": session_id, "regenerate": true}))
}

fn edit(session_id: &str, run_id: &str, message: &str) -> Req {
    Req::http("POST", "/chat").body(json!({
        "session_id": session_id, "edit": run_id, "message": message
    }))
}

fn select(session_id: &str, run_id: &str) -> Req {
    Req::http("POST", &format!("/sessions/{session_id}/select")).body(json!({"run_id": run_id}))
}

fn delete_run(session_id: &str, run_id: &str) -> Req {
    Req::http("DELETE", &format!("/sessions/{session_id}/runs/{run_id}"))
}

fn feedback(session_id: &str, run_id: &str, body: Value) -> Req {
    Req::http(
        "PUT",
        &format!("/sessions/{session_id}/runs/{run_id}/feedback"),
    )
    .body(body)
}

/// The runs of the active path's newest page, as `GET` returns them.
async fn newest_runs(app: &App, session_id: &str) -> Vec<Value> {
    let (status, body) = get_history(session_id, &[("before", "end")])
        .call_json(app)
        .await;
    assert_eq!(status, 200, "{body}");
    body["runs"].as_array().unwrap().clone()
}

/// The active path as `GET` returns it: (id, input, alternatives) of each run.
async fn path(app: &App, session_id: &str) -> Vec<(String, String, Vec<String>)> {
    newest_runs(app, session_id)
        .await
        .iter()
        .map(|r| {
            let alternatives = r["alternatives"].as_array().expect("alternatives");
            (
                r["id"].as_str().unwrap().to_owned(),
                r["input"].as_str().unwrap().to_owned(),
                alternatives
                    .iter()
                    .map(|a| a.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

/// (version, versions) of each run on the active path.
async fn versions(app: &App, session_id: &str) -> Vec<(u64, usize)> {
    newest_runs(app, session_id)
        .await
        .iter()
        .map(|r| {
            let others = r["alternatives"].as_array().expect("alternatives").len();
            (r["version"].as_u64().expect("version"), others + 1)
        })
        .collect()
}

fn ids(path: &[(String, String, Vec<String>)]) -> Vec<&str> {
    path.iter().map(|(id, _, _)| id.as_str()).collect()
}

async fn say(app: &App, session_id: &str, message: &str) -> String {
    let (status, body) = Req::chat(session_id, message).call_json(app).await;
    assert_eq!(status, 200, "{body}");
    body["run_id"].as_str().unwrap().to_owned()
}

/// The user messages of the model's newest request.
async fn last_prompt(model: &ScriptedModel) -> Vec<String> {
    let requests = model.requests().await;
    let last = requests
        .iter()
        .rev()
        .find(|r| r["summary"] != true)
        .unwrap();
    last["body"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Ids of the runs in griptape's `value`.
async fn view_ids(env: &TestEnv, session_id: &str) -> Vec<String> {
    view_ids_owned(env, session_id).await
}

async fn view_ids_owned(env: &TestEnv, session_id: &str) -> Vec<String> {
    let value: Value = serde_json::from_str(&env.value(session_id).await.unwrap()).unwrap();
    value["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn regenerate_edit_and_select_keep_every_version() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let r0 = say(&app, "v", "I'm Ann").await;
    let r1 = say(&app, "v", "hello there").await;
    let r2 = say(&app, "v", "what is my name?").await;

    // Regenerate: the last message answered again, in its place.
    env.model.script(json!([{"reply": "A second take."}])).await;
    let (status, body) = regenerate("v").call_json(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "A second take.");
    let r2b = body["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        last_prompt(&env.model).await,
        ["I'm Ann", "hello there", "what is my name?"],
        "the regeneration's prompt holds the path before the replaced run, and its message"
    );
    let now = path(&app, "v").await;
    assert_eq!(ids(&now), [&r0, &r1, &r2b]);
    assert_eq!(now[2].1, "what is my name?");
    assert_eq!(
        now[2].2,
        std::slice::from_ref(&r2),
        "the old reply is the new one's alternative"
    );
    assert!(now[0].2.is_empty() && now[1].2.is_empty());
    assert_eq!(
        view_ids(&env, "v").await,
        [&r0, &r1, &r2b].map(|s| s.to_string()),
        "griptape sees the path"
    );

    // Edit an earlier message: the runs after it leave the path.
    let (status, body) = edit("v", &r1, "I'm Bob actually").call_json(&app).await;
    assert_eq!(status, 200, "{body}");
    let r1b = body["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        last_prompt(&env.model).await,
        ["I'm Ann", "I'm Bob actually"]
    );
    let now = path(&app, "v").await;
    assert_eq!(ids(&now), [&r0, &r1b]);
    assert_eq!(now[1].2, std::slice::from_ref(&r1));
    let (_, body) = Req::chat("v", "what is my name?").call_json(&app).await;
    assert_eq!(body["reply"], "Your name is Bob.");
    assert_eq!(
        last_prompt(&env.model).await,
        ["I'm Ann", "I'm Bob actually", "what is my name?"],
        "only the active path is prompted"
    );
    let r3 = body["run_id"].as_str().unwrap().to_owned();

    // Select the first branch again: down its newest version.
    let reply = select("v", &r1).call(&app).await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    let now = path(&app, "v").await;
    assert_eq!(ids(&now), [&r0, &r1, &r2b]);
    assert_eq!(now[1].2, std::slice::from_ref(&r1b));
    assert_eq!(
        view_ids(&env, "v").await,
        [&r0, &r1, &r2b].map(|s| s.to_string())
    );
    // The next turn follows the selected path.
    let r4 = say(&app, "v", "and now?").await;
    assert_eq!(
        last_prompt(&env.model).await,
        ["I'm Ann", "hello there", "what is my name?", "and now?"]
    );
    assert_eq!(ids(&path(&app, "v").await), [&r0, &r1, &r2b, &r4]);
    // An older version of the last place; then back to the edited branch.
    assert_eq!(select("v", &r2).call(&app).await.status, 204);
    assert_eq!(ids(&path(&app, "v").await), [&r0, &r1, &r2]);
    assert_eq!(
        versions(&app, "v").await,
        [(1, 1), (1, 2), (1, 2)],
        "each run's place among its versions, of how many (the page's `1/2`)"
    );
    assert_eq!(select("v", &r1b).call(&app).await.status, 204);
    assert_eq!(ids(&path(&app, "v").await), [&r0, &r1b, &r3]);
    assert_eq!(versions(&app, "v").await, [(1, 1), (2, 2), (1, 1)]);

    // Refusals change nothing.
    let refusals = [
        (edit("v", "0123abcd", "x"), 404, "run_not_found"),
        (edit("v", &r2, "x"), 409, "run_not_on_path"),
        (edit("v", "not/an/id", "x"), 400, "invalid_run_id"),
        (
            Req::http("POST", "/chat")
                .body(json!({"session_id": "v", "regenerate": true, "message": "x"})),
            400,
            "invalid_request",
        ),
        (select("v", "0123abcd"), 404, "run_not_found"),
        (regenerate("nobody-here"), 404, "run_not_found"),
    ];
    for (req, want, code) in refusals {
        let (status, body) = req.call_json(&app).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (want, Some(code)),
            "{body}"
        );
    }
    assert_eq!(ids(&path(&app, "v").await), [&r0, &r1b, &r3]);

    // A delete of the session takes every branch.
    assert_eq!(delete("v").call(&app).await.status, 204);
    assert!(items_with_prefix(&env, "v#").await.is_empty());
}

#[tokio::test]
async fn an_idempotent_regenerate_retried_is_replayed_and_a_failed_one_changes_nothing() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let r0 = say(&app, "r", "I'm Ann").await;
    let r1 = say(&app, "r", "tell me a story").await;
    let calls = env.model.requests().await.len();
    let keyed = || regenerate("r").header("Idempotency-Key", "regen-1");
    let (status, first) = keyed().call_json(&app).await;
    assert_eq!(status, 200, "{first}");
    let reply = keyed().call(&app).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.headers["idempotent-replayed"], "true");
    let again: Value = serde_json::from_str(&reply.text()).unwrap();
    assert_eq!(again["run_id"], first["run_id"], "the same version");
    assert_eq!(
        env.model.requests().await.len(),
        calls + 1,
        "one model call"
    );
    let r1b = first["run_id"].as_str().unwrap().to_owned();
    let now = path(&app, "r").await;
    assert_eq!(ids(&now), [&r0, &r1b]);
    assert_eq!(
        now[1].2,
        std::slice::from_ref(&r1),
        "no version made by the retry"
    );

    // The same key for another request is a reuse.
    let (status, body) = edit("r", &r1b, "other")
        .header("Idempotency-Key", "regen-1")
        .call_json(&app)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("idempotency_key_reused"))
    );

    // A regeneration the model fails leaves the path as it was.
    env.model
        .script(json!([{"status": 500}, {"status": 500}, {"status": 500}, {"status": 500}]))
        .await;
    let (status, body) = regenerate("r").call_json(&app).await;
    assert_eq!(status, 502, "{body}");
    let now = path(&app, "r").await;
    assert_eq!(ids(&now), [&r0, &r1b], "the failed version is not shown");
    assert_eq!(now[1].2, std::slice::from_ref(&r1));
    let r2 = say(&app, "r", "go on").await;
    assert_eq!(ids(&path(&app, "r").await), [&r0, &r1b, &r2]);
}

#[tokio::test]
async fn an_edit_racing_a_turn_keeps_both() {
    let env = TestEnv::new().await;
    let model = ScriptedModel::start_with(&["--answer-delay", "1"]);
    let url = model.base_url();
    let app = Arc::new(env.app_with(&[("OPENAI_BASE_URL", url.as_str())]).await);
    let r0 = say(&app, "race", "I'm Ann").await;
    let r1 = say(&app, "race", "first question").await;
    let turn = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { Req::chat("race", "a slow question").call_json(&app).await })
    };
    // The turn has taken its slot; the edit comes while its model thinks.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (status, body) = edit("race", &r1, "I'm Bob").call_json(&app).await;
    assert_eq!(status, 200, "{body}");
    let r1b = body["run_id"].as_str().unwrap().to_owned();
    let (status, body) = turn.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let slow = body["run_id"].as_str().unwrap().to_owned();
    // The edit's path is active; the racing turn's run is kept on the branch it was asked on.
    let now = path(&app, "race").await;
    assert_eq!(ids(&now), [&r0, &r1b]);
    assert_eq!(now[1].2, std::slice::from_ref(&r1));
    assert_eq!(
        view_ids(&env, "race").await,
        [&r0, &r1b].map(|s| s.to_string())
    );
    assert_eq!(select("race", &r1).call(&app).await.status, 204);
    assert_eq!(ids(&path(&app, "race").await), [&r0, &r1, &slow]);
}

#[tokio::test]
async fn a_deleted_message_is_gone_from_everything_stored() {
    let env = TestEnv::new().await;
    let proxy = FaultProxy::start();
    let app = env.app_via(&proxy, &[]).await;
    // A small window, so the message of the second session is folded into its summary.
    let folding = env
        .app_with(&[("HISTORY_TOKEN_BUDGET", "60"), ("SUMMARIZE", "true")])
        .await;
    let mut secrets = Vec::new();
    for (app, session_id) in [(&app, "del"), (&folding, "fold")] {
        say(app, session_id, "I'm Ann").await;
        secrets.push(say(app, session_id, "my password is hunter2, I'm Ann").await);
        for i in 0..3 {
            say(app, session_id, &format!("question {i}, weather")).await;
        }
    }
    let anywhere = |texts: Vec<String>| texts.iter().any(|t| t.contains("hunter2"));
    assert!(
        env.value("del").await.unwrap().contains("hunter2"),
        "griptape's view shows it"
    );
    let summary = |keys: Vec<String>| keys.iter().any(|k| k.ends_with("#summary"));
    assert!(
        summary(env.keys().await),
        "the message was folded into a summary"
    );

    // The hole's put lands and its answer is lost: the SDK's retry passes as ours.
    proxy
        .arm(json!([{"op": "PutItem", "action": "drop_after"}]))
        .await;
    let reply = delete_run("del", &secrets[0]).call(&app).await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(proxy
        .log()
        .await
        .iter()
        .any(|l| l["action"] == "drop_after"));
    let reply = delete_run("fold", &secrets[1]).call(&folding).await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(
        !anywhere(all_texts(&env).await),
        "no item holds the deleted message or its reply"
    );
    assert!(
        !summary(env.keys().await),
        "the summary it was folded into is gone"
    );
    for (app, session_id, secret) in [(&app, "del", &secrets[0]), (&folding, "fold", &secrets[1])] {
        let now = path(app, session_id).await;
        assert_eq!(now.len(), 4, "the path closes over it");
        assert!(!ids(&now).contains(&secret.as_str()));
        let (status, body) = delete_run(session_id, secret).call_json(app).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("run_not_found"))
        );
        // The conversation goes on, the name told before the deleted message remembered (in
        // the folded session, from the summary folded again: the window started over).
        say(app, session_id, "what is my name?").await;
        let (_, body) = Req::chat(session_id, "what is my name?")
            .call_json(app)
            .await;
        assert_eq!(body["reply"], "Your name is Ann.", "{session_id}");
    }
}

/// Every string attribute of every item in the table.
async fn all_texts(env: &TestEnv) -> Vec<String> {
    let out = env
        .dynamodb
        .scan()
        .table_name(&env.table)
        .send()
        .await
        .unwrap();
    out.items()
        .iter()
        .flat_map(|item| item.values())
        .filter_map(|v| v.as_s().ok().cloned())
        .collect()
}

#[tokio::test]
async fn a_reply_is_rated_and_the_rating_read_back() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let r0 = say(&app, "fb", "hello").await;
    let reply = feedback("fb", &r0, json!({"rating": "down", "comment": "too vague"}))
        .call(&app)
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    let (_, body) = get_history("fb", &[]).call_json(&app).await;
    assert_eq!(body["runs"][0]["feedback"]["rating"], "down");
    assert_eq!(body["runs"][0]["feedback"]["comment"], "too vague");
    assert!(body["runs"][0]["feedback"]["at"].as_u64().unwrap() > 0);
    // A later rating replaces it.
    let reply = feedback("fb", &r0, json!({"rating": "up"}))
        .call(&app)
        .await;
    assert_eq!(reply.status, 204);
    let (_, body) = get_history("fb", &[]).call_json(&app).await;
    assert_eq!(
        body["runs"][0]["feedback"],
        json!({"rating": "up", "at": body["runs"][0]["feedback"]["at"]})
    );
    let refusals = [
        (json!({"rating": "meh"}), 400, "invalid_feedback"),
        (
            json!({"rating": "up", "comment": "x".repeat(2001)}),
            400,
            "invalid_feedback",
        ),
        (
            json!({"rating": "up", "comment": 3}),
            400,
            "invalid_feedback",
        ),
    ];
    for (body, want, code) in refusals {
        let (status, got) = feedback("fb", &r0, body).call_json(&app).await;
        assert_eq!(
            (status, got["error"]["code"].as_str()),
            (want, Some(code)),
            "{got}"
        );
    }
    let (status, got) = feedback("fb", "0123abcd", json!({"rating": "up"}))
        .call_json(&app)
        .await;
    assert_eq!(
        (status, got["error"]["code"].as_str()),
        (404, Some("run_not_found"))
    );
    let (status, _) = Req::http("GET", &format!("/sessions/fb/runs/{r0}/feedback"))
        .call_json(&app)
        .await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn an_item_shaped_session_is_edited_after_it_moves_into_the_log() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    // Each edit on a session an earlier release stored in one item: it moves into the log
    // first, then the edit is done.
    let ids = env.put_item_layout("old", 3, (3, 3), false).await;
    let reply = feedback("old", &ids[1], json!({"rating": "up"}))
        .call(&app)
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(env.item("old#head").await.is_some(), "migrated");
    let reply = select("old", &ids[2]).call(&app).await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    let reply = delete_run("old", &ids[0]).call(&app).await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    let (_, body) = get_history("old", &[]).call_json(&app).await;
    let runs = body["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{body}");
    assert_eq!(runs[0]["feedback"]["rating"], "up");
    // A regeneration and an edit on sessions of the item shape, one each.
    env.put_item_layout("regen", 2, (2, 2), false).await;
    let (status, body) = regenerate("regen").call_json(&app).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = get_history("regen", &[]).call_json(&app).await;
    let last = &body["runs"][1];
    assert_eq!(
        (last["input"].as_str(), last["version"].as_u64()),
        (Some("m1"), Some(2))
    );
    let ids = env.put_item_layout("edit", 2, (2, 2), false).await;
    let (status, body) = edit("edit", &ids[0], "m0, edited").call_json(&app).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = get_history("edit", &[]).call_json(&app).await;
    assert_eq!(body["runs"][0]["input"], "m0, edited", "{body}");
    assert_eq!(body["runs"].as_array().unwrap().len(), 1);
}

/// The session item's listing preview.
async fn preview(env: &TestEnv, session_id: &str) -> Option<String> {
    let items = items_with_prefix(env, session_id).await;
    let root = items
        .iter()
        .find(|i| i["id"].as_s().is_ok_and(|k| k == session_id))
        .expect("the session item");
    root.get("preview").map(|p| p.as_s().unwrap().to_owned())
}

#[tokio::test]
async fn deleting_the_first_message_takes_it_out_of_the_listing_preview() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let first = say(&app, "pv", "my password is hunter2, oops").await;
    let second = say(&app, "pv", "a second message").await;
    assert_eq!(
        preview(&env, "pv").await.as_deref(),
        Some("my password is hunter2, oops")
    );
    assert_eq!(delete_run("pv", &first).call(&app).await.status, 204);
    assert_eq!(
        preview(&env, "pv").await.as_deref(),
        Some("a second message"),
        "the first message left is the preview"
    );
    assert!(!all_texts(&env).await.iter().any(|t| t.contains("hunter2")));
    assert_eq!(delete_run("pv", &second).call(&app).await.status, 204);
    assert_eq!(preview(&env, "pv").await, None, "no message, no preview");
    assert!(!all_texts(&env)
        .await
        .iter()
        .any(|t| t.contains("a second message")));
    // A later turn's message becomes the preview again.
    say(&app, "pv", "a fresh start").await;
    assert_eq!(preview(&env, "pv").await.as_deref(), Some("a fresh start"));
}

// ---- refusals leave no trace (a hostile review's findings, 2026-12-03)

/// The head's fork entries, as stored.
async fn fork_entries(env: &TestEnv, session_id: &str) -> usize {
    let heads = items_with_prefix(env, &format!("{session_id}#head")).await;
    heads
        .first()
        .and_then(|h| h.get("forks"))
        .and_then(|f| f.as_ss().ok())
        .map_or(0, Vec::len)
}

fn owned(session_id: &str, owner: &str, body: Value) -> Req {
    let mut body = body;
    body["session_id"] = json!(session_id);
    body["owner"] = json!(owner);
    Req::http("POST", "/chat").body(body)
}

#[tokio::test]
async fn refused_regenerations_leave_no_trace() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    for message in ["I'm Ann", "hello"] {
        let (status, body) = owned("ann-s", "ann", json!({"message": message}))
            .call_json(&app)
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let last = path(&app, "ann-s").await.pop().unwrap().0;
    // Another owner's regenerations and edits, more than a place holds: each 403, none kept.
    for i in 0..17 {
        let asked = match i % 2 {
            0 => json!({"regenerate": true}),
            _ => json!({"edit": last, "message": "mine now"}),
        };
        let (status, body) = owned("ann-s", "mallory", asked).call_json(&app).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{i}: {body}"
        );
    }
    assert_eq!(fork_entries(&env, "ann-s").await, 0, "no fork was taken");
    assert_eq!(
        env.model.requests().await.len(),
        2,
        "the model was not asked"
    );
    let (status, body) = owned("ann-s", "ann", json!({"regenerate": true}))
        .call_json(&app)
        .await;
    assert_eq!(status, 200, "the owner's own regeneration: {body}");
    assert_eq!(versions(&app, "ann-s").await, vec![(1, 1), (2, 2)]);
}

#[tokio::test]
async fn keyed_retries_of_an_edit_and_a_regeneration_are_replayed() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    say(&app, "kr", "I'm Ann").await;
    let edited = say(&app, "kr", "hello").await;
    // An edit: its retry comes after the edited run left the path.
    let keyed_edit = || edit("kr", &edited, "I'm Bob").header("Idempotency-Key", "edit-1");
    let (status, first) = keyed_edit().call_json(&app).await;
    assert_eq!(status, 200, "{first}");
    let calls = env.model.requests().await.len();
    let again = keyed_edit().call(&app).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.json()["run_id"], first["run_id"]);
    // A regeneration retried 20 times: replayed each time, no version taken.
    let keyed = || regenerate("kr").header("Idempotency-Key", "regen-1");
    let (status, regenerated) = keyed().call_json(&app).await;
    assert_eq!(status, 200, "{regenerated}");
    let forks = fork_entries(&env, "kr").await;
    for i in 0..20 {
        let (status, body) = keyed().call_json(&app).await;
        assert_eq!(
            (status, &body["run_id"]),
            (200, &regenerated["run_id"]),
            "retry {i}: {body}"
        );
    }
    assert_eq!(
        fork_entries(&env, "kr").await,
        forks,
        "a replay takes no fork"
    );
    assert_eq!(
        env.model.requests().await.len(),
        calls + 1,
        "only the first regeneration asked"
    );
    // The key used for another request is refused, and takes nothing either.
    let (status, body) = regenerate("kr")
        .header("Idempotency-Key", "edit-1")
        .call_json(&app)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("idempotency_key_reused")),
        "{body}"
    );
    assert_eq!(fork_entries(&env, "kr").await, forks);
    // "hello", its edit and the edit's regeneration: three versions at the second place.
    assert_eq!(versions(&app, "kr").await, vec![(1, 1), (3, 3)]);
}

#[tokio::test]
async fn refused_edits_give_their_quota_count_back() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("QUOTA_TURNS_PER_MINUTE", "3")]).await;
    crate::quota::early_in_a_minute().await;
    let (status, body) = owned("q-e", "ann", json!({"message": "hi"}))
        .call_json(&app)
        .await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..3 {
        let (status, body) = owned("q-e", "ann", json!({"edit": "0123abcd", "message": "x"}))
            .call_json(&app)
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("run_not_found")),
            "{body}"
        );
    }
    for message in ["two", "three"] {
        let (status, body) = owned("q-e", "ann", json!({"message": message}))
            .call_json(&app)
            .await;
        assert_eq!(status, 200, "refused edits took no count: {body}");
    }
    let (status, body) = owned("q-e", "ann", json!({"message": "four"}))
        .call_json(&app)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("quota_exceeded")),
        "{body}"
    );
}

#[tokio::test]
async fn failed_regenerations_take_no_version() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    say(&app, "fv", "I'm Ann").await;
    say(&app, "fv", "hello").await;
    for i in 0..17 {
        env.model.script(json!([{"status": 400}])).await;
        let (status, body) = regenerate("fv").call_json(&app).await;
        assert_eq!(status, 502, "{i}: {body}");
    }
    // 15 more regenerations fill the place (16 versions), the next is refused.
    for i in 0..15 {
        let (status, body) = regenerate("fv").call_json(&app).await;
        assert_eq!(status, 200, "version {}: {body}", i + 2);
    }
    assert_eq!(versions(&app, "fv").await, vec![(1, 1), (16, 16)]);
    let (status, body) = regenerate("fv").call_json(&app).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("too_many_versions")),
        "{body}"
    );
    // A deleted version frees its place.
    let newest = path(&app, "fv").await.pop().unwrap().0;
    assert_eq!(delete_run("fv", &newest).call(&app).await.status, 204);
    let (status, body) = regenerate("fv").call_json(&app).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_keyed_retry_of_a_deleted_turn_is_a_new_turn() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    say(&app, "kd", "I'm Ann").await;
    let turn = || Req::chat("kd", "my secret");
    let regeneration = || regenerate("kd");
    for (key, asked) in [
        ("turn-1", &turn as &dyn Fn() -> Req),
        ("regen-1", &regeneration),
    ] {
        let keyed = || asked().header("Idempotency-Key", key);
        let (status, first) = keyed().call_json(&app).await;
        assert_eq!(status, 200, "{key}: {first}");
        let run_id = first["run_id"].as_str().unwrap().to_owned();
        assert_eq!(delete_run("kd", &run_id).call(&app).await.status, 204);
        let calls = crate::quota::chat_calls(&env.model.requests().await);
        let (status, again) = keyed().call_json(&app).await;
        assert_eq!(status, 200, "{key}: {again}");
        assert_ne!(again["run_id"], first["run_id"], "{key}: a new turn");
        assert_eq!(
            crate::quota::chat_calls(&env.model.requests().await),
            calls + 1
        );
        // ... whose own retry is replayed.
        let (status, third) = keyed().call_json(&app).await;
        assert_eq!(
            (status, &third["run_id"]),
            (200, &again["run_id"]),
            "{key}: {third}"
        );
    }
}

#[tokio::test]
async fn a_turn_racing_a_delete_does_not_show_the_deleted_run_again() {
    let env = TestEnv::new().await;
    let app = Arc::new(env.app().await);
    say(&app, "rv", "I'm Ann").await;
    let secret = say(&app, "rv", "my password is hunter2").await;
    // A slow turn reads the run, the delete and a quick turn pass it, then it settles the burst.
    env.model.script(json!([{"hang": 2.0}])).await;
    let slow = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { Req::chat("rv", "slow question").call_json(&app).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let deleted = delete_run("rv", &secret).call(&app).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    say(&app, "rv", "quick one").await;
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let leaked: Vec<String> = all_texts(&env)
        .await
        .into_iter()
        .filter(|t| t.contains("hunter2"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the deleted text is stored again: {leaked:?}"
    );
    assert_eq!(
        view_ids(&env, "rv").await.len(),
        3,
        "the view shows the three runs left"
    );
}

/// Every string attribute of one session's items.
async fn texts_of(env: &TestEnv, session_id: &str) -> Vec<String> {
    items_with_prefix(env, session_id)
        .await
        .iter()
        .flat_map(|item| item.values())
        .filter_map(|v| v.as_s().ok().cloned())
        .collect()
}

/// The turn that first folds slot 1 of a conversation of `say`s: "I'm Ann", "I'm Zelda", then
/// questions (the summary's `slot` says how far it folded).
async fn summary_slot(env: &TestEnv, session_id: &str) -> Option<u64> {
    items_with_prefix(env, &format!("{session_id}#"))
        .await
        .iter()
        .find(|i| i["id"].as_s().unwrap().ends_with("#summary"))
        .map(|i| i["slot"].as_n().unwrap().parse().unwrap())
}

#[tokio::test]
async fn a_fold_racing_a_delete_leaves_the_run_out_of_the_summary() {
    let env = TestEnv::new().await;
    let settings = [("HISTORY_TOKEN_BUDGET", "60"), ("SUMMARIZE", "true")];
    let app = Arc::new(env.app_with(&settings).await);
    // A conversation played alone first: which turn folds "I'm Zelda" in.
    say(&app, "alone", "I'm Ann").await;
    say(&app, "alone", "I'm Zelda").await;
    let mut folding = 0;
    while summary_slot(&env, "alone")
        .await
        .is_none_or(|slot| slot < 1)
    {
        folding += 1;
        assert!(folding < 20, "no fold of slot 1");
        say(&app, "alone", &format!("question {folding}, weather")).await;
    }
    // The same conversation, with that turn's reply and fold slow and the run deleted meanwhile.
    say(&app, "race", "I'm Ann").await;
    let zelda = say(&app, "race", "I'm Zelda").await;
    for i in 1..folding {
        say(&app, "race", &format!("question {i}, weather")).await;
    }
    env.model
        .script(json!([{"hang": 2.0}, {"hang": 2.0}]))
        .await;
    let slow = {
        let app = Arc::clone(&app);
        let message = format!("question {folding}, weather");
        tokio::spawn(async move { Req::chat("race", &message).call_json(&app).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(delete_run("race", &zelda).call(&app).await.status, 204);
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let leaked: Vec<String> = texts_of(&env, "race")
        .await
        .into_iter()
        .filter(|t| t.contains("Zelda"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the deleted run is folded in again: {leaked:?}"
    );
    // The next turns fold what is left.
    for i in 0..3 {
        say(&app, "race", &format!("later {i}, weather")).await;
    }
    assert!(
        summary_slot(&env, "race").await.is_some(),
        "a later step folds again"
    );
    assert!(!texts_of(&env, "race")
        .await
        .iter()
        .any(|t| t.contains("Zelda")));
}

#[tokio::test]
async fn a_regeneration_racing_the_delete_of_its_run_stores_nothing_of_it() {
    let env = TestEnv::new().await;
    let app = Arc::new(env.app().await);
    say(&app, "rd", "I'm Ann").await;
    let secret = say(&app, "rd", "my password is hunter2").await;
    env.model.script(json!([{"hang": 2.0}])).await;
    let regenerating = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { regenerate("rd").call_json(&app).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let deleted = delete_run("rd", &secret).call(&app).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    // The message it answered is gone: the regeneration is refused, and stores nothing.
    let (status, body) = regenerating.await.unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("run_not_found")),
        "{body}"
    );
    let leaked: Vec<String> = texts_of(&env, "rd")
        .await
        .into_iter()
        .filter(|t| t.contains("hunter2"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the deleted message is stored again: {leaked:?}"
    );
    assert_eq!(ids(&path(&app, "rd").await).len(), 1);
    // The conversation goes on.
    say(&app, "rd", "hello again").await;
}
