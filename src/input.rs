//! Typed request inputs: a value of these types has already been checked.

use std::fmt;

/// Longest session id accepted, in characters.
pub const MAX_SESSION_ID_LEN: usize = 128;

/// A session id: 1-128 characters of ASCII letters, digits and `-_.:@`, not only dots.
///
/// The restricted alphabet keeps ids safe as DynamoDB keys, log fields and URL path segments, and
/// leaves characters free for internal keys that no session id can collide with. `.` and `..` would
/// be dot segments in `/sessions/{session_id}`, which URLs resolve away, so they could be stored
/// but never read or deleted; ids made only of dots are refused with them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

/// Why a request input was refused; the text is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("session_id must be 1-{MAX_SESSION_ID_LEN} characters, got {0}")]
    SessionIdLength(usize),
    #[error("session_id may only contain letters, digits and -_.:@ (found {0:?})")]
    SessionIdCharacter(char),
    #[error("session_id must not be made only of dots (\".\" and \"..\" cannot be addressed in a URL path)")]
    SessionIdDots,
    #[error("Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters without spaces")]
    IdempotencyKey,
    #[error("message must not be blank")]
    BlankMessage,
    #[error("message is {actual} bytes, the limit is {limit}")]
    MessageTooLong { actual: usize, limit: usize },
}

impl SessionId {
    pub fn parse(raw: &str) -> Result<SessionId, InputError> {
        let len = raw.chars().count();
        if len == 0 || len > MAX_SESSION_ID_LEN {
            return Err(InputError::SessionIdLength(len));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.:@".contains(*c)))
        {
            return Err(InputError::SessionIdCharacter(bad));
        }
        if raw.bytes().all(|b| b == b'.') {
            return Err(InputError::SessionIdDots);
        }
        Ok(SessionId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a session is stored: its id, prefixed by its owner's identity when sessions are per
/// caller (`<owner>/<session id>`). `/` is not allowed in a session id, so no unscoped id can
/// look like a scoped one, and one owner can never reach another's sessions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey(String);

impl SessionKey {
    pub fn new(id: &SessionId, owner: Option<&str>) -> SessionKey {
        match owner {
            Some(owner) => SessionKey(format!("{owner}/{id}")),
            None => SessionKey(id.0.clone()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A client's `Idempotency-Key`: 1-255 printable ASCII characters, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<IdempotencyKey, InputError> {
        if raw.is_empty()
            || raw.len() > MAX_IDEMPOTENCY_KEY_LEN
            || !raw.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(InputError::IdempotencyKey);
        }
        Ok(IdempotencyKey(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user's message: not blank, at most the configured number of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message(String);

impl Message {
    pub fn parse(raw: &str, max_bytes: usize) -> Result<Message, InputError> {
        if raw.len() > max_bytes {
            return Err(InputError::MessageTooLong {
                actual: raw.len(),
                limit: max_bytes,
            });
        }
        if raw.trim().is_empty() {
            return Err(InputError::BlankMessage);
        }
        Ok(Message(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids() {
        for ok in [
            "user-id-123",
            "group-id-123",
            "a",
            "x@y.z:1_2",
            "a.b",
            "...x",
            ".a.",
            &"a".repeat(128),
        ] {
            assert_eq!(SessionId::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(SessionId::parse(""), Err(InputError::SessionIdLength(0)));
        assert_eq!(
            SessionId::parse(&"a".repeat(129)),
            Err(InputError::SessionIdLength(129))
        );
        assert_eq!(
            SessionId::parse("a b"),
            Err(InputError::SessionIdCharacter(' '))
        );
        assert_eq!(
            SessionId::parse("a#b"),
            Err(InputError::SessionIdCharacter('#'))
        );
        for dots in [".", "..", "...", &".".repeat(128)] {
            assert_eq!(
                SessionId::parse(dots),
                Err(InputError::SessionIdDots),
                "{dots}"
            );
        }
        assert_eq!(
            SessionId::parse("é"),
            Err(InputError::SessionIdCharacter('é'))
        );
    }

    #[test]
    fn idempotency_keys() {
        assert!(IdempotencyKey::parse("3f1c2a9e-7a1b-4e0f-9d55-0c9b6c1e2f3a").is_ok());
        for bad in ["", "a b", "é", &"k".repeat(256), "tab\t"] {
            assert_eq!(
                IdempotencyKey::parse(bad),
                Err(InputError::IdempotencyKey),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn messages() {
        assert_eq!(Message::parse("hi", 10).unwrap().as_str(), "hi");
        assert_eq!(Message::parse(" \n\t", 10), Err(InputError::BlankMessage));
        assert_eq!(
            Message::parse("ééé", 5),
            Err(InputError::MessageTooLong {
                actual: 6,
                limit: 5
            })
        );
        assert!(Message::parse("ééé", 6).is_ok());
    }
}
