//! The HTTP adapter: routes API Gateway requests, parses and checks them, runs the chat cycle and
//! maps every outcome to a JSON response, or, for `POST /chat` with `Accept: text/event-stream`,
//! to server-sent events written as the model answers. Nothing here panics on input, and no
//! internal detail (SDK messages, keys, stack traces) reaches a response body: causes are logged
//! instead.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use lambda_http::http::{header, Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::chat::{ChatError, ChatService, Progress, Reply};
use crate::config::{AuthMode, Config, InvokeMode};
use crate::deadline::Deadline;
use crate::input::{IdempotencyKey, InputError, Message, OwnerKey, SessionId, SessionKey, Title};
use crate::page::Page;
use crate::store::{Cursor, Deleted, PageLimit, Span};

/// Runs a history page holds unless `limit` asks for fewer (or more, up to the maximum).
pub const DEFAULT_HISTORY_LIMIT: usize = 50;
pub const MAX_HISTORY_LIMIT: usize = 200;
/// Sessions a listing page holds unless `limit` says otherwise.
pub const DEFAULT_LIST_LIMIT: usize = 20;
pub const MAX_LIST_LIMIT: usize = 100;
/// About this many bytes of run text at most in one history response (Lambda's limit is 6 MB).
pub const HISTORY_PAGE_BYTES: usize = 2 * 1024 * 1024;

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
    /// Whatever the chat cycle or the store said; see [`ApiError::status`].
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// 500 `internal`: a streamed turn's task ended without an outcome.
    #[error("the turn ended without an outcome")]
    TurnLost,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) | ApiError::BadPath => StatusCode::BAD_REQUEST,
            ApiError::Input(InputError::MessageTooLong { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Input(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::SessionNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TurnLost => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Chat(e) => match e {
                ChatError::ModelFailed(_) | ChatError::ReplyTooLarge(_) => StatusCode::BAD_GATEWAY,
                ChatError::ModelTimeout => StatusCode::GATEWAY_TIMEOUT,
                ChatError::StoreUnavailable(_)
                | ChatError::StoreTimeout
                | ChatError::SaveUnconfirmed
                | ChatError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
                ChatError::Corrupt(_) | ChatError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                ChatError::KeyReused => StatusCode::CONFLICT,
                ChatError::InvalidCursor => StatusCode::BAD_REQUEST,
                ChatError::Forbidden => StatusCode::FORBIDDEN,
                ChatError::ListingDisabled => StatusCode::NOT_FOUND,
            },
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) | ApiError::BadPath => "invalid_request",
            ApiError::Input(InputError::MessageTooLong { .. }) => "message_too_long",
            ApiError::Input(InputError::BlankMessage) => "invalid_message",
            ApiError::Input(InputError::IdempotencyKey) => "invalid_idempotency_key",
            ApiError::Input(InputError::Owner) => "invalid_owner",
            ApiError::Input(InputError::Title) => "invalid_title",
            ApiError::Input(_) => "invalid_session_id",
            ApiError::NotFound(_) => "not_found",
            ApiError::SessionNotFound(_) => "session_not_found",
            ApiError::Unauthorized => "unauthorized",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::TurnLost => "internal",
            ApiError::Chat(e) => match e {
                ChatError::ModelFailed(_) | ChatError::ReplyTooLarge(_) => "model_error",
                ChatError::ModelTimeout => "model_timeout",
                ChatError::StoreUnavailable(_) | ChatError::StoreTimeout => "store_unavailable",
                ChatError::SaveUnconfirmed => "save_unconfirmed",
                ChatError::Busy(_) => "session_busy",
                ChatError::Corrupt(_) => "corrupt_session",
                ChatError::Internal(_) => "internal",
                ChatError::KeyReused => "idempotency_key_reused",
                ChatError::InvalidCursor => "invalid_cursor",
                ChatError::Forbidden => "forbidden",
                ChatError::ListingDisabled => "listing_disabled",
            },
        }
    }

    /// What the client is told: our own words, never a cause's.
    fn public_message(&self) -> String {
        let e = match self {
            ApiError::Chat(e) => e,
            ApiError::TurnLost => return "internal error; nothing was stored".into(),
            _ => return self.to_string(),
        };
        match e {
            ChatError::ModelFailed(_) => {
                "the model failed to give a usable answer; nothing was stored".into()
            }
            ChatError::ReplyTooLarge(_) => {
                "the model's reply is larger than a turn can store (2.5 MiB); nothing was stored"
                    .into()
            }
            ChatError::ModelTimeout => {
                "the model did not answer in time; nothing was stored".into()
            }
            ChatError::StoreUnavailable(_) | ChatError::StoreTimeout => {
                "the session table is unavailable; nothing was changed, retry later".into()
            }
            ChatError::SaveUnconfirmed => "the reply's save did not confirm in time; it may have \
                been stored. Retry with the same Idempotency-Key to get it without a second run"
                .into(),
            ChatError::Busy(_) => "the session is busy; nothing was changed, retry shortly".into(),
            ChatError::Corrupt(_) => {
                "the stored session cannot be read; it was left unchanged".into()
            }
            ChatError::Internal(_) => "internal error; nothing was changed".into(),
            ChatError::KeyReused
            | ChatError::InvalidCursor
            | ChatError::Forbidden
            | ChatError::ListingDisabled => e.to_string(),
        }
    }

    /// Logs the request's one line: the cause chain for server errors (never sent to the
    /// client), the refusal for client errors.
    fn log(&self, request_id: &str, session_id: Option<&str>) {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(request_id, session_id, outcome = self.code(), status = status.as_u16(), cause = %chain(self), "request failed");
        } else {
            tracing::info!(request_id, session_id, outcome = self.code(), status = status.as_u16(), error = %self, "request refused");
        }
    }

    /// What the client is told: `{"error": {"code", "message"}}`.
    fn body(&self) -> Value {
        json!({"error": {"code": self.code(), "message": self.public_message()}})
    }

    /// The response, after logging the request's one line.
    pub(crate) fn into_response(
        self,
        request_id: &str,
        session_id: Option<&str>,
    ) -> Response<Body> {
        self.log(request_id, session_id);
        let status = self.status();
        let mut response = json_response(status, &self.body());
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
    /// `/`: the chat page.
    Page,
    /// `/chat`
    Chat,
    /// `/sessions`: the caller's sessions (list, erase).
    Sessions,
    /// `/sessions/{session_id}`, the segment still percent-encoded.
    Session(&'a str),
    NotFound,
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Route<'a> {
        match path {
            "" => Route::Page,
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

pub use crate::error::chain;

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
    chat: Arc<ChatService>,
    max_message_bytes: usize,
    auth_mode: AuthMode,
    jwt_audience: Option<String>,
    invoke_mode: InvokeMode,
    /// The chat page, assembled on its first request (not at cold start).
    page: OnceLock<Page>,
}

impl App {
    pub fn new(chat: ChatService, config: &Config) -> Self {
        App {
            chat: Arc::new(chat),
            max_message_bytes: config.max_message_bytes,
            auth_mode: config.auth_mode,
            jwt_audience: config.jwt_audience.clone(),
            invoke_mode: config.invoke_mode,
            page: OnceLock::new(),
        }
    }

    /// Where `session_id` is stored for this caller: scoped by the verified JWT `sub` in JWT
    /// mode (API Gateway's authorizer has checked the token), shared otherwise. The HTTP API's
    /// JWT authorizer (v2 events) checks issuer and audience; the REST API's Cognito user-pool
    /// authorizer (v1 events) checks the issuer only, so its claims must also name
    /// `JWT_AUDIENCE` when that is set.
    fn key(&self, request: &Request, session_id: &SessionId) -> Result<SessionKey, ApiError> {
        if self.auth_mode != AuthMode::Jwt {
            return Ok(SessionKey::new(session_id, None));
        }
        match self.verified_sub(request) {
            Some(sub) => Ok(SessionKey::new(session_id, Some(sub))),
            None => Err(ApiError::Unauthorized),
        }
    }

    /// The verified `sub` of a JWT caller: the HTTP API's JWT authorizer (v2 events) checks
    /// issuer and audience; the REST API's Cognito user-pool authorizer (v1 events) checks the
    /// issuer only, so its claims must also name `JWT_AUDIENCE` when that is set.
    fn verified_sub<'r>(&self, request: &'r Request) -> Option<&'r str> {
        let sub = match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => context
                .authorizer
                .as_ref()
                .and_then(|a| a.jwt.as_ref())
                .and_then(|jwt| jwt.claims.get("sub"))
                .map(String::as_str),
            Some(RequestContext::ApiGatewayV1(context)) => {
                let claims = context.authorizer.fields.get("claims");
                let claim = |name: &str| claims.and_then(|c| c.get(name)).and_then(Value::as_str);
                let audience_ok = match &self.jwt_audience {
                    None => true,
                    Some(audience) => [claim("aud"), claim("client_id")].contains(&Some(audience)),
                };
                claim("sub").filter(|_| audience_ok)
            }
            _ => None,
        };
        sub.filter(|s| !s.is_empty())
    }

    pub fn chat(&self) -> &ChatService {
        &self.chat
    }

    /// How answers go back unless the event says otherwise (`INVOKE_MODE`).
    pub fn invoke_mode(&self) -> InvokeMode {
        self.invoke_mode
    }

    /// Answers one request as one whole response (events, if asked for, all at once); never
    /// fails at the Lambda level.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        self.serve(request).await.into_response().await
    }

    /// Answers one request: a whole response, or events to stream as the turn goes.
    pub async fn serve(&self, request: Request) -> Answer {
        let context = request.lambda_context_ref();
        let request_id = context.map(|c| c.request_id.clone()).unwrap_or_default();
        let deadline = context.map_or(Deadline::NONE, |c| Deadline::from_epoch_ms(c.deadline));
        // The session id, once known, for the request's log line.
        let mut session = None;
        match self
            .route(&request, &request_id, deadline, &mut session)
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                Answer::Whole(e.into_response(&request_id, session.as_ref().map(SessionId::as_str)))
            }
        }
    }

    async fn route(
        &self,
        request: &Request,
        request_id: &str,
        deadline: Deadline,
        session: &mut Option<SessionId>,
    ) -> Result<Answer, ApiError> {
        let method = request.method();
        match Route::of(api_path(request)) {
            Route::Page if method == Method::GET => {
                let page = self.page.get_or_init(|| Page::new(self.auth_mode));
                let response = page.response(request.headers());
                tracing::info!(
                    request_id,
                    status = response.status().as_u16(),
                    outcome = "page",
                    "page served"
                );
                Ok(Answer::Whole(response))
            }
            Route::Page => Err(ApiError::MethodNotAllowed {
                method: method.to_string(),
                allowed: "GET",
            }),
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
                    Method::GET => self
                        .get_session(request, session_id, &key, request_id, deadline)
                        .await
                        .map(Answer::Whole),
                    Method::DELETE => self
                        .delete_session(session_id, &key, request_id, deadline)
                        .await
                        .map(Answer::Whole),
                    Method::PATCH => self
                        .patch_session(request, session_id, &key, deadline)
                        .await
                        .map(Answer::Whole),
                    _ => Err(ApiError::MethodNotAllowed {
                        method: method.to_string(),
                        allowed: "GET, DELETE, PATCH",
                    }),
                }
            }
            Route::Sessions => match *method {
                Method::GET => self
                    .list_sessions(request, request_id, deadline)
                    .await
                    .map(Answer::Whole),
                Method::DELETE => self
                    .erase_sessions(request, request_id, deadline)
                    .await
                    .map(Answer::Whole),
                _ => Err(ApiError::MethodNotAllowed {
                    method: method.to_string(),
                    allowed: "GET, DELETE",
                }),
            },
            Route::NotFound => Err(ApiError::NotFound(format!(
                "{method} {}",
                request.raw_http_path()
            ))),
        }
    }

    /// Whose sessions a request is about: the verified `sub` in JWT mode (a named owner is
    /// refused there), else the owner a trusted backend names, if any.
    fn owner(&self, request: &Request, named: Option<&str>) -> Result<Option<OwnerKey>, ApiError> {
        if self.auth_mode != AuthMode::Jwt {
            return named
                .map(OwnerKey::parse_user)
                .transpose()
                .map_err(ApiError::from);
        }
        if named.is_some() {
            return Err(ApiError::InvalidRequest(
                "owner is the token's subject in JWT mode; leave it out".into(),
            ));
        }
        match self.verified_sub(request) {
            Some(sub) => Ok(Some(OwnerKey::from_sub(sub))),
            None => Err(ApiError::Unauthorized),
        }
    }

    /// The owner a listing or erase is for: required.
    fn owner_of_query(&self, request: &Request) -> Result<OwnerKey, ApiError> {
        let query = request.query_string_parameters_ref();
        let named = query.and_then(|q| q.first("owner"));
        self.owner(request, named)?.ok_or_else(|| {
            ApiError::InvalidRequest("owner is required: GET /sessions?owner=<user>".into())
        })
    }

    async fn list_sessions(
        &self,
        request: &Request,
        request_id: &str,
        deadline: Deadline,
    ) -> Result<Response<Body>, ApiError> {
        let owner = self.owner_of_query(request)?;
        let query = request.query_string_parameters_ref();
        let param = |name: &str| query.and_then(|q| q.first(name));
        let limit = parse_limit(param("limit"), DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)?;
        let page = self
            .chat
            .list(owner.as_str(), limit, param("cursor"), deadline)
            .await?;
        let sessions: Vec<Value> = page
            .sessions
            .iter()
            .map(|l| {
                json!({
                    "session_id": l.session_id,
                    "created_at": l.created_at,
                    "updated_at": l.updated_at,
                    "runs": l.runs,
                    "title": l.title,
                    "preview": l.preview,
                })
            })
            .collect();
        tracing::info!(
            request_id,
            sessions = sessions.len(),
            outcome = "listed",
            "sessions listed"
        );
        Ok(json_response(
            StatusCode::OK,
            &json!({"sessions": sessions, "next_cursor": page.next}),
        ))
    }

    async fn erase_sessions(
        &self,
        request: &Request,
        request_id: &str,
        deadline: Deadline,
    ) -> Result<Response<Body>, ApiError> {
        let owner = self.owner_of_query(request)?;
        let erased = self.chat.erase(owner.as_str(), deadline).await?;
        tracing::info!(
            request_id,
            deleted = erased.deleted,
            remaining = erased.remaining,
            outcome = "erased",
            "sessions erased"
        );
        if erased.remaining {
            return Ok(json_response(
                StatusCode::ACCEPTED,
                &json!({"deleted": erased.deleted, "remaining": true}),
            ));
        }
        let mut response = Response::new(Body::Empty);
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    async fn patch_session(
        &self,
        request: &Request,
        session_id: &SessionId,
        key: &SessionKey,
        deadline: Deadline,
    ) -> Result<Response<Body>, ApiError> {
        let fields = json_object(body_bytes(request.body()))?;
        let title = Title::parse(string_field(&fields, "title")?)?;
        if !self.chat.set_title(key, title.as_str(), deadline).await? {
            return Err(ApiError::SessionNotFound(session_id.to_string()));
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({"session_id": session_id.as_str(), "title": title.as_str()}),
        ))
    }

    async fn get_session(
        &self,
        request: &Request,
        session_id: &SessionId,
        key: &SessionKey,
        request_id: &str,
        deadline: Deadline,
    ) -> Result<Response<Body>, ApiError> {
        let query = request.query_string_parameters_ref();
        let param = |name: &str| query.and_then(|q| q.first(name));
        let limit = parse_limit(param("limit"), DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT)?;
        let parse = |text: &str| Cursor::parse(text).ok_or(ChatError::InvalidCursor);
        let (cursor, before) = match (param("cursor"), param("before")) {
            (None, None) => (None, false),
            (Some(text), None) => (Some(parse(text)?), false),
            (None, Some("end")) => (None, true),
            (None, Some(text)) => (Some(parse(text)?), true),
            (Some(_), Some(_)) => {
                return Err(ApiError::InvalidRequest(
                    "give cursor (newer runs) or before (older runs), not both".into(),
                ))
            }
        };
        let span = if before {
            Span::Before(cursor.as_ref())
        } else {
            Span::From(cursor.as_ref())
        };
        let limit = PageLimit {
            runs: limit,
            bytes: HISTORY_PAGE_BYTES,
        };
        let page = self
            .chat
            .history(key, span, limit, deadline)
            .await?
            .ok_or_else(|| ApiError::SessionNotFound(session_id.to_string()))?;
        let runs: Vec<Value> = page
            .runs
            .iter()
            .map(|r| json!({"id": r.id, "input": r.input, "output": r.output}))
            .collect();
        tracing::info!(request_id, session_id = %session_id, runs = runs.len(), outcome = "read", "session read");
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "session_id": session_id.as_str(),
                "runs": runs,
                "next_cursor": page.next.map(|c| c.encode()),
                "prev_cursor": page.prev.map(|c| c.encode()),
            }),
        ))
    }

    async fn delete_session(
        &self,
        session_id: &SessionId,
        key: &SessionKey,
        request_id: &str,
        deadline: Deadline,
    ) -> Result<Response<Body>, ApiError> {
        match self.chat.forget(key, deadline).await? {
            Deleted::NotFound => Err(ApiError::SessionNotFound(session_id.to_string())),
            Deleted::Gone { complete: true } => {
                tracing::info!(request_id, session_id = %session_id, outcome = "deleted", "session deleted");
                let mut response = Response::new(Body::Empty);
                *response.status_mut() = StatusCode::NO_CONTENT;
                Ok(response)
            }
            Deleted::Gone { complete: false } => {
                tracing::info!(request_id, session_id = %session_id, outcome = "deleted_partly", "session deleted; cleanup goes on");
                Ok(json_response(
                    StatusCode::ACCEPTED,
                    &json!({"deleted": true, "complete": false}),
                ))
            }
        }
    }

    async fn post_chat(
        &self,
        request: &Request,
        request_id: &str,
        deadline: Deadline,
        session: &mut Option<SessionId>,
    ) -> Result<Answer, ApiError> {
        let ChatRequest {
            session_id,
            message,
            owner,
        } = parse_chat_body(body_bytes(request.body()), self.max_message_bytes)?;
        let session_id = session.insert(session_id);
        let session_key = self.key(request, session_id)?;
        let owner = self.owner(request, owner.as_deref())?;
        let key = match request.headers().get("idempotency-key") {
            None => None,
            Some(v) => Some(IdempotencyKey::parse(
                v.to_str().map_err(|_| InputError::IdempotencyKey)?,
            )?),
        };
        if wants_events(request) {
            let turn = StreamedTurn {
                owner,
                request_id: request_id.to_owned(),
                session_id: session_id.clone(),
                session_key,
                message,
                key,
                deadline,
            };
            return turn.start(Arc::clone(&self.chat)).await;
        }

        let reply = self
            .chat
            .send_for(
                owner.as_ref().map(OwnerKey::as_str),
                &session_key,
                &message,
                deadline,
                key.as_ref(),
            )
            .await?;
        log_turn(request_id, session_id, &reply, false);
        let mut response = json_response(
            StatusCode::OK,
            &json!({"session_id": session_id.as_str(), "run_id": reply.run_id, "reply": reply.text}),
        );
        if reply.replayed {
            mark_replayed(response.headers_mut());
        }
        Ok(Answer::Whole(response))
    }
}

/// The request's one line for a turn that was answered.
fn log_turn(request_id: &str, session_id: &SessionId, reply: &Reply, streamed: bool) {
    let t = reply.timings;
    tracing::info!(
        request_id,
        session_id = %session_id,
        run_id = %reply.run_id,
        streamed,
        load_ms = t.load_ms,
        model_ms = t.model_ms,
        first_piece_ms = t.first_piece_ms,
        save_ms = t.save_ms,
        save_attempts = t.save_attempts,
        prompt_tokens = reply.usage.map(|u| u.prompt_tokens),
        completion_tokens = reply.usage.map(|u| u.completion_tokens),
        outcome = if reply.replayed { "replayed" } else { "ok" },
        "chat turn"
    );
}

fn mark_replayed(headers: &mut header::HeaderMap) {
    headers.insert(
        "idempotent-replayed",
        header::HeaderValue::from_static("true"),
    );
}

/// Whether the client takes server-sent events (`Accept: text/event-stream`, any parameters).
fn wants_events(request: &Request) -> bool {
    request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let media = range.split(';').next().unwrap_or_default().trim();
            media.eq_ignore_ascii_case("text/event-stream")
        })
}

/// One server-sent event: `event: <name>`, then its JSON data.
fn sse(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// What the function answers: one whole response, or server-sent events as a turn goes.
pub enum Answer {
    Whole(Response<Body>),
    /// `head` is the status and headers; the events follow as they are written.
    Events {
        head: Response<()>,
        events: EventStream,
    },
}

impl Answer {
    /// The answer as one response: events are waited for and sent together.
    pub async fn into_response(self) -> Response<Body> {
        match self {
            Answer::Whole(response) => response,
            Answer::Events { head, mut events } => {
                let mut text = String::new();
                while let Some(event) = events.next_event().await {
                    text.push_str(&event);
                }
                head.map(|()| Body::Text(text))
            }
        }
    }
}

/// What a streamed turn's task reports.
enum TurnEvent {
    Asking,
    Delta(String),
    Finished(Result<Reply, ChatError>),
}

/// A `POST /chat` answered with server-sent events.
struct StreamedTurn {
    owner: Option<OwnerKey>,
    request_id: String,
    session_id: SessionId,
    session_key: SessionKey,
    message: Message,
    key: Option<IdempotencyKey>,
    deadline: Deadline,
}

impl StreamedTurn {
    /// Runs the turn in a task of its own, so it goes on (and saves) whoever reads the events,
    /// and waits until it is refused (a JSON error, as without streaming), replayed, or the
    /// model is asked: then the events start.
    async fn start(self, chat: Arc<ChatService>) -> Result<Answer, ApiError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let StreamedTurn {
            owner,
            request_id,
            session_id,
            session_key,
            message,
            key,
            deadline,
        } = self;
        tokio::spawn(async move {
            let mut progress = |p: Progress<'_>| {
                // A client gone away does not stop the turn: the run is saved all the same.
                let _ = tx.send(match p {
                    Progress::Asking => TurnEvent::Asking,
                    Progress::Delta(piece) => TurnEvent::Delta(piece.to_owned()),
                });
            };
            let result = chat
                .send_streaming(
                    owner.as_ref().map(OwnerKey::as_str),
                    &session_key,
                    &message,
                    deadline,
                    key.as_ref(),
                    &mut progress,
                )
                .await;
            let _ = tx.send(TurnEvent::Finished(result));
        });
        let mut events = EventStream {
            rx,
            request_id,
            session_id,
            ended: false,
            first: None,
        };
        let mut head = Response::new(());
        head.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/event-stream"),
        );
        head.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
        match events.rx.recv().await {
            Some(TurnEvent::Asking) => {}
            Some(TurnEvent::Finished(Ok(reply))) => {
                // Replayed from a receipt: the saved reply as one delta, then done.
                log_turn(&events.request_id, &events.session_id, &reply, true);
                mark_replayed(head.headers_mut());
                events.first = Some(format!(
                    "{}{}",
                    sse("delta", &json!({"text": reply.text})),
                    events.done(&reply)
                ));
                events.ended = true;
            }
            Some(TurnEvent::Finished(Err(e))) => return Err(e.into()),
            Some(TurnEvent::Delta(piece)) => {
                events.first = Some(sse("delta", &json!({"text": piece})))
            }
            None => return Err(ApiError::TurnLost),
        }
        Ok(Answer::Events { head, events })
    }
}

/// A streamed turn's events, as server-sent event text: `delta`s, then `done` or `error`.
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<TurnEvent>,
    request_id: String,
    session_id: SessionId,
    /// The last event was written.
    ended: bool,
    /// An event written before the stream was handed on.
    first: Option<String>,
}

impl EventStream {
    /// The next event's text once it is there; `None` after the last.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<String>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        loop {
            let event = match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(event) => event,
            };
            let text = match event {
                Some(TurnEvent::Asking) => continue,
                Some(TurnEvent::Delta(piece)) => sse("delta", &json!({"text": piece})),
                Some(TurnEvent::Finished(Ok(reply))) => {
                    self.ended = true;
                    log_turn(&self.request_id, &self.session_id, &reply, true);
                    self.done(&reply)
                }
                Some(TurnEvent::Finished(Err(e))) => self.error(e.into()),
                None => self.error(ApiError::TurnLost),
            };
            return Poll::Ready(Some(text));
        }
    }

    pub async fn next_event(&mut self) -> Option<String> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn done(&self, reply: &Reply) -> String {
        sse(
            "done",
            &json!({"session_id": self.session_id.as_str(), "run_id": reply.run_id, "reply": reply.text}),
        )
    }

    /// The turn failed after the events began: logged like a refused request, sent as the
    /// last event. Nothing was stored (but for `save_unconfirmed`, as without streaming).
    fn error(&mut self, e: ApiError) -> String {
        self.ended = true;
        e.log(&self.request_id, Some(self.session_id.as_str()));
        sse("error", &e.body())
    }
}

fn parse_limit(text: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match text {
        None => Ok(default),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::InvalidRequest(format!("limit must be a whole number from 1 to {max}"))
            }),
    }
}

/// A checked `POST /chat` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequest {
    pub session_id: SessionId,
    pub message: Message,
    /// The user a trusted backend says the session is for (listings), if any.
    pub owner: Option<String>,
}

/// Parses a `POST /chat` body: a JSON object with string fields `session_id` and `message`.
pub fn parse_chat_body(bytes: &[u8], max_message_bytes: usize) -> Result<ChatRequest, ApiError> {
    let fields = json_object(bytes)?;
    let session_id = SessionId::parse(string_field(&fields, "session_id")?)?;
    let message = Message::parse(string_field(&fields, "message")?, max_message_bytes)?;
    let owner = match fields.get("owner") {
        None | Some(Value::Null) => None,
        Some(Value::String(owner)) => Some(owner.clone()),
        Some(_) => return Err(ApiError::InvalidRequest("owner must be a string".into())),
    };
    Ok(ChatRequest {
        session_id,
        message,
        owner,
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
        let response = ApiError::Chat(ChatError::Busy(3)).into_response("r1", Some("s"));
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let Body::Text(text) = response.body() else {
            panic!("text body")
        };
        let json: Value = serde_json::from_str(text).unwrap();
        assert_eq!(json["error"]["code"], "session_busy");
    }
}
