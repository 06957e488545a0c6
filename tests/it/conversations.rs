//! Conversations as users and operators need them: a user's sessions listed newest first and
//! paged, erased completely in bounded batches, named; and griptape tables of any key schema.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, ScalarAttributeType};
use serde_json::{json, Value};
use session_chat::http::App;

use crate::support::{create_table_keyed, items_with_prefix, FaultProxy, Req, TestEnv};

async fn chat(app: &App, session: &str, message: &str, owner: Option<&str>) -> (u16, Value) {
    let mut body = json!({"session_id": session, "message": message});
    if let Some(owner) = owner {
        body["owner"] = owner.into();
    }
    Req::http("POST", "/chat").body(body).call_json(app).await
}

/// `GET /sessions` with `query`, as `sub` if given (a verified JWT's).
fn list_sessions(query: &[(&str, &str)], sub: Option<&str>) -> Req {
    let req = Req::http("GET", "/sessions").query(query);
    match sub {
        Some(sub) => req.sub(sub),
        None => req,
    }
}

/// Every listed session of `owner`, following cursors, `limit` a page.
async fn listing(app: &App, owner: Option<&str>, sub: Option<&str>, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let limit = limit.to_string();
        let mut query = vec![("limit", limit.as_str())];
        if let Some(owner) = owner {
            query.push(("owner", owner));
        }
        if let Some(c) = &cursor {
            query.push(("cursor", c.as_str()));
        }
        let (status, body) = list_sessions(&query, sub).call_json(app).await;
        assert_eq!(status, 200, "{body}");
        let page = body["sessions"].as_array().unwrap();
        assert!(page.len() <= limit.parse().unwrap());
        all.extend(page.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return all,
        }
    }
}

fn ids(listed: &[Value]) -> Vec<String> {
    listed
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn sessions_are_listed_newest_first_per_owner_across_pages() {
    let env = TestEnv::new().await;
    let proxy = FaultProxy::start();
    let app = env.app_via(&proxy, &[]).await;
    let mut alice = Vec::new();
    for i in 0..45 {
        let id = format!("a{i:02}");
        let (status, body) = chat(
            &app,
            &id,
            &format!("Hello {i}, plan my trip"),
            Some("alice"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        alice.push(id);
    }
    for i in 0..5 {
        chat(&app, &format!("b{i}"), "hi", Some("bob")).await;
    }
    for i in 0..3 {
        chat(&app, &format!("nobody{i}"), "hi", None).await;
    }
    // A second turn on an old session makes it the most recent.
    chat(&app, "a03", "and another thing", Some("alice")).await;
    let mut expected: Vec<String> = alice
        .iter()
        .rev()
        .filter(|s| *s != "a03")
        .cloned()
        .collect();
    expected.insert(0, "a03".into());

    let before = proxy.log().await.len();
    let listed = listing(&app, Some("alice"), None, 7).await;
    let queries = proxy.log().await[before..]
        .iter()
        .filter(|l| l["op"] == "Query")
        .count();
    assert_eq!(ids(&listed), expected);
    let a03 = listed.iter().find(|s| s["session_id"] == "a03").unwrap();
    assert_eq!(a03["runs"], 2);
    assert_eq!(a03["preview"], "Hello 3, plan my trip");
    assert!(a03["title"].is_null());
    assert!(a03["updated_at"].as_u64().unwrap() >= a03["created_at"].as_u64().unwrap());
    assert_eq!(ids(&listing(&app, Some("bob"), None, 50).await).len(), 5);
    assert!(listing(&app, Some("carol"), None, 50).await.is_empty());
    eprintln!(
        "listing: 45 sessions in pages of 7: {} pages, {queries} queries, none of another owner",
        45usize.div_ceil(7)
    );

    // Another owner's session is refused; listing needs an owner; bad input is a 400.
    let (status, body) = chat(&app, "a01", "mine now", Some("bob")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    for query in [
        vec![],
        vec![("owner", "a b")],
        vec![("owner", "alice"), ("limit", "0")],
    ] {
        let (status, _) = list_sessions(&query, None).call_json(&app).await;
        assert_eq!(status, 400, "{query:?}");
    }
    let (status, body) = list_sessions(&[("owner", "alice"), ("cursor", "zz")], None)
        .call_json(&app)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_cursor"))
    );
}

#[tokio::test]
async fn titles_name_conversations() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    chat(&app, "trip", "Where should I go in May?", Some("ada")).await;
    let patch = |title: Value| Req::http("PATCH", "/sessions/trip").body(json!({"title": title}));
    let (status, body) = patch("Lisbon in May ✈".into()).call_json(&app).await;
    assert_eq!(status, 200, "{body}");
    // A turn after the title keeps it.
    chat(&app, "trip", "And in June?", Some("ada")).await;
    let listed = listing(&app, Some("ada"), None, 10).await;
    assert_eq!(listed[0]["title"], "Lisbon in May ✈");
    assert_eq!(listed[0]["preview"], "Where should I go in May?");
    for bad in [
        json!(""),
        json!("  "),
        json!("a\nb"),
        json!("t".repeat(201)),
        json!(5),
    ] {
        let (status, _) = patch(bad.clone()).call_json(&app).await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, _) = Req::http("PATCH", "/sessions/nope")
        .body(json!({"title": "x"}))
        .call_json(&app)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn jwt_callers_list_and_erase_only_their_own() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("AUTH_MODE", "JWT")]).await;
    for (sub, n) in [("alice", 4), ("bob", 3)] {
        for i in 0..n {
            let body = json!({"session_id": format!("s{i}"), "message": format!("{sub} {i}")});
            let (status, reply) = Req::http("POST", "/chat")
                .body(body)
                .sub(sub)
                .call_json(&app)
                .await;
            assert_eq!(status, 200, "{reply}");
        }
    }
    assert_eq!(listing(&app, None, Some("alice"), 10).await.len(), 4);
    assert_eq!(listing(&app, None, Some("bob"), 10).await.len(), 3);
    // A JWT caller cannot name another owner.
    let (status, _) = list_sessions(&[("owner", "bob")], Some("alice"))
        .call_json(&app)
        .await;
    assert_eq!(status, 400);
    let status = Req::http("DELETE", "/sessions")
        .sub("alice")
        .call(&app)
        .await
        .status;
    assert_eq!(status, 204);
    assert!(listing(&app, None, Some("alice"), 10).await.is_empty());
    let bob = listing(&app, None, Some("bob"), 10).await;
    assert_eq!(bob.len(), 3);
    let (status, body) = Req::http("GET", "/sessions/s0")
        .sub("bob")
        .call_json(&app)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["runs"][0]["input"], "bob 0");
    let (status, _) = Req::http("GET", "/sessions/s0")
        .sub("alice")
        .call_json(&app)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_user_with_more_sessions_than_one_invocation_can_erase_is_erased_to_the_end() {
    const SESSIONS: usize = 120;
    let env = TestEnv::new().await;
    let extra = [("MAX_ITEM_BYTES", "4096")];
    let app = env.app_with(&extra).await;
    for i in 0..SESSIONS {
        let id = format!("u{i:03}");
        // Every tenth session has pages and a spilled run beside it.
        let turns = if i % 10 == 0 { 8 } else { 1 };
        for t in 0..turns {
            let (status, _) =
                chat(&app, &id, &format!("{t} {}", "e".repeat(900)), Some("erin")).await;
            assert_eq!(status, 200);
        }
    }
    chat(&app, "keep", "not erin's", Some("frank")).await;
    let stored = items_with_prefix(&env, "u").await.len();
    // Every store call of the erase answers 20 ms late: 120 sessions need more than the second
    // a 2.5 s invocation leaves the erase, however fast the machine.
    let proxy = FaultProxy::start();
    let slow = env.app_via(&proxy, &extra).await;
    proxy
        .arm(json!([{"op": "*", "action": "delay", "seconds": 0.02, "times": 0}]))
        .await;
    let started = Instant::now();
    let mut calls = 0;
    let mut deleted = 0;
    loop {
        calls += 1;
        assert!(calls < 100, "the erase does not finish");
        // A short invocation: 2.5 s, so one call cannot do it all.
        let reply = Req::http("DELETE", "/sessions")
            .query(&[("owner", "erin")])
            .deadline(Duration::from_millis(2500))
            .call(&slow)
            .await;
        let (status, text) = (reply.status, reply.text());
        match status {
            202 => {
                let body: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(body["remaining"], true);
                deleted += body["deleted"].as_u64().unwrap();
            }
            204 => break,
            other => panic!("{other}: {text}"),
        }
    }
    let took = started.elapsed();
    let store_calls = proxy.log().await.len();
    assert!(
        calls > 1,
        "one invocation was enough: the test proves nothing"
    );
    assert!(listing(&app, Some("erin"), None, 100).await.is_empty());
    assert!(
        items_with_prefix(&env, "u").await.is_empty(),
        "everything beside them is gone too"
    );
    assert_eq!(listing(&app, Some("frank"), None, 10).await.len(), 1);
    eprintln!(
        "erase: {SESSIONS} sessions ({stored} items) in {calls} calls of 2.5 s ({store_calls} store calls, each 20 ms late), {took:?} in all ({deleted} reported before the last call)"
    );
}

/// A table layout: its name, sort key (name, type, value), our settings, griptape's flags.
type Case<'a> = (
    &'a str,
    Option<(&'a str, ScalarAttributeType, &'a str)>,
    &'a [(&'a str, &'a str)],
    Vec<&'a str>,
);

#[tokio::test]
async fn griptape_tables_of_any_key_schema_are_shared_both_ways() {
    let env = TestEnv::new().await;
    let cases: [Case; 3] = [
        (
            "names",
            None,
            &[("PARTITION_KEY", "session"), ("VALUE_ATTRIBUTE", "memory")],
            vec!["--partition-key", "session", "--value-attribute", "memory"],
        ),
        (
            "sorted",
            Some(("sk", ScalarAttributeType::S, "conversation")),
            &[
                ("PARTITION_KEY", "pk"),
                ("SORT_KEY", "sk"),
                ("SORT_KEY_VALUE", "conversation"),
            ],
            vec![
                "--partition-key",
                "pk",
                "--sort-key",
                "sk",
                "--sort-key-value",
                "conversation",
            ],
        ),
        (
            "numbered",
            Some(("version_no", ScalarAttributeType::N, "1")),
            &[
                ("PARTITION_KEY", "pk"),
                ("SORT_KEY", "version_no"),
                ("SORT_KEY_VALUE", "1"),
                ("SORT_KEY_TYPE", "N"),
            ],
            vec![
                "--partition-key",
                "pk",
                "--sort-key",
                "version_no",
                "--sort-key-value",
                "1",
                "--sort-key-number",
            ],
        ),
    ];
    for (name, sort, settings, gt_keys) in cases {
        let table = format!("{}-{name}", env.table);
        let pk = settings[0].1;
        create_table_keyed(
            &env.dynamodb,
            &table,
            pk,
            sort.as_ref().map(|(k, t, _)| (*k, t.clone())),
        )
        .await;
        let mut extra = vec![("TABLE_NAME", table.as_str()), ("MAX_ITEM_BYTES", "4096")];
        extra.extend(settings.iter().copied());
        let app = env.app_with(&extra).await;

        // griptape first, then us, then griptape again: each sees the other's runs.
        crate::griptape::griptape_turn_in(
            &env,
            &table,
            "shared",
            "Hello my name is Collin.",
            &gt_keys,
        );
        let (status, body) = chat(&app, "shared", "What is my name?", Some("collin")).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["reply"], "Your name is Collin.", "{name}");
        chat(&app, "shared", "I'm Zach, hi", Some("collin")).await;
        let reply =
            crate::griptape::griptape_turn_in(&env, &table, "shared", "What is my name?", &gt_keys);
        assert_eq!(
            reply, "Your name is Zach.",
            "{name}: griptape read our runs"
        );
        let (status, body) = Req::http("GET", "/sessions/shared").call_json(&app).await;
        assert_eq!(status, 200);
        assert_eq!(body["runs"].as_array().unwrap().len(), 4, "{name}");

        // Every item we wrote follows the table's key schema, pages included.
        for i in 0..6 {
            chat(
                &app,
                "shared",
                &format!("{i} {}", "k".repeat(900)),
                Some("collin"),
            )
            .await;
        }
        let items = env
            .dynamodb
            .scan()
            .table_name(&table)
            .send()
            .await
            .unwrap()
            .items
            .unwrap();
        assert!(items.len() > 1, "{name}: pages beside the session");
        for item in &items {
            assert!(item[pk].as_s().is_ok(), "{name}");
            if let Some((sk, _, value)) = &sort {
                let stored = match &item[*sk] {
                    AttributeValue::S(v) | AttributeValue::N(v) => v.clone(),
                    other => panic!("{other:?}"),
                };
                assert_eq!(stored, *value, "{name}");
            }
        }
        assert_eq!(
            listing(&app, Some("collin"), None, 10).await.len(),
            1,
            "{name}"
        );
        let status = Req::http("DELETE", "/sessions/shared")
            .call(&app)
            .await
            .status;
        assert_eq!(status, 204);
        let left = env
            .dynamodb
            .scan()
            .table_name(&table)
            .send()
            .await
            .unwrap()
            .items
            .unwrap();
        assert!(left.is_empty(), "{name}: {} items left", left.len());
    }
}
