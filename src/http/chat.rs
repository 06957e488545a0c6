//! `POST /chat`: one turn, answered as one JSON response (or handed to `stream` for clients
//! that take server-sent events).

use lambda_http::http::StatusCode;

use super::answered::{log_turn, mark_replayed, ReplyBody};
use super::extract::{body_bytes, idempotency_key, parse_chat_body, wants_events};
use super::{json_ok, stream, Answer, ApiError, App, Call};
use crate::chat::TurnRequest;

impl App {
    pub(super) async fn post_chat(&self, call: &Call<'_>) -> Result<Answer, ApiError> {
        let body = parse_chat_body(
            body_bytes(call.request.body()),
            self.settings.max_message_bytes,
        )?;
        let session_id = call.about(body.session_id);
        let turn = TurnRequest {
            session: self.session_key(call.request, session_id)?,
            owner: self.owner(call.request, body.owner.as_deref())?,
            idempotency_key: idempotency_key(call.request)?,
            say: body.say,
            deadline: call.deadline,
            extras: Default::default(),
        };
        if wants_events(call.request) {
            // The run's id is known before it is saved: a client can follow the reply with it.
            let run_id = crate::memory::new_run_id();
            let mut turn = turn;
            turn.extras.run_id = Some(run_id.clone());
            // Kept with the run: the usage and how it was streamed (a follower's pieces).
            turn.extras.record = Some("{}".to_owned());
            let mut encoder = stream::ChatEvents::new(
                call.request_id().to_owned(),
                session_id.clone(),
                call.started,
            );
            encoder.run_id = Some(run_id);
            return stream::start(&self.chat, turn, Box::new(encoder)).await;
        }
        let reply = self.chat.send(&turn).await?;
        log_turn(call.request_id(), session_id, &reply, false, call.started);
        let mut response = json_ok(StatusCode::OK, &ReplyBody::new(session_id, &reply));
        if reply.replayed {
            mark_replayed(response.headers_mut());
        }
        Ok(Answer::Whole(response))
    }

    /// `GET /sessions/{id}/runs/{run}/stream?after=N`: a streamed reply followed after a
    /// reload or a dropped connection, as `POST /chat`'s events: the deltas after `id: N` (all
    /// without `after`), then `done` (or `error`). A saved run is sent the same way.
    pub(super) async fn follow_run(
        &self,
        call: &Call<'_>,
        session_id: &crate::input::SessionId,
        session: crate::input::SessionKey,
        run: &crate::input::RunId,
    ) -> Result<Answer, ApiError> {
        let after = match call.param("after") {
            None => None,
            Some(n) => Some(n.parse::<u64>().map_err(|_| {
                ApiError::InvalidRequest("after must be a delta's id (a whole number)".into())
            })?),
        };
        let mut encoder = stream::ChatEvents::new(
            call.request_id().to_owned(),
            session_id.clone(),
            call.started,
        );
        encoder.following = true;
        encoder.skip_through = after;
        let followed = stream::follow(&self.chat, session, run.as_str().to_owned(), call.deadline);
        let answer = stream::start_with(followed, Box::new(encoder)).await?;
        tracing::info!(
            request_id = call.request_id(),
            session_id = %session_id,
            run_id = run.as_str(),
            status = 200,
            outcome = "followed",
            emf = %call.metrics(200),
            "reply followed"
        );
        Ok(answer)
    }
}
