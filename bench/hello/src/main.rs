//! hello: the smallest lambda_http function, answering every request with a fixed JSON body.
//! Its init time and per-invocation latency are the floor for session-chat's.

use lambda_http::{Body, Error, Request, Response};

async fn hello(_request: Request) -> Result<Response<Body>, Error> {
    let response = Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from(r#"{"reply":"hello"}"#))?;
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::run(lambda_http::service_fn(hello)).await
}
