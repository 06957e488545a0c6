//! What the tests share. A test makes a [`TestEnv`] (its own table and scripted model), builds an
//! app from it, and drives the handler with requests; the pieces live by concern:
//! - `procs`: helper processes on free ports (DynamoDB-compatible server, model, fault proxy);
//! - `table`: the test's table, created as the template declares it, and read directly;
//! - `requests`: [`Req`], the one request builder (real API Gateway events from `events/`);
//! - `responses`: [`Reply`], what the handler answered (status, headers, JSON, events).
//!
//! Tests that assert how fast something answers hold [`wall_clock_lock`].

mod procs;
mod requests;
mod responses;
mod table;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::config::{Credentials, Region};
use session_chat::config::Config;
use session_chat::http::App;
use tokio::sync::{Mutex, MutexGuard};

pub use procs::{
    dynamodb_endpoint, free_port, repo, run_runtime, FaultProxy, Helper, ScriptedModel,
};
pub use requests::{invoke, Req};
pub use responses::{deltas, sse_events, Reply};
pub use table::{create_table, create_table_keyed, items_with_prefix, owner_index};

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    now_ms() / 1000
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Held for the whole of a test that asserts a wall-clock upper bound, so that such tests run
/// one at a time and never beside each other's load: `let _alone = wall_clock_lock().await;`.
pub async fn wall_clock_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    session_chat::aws_defaults()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
        .load()
        .await
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
        TestEnv::with_model(&[]).await
    }

    /// A fresh table, and a scripted model started with `model_args` (e.g. `["--usage",
    /// "zero"]`, see tools/scripted_model.py).
    pub async fn with_model(model_args: &[&str]) -> TestEnv {
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
            model: ScriptedModel::start_with(model_args),
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

    /// Every run a session holds, oldest first, as its history pages return them (whatever
    /// the storage layout keeps in the session item's `value`).
    pub async fn stored_runs(&self, session_id: &str) -> Vec<serde_json::Value> {
        let app = self.app().await;
        crate::storage::all_runs(&app, session_id, 200)
            .await
            .unwrap_or_default()
    }

    pub async fn app_with(&self, extra: &[(&str, &str)]) -> App {
        session_chat::build_app_with(&self.config(extra), &sdk_config(&self.endpoint).await)
            .await
            .expect("build app")
    }

    /// The app, reaching DynamoDB through `proxy`.
    pub async fn app_via(&self, proxy: &FaultProxy, extra: &[(&str, &str)]) -> App {
        session_chat::build_app_with(&self.config(extra), &sdk_config(&proxy.url()).await)
            .await
            .expect("build app")
    }
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
