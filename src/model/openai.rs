//! The OpenAI chat-completions protocol (OpenAI, Ollama, vLLM, LM Studio and others): whole
//! answers, or server-sent events with `stream: true`; retries with backoff within the deadline.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::sse::SseParser;
use super::{ChatMessage, ChatModel, Completion, Deltas, ModelError, Prompt, ToolCall, Usage};
use crate::config::Secret;

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
        prompt: &Prompt,
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
                messages: &prompt.messages,
                prompt_cache_key: prompt.cache_key.as_deref(),
                max_tokens: prompt.options.max_output_tokens,
                temperature: prompt.options.temperature,
                tools: prompt.tools.as_ref(),
                tool_choice: prompt.tool_choice.as_ref(),
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

    async fn attempt(&self, prompt: &Prompt, deadline: Instant) -> Result<Completion, Attempt> {
        let response = self.send(prompt, deadline, false).await?;
        let body = response.bytes().await.map_err(classify)?;
        parse_completion(&body).map_err(Attempt::Final)
    }

    /// One streamed attempt. Worth retrying only while no piece has been handed on
    /// (`*started` stays false): once the client has text, the answer cannot start over.
    async fn stream_attempt(
        &self,
        prompt: &Prompt,
        deadline: Instant,
        deltas: Deltas<'_>,
        started: &mut bool,
    ) -> Result<Completion, Attempt> {
        let mut response = self.send(prompt, deadline, true).await?;
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
    fn takes_tools(&self) -> bool {
        true
    }

    async fn complete(&self, prompt: &Prompt, deadline: Instant) -> Result<Completion, ModelError> {
        let mut backoff = Backoff::new();
        loop {
            match self.attempt(prompt, deadline).await {
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
        prompt: &Prompt,
        deadline: Instant,
        deltas: Deltas<'_>,
    ) -> Result<Completion, ModelError> {
        let mut backoff = Backoff::new();
        let mut started = false;
        loop {
            let attempt = self
                .stream_attempt(prompt, deadline, &mut *deltas, &mut started)
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

#[derive(Serialize)]
struct CompletionRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_cache_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a serde_json::Value>,
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
    usage: Option<WireUsage>,
}

/// `usage` as chat-completions servers report it.
#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Deserialize)]
struct PromptTokensDetails {
    cached_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Usage {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
            cache_write_tokens: None,
        }
    }
}

#[derive(Deserialize)]
struct Choice {
    message: Option<AnswerMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct AnswerMessage {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireCall>,
}

/// A function call as chat completions write it; streamed, in pieces by `index`.
#[derive(Deserialize)]
struct WireCall {
    #[serde(default)]
    index: usize,
    id: Option<String>,
    function: Option<WireFunction>,
}

#[derive(Deserialize)]
struct WireFunction {
    name: Option<String>,
    arguments: Option<String>,
}

/// A whole call; one without an id or a name is not a call.
fn whole_call(call: WireCall) -> Option<ToolCall> {
    let function = call.function?;
    Some(ToolCall {
        id: call.id.filter(|i| !i.is_empty())?,
        name: function.name.filter(|n| !n.is_empty())?,
        arguments: function.arguments.unwrap_or_default(),
    })
}

/// Reads a chat-completions answer; anything but non-blank text or function calls is an error.
pub fn parse_completion(body: &[u8]) -> Result<Completion, ModelError> {
    let parsed: CompletionResponse = serde_json::from_slice(body)
        .map_err(|e| ModelError::Invalid(format!("not a chat completion: {e}")))?;
    let choice = parsed
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ModelError::Invalid("no choices".into()))?;
    let (text, calls) = match choice.message {
        Some(m) => (
            m.content.unwrap_or_default(),
            m.tool_calls.into_iter().filter_map(whole_call).collect(),
        ),
        None => (String::new(), Vec::new()),
    };
    if text.trim().is_empty() && calls.is_empty() {
        return Err(ModelError::Empty);
    }
    Ok(Completion {
        text,
        truncated: choice.finish_reason.as_deref() == Some("length"),
        usage: parsed.usage.map(Usage::from),
        calls,
    })
}

#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<StreamChoice>,
    usage: Option<WireUsage>,
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
    /// Function calls as their pieces come, by index: id, name, arguments so far.
    calls: Vec<(String, String, String)>,
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
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.into());
        }
        let Some(choice) = chunk.choices.into_iter().next() else {
            // The usage-only chunk.
            return Ok(None);
        };
        if choice.finish_reason.is_some() {
            self.finish = choice.finish_reason;
        }
        let Some(delta) = choice.delta else {
            return Ok(None);
        };
        for call in delta.tool_calls {
            if self.calls.len() <= call.index {
                // Bounded: a server naming index a billion does not make a billion calls.
                if call.index > 127 {
                    return Err(ModelError::Invalid("a function call index over 127".into()));
                }
                self.calls.resize(call.index + 1, Default::default());
            }
            let slot = &mut self.calls[call.index];
            if let Some(id) = call.id {
                slot.0.push_str(&id);
            }
            if let Some(f) = call.function {
                slot.1.push_str(f.name.as_deref().unwrap_or_default());
                slot.2.push_str(f.arguments.as_deref().unwrap_or_default());
            }
        }
        let piece = delta.content;
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
        let calls: Vec<ToolCall> = self
            .calls
            .into_iter()
            .filter(|(id, name, _)| !id.is_empty() && !name.is_empty())
            .map(|(id, name, arguments)| ToolCall {
                id,
                name,
                arguments,
            })
            .collect();
        if self.text.trim().is_empty() && calls.is_empty() {
            return Err(ModelError::Empty);
        }
        Ok(Completion {
            text: self.text,
            truncated: finish == "length",
            usage: self.usage,
            calls,
        })
    }
}
