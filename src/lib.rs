//! session-chat: an LLM chat with a memory per session, kept in Amazon DynamoDB.
//!
//! - [`http`]: the HTTP adapter (routes, validation, error mapping) — the Lambda's face;
//! - [`chat`]: the chat cycle (load, prompt, append, save);
//! - [`memory`]: the conversation memory and its stored JSON format;
//! - [`store`]: the session store and its DynamoDB implementation;
//! - [`model`]: model clients;
//! - [`input`], [`config`]: typed request inputs and configuration.

pub mod chat;
pub mod config;
pub mod http;
pub mod input;
pub mod memory;
pub mod model;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use crate::chat::{ChatService, ChatSettings};
use crate::config::Config;
use crate::http::App;
use crate::model::OpenAiModel;
use crate::store::DynamoStore;

/// Why the function could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("could not build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// Builds the AWS and HTTP clients once and wires the app. AWS settings come the SDK's way
/// (`AWS_REGION`, `AWS_ENDPOINT_URL_DYNAMODB`, credentials chain).
pub async fn build_app(config: &Config) -> Result<App, InitError> {
    let sdk_config = aws_defaults().load().await;
    build_app_with(config, &sdk_config)
}

/// The AWS settings every client starts from: bounded timeouts so a dead endpoint becomes a
/// clean 503 well inside the invocation, and the SDK's standard retries for throttling.
pub fn aws_defaults() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(8))
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(4))
}

/// Wires the app from configuration and already-loaded AWS settings.
pub fn build_app_with(
    config: &Config,
    sdk_config: &aws_config::SdkConfig,
) -> Result<App, InitError> {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk_config);
    let store = DynamoStore::new(
        dynamodb,
        config.table_name.clone(),
        config.max_item_bytes,
        config.session_ttl_days.map(|days| days * 24 * 60 * 60),
    );

    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .pool_idle_timeout(Duration::from_secs(50))
        .build()?;
    let model = OpenAiModel::new(
        http,
        &config.openai_base_url,
        config.openai_api_key.clone(),
        config.model_id.clone(),
    );

    let settings = ChatSettings {
        system_prompt: config.system_prompt.clone(),
        max_runs: config.max_runs,
        model_timeout: config.model_timeout,
        history_token_budget: config.history_token_budget,
        summarize: config.summarize,
        ..ChatSettings::default()
    };
    let chat = ChatService::new(Arc::new(store), Arc::new(model), settings);
    Ok(App::new(chat, config.max_message_bytes))
}

/// Logs as JSON lines (CloudWatch-friendly) at `RUST_LOG` or `info`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_target(false)
        .without_time()
        .with_current_span(false)
        .init();
}
