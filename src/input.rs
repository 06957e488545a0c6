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
    #[error("owner must be 1-{MAX_SESSION_ID_LEN} characters of letters, digits and -_.:@")]
    Owner,
    #[error("title must be 1-{MAX_TITLE_CHARS} characters, not blank, without control characters")]
    Title,
    #[error("message is {actual} bytes, the limit is {limit}")]
    MessageTooLong { actual: usize, limit: usize },
    #[error("run_id must be 1-{MAX_RUN_ID_LEN} characters of letters, digits, - and _")]
    RunId,
    #[error("feedback must be {{\"rating\": \"up\" or \"down\", \"comment\": at most {MAX_COMMENT_CHARS} characters}}")]
    Feedback,
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
/// caller (`<owner>/<session id>`). The owner is encoded so that it holds neither `/` nor `#`
/// (see [`encode_component`]), and session ids hold neither, so no two identities can name the
/// same key and no session key can look like a side item's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey(String);

/// Owners (and idempotency keys) encoded longer than this are stored as a digest.
const MAX_ENCODED_COMPONENT: usize = 200;

/// Every byte but `A-Z a-z 0-9 - _ .` is percent-encoded, `~` included, so the digest form
/// (`~` and 64 hex digits) never equals an encoding.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// A key component from text we do not control (a JWT `sub`): collision-free, free of `/`, `#`
/// and `%`-ambiguity, and at most 200 bytes.
pub fn encode_component(raw: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(raw, COMPONENT).to_string();
    if encoded.len() <= MAX_ENCODED_COMPONENT {
        return encoded;
    }
    format!("~{}", sha256_hex(raw))
}

/// The SHA-256 of a text, in lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl SessionKey {
    /// `owner` is used exactly as given (a verified identity is never trimmed or changed).
    pub fn new(id: &SessionId, owner: Option<&str>) -> SessionKey {
        match owner {
            Some(owner) => SessionKey(format!("{}/{id}", encode_component(owner))),
            None => SessionKey(id.0.clone()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The session id part (after the owner, if any).
    pub fn session_id(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// A key as stored (read back from a listing).
    pub fn from_stored(key: String) -> SessionKey {
        SessionKey(key)
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest title accepted, in characters.
pub const MAX_TITLE_CHARS: usize = 200;

/// Whose sessions these are, as the owner index keys them: a verified JWT `sub`, or a user a
/// trusted backend names (`owner` in the body or query). The two never meet (`sub:` / `user:`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnerKey(String);

impl OwnerKey {
    /// A verified JWT subject, exactly as verified.
    pub fn from_sub(sub: &str) -> OwnerKey {
        OwnerKey(format!("sub:{}", encode_component(sub)))
    }

    /// A user named by a trusted backend: like a session id, 1-128 of `A-Za-z0-9-_.:@`.
    pub fn parse_user(raw: &str) -> Result<OwnerKey, InputError> {
        SessionId::parse(raw).map_err(|_| InputError::Owner)?;
        Ok(OwnerKey(format!("user:{raw}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest run id accepted (ours and griptape's are 32 hex digits).
pub const MAX_RUN_ID_LEN: usize = 64;

/// A run's id, as `GET /sessions/{id}` gives it: 1-64 letters, digits, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId(String);

impl RunId {
    pub fn parse(raw: &str) -> Result<RunId, InputError> {
        let ok = (1..=MAX_RUN_ID_LEN).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        match ok {
            true => Ok(RunId(raw.to_owned())),
            false => Err(InputError::RunId),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest feedback comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 2000;

/// A reader's rating of a reply: up or down, with an optional comment (at most 2,000
/// characters, not blank).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rating {
    pub up: bool,
    pub comment: Option<String>,
}

impl Rating {
    pub fn parse(rating: &str, comment: Option<&str>) -> Result<Rating, InputError> {
        let up = match rating {
            "up" => true,
            "down" => false,
            _ => return Err(InputError::Feedback),
        };
        let comment = match comment {
            Some(c) if c.trim().is_empty() || c.chars().count() > MAX_COMMENT_CHARS => {
                return Err(InputError::Feedback)
            }
            other => other.map(str::to_owned),
        };
        Ok(Rating { up, comment })
    }
}

/// A conversation's title: 1-200 characters, not blank, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    pub fn parse(raw: &str) -> Result<Title, InputError> {
        let len = raw.chars().count();
        if len == 0
            || len > MAX_TITLE_CHARS
            || raw.trim().is_empty()
            || raw.chars().any(char::is_control)
        {
            return Err(InputError::Title);
        }
        Ok(Title(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
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

    /// The key as it appears in a stored key: percent-encoded, so `#` and `/` in it cannot
    /// reach another item.
    pub fn encoded(&self) -> String {
        percent_encoding::utf8_percent_encode(&self.0, COMPONENT).to_string()
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
    fn run_ids_and_ratings() {
        assert!(RunId::parse("8c403fb92b134b14a0af8847e52e6212").is_ok());
        for bad in ["", "a/b", "a b", &"a".repeat(65)] {
            assert_eq!(RunId::parse(bad), Err(InputError::RunId), "{bad:?}");
        }
        assert!(Rating::parse("up", None).unwrap().up);
        assert_eq!(
            Rating::parse("down", Some("wrong"))
                .unwrap()
                .comment
                .as_deref(),
            Some("wrong")
        );
        assert_eq!(Rating::parse("meh", None), Err(InputError::Feedback));
        assert_eq!(Rating::parse("up", Some(" ")), Err(InputError::Feedback));
        let long = "x".repeat(MAX_COMMENT_CHARS + 1);
        assert_eq!(Rating::parse("up", Some(&long)), Err(InputError::Feedback));
    }

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
    fn owner_keys_cannot_collide() {
        let id = SessionId::parse("s").unwrap();
        let key = |owner: &str| SessionKey::new(&id, Some(owner)).as_str().to_owned();
        assert_eq!(key("alice"), "alice/s");
        // A sub that tries to look like another user's key, or a side item's, is encoded.
        assert_eq!(key("alice/s#idem#x"), "alice%2Fs%23idem%23x/s");
        assert_ne!(
            key(" alice\n"),
            key("alice"),
            "the sub is used exactly as verified"
        );
        assert_ne!(key("a%2Fb"), key("a/b"));
        // Long subs become a digest; keys stay short whatever the sub.
        let long = "x".repeat(3000);
        assert!(key(&long).starts_with('~') && key(&long).len() < 80);
        assert_ne!(key(&long), key(&"x".repeat(2999)));
        let digest_like = format!("~{}", "0".repeat(64));
        assert!(
            key(&digest_like).starts_with("%7E"),
            "never mistaken for a digest"
        );
        let mut seen = std::collections::HashSet::new();
        for owner in [
            "a", "a/", "a#", "a b", "é", "a%", "~a", "A", "a.", "a-", "a_",
        ] {
            let k = key(owner);
            assert!(!k[..k.len() - 2].contains(['/', '#']), "{k}");
            assert!(seen.insert(k), "{owner}");
        }
        let idem = IdempotencyKey::parse("a/b#c%d").unwrap();
        assert_eq!(idem.encoded(), "a%2Fb%23c%25d");
    }

    #[test]
    fn owners_and_titles() {
        assert_eq!(
            OwnerKey::parse_user("alice").unwrap().as_str(),
            "user:alice"
        );
        assert_eq!(OwnerKey::parse_user("a b"), Err(InputError::Owner));
        assert_ne!(
            OwnerKey::from_sub("alice"),
            OwnerKey::parse_user("alice").unwrap()
        );
        assert_eq!(OwnerKey::from_sub("a/b#c").as_str(), "sub:a%2Fb%23c");
        assert!(Title::parse("Trip to Lisbon ✈").is_ok());
        for bad in ["", "  ", "a\nb", &"t".repeat(201)] {
            assert_eq!(Title::parse(bad), Err(InputError::Title), "{bad:?}");
        }
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
