//! Wiring, once per cold start: AWS settings, the model client (and its secret), the store, the
//! chat service and the HTTP app. Everything here runs before the first invocation.

use std::sync::Arc;
use std::time::Duration;

use crate::chat::{ChatService, ChatSettings};
use crate::config::{self, Config, Provider, Secret};
use crate::http::{App, HttpSettings};
use crate::model::{BedrockModel, ChatModel, OpenAiModel};
use crate::store::quota::Quotas;
use crate::store::DynamoStore;
use crate::tls;

/// Why the function could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("could not build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("could not read the OpenAI API key secret {0}")]
    Secret(String),
    #[error("could not set up TLS: {0}")]
    Tls(String),
}

/// Builds the AWS and HTTP clients once and wires the app. AWS settings come the SDK's way
/// (`AWS_REGION`, `AWS_ENDPOINT_URL_DYNAMODB`, credentials chain).
pub async fn build_app(config: &Config) -> Result<App, InitError> {
    let chat = build_chat(config).await?;
    Ok(App::new(chat, HttpSettings::from_config(config)))
}

/// Builds the AWS and HTTP clients once and wires the chat service (what the `session` CLI
/// runs a turn with, no HTTP app).
pub async fn build_chat(config: &Config) -> Result<ChatService, InitError> {
    let started = std::time::Instant::now();
    let sdk_config = load_aws().await?;
    let aws_loaded = started.elapsed();
    let model = build_model(config, &sdk_config).await?;
    let chat = chat_with_model(config, &sdk_config, model);
    // One line per cold start: where init time goes (see docs/performance.md).
    tracing::info!(
        aws_config_ms = aws_loaded.as_secs_f64() * 1e3,
        clients_ms = (started.elapsed() - aws_loaded).as_secs_f64() * 1e3,
        "initialized"
    );
    Ok(chat)
}

async fn load_aws() -> Result<aws_config::SdkConfig, InitError> {
    Ok(aws_defaults()
        .http_client(tls::aws_http_client().map_err(InitError::Tls)?)
        .load()
        .await)
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
pub async fn build_app_with(
    config: &Config,
    sdk_config: &aws_config::SdkConfig,
) -> Result<App, InitError> {
    let model = build_model(config, sdk_config).await?;
    Ok(app_with_model(config, sdk_config, model))
}

/// The model client the configuration asks for. The OpenAI key is read from Secrets Manager
/// here, once per cold start, when `OPENAI_API_KEY_SECRET_ID` is set.
pub async fn build_model(
    config: &Config,
    sdk_config: &aws_config::SdkConfig,
) -> Result<Arc<dyn ChatModel>, InitError> {
    match config.provider {
        Provider::Bedrock => {
            let client = aws_sdk_bedrockruntime::Client::new(sdk_config);
            let model = BedrockModel::new(client, config.model_id.clone());
            Ok(Arc::new(if config.prompt_cache {
                model
            } else {
                model.without_prompt_cache()
            }))
        }
        Provider::OpenAi => {
            let api_key = match (&config.openai_api_key_secret_id, &config.openai_api_key) {
                (Some(secret_id), _) => Some(read_api_key(sdk_config, secret_id).await?),
                (None, key) => key.clone(),
            };
            let http = reqwest::Client::builder()
                .tls_certs_only(tls::reqwest_roots()?)
                .connect_timeout(Duration::from_secs(3))
                .pool_idle_timeout(Duration::from_secs(50))
                .build()?;
            Ok(Arc::new(OpenAiModel::new(
                http,
                &config.openai_base_url,
                api_key,
                config.model_id.clone(),
            )))
        }
    }
}

/// Wires the app around a ready model client.
pub fn app_with_model(
    config: &Config,
    sdk_config: &aws_config::SdkConfig,
    model: Arc<dyn ChatModel>,
) -> App {
    let chat = chat_with_model(config, sdk_config, model);
    App::new(chat, HttpSettings::from_config(config))
}

/// Wires the chat service: the DynamoDB store and the cycle's settings around a model client.
pub fn chat_with_model(
    config: &Config,
    sdk_config: &aws_config::SdkConfig,
    model: Arc<dyn ChatModel>,
) -> ChatService {
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(sdk_config),
        config.table_name.clone(),
        config.max_item_bytes,
        config.session_ttl_days.map(|days| days * 24 * 60 * 60),
    )
    .with_schema(config.key_schema.clone())
    .with_owner_index(config.owner_index.clone())
    .with_view_bytes(config.view_bytes);
    let settings = ChatSettings {
        system_prompt: config.system_prompt.clone(),
        max_runs: config.max_runs,
        model_timeout: config.model_timeout,
        history_token_budget: config.history_token_budget,
        summarize: config.summarize,
        resumable: config.resumable_streams,
        live_every: config.live_write,
        new_session_format: config.memory_format,
        quotas: Quotas {
            turns_per_minute: config.quota_turns_per_minute,
            tokens_per_day: config.quota_tokens_per_day,
        },
        ..ChatSettings::default()
    };
    ChatService::new(Arc::new(store), model, settings)
}

async fn read_api_key(
    sdk_config: &aws_config::SdkConfig,
    secret_id: &str,
) -> Result<Secret, InitError> {
    let out = aws_sdk_secretsmanager::Client::new(sdk_config)
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| {
            // The error names the secret and the cause, never a value.
            InitError::Secret(format!(
                "{secret_id}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
            ))
        })?;
    let text = out
        .secret_string()
        .ok_or_else(|| InitError::Secret(format!("{secret_id} has no SecretString")))?;
    api_key_from_secret(text)
        .ok_or_else(|| InitError::Secret(format!("{secret_id} holds no API key")))
}

/// The key in a secret's text: the text itself, or the `OPENAI_API_KEY` / `api_key` field of
/// a JSON object (what the console's key/value editor stores).
pub fn api_key_from_secret(text: &str) -> Option<Secret> {
    let text = text.trim();
    let key = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(fields)) => ["OPENAI_API_KEY", "api_key"]
            .iter()
            .find_map(|k| fields.get(*k).and_then(|v| v.as_str()))?
            .trim()
            .to_owned(),
        _ => text.to_owned(),
    };
    (!key.is_empty()).then(|| Secret::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_from_secrets() {
        let key = |t: &str| api_key_from_secret(t).map(|s| s.expose().to_owned());
        assert_eq!(key("sk-abc\n").as_deref(), Some("sk-abc"));
        assert_eq!(
            key(r#"{"OPENAI_API_KEY": "sk-1"}"#).as_deref(),
            Some("sk-1")
        );
        assert_eq!(
            key(r#"{"api_key": "sk-2", "other": 1}"#).as_deref(),
            Some("sk-2")
        );
        assert_eq!(key(r#"{"password": "x"}"#), None);
        assert_eq!(key("  "), None);
    }
}
