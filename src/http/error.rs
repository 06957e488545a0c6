//! Every way a request can fail, as the client sees it: one table from each failure to its
//! status, code and message ([`describe`]), with no wildcard arm, so a new failure cannot be
//! added without saying how it is answered.

use std::borrow::Cow;
use std::time::Instant;

use lambda_http::http::{header, StatusCode};
use lambda_http::{Body, Response};
use serde::Serialize;

use super::json_response;
use crate::chat::ChatError;
use crate::error::chain;
use crate::input::InputError;
use crate::metrics::{self, Values};
use crate::store::quota::QuotaKind;

/// Seconds a client is asked to wait before retrying a 503.
const RETRY_AFTER_SECS: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not a JSON object, or a field is missing or mistyped.
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Input(#[from] InputError),
    /// No such route.
    #[error("no route for {0}")]
    NotFound(String),
    /// No session with this id.
    #[error("no session {0}")]
    SessionNotFound(String),
    /// JWT mode, and the request carries no verified `sub` claim.
    #[error("this API needs a verified identity (a JWT with a sub claim)")]
    Unauthorized,
    /// The path's session id is not validly percent-encoded.
    #[error("the session id in the path is not validly percent-encoded")]
    BadPath,
    /// Answered with an `Allow` header.
    #[error("{method} is not allowed here; use {allowed}")]
    MethodNotAllowed {
        method: String,
        allowed: &'static str,
    },
    /// Whatever the chat cycle or the store said.
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// A streamed turn's task ended without an outcome.
    #[error("the turn ended without an outcome")]
    TurnLost,
    /// A Responses API parameter is wrong (its name goes in the error's `param`).
    #[error("{message}")]
    Param { param: String, message: String },
    /// A Responses API parameter asks for what this deployment does not do.
    #[error("{message}")]
    Unsupported { param: String, message: String },
    #[error("no response {0}")]
    ResponseNotFound(String),
    #[error("no conversation {0}")]
    ConversationNotFound(String),
    #[error("no item {0} in this conversation")]
    ItemNotFound(String),
}

/// Which of the API's two ways a client is told of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `{"error": {"code", "message"}}`
    Chat,
    /// The Responses API's `{"error": {"type", "code", "message", "param"}}`.
    Responses,
}

/// An error answer's metrics: `Errors` by code, and which part failed.
fn error_metrics(started: Instant, status: StatusCode, code: &'static str) -> Values {
    let mut v = Values::request(started, status.as_u16());
    v.error(code);
    let part = match code {
        "model_error" | "model_timeout" => Some(metrics::MODEL_ERRORS),
        "store_unavailable" | "corrupt_session" | "save_unconfirmed" => Some(metrics::STORE_ERRORS),
        "quota_exceeded" => Some(metrics::QUOTA_REFUSALS),
        _ => None,
    };
    if let Some(part) = part {
        v.set(part, 1.0);
    }
    v
}

/// How a failure is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub status: StatusCode,
    pub code: &'static str,
    /// Our own words, never a cause's.
    pub message: Cow<'static, str>,
}

fn said(
    status: StatusCode,
    code: &'static str,
    message: impl Into<Cow<'static, str>>,
) -> Described {
    Described {
        status,
        code,
        message: message.into(),
    }
}

/// The one table from every failure to (status, code, message).
pub fn describe(e: &ApiError) -> Described {
    let own = || e.to_string();
    match e {
        ApiError::InvalidRequest(_) | ApiError::BadPath => {
            said(StatusCode::BAD_REQUEST, "invalid_request", own())
        }
        ApiError::Input(input) => describe_input(input, own()),
        ApiError::NotFound(_) => said(StatusCode::NOT_FOUND, "not_found", own()),
        ApiError::SessionNotFound(_) => said(StatusCode::NOT_FOUND, "session_not_found", own()),
        ApiError::Unauthorized => said(StatusCode::UNAUTHORIZED, "unauthorized", own()),
        ApiError::MethodNotAllowed { .. } => {
            said(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", own())
        }
        ApiError::TurnLost => said(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; nothing was stored",
        ),
        ApiError::Chat(chat) => describe_chat(chat),
        ApiError::Param { .. } => said(StatusCode::BAD_REQUEST, "invalid_request", own()),
        ApiError::Unsupported { .. } => said(StatusCode::BAD_REQUEST, "unsupported", own()),
        ApiError::ResponseNotFound(_) => said(StatusCode::NOT_FOUND, "response_not_found", own()),
        ApiError::ConversationNotFound(_) => {
            said(StatusCode::NOT_FOUND, "conversation_not_found", own())
        }
        ApiError::ItemNotFound(_) => said(StatusCode::NOT_FOUND, "item_not_found", own()),
    }
}

/// The Responses API's error `type` of a status.
fn responses_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        502 | 504 => "model_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    }
}

fn describe_input(e: &InputError, message: String) -> Described {
    let (status, code) = match e {
        InputError::MessageTooLong { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "message_too_long"),
        InputError::BlankMessage => (StatusCode::BAD_REQUEST, "invalid_message"),
        InputError::IdempotencyKey => (StatusCode::BAD_REQUEST, "invalid_idempotency_key"),
        InputError::Owner => (StatusCode::BAD_REQUEST, "invalid_owner"),
        InputError::Title => (StatusCode::BAD_REQUEST, "invalid_title"),
        InputError::RunId => (StatusCode::BAD_REQUEST, "invalid_run_id"),
        InputError::Feedback => (StatusCode::BAD_REQUEST, "invalid_feedback"),
        InputError::SessionIdLength(_)
        | InputError::SessionIdCharacter(_)
        | InputError::SessionIdDots => (StatusCode::BAD_REQUEST, "invalid_session_id"),
    };
    said(status, code, message)
}

fn describe_chat(e: &ChatError) -> Described {
    const UNAVAILABLE: StatusCode = StatusCode::SERVICE_UNAVAILABLE;
    match e {
        ChatError::ModelFailed(_) => said(
            StatusCode::BAD_GATEWAY,
            "model_error",
            "the model failed to give a usable answer; nothing was stored",
        ),
        ChatError::ReplyTooLarge(_) => said(
            StatusCode::BAD_GATEWAY,
            "model_error",
            "the model's reply is larger than a turn can store (2.5 MiB); nothing was stored",
        ),
        ChatError::ModelTimeout => said(
            StatusCode::GATEWAY_TIMEOUT,
            "model_timeout",
            "the model did not answer in time; nothing was stored",
        ),
        ChatError::StoreUnavailable(_) | ChatError::StoreTimeout => said(
            UNAVAILABLE,
            "store_unavailable",
            "the session table is unavailable; nothing was changed, retry later",
        ),
        ChatError::SaveUnconfirmed => said(
            UNAVAILABLE,
            "save_unconfirmed",
            "the reply's save did not confirm in time; it may have been stored. Retry with the \
             same Idempotency-Key to get it without a second run",
        ),
        // Only when the session moved again between a chained response's two tries.
        ChatError::Busy(_) | ChatError::NotLast => said(
            UNAVAILABLE,
            "session_busy",
            "the session is busy; nothing was changed, retry shortly",
        ),
        ChatError::Corrupt(_) => said(
            StatusCode::INTERNAL_SERVER_ERROR,
            "corrupt_session",
            "the stored session cannot be read; it was left unchanged",
        ),
        ChatError::Internal(_) => said(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; nothing was changed",
        ),
        ChatError::KeyReused => said(
            StatusCode::CONFLICT,
            "idempotency_key_reused",
            e.to_string(),
        ),
        ChatError::InvalidCursor => said(StatusCode::BAD_REQUEST, "invalid_cursor", e.to_string()),
        ChatError::Forbidden => said(StatusCode::FORBIDDEN, "forbidden", e.to_string()),
        ChatError::ListingDisabled => {
            said(StatusCode::NOT_FOUND, "listing_disabled", e.to_string())
        }
        ChatError::RunNotFound => said(StatusCode::NOT_FOUND, "run_not_found", e.to_string()),
        ChatError::RunNotOnPath => said(StatusCode::CONFLICT, "run_not_on_path", e.to_string()),
        ChatError::TooManyVersions => {
            said(StatusCode::CONFLICT, "too_many_versions", e.to_string())
        }
        ChatError::Cancelled => said(
            StatusCode::CONFLICT,
            "cancelled",
            "the reply was cancelled while it was written; nothing was stored",
        ),
        ChatError::ReplyFailed => said(
            StatusCode::BAD_GATEWAY,
            "reply_failed",
            "the reply failed before it was saved; nothing was stored",
        ),
        ChatError::QuotaExceeded { kind, .. } => said(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            match kind {
                QuotaKind::TurnsPerMinute => {
                    "too many turns this minute for this user; nothing was stored, retry after the time Retry-After says"
                }
                QuotaKind::TokensPerDay => {
                    "this user's model tokens for today are spent; nothing was stored, retry after the time Retry-After says"
                }
            },
        ),
    }
}

/// `{"error": {"code", "message"}}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorFields<'a>,
}

#[derive(Serialize)]
struct ErrorFields<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct ResponsesErrorBody<'a> {
    error: ResponsesError<'a>,
}

/// The Responses API's error payload (Open Responses' `ErrorPayload`).
#[derive(Serialize)]
pub(crate) struct ResponsesError<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
    message: &'a str,
    param: Option<&'a str>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        describe(self).status
    }

    pub fn code(&self) -> &'static str {
        describe(self).code
    }

    /// Logs the request's one line: the cause chain for server errors (never sent to the
    /// client), the refusal for client errors; and its metrics.
    pub(crate) fn log(&self, request_id: &str, session_id: Option<&str>, started: Instant) {
        let Described { status, code, .. } = describe(self);
        let emf = error_metrics(started, status, code);
        if status.is_server_error() {
            tracing::error!(request_id, session_id, outcome = code, status = status.as_u16(), cause = %chain(self), emf = %emf, "request failed");
        } else {
            tracing::info!(request_id, session_id, outcome = code, status = status.as_u16(), error = %self, emf = %emf, "request refused");
        }
    }

    /// What the client is told, as JSON text.
    pub(crate) fn body(&self) -> String {
        let Described { code, message, .. } = describe(self);
        let body = ErrorBody {
            error: ErrorFields {
                code,
                message: &message,
            },
        };
        serde_json::to_string(&body).unwrap_or_default()
    }

    /// The Responses API's error body, as JSON text.
    pub(crate) fn responses_body(&self) -> String {
        serde_json::to_string(&ResponsesErrorBody {
            error: self.responses_error(&describe(self)),
        })
        .unwrap_or_default()
    }

    /// The Responses API's error payload of this failure.
    pub(crate) fn responses_error<'a>(&'a self, d: &'a Described) -> ResponsesError<'a> {
        let param = match self {
            ApiError::Param { param, .. } | ApiError::Unsupported { param, .. } => {
                Some(param.as_str())
            }
            ApiError::Input(InputError::MessageTooLong { .. } | InputError::BlankMessage) => {
                Some("input")
            }
            ApiError::Input(InputError::IdempotencyKey) => Some("Idempotency-Key"),
            _ => None,
        };
        ResponsesError {
            kind: responses_type(d.status),
            code: d.code,
            message: &d.message,
            param,
        }
    }

    /// The response to a request that came just now, after logging its one line.
    pub(crate) fn into_response(
        self,
        request_id: &str,
        session_id: Option<&str>,
    ) -> Response<Body> {
        self.answer(request_id, session_id, Instant::now())
    }

    /// The response to a request that came at `started`, after logging its one line.
    pub(crate) fn answer(
        self,
        request_id: &str,
        session_id: Option<&str>,
        started: Instant,
    ) -> Response<Body> {
        self.answer_in(Dialect::Chat, request_id, session_id, started)
    }

    /// [`Self::answer`] in a dialect.
    pub(crate) fn answer_in(
        self,
        dialect: Dialect,
        request_id: &str,
        session_id: Option<&str>,
        started: Instant,
    ) -> Response<Body> {
        self.log(request_id, session_id, started);
        let status = self.status();
        let body = match dialect {
            Dialect::Chat => self.body(),
            Dialect::Responses => self.responses_body(),
        };
        let mut response = json_response(status, body);
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
        if let ApiError::Chat(ChatError::QuotaExceeded { retry_after, .. }) = &self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, (*retry_after).into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::DecodeError;
    use crate::model::ModelError;
    use crate::store::StoreError;
    use serde_json::Value;

    /// One of every failure, with how it must be answered.
    fn every_failure() -> Vec<(ApiError, u16, &'static str)> {
        let store = || StoreError::Failed("x".into());
        let chat = |e: ChatError| ApiError::Chat(e);
        let input = |e: InputError| ApiError::Input(e);
        vec![
            (ApiError::InvalidRequest("x".into()), 400, "invalid_request"),
            (ApiError::BadPath, 400, "invalid_request"),
            (ApiError::NotFound("GET /x".into()), 404, "not_found"),
            (
                ApiError::SessionNotFound("s".into()),
                404,
                "session_not_found",
            ),
            (ApiError::Unauthorized, 401, "unauthorized"),
            (
                ApiError::MethodNotAllowed {
                    method: "PUT".into(),
                    allowed: "GET",
                },
                405,
                "method_not_allowed",
            ),
            (ApiError::TurnLost, 500, "internal"),
            (
                ApiError::Param {
                    param: "input".into(),
                    message: "x".into(),
                },
                400,
                "invalid_request",
            ),
            (
                ApiError::Unsupported {
                    param: "store".into(),
                    message: "x".into(),
                },
                400,
                "unsupported",
            ),
            (
                ApiError::ResponseNotFound("r".into()),
                404,
                "response_not_found",
            ),
            (
                ApiError::ConversationNotFound("c".into()),
                404,
                "conversation_not_found",
            ),
            (ApiError::ItemNotFound("i".into()), 404, "item_not_found"),
            (
                input(InputError::SessionIdLength(0)),
                400,
                "invalid_session_id",
            ),
            (
                input(InputError::SessionIdCharacter(' ')),
                400,
                "invalid_session_id",
            ),
            (input(InputError::SessionIdDots), 400, "invalid_session_id"),
            (
                input(InputError::IdempotencyKey),
                400,
                "invalid_idempotency_key",
            ),
            (input(InputError::BlankMessage), 400, "invalid_message"),
            (input(InputError::Owner), 400, "invalid_owner"),
            (input(InputError::Title), 400, "invalid_title"),
            (input(InputError::RunId), 400, "invalid_run_id"),
            (input(InputError::Feedback), 400, "invalid_feedback"),
            (
                input(InputError::MessageTooLong {
                    actual: 9,
                    limit: 1,
                }),
                413,
                "message_too_long",
            ),
            (
                chat(ChatError::ModelFailed(ModelError::Empty)),
                502,
                "model_error",
            ),
            (
                chat(ChatError::ReplyTooLarge(StoreError::TooLarge(1))),
                502,
                "model_error",
            ),
            (chat(ChatError::ModelTimeout), 504, "model_timeout"),
            (
                chat(ChatError::StoreUnavailable(store())),
                503,
                "store_unavailable",
            ),
            (chat(ChatError::StoreTimeout), 503, "store_unavailable"),
            (chat(ChatError::SaveUnconfirmed), 503, "save_unconfirmed"),
            (chat(ChatError::Busy(3)), 503, "session_busy"),
            (
                chat(ChatError::Corrupt(StoreError::Corrupt(DecodeError::new(
                    "x",
                )))),
                500,
                "corrupt_session",
            ),
            (chat(ChatError::KeyReused), 409, "idempotency_key_reused"),
            (chat(ChatError::InvalidCursor), 400, "invalid_cursor"),
            (chat(ChatError::Forbidden), 403, "forbidden"),
            (chat(ChatError::ListingDisabled), 404, "listing_disabled"),
            (chat(ChatError::Internal(store())), 500, "internal"),
            (chat(ChatError::RunNotFound), 404, "run_not_found"),
            (chat(ChatError::RunNotOnPath), 409, "run_not_on_path"),
            (chat(ChatError::TooManyVersions), 409, "too_many_versions"),
            (chat(ChatError::Cancelled), 409, "cancelled"),
            (chat(ChatError::ReplyFailed), 502, "reply_failed"),
            (chat(ChatError::NotLast), 503, "session_busy"),
            (
                chat(ChatError::QuotaExceeded {
                    kind: QuotaKind::TurnsPerMinute,
                    retry_after: 7,
                }),
                429,
                "quota_exceeded",
            ),
            (
                chat(ChatError::QuotaExceeded {
                    kind: QuotaKind::TokensPerDay,
                    retry_after: 3600,
                }),
                429,
                "quota_exceeded",
            ),
        ]
    }

    /// Every variant by name, with no wildcard: a new failure does not compile here until it is
    /// named, and `every_variant_is_in_the_table` then fails until `every_failure` has it.
    fn variant(e: &ApiError) -> &'static str {
        match e {
            ApiError::InvalidRequest(_) => "InvalidRequest",
            ApiError::BadPath => "BadPath",
            ApiError::NotFound(_) => "NotFound",
            ApiError::SessionNotFound(_) => "SessionNotFound",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::MethodNotAllowed { .. } => "MethodNotAllowed",
            ApiError::TurnLost => "TurnLost",
            ApiError::Param { .. } => "Param",
            ApiError::Unsupported { .. } => "Unsupported",
            ApiError::ResponseNotFound(_) => "ResponseNotFound",
            ApiError::ConversationNotFound(_) => "ConversationNotFound",
            ApiError::ItemNotFound(_) => "ItemNotFound",
            ApiError::Input(i) => match i {
                InputError::SessionIdLength(_) => "SessionIdLength",
                InputError::SessionIdCharacter(_) => "SessionIdCharacter",
                InputError::SessionIdDots => "SessionIdDots",
                InputError::IdempotencyKey => "IdempotencyKey",
                InputError::BlankMessage => "BlankMessage",
                InputError::Owner => "Owner",
                InputError::Title => "Title",
                InputError::RunId => "RunId",
                InputError::Feedback => "Feedback",
                InputError::MessageTooLong { .. } => "MessageTooLong",
            },
            ApiError::Chat(c) => match c {
                ChatError::ModelFailed(_) => "ModelFailed",
                ChatError::ReplyTooLarge(_) => "ReplyTooLarge",
                ChatError::ModelTimeout => "ModelTimeout",
                ChatError::StoreUnavailable(_) => "StoreUnavailable",
                ChatError::StoreTimeout => "StoreTimeout",
                ChatError::SaveUnconfirmed => "SaveUnconfirmed",
                ChatError::Busy(_) => "Busy",
                ChatError::Corrupt(_) => "Corrupt",
                ChatError::KeyReused => "KeyReused",
                ChatError::InvalidCursor => "InvalidCursor",
                ChatError::Forbidden => "Forbidden",
                ChatError::ListingDisabled => "ListingDisabled",
                ChatError::Internal(_) => "Internal",
                ChatError::RunNotFound => "RunNotFound",
                ChatError::RunNotOnPath => "RunNotOnPath",
                ChatError::TooManyVersions => "TooManyVersions",
                ChatError::QuotaExceeded { .. } => "QuotaExceeded",
                ChatError::Cancelled => "Cancelled",
                ChatError::ReplyFailed => "ReplyFailed",
                ChatError::NotLast => "NotLast",
            },
        }
    }

    /// As many as `variant` names.
    const VARIANTS: usize = 12 + 10 + 20;

    #[test]
    fn every_variant_is_in_the_table() {
        let named: std::collections::BTreeSet<&str> =
            every_failure().iter().map(|(e, _, _)| variant(e)).collect();
        assert_eq!(named.len(), VARIANTS, "{named:?}");
    }

    #[test]
    fn every_failure_has_its_status_code_and_message() {
        for (e, status, code) in every_failure() {
            let d = describe(&e);
            assert_eq!((d.status.as_u16(), d.code), (status, code), "{e:?}");
            assert!(!d.message.is_empty(), "{e:?}");
            // A server error's cause stays in the log.
            if d.status.is_server_error() {
                assert!(!d.message.contains(": x"), "{e:?}: {}", d.message);
            }
        }
    }

    #[test]
    fn every_error_code_is_documented() {
        let api = include_str!("../../docs/api.md");
        for (_, _, code) in every_failure() {
            assert!(
                api.contains(&format!("`{code}`")),
                "docs/api.md lacks {code}"
            );
        }
    }

    #[test]
    fn every_error_has_its_responses_shape() {
        for (e, status, code) in every_failure() {
            let body: Value = serde_json::from_str(&e.responses_body()).unwrap();
            let error = &body["error"];
            assert_eq!(error["code"], code, "{e:?}");
            assert!(
                error["message"].is_string() && error["type"].is_string(),
                "{body}"
            );
            assert!(
                error.get("param").is_some(),
                "param is always there: {body}"
            );
            let kind = error["type"].as_str().unwrap();
            assert_eq!(
                status >= 500,
                kind.ends_with("server_error") || kind == "model_error",
                "{body}"
            );
        }
        let param = ApiError::Param {
            param: "temperature".into(),
            message: "x".into(),
        };
        let body: Value = serde_json::from_str(&param.responses_body()).unwrap();
        assert_eq!(body["error"]["param"], "temperature");
        assert_eq!(body["error"]["type"], "invalid_request_error");
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
        let spent = ApiError::Chat(ChatError::QuotaExceeded {
            kind: QuotaKind::TurnsPerMinute,
            retry_after: 17,
        });
        let response = spent.into_response("r2", Some("s"));
        assert_eq!(response.status(), 429);
        assert_eq!(
            response.headers()[header::RETRY_AFTER],
            "17",
            "the seconds to the window's end"
        );
    }
}
