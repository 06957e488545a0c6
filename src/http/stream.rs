//! `POST /chat` as server-sent events: `delta`s as the model writes, then `done` once the run
//! is saved, or `error` (nothing stored). The chat cycle runs the turn in a task of its own and
//! reports [`TurnEvent`]s; this only encodes them.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use lambda_http::http::header;
use lambda_http::Response;
use serde::Serialize;
use tokio::sync::mpsc;

use super::answered::{log_turn, mark_replayed, ReplyBody};
use super::{Answer, ApiError};
use crate::chat::{ChatService, Reply, TurnEvent, TurnRequest};
use crate::input::SessionId;

#[derive(Serialize)]
struct DeltaBody<'a> {
    text: &'a str,
}

/// One server-sent event: `event: <name>`, then its JSON data.
fn sse(name: &str, data: &str) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn delta(piece: &str) -> String {
    sse("delta", &to_json(&DeltaBody { text: piece }))
}

fn to_json<T: Serialize>(body: &T) -> String {
    // Plain structs of strings: serializing them cannot fail.
    serde_json::to_string(body).unwrap_or_default()
}

/// Starts the turn and waits until it is refused (a JSON error, as without streaming),
/// replayed, or the model is asked: then the events start.
pub(super) async fn start(
    chat: &Arc<ChatService>,
    turn: TurnRequest,
    request_id: String,
    session_id: SessionId,
    started: Instant,
) -> Result<Answer, ApiError> {
    let mut events = EventStream {
        rx: chat.stream(turn),
        request_id,
        session_id,
        started,
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
            log_turn(
                &events.request_id,
                &events.session_id,
                &reply,
                true,
                events.started,
            );
            mark_replayed(head.headers_mut());
            events.first = Some(format!("{}{}", delta(&reply.text), events.done(&reply)));
            events.ended = true;
        }
        Some(TurnEvent::Finished(Err(e))) => return Err(e.into()),
        Some(TurnEvent::Delta(piece)) => events.first = Some(delta(&piece)),
        None => return Err(ApiError::TurnLost),
    }
    Ok(Answer::Events { head, events })
}

/// A streamed turn's events, as server-sent event text: `delta`s, then `done` or `error`.
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<TurnEvent>,
    request_id: String,
    session_id: SessionId,
    /// When the request came: the turn's `Latency` runs to its last event.
    started: Instant,
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
                Some(TurnEvent::Delta(piece)) => delta(&piece),
                Some(TurnEvent::Finished(Ok(reply))) => {
                    self.ended = true;
                    log_turn(
                        &self.request_id,
                        &self.session_id,
                        &reply,
                        true,
                        self.started,
                    );
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
        sse("done", &to_json(&ReplyBody::new(&self.session_id, reply)))
    }

    /// The turn failed after the events began: logged like a refused request, sent as the
    /// last event. Nothing was stored (but for `save_unconfirmed`, as without streaming).
    fn error(&mut self, e: ApiError) -> String {
        self.ended = true;
        e.log(
            &self.request_id,
            Some(self.session_id.as_str()),
            self.started,
        );
        sse("error", &e.body())
    }
}
