//! A response streamed as the Responses API's semantic events (docs/responses.md,
//! "Streaming"): `response.created` and `response.in_progress`; with the reply's first piece
//! its message item and text part opened, a `response.output_text.delta` per piece, then the
//! text, part and item done; each function the reply called as an item with its arguments;
//! `response.completed` (or `response.failed`: nothing stored). Each event has its
//! `sequence_number`; the stream ends with `data: [DONE]`.

use std::time::Instant;

use serde_json::{json, Value};

use super::object::{call_item, message_item, output_text, Record, Response, Status};
use super::object::{StoredCall, StoredUsage};
use super::request::{item_id, Half, ResponseId};
use crate::chat::TurnEvent;
use crate::http::answered::log_turn;
use crate::http::stream::{sse, Encode};
use crate::http::ApiError;
use crate::input::SessionId;

/// A response's events, numbered as they are written; the same numbers whether read live or
/// followed later (the same pieces in the same order), so `starting_after` names one event.
pub struct ResponseEvents {
    pub id: String,
    pub run: String,
    pub record: Record,
    session: SessionId,
    /// Events numbered at or below this are not sent (a resumed stream's `starting_after`).
    pub skip_through: Option<u64>,
    seq: u64,
    text: String,
    /// `response.created` went out; the message item was opened (the reply's first piece).
    opened: bool,
    message: bool,
    /// For the request's log line; `None` for a follower.
    pub log: Option<(String, SessionId, Instant)>,
    /// A follower: its stream may end before the response does (the invocation's time ran
    /// out), without a last event; the client follows again.
    pub following: bool,
}

impl ResponseEvents {
    pub fn new(id: String, run: String, record: Record, session: SessionId) -> ResponseEvents {
        ResponseEvents {
            id,
            run,
            record,
            session,
            skip_through: None,
            seq: 0,
            text: String::new(),
            opened: false,
            message: false,
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

    /// `response.created`, `response.in_progress`.
    fn open(&mut self, out: &mut String) {
        if self.opened {
            return;
        }
        self.opened = true;
        let created = self.response(Status::InProgress, None);
        self.event(out, "response.created", json!({ "response": created }));
        let progress = self.response(Status::InProgress, None);
        self.event(out, "response.in_progress", json!({ "response": progress }));
    }

    /// The message item and its text part, with the reply's first piece.
    fn open_message(&mut self, out: &mut String) {
        self.open(out);
        if self.message {
            return;
        }
        self.message = true;
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
        self.open_message(out);
        self.text.push_str(piece);
        let item_id = item_id(&self.run, Half::Output);
        self.event(
            out,
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []}),
        );
    }

    /// The reply is whole and saved: its text done, its calls, `response.completed`.
    pub fn complete(&mut self, out: &mut String, usage: Option<StoredUsage>, calls: &[StoredCall]) {
        self.open(out);
        self.record.usage = usage.or(self.record.usage);
        if !calls.is_empty() {
            self.record.calls = calls.to_vec();
        }
        if self.message {
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
        }
        let first = usize::from(self.message);
        for (n, call) in self.record.calls.clone().iter().enumerate() {
            let index = first + n;
            let item_id = format!("fc_{}_{n}", self.run);
            let mut opening = call_item(&self.run, n, call, Status::InProgress);
            opening["arguments"] = json!("");
            self.event(
                out,
                "response.output_item.added",
                json!({"output_index": index, "item": opening}),
            );
            // The arguments arrive whole with the model's answer: one delta.
            self.event(
                out,
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": index, "delta": call.arguments}),
            );
            self.event(
                out,
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": index, "arguments": call.arguments}),
            );
            let done = call_item(&self.run, n, call, Status::Completed);
            self.event(
                out,
                "response.output_item.done",
                json!({"output_index": index, "item": done}),
            );
        }
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

    fn failed(&mut self, out: &mut String, e: ApiError) {
        if let Some((request_id, session_id, started)) = &self.log {
            e.log(request_id, Some(session_id.as_str()), *started);
        }
        let d = crate::http::error::describe(&e);
        self.fail(out, d.code, &d.message);
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
                if let Some(saved) = reply.record.as_deref() {
                    // What was saved, so every reader of the response sees the same one.
                    let model = std::mem::take(&mut self.record.model);
                    self.record = Record::read(Some(saved), &model);
                }
                let calls: Vec<StoredCall> = match reply.calls.is_empty() {
                    true => self.record.calls.clone(),
                    false => reply.calls.iter().map(StoredCall::from).collect(),
                };
                if !self.opened {
                    // Replayed from a receipt, or followed once saved: the response as saved,
                    // its reply as one piece (unless it was calls alone).
                    self.run = reply.run_id.clone();
                    self.id = ResponseId::format(&reply.run_id, &self.session);
                    let called: Vec<_> = calls.iter().map(StoredCall::to_call).collect();
                    if called.is_empty() || crate::chat::render_calls(&called) != reply.text {
                        self.delta(&mut out, &reply.text);
                    }
                }
                let usage = reply.usage.map(StoredUsage::from);
                self.complete(&mut out, usage, &calls);
            }
            Some(TurnEvent::Finished(Err(e))) => self.failed(&mut out, e.into()),
            None if self.following => {}
            None => self.failed(&mut out, ApiError::TurnLost),
        }
        out
    }
}
