//! A response streamed as the Responses API's semantic events (docs/responses.md,
//! "Streaming"): `response.created`, `response.in_progress`, the output item and its text part
//! opened, a `response.output_text.delta` per piece, then the text, part and item done and
//! `response.completed` (or `response.failed`: nothing stored), each with its
//! `sequence_number`, and `data: [DONE]`.

use std::time::Instant;

use serde_json::{json, Value};

use super::object::{message_item, output_text, Record, Response, Status, StoredUsage};
use super::request::{item_id, Half};
use crate::chat::TurnEvent;
use crate::http::answered::log_turn;
use crate::http::stream::{sse, Encode};
use crate::http::ApiError;
use crate::input::SessionId;

/// A response's events, numbered as they are written (events 0-3 open it, delta `i` is event
/// `4 + i`); the same numbers whether read live or
/// replayed from storage, so `starting_after` means the same event.
pub struct ResponseEvents {
    pub id: String,
    pub run: String,
    pub record: Record,
    /// Events numbered at or below this are not sent (a resumed stream's `starting_after`).
    pub skip_through: Option<u64>,
    pub(super) seq: u64,
    text: String,
    opened: bool,
    /// For the request's log line; `None` for a replay of a stored response.
    pub log: Option<(String, SessionId, Instant)>,
    /// A follower: its stream may end before the response does (the invocation's time ran
    /// out), without a last event; the client follows again.
    pub following: bool,
}

impl ResponseEvents {
    pub fn new(id: String, run: String, record: Record) -> ResponseEvents {
        ResponseEvents {
            id,
            run,
            record,
            skip_through: None,
            seq: 0,
            text: String::new(),
            opened: false,
            log: None,
            following: false,
        }
    }

    fn event(&mut self, out: &mut String, kind: &str, mut body: Value) {
        let seq = self.seq;
        self.seq += 1;
        if self.skip_through.is_some_and(|after| seq <= after) {
            return;
        }
        if let Value::Object(fields) = &mut body {
            fields.insert("type".into(), json!(kind));
            fields.insert("sequence_number".into(), json!(seq));
        }
        out.push_str(&sse(kind, &body.to_string()));
    }

    fn response(&self, status: Status, error: Option<Value>) -> Value {
        Response {
            id: &self.id,
            run: &self.run,
            record: &self.record,
            status,
            text: &self.text,
            error,
        }
        .json()
    }

    fn open(&mut self, out: &mut String) {
        if self.opened {
            return;
        }
        self.opened = true;
        let created = self.response(Status::InProgress, None);
        self.event(out, "response.created", json!({ "response": created }));
        let progress = self.response(Status::InProgress, None);
        self.event(out, "response.in_progress", json!({ "response": progress }));
        let item = message_item(&self.run, Half::Output, "", Status::InProgress);
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": 0, "item": item}),
        );
        let item_id = item_id(&self.run, Half::Output);
        self.event(
            out,
            "response.content_part.added",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": output_text("")}),
        );
    }

    /// One piece of the reply.
    pub fn delta(&mut self, out: &mut String, piece: &str) {
        self.open(out);
        self.text.push_str(piece);
        let item_id = item_id(&self.run, Half::Output);
        self.event(
            out,
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []}),
        );
    }

    /// The reply is whole and saved.
    pub fn complete(&mut self, out: &mut String, usage: Option<StoredUsage>) {
        self.open(out);
        self.record.usage = usage.or(self.record.usage);
        let item_id = item_id(&self.run, Half::Output);
        let text = self.text.clone();
        self.event(
            out,
            "response.output_text.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
        );
        self.event(
            out,
            "response.content_part.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": output_text(&text)}),
        );
        let item = message_item(&self.run, Half::Output, &text, Status::Completed);
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        );
        let done = self.response(Status::Completed, None);
        self.event(out, "response.completed", json!({ "response": done }));
        out.push_str("data: [DONE]\n\n");
    }

    /// The turn failed: nothing was stored.
    pub fn fail(&mut self, out: &mut String, code: &str, message: &str) {
        self.open(out);
        let error = json!({"code": code, "message": message});
        let failed = self.response(Status::Failed, Some(error));
        self.event(out, "response.failed", json!({ "response": failed }));
        out.push_str("data: [DONE]\n\n");
    }
}

impl Encode for ResponseEvents {
    fn encode(&mut self, event: Option<TurnEvent>) -> String {
        let mut out = String::new();
        match event {
            Some(TurnEvent::Asking) => self.open(&mut out),
            Some(TurnEvent::Delta(piece)) => self.delta(&mut out, &piece),
            Some(TurnEvent::Finished(Ok(reply))) => {
                if let Some((request_id, session_id, started)) = &self.log {
                    log_turn(request_id, session_id, &reply, true, *started);
                }
                if !self.opened {
                    // Replayed from a receipt: the saved reply as one piece.
                    self.text.clear();
                    self.delta(&mut out, &reply.text);
                }
                self.complete(&mut out, reply.usage.map(StoredUsage::from));
            }
            Some(TurnEvent::Finished(Err(e))) => self.failed(&mut out, e.into()),
            None if self.following => {}
            None => self.failed(&mut out, ApiError::TurnLost),
        }
        out
    }
}

impl ResponseEvents {
    fn failed(&mut self, out: &mut String, e: ApiError) {
        if let Some((request_id, session_id, started)) = &self.log {
            e.log(request_id, Some(session_id.as_str()), *started);
        }
        let d = crate::http::error::describe(&e);
        self.fail(out, d.code, &d.message);
    }
}
