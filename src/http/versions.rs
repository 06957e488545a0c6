//! Editing a conversation (docs/api.md, "Versions, deletes and feedback"): `POST
//! /sessions/{id}/select`, `DELETE /sessions/{id}/runs/{run_id}` and `PUT
//! /sessions/{id}/runs/{run_id}/feedback`. Regenerate and edit are turns (`POST /chat`).

use lambda_http::{Body, Response};

use super::extract::{body_bytes, parse_feedback_body, parse_select_body};
use super::{no_content, ApiError, App, Call};
use crate::input::{RunId, SessionId, SessionKey};

impl App {
    pub(super) async fn post_select(
        &self,
        call: &Call<'_>,
        session_id: &SessionId,
        key: &SessionKey,
    ) -> Result<Response<Body>, ApiError> {
        let run = parse_select_body(body_bytes(call.request.body()))?;
        self.chat.select(key, run.as_str(), call.deadline).await?;
        tracing::info!(request_id = call.request_id(), session_id = %session_id, run_id = run.as_str(), emf = %call.metrics(204), outcome = "selected", "version selected");
        Ok(no_content())
    }

    pub(super) async fn delete_run(
        &self,
        call: &Call<'_>,
        session_id: &SessionId,
        key: &SessionKey,
        run: &RunId,
    ) -> Result<Response<Body>, ApiError> {
        self.chat
            .delete_run(key, run.as_str(), call.deadline)
            .await?;
        tracing::info!(request_id = call.request_id(), session_id = %session_id, run_id = run.as_str(), emf = %call.metrics(204), outcome = "run_deleted", "run deleted");
        Ok(no_content())
    }

    pub(super) async fn put_feedback(
        &self,
        call: &Call<'_>,
        session_id: &SessionId,
        key: &SessionKey,
        run: &RunId,
    ) -> Result<Response<Body>, ApiError> {
        let rating = parse_feedback_body(body_bytes(call.request.body()))?;
        self.chat
            .rate(key, run.as_str(), &rating, call.deadline)
            .await?;
        tracing::info!(request_id = call.request_id(), session_id = %session_id, run_id = run.as_str(), rating = if rating.up { "up" } else { "down" }, emf = %call.metrics(204), outcome = "rated", "feedback kept");
        Ok(no_content())
    }
}
