//! Model clients: the chat cycle talks to a [`ChatModel`]; [`OpenAiModel`] speaks the OpenAI
//! chat-completions protocol that OpenAI, Ollama, vLLM, LM Studio and others serve, and
//! [`BedrockModel`] Amazon Bedrock's Converse API. Both answer whole ([`ChatModel::complete`])
//! or piece by piece as the model writes ([`ChatModel::stream`]: server-sent events with
//! `stream: true`, and `ConverseStream`).

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
    /// A streamed answer stopped before the model finished: the connection dropped, the server
    /// reported an error inside the stream, or the stream ended without a finish reason (HTTP 502).
    #[error("the model's stream stopped before it finished: {0}")]
    Interrupted(String),
}

/// Where a streamed answer's pieces go, in order, as they arrive.
pub type Deltas<'a> = &'a mut (dyn FnMut(&str) + Send);

#[async_trait]
pub trait ChatModel: Send + Sync {
    /// Asks the model to continue `messages`, giving up at `deadline`.
    async fn complete(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
    ) -> Result<Completion, ModelError>;

    /// Asks the same, handing each piece of the answer to `deltas` as the model writes it. The
    /// completion's text is exactly the pieces handed over, concatenated. A model that cannot
    /// stream answers in one piece.
    async fn stream(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
        deltas: Deltas<'_>,
    ) -> Result<Completion, ModelError> {
        let completion = self.complete(messages, deadline).await?;
        deltas(&completion.text);
        Ok(completion)
    }
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

    /// Sends the request; an answer with an error status is an error, retried or final.
    async fn send(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
        stream: bool,
    ) -> Result<reqwest::Response, Attempt> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        if timeout.is_zero() {
            return Err(Attempt::Final(ModelError::Timeout));
        }
        // reqwest's timeout covers the whole exchange, the streamed body included.
        let mut request = self
            .http
            .post(&self.url)
            .timeout(timeout)
            .json(&CompletionRequest {
                model: &self.model_id,
                messages,
                stream: stream.then_some(true),
                stream_options: stream.then_some(StreamOptions {
                    include_usage: true,
                }),
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
        Ok(response)
    }

    async fn attempt(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
    ) -> Result<Completion, Attempt> {
        let response = self.send(messages, deadline, false).await?;
        let body = response.bytes().await.map_err(classify)?;
        parse_completion(&body).map_err(Attempt::Final)
    }

    /// One streamed attempt. Worth retrying only while no piece has been handed on
    /// (`*started` stays false): once the client has text, the answer cannot start over.
    async fn stream_attempt(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
        deltas: Deltas<'_>,
        started: &mut bool,
    ) -> Result<Completion, Attempt> {
        let mut response = self.send(messages, deadline, true).await?;
        let mut events = SseParser::default();
        let mut answer = StreamedAnswer::default();
        loop {
            let chunk = match response.chunk().await {
                Ok(chunk) => chunk,
                Err(e) if e.is_timeout() => return Err(Attempt::Final(ModelError::Timeout)),
                Err(e) => {
                    return Err(Attempt::Final(ModelError::Interrupted(format!(
                        "the connection failed: {}",
                        crate::error::chain(&e)
                    ))))
                }
            };
            let data = match &chunk {
                Some(bytes) => events.push(bytes),
                None => events.finish(),
            };
            for data in data {
                let piece = answer.take(&data).map_err(Attempt::Final)?;
                if let Some(piece) = piece.filter(|p| !p.is_empty()) {
                    *started = true;
                    deltas(&piece);
                }
            }
            if chunk.is_none() || answer.done {
                return answer.completion().map_err(Attempt::Final);
            }
        }
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

/// Retries of failed attempts: a growing, jittered wait (or the server's `Retry-After`), while
/// attempts are left and the deadline leaves time for one more.
struct Backoff {
    next: Duration,
    tries: u32,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: FIRST_BACKOFF,
            tries: 1,
        }
    }

    /// Waits before the next attempt, or gives `error` back when none is worth starting.
    async fn wait(
        &mut self,
        error: ModelError,
        retry_after: Option<Duration>,
        deadline: Instant,
    ) -> Result<(), ModelError> {
        let jitter = Duration::from_millis(rand::random_range(0..100));
        let wait = retry_after.unwrap_or(self.next) + jitter;
        let left = deadline.saturating_duration_since(Instant::now());
        if self.tries >= MAX_ATTEMPTS || wait + MIN_ATTEMPT_TIME > left {
            return Err(error);
        }
        tracing::warn!(attempt = self.tries, error = %error, wait_ms = wait.as_millis() as u64, "model call failed; retrying");
        tokio::time::sleep(wait).await;
        self.next *= 2;
        self.tries += 1;
        Ok(())
    }
}

#[async_trait]
impl ChatModel for OpenAiModel {
    async fn complete(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
    ) -> Result<Completion, ModelError> {
        let mut backoff = Backoff::new();
        loop {
            match self.attempt(messages, deadline).await {
                Ok(completion) => return Ok(completion),
                Err(Attempt::Final(error)) => return Err(error),
                Err(Attempt::Retry { error, retry_after }) => {
                    backoff.wait(error, retry_after, deadline).await?
                }
            }
        }
    }

    async fn stream(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
        deltas: Deltas<'_>,
    ) -> Result<Completion, ModelError> {
        let mut backoff = Backoff::new();
        let mut started = false;
        loop {
            let attempt = self
                .stream_attempt(messages, deadline, &mut *deltas, &mut started)
                .await;
            match attempt {
                Ok(completion) => return Ok(completion),
                Err(Attempt::Final(error)) => return Err(error),
                // Pieces already went out: the answer cannot start over.
                Err(Attempt::Retry { error, .. }) if started => return Err(error),
                Err(Attempt::Retry { error, retry_after }) => {
                    backoff.wait(error, retry_after, deadline).await?
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

#[derive(Serialize)]
struct CompletionRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    /// A last chunk with the token usage (and no choices) before `[DONE]`.
    include_usage: bool,
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

/// Server-sent events read as they arrive: the `data` of each event once it is complete (a blank
/// line ends it). Other fields and comments are skipped; lines may end in LF or CRLF.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Takes the next bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.end_line(line, &mut events);
            } else {
                self.line.push(b);
            }
        }
        events
    }

    /// The stream ended: an event left without its blank line still counts.
    pub fn finish(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            self.end_line(line, &mut events);
        }
        events.extend(self.data.take());
        events
    }

    fn end_line(&mut self, mut line: Vec<u8>, events: &mut Vec<String>) {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            events.extend(self.data.take());
            return;
        }
        // Split at a line end, a line holds whole characters; invalid UTF-8 is replaced.
        let line = String::from_utf8_lossy(&line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
    }
}

#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<StreamChoice>,
    usage: Option<Usage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamChoice {
    delta: Option<AnswerMessage>,
    finish_reason: Option<String>,
}

/// A chat-completions stream as it is read: the text so far, the finish reason, the usage.
#[derive(Debug, Default)]
pub struct StreamedAnswer {
    text: String,
    finish: Option<String>,
    usage: Option<Usage>,
    /// `[DONE]` came: nothing follows.
    pub done: bool,
}

impl StreamedAnswer {
    /// Reads one event's data; returns the piece of text it adds, if any. An error object in
    /// the stream, or data that is not a chunk, ends the answer.
    pub fn take(&mut self, data: &str) -> Result<Option<String>, ModelError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(None);
        }
        let chunk: StreamChunk = serde_json::from_str(data)
            .map_err(|e| ModelError::Invalid(format!("not a chat completion chunk: {e}")))?;
        if let Some(error) = chunk.error {
            let detail: String = error.to_string().chars().take(300).collect();
            return Err(ModelError::Interrupted(format!(
                "the server reported an error: {detail}"
            )));
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        let Some(choice) = chunk.choices.into_iter().next() else {
            // The usage-only chunk.
            return Ok(None);
        };
        if choice.finish_reason.is_some() {
            self.finish = choice.finish_reason;
        }
        let piece = choice.delta.and_then(|d| d.content);
        if let Some(piece) = &piece {
            self.text.push_str(piece);
        }
        Ok(piece)
    }

    /// The answer, once the stream is over: only a finished one with text is usable.
    pub fn completion(self) -> Result<Completion, ModelError> {
        let Some(finish) = self.finish else {
            return Err(ModelError::Interrupted(
                "the stream ended without a finish reason".into(),
            ));
        };
        if self.text.trim().is_empty() {
            return Err(ModelError::Empty);
        }
        Ok(Completion {
            text: self.text,
            truncated: finish == "length",
            usage: self.usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_stream(chunks: &[&[u8]]) -> (Vec<String>, Result<Completion, ModelError>) {
        let mut parser = SseParser::default();
        let mut answer = StreamedAnswer::default();
        let mut pieces = Vec::new();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(parser.push(chunk));
        }
        events.extend(parser.finish());
        for data in events {
            match answer.take(&data) {
                Ok(piece) => pieces.extend(piece),
                Err(e) => return (pieces, Err(e)),
            }
            if answer.done {
                break;
            }
        }
        (pieces, answer.completion())
    }

    const CHUNKS: &str = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        ": keep-alive\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello \"},\"finish_reason\":null}]}\r\n\r\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Coll\\u00efn!\"},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn reads_a_streamed_answer_split_anywhere() {
        let bytes = CHUNKS.as_bytes();
        for split in [1, 7, 64, bytes.len()] {
            let chunks: Vec<&[u8]> = bytes.chunks(split).collect();
            let (pieces, completion) = read_stream(&chunks);
            let completion = completion.unwrap();
            assert_eq!(pieces.concat(), "Hello Coll\u{ef}n!", "split every {split}");
            assert_eq!(completion.text, pieces.concat());
            assert!(!completion.truncated);
            assert_eq!(completion.usage.unwrap().prompt_tokens, 12);
        }
    }

    #[test]
    fn unfinished_or_failing_streams_are_errors() {
        let cut = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n";
        let (pieces, result) = read_stream(&[cut.as_bytes()]);
        assert_eq!(pieces, ["Hel"]);
        assert!(
            matches!(result, Err(ModelError::Interrupted(_))),
            "{result:?}"
        );

        let done_early = format!("{cut}data: [DONE]\n\n");
        let (_, result) = read_stream(&[done_early.as_bytes()]);
        assert!(
            matches!(result, Err(ModelError::Interrupted(_))),
            "{result:?}"
        );

        let error = format!("{cut}data: {{\"error\":{{\"message\":\"overloaded\"}}}}\n\n");
        let (_, result) = read_stream(&[error.as_bytes()]);
        assert!(
            matches!(&result, Err(ModelError::Interrupted(m)) if m.contains("overloaded")),
            "{result:?}"
        );

        let garbage = "data: <html>\n\n";
        let (_, result) = read_stream(&[garbage.as_bytes()]);
        assert!(matches!(result, Err(ModelError::Invalid(_))), "{result:?}");

        let blank =
            "data: {\"choices\":[{\"delta\":{\"content\":\" \"},\"finish_reason\":\"stop\"}]}\n\n";
        let (_, result) = read_stream(&[blank.as_bytes()]);
        assert!(matches!(result, Err(ModelError::Empty)), "{result:?}");

        // The last event may lack its blank line; a cut-off answer is kept but flagged.
        let length = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi th\"},\"finish_reason\":\"length\"}]}";
        let (_, result) = read_stream(&[length.as_bytes()]);
        assert!(result.unwrap().truncated);
    }

    #[test]
    fn multi_line_data_is_joined() {
        let mut parser = SseParser::default();
        assert_eq!(
            parser.push(b"event: x\ndata: a\ndata:b\nid: 1\n\n"),
            ["a\nb"]
        );
        assert!(parser.push(b"data: c").is_empty());
        assert_eq!(parser.finish(), ["c"]);
    }

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
