//! Admission: an event is checked before lambda_http converts it, so nothing it holds can make
//! lambda_http panic (see the module above for what would).

use lambda_http::aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use lambda_http::http::{header, HeaderMap, Uri};
use lambda_http::request::{LambdaRequest, RequestOrigin};
use lambda_http::Request;
use serde_json::Value;

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

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::RequestExt;
    use serde_json::json;

    fn http_api() -> Value {
        serde_json::from_str(include_str!("../../events/http-api/1-collin-hello.json")).unwrap()
    }

    fn rest_api() -> Value {
        serde_json::from_str(include_str!("../../events/rest-api/1-collin-hello.json")).unwrap()
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
}
