//! `session MESSAGE SESSION_ID`: the seed's `session.py`. Runs one chat turn in-process with the
//! same configuration as the Lambda and prints the reply.

use std::process::ExitCode;

use session_chat::chat::TurnRequest;
use session_chat::config::Config;
use session_chat::error::chain;
use session_chat::input::{Message, SessionId, SessionKey};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [message, session_id] = args.as_slice() else {
        eprintln!("usage: session MESSAGE SESSION_ID");
        return ExitCode::from(2);
    };
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("session: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let (session_id, message) = match (
        SessionId::parse(session_id),
        Message::parse(message, config.max_message_bytes),
    ) {
        (Ok(s), Ok(m)) => (s, m),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("session: {e}");
            return ExitCode::from(2);
        }
    };
    let chat = match session_chat::startup::build_chat(&config).await {
        Ok(chat) => chat,
        Err(e) => {
            eprintln!("session: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let turn = TurnRequest::new(SessionKey::new(&session_id, None), message);
    match chat.send(&turn).await {
        Ok(reply) => {
            println!("{}", reply.text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("session: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}
