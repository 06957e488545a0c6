//! `/sessions` (a caller's conversations: list, erase) and `/sessions/{id}` (one
//! conversation: read its history, name it, delete it).

use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde::Serialize;

use super::extract::{body_bytes, parse_limit, parse_span, parse_title_body, span};
use super::{json_ok, no_content, ApiError, App, Call};
use super::{DEFAULT_HISTORY_LIMIT, DEFAULT_LIST_LIMIT, HISTORY_PAGE_BYTES};
use super::{MAX_HISTORY_LIMIT, MAX_LIST_LIMIT};
use crate::chat::{Deleted, PageLimit};
use crate::input::{SessionId, SessionKey};

/// `GET /sessions`: a page of the caller's sessions.
#[derive(Serialize)]
struct ListBody<'a> {
    sessions: Vec<ListedBody<'a>>,
    next_cursor: Option<&'a str>,
}

#[derive(Serialize)]
struct ListedBody<'a> {
    session_id: &'a str,
    created_at: u64,
    updated_at: u64,
    runs: u64,
    title: Option<&'a str>,
    preview: Option<&'a str>,
}

/// `GET /sessions/{id}`: a page of the session's runs.
#[derive(Serialize)]
struct HistoryBody<'a> {
    session_id: &'a str,
    runs: Vec<RunBody<'a>>,
    next_cursor: Option<String>,
    prev_cursor: Option<String>,
}

#[derive(Serialize)]
struct RunBody<'a> {
    id: &'a str,
    input: &'a str,
    output: &'a str,
    /// The other versions at this run's place, oldest first.
    alternatives: &'a [String],
    /// Its own place among its versions, from 1: `version` of `alternatives.len() + 1`.
    version: usize,
    feedback: Option<FeedbackBody<'a>>,
}

#[derive(Serialize)]
struct FeedbackBody<'a> {
    rating: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a str>,
    at: u64,
}

#[derive(Serialize)]
struct TitleBody<'a> {
    session_id: &'a str,
    title: &'a str,
}

#[derive(Serialize)]
struct ErasedBody {
    deleted: u64,
    remaining: bool,
}

#[derive(Serialize)]
struct DeletedPartlyBody {
    deleted: bool,
    complete: bool,
}

impl App {
    pub(super) async fn list_sessions(&self, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
        let owner = self.owner_of_query(call)?;
        let limit = parse_limit(call.param("limit"), DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)?;
        let cursor = call.param("cursor");
        let page = self.chat.list(&owner, limit, cursor, call.deadline).await?;
        let sessions: Vec<ListedBody<'_>> = page
            .sessions
            .iter()
            .map(|l| ListedBody {
                session_id: &l.session_id,
                created_at: l.created_at,
                updated_at: l.updated_at,
                runs: l.runs,
                title: l.title.as_deref(),
                preview: l.preview.as_deref(),
            })
            .collect();
        tracing::info!(
            request_id = call.request_id(),
            sessions = sessions.len(),
            emf = %call.metrics(200),
            outcome = "listed",
            "sessions listed"
        );
        let body = ListBody {
            sessions,
            next_cursor: page.next.as_deref(),
        };
        Ok(json_ok(StatusCode::OK, &body))
    }

    pub(super) async fn erase_sessions(&self, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
        let owner = self.owner_of_query(call)?;
        let erased = self.chat.erase(&owner, call.deadline).await?;
        tracing::info!(
            request_id = call.request_id(),
            deleted = erased.deleted,
            remaining = erased.remaining,
            emf = %call.metrics(200),
            outcome = "erased",
            "sessions erased"
        );
        if erased.remaining {
            let body = ErasedBody {
                deleted: erased.deleted,
                remaining: true,
            };
            return Ok(json_ok(StatusCode::ACCEPTED, &body));
        }
        Ok(no_content())
    }

    pub(super) async fn patch_session(
        &self,
        call: &Call<'_>,
        session_id: &SessionId,
        key: &SessionKey,
    ) -> Result<Response<Body>, ApiError> {
        let title = parse_title_body(body_bytes(call.request.body()))?;
        if !self
            .chat
            .set_title(key, title.as_str(), call.deadline)
            .await?
        {
            return Err(ApiError::SessionNotFound(session_id.to_string()));
        }
        tracing::info!(request_id = call.request_id(), session_id = %session_id, emf = %call.metrics(200), outcome = "renamed", "session renamed");
        let body = TitleBody {
            session_id: session_id.as_str(),
            title: title.as_str(),
        };
        Ok(json_ok(StatusCode::OK, &body))
    }

    pub(super) async fn get_session(
        &self,
        call: &Call<'_>,
        session_id: &SessionId,
        key: &SessionKey,
    ) -> Result<Response<Body>, ApiError> {
        let runs = parse_limit(
            call.param("limit"),
            DEFAULT_HISTORY_LIMIT,
            MAX_HISTORY_LIMIT,
        )?;
        let (cursor, before) = parse_span(call.param("cursor"), call.param("before"))?;
        let limit = PageLimit {
            runs,
            bytes: HISTORY_PAGE_BYTES,
        };
        let page = self
            .chat
            .history(key, span(&cursor, before), limit, call.deadline)
            .await?
            .ok_or_else(|| ApiError::SessionNotFound(session_id.to_string()))?;
        let runs: Vec<RunBody<'_>> = page
            .runs
            .iter()
            .map(|r| {
                let notes = page.notes.get(&r.id);
                RunBody {
                    id: &r.id,
                    input: &r.input,
                    output: &r.output,
                    alternatives: notes.map_or(&[][..], |n| n.alternatives.as_slice()),
                    version: notes.map_or(1, |n| n.version),
                    feedback: notes
                        .and_then(|n| n.feedback.as_ref())
                        .map(|f| FeedbackBody {
                            rating: if f.up { "up" } else { "down" },
                            comment: f.comment.as_deref(),
                            at: f.at,
                        }),
                }
            })
            .collect();
        tracing::info!(request_id = call.request_id(), session_id = %session_id, runs = runs.len(), emf = %call.metrics(200), outcome = "read", "session read");
        let body = HistoryBody {
            session_id: session_id.as_str(),
            runs,
            next_cursor: page.next.map(|c| c.encode()),
            prev_cursor: page.prev.map(|c| c.encode()),
        };
        Ok(json_ok(StatusCode::OK, &body))
    }

    pub(super) async fn delete_session(
        &self,
        call: &Call<'_>,
        session_id: &SessionId,
        key: &SessionKey,
    ) -> Result<Response<Body>, ApiError> {
        let request_id = call.request_id();
        match self.chat.forget(key, call.deadline).await? {
            Deleted::NotFound => Err(ApiError::SessionNotFound(session_id.to_string())),
            Deleted::Gone { complete: true } => {
                tracing::info!(request_id, session_id = %session_id, emf = %call.metrics(204), outcome = "deleted", "session deleted");
                Ok(no_content())
            }
            Deleted::Gone { complete: false } => {
                tracing::info!(request_id, session_id = %session_id, emf = %call.metrics(202), outcome = "deleted_partly", "session deleted; cleanup goes on");
                let body = DeletedPartlyBody {
                    deleted: true,
                    complete: false,
                };
                Ok(json_ok(StatusCode::ACCEPTED, &body))
            }
        }
    }
}
