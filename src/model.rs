//! Model clients: the chat cycle talks to a [`ChatModel`]; [`OpenAiModel`] speaks the OpenAI
//! chat-completions protocol that OpenAI, Ollama, vLLM, LM Studio and others serve.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// Token counts as the model reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

/// A usable answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    /// The model stopped at its length limit: the answer is kept, and the fact logged.
    pub truncated: bool,
    pub usage: Option<Usage>,
}

/// Why the model gave no usable answer. None of these is ever stored as a reply.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No answer before the deadline (HTTP 504).
    #[error("the model did not answer in time")]
    Timeout,
    /// The server could not be reached (HTTP 502).
    #[error("could not reach the model server")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The server answered with an error status (HTTP 502).
    #[error("the model server answered HTTP {status}: {detail}")]
    Status { status: u16, detail: String },
    /// The answer was not a chat completion (HTTP 502).
    #[error("the model's answer could not be read: {0}")]
    Invalid(String),
    /// The answer held no text (HTTP 502).
    #[error("the model answered with no text")]
    Empty,
}

#[async_trait]
pub trait ChatModel: Send + Sync {
    /// Asks the model to continue `messages`, giving up at `deadline`.
    async fn complete(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
    ) -> Result<Completion, ModelError>;
}

/// Attempts per call, for answers worth retrying (429, 5xx, connection failures).
const MAX_ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// A retry is not started with less time than this left.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(500);

pub struct OpenAiModel {
    http: reqwest::Client,
    url: String,
    api_key: Option<Secret>,
    model_id: String,
}

impl OpenAiModel {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        api_key: Option<Secret>,
        model_id: String,
    ) -> Self {
        OpenAiModel {
            http,
            url: format!("{base_url}/chat/completions"),
            api_key,
            model_id,
        }
    }

    async fn attempt(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
    ) -> Result<Completion, Attempt> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        if timeout.is_zero() {
            return Err(Attempt::Final(ModelError::Timeout));
        }
        let mut request = self
            .http
            .post(&self.url)
            .timeout(timeout)
            .json(&CompletionRequest {
                model: &self.model_id,
                messages,
            });
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose());
        }
        let response = request.send().await.map_err(classify)?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(60.0)));
            let detail = response.text().await.unwrap_or_default();
            let error = ModelError::Status {
                status: status.as_u16(),
                detail: detail.chars().take(300).collect(),
            };
            return Err(if status.as_u16() == 429 || status.is_server_error() {
                Attempt::Retry { error, retry_after }
            } else {
                Attempt::Final(error)
            });
        }
        let body = response.bytes().await.map_err(classify)?;
        parse_completion(&body).map_err(Attempt::Final)
    }
}

enum Attempt {
    Retry {
        error: ModelError,
        retry_after: Option<Duration>,
    },
    Final(ModelError),
}

fn classify(e: reqwest::Error) -> Attempt {
    if e.is_timeout() {
        Attempt::Final(ModelError::Timeout)
    } else if e.is_connect() {
        Attempt::Retry {
            error: ModelError::Unreachable(e.into()),
            retry_after: None,
        }
    } else if e.is_decode() || e.is_body() {
        Attempt::Final(ModelError::Invalid(e.to_string()))
    } else {
        Attempt::Final(ModelError::Unreachable(e.into()))
    }
}

#[async_trait]
impl ChatModel for OpenAiModel {
    async fn complete(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
    ) -> Result<Completion, ModelError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.attempt(messages, deadline).await {
                Ok(completion) => return Ok(completion),
                Err(Attempt::Final(error)) => return Err(error),
                Err(Attempt::Retry { error, retry_after }) => {
                    let jitter = Duration::from_millis(rand::random_range(0..100));
                    let wait = retry_after.unwrap_or(backoff) + jitter;
                    let left = deadline.saturating_duration_since(Instant::now());
                    if attempt >= MAX_ATTEMPTS || wait + MIN_ATTEMPT_TIME > left {
                        return Err(error);
                    }
                    tracing::warn!(attempt, error = %error, wait_ms = wait.as_millis() as u64, "model call failed; retrying");
                    tokio::time::sleep(wait).await;
                    backoff *= 2;
                    attempt += 1;
                }
            }
        }
    }
}

/// Amazon Bedrock's Converse API, with IAM auth. Throttling and transient faults are retried by
/// the SDK's standard retry policy, within the deadline.
pub struct BedrockModel {
    client: aws_sdk_bedrockruntime::Client,
    model_id: String,
}

impl BedrockModel {
    pub fn new(client: aws_sdk_bedrockruntime::Client, model_id: String) -> Self {
        BedrockModel { client, model_id }
    }
}

#[async_trait]
impl ChatModel for BedrockModel {
    async fn complete(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
    ) -> Result<Completion, ModelError> {
        use aws_sdk_bedrockruntime::types::{
            ContentBlock, ConversationRole, Message, StopReason, SystemContentBlock,
        };

        let mut system = Vec::new();
        let mut conversation = Vec::new();
        for m in messages {
            let role = match m.role {
                Role::System => {
                    system.push(SystemContentBlock::Text(m.content.clone()));
                    continue;
                }
                Role::User => ConversationRole::User,
                Role::Assistant => ConversationRole::Assistant,
            };
            let message = Message::builder()
                .role(role)
                .content(ContentBlock::Text(m.content.clone()))
                .build()
                .map_err(|e| ModelError::Invalid(e.to_string()))?;
            conversation.push(message);
        }
        let call = self
            .client
            .converse()
            .model_id(&self.model_id)
            .set_system((!system.is_empty()).then_some(system))
            .set_messages(Some(conversation))
            .send();
        let output = match tokio::time::timeout_at(deadline, call).await {
            Err(_) => return Err(ModelError::Timeout),
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(bedrock_error(e)),
        };
        let text: String = output
            .output()
            .and_then(|o| o.as_message().ok())
            .map(|m| {
                m.content()
                    .iter()
                    .filter_map(|block| block.as_text().ok())
                    .map(String::as_str)
                    .collect()
            })
            .unwrap_or_default();
        if text.trim().is_empty() {
            return Err(ModelError::Empty);
        }
        Ok(Completion {
            text,
            truncated: *output.stop_reason() == StopReason::MaxTokens,
            usage: output.usage().map(|u| Usage {
                prompt_tokens: u.input_tokens().max(0) as u64,
                completion_tokens: u.output_tokens().max(0) as u64,
            }),
        })
    }
}

fn bedrock_error<R: std::fmt::Debug + Send + Sync + 'static>(
    e: aws_sdk_bedrockruntime::error::SdkError<
        aws_sdk_bedrockruntime::operation::converse::ConverseError,
        R,
    >,
) -> ModelError {
    use aws_sdk_bedrockruntime::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
    match &e {
        SdkError::TimeoutError(_) => ModelError::Timeout,
        SdkError::ServiceError(se) => {
            let status = match se.err().code() {
                Some("ThrottlingException") => 429,
                Some("ValidationException") => 400,
                Some("AccessDeniedException") => 403,
                Some("ResourceNotFoundException") => 404,
                Some("ModelTimeoutException") => 504,
                _ => 500,
            };
            ModelError::Status {
                status,
                detail: DisplayErrorContext(&e)
                    .to_string()
                    .chars()
                    .take(300)
                    .collect(),
            }
        }
        _ => ModelError::Unreachable(DisplayErrorContext(&e).to_string().into()),
    }
}

#[derive(Serialize)]
struct CompletionRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
}

#[derive(Deserialize)]
struct CompletionResponse {
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<AnswerMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct AnswerMessage {
    content: Option<String>,
}

/// Reads a chat-completions answer; anything but non-blank text is an error.
pub fn parse_completion(body: &[u8]) -> Result<Completion, ModelError> {
    let parsed: CompletionResponse = serde_json::from_slice(body)
        .map_err(|e| ModelError::Invalid(format!("not a chat completion: {e}")))?;
    let choice = parsed
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ModelError::Invalid("no choices".into()))?;
    let text = choice
        .message
        .and_then(|m| m.content)
        .filter(|t| !t.trim().is_empty())
        .ok_or(ModelError::Empty)?;
    Ok(Completion {
        text,
        truncated: choice.finish_reason.as_deref() == Some("length"),
        usage: parsed.usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_completion() {
        let c = parse_completion(
            br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#,
        )
        .unwrap();
        assert_eq!(c.text, "Hi");
        assert!(!c.truncated);
        assert_eq!(c.usage.unwrap().prompt_tokens, 9);
    }

    #[test]
    fn cut_off_answers_are_kept_but_flagged() {
        let c = parse_completion(
            br#"{"choices":[{"message":{"content":"Hi th"},"finish_reason":"length"}]}"#,
        )
        .unwrap();
        assert!(c.truncated);
        assert_eq!(c.usage, None);
    }

    #[test]
    fn unusable_answers_are_errors() {
        for body in [
            &b"<html>502</html>"[..],
            br#"{"choices":[]}"#,
            br#"{"error":{"message":"x"}}"#,
        ] {
            assert!(matches!(
                parse_completion(body),
                Err(ModelError::Invalid(_))
            ));
        }
        for body in [
            &br#"{"choices":[{"message":{"content":""}}]}"#[..],
            br#"{"choices":[{"message":{"content":"  \n"}}]}"#,
            br#"{"choices":[{"message":{"content":null}}]}"#,
            br#"{"choices":[{"message":null}]}"#,
        ] {
            assert!(matches!(parse_completion(body), Err(ModelError::Empty)));
        }
    }

    #[test]
    fn messages_serialize_as_openai_expects() {
        let json = serde_json::to_string(&ChatMessage::new(Role::Assistant, "x")).unwrap();
        assert_eq!(json, r#"{"role":"assistant","content":"x"}"#);
    }
}
