//! Spawns what the tests need on free ports and offers a few helpers to drive the handler.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use lambda_http::lambda_runtime::Context;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::Value;
use session_chat::config::Config;
use session_chat::http::App;

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

pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    session_chat::aws_defaults()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
        .load()
        .await
}

/// The scripted model (a test double of an OpenAI-compatible server).
pub struct ScriptedModel(pub Helper);

impl ScriptedModel {
    pub fn start() -> Self {
        ScriptedModel(Helper::spawn("scripted_model.py", &[]))
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

/// A fresh table and model for one test.
pub struct TestEnv {
    pub endpoint: String,
    pub table: String,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub model: ScriptedModel,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        // The function's logs, shown with a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("info")
            .try_init();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let endpoint = dynamodb_endpoint();
        let table = format!(
            "sessions-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk_config(&endpoint).await);
        create_table(&dynamodb, &table).await;
        TestEnv {
            endpoint,
            table,
            dynamodb,
            model: ScriptedModel::start(),
        }
    }

    /// The function's environment for this test, plus `extra`.
    pub fn env(&self, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = [
            ("TABLE_NAME", self.table.clone()),
            ("OPENAI_BASE_URL", self.model.base_url()),
            ("MODEL_ID", "scripted".to_owned()),
            ("OWNER_INDEX", "by_owner".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        env
    }

    pub fn config(&self, extra: &[(&str, &str)]) -> Config {
        let env = self.env(extra);
        Config::from_lookup(|k| env.get(k).cloned()).expect("valid test config")
    }

    pub async fn app(&self) -> App {
        self.app_with(&[]).await
    }

    pub async fn app_with(&self, extra: &[(&str, &str)]) -> App {
        session_chat::build_app_with(&self.config(extra), &sdk_config(&self.endpoint).await)
            .await
            .expect("build app")
    }

    pub async fn item(&self, session_id: &str) -> Option<HashMap<String, AttributeValue>> {
        self.dynamodb
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(session_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("get item")
            .item
    }

    /// The stored `value` JSON of a session.
    pub async fn value(&self, session_id: &str) -> Option<String> {
        self.item(session_id)
            .await
            .map(|item| item["value"].as_s().expect("value is a string").clone())
    }

    pub async fn item_count(&self) -> usize {
        self.dynamodb
            .scan()
            .table_name(&self.table)
            .send()
            .await
            .expect("scan")
            .items
            .unwrap_or_default()
            .len()
    }

    pub async fn put_value(&self, session_id: &str, value: &str) {
        self.dynamodb
            .put_item()
            .table_name(&self.table)
            .item("id", AttributeValue::S(session_id.to_owned()))
            .item("value", AttributeValue::S(value.to_owned()))
            .send()
            .await
            .expect("put item");
    }
}

pub async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str) {
    client
        .create_table()
        .table_name(table)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .expect("key schema"),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute definition"),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("owner_key")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute definition"),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("active_ms")
                .attribute_type(ScalarAttributeType::N)
                .build()
                .expect("attribute definition"),
        )
        .global_secondary_indexes(owner_index())
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
}

/// The owner index, as template.yaml declares it.
pub fn owner_index() -> aws_sdk_dynamodb::types::GlobalSecondaryIndex {
    use aws_sdk_dynamodb::types::{GlobalSecondaryIndex, Projection, ProjectionType};
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key schema")
    };
    GlobalSecondaryIndex::builder()
        .index_name("by_owner")
        .key_schema(key("owner_key", KeyType::Hash))
        .key_schema(key("active_ms", KeyType::Range))
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::Include)
                .set_non_key_attributes(Some(
                    [
                        "session_id",
                        "created_at",
                        "updated_at",
                        "run_count",
                        "preview",
                        "title",
                        "tombstone",
                    ]
                    .map(String::from)
                    .to_vec(),
                ))
                .build(),
        )
        .build()
        .expect("owner index")
}

/// The text of an event file under `events/`.
pub fn event_json(name: &str) -> Value {
    let path = repo().join("events").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("event is JSON")
}

pub fn request(event: &Value) -> Request {
    lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway event")
}

/// An event file as a request.
pub fn event(name: &str) -> Request {
    request(&event_json(name))
}

/// The seed's first HTTP API event with another body.
pub fn with_body(body: &str) -> Request {
    let mut event = event_json("http-api/1-collin-hello.json");
    event["body"] = Value::String(body.to_owned());
    request(&event)
}

/// A request to `method path` with `body`, shaped as an HTTP API event.
pub fn http_request(method: &str, path: &str, body: &str) -> Request {
    let mut event = event_json("http-api/1-collin-hello.json");
    event["rawPath"] = path.into();
    event["routeKey"] = format!("{method} {path}").into();
    event["requestContext"]["http"]["method"] = method.into();
    event["requestContext"]["http"]["path"] = path.into();
    event["body"] = body.into();
    request(&event)
}

/// Gives the request a Lambda context whose deadline is `remaining` from now.
pub fn with_deadline(request: Request, remaining: Duration) -> Request {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let mut context = Context::default();
    context.request_id = "test-request".into();
    context.deadline = now_ms + remaining.as_millis() as u64;
    request.with_lambda_context(context)
}

/// Status and JSON body of a response.
pub fn parts(response: Response<Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "every response is JSON"
    );
    let body = match response.body() {
        Body::Text(t) => t.clone(),
        Body::Binary(b) => String::from_utf8(b.clone()).expect("UTF-8 body"),
        _ => String::new(),
    };
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("body {body:?}: {e}"));
    (status, json)
}

/// Sends a request and returns status and JSON body.
pub async fn call(app: &App, request: Request) -> (u16, Value) {
    parts(app.handle(request).await)
}

/// A chat request for `session_id` and `message` with extra headers, as an HTTP API event.
pub fn chat_request(session_id: &str, message: &str, headers: &[(&str, &str)]) -> Request {
    let mut event = event_json("http-api/1-collin-hello.json");
    event["body"] = serde_json::json!({"session_id": session_id, "message": message})
        .to_string()
        .into();
    for (name, value) in headers {
        event["headers"][name.to_ascii_lowercase()] = (*value).into();
    }
    request(&event)
}

/// Every item whose key starts with `prefix`, by key.
pub async fn items_with_prefix(
    env: &TestEnv,
    prefix: &str,
) -> Vec<HashMap<String, AttributeValue>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = env
            .dynamodb
            .scan()
            .table_name(&env.table)
            .filter_expression("begins_with(id, :p)")
            .expression_attribute_values(":p", AttributeValue::S(prefix.to_owned()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        items.extend(out.items.unwrap_or_default());
        start = out.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    items.sort_by(|a, b| a["id"].as_s().unwrap().cmp(b["id"].as_s().unwrap()));
    items
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

impl TestEnv {
    /// The app, reaching DynamoDB through `proxy`.
    pub async fn app_via(&self, proxy: &FaultProxy, extra: &[(&str, &str)]) -> App {
        session_chat::build_app_with(&self.config(extra), &sdk_config(&proxy.url()).await)
            .await
            .expect("build app")
    }
}

/// Status and body text of any response (JSON or empty).
pub fn status_and_text(response: Response<Body>) -> (u16, String) {
    let status = response.status().as_u16();
    let body = match response.body() {
        Body::Text(t) => t.clone(),
        Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    (status, body)
}

/// An app whose model is Bedrock's Converse API, served by the scripted model's stand-in.
pub async fn bedrock_app(env: &TestEnv, extra: &[(&str, &str)]) -> App {
    let mut vars = vec![
        ("MODEL_PROVIDER", "bedrock"),
        ("MODEL_ID", "amazon.nova-lite-v1:0"),
    ];
    vars.extend_from_slice(extra);
    let config = env.config(&vars);
    let sdk = sdk_config(&env.endpoint).await;
    let bedrock = aws_sdk_bedrockruntime::config::Builder::from(&sdk)
        .endpoint_url(env.model.0.url())
        .build();
    let model = session_chat::model::BedrockModel::new(
        aws_sdk_bedrockruntime::Client::from_conf(bedrock),
        config.model_id.clone(),
    );
    session_chat::app_with_model(&config, &sdk, std::sync::Arc::new(model))
}

/// The server-sent events of a body: (event name, JSON data) in order.
pub fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{data:?}: {e}"));
            (name, data)
        })
        .collect()
}

/// The text of the `delta` events, concatenated.
pub fn deltas(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(name, _)| name == "delta")
        .map(|(_, data)| data["text"].as_str().expect("delta text"))
        .collect()
}

/// A `POST /chat` asking for server-sent events.
pub fn sse_request(session_id: &str, message: &str, headers: &[(&str, &str)]) -> Request {
    let mut all = vec![("accept", "text/event-stream")];
    all.extend_from_slice(headers);
    chat_request(session_id, message, &all)
}

/// Status, content type and events of a streamed turn answered in-process (events at once).
pub async fn stream_call(app: &App, request: Request) -> (u16, String, Vec<(String, Value)>) {
    let response = app.handle(request).await;
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (status, text) = status_and_text(response);
    let events = if content_type == "text/event-stream" {
        sse_events(&text)
    } else {
        Vec::new()
    };
    (status, content_type, events)
}
