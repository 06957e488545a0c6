//! Model clients: the chat cycle talks to a [`ChatModel`]; [`OpenAiModel`] speaks the OpenAI
//! chat-completions protocol that OpenAI, Ollama, vLLM, LM Studio and others serve, and
//! [`BedrockModel`] Amazon Bedrock's Converse API. Both answer whole ([`ChatModel::complete`])
//! or piece by piece as the model writes ([`ChatModel::stream`]: server-sent events with
//! `stream: true`, and `ConverseStream`).

mod bedrock;
mod openai;
mod sse;

use async_trait::async_trait;
use serde::Serialize;
use tokio::time::Instant;

pub use bedrock::BedrockModel;
pub use openai::{parse_completion, OpenAiModel, StreamedAnswer};
pub use sse::SseParser;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// A function's result, answering an assistant message's call.
    Tool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// An assistant message's function calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// A tool message's call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
            tool_calls: None,
            tool_call_id: None,
        }
    }
}

/// A function the model asked to be called: its call id, the function's name, its arguments
/// (JSON text, as the model wrote them).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// As chat completions write a call: `{"id", "type": "function", "function": {"name", "arguments"}}`.
impl Serialize for ToolCall {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serde_json::json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        })
        .serialize(serializer)
    }
}

/// What a model is asked: the messages, and how a provider may cache their prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompt {
    pub messages: Vec<ChatMessage>,
    /// Routes a session's requests to one prefix cache (OpenAI's `prompt_cache_key`): a digest
    /// of the session's key, never the session id itself.
    pub cache_key: Option<String>,
    pub options: ModelOptions,
    /// Functions the model may call, as chat completions take them (`tools`, `tool_choice`).
    pub tools: Option<serde_json::Value>,
    pub tool_choice: Option<serde_json::Value>,
}

/// What a caller may ask of one answer; the provider's defaults where `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelOptions {
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f32>,
}

impl Prompt {
    pub fn new(messages: Vec<ChatMessage>) -> Prompt {
        Prompt {
            messages,
            cache_key: None,
            options: ModelOptions::default(),
            tools: None,
            tool_choice: None,
        }
    }
}

/// Token counts as the model reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every prompt token, cached ones included.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens read from the provider's prefix cache, when it reports them.
    pub cached_tokens: Option<u64>,
    /// Prompt tokens written to the provider's cache (Bedrock), when it reports them.
    pub cache_write_tokens: Option<u64>,
}

/// A usable answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    /// The model stopped at its length limit: the answer is kept, and the fact logged.
    pub truncated: bool,
    pub usage: Option<Usage>,
    /// The functions it asked to be called (its text may then be empty).
    pub calls: Vec<ToolCall>,
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
    /// A streamed answer stopped before the model finished: the connection dropped, the server
    /// reported an error inside the stream, or the stream ended without a finish reason (HTTP 502).
    #[error("the model's stream stopped before it finished: {0}")]
    Interrupted(String),
}

/// Where a streamed answer's pieces go, in order, as they arrive.
pub type Deltas<'a> = &'a mut (dyn FnMut(&str) + Send);

#[async_trait]
pub trait ChatModel: Send + Sync {
    /// Asks the model to continue the prompt's messages, giving up at `deadline`.
    async fn complete(&self, prompt: &Prompt, deadline: Instant) -> Result<Completion, ModelError>;

    /// Whether the prompt's `tools` reach the model (a client that cannot pass them refuses
    /// a request with functions, rather than answering as if it had none).
    fn takes_tools(&self) -> bool {
        false
    }

    /// Asks the same, handing each piece of the answer to `deltas` as the model writes it. The
    /// completion's text is exactly the pieces handed over, concatenated. A model that cannot
    /// stream answers in one piece.
    async fn stream(
        &self,
        prompt: &Prompt,
        deadline: Instant,
        deltas: Deltas<'_>,
    ) -> Result<Completion, ModelError> {
        let completion = self.complete(prompt, deadline).await?;
        deltas(&completion.text);
        Ok(completion)
    }
}

#[cfg(test)]
mod tests;
