//! The helper processes a test needs, each on a free port it picks itself: the shared
//! DynamoDB-compatible server, the scripted model, the fault-injecting proxy.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The project's venv python (set up by `make setup`), else `python3`; `PYTHON` overrides both.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("PYTHON") {
        return p.into();
    }
    let venv = repo().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// A port that was free a moment ago (another process may take it before it is used).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A helper process that prints `PORT <n>` when ready and exits when our end of its stdin closes,
/// so it never outlives the test process.
pub struct Helper {
    child: Child,
    pub port: u16,
}

impl Helper {
    pub fn spawn(script: &str, args: &[&str]) -> Helper {
        let mut child = Command::new(python())
            .arg(repo().join("tools").join(script))
            .args(["--port", "0", "--exit-with-stdin"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {script} with {:?}: {e}", python()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read helper's port");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{script} did not start: {line:?}"));
        Helper { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One DynamoDB-compatible server for the whole test binary.
pub fn dynamodb_endpoint() -> String {
    static SERVER: OnceLock<Helper> = OnceLock::new();
    SERVER
        .get_or_init(|| Helper::spawn("dynamodb_local.py", &[]))
        .url()
}

/// The scripted model (a test double of an OpenAI-compatible server).
pub struct ScriptedModel(pub Helper);

impl ScriptedModel {
    pub fn start() -> Self {
        ScriptedModel(Helper::spawn("scripted_model.py", &[]))
    }

    /// With command-line options, e.g. `["--answer-delay", "1"]`.
    pub fn start_with(args: &[&str]) -> Self {
        ScriptedModel(Helper::spawn("scripted_model.py", args))
    }

    pub fn base_url(&self) -> String {
        format!("{}/v1", self.0.url())
    }

    /// Queues faults for the next model calls (see tools/scripted_model.py).
    pub async fn script(&self, steps: Value) {
        reqwest::Client::new()
            .post(format!("{}/_script", self.0.url()))
            .json(&serde_json::json!({ "steps": steps }))
            .send()
            .await
            .expect("script the model")
            .error_for_status()
            .expect("model accepted the script");
    }

    /// Every chat request the model has received, in order.
    pub async fn requests(&self) -> Vec<Value> {
        reqwest::Client::new()
            .get(format!("{}/_requests", self.0.url()))
            .send()
            .await
            .expect("ask the model")
            .json()
            .await
            .expect("requests as JSON")
    }
}

/// The fault-injecting proxy (tools/fault_proxy.py) in front of the shared DynamoDB server.
pub struct FaultProxy(pub Helper);

impl FaultProxy {
    pub fn start() -> Self {
        let upstream = dynamodb_endpoint();
        FaultProxy(Helper::spawn("fault_proxy.py", &["--upstream", &upstream]))
    }

    pub fn url(&self) -> String {
        self.0.url()
    }

    /// Arms fault rules (see tools/fault_proxy.py), e.g.
    /// `[{"op": "PutItem", "action": "delay", "seconds": 4}]`.
    pub async fn arm(&self, rules: Value) {
        reqwest::Client::new()
            .post(format!("{}/_faults", self.url()))
            .json(&serde_json::json!({ "rules": rules }))
            .send()
            .await
            .expect("arm the proxy")
            .error_for_status()
            .expect("proxy accepted the rules");
    }

    /// What the proxy did with each request, in order.
    pub async fn log(&self) -> Vec<Value> {
        reqwest::Client::new()
            .get(format!("{}/_log", self.url()))
            .send()
            .await
            .expect("ask the proxy")
            .json()
            .await
            .expect("log as JSON")
    }
}

/// Runs tools/concurrent_runtime.py with `args` on the debug build of the function, against the
/// test's table, with `vars` set, handing it `events`: its report (invocations and log lines).
pub fn run_runtime(
    env: &super::TestEnv,
    args: &[&str],
    vars: &[(&str, &str)],
    events: Vec<Value>,
) -> Value {
    use std::io::Write;
    let mut command = Command::new(python());
    command
        .arg(repo().join("tools/concurrent_runtime.py"))
        .args(["--binary", env!("CARGO_BIN_EXE_session-chat")])
        .args(args)
        .env("TABLE_NAME", &env.table)
        .env("AWS_ENDPOINT_URL_DYNAMODB", &env.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for (k, v) in vars {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("run the runtime driver");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(Value::Array(events).to_string().as_bytes())
        .expect("hand the driver its events");
    let output = child.wait_with_output().expect("the driver's output");
    assert!(output.status.success(), "the driver failed");
    serde_json::from_slice(&output.stdout).expect("the driver's report")
}
