//! Any bytes as a `POST /chat` body: a typed request or a typed error, never a panic; and an
//! accepted request holds exactly what the rules allow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_chat::http::parse_chat_body;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = parse_chat_body(data, 1024) {
        let id = request.session_id.as_str();
        assert!((1..=128).contains(&id.len()));
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b)));
        let message = request.message.as_str();
        assert!(message.len() <= 1024 && !message.trim().is_empty());
    }
});
