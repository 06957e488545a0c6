//! Interoperability with real griptape: items written by griptape 0.27, 0.30 and 1.x are
//! continued here in their own shape, and griptape 1.x continues what session-chat wrote.

use std::process::Command;

use serde_json::Value;

use crate::support::{repo, Req, TestEnv};

/// Puts a fixture item (written by real griptape, see tests/fixtures/griptape/) into the table.
pub async fn put_fixture(env: &TestEnv, shape: &str, session: &str) -> String {
    let path = repo().join(format!("tests/fixtures/griptape/{shape}/{session}.json"));
    let item: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let value = item["value"]["S"].as_str().unwrap().to_owned();
    env.put_value(session, &value).await;
    value
}

/// One turn by griptape 1.x itself (tools/griptape/continue_session.py); its reply.
pub fn griptape_turn(env: &TestEnv, session: &str, message: &str) -> String {
    griptape_turn_in(env, &env.table, session, message, &[])
}

/// The same in `table`, with the driver's key names as `continue_session.py` flags.
pub fn griptape_turn_in(
    env: &TestEnv,
    table: &str,
    session: &str,
    message: &str,
    keys: &[&str],
) -> String {
    let python = repo().join(".venv-griptape/bin/python");
    assert!(
        python.exists(),
        "griptape's venv is missing: run `make setup`"
    );
    let output = Command::new(python)
        .arg(repo().join("tools/griptape/continue_session.py"))
        .args([
            "--endpoint",
            &env.endpoint,
            "--table",
            table,
            "--session",
            session,
        ])
        .args(["--model-url", &env.model.base_url(), "--message", message])
        .args(keys)
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .expect("run griptape");
    assert!(
        output.status.success(),
        "griptape failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn stored_runs(value: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(value).unwrap()["runs"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn items_of_every_griptape_shape_are_continued_in_their_shape() {
    for shape in ["v0_27", "v0_30", "v1"] {
        let env = TestEnv::new().await;
        let before = put_fixture(&env, shape, "group-id-123").await;
        let app = env.app().await;
        let (status, body) = Req::chat("group-id-123", "And I'm Ada, who all is here?")
            .call_json(&app)
            .await;
        assert_eq!(status, 200, "{shape}: {body}");
        assert_eq!(
            body["reply"],
            "Hello Ada! So far, we have Zach, Matt, Collin, and now you. How can I assist you all today?",
            "{shape}: the history griptape stored reached the model"
        );
        let after = env.value("group-id-123").await.unwrap();
        // Griptape's runs the view shows are untouched, byte for byte (the view is the newest
        // within VIEW_BYTES), and the new run has their shape.
        let new_id = format!("\"id\": \"{}\"", body["run_id"].as_str().unwrap());
        let new_at = after[..after.find(&new_id).unwrap()].rfind('{').unwrap();
        let runs_at = after.find("\"runs\": [").unwrap() + "\"runs\": [".len();
        if new_at > runs_at {
            let theirs = after[runs_at..new_at].trim_end_matches(", ");
            assert!(before.contains(theirs), "{shape}: {theirs}");
        }
        let shown = stored_runs(&after);
        assert_eq!(shown.last().unwrap()["id"], body["run_id"], "{shape}");
        let history = crate::storage::all_runs(&app, "group-id-123", 50)
            .await
            .unwrap();
        assert_eq!(history.len(), 4, "{shape}");
        let griptapes = stored_runs(&before);
        for (kept, theirs) in history.iter().zip(&griptapes) {
            assert_eq!(kept["id"], theirs["id"], "{shape}");
        }
        let mut runs = griptapes.clone();
        runs.push(shown.last().unwrap().clone());
        let keys =
            |run: &Value| -> Vec<String> { run.as_object().unwrap().keys().cloned().collect() };
        let (old_keys, new_keys) = (keys(&stored_runs(&before)[0]), keys(&runs[3]));
        assert_eq!(
            new_keys, old_keys,
            "{shape}: the new run has griptape's keys, in order"
        );
        assert_eq!(
            runs[3]["input"].is_object(),
            runs[0]["input"].is_object(),
            "{shape}"
        );
    }
}

#[tokio::test]
async fn griptape_and_session_chat_take_turns_on_one_session() {
    let env = TestEnv::new().await;
    put_fixture(&env, "v1", "user-id-123").await;
    let app = env.app().await;
    // griptape wrote two runs; session-chat continues...
    let (status, body) = Req::chat("user-id-123", "What is my name?")
        .call_json(&app)
        .await;
    assert_eq!(
        (status, body["reply"].as_str()),
        (200, Some("Your name is Collin."))
    );
    // ...griptape continues session-chat's item...
    assert_eq!(
        griptape_turn(&env, "user-id-123", "What is my name?"),
        "Your name is Collin."
    );
    // ...and session-chat reads all of it again.
    let (status, body) = Req::chat("user-id-123", "Who am I?").call_json(&app).await;
    assert_eq!(
        (status, body["reply"].as_str()),
        (200, Some("Your name is Collin."))
    );
    let runs = crate::storage::all_runs(&app, "user-id-123", 50)
        .await
        .unwrap();
    assert_eq!(runs.len(), 5);
    let shown = stored_runs(&env.value("user-id-123").await.unwrap());
    assert_eq!(shown.last().unwrap()["id"], runs[4]["id"]);
}

#[tokio::test]
async fn sessions_written_in_griptape_shape_are_read_by_griptape() {
    let env = TestEnv::new().await;
    let app = env.app_with(&[("MEMORY_FORMAT", "griptape")]).await;
    let (status, _) = Req::chat("user-id-123", "Hello my name is Collin.")
        .call_json(&app)
        .await;
    assert_eq!(status, 200);
    let value = env.value("user-id-123").await.unwrap();
    assert!(
        value.starts_with(r#"{"runs": [{"type": "Run", "id": ""#),
        "{value}"
    );
    assert!(value.ends_with(r#"], "metadata": {}}"#), "{value}");
    assert_eq!(
        griptape_turn(&env, "user-id-123", "What is my name?"),
        "Your name is Collin."
    );
    // Griptape kept our artifact ids when it rewrote the item.
    let after = env.value("user-id-123").await.unwrap();
    let ours = &stored_runs(&value)[0];
    let theirs = &stored_runs(&after)[0];
    assert_eq!(theirs["id"], ours["id"]);
    assert_eq!(theirs["input"]["id"], ours["input"]["id"]);
    assert_eq!(theirs["output"]["name"], ours["output"]["name"]);
}
