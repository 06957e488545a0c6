//! The seed's walkthrough, end to end through the handler, and what it stores.

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;

use crate::support::{Req, TestEnv};

/// The seed's five messages: (event name, session, expected reply).
const SEED: [(&str, &str, &str); 5] = [
    (
        "1-collin-hello",
        "user-id-123",
        "Hello Collin! How can I assist you today?",
    ),
    (
        "2-collin-what-is-my-name",
        "user-id-123",
        "Your name is Collin.",
    ),
    (
        "3-zach-hello",
        "group-id-123",
        "Hello Zach! How can I assist you today?",
    ),
    (
        "4-matt-joins",
        "group-id-123",
        "Hello Matt! Nice to meet you too. How can I help you today?",
    ),
    (
        "5-collin-who-is-here",
        "group-id-123",
        "Hello Collin! So far, we have Zach, Matt, and now you. How can I assist you all today?",
    ),
];

/// The seed's stored `value` for the user session, with its run ids as placeholders.
const SEED_USER_VALUE: &str = r#"{"type": "ConversationMemory", "runs": [{"type": "Run", "id": "<ID0>", "input": "Hello my name is Collin.", "output": "Hello Collin! How can I assist you today?"}, {"type": "Run", "id": "<ID1>", "input": "What is my name?", "output": "Your name is Collin."}], "max_runs": null}"#;

/// The seed's stored `value` for the group session.
const SEED_GROUP_VALUE: &str = r#"{"type": "ConversationMemory", "runs": [{"type": "Run", "id": "<ID0>", "input": "Hello my name is Zach.", "output": "Hello Zach! How can I assist you today?"}, {"type": "Run", "id": "<ID1>", "input": "And I'm Matt", "output": "Hello Matt! Nice to meet you too. How can I help you today?"}, {"type": "Run", "id": "<ID2>", "input": "And I'm Collin, who all is here?", "output": "Hello Collin! So far, we have Zach, Matt, and now you. How can I assist you all today?"}], "max_runs": null}"#;

async fn play_seed(kind: &str) {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let mut run_ids: Vec<(String, String)> = Vec::new();
    for (name, session, expected) in SEED {
        let (status, body) = Req::file(&format!("{kind}/{name}.json"))
            .call_json(&app)
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["reply"], expected, "{name}");
        assert_eq!(body["session_id"], session);
        let run_id = body["run_id"].as_str().expect("run_id").to_owned();
        assert_eq!(run_id.len(), 32);
        assert!(run_id.chars().all(|c| c.is_ascii_hexdigit()));
        run_ids.push((session.to_owned(), run_id));
    }

    // The stored items are the seed's, byte for byte, but for the run ids we returned.
    for (session, template) in [
        ("user-id-123", SEED_USER_VALUE),
        ("group-id-123", SEED_GROUP_VALUE),
    ] {
        let mut expected = template.to_owned();
        for (i, (_, id)) in run_ids.iter().filter(|(s, _)| s == session).enumerate() {
            expected = expected.replace(&format!("<ID{i}>"), id);
        }
        assert_eq!(env.value(session).await.as_deref(), Some(expected.as_str()));
        let item = env.item(session).await.expect("item");
        assert_eq!(item["id"].as_s().unwrap(), session);
        assert!(
            item["version"].as_n().is_ok(),
            "a version sits beside value"
        );
    }
    // Beside the recipe's two items, only our side items, each keyed under its session.
    assert_eq!(env.session_count().await, 2);
    for key in env.keys().await {
        assert!(
            key.starts_with("user-id-123") || key.starts_with("group-id-123"),
            "{key}"
        );
    }
}

#[tokio::test]
async fn seed_walkthrough_over_http_api_events() {
    play_seed("http-api").await;
}

#[tokio::test]
async fn seed_walkthrough_over_rest_api_events() {
    play_seed("rest-api").await;
}

#[tokio::test]
async fn the_second_prompt_carries_the_first_run() {
    let env = TestEnv::new().await;
    let app = env
        .app_with(&[
            ("SYSTEM_PROMPT", "You are terse."),
            ("OPENAI_API_KEY", "sk-test-key"),
        ])
        .await;
    Req::file("http-api/1-collin-hello.json")
        .call_json(&app)
        .await;
    Req::file("http-api/2-collin-what-is-my-name.json")
        .call_json(&app)
        .await;

    let requests = env.model.requests().await;
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1]["authorization"], "Bearer sk-test-key");
    assert_eq!(requests[1]["body"]["model"], "scripted");
    let messages: Vec<(String, String)> = requests[1]["body"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().into(),
                m["content"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("system", "You are terse."),
        ("user", "Hello my name is Collin."),
        ("assistant", "Hello Collin! How can I assist you today?"),
        ("user", "What is my name?"),
    ];
    assert_eq!(messages.len(), expected.len());
    for ((role, content), (want_role, want_content)) in messages.iter().zip(expected) {
        assert_eq!((role.as_str(), content.as_str()), (want_role, want_content));
    }
}

#[tokio::test]
async fn base64_encoded_bodies_are_decoded() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let (status, body) = Req::file("http-api/base64-body.json").call_json(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "Hello Ada! How can I assist you today?");
    assert!(env.value("b64-session").await.is_some());
}

#[tokio::test]
async fn max_runs_keeps_the_newest_runs() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("MAX_RUNS", "2")]).await;
    for name in ["3-zach-hello", "4-matt-joins", "5-collin-who-is-here"] {
        let (status, _) = Req::file(&format!("http-api/{name}.json"))
            .call_json(&app)
            .await;
        assert_eq!(status, 200);
    }
    let value: Value = serde_json::from_str(&env.value("group-id-123").await.unwrap()).unwrap();
    assert_eq!(value["max_runs"], 2);
    let inputs: Vec<&str> = value["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["input"].as_str().unwrap())
        .collect();
    assert_eq!(inputs, ["And I'm Matt", "And I'm Collin, who all is here?"]);
}

#[tokio::test]
async fn items_written_by_the_python_original_are_continued() {
    let env = TestEnv::new().await;
    // As griptape wrote it: no version attribute.
    env.put_value(
        "user-id-123",
        r#"{"type": "ConversationMemory", "runs": [{"type": "Run", "id": "8c403fb92b134b14a0af8847e52e6212", "input": "Hello my name is Collin.", "output": "Hello Collin! How can I assist you today?"}], "max_runs": null}"#,
    )
    .await;
    let app = env.app().await;
    let (status, body) = Req::file("http-api/2-collin-what-is-my-name.json")
        .call_json(&app)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["reply"], "Your name is Collin.");
    let value = env.value("user-id-123").await.unwrap();
    assert!(value.starts_with(r#"{"type": "ConversationMemory", "runs": [{"type": "Run", "id": "8c403fb92b134b14a0af8847e52e6212""#));
    assert_eq!(
        env.item("user-id-123").await.unwrap()["version"]
            .as_n()
            .unwrap(),
        "1"
    );
}

#[tokio::test]
async fn attributes_other_tools_keep_on_the_item_survive_saves() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let (status, _) = Req::file("http-api/1-collin-hello.json")
        .call_json(&app)
        .await;
    assert_eq!(status, 200);
    // Another tool tags the item (bumping the version, as a careful writer does).
    env.dynamodb
        .update_item()
        .table_name(&env.table)
        .key("id", AttributeValue::S("user-id-123".into()))
        .update_expression("SET team = :t, #v = #v + :one")
        .expression_attribute_names("#v", "version")
        .expression_attribute_values(":t", AttributeValue::S("support".into()))
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .send()
        .await
        .expect("tag the item");
    let (status, body) = Req::file("http-api/2-collin-what-is-my-name.json")
        .call_json(&app)
        .await;
    assert_eq!(status, 200, "{body}");
    let item = env.item("user-id-123").await.unwrap();
    assert_eq!(item["team"].as_s().unwrap(), "support");
    // The tool's bump is kept (the log layout bumps only on structural writes).
    let version: u64 = item["version"].as_n().unwrap().parse().unwrap();
    assert!(version >= 2, "{version}");
    let created = item["created_at"].as_n().unwrap();
    assert!(item["updated_at"].as_n().unwrap() >= created);
    assert_eq!(
        env.value("user-id-123")
            .await
            .unwrap()
            .matches("\"type\": \"Run\"")
            .count(),
        2
    );
}

#[tokio::test]
async fn the_session_command_plays_the_seed() {
    let env = TestEnv::new().await;
    let run = |message: &str, session: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_session"))
            .args([message, session])
            .envs(env.env(&[]))
            .env("AWS_ENDPOINT_URL_DYNAMODB", &env.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .expect("run session");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    assert_eq!(
        run("Hello my name is Collin.", "user-id-123"),
        "Hello Collin! How can I assist you today?\n"
    );
    assert_eq!(
        run("What is my name?", "user-id-123"),
        "Your name is Collin.\n"
    );

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_session"))
        .args(["hi", "not a valid id"])
        .envs(env.env(&[]))
        .output()
        .expect("run session");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("session_id may only contain"));
}
