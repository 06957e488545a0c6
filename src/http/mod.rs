//! The HTTP adapter: routes API Gateway requests, parses and checks them, runs the chat cycle and
//! maps every outcome to a JSON response, or, for `POST /chat` with `Accept: text/event-stream`,
//! to server-sent events written as the model answers. Nothing here panics on input, and no
//! internal detail (SDK messages, keys, stack traces) reaches a response body: causes are logged
//! instead.
//!
//! - [`error`]: every failure to (status, code, message);
//! - `auth`: who the caller is (the verified JWT `sub`, or the owner a trusted backend names);
//! - `extract`: request bodies and query parameters as typed values;
//! - `chat` and `stream`: `POST /chat`, whole or as server-sent events;
//! - `sessions`: `/sessions` and `/sessions/{id}`;
//! - `page`: the chat page at `GET /`.

mod answered;
mod auth;
mod chat;
pub mod error;
mod extract;
mod page;
mod responses;
mod sessions;
mod stream;
mod versions;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use lambda_http::http::{header, Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};

use crate::chat::ChatService;
use crate::config::{AuthMode, Config};
use crate::deadline::Deadline;
use crate::input::{SessionId, SessionKey};
use crate::metrics::Values;

pub use error::ApiError;
pub use extract::{parse_chat_body, ChatRequest};
pub use page::Page;
pub use stream::EventStream;

/// Runs a history page holds unless `limit` asks for fewer (or more, up to the maximum).
pub const DEFAULT_HISTORY_LIMIT: usize = 50;
pub const MAX_HISTORY_LIMIT: usize = 200;
/// Sessions a listing page holds unless `limit` says otherwise.
pub const DEFAULT_LIST_LIMIT: usize = 20;
pub const MAX_LIST_LIMIT: usize = 100;
/// About this many bytes of run text at most in one history response (Lambda's limit is 6 MB).
pub const HISTORY_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// What the HTTP adapter takes from the configuration.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub max_message_bytes: usize,
    pub auth_mode: AuthMode,
    /// In JWT mode, the audience a REST API Cognito authorizer's claims must name.
    pub jwt_audience: Option<String>,
    /// The model that answers, as the Responses API names it.
    pub model_id: String,
}

impl HttpSettings {
    pub fn from_config(config: &Config) -> HttpSettings {
        HttpSettings {
            max_message_bytes: config.max_message_bytes,
            auth_mode: config.auth_mode,
            jwt_audience: config.jwt_audience.clone(),
            model_id: config.model_id.clone(),
        }
    }
}

/// The function: one per cold start, shared by every invocation.
pub struct App {
    chat: Arc<ChatService>,
    settings: HttpSettings,
    /// The chat page, assembled on its first request (not at cold start).
    page: OnceLock<Page>,
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

/// One request as the route handlers see it: what was sent, when the caller stops waiting,
/// and the session it turned out to be about (for the request's log line).
pub(crate) struct Call<'r> {
    pub request: &'r Request,
    pub deadline: Deadline,
    /// When the request came, for its `Latency`.
    pub started: Instant,
    session: OnceLock<SessionId>,
}

impl<'r> Call<'r> {
    fn new(request: &'r Request) -> Call<'r> {
        let context = request.lambda_context_ref();
        Call {
            request,
            deadline: context.map_or(Deadline::NONE, |c| Deadline::from_epoch_ms(c.deadline)),
            started: Instant::now(),
            session: OnceLock::new(),
        }
    }

    /// The invocation's request id, for log lines.
    pub fn request_id(&self) -> &str {
        self.request
            .lambda_context_ref()
            .map_or("", |c| c.request_id.as_str())
    }

    /// The metrics of this request answered with `status` (its log line's `emf` field).
    pub fn metrics(&self, status: u16) -> Values {
        Values::request(self.started, status)
    }

    /// Notes the session the request is about, and hands it back.
    pub fn about(&self, session_id: SessionId) -> &SessionId {
        self.session.get_or_init(|| session_id)
    }

    pub fn session_id(&self) -> Option<&str> {
        self.session.get().map(SessionId::as_str)
    }

    /// A query parameter's first value.
    pub fn param(&self, name: &str) -> Option<&'r str> {
        self.request
            .query_string_parameters_ref()
            .and_then(|q| q.first(name))
    }
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
    /// `/sessions/{session_id}/select`
    Select(&'a str),
    /// `/sessions/{session_id}/runs/{run_id}`
    Run(&'a str, &'a str),
    /// `/sessions/{session_id}/runs/{run_id}/feedback`
    Feedback(&'a str, &'a str),
    /// `/sessions/{session_id}/runs/{run_id}/stream`: a reply followed as it is written.
    RunStream(&'a str, &'a str),
    /// Below `/v1`: the Responses API.
    V1(responses::Route<'a>),
    NotFound,
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Route<'a> {
        match path {
            "" => Route::Page,
            "/chat" => Route::Chat,
            "/sessions" => Route::Sessions,
            _ => {
                if let Some(rest) = path.strip_prefix("/v1").filter(|r| r.starts_with('/')) {
                    return Route::V1(responses::Route::of(rest));
                }
                let Some(rest) = path.strip_prefix("/sessions/") else {
                    return Route::NotFound;
                };
                let parts: Vec<&str> = rest.split('/').collect();
                if parts.iter().any(|p| p.is_empty()) {
                    return Route::NotFound;
                }
                match parts.as_slice() {
                    [id] => Route::Session(id),
                    [id, "select"] => Route::Select(id),
                    [id, "runs", run] => Route::Run(id, run),
                    [id, "runs", run, "feedback"] => Route::Feedback(id, run),
                    [id, "runs", run, "stream"] => Route::RunStream(id, run),
                    _ => Route::NotFound,
                }
            }
        }
    }
}

impl App {
    pub fn new(chat: ChatService, settings: HttpSettings) -> Self {
        App {
            chat: Arc::new(chat),
            settings,
            page: OnceLock::new(),
        }
    }

    pub fn chat(&self) -> &ChatService {
        &self.chat
    }

    /// Answers one request as one whole response (events, if asked for, all at once); never
    /// fails at the Lambda level.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        self.serve(request).await.into_response().await
    }

    /// Answers one request: a whole response, or events to stream as the turn goes.
    pub async fn serve(&self, request: Request) -> Answer {
        let call = Call::new(&request);
        let dialect = match Route::of(api_path(&request)) {
            Route::V1(_) => error::Dialect::Responses,
            _ => error::Dialect::Chat,
        };
        match self.route(&call).await {
            Ok(answer) => answer,
            Err(e) => Answer::Whole(e.answer_in(
                dialect,
                call.request_id(),
                call.session_id(),
                call.started,
            )),
        }
    }

    async fn route(&self, call: &Call<'_>) -> Result<Answer, ApiError> {
        let method = call.request.method();
        let not_allowed = |allowed| ApiError::MethodNotAllowed {
            method: method.to_string(),
            allowed,
        };
        match Route::of(api_path(call.request)) {
            Route::Page if method == Method::GET => Ok(self.page(call)),
            Route::Page => Err(not_allowed("GET")),
            Route::Chat if method == Method::POST => self.post_chat(call).await,
            Route::Chat => Err(not_allowed("POST")),
            Route::Session(segment) => {
                let (session_id, key) = self.session_of(call, segment)?;
                let response = match *method {
                    Method::GET => self.get_session(call, session_id, &key).await,
                    Method::DELETE => self.delete_session(call, session_id, &key).await,
                    Method::PATCH => self.patch_session(call, session_id, &key).await,
                    _ => Err(not_allowed("GET, DELETE, PATCH")),
                };
                response.map(Answer::Whole)
            }
            Route::Select(segment) => {
                let (session_id, key) = self.session_of(call, segment)?;
                match *method {
                    Method::POST => self.post_select(call, session_id, &key).await,
                    _ => Err(not_allowed("POST")),
                }
                .map(Answer::Whole)
            }
            Route::Run(segment, run) => {
                let (session_id, key) = self.session_of(call, segment)?;
                let run = run_in_path(run)?;
                match *method {
                    Method::DELETE => self.delete_run(call, session_id, &key, &run).await,
                    _ => Err(not_allowed("DELETE")),
                }
                .map(Answer::Whole)
            }
            Route::Feedback(segment, run) => {
                let (session_id, key) = self.session_of(call, segment)?;
                let run = run_in_path(run)?;
                match *method {
                    Method::PUT => self.put_feedback(call, session_id, &key, &run).await,
                    _ => Err(not_allowed("PUT")),
                }
                .map(Answer::Whole)
            }
            Route::RunStream(segment, run) => {
                let (session_id, key) = self.session_of(call, segment)?;
                let run = run_in_path(run)?;
                match *method {
                    Method::GET => self.follow_run(call, session_id, key, &run).await,
                    _ => Err(not_allowed("GET")),
                }
            }
            Route::Sessions => match *method {
                Method::GET => self.list_sessions(call).await.map(Answer::Whole),
                Method::DELETE => self.erase_sessions(call).await.map(Answer::Whole),
                _ => Err(not_allowed("GET, DELETE")),
            },
            Route::V1(route) => self.responses_route(call, route).await,
            Route::NotFound => Err(ApiError::NotFound(format!(
                "{method} {}",
                call.request.raw_http_path()
            ))),
        }
    }

    /// The session a path's segment names, and the caller's key of it.
    fn session_of<'c>(
        &self,
        call: &'c Call<'_>,
        segment: &str,
    ) -> Result<(&'c SessionId, SessionKey), ApiError> {
        let id = extract::percent_decode(segment).ok_or(ApiError::BadPath)?;
        let session_id = call.about(SessionId::parse(&id)?);
        let key = self.session_key(call.request, session_id)?;
        Ok((session_id, key))
    }

    fn page(&self, call: &Call<'_>) -> Answer {
        let page = self.page.get_or_init(|| Page::new(self.settings.auth_mode));
        let response = page.response(call.request.headers());
        tracing::info!(
            request_id = call.request_id(),
            status = response.status().as_u16(),
            outcome = "page",
            "page served"
        );
        Answer::Whole(response)
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

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::Text(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON response of a serializable body.
fn json_ok<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    // Our bodies are plain structs of strings and numbers: serializing them cannot fail.
    json_response(status, serde_json::to_string(body).unwrap_or_default())
}

fn no_content() -> Response<Body> {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// A run id in the path, percent-decoded and checked.
fn run_in_path(segment: &str) -> Result<crate::input::RunId, ApiError> {
    let id = extract::percent_decode(segment).ok_or(ApiError::BadPath)?;
    Ok(crate::input::RunId::parse(&id)?)
}
