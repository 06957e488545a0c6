//! The Lambda entry point: configure once per cold start, then serve API Gateway events.

use std::process::ExitCode;
use std::sync::Arc;

use session_chat::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    session_chat::init_tracing();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("session-chat: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let app = match session_chat::build_app(&config).await {
        Ok(app) => Arc::new(app),
        Err(e) => {
            eprintln!("session-chat: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let handler = lambda_http::service_fn(move |request| {
        let app = Arc::clone(&app);
        async move { Ok::<_, std::convert::Infallible>(app.handle(request).await) }
    });
    match lambda_http::run(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-chat: runtime error: {e}");
            ExitCode::FAILURE
        }
    }
}
