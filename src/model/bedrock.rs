//! Amazon Bedrock's Converse and ConverseStream APIs, with IAM auth.

use async_trait::async_trait;
use tokio::time::Instant;

use super::{ChatMessage, ChatModel, Completion, Deltas, ModelError, Role, Usage};

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

/// The prompt in Converse's shape: system blocks apart, then the turns.
fn bedrock_prompt(
    messages: &[ChatMessage],
) -> Result<
    (
        Option<Vec<aws_sdk_bedrockruntime::types::SystemContentBlock>>,
        Vec<aws_sdk_bedrockruntime::types::Message>,
    ),
    ModelError,
> {
    use aws_sdk_bedrockruntime::types::{
        ContentBlock, ConversationRole, Message, SystemContentBlock,
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
    Ok(((!system.is_empty()).then_some(system), conversation))
}

fn bedrock_usage(u: &aws_sdk_bedrockruntime::types::TokenUsage) -> Usage {
    Usage {
        prompt_tokens: u.input_tokens().max(0) as u64,
        completion_tokens: u.output_tokens().max(0) as u64,
    }
}

#[async_trait]
impl ChatModel for BedrockModel {
    async fn complete(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
    ) -> Result<Completion, ModelError> {
        use aws_sdk_bedrockruntime::types::StopReason;

        let (system, conversation) = bedrock_prompt(messages)?;
        let call = self
            .client
            .converse()
            .model_id(&self.model_id)
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
            text,
            truncated: *output.stop_reason() == StopReason::MaxTokens,
            usage: output.usage().map(bedrock_usage),
        })
    }

    /// `ConverseStream`: text deltas as the model writes them, then the stop reason and usage.
    async fn stream(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
        deltas: Deltas<'_>,
    ) -> Result<Completion, ModelError> {
        use aws_sdk_bedrockruntime::error::DisplayErrorContext;
        use aws_sdk_bedrockruntime::types::{ContentBlockDelta, ConverseStreamOutput, StopReason};

        let (system, conversation) = bedrock_prompt(messages)?;
        let call = self
            .client
            .converse_stream()
            .model_id(&self.model_id)
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
