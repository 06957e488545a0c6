//! The Lambda entry point: logs, configuration and clients once per cold start, then API
//! Gateway events served through the entry adapter (`session_chat::lambda`).

use std::process::ExitCode;

use session_chat::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    session_chat::telemetry::init_tracing();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("session-chat: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    session_chat::metrics::set_namespace(&config.metrics_namespace);
    let app = match session_chat::startup::build_app(&config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("session-chat: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match session_chat::lambda::run(app, config.invoke_mode).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-chat: runtime error: {e}");
            ExitCode::FAILURE
        }
    }
}
