//! The Lambda entry adapter: takes each invocation's event as raw JSON, checks it before
//! lambda_http converts it, and answers in the API Gateway response format of its origin.
//!
//! lambda_http's own adapter (`lambda_http::run`) deserializes the event and converts it with
//! `unwrap`s and `expect`s that some inputs reach; with `panic = "abort"` (the release profile) a
//! panic kills the process, the invocation gets no answer and the next one a cold start. What
//! panics in lambda_http 1.3.2 (`request.rs`, `into_api_gateway_v2_request` /
//! `into_proxy_request`), each refused here with `400 invalid_request` instead:
//!
//! - a body marked `isBase64Encoded` that is not base64 (`Body::from_maybe_encoded`);
//! - a URL it cannot build (`build_request_uri` unwraps `Url::parse`, then the request builder
//!   is `expect`ed): a `Host` header or `X-Forwarded-Proto` that makes no URL, a path that does
//!   not start with `/` under the `$default` stage (`:x` becomes a port), an HTTP API raw query
//!   string with characters a URI cannot hold, a URI longer than 65534 bytes;
//! - more distinct header names than `http::HeaderMap` holds (32768; `insert`/`append` panic).
//!
//! An event that is not an API Gateway HTTP API (v2) or REST API (v1) proxy event at all gets the
//! same 400 (lambda_http would fail the invocation). Methods, header names and values are checked
//! by deserialization (a bad one is not an API Gateway event), and query strings and the rest
//! cannot panic. The unit tests below hold these checks to lambda_http's actual behaviour.
//!
//! **Buffered or streamed.** Each answer goes back the way the invocation expects it
//! ([`transfer_of`]). Invoked with `Invoke` (an HTTP API, a buffered REST integration), the
//! answer is one API Gateway response, events included all at once. Invoked with
//! `InvokeWithResponseStream` (a REST API with `ResponseTransferMode: STREAM`, a function URL in
//! `RESPONSE_STREAM` mode), *every* answer, JSON ones too, goes in Lambda's streaming format:
//! the status and headers as a metadata prelude, then the body as it is written. That is what
//! `lambda_http::run_with_streaming_response` does (this adapter keeps its own event checks in
//! front); a buffered answer to a streaming invocation would not reach the client as sent
//! (aws-lambda-rust-runtime issues 805 and 967), and a streamed one to a buffered invocation is
//! no API Gateway response at all.

mod admit;
mod respond;

use std::convert::Infallible;
use std::sync::Arc;

use lambda_http::http::HeaderValue;
use lambda_http::{Context, LambdaEvent, Request, RequestExt};
use lambda_runtime::FunctionResponse;
use serde_json::Value;

use crate::config::InvokeMode;
use crate::http::{Answer, ApiError, App};

pub use admit::{admit, Refusal, MAX_HEADER_NAMES};
pub use respond::{respond, streamed, StreamBody};

/// The stage variable that marks a streaming integration's events, and its value: the
/// template sets it on the streaming REST API's stage.
pub const INVOKE_MODE_STAGE_VARIABLE: &str = "invokeMode";
pub const RESPONSE_STREAM: &str = "RESPONSE_STREAM";

/// What the runtime sends back for one invocation.
pub type Outcome = FunctionResponse<Value, StreamBody>;

/// How an invocation's answer must go back: streamed when the function is set to
/// (`default`, from `INVOKE_MODE=RESPONSE_STREAM`) or the event came through a streaming integration (its stage
/// variable `invokeMode` is `RESPONSE_STREAM`), else buffered.
pub fn transfer_of(default: InvokeMode, event: &Value) -> InvokeMode {
    let marked = event
        .pointer(&format!("/stageVariables/{INVOKE_MODE_STAGE_VARIABLE}"))
        .and_then(Value::as_str)
        == Some(RESPONSE_STREAM);
    if marked {
        InvokeMode::ResponseStream
    } else {
        default
    }
}

/// Answers one invocation: never fails, never panics on what the event holds. `invoke_mode`
/// is how answers go back unless the event says otherwise (`INVOKE_MODE`).
pub async fn answer(app: &App, invoke_mode: InvokeMode, event: Value, context: Context) -> Outcome {
    let transfer = transfer_of(invoke_mode, &event);
    let (origin, answer) = match admit(&event) {
        Ok((origin, request)) => {
            let request = with_trace_header(request, &context).with_lambda_context(context);
            (origin, app.serve(request).await)
        }
        Err(refusal) => {
            // What is wrong is the event's own content, so the client may see it (as with a body
            // that is not JSON); the response logs the request's one line.
            let message = match refusal.detail.as_str() {
                "" => refusal.message.to_owned(),
                detail => format!("{} ({detail})", refusal.message),
            };
            let response =
                ApiError::InvalidRequest(message).into_response(&context.request_id, None);
            (refusal.origin, Answer::Whole(response))
        }
    };
    match transfer {
        InvokeMode::Buffered => {
            FunctionResponse::BufferedResponse(respond(origin, answer.into_response().await).await)
        }
        InvokeMode::ResponseStream => FunctionResponse::StreamingResponse(streamed(answer)),
    }
}

/// As lambda_http's adapter does: the invocation's X-Ray trace id as `x-amzn-trace-id`.
fn with_trace_header(mut request: Request, context: &Context) -> Request {
    if let Some(value) = context
        .xray_trace_id
        .as_deref()
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        request.headers_mut().insert("x-amzn-trace-id", value);
    }
    request
}

/// Serves invocations from the Lambda Runtime API until the runtime stops: one at a time, or
/// as many at once as `AWS_LAMBDA_MAX_CONCURRENCY` says (Lambda Managed Instances), every
/// worker sharing the one app (its clients and configuration, built once).
pub async fn run(app: App, invoke_mode: InvokeMode) -> Result<(), lambda_runtime::Error> {
    let app = Arc::new(app);
    let mut quick_failures = 0;
    loop {
        let started = std::time::Instant::now();
        let served = serve(Arc::clone(&app), invoke_mode).await;
        let Err(e) = served else {
            return Ok(());
        };
        // A response the Runtime API would not take (seen under `cargo lambda watch` when a
        // streaming client left mid-chunk) ends the runtime's loop. The turns in flight are
        // tasks of their own and go on to save: the loop starts again rather than the process
        // ending under them. Failing again at once, again and again, it gives up.
        quick_failures = match started.elapsed() < std::time::Duration::from_secs(1) {
            true => quick_failures + 1,
            false => 1,
        };
        if quick_failures > MAX_QUICK_RESTARTS {
            return Err(e);
        }
        tracing::error!(error = %e, "the runtime loop ended: starting it again");
    }
}

/// Restarts of the runtime's loop in a row, each failing within a second, before giving up.
const MAX_QUICK_RESTARTS: u32 = 3;

async fn serve(app: Arc<App>, invoke_mode: InvokeMode) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run_concurrent(lambda_runtime::service_fn(
        move |event: LambdaEvent<Value>| {
            let app = Arc::clone(&app);
            async move {
                Ok::<Outcome, Infallible>(
                    answer(&app, invoke_mode, event.payload, event.context).await,
                )
            }
        },
    ))
    .await
}
