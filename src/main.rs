//! The Lambda entry point: configure once per cold start, then serve API Gateway events through
//! the entry adapter (`session_chat::runtime`).

use std::process::ExitCode;

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
        Ok(app) => app,
        Err(e) => {
            eprintln!("session-chat: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match session_chat::runtime::run(app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-chat: runtime error: {e}");
            ExitCode::FAILURE
        }
    }
}
