//! A streamed turn as server-sent events. The chat cycle runs the turn in a task of its own and
//! reports [`TurnEvent`]s; an [`Encode`] turns each into the text of a dialect's events:
//! `POST /chat`'s (`delta`s, then `done` once the run is saved, or `error`: nothing stored) here,
//! the Responses API's semantic events in `responses::events`.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use lambda_http::http::header;
use lambda_http::Response;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::answered::{log_turn, mark_replayed, ReplyBody};
use super::{Answer, ApiError};
use crate::chat::{ChatError, ChatService, Followed, LiveStatus, Reply, TurnEvent, TurnRequest};
use crate::input::{SessionId, SessionKey};

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
    encoder: Box<dyn Encode>,
) -> Result<Answer, ApiError> {
    start_with(chat.stream(turn), encoder).await
}

/// [`start`] for events of any source: a turn's, or a followed reply's ([`follow`]).
pub(super) async fn start_with(
    mut rx: mpsc::UnboundedReceiver<TurnEvent>,
    mut encoder: Box<dyn Encode>,
) -> Result<Answer, ApiError> {
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

/// A followed reply ([`ChatService::follow`]) as a turn's events: its pieces as `Delta`s (a
/// saved run's in the pieces it was streamed in, those not sent yet), then `Finished`. The
/// channel closes without `Finished` when the invocation's time is nearly up.
pub(super) fn follow(
    chat: &Arc<ChatService>,
    session: SessionKey,
    run_id: String,
    deadline: crate::deadline::Deadline,
) -> mpsc::UnboundedReceiver<TurnEvent> {
    let mut followed = chat.follow(session, run_id, deadline);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut sent, mut sent_bytes) = (0, 0);
        while let Some(f) = followed.recv().await {
            let last = match f {
                Followed::Pieces(pieces) => {
                    sent += pieces.len();
                    sent_bytes += pieces.iter().map(String::len).sum::<usize>();
                    for piece in pieces {
                        let _ = tx.send(TurnEvent::Delta(piece));
                    }
                    continue;
                }
                Followed::Saved(found) => {
                    let kept = Kept::of(found.record.as_deref());
                    let text = &found.run.output;
                    let rest = remaining_pieces(text, kept.pieces.as_deref(), (sent, sent_bytes));
                    for piece in rest {
                        let _ = tx.send(TurnEvent::Delta(piece.to_owned()));
                    }
                    TurnEvent::Finished(Ok(Reply {
                        run_id: found.run.id.clone(),
                        text: text.clone(),
                        usage: None,
                        replayed: false,
                        timings: Default::default(),
                        context: Default::default(),
                        calls: Vec::new(),
                        record: found.record.clone(),
                    }))
                }
                Followed::Ended(LiveStatus::Cancelled) => {
                    TurnEvent::Finished(Err(ChatError::Cancelled))
                }
                Followed::Ended(_) => TurnEvent::Finished(Err(ChatError::ReplyFailed)),
                Followed::Unknown => TurnEvent::Finished(Err(ChatError::RunNotFound)),
                Followed::OutOfTime => return,
            };
            let _ = tx.send(last);
            return;
        }
    });
    rx
}

/// What a follower takes from a saved run's record (the slot's `response`): how its reply
/// was streamed. Its usage and calls reach the encoder with the record itself.
#[derive(Deserialize, Default)]
struct Kept {
    #[serde(default)]
    pieces: Option<Vec<usize>>,
}

impl Kept {
    fn of(record: Option<&str>) -> Kept {
        record
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default()
    }
}

/// A text cut into the pieces it was streamed in (their lengths in bytes); `None` when the
/// lengths do not fit it.
fn split_pieces<'t>(text: &'t str, lengths: &[usize]) -> Option<Vec<&'t str>> {
    if lengths.iter().sum::<usize>() != text.len() {
        return None;
    }
    let mut pieces = Vec::with_capacity(lengths.len());
    let mut at = 0;
    for len in lengths {
        pieces.push(text.get(at..at + len)?);
        at += len;
    }
    Some(pieces)
}

/// What a follower still lacks of a saved reply it was sent `sent` pieces (`bytes`) of: the
/// pieces after them, as streamed; or, the lengths unknown, the rest of the text as one piece.
pub(super) fn remaining_pieces<'t>(
    text: &'t str,
    lengths: Option<&[usize]>,
    (sent, bytes): (usize, usize),
) -> Vec<&'t str> {
    match lengths.and_then(|l| split_pieces(text, l)) {
        Some(pieces) if pieces.len() >= sent => pieces[sent..].to_vec(),
        // Streamed with no text (function calls alone): the run's text is their rendering.
        _ if lengths.is_some_and(|l| l.is_empty()) => Vec::new(),
        _ => text
            .get(bytes..)
            .filter(|r| !r.is_empty())
            .into_iter()
            .collect(),
    }
}

/// `POST /chat`'s events: `started` (the run's id, so a client can follow it after a reload),
/// `delta`s numbered by their `id:` from 0, then `done` or `error`.
pub(super) struct ChatEvents {
    pub request_id: String,
    pub session_id: SessionId,
    /// When the request came: the turn's `Latency` runs to its last event.
    pub started: Instant,
    /// The run the turn makes, when known before it is saved.
    pub run_id: Option<String>,
    /// Deltas numbered at or below this are not sent (a follower's `after`).
    pub skip_through: Option<u64>,
    /// A follower: the stream may end without `done` (the invocation's time ran out).
    pub following: bool,
    pub next: u64,
}

#[derive(Serialize)]
struct DeltaBody<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct StartedBody<'a> {
    session_id: &'a str,
    run_id: &'a str,
}

impl ChatEvents {
    pub fn new(request_id: String, session_id: SessionId, started: Instant) -> ChatEvents {
        ChatEvents {
            request_id,
            session_id,
            started,
            run_id: None,
            skip_through: None,
            following: false,
            next: 0,
        }
    }

    fn delta(&mut self, piece: &str) -> String {
        let n = self.next;
        self.next += 1;
        if self.skip_through.is_some_and(|after| n <= after) {
            return String::new();
        }
        format!(
            "id: {n}\n{}",
            sse("delta", &to_json(&DeltaBody { text: piece }))
        )
    }

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
            Some(TurnEvent::Asking) => match &self.run_id {
                Some(run_id) => sse(
                    "started",
                    &to_json(&StartedBody {
                        session_id: self.session_id.as_str(),
                        run_id,
                    }),
                ),
                None => String::new(),
            },
            Some(TurnEvent::Delta(piece)) => self.delta(&piece),
            Some(TurnEvent::Finished(Ok(reply))) => {
                if !self.following {
                    log_turn(
                        &self.request_id,
                        &self.session_id,
                        &reply,
                        true,
                        self.started,
                    );
                }
                if reply.replayed {
                    // Replayed from a receipt: the saved reply as one delta, then done.
                    return format!("{}{}", self.delta(&reply.text), self.done(&reply));
                }
                self.done(&reply)
            }
            Some(TurnEvent::Finished(Err(e))) => self.error(e.into()),
            None if self.following => String::new(),
            None => self.error(ApiError::TurnLost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_gets_the_pieces_it_lacks() {
        let lengths = [3, 2, 4];
        assert_eq!(
            remaining_pieces("abcdefghi", Some(&lengths), (0, 0)),
            ["abc", "de", "fghi"]
        );
        assert_eq!(
            remaining_pieces("abcdefghi", Some(&lengths), (2, 5)),
            ["fghi"]
        );
        assert!(remaining_pieces("abcdefghi", Some(&lengths), (3, 9)).is_empty());
        // Lengths that do not fit (or none): the rest as one piece.
        assert_eq!(
            remaining_pieces("abcdefghi", Some(&[1]), (1, 3)),
            ["defghi"]
        );
        assert_eq!(remaining_pieces("abcdefghi", None, (0, 0)), ["abcdefghi"]);
        // Not on a character boundary.
        assert_eq!(remaining_pieces("é", Some(&[1, 1]), (0, 0)), ["é"]);
    }
}
