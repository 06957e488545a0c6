//! A streamed turn as server-sent events. The chat cycle runs the turn in a task of its own and
//! reports [`TurnEvent`]s; an [`Encode`] turns each into the text of a dialect's events:
//! `POST /chat`'s (`delta`s, then `done` once the run is saved, or `error`: nothing stored) here,
//! the Responses API's semantic events in `responses::events`.

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

/// How one dialect writes a turn's events.
pub(super) trait Encode: Send {
    /// The events the client is sent for this one, as text (empty for none). `None`: the
    /// turn's task ended without an outcome.
    fn encode(&mut self, event: Option<TurnEvent>) -> String;
}

/// One server-sent event: `event: <name>`, then its JSON data.
pub(super) fn sse(name: &str, data: &str) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

pub(super) fn to_json<T: Serialize>(body: &T) -> String {
    // Plain structs of strings and numbers: serializing them cannot fail.
    serde_json::to_string(body).unwrap_or_default()
}

/// The head of an event stream's response.
pub(super) fn event_head() -> Response<()> {
    let mut head = Response::new(());
    head.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    head.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    head
}

/// Starts the turn and waits until it is refused (a JSON error, as without streaming),
/// replayed, or the model is asked: then the events start, written by `encoder`.
pub(super) async fn start(
    chat: &Arc<ChatService>,
    turn: TurnRequest,
    mut encoder: Box<dyn Encode>,
) -> Result<Answer, ApiError> {
    let mut rx = chat.stream(turn);
    let mut head = event_head();
    let first = match rx.recv().await {
        Some(TurnEvent::Finished(Err(e))) => return Err(e.into()),
        None => return Err(ApiError::TurnLost),
        Some(TurnEvent::Finished(Ok(reply))) => {
            if reply.replayed {
                mark_replayed(head.headers_mut());
            }
            let text = encoder.encode(Some(TurnEvent::Finished(Ok(reply))));
            return Ok(Answer::Events {
                head,
                events: EventStream::ended(text),
            });
        }
        Some(event) => encoder.encode(Some(event)),
    };
    Ok(Answer::Events {
        head,
        events: EventStream {
            rx: Some(rx),
            first: Some(first).filter(|t| !t.is_empty()),
            ended: false,
            encoder: Some(encoder),
        },
    })
}

/// A streamed turn's events, as server-sent event text.
pub struct EventStream {
    rx: Option<mpsc::UnboundedReceiver<TurnEvent>>,
    /// Events written before the stream was handed on.
    first: Option<String>,
    /// The last event was written.
    ended: bool,
    encoder: Option<Box<dyn Encode>>,
}

impl EventStream {
    /// A stream of events written already.
    pub(super) fn ended(text: String) -> EventStream {
        EventStream {
            rx: None,
            first: Some(text).filter(|t| !t.is_empty()),
            ended: true,
            encoder: None,
        }
    }

    /// The next event's text once it is there; `None` after the last.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<String>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        let (Some(rx), Some(encoder)) = (self.rx.as_mut(), self.encoder.as_mut()) else {
            return Poll::Ready(None);
        };
        loop {
            let event = match rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(event) => event,
            };
            self.ended = matches!(event, None | Some(TurnEvent::Finished(_)));
            let text = encoder.encode(event);
            if !text.is_empty() {
                return Poll::Ready(Some(text));
            }
            if self.ended {
                return Poll::Ready(None);
            }
        }
    }

    pub async fn next_event(&mut self) -> Option<String> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }
}

/// `POST /chat`'s events: `delta`, then `done` or `error`.
pub(super) struct ChatEvents {
    pub request_id: String,
    pub session_id: SessionId,
    /// When the request came: the turn's `Latency` runs to its last event.
    pub started: Instant,
}

#[derive(Serialize)]
struct DeltaBody<'a> {
    text: &'a str,
}

fn delta(piece: &str) -> String {
    sse("delta", &to_json(&DeltaBody { text: piece }))
}

impl ChatEvents {
    fn done(&self, reply: &Reply) -> String {
        sse("done", &to_json(&ReplyBody::new(&self.session_id, reply)))
    }

    /// The turn failed after the events began: logged like a refused request, sent as the
    /// last event. Nothing was stored (but for `save_unconfirmed`, as without streaming).
    fn error(&self, e: ApiError) -> String {
        e.log(
            &self.request_id,
            Some(self.session_id.as_str()),
            self.started,
        );
        sse("error", &e.body())
    }
}

impl Encode for ChatEvents {
    fn encode(&mut self, event: Option<TurnEvent>) -> String {
        match event {
            Some(TurnEvent::Asking) => String::new(),
            Some(TurnEvent::Delta(piece)) => delta(&piece),
            Some(TurnEvent::Finished(Ok(reply))) => {
                log_turn(
                    &self.request_id,
                    &self.session_id,
                    &reply,
                    true,
                    self.started,
                );
                if reply.replayed {
                    // Replayed from a receipt: the saved reply as one delta, then done.
                    return format!("{}{}", delta(&reply.text), self.done(&reply));
                }
                self.done(&reply)
            }
            Some(TurnEvent::Finished(Err(e))) => self.error(e.into()),
            None => self.error(ApiError::TurnLost),
        }
    }
}
