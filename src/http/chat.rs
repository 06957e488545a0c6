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
            let encoder = stream::ChatEvents {
                request_id: call.request_id().to_owned(),
                session_id: session_id.clone(),
                started: call.started,
            };
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
}
