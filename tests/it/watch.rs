//! End to end: the real Lambda runtime emulation (`cargo lambda watch`) over real HTTP, answering
//! buffered (as an HTTP API integration) and in Lambda's streaming format (as a streaming REST
//! integration or a function URL in `RESPONSE_STREAM` mode).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{deltas, free_port, repo, sse_events, TestEnv};

struct Watch {
    child: std::process::Child,
    port: u16,
}

impl Drop for Watch {
    fn drop(&mut self) {
        // cargo lambda runs the function as its child; end the whole group.
        // `--` keeps the negative group id from being read as an option.
        let _ = Command::new("kill")
            .args(["-s", "TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// `cargo lambda watch` on a free port with the test's environment plus `extra`. The port can be
/// taken between our finding it free and cargo lambda binding it; cargo lambda then exits at once
/// (status 0, no message), and it starts again on another port.
fn watch(env: &TestEnv, extra: &[(&str, &str)]) -> Watch {
    const ATTEMPTS: usize = 5;
    for _ in 0..ATTEMPTS {
        let mut watch = spawn_watch(env, extra, free_port());
        if watch.listening() {
            return watch;
        }
    }
    panic!("cargo lambda watch did not start on any of {ATTEMPTS} free ports");
}

fn spawn_watch(env: &TestEnv, extra: &[(&str, &str)], port: u16) -> Watch {
    use std::os::unix::process::CommandExt;

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
        .envs(env.env(extra))
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
    Watch { child, port }
}

impl Watch {
    /// Whether it came up: its port accepts connections and it still runs well after cargo
    /// lambda would have exited over a taken port (~50 ms), so the listener is its own.
    fn listening(&mut self) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if self.exited() {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                std::thread::sleep(Duration::from_millis(500));
                return !self.exited();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn exited(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("cargo lambda's status")
            .is_some()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The first request, retried until the emulator listens (it also waits for the build).
    async fn first(&self, http: &reqwest::Client, body: &Value) -> reqwest::Response {
        let started = Instant::now();
        loop {
            match http.post(self.url("/chat")).json(body).send().await {
                Ok(response) => return response,
                Err(e) if started.elapsed() < Duration::from_secs(120) && e.is_connect() => {
                    tokio::time::sleep(Duration::from_millis(250)).await
                }
                Err(e) => panic!("cargo lambda watch did not answer: {e}"),
            }
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

#[tokio::test]
async fn seed_turns_through_cargo_lambda_watch() {
    let env = TestEnv::new().await;
    let watch = watch(&env, &[]);
    let http = client();
    let post = |body: Value| http.post(watch.url("/chat")).json(&body).send();
    let first = watch
        .first(
            &http,
            &json!({"session_id": "user-id-123", "message": "Hello my name is Collin."}),
        )
        .await;
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

/// A streamed turn read as it arrives: each event with the time it came, from sending.
async fn stream_turn(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
) -> (reqwest::StatusCode, Vec<(Duration, String, Value)>) {
    let sent = Instant::now();
    let mut response = http
        .post(url)
        .header("accept", "text/event-stream")
        .json(body)
        .send()
        .await
        .expect("streamed turn");
    let status = response.status();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (mut text, mut events) = (String::new(), Vec::new());
    while let Some(chunk) = response.chunk().await.expect("the stream reads to its end") {
        text.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        // Whole events only; a partial one waits for its next chunk.
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            for (name, data) in sse_events(&block) {
                events.push((sent.elapsed(), name, data));
            }
        }
    }
    (status, events)
}

#[tokio::test]
async fn streamed_turns_through_cargo_lambda_watch() {
    let env = TestEnv::new().await;
    let watch = watch(&env, &[("INVOKE_MODE", "RESPONSE_STREAM")]);
    let http = client();

    // The JSON API is unchanged under the streaming runtime (the first request waits for the
    // build).
    let first = watch
        .first(
            &http,
            &json!({"session_id": "s", "message": "Hello my name is Collin."}),
        )
        .await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "application/json");
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["reply"], "Hello Collin! How can I assist you today?");
    let bad = http
        .post(watch.url("/chat"))
        .header("accept", "text/event-stream")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["content-type"], "application/json");
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    let read = http.get(watch.url("/sessions/s")).send().await.unwrap();
    assert_eq!(read.status(), 200);
    let body: Value = read.json().await.unwrap();
    assert_eq!(body["runs"].as_array().map(Vec::len), Some(1));

    // A streamed turn: words arrive over time, not at once, and add up to the stored reply.
    env.model
        .script(json!([{"first_token_delay": 0.3, "word_delay": 0.06}]))
        .await;
    let message = json!({"session_id": "s", "message": "And I'm Matt, who all is here?"});
    let (status, events) = stream_turn(&http, &watch.url("/chat"), &message).await;
    assert_eq!(status, 200);
    let named: Vec<(String, Value)> = events
        .iter()
        .map(|(_, n, d)| (n.clone(), d.clone()))
        .collect();
    let text = deltas(&named);
    assert_eq!(
        text,
        "Hello Matt! So far, we have Collin, and now you. How can I assist you all today?"
    );
    let (done_at, last, done) = events.last().unwrap();
    assert_eq!(last, "done");
    assert_eq!(done["reply"], text.as_str());
    let delta_times: Vec<Duration> = events
        .iter()
        .filter(|(_, n, _)| n == "delta")
        .map(|(t, _, _)| *t)
        .collect();
    assert!(delta_times.len() >= 10, "{} deltas", delta_times.len());
    let spread = delta_times[delta_times.len() - 1] - delta_times[0];
    assert!(
        spread >= Duration::from_millis(300),
        "deltas arrive spread over time, not at once: {delta_times:?}"
    );
    assert!(*done_at >= delta_times[delta_times.len() - 1]);
    let value = env.value("s").await.expect("stored");
    assert!(value.contains(&format!(
        r#""id": "{}", "input": "And I'm Matt, who all is here?", "output": "{text}""#,
        done["run_id"].as_str().unwrap()
    )));

    // The model failing mid-stream, and its stream cut mid-way: an error event, nothing stored.
    for step in [json!({"error_after": 3}), json!({"cut_after": 3})] {
        env.model.script(json!([step])).await;
        let message = json!({"session_id": "s2", "message": "Hello my name is Ada."});
        let (status, events) = stream_turn(&http, &watch.url("/chat"), &message).await;
        assert_eq!(status, 200, "{step}");
        let (_, last, data) = events.last().unwrap();
        assert_eq!(
            (last.as_str(), data["error"]["code"].as_str()),
            ("error", Some("model_error")),
            "{step}"
        );
        assert!(env.item("s2").await.is_none(), "{step}: nothing stored");
    }

    // A client that goes away after the first delta: the turn runs on, and its run is saved.
    env.model
        .script(json!([{"first_token_delay": 0.1, "word_delay": 0.1}]))
        .await;
    let mut response = http
        .post(watch.url("/chat"))
        .header("accept", "text/event-stream")
        .header("idempotency-key", "gone-1")
        .json(&json!({"session_id": "s4", "message": "Hello my name is Eve."}))
        .send()
        .await
        .unwrap();
    // `started` first, then the deltas: read until the first delta.
    let mut seen = String::new();
    while !seen.contains("event: delta") {
        let chunk = response.chunk().await.unwrap().expect("a first delta");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(seen.starts_with("event: started"), "{seen}");
    drop(response);
    let started = Instant::now();
    let stored = loop {
        if let Some(value) = env.value("s4").await {
            break value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the run was not saved"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(stored.contains(r#""output": "Hello Eve! How can I assist you today?""#));
    let again = http
        .post(watch.url("/chat"))
        .header("idempotency-key", "gone-1")
        .json(&json!({"session_id": "s4", "message": "Hello my name is Eve."}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");

    // A keyed retry of the streamed turn: the saved reply, as one delta and done.
    let keyed = |key: &'static str| {
        http.post(watch.url("/chat"))
            .header("accept", "text/event-stream")
            .header("idempotency-key", key)
            .json(&json!({"session_id": "s3", "message": "Hello my name is Zach."}))
            .send()
    };
    let first = sse_events(&keyed("k-1").await.unwrap().text().await.unwrap());
    let again = keyed("k-1").await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again = sse_events(&again.text().await.unwrap());
    let names: Vec<&str> = again.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["delta", "done"]);
    assert_eq!(again.last(), first.last());
}
