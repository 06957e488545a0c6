//! A turn that was answered, as both `POST /chat` answers tell it: its body (the JSON response,
//! or a streamed turn's `done` event), its one log line with its metrics, and the replayed mark.

use std::time::Instant;

use lambda_http::http::header;
use serde::Serialize;

use crate::chat::Reply;
use crate::input::SessionId;
use crate::metrics::{self, Values};

/// A turn's answer: the JSON response, and the data of a streamed turn's `done` event.
#[derive(Serialize)]
pub(super) struct ReplyBody<'a> {
    session_id: &'a str,
    run_id: &'a str,
    reply: &'a str,
}

impl<'a> ReplyBody<'a> {
    pub fn new(session_id: &'a SessionId, reply: &'a Reply) -> Self {
        ReplyBody {
            session_id: session_id.as_str(),
            run_id: &reply.run_id,
            reply: &reply.text,
        }
    }
}

/// The request's one line for a turn that was answered.
pub(super) fn log_turn(
    request_id: &str,
    session_id: &SessionId,
    reply: &Reply,
    streamed: bool,
    started: Instant,
) {
    let t = reply.timings;
    let emf = turn_metrics(reply, started);
    tracing::info!(
        request_id,
        session_id = %session_id,
        run_id = %reply.run_id,
        streamed,
        load_ms = t.load_ms,
        model_ms = t.model_ms,
        first_piece_ms = t.first_piece_ms,
        save_ms = t.save_ms,
        save_attempts = t.save_attempts,
        prompt_tokens = reply.usage.map(|u| u.prompt_tokens),
        completion_tokens = reply.usage.map(|u| u.completion_tokens),
        cached_tokens = reply.usage.and_then(|u| u.cached_tokens),
        cache_write_tokens = reply.usage.and_then(|u| u.cache_write_tokens),
        window_stepped = reply.context.stepped,
        summary_folded = reply.context.folded,
        outcome = if reply.replayed { "replayed" } else { "ok" },
        emf = %emf,
        "chat turn"
    );
}

/// A turn's metrics: a replay counts as one, with nothing of the model's.
fn turn_metrics(reply: &Reply, started: Instant) -> Values {
    let mut v = Values::request(started, 200);
    if reply.replayed {
        v.set(metrics::REPLAYS, 1.0);
        return v;
    }
    let t = reply.timings;
    v.set(metrics::TURNS, 1.0);
    v.set(metrics::MODEL_LATENCY, t.model_ms as f64);
    v.set_some(metrics::FIRST_TOKEN_LATENCY, t.first_piece_ms);
    v.set(metrics::SAVE_ATTEMPTS, f64::from(t.save_attempts));
    v.set(
        metrics::SAVE_CONFLICTS,
        f64::from(t.save_attempts.saturating_sub(1)),
    );
    if let Some(u) = reply.usage {
        v.set(metrics::TOKENS_IN, u.prompt_tokens as f64);
        v.set(metrics::TOKENS_OUT, u.completion_tokens as f64);
        v.set_some(metrics::TOKENS_CACHED, u.cached_tokens);
    }
    v
}

/// `Idempotent-Replayed: true`: the reply was saved by an earlier request with the same key.
pub(super) fn mark_replayed(headers: &mut header::HeaderMap) {
    headers.insert(
        "idempotent-replayed",
        header::HeaderValue::from_static("true"),
    );
}
