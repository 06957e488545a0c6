//! The function's entry adapter: takes each invocation's event as raw JSON, checks it before
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

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use lambda_http::aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use lambda_http::http::{header, HeaderMap, HeaderValue, Uri};
use lambda_http::request::{LambdaRequest, RequestOrigin};
use lambda_http::{Body, Context, IntoResponse, LambdaEvent, Request, RequestExt, Response};
use lambda_runtime::{FunctionResponse, MetadataPrelude, StreamResponse};
use serde_json::Value;

use crate::config::InvokeMode;
use crate::http::{Answer, ApiError, App, EventStream};

/// The stage variable that marks a streaming integration's events, and its value: the
/// template sets it on the streaming REST API's stage.
pub const INVOKE_MODE_STAGE_VARIABLE: &str = "invokeMode";
pub const RESPONSE_STREAM: &str = "RESPONSE_STREAM";

/// The most names one header object may have. API Gateway limits a request's headers to about
/// 10 KB, so no real request comes near; twice this (REST events have two header maps, merged by
/// lambda_http) stays below `http::HeaderMap`'s 32768, past which it panics.
pub const MAX_HEADER_NAMES: usize = 10_000;

/// What the event says it is, read before deserializing it: picks the response format for an
/// event that is refused, and which deserialization error to report.
fn origin_of(event: &Value) -> RequestOrigin {
    let v2 = event.get("version").and_then(Value::as_str) == Some("2.0")
        || event.get("rawPath").is_some()
        || event.pointer("/requestContext/http").is_some();
    if v2 {
        RequestOrigin::ApiGatewayV2
    } else {
        RequestOrigin::ApiGatewayV1
    }
}

/// An event refused before conversion: the origin to answer in, what is refused, and what
/// exactly is wrong with it (both are told to the client).
#[derive(Debug)]
pub struct Refusal {
    pub origin: RequestOrigin,
    pub message: &'static str,
    pub detail: String,
}

impl Refusal {
    fn new(origin: RequestOrigin, message: &'static str, detail: impl Into<String>) -> Self {
        Refusal {
            origin,
            message,
            detail: detail.into(),
        }
    }
}

const NOT_AN_EVENT: &str =
    "the event is not an API Gateway HTTP API (v2) or REST API (v1) proxy request";
const BAD_BASE64: &str =
    "the request body is marked base64-encoded (isBase64Encoded) but is not valid base64";
const BAD_URL: &str = "the request's host, path or query string do not form a valid URL";
const TOO_MANY_HEADERS: &str = "the request has too many headers";

/// Checks an event and converts it with lambda_http (`LambdaRequest`, `Request::from`): the
/// request and the origin to answer in, or why it cannot be converted without a panic.
pub fn admit(event: &Value) -> Result<(RequestOrigin, Request), Refusal> {
    let guessed = origin_of(event);
    for field in ["headers", "multiValueHeaders"] {
        let names = event
            .get(field)
            .and_then(Value::as_object)
            .map_or(0, |m| m.len());
        if names > MAX_HEADER_NAMES {
            return Err(Refusal::new(
                guessed,
                TOO_MANY_HEADERS,
                format!("{field} has {names} names, at most {MAX_HEADER_NAMES} are taken"),
            ));
        }
    }
    // LambdaRequest reads the event as a raw JSON value, which only a text deserializer gives.
    let text = event.to_string();
    let request: LambdaRequest = serde_json::from_str(&text).map_err(|_| {
        // lambda_http's error names no field; say what is wrong with the likelier shape.
        let detail = match guessed {
            RequestOrigin::ApiGatewayV2 => serde_json::from_str::<ApiGatewayV2httpRequest>(&text)
                .err()
                .map(|e| format!("as an HTTP API (v2) event: {e}")),
            _ => serde_json::from_str::<ApiGatewayProxyRequest>(&text)
                .err()
                .map(|e| format!("as a REST API (v1) event: {e}")),
        };
        Refusal::new(guessed.clone(), NOT_AN_EVENT, detail.unwrap_or_default())
    })?;
    let origin = request.request_origin();
    let problem = match &request {
        LambdaRequest::ApiGatewayV1(event) => body_problem(event.is_base64_encoded, &event.body)
            .or_else(|| {
                let query = [
                    &event.multi_value_query_string_parameters,
                    &event.query_string_parameters,
                ]
                .into_iter()
                .find(|q| !q.is_empty())
                .map(|q| q.to_query_string());
                uri_problem(
                    event.path.as_deref().unwrap_or_default(),
                    &event.request_context.stage,
                    &event.headers,
                    event.request_context.domain_name.as_deref(),
                    query.as_deref(),
                )
            }),
        LambdaRequest::ApiGatewayV2(event) => body_problem(event.is_base64_encoded, &event.body)
            .or_else(|| {
                uri_problem(
                    event.raw_path.as_deref().unwrap_or_default(),
                    &event.request_context.stage,
                    &event.headers,
                    event.request_context.domain_name.as_deref(),
                    event.raw_query_string.as_deref(),
                )
            }),
        // Other origins (ALB, WebSocket, VPC Lattice) are not compiled in.
        _ => Some((NOT_AN_EVENT, "not an API Gateway proxy event".to_owned())),
    };
    if let Some((message, detail)) = problem {
        return Err(Refusal::new(origin, message, detail));
    }
    Ok((origin, Request::from(request)))
}

/// `Body::from_maybe_encoded` decodes with base64's standard alphabet, padded, and panics when
/// it cannot.
fn body_problem(base64: bool, body: &Option<String>) -> Option<(&'static str, String)> {
    use base64::Engine as _;
    let body = body.as_deref().filter(|_| base64)?;
    let e = base64::engine::general_purpose::STANDARD
        .decode(body)
        .err()?;
    Some((BAD_BASE64, e.to_string()))
}

/// Whether lambda_http can build the request's URI (request.rs `apigw_path_with_stage` and
/// `build_request_uri`, then `http::Request::builder().uri(..)`), done the same way.
fn uri_problem(
    raw_path: &str,
    stage: &Option<String>,
    headers: &HeaderMap,
    domain_name: Option<&str>,
    query: Option<&str>,
) -> Option<(&'static str, String)> {
    let path = match stage.as_deref() {
        _ if std::env::var("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH").is_ok() => raw_path.to_owned(),
        None | Some("$default") => raw_path.to_owned(),
        Some(stage) if raw_path.starts_with(&format!("/{stage}/")) => raw_path.to_owned(),
        Some(stage) => format!("/{stage}{raw_path}"),
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(domain_name);
    let url = match host {
        None => url::Url::parse(&format!("http://localhost{path}")).map(|u| u.path().to_owned()),
        Some(host) => {
            let scheme = headers
                .get("x-forwarded-proto")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("https");
            url::Url::parse(&format!("{scheme}://{host}{path}")).map(String::from)
        }
    };
    let mut uri = match url {
        Ok(uri) => uri,
        Err(e) => return Some((BAD_URL, e.to_string())),
    };
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        uri.push('?');
        uri.push_str(query);
    }
    let e = Uri::try_from(uri).err()?;
    Some((BAD_URL, e.to_string()))
}

/// The response in the format of the event's origin, as lambda_http writes it (body converted
/// by `IntoResponse`, then `LambdaResponse::from_response`, which lambda_http reaches through
/// its `TransformResponse`), as JSON.
pub async fn respond(origin: RequestOrigin, response: Response<Body>) -> Value {
    let converted = lambda_http::TransformResponse::<'_, Response<Body>, Infallible>::Response(
        origin,
        response.into_response(),
    )
    .await;
    let Ok(converted) = converted;
    serde_json::to_value(converted).unwrap_or_else(|e| {
        // Only a header value that is not UTF-8 could do this; ours are all ASCII.
        tracing::error!(error = %e, "cannot serialize the response");
        serde_json::json!({"statusCode": 500, "body": ""})
    })
}

/// How an invocation's answer must go back: streamed when the function is set to
/// (`INVOKE_MODE=RESPONSE_STREAM`) or the event came through a streaming integration (its stage
/// variable `invokeMode` is `RESPONSE_STREAM`), else buffered.
pub fn transfer_of(app: &App, event: &Value) -> InvokeMode {
    let marked = event
        .pointer(&format!("/stageVariables/{INVOKE_MODE_STAGE_VARIABLE}"))
        .and_then(Value::as_str)
        == Some(RESPONSE_STREAM);
    if marked {
        InvokeMode::ResponseStream
    } else {
        app.invoke_mode()
    }
}

/// A streamed answer's body: a whole response's bytes at once, or events as they are written.
pub enum StreamBody {
    Once(Option<Vec<u8>>),
    Events(EventStream),
}

impl futures_core::Stream for StreamBody {
    type Item = Result<Vec<u8>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            StreamBody::Once(bytes) => Poll::Ready(bytes.take().map(Ok)),
            StreamBody::Events(events) => events
                .poll_event(cx)
                .map(|event| event.map(|text| Ok(text.into_bytes()))),
        }
    }
}

/// What the runtime sends back for one invocation.
pub type Outcome = FunctionResponse<Value, StreamBody>;

/// An answer in Lambda's streaming format (as `lambda_http` converts one): status, headers and
/// cookies as the metadata prelude, the body after it.
pub fn streamed(answer: Answer) -> StreamResponse<StreamBody> {
    let (head, body) = match answer {
        Answer::Whole(response) => {
            let (head, body) = response.into_parts();
            let bytes = match body {
                Body::Empty => None,
                Body::Text(text) => Some(text.into_bytes()),
                Body::Binary(bytes) => Some(bytes),
                _ => None,
            };
            (head, StreamBody::Once(bytes.filter(|b| !b.is_empty())))
        }
        Answer::Events { head, events } => (head.into_parts().0, StreamBody::Events(events)),
    };
    let mut headers = head.headers;
    let cookies = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|c| String::from_utf8_lossy(c.as_bytes()).into_owned())
        .collect();
    headers.remove(header::SET_COOKIE);
    StreamResponse {
        metadata_prelude: MetadataPrelude {
            status_code: head.status,
            headers,
            cookies,
        },
        stream: body,
    }
}

/// Answers one invocation: never fails, never panics on what the event holds.
pub async fn answer(app: &App, event: Value, context: Context) -> Outcome {
    let transfer = transfer_of(app, &event);
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

/// Serves invocations from the Lambda Runtime API until the runtime stops.
pub async fn run(app: App) -> Result<(), lambda_runtime::Error> {
    let app = Arc::new(app);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<Value>| {
            let app = Arc::clone(&app);
            async move { Ok::<Outcome, Infallible>(answer(&app, event.payload, event.context).await) }
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn http_api() -> Value {
        serde_json::from_str(include_str!("../events/http-api/1-collin-hello.json")).unwrap()
    }

    fn rest_api() -> Value {
        serde_json::from_str(include_str!("../events/rest-api/1-collin-hello.json")).unwrap()
    }

    /// Sets `value` at a JSON pointer made of object keys, creating objects on the way.
    fn set(event: &mut Value, pointer: &str, value: Value) {
        let mut at = event;
        for key in pointer.split('/').skip(1) {
            if !at.is_object() {
                *at = json!({});
            }
            at = at
                .as_object_mut()
                .unwrap()
                .entry(key)
                .or_insert(Value::Null);
        }
        *at = value;
    }

    /// What lambda_http does with the event: `None` when it panics.
    fn lambda_http_converts(event: &Value) -> Option<bool> {
        quiet_panics();
        let text = event.to_string();
        std::panic::catch_unwind(move || lambda_http::request::from_str(&text).is_ok()).ok()
    }

    /// The panics these tests provoke in lambda_http are expected: keep them off the output.
    fn quiet_panics() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let quiet = std::thread::current()
                    .name()
                    .is_some_and(|n| n.starts_with("runtime::tests::"));
                if !quiet {
                    previous(info);
                }
            }));
        });
    }

    fn refusal(event: &Value) -> Option<&'static str> {
        admit(event).err().map(|r| r.message)
    }

    #[test]
    fn good_events_are_admitted() {
        for event in [http_api(), rest_api()] {
            let (_, request) = admit(&event).expect("admitted");
            assert_eq!(request.raw_http_path(), "/chat");
            assert_eq!(request.method(), "POST");
        }
        let mut encoded = http_api();
        encoded["isBase64Encoded"] = true.into();
        encoded["body"] = "eyJhIjogMX0=".into();
        let (_, request) = admit(&encoded).expect("admitted");
        assert_eq!(request.body().as_ref(), br#"{"a": 1}"#);
    }

    /// Each input here makes lambda_http 1.3.2 panic (with `panic = "abort"`, the process dies);
    /// `admit` refuses each one instead.
    #[test]
    fn what_makes_lambda_http_panic_is_refused() {
        let cases: Vec<(&str, Value, &str, Value)> = vec![
            (
                "HTTP API, not base64",
                http_api(),
                "/isBase64Encoded",
                true.into(),
            ),
            (
                "REST API, not base64",
                rest_api(),
                "/isBase64Encoded",
                true.into(),
            ),
            ("Host header", http_api(), "/headers/host", "a b".into()),
            ("Host header", rest_api(), "/headers/Host", "[::".into()),
            ("IDNA host", http_api(), "/headers/host", "xn--a.com".into()),
            (
                "X-Forwarded-Proto",
                http_api(),
                "/headers/x-forwarded-proto",
                "h t".into(),
            ),
            (
                "X-Forwarded-Proto",
                rest_api(),
                "/headers/X-Forwarded-Proto",
                "".into(),
            ),
            ("path, $default stage", http_api(), "/rawPath", ":x".into()),
            (
                "raw query string",
                http_api(),
                "/rawQueryString",
                "a=b c".into(),
            ),
            (
                "raw query string",
                http_api(),
                "/rawQueryString",
                "a=\"".into(),
            ),
            (
                "long path",
                http_api(),
                "/rawPath",
                format!("/{}", "a".repeat(70_000)).into(),
            ),
            (
                "long path",
                rest_api(),
                "/path",
                format!("/{}", "a".repeat(70_000)).into(),
            ),
        ];
        for (what, mut event, pointer, value) in cases {
            set(&mut event, pointer, value);
            assert_eq!(
                lambda_http_converts(&event),
                None,
                "{what}: lambda_http panics"
            );
            let expected = if what.contains("base64") {
                BAD_BASE64
            } else {
                BAD_URL
            };
            assert_eq!(refusal(&event), Some(expected), "{what}");
        }
    }

    #[test]
    fn too_many_header_names_are_refused() {
        for (event, field) in [(http_api(), "headers"), (rest_api(), "multiValueHeaders")] {
            let mut event = event;
            let names: serde_json::Map<String, Value> = (0..40_000)
                .map(|i| {
                    (
                        format!("x-h{i}"),
                        if field == "headers" {
                            json!("v")
                        } else {
                            json!(["v"])
                        },
                    )
                })
                .collect();
            event[field] = names.into();
            assert_eq!(
                lambda_http_converts(&event),
                None,
                "{field}: lambda_http panics"
            );
            assert_eq!(refusal(&event), Some(TOO_MANY_HEADERS), "{field}");
        }
        // As many as taken, in both REST maps (merged by lambda_http): converted.
        let mut event = rest_api();
        for field in ["headers", "multiValueHeaders"] {
            let names: serde_json::Map<String, Value> = (0..MAX_HEADER_NAMES)
                .map(|i| {
                    (
                        format!("{field}-{i}"),
                        if field == "headers" {
                            json!("v")
                        } else {
                            json!(["v"])
                        },
                    )
                })
                .collect();
            event[field] = names.into();
        }
        assert!(admit(&event).is_ok());
    }

    #[test]
    fn what_is_not_an_api_gateway_event_is_refused() {
        let mut bad_method = rest_api();
        bad_method["httpMethod"] = "GE T".into();
        let mut bad_header = http_api();
        bad_header["headers"]["x-bad"] = "a\u{1}b".into();
        for event in [
            json!({}),
            json!(null),
            json!("text"),
            json!([1, 2]),
            json!({"Records": [{"eventSource": "aws:s3"}]}),
            json!({"version": "2.0", "rawPath": "/chat"}),
            bad_method,
            bad_header,
        ] {
            assert_eq!(lambda_http_converts(&event), Some(false), "{event}");
            assert_eq!(refusal(&event), Some(NOT_AN_EVENT), "{event}");
        }
    }

    /// A small xorshift generator: the same events on every run.
    struct Rng(u64);

    impl Rng {
        fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            choices[(self.0 % choices.len() as u64) as usize]
        }

        fn string(&mut self, pieces: &[&str], most: usize) -> String {
            let n = self
                .pick(&["0", "1", "2", "3", "4"])
                .parse::<usize>()
                .unwrap();
            (0..n.min(most)).map(|_| self.pick(pieces)).collect()
        }
    }

    /// Fields lambda_http builds the URI and body from, filled with what breaks URLs: `admit`
    /// refuses exactly the events lambda_http panics on, and admits the rest.
    #[test]
    fn admit_agrees_with_lambda_http() {
        const PIECES: &[&str] = &[
            "",
            "a",
            "/",
            ":",
            "@",
            "[",
            "]",
            "::1",
            "%",
            "%zz",
            "%41",
            " ",
            "#",
            "?",
            "\\",
            "é",
            "xn--",
            "1.2.3.999",
            ".",
            "..",
            "{",
            "\"",
            "\t",
            "0x7f",
            "80",
            "99999",
            "=",
            "&",
            "+",
            "-",
            "localhost",
            "..a",
            "|",
            "^",
            "`",
            "<",
        ];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let (mut admitted, mut refused) = (0, 0);
        for _ in 0..4000 {
            let v2 = rng.pick(&["v1", "v2"]) == "v2";
            let mut event = if v2 { http_api() } else { rest_api() };
            let (host, proto, path_field) = if v2 {
                ("/headers/host", "/headers/x-forwarded-proto", "/rawPath")
            } else {
                ("/headers/Host", "/headers/X-Forwarded-Proto", "/path")
            };
            match rng.pick(&["keep", "set", "drop"]) {
                "set" => set(&mut event, host, rng.string(PIECES, 3).into()),
                "drop" => {
                    let headers = event["headers"].as_object_mut().unwrap();
                    headers.retain(|k, _| !k.eq_ignore_ascii_case("host"));
                    if rng.pick(&["keep", "drop"]) == "drop" {
                        event["requestContext"]["domainName"] = Value::Null;
                    }
                }
                _ => {}
            }
            if rng.pick(&["keep", "set"]) == "set" {
                set(
                    &mut event,
                    proto,
                    rng.string(&["http", "https", "s", ":", " ", "1", "+"], 2)
                        .into(),
                );
            }
            let path = format!("{}{}", rng.pick(&["/", "", "//"]), rng.string(PIECES, 4));
            set(&mut event, path_field, path.into());
            let stage = rng.pick(&["$default", "prod", "sessions", "", "a:b", "@"]);
            event["requestContext"]["stage"] = stage.into();
            if v2 {
                event["rawQueryString"] = rng.string(PIECES, 3).into();
            } else if rng.pick(&["keep", "set"]) == "set" {
                event["queryStringParameters"] =
                    json!({rng.string(PIECES, 2): rng.string(PIECES, 2)});
            }
            if rng.pick(&["keep", "encode"]) == "encode" {
                event["isBase64Encoded"] = true.into();
                event["body"] = rng
                    .pick(&["eyJhIjogMX0=", "eyJhIjogMX0", "e", "", "Zm9v", "Zm9v\n"])
                    .into();
            }
            let converts = lambda_http_converts(&event);
            match admit(&event) {
                Ok(_) => {
                    admitted += 1;
                    assert_eq!(
                        converts,
                        Some(true),
                        "admitted, but lambda_http fails: {event}"
                    );
                }
                Err(r) => {
                    refused += 1;
                    let expected = if r.message == NOT_AN_EVENT {
                        Some(false)
                    } else {
                        None
                    };
                    assert_eq!(converts, expected, "refused ({}): {event}", r.detail);
                }
            }
        }
        assert!(
            admitted > 500 && refused > 500,
            "{admitted} admitted, {refused} refused"
        );
    }

    #[tokio::test]
    async fn streamed_answers_carry_status_headers_and_body() {
        use futures_core::Stream;
        let response = ApiError::Chat(crate::chat::ChatError::Busy(1)).into_response("r", None);
        let StreamResponse {
            metadata_prelude,
            mut stream,
        } = streamed(Answer::Whole(response));
        assert_eq!(metadata_prelude.status_code, 503);
        assert_eq!(metadata_prelude.headers["content-type"], "application/json");
        assert_eq!(metadata_prelude.headers["retry-after"], "1");
        let prelude = serde_json::to_value(&metadata_prelude).unwrap();
        assert_eq!(prelude["statusCode"], 503);
        let mut body = Vec::new();
        while let Some(chunk) = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await
        {
            let Ok(chunk) = chunk;
            body.extend(chunk);
        }
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "session_busy");

        let mut empty = Response::new(Body::Empty);
        *empty.status_mut() = lambda_http::http::StatusCode::NO_CONTENT;
        let StreamResponse {
            metadata_prelude,
            stream,
        } = streamed(Answer::Whole(empty));
        assert_eq!(metadata_prelude.status_code, 204);
        assert!(matches!(stream, StreamBody::Once(None)));
    }

    #[tokio::test]
    async fn responses_take_the_origin_s_format() {
        let response = ApiError::InvalidRequest("no".into()).into_response("r", None);
        let v1 = respond(RequestOrigin::ApiGatewayV1, response).await;
        assert_eq!(v1["statusCode"], 400);
        assert_eq!(
            v1["multiValueHeaders"]["content-type"],
            json!(["application/json"])
        );
        assert_eq!(v1["isBase64Encoded"], false);
        let body: Value = serde_json::from_str(v1["body"].as_str().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": "invalid_request", "message": "no"}})
        );

        let response = ApiError::Chat(crate::chat::ChatError::Busy(1)).into_response("r", None);
        let v2 = respond(RequestOrigin::ApiGatewayV2, response).await;
        assert_eq!(v2["statusCode"], 503);
        assert_eq!(v2["headers"]["content-type"], "application/json");
        assert_eq!(v2["headers"]["retry-after"], "1");
        let body: Value = serde_json::from_str(v2["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "session_busy");
    }
}
