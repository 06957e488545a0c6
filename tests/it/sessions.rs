//! The session API (read, delete), expiry, and bounded prompts.

use serde_json::Value;

use crate::support::{items_with_prefix, now, Req, TestEnv};

#[tokio::test]
async fn a_session_can_be_read_and_deleted() {
    for kind in ["http-api", "rest-api"] {
        let env = TestEnv::new().await;
        let app = env.app().await;
        let (status, body) = Req::file(&format!("{kind}/get-session.json"))
            .call_json(&app)
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("session_not_found"))
        );

        let (_, first) = Req::file(&format!("{kind}/1-collin-hello.json"))
            .call_json(&app)
            .await;
        let (_, second) = Req::file(&format!("{kind}/2-collin-what-is-my-name.json"))
            .call_json(&app)
            .await;
        let (status, body) = Req::file(&format!("{kind}/get-session.json"))
            .call_json(&app)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["session_id"], "user-id-123");
        let runs = body["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0]["id"], first["run_id"]);
        assert_eq!(runs[0]["input"], "Hello my name is Collin.");
        assert_eq!(runs[1]["id"], second["run_id"]);
        assert_eq!(runs[1]["output"], "Your name is Collin.");

        let reply = Req::file(&format!("{kind}/delete-session.json"))
            .call(&app)
            .await;
        assert_eq!(reply.status, 204);
        let (status, _) = Req::file(&format!("{kind}/get-session.json"))
            .call_json(&app)
            .await;
        assert_eq!(status, 404);
        let (status, _) = Req::file(&format!("{kind}/delete-session.json"))
            .call_json(&app)
            .await;
        assert_eq!(status, 404, "deleting twice");
        assert_eq!(env.item_count().await, 0);
    }
}

#[tokio::test]
async fn reading_includes_the_archive_and_deleting_removes_it_and_receipts() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("MAX_ITEM_BYTES", "8192")]).await;
    let mut sent = Vec::new();
    for turn in 0..12 {
        let message = format!("turn {turn} {}", "x".repeat(1500));
        let key = format!("key-{turn}");
        let (status, body) = Req::chat("talk", &message)
            .header("Idempotency-Key", &key)
            .call_json(&app)
            .await;
        assert_eq!(status, 200);
        sent.push(body["run_id"].as_str().unwrap().to_owned());
    }
    let generation = env.item("talk").await.unwrap()["generation"]
        .as_s()
        .unwrap()
        .clone();
    let side = |kind: &'static str| {
        let prefix = format!("talk#{generation}#{kind}");
        let env = &env;
        async move { items_with_prefix(env, &prefix).await }
    };
    // Older runs beside the session item: pages (item layout) or slots (log layout).
    let (pages, slots) = (side("0").await, side("run#").await);
    assert!(!pages.is_empty() || slots.len() == 12, "pages or slots");
    assert_eq!(side("idem#").await.len(), 12);

    let (status, body) = Req::http("GET", "/sessions/talk").call_json(&app).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, sent, "every run, oldest first");

    let other = Req::chat("talk2", "hello").call_json(&app).await;
    assert_eq!(other.0, 200);
    let reply = Req::http("DELETE", "/sessions/talk").call(&app).await;
    assert_eq!(reply.status, 204);
    // Pages and parts are gone; receipts are unreachable (a new session has a new
    // generation) and expire within a day.
    let left = items_with_prefix(&env, "talk#").await;
    assert_eq!(left.len(), 12);
    for item in &left {
        assert!(item["id"].as_s().unwrap().contains("#idem#"));
        let expires: u64 = item["expires_at"].as_n().unwrap().parse().unwrap();
        assert!(expires <= now() + 24 * 60 * 60);
    }
    assert!(env.item("talk").await.is_none());
    let (status, body) = Req::chat("talk", "turn 0 again")
        .header("Idempotency-Key", "key-0")
        .call_json(&app)
        .await;
    assert_eq!(
        status, 200,
        "a new session does not see the old receipts: {body}"
    );
    assert!(body["reply"].as_str().unwrap().contains("turn 0 again"));
    assert!(
        env.item("talk2").await.is_some(),
        "other sessions untouched"
    );
}

#[tokio::test]
async fn session_paths_are_checked() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let (status, body) = Req::http("GET", "/sessions/a%20b").call_json(&app).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_session_id"))
    );
    let (status, body) = Req::http("GET", "/sessions/a%zz").call_json(&app).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let reply = Req::http("PUT", "/sessions/abc").call(&app).await;
    assert_eq!(reply.headers["allow"], "GET, DELETE, PATCH");
    assert_eq!(reply.status, 405);
    // Percent-encoded characters that session ids allow.
    Req::chat("user@example.com", "hi").call_json(&app).await;
    let (status, _) = Req::http("GET", "/sessions/user%40example.com")
        .call_json(&app)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sessions_expire_after_their_last_message() {
    let env = TestEnv::new().await;
    let app = env
        .app_with(&[("SESSION_TTL_DAYS", "7"), ("MAX_ITEM_BYTES", "8192")])
        .await;
    for turn in 0..8 {
        let (status, _) = Req::chat("ttl", &format!("{turn} {}", "y".repeat(1500)))
            .call_json(&app)
            .await;
        assert_eq!(status, 200);
    }
    let week = 7 * 24 * 60 * 60;
    let expires = |item: &std::collections::HashMap<
        String,
        aws_sdk_dynamodb::types::AttributeValue,
    >| { item["expires_at"].as_n().unwrap().parse::<u64>().unwrap() };
    let main = env.item("ttl").await.unwrap();
    assert!(expires(&main).abs_diff(now() + week) < 60);
    let archive = items_with_prefix(&env, "ttl#").await;
    assert!(!archive.is_empty());
    for chunk in &archive {
        assert!(
            expires(chunk) >= expires(&main) - 60,
            "an archive chunk would expire before its session"
        );
    }
    // Without SESSION_TTL_DAYS, nothing expires.
    let app = env.app().await;
    Req::chat("forever", "hi").call_json(&app).await;
    assert!(!env
        .item("forever")
        .await
        .unwrap()
        .contains_key("expires_at"));
}

#[tokio::test]
async fn prompt_tokens_stay_within_the_budget_in_steps() {
    const TURNS: usize = 40;
    let env = TestEnv::new().await;
    // The window alone (docs/context.md): summaries off.
    let app = env
        .app_with(&[("HISTORY_TOKEN_BUDGET", "600"), ("SUMMARIZE", "false")])
        .await;
    for turn in 0..TURNS {
        let message = format!("turn {turn}: {}", "words ".repeat(20));
        let (status, _) = Req::chat("budget", &message).call_json(&app).await;
        assert_eq!(status, 200);
    }
    // What the model was sent, turn by turn (its own token count, from the requests).
    let prompts: Vec<Vec<Value>> = env
        .model
        .requests()
        .await
        .iter()
        .map(|r| r["body"]["messages"].as_array().unwrap().clone())
        .collect();
    let sent: Vec<usize> = prompts
        .iter()
        .map(|p| p.iter().map(|m| m["content"].as_str().unwrap().len()).sum())
        .collect();
    eprintln!("prompt characters per turn: {sent:?}");
    let grown = sent[5] > sent[0] * 4;
    assert!(grown, "history is sent while under budget: {sent:?}");
    let tail = &sent[TURNS / 2..];
    let (lo, hi) = (tail.iter().min().unwrap(), tail.iter().max().unwrap());
    assert!(*hi <= 600 * 4 + 300, "within the budget: {hi}");
    assert!(
        *lo >= 600 * 4 / 2 - 600,
        "a step keeps half the budget: {lo}"
    );
    // The window moves in steps: most prompts are the one before plus a run.
    let breaks = prompts
        .windows(2)
        .filter(|p| !(p[1].len() == p[0].len() + 2 && p[1][..p[0].len()] == p[0][..]))
        .count();
    assert!((2..=TURNS / 3).contains(&breaks), "{breaks} prefix breaks");
    // Older runs stay stored.
    assert_eq!(env.stored_runs("budget").await.len(), TURNS);
}

#[tokio::test]
async fn summaries_carry_what_left_the_window() {
    let env = TestEnv::new().await;
    // A budget that holds about one run: the window alone would forget Zach and Matt.
    let app = env
        .app_with(&[("HISTORY_TOKEN_BUDGET", "40"), ("SUMMARIZE", "true")])
        .await;
    for name in ["3-zach-hello", "4-matt-joins"] {
        Req::file(&format!("http-api/{name}.json"))
            .call_json(&app)
            .await;
    }
    Req::chat("group-id-123", "Nice weather today.")
        .call_json(&app)
        .await;
    let (status, body) = Req::file("http-api/5-collin-who-is-here.json")
        .call_json(&app)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["reply"],
        "Hello Collin! So far, we have Zach, Matt, and now you. How can I assist you all today?"
    );
    // The summary: its own item in the log layout, beside `value` in the item layout.
    let item = env.item("group-id-123").await.unwrap();
    let summary = match item.get("summary") {
        Some(text) => text.as_s().unwrap().clone(),
        None => {
            let generation = item["generation"].as_s().unwrap();
            let summary = env
                .item(&format!("group-id-123#{generation}#summary"))
                .await;
            summary.expect("the summary item")["text"]
                .as_s()
                .unwrap()
                .clone()
        }
    };
    assert!(summary.starts_with("People: Zach, Matt."), "{summary}");
    // The memory JSON kept the seed's shape; the summary sits beside it.
    assert!(!env.value("group-id-123").await.unwrap().contains("summary"));

    // With SUMMARIZE=false, the same window forgets them.
    let env = TestEnv::new().await;
    let app = env
        .app_with(&[("HISTORY_TOKEN_BUDGET", "40"), ("SUMMARIZE", "false")])
        .await;
    for name in ["3-zach-hello", "4-matt-joins"] {
        Req::file(&format!("http-api/{name}.json"))
            .call_json(&app)
            .await;
    }
    Req::chat("group-id-123", "Nice weather today.")
        .call_json(&app)
        .await;
    let (_, body) = Req::file("http-api/5-collin-who-is-here.json")
        .call_json(&app)
        .await;
    assert_ne!(
        body["reply"],
        "Hello Collin! So far, we have Zach, Matt, and now you. How can I assist you all today?"
    );
}
