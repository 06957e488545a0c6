//! Against a real LLM: SmolLM2-135M-Instruct on llama.cpp's llama-server (`make llm`,
//! `tools/local_llm.py`), one engine for the test binary, started on first use, and a recording
//! proxy of each test's own in front of it. These tests assert what reached the model and what
//! the engine reports (its reused prompt tokens), and a reply only where a fixed prompt at
//! temperature 0 makes it stable. Without the installed model they fail, saying to run
//! `make llm`. They run one at a time ([`alone`]): the engine has two slots, and a test's cache
//! figures must not depend on another test's requests.

use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};

use crate::support::{deltas, repo, run_runtime, Helper, Req, TestEnv};

/// Reply tokens the engine writes when a request sets none (session-chat sends no `max_tokens`).
const N_PREDICT: &str = "48";

/// The engine, shared: `tools/local_llm.py` starting llama-server (greedy sampling, 2 slots).
fn engine() -> &'static str {
    static ENGINE: OnceLock<(Helper, String)> = OnceLock::new();
    &ENGINE
        .get_or_init(|| {
            let (server, model) = installed();
            for path in [&server, &model] {
                assert!(
                    std::path::Path::new(path).exists(),
                    "the local model is not installed ({path} is missing): run `make llm`"
                );
            }
            let log = std::env::temp_dir().join(format!("llama-server-{}.log", std::process::id()));
            let helper = Helper::spawn(
                "local_llm.py",
                &[
                    "--n-predict",
                    N_PREDICT,
                    "--server-log",
                    log.to_str().unwrap(),
                ],
            );
            let url = helper.url();
            (helper, url)
        })
        .1
}

/// Where `make llm` installs llama-server and the GGUF (tools/llm/paths.sh).
fn installed() -> (String, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#". tools/llm/paths.sh && echo "$LLAMA_SERVER" && echo "$LLM_MODEL""#)
        .current_dir(repo())
        .output()
        .expect("bash");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines().map(str::to_owned);
    (lines.next().unwrap(), lines.next().unwrap())
}

/// A test's own recording proxy in front of the shared engine (and its launcher's proxy).
struct Llm(Helper);

impl Llm {
    fn start() -> Llm {
        Llm(Helper::spawn("local_llm.py", &["--upstream", engine()]))
    }

    fn base_url(&self) -> String {
        format!("{}/v1", self.0.url())
    }

    /// Every chat request that reached the engine through this proxy, with the engine's report.
    async fn requests(&self) -> Vec<Value> {
        reqwest::get(format!("{}/_requests", self.0.url()))
            .await
            .expect("ask the proxy")
            .json()
            .await
            .expect("requests as JSON")
    }

    /// The function's settings for this model, plus `extra`.
    fn vars<'a>(&'a self, url: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut vars = vec![
            ("OPENAI_BASE_URL", url),
            ("MODEL_ID", "SmolLM2-135M-Instruct"),
            ("MODEL_TIMEOUT_SECS", "120"),
        ];
        vars.extend_from_slice(extra);
        vars
    }
}

/// One real-model test at a time.
async fn alone() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

fn texts(messages: &Value) -> Vec<(String, String)> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or("").to_owned(),
                m["content"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_walkthrough_reaches_a_real_model_with_its_history() {
    let _alone = alone().await;
    let env = TestEnv::new().await;
    let llm = Llm::start();
    let url = llm.base_url();
    let app = env.app_with(&llm.vars(&url, &[])).await;
    let (status, first) = Req::file("http-api/1-collin-hello.json")
        .call_json(&app)
        .await;
    assert_eq!(status, 200, "{first}");
    let (status, second) = Req::file("http-api/2-collin-what-is-my-name.json")
        .call_json(&app)
        .await;
    assert_eq!(status, 200, "{second}");

    let requests = llm.requests().await;
    assert_eq!(requests.len(), 2, "one model call a turn");
    // The second turn's prompt carries the first run: its message and the model's own reply.
    let prompt = texts(&requests[1]["body"]["messages"]);
    let first_reply = first["reply"].as_str().unwrap().to_owned();
    assert!(!first_reply.trim().is_empty());
    assert_eq!(
        prompt,
        vec![
            ("user".to_owned(), "Hello my name is Collin.".to_owned()),
            ("assistant".to_owned(), first_reply.clone()),
            ("user".to_owned(), "What is my name?".to_owned()),
        ]
    );
    assert_eq!(
        requests[0]["reply"], first["reply"],
        "the engine's answer, stored"
    );
    assert_eq!(requests[1]["reply"], second["reply"]);
    // The engine counted the prompt, and reused the first turn's prompt from its cache.
    let usage = &requests[1]["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 10, "{usage}");
    let first_prompt = requests[0]["usage"]["prompt_tokens"].as_u64().unwrap();
    let reused = requests[1]["timings"]["cache_n"].as_u64().unwrap();
    assert!(
        reused >= first_prompt,
        "{reused} reused, the first prompt had {first_prompt}"
    );
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"].as_u64(),
        Some(reused),
        "the engine reports what it reused"
    );
    // What it says, at temperature 0, to this fixed prompt.
    println!("turn 1: {first_reply:?}\nturn 2: {:?}", second["reply"]);
    let stored = env.stored_runs("user-id-123").await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1]["output"], second["reply"]);
}

#[tokio::test]
async fn a_streamed_turn_from_a_real_model() {
    let _alone = alone().await;
    let env = TestEnv::new().await;
    let llm = Llm::start();
    let url = llm.base_url();
    let app = env.app_with(&llm.vars(&url, &[])).await;
    let reply = Req::chat("real-stream", "Write one sentence about the sea.")
        .sse()
        .call(&app)
        .await;
    assert_eq!(reply.status, 200);
    let events = reply.events();
    let pieces = events.iter().filter(|(name, _)| name == "delta").count();
    assert!(pieces >= 3, "the reply came in pieces: {events:?}");
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "done", "{events:?}");
    let text = deltas(&events);
    let requests = llm.requests().await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request["body"]["stream"], true);
    assert_eq!(request["body"]["stream_options"]["include_usage"], true);
    assert_eq!(
        request["reply"],
        text.as_str(),
        "the deltas are the engine's"
    );
    assert!(request["usage"]["completion_tokens"].as_u64().unwrap() >= 3);
    let stored = env.stored_runs("real-stream").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["output"], text.as_str());
    assert_eq!(done["run_id"], stored[0]["id"]);
}

/// The turns of a conversation, each a streamed event, handed to the real binary one after
/// another (tools/concurrent_runtime.py --sequential); its report (invocations and log lines).
fn converse(env: &TestEnv, vars: &[(&str, &str)], events: Vec<Value>) -> Value {
    let mut all = vec![("INVOKE_MODE", "RESPONSE_STREAM")];
    all.extend_from_slice(vars);
    let args = ["--workers", "1", "--sequential", "--timeout", "300"];
    run_runtime(env, &args, &all, events)
}

/// A log line's field, at the top or under `fields`.
fn field<'a>(line: &'a Value, name: &str) -> &'a Value {
    match line.get(name) {
        Some(v) => v,
        None => &line["fields"][name],
    }
}

#[tokio::test]
async fn a_long_conversation_keeps_its_prefix_in_the_engines_cache() {
    const TURNS: usize = 14;
    let _alone = alone().await;
    let env = TestEnv::new().await;
    let llm = Llm::start();
    let url = llm.base_url();
    // A small budget, so the window fills and steps within a few turns of short messages.
    let vars = llm.vars(&url, &[("HISTORY_TOKEN_BUDGET", "500")]);
    let events: Vec<Value> = (0..TURNS)
        .map(|i| {
            let message = match i {
                0 => "Hello my name is Collin.".to_owned(),
                i => format!(
                    "Note {i}: the garden needs water on day {i}, and the shed door squeaks."
                ),
            };
            Req::chat("real-long", &message).sse().event()
        })
        .collect();
    let report = converse(&env, &vars, events);
    for (i, inv) in report["invocations"].as_array().unwrap().iter().enumerate() {
        assert_eq!(inv["status"], 200, "turn {i}: {inv}");
    }
    let turns: Vec<&Value> = report["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| field(l, "message") == "chat turn")
        .collect();
    assert_eq!(turns.len(), TURNS, "one log line a turn");
    let requests = llm.requests().await;
    let replies: Vec<&Value> = requests.iter().filter(|r| r["summary"] != true).collect();
    let folds = requests.len() - replies.len();
    assert_eq!(replies.len(), TURNS);
    let stepped: Vec<usize> = (0..TURNS)
        .filter(|&i| field(turns[i], "window_stepped") == true)
        .collect();
    assert!(!stepped.is_empty(), "the window stepped");
    assert!(
        folds >= 1,
        "a step folds the runs that left into the summary"
    );

    let mut kept = 0;
    for i in 1..TURNS {
        let line = turns[i];
        let prompt = field(line, "prompt_tokens")
            .as_u64()
            .expect("prompt_tokens");
        let cached = field(line, "cached_tokens")
            .as_u64()
            .unwrap_or_else(|| panic!("the engine reports cached tokens: {line}"));
        // The log line's figures are the engine's own.
        let engine = &replies[i]["usage"];
        assert_eq!(
            prompt,
            engine["prompt_tokens"].as_u64().unwrap(),
            "turn {i}"
        );
        assert_eq!(
            cached,
            engine["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap(),
            "turn {i}"
        );
        assert!(cached <= prompt);
        let before = texts(&replies[i - 1]["body"]["messages"]);
        let now = texts(&replies[i]["body"]["messages"]);
        if now.len() == before.len() + 2 && now[..before.len()] == before[..] {
            // Between steps: the previous prompt, then its reply and the new message. The
            // engine reused at least the previous prompt (in fact that and the reply it wrote).
            kept += 1;
            let previous = field(turns[i - 1], "prompt_tokens").as_u64().unwrap();
            assert!(
                cached >= previous,
                "turn {i}: {cached} of {prompt} reused, the previous prompt had {previous}"
            );
        }
    }
    println!(
        "{TURNS} turns, {folds} folds, steps at {stepped:?}, {kept} prompts kept the previous"
    );
    for line in &turns {
        println!(
            "prompt {} cached {} stepped {}",
            field(line, "prompt_tokens"),
            field(line, "cached_tokens"),
            field(line, "window_stepped")
        );
    }
    assert!(kept >= TURNS / 2, "most prompts extend the previous one");
}
