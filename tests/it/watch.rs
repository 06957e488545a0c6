//! End to end: the real Lambda runtime emulation (`cargo lambda watch`) over real HTTP.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{repo, TestEnv};

struct Watch(std::process::Child);

impl Drop for Watch {
    fn drop(&mut self) {
        // cargo lambda runs the function as its child; end the whole group.
        // `--` keeps the negative group id from being read as an option.
        let _ = Command::new("kill")
            .args(["-s", "TERM", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cargo_lambda_path() -> String {
    let venv_bin = repo().join(".venv/bin");
    format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[tokio::test]
async fn seed_turns_through_cargo_lambda_watch() {
    use std::os::unix::process::CommandExt;

    let env = TestEnv::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log =
        std::fs::File::create(std::env::temp_dir().join(format!("cargo-lambda-watch-{port}.log")))
            .expect("log file");
    let child = Command::new("cargo")
        .args(["lambda", "watch", "--ignore-changes", "--quiet"])
        .args([
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
            &port.to_string(),
        ])
        .args(["--bin", "session-chat"])
        .current_dir(repo())
        .env("PATH", cargo_lambda_path())
        .envs(env.env(&[]))
        .env("AWS_ENDPOINT_URL_DYNAMODB", &env.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("cargo lambda watch (run `make setup` first)");
    let _watch = Watch(child);

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/chat");
    // Wait for the emulator to listen; the first request also waits for the build.
    let started = Instant::now();
    let post = |body: Value| http.post(&url).json(&body).send();
    let first = loop {
        match post(json!({"session_id": "user-id-123", "message": "Hello my name is Collin."}))
            .await
        {
            Ok(response) => break response,
            Err(e) if started.elapsed() < Duration::from_secs(120) && e.is_connect() => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(e) => panic!("cargo lambda watch did not answer: {e}"),
        }
    };
    assert_eq!(first.status(), 200);
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["reply"], "Hello Collin! How can I assist you today?");

    let second = post(json!({"session_id": "user-id-123", "message": "What is my name?"}))
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["reply"], "Your name is Collin.");

    let bad = post(json!({"session_id": "no spaces", "message": "hi"}))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_session_id");

    let value = env.value("user-id-123").await.expect("stored");
    assert!(value.contains(r#""input": "What is my name?", "output": "Your name is Collin.""#));
}
