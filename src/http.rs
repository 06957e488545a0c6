//! The HTTP adapter: routes API Gateway requests, parses and checks them, runs the chat cycle and
//! maps every outcome to a JSON response. Nothing here panics on input, and no internal detail
//! (SDK messages, keys, stack traces) reaches a response body: causes are logged instead.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_http::http::{header, Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::chat::{ChatError, ChatService};
use crate::config::AuthMode;
use crate::input::{IdempotencyKey, InputError, Message, SessionId, SessionKey};
use crate::model::ModelError;
use crate::store::StoreError;

/// Seconds a client is asked to wait before retrying a 503.
const RETRY_AFTER_SECS: u32 = 1;

/// Every way a request can fail, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_request`: the body is not a JSON object, or a field is missing or mistyped.
    #[error("{0}")]
    InvalidRequest(String),
    /// 400 `invalid_session_id` / `invalid_message`, or 413 `message_too_long`.
    #[error(transparent)]
    Input(#[from] InputError),
    /// 404 `not_found`: no such route.
    #[error("no route for {0}")]
    NotFound(String),
    /// 404 `session_not_found`: no session with this id.
    #[error("no session {0}")]
    SessionNotFound(String),
    /// 401 `unauthorized`: JWT mode, and the request carries no verified `sub` claim.
    #[error("this API needs a verified identity (a JWT with a sub claim)")]
    Unauthorized,
    /// 400 `invalid_request`: the path's session id is not validly percent-encoded.
    #[error("the session id in the path is not validly percent-encoded")]
    BadPath,
    /// 405 `method_not_allowed`, with an `Allow` header.
    #[error("{method} is not allowed here; use {allowed}")]
    MethodNotAllowed {
        method: String,
        allowed: &'static str,
    },
    /// 502 `model_error` (failed, empty or unreadable answer) or 504 `model_timeout`.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// 503 `store_unavailable`, 500 `corrupt_session`, or 500 `internal`.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 503 `session_busy`: too many writers at once; retry after a moment.
    #[error("the session is busy, retry shortly")]
    Busy,
    /// 409 `idempotency_key_reused`: the key was used before with another message.
    #[error("this Idempotency-Key was already used with a different message")]
    KeyReused,
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::Model(e) => ApiError::Model(e),
            ChatError::Store(e) => ApiError::Store(e),
            ChatError::Contention(_) => ApiError::Busy,
            ChatError::KeyReused => ApiError::KeyReused,
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Input(InputError::MessageTooLong { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Input(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::SessionNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadPath => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Model(ModelError::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Model(_) => StatusCode::BAD_GATEWAY,
            ApiError::Store(StoreError::Unavailable(_) | StoreError::Conflict) | ApiError::Busy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::KeyReused => StatusCode::CONFLICT,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) | ApiError::BadPath => "invalid_request",
            ApiError::Input(InputError::MessageTooLong { .. }) => "message_too_long",
            ApiError::Input(InputError::BlankMessage) => "invalid_message",
            ApiError::Input(InputError::IdempotencyKey) => "invalid_idempotency_key",
            ApiError::Input(_) => "invalid_session_id",
            ApiError::NotFound(_) => "not_found",
            ApiError::SessionNotFound(_) => "session_not_found",
            ApiError::Unauthorized => "unauthorized",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Model(ModelError::Timeout) => "model_timeout",
            ApiError::Model(_) => "model_error",
            ApiError::Store(StoreError::Unavailable(_)) => "store_unavailable",
            ApiError::Store(StoreError::Corrupt(_)) => "corrupt_session",
            ApiError::Store(StoreError::Conflict) => "session_busy",
            ApiError::Store(_) => "internal",
            ApiError::Busy => "session_busy",
            ApiError::KeyReused => "idempotency_key_reused",
        }
    }

    /// What the client is told: our own words, never a cause's.
    fn public_message(&self) -> String {
        match self {
            ApiError::Model(ModelError::Timeout) => {
                "the model did not answer in time; nothing was stored".into()
            }
            ApiError::Model(_) => {
                "the model failed to give a usable answer; nothing was stored".into()
            }
            ApiError::Store(StoreError::Unavailable(_)) => {
                "the session table is unavailable; nothing was stored, retry later".into()
            }
            ApiError::Store(StoreError::Corrupt(_)) => {
                "the stored session cannot be read; it was left unchanged".into()
            }
            ApiError::Store(_) => "internal error; nothing was stored".into(),
            other => other.to_string(),
        }
    }

    /// The response, after logging the request's one line: the cause chain for server errors
    /// (never sent to the client), the refusal for client errors.
    pub(crate) fn into_response(
        self,
        request_id: &str,
        session_id: Option<&str>,
    ) -> Response<Body> {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(request_id, session_id, outcome = self.code(), status = status.as_u16(), cause = %chain(&self), "request failed");
        } else {
            tracing::info!(request_id, session_id, outcome = self.code(), status = status.as_u16(), error = %self, "request refused");
        }
        let body = json!({"error": {"code": self.code(), "message": self.public_message()}});
        let mut response = json_response(status, &body);
        if let ApiError::MethodNotAllowed { allowed, .. } = &self {
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
        }
        response
    }
}

/// Decodes `%XX` escapes in a path segment; `None` if an escape is broken or not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    // percent-encoding leaves a broken escape ("%", "%4", "%zz") as it is; here it is a bad path.
    let well_formed = segment
        .split('%')
        .skip(1)
        .all(|after| after.bytes().take(2).filter(u8::is_ascii_hexdigit).count() == 2);
    if !well_formed {
        return None;
    }
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// The API's routes, read from the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    /// `/chat`
    Chat,
    /// `/sessions`: reserved for listing sessions; no method is served yet (404).
    Sessions,
    /// `/sessions/{session_id}`, the segment still percent-encoded.
    Session(&'a str),
    NotFound,
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Route<'a> {
        match path {
            "/chat" => Route::Chat,
            "/sessions" => Route::Sessions,
            _ => match path.strip_prefix("/sessions/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Route::Session(id),
                _ => Route::NotFound,
            },
        }
    }
}

/// The request's path as the API defines its routes. It starts from the event's raw path, not
/// the URI: lambda_http prefixes the stage to the URI's path only when the path does not already
/// start with it (so `/sessions/chat` under a stage `sessions` could be either route), and the
/// URI has dot segments resolved. From the raw path it removes:
/// - the stage, exactly, where API Gateway puts it: an HTTP API's (v2) `rawPath` starts with the
///   stage's name under a named stage (`$default` has none); a REST API's (v1) `path` never
///   holds the stage;
/// - the `/lambda-url/<function>` prefix of `cargo lambda watch`'s function-URL emulation;
/// - trailing slashes.
fn api_path(request: &Request) -> &str {
    let mut path = request.raw_http_path();
    if let Some(RequestContext::ApiGatewayV2(context)) = request.request_context_ref() {
        if let Some(stage) = context.stage.as_deref().filter(|s| *s != "$default") {
            path = match path.strip_prefix('/').and_then(|p| p.strip_prefix(stage)) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
                _ => path,
            };
        }
    }
    if let Some(rest) = path.strip_prefix("/lambda-url/") {
        path = rest.find('/').map_or("", |i| &rest[i..]);
    }
    path.trim_end_matches('/')
}

/// Lambda's deadline is wall-clock epoch milliseconds; this turns it into a monotonic instant.
/// A value that is not a plausible epoch time (local emulators send a duration such as 600000)
/// is ignored: the model timeout still bounds the call.
fn deadline_instant(deadline_ms: u64) -> Option<Instant> {
    const DAY_MS: u64 = 24 * 60 * 60 * 1000;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    if deadline_ms < now_ms.saturating_sub(DAY_MS) {
        tracing::debug!(deadline_ms, "ignoring an implausible invocation deadline");
        return None;
    }
    Some(Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms)))
}

/// "outer: inner: innermost", for logs.
pub fn chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The function: one per cold start, shared by every invocation.
pub struct App {
    chat: ChatService,
    max_message_bytes: usize,
    auth_mode: AuthMode,
}

impl App {
    pub fn new(chat: ChatService, max_message_bytes: usize, auth_mode: AuthMode) -> Self {
        App {
            chat,
            max_message_bytes,
            auth_mode,
        }
    }

    /// Where `session_id` is stored for this caller: scoped by the verified JWT `sub` in JWT
    /// mode (API Gateway's authorizer has checked the token), shared otherwise.
    fn key(&self, request: &Request, session_id: &SessionId) -> Result<SessionKey, ApiError> {
        if self.auth_mode != AuthMode::Jwt {
            return Ok(SessionKey::new(session_id, None));
        }
        let sub = match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => context
                .authorizer
                .as_ref()
                .and_then(|a| a.jwt.as_ref())
                .and_then(|jwt| jwt.claims.get("sub")),
            _ => None,
        };
        match sub.map(|s| s.trim()).filter(|s| !s.is_empty()) {
            Some(sub) => Ok(SessionKey::new(session_id, Some(sub))),
            None => Err(ApiError::Unauthorized),
        }
    }

    pub fn chat(&self) -> &ChatService {
        &self.chat
    }

    /// Answers one request; never fails at the Lambda level.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let context = request.lambda_context_ref();
        let request_id = context.map(|c| c.request_id.clone()).unwrap_or_default();
        let deadline = context.and_then(|c| deadline_instant(c.deadline));
        // The session id, once known, for the request's log line.
        let mut session = None;
        match self
            .route(&request, &request_id, deadline, &mut session)
            .await
        {
            Ok(response) => response,
            Err(e) => e.into_response(&request_id, session.as_ref().map(SessionId::as_str)),
        }
    }

    async fn route(
        &self,
        request: &Request,
        request_id: &str,
        deadline: Option<Instant>,
        session: &mut Option<SessionId>,
    ) -> Result<Response<Body>, ApiError> {
        let method = request.method();
        match Route::of(api_path(request)) {
            Route::Chat if method == Method::POST => {
                self.post_chat(request, request_id, deadline, session).await
            }
            Route::Chat => Err(ApiError::MethodNotAllowed {
                method: method.to_string(),
                allowed: "POST",
            }),
            Route::Session(segment) => {
                let session_id =
                    SessionId::parse(&percent_decode(segment).ok_or(ApiError::BadPath)?)?;
                let session_id = session.insert(session_id);
                let key = self.key(request, session_id)?;
                match *method {
                    Method::GET => self.get_session(session_id, &key, request_id).await,
                    Method::DELETE => self.delete_session(session_id, &key, request_id).await,
                    _ => Err(ApiError::MethodNotAllowed {
                        method: method.to_string(),
                        allowed: "GET, DELETE",
                    }),
                }
            }
            Route::Sessions | Route::NotFound => Err(ApiError::NotFound(format!(
                "{method} {}",
                request.raw_http_path()
            ))),
        }
    }

    async fn get_session(
        &self,
        session_id: &SessionId,
        key: &SessionKey,
        request_id: &str,
    ) -> Result<Response<Body>, ApiError> {
        let runs = self
            .chat
            .history(key)
            .await?
            .ok_or_else(|| ApiError::SessionNotFound(session_id.to_string()))?;
        let runs: Vec<Value> = runs
            .iter()
            .map(|r| json!({"id": r.id, "input": r.input, "output": r.output}))
            .collect();
        tracing::info!(request_id, session_id = %session_id, runs = runs.len(), outcome = "read", "session read");
        Ok(json_response(
            StatusCode::OK,
            &json!({"session_id": session_id.as_str(), "runs": runs}),
        ))
    }

    async fn delete_session(
        &self,
        session_id: &SessionId,
        key: &SessionKey,
        request_id: &str,
    ) -> Result<Response<Body>, ApiError> {
        if !self.chat.forget(key).await? {
            return Err(ApiError::SessionNotFound(session_id.to_string()));
        }
        tracing::info!(request_id, session_id = %session_id, outcome = "deleted", "session deleted");
        let mut response = Response::new(Body::Empty);
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    async fn post_chat(
        &self,
        request: &Request,
        request_id: &str,
        deadline: Option<Instant>,
        session: &mut Option<SessionId>,
    ) -> Result<Response<Body>, ApiError> {
        let ChatRequest {
            session_id,
            message,
        } = parse_chat_body(body_bytes(request.body()), self.max_message_bytes)?;
        let session_id = session.insert(session_id);
        let session_key = self.key(request, session_id)?;
        let key = match request.headers().get("idempotency-key") {
            None => None,
            Some(v) => Some(IdempotencyKey::parse(
                v.to_str().map_err(|_| InputError::IdempotencyKey)?,
            )?),
        };

        let reply = self
            .chat
            .send(&session_key, &message, deadline, key.as_ref())
            .await?;
        let t = reply.timings;
        tracing::info!(
            request_id,
            session_id = %session_id,
            run_id = %reply.run_id,
            load_ms = t.load_ms,
            model_ms = t.model_ms,
            save_ms = t.save_ms,
            save_attempts = t.save_attempts,
            prompt_tokens = reply.usage.map(|u| u.prompt_tokens),
            completion_tokens = reply.usage.map(|u| u.completion_tokens),
            outcome = if reply.replayed { "replayed" } else { "ok" },
            "chat turn"
        );
        let mut response = json_response(
            StatusCode::OK,
            &json!({"session_id": session_id.as_str(), "run_id": reply.run_id, "reply": reply.text}),
        );
        if reply.replayed {
            response.headers_mut().insert(
                "idempotent-replayed",
                header::HeaderValue::from_static("true"),
            );
        }
        Ok(response)
    }
}

/// A checked `POST /chat` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequest {
    pub session_id: SessionId,
    pub message: Message,
}

/// Parses a `POST /chat` body: a JSON object with string fields `session_id` and `message`.
pub fn parse_chat_body(bytes: &[u8], max_message_bytes: usize) -> Result<ChatRequest, ApiError> {
    let fields = json_object(bytes)?;
    let session_id = SessionId::parse(string_field(&fields, "session_id")?)?;
    let message = Message::parse(string_field(&fields, "message")?, max_message_bytes)?;
    Ok(ChatRequest {
        session_id,
        message,
    })
}

/// Base64-encoded bodies arrive already decoded as `Body::Binary`.
fn body_bytes(body: &Body) -> &[u8] {
    match body {
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => b"",
    }
}

fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidRequest(
            "the request body is empty; send a JSON object with session_id and message".into(),
        ));
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(ApiError::InvalidRequest(
            "the request body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::InvalidRequest(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

fn string_field<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, ApiError> {
    match fields.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::InvalidRequest(format!("{name} must be a string"))),
        None => Err(ApiError::InvalidRequest(format!("{name} is required"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines() {
        assert_eq!(deadline_instant(0), None);
        assert_eq!(
            deadline_instant(600_000),
            None,
            "a duration is not a deadline"
        );
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let left = deadline_instant(now_ms + 5_000).unwrap() - Instant::now();
        assert!(left > Duration::from_secs(4) && left <= Duration::from_secs(5));
        let past = deadline_instant(now_ms - 1_000).unwrap();
        assert!(past <= Instant::now(), "an expired deadline leaves no time");
    }

    #[test]
    fn path_segments() {
        assert_eq!(percent_decode("user%40x%3A1").as_deref(), Some("user@x:1"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        for bad in ["%", "%4", "%zz", "%ff", "%e2%82"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn chat_bodies() {
        let ok = parse_chat_body(br#"{"session_id": "s", "message": "hi", "extra": 1}"#, 10);
        assert_eq!(ok.unwrap().message.as_str(), "hi");
        for (body, code) in [
            (&b""[..], "invalid_request"),
            (b"\xff\xfe", "invalid_request"),
            (b"null", "invalid_request"),
            (
                br#"{"session_id": "s", "message": "hello world"}"#,
                "message_too_long",
            ),
            (
                br#"{"session_id": "s s", "message": "hi"}"#,
                "invalid_session_id",
            ),
        ] {
            assert_eq!(parse_chat_body(body, 10).unwrap_err().code(), code);
        }
    }

    #[test]
    fn every_error_is_json_with_its_status() {
        let response = ApiError::Busy.into_response("r1", Some("s"));
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let Body::Text(text) = response.body() else {
            panic!("text body")
        };
        let json: Value = serde_json::from_str(text).unwrap();
        assert_eq!(json["error"]["code"], "session_busy");
    }
}
