//! Answers in the format the invocation expects: one API Gateway response (buffered), or
//! Lambda's streaming format (a metadata prelude, then the body as it is written).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use lambda_http::http::header;
use lambda_http::request::RequestOrigin;
use lambda_http::{Body, IntoResponse, Response};
use lambda_runtime::{MetadataPrelude, StreamResponse};
use serde_json::Value;

use crate::http::{Answer, EventStream};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ApiError;
    use serde_json::json;

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
