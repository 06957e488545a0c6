//! Amazon Bedrock's Converse and ConverseStream APIs, with IAM auth.

use async_trait::async_trait;
use tokio::time::Instant;

use super::{ChatMessage, ChatModel, Completion, Deltas, ModelError, Prompt, Role, Usage};

/// Amazon Bedrock's Converse API, with IAM auth. Throttling and transient faults are retried by
/// the SDK's standard retry policy, within the deadline.
pub struct BedrockModel {
    client: aws_sdk_bedrockruntime::Client,
    model_id: String,
    /// Send `cachePoint` blocks after the prompt's stable prefix.
    prompt_cache: bool,
}

/// Model ids (or inference profiles naming them) whose Converse API takes cache points:
/// Anthropic Claude and Amazon Nova, as Bedrock's prompt-caching documentation lists them.
const CACHING_MODELS: [&str; 2] = ["anthropic.claude", "amazon.nova"];

impl BedrockModel {
    /// A client that caches prompt prefixes when the model supports it (`PROMPT_CACHE=auto`).
    pub fn new(client: aws_sdk_bedrockruntime::Client, model_id: String) -> Self {
        let prompt_cache = supports_prompt_cache(&model_id);
        BedrockModel {
            client,
            model_id,
            prompt_cache,
        }
    }

    /// Never sends cache points (`PROMPT_CACHE=off`).
    pub fn without_prompt_cache(mut self) -> Self {
        self.prompt_cache = false;
        self
    }
}

/// Whether a model id is one of [`CACHING_MODELS`] (also behind a cross-region profile such as
/// `us.anthropic.claude-...`).
pub fn supports_prompt_cache(model_id: &str) -> bool {
    CACHING_MODELS.iter().any(|m| model_id.contains(m))
}

/// The prompt in Converse's shape: system blocks apart, then the turns.
fn bedrock_prompt(
    messages: &[ChatMessage],
    cache: bool,
) -> Result<
    (
        Option<Vec<aws_sdk_bedrockruntime::types::SystemContentBlock>>,
        Vec<aws_sdk_bedrockruntime::types::Message>,
    ),
    ModelError,
> {
    use aws_sdk_bedrockruntime::types::{
        CachePointBlock, CachePointType, ContentBlock, ConversationRole, Message,
        SystemContentBlock,
    };
    let invalid = |e: aws_sdk_bedrockruntime::error::BuildError| ModelError::Invalid(e.to_string());
    let point = || {
        CachePointBlock::builder()
            .r#type(CachePointType::Default)
            .build()
            .map_err(invalid)
    };
    // The stable prefix ends after the system blocks and after the newest run (the message
    // before the new one): a cache point at each.
    let last_history = messages.len().checked_sub(2);
    let mut system = Vec::new();
    let mut conversation = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role {
            Role::System => {
                system.push(SystemContentBlock::Text(m.content.clone()));
                continue;
            }
            // Functions are not passed to Bedrock (`takes_tools` is false): no prompt holds a
            // tool message; were one there, its text goes as the user's.
            Role::User | Role::Tool => ConversationRole::User,
            Role::Assistant => ConversationRole::Assistant,
        };
        let mut message = Message::builder()
            .role(role)
            .content(ContentBlock::Text(m.content.clone()));
        if cache && Some(i) == last_history && m.role == Role::Assistant {
            message = message.content(ContentBlock::CachePoint(point()?));
        }
        conversation.push(message.build().map_err(invalid)?);
    }
    if cache && !system.is_empty() {
        system.push(SystemContentBlock::CachePoint(point()?));
    }
    Ok(((!system.is_empty()).then_some(system), conversation))
}

fn bedrock_usage(u: &aws_sdk_bedrockruntime::types::TokenUsage) -> Usage {
    let count = |n: Option<i32>| n.map(|n| n.max(0) as u64);
    let read = count(u.cache_read_input_tokens());
    let written = count(u.cache_write_input_tokens());
    Usage {
        // Bedrock counts cached tokens apart from `inputTokens`: all of them were sent.
        prompt_tokens: u.input_tokens().max(0) as u64 + read.unwrap_or(0) + written.unwrap_or(0),
        completion_tokens: u.output_tokens().max(0) as u64,
        cached_tokens: read,
        cache_write_tokens: written,
    }
}

/// What the caller asked of the answer (its length, its temperature), if anything.
fn inference(prompt: &Prompt) -> Option<aws_sdk_bedrockruntime::types::InferenceConfiguration> {
    let o = prompt.options;
    if o.max_output_tokens.is_none() && o.temperature.is_none() {
        return None;
    }
    let max_tokens = o
        .max_output_tokens
        .map(|t| i32::try_from(t).unwrap_or(i32::MAX));
    Some(
        aws_sdk_bedrockruntime::types::InferenceConfiguration::builder()
            .set_max_tokens(max_tokens)
            .set_temperature(o.temperature)
            .build(),
    )
}

#[async_trait]
impl ChatModel for BedrockModel {
    async fn complete(&self, prompt: &Prompt, deadline: Instant) -> Result<Completion, ModelError> {
        use aws_sdk_bedrockruntime::types::StopReason;

        let (system, conversation) = bedrock_prompt(&prompt.messages, self.prompt_cache)?;
        let call = self
            .client
            .converse()
            .model_id(&self.model_id)
            .set_inference_config(inference(prompt))
            .set_system(system)
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
            calls: Vec::new(),
            text,
            truncated: *output.stop_reason() == StopReason::MaxTokens,
            usage: output.usage().map(bedrock_usage),
        })
    }

    /// `ConverseStream`: text deltas as the model writes them, then the stop reason and usage.
    async fn stream(
        &self,
        prompt: &Prompt,
        deadline: Instant,
        deltas: Deltas<'_>,
    ) -> Result<Completion, ModelError> {
        use aws_sdk_bedrockruntime::error::DisplayErrorContext;
        use aws_sdk_bedrockruntime::types::{ContentBlockDelta, ConverseStreamOutput, StopReason};

        let (system, conversation) = bedrock_prompt(&prompt.messages, self.prompt_cache)?;
        let call = self
            .client
            .converse_stream()
            .model_id(&self.model_id)
            .set_inference_config(inference(prompt))
            .set_system(system)
            .set_messages(Some(conversation))
            .send();
        let mut output = match tokio::time::timeout_at(deadline, call).await {
            Err(_) => return Err(ModelError::Timeout),
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(bedrock_error(e)),
        };
        let (mut text, mut stop, mut usage) = (String::new(), None, None);
        loop {
            let event = match tokio::time::timeout_at(deadline, output.stream.recv()).await {
                Err(_) => return Err(ModelError::Timeout),
                Ok(Ok(Some(event))) => event,
                Ok(Ok(None)) => break,
                Ok(Err(e)) if text.is_empty() => return Err(bedrock_error(e)),
                Ok(Err(e)) => {
                    return Err(ModelError::Interrupted(
                        DisplayErrorContext(&e)
                            .to_string()
                            .chars()
                            .take(300)
                            .collect(),
                    ))
                }
            };
            match event {
                ConverseStreamOutput::ContentBlockDelta(event) => {
                    if let Some(ContentBlockDelta::Text(piece)) = event.delta() {
                        if !piece.is_empty() {
                            text.push_str(piece);
                            deltas(piece);
                        }
                    }
                }
                ConverseStreamOutput::MessageStop(event) => {
                    stop = Some(event.stop_reason().clone())
                }
                ConverseStreamOutput::Metadata(event) => usage = event.usage().map(bedrock_usage),
                _ => {}
            }
        }
        let Some(stop) = stop else {
            return Err(ModelError::Interrupted(
                "the stream ended without a stop reason".into(),
            ));
        };
        if text.trim().is_empty() {
            return Err(ModelError::Empty);
        }
        Ok(Completion {
            calls: Vec::new(),
            text,
            truncated: stop == StopReason::MaxTokens,
            usage,
        })
    }
}

fn bedrock_error<E, R>(e: aws_sdk_bedrockruntime::error::SdkError<E, R>) -> ModelError
where
    E: aws_sdk_bedrockruntime::error::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_bedrockruntime::error::{DisplayErrorContext, SdkError};
    match &e {
        SdkError::TimeoutError(_) => ModelError::Timeout,
        SdkError::ServiceError(se) => {
            let status = match se.err().code() {
                Some("ThrottlingException" | "throttlingException") => 429,
                Some("ValidationException" | "validationException") => 400,
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_bedrockruntime::types::{ContentBlock, SystemContentBlock};

    fn prompt() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, "Hello my name is Collin."),
            ChatMessage::new(Role::Assistant, "Hello Collin!"),
            ChatMessage::new(Role::User, "What is my name?"),
        ]
    }

    #[test]
    fn cache_points_follow_the_stable_prefix() {
        let (system, messages) = bedrock_prompt(&prompt(), true).unwrap();
        let system = system.unwrap();
        assert!(matches!(
            system.last(),
            Some(SystemContentBlock::CachePoint(_))
        ));
        let blocks = |i: usize| messages[i].content().to_vec();
        assert!(
            matches!(blocks(1).last(), Some(ContentBlock::CachePoint(_))),
            "after the newest run"
        );
        assert_eq!(blocks(0).len(), 1);
        assert_eq!(blocks(2).len(), 1, "the new message is not cached");
        let (system, messages) = bedrock_prompt(&prompt(), false).unwrap();
        assert_eq!(system.unwrap().len(), 1);
        assert!(messages.iter().all(|m| m.content().len() == 1));
    }

    #[test]
    fn caching_models_are_known_by_their_ids() {
        assert!(supports_prompt_cache(
            "anthropic.claude-3-7-sonnet-20250219-v1:0"
        ));
        assert!(supports_prompt_cache("us.amazon.nova-lite-v1:0"));
        assert!(!supports_prompt_cache("meta.llama3-70b-instruct-v1:0"));
    }
}
