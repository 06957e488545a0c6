//! The chat page served at `GET /`: one self-contained HTML document (its CSS and JavaScript
//! are compiled in from `src/http/page/`, nothing is fetched from elsewhere) that talks to the same
//! API as any client. It is assembled on the first request, not at cold start, and only once
//! per instance: the function's auth mode written into it (the page adapts its sign-in to it;
//! nothing secret), a Content-Security-Policy that allows exactly its own script and style
//! (by hash) and requests to its own origin, and an ETag so browsers revalidate it cheaply.

use base64::Engine as _;
use lambda_http::http::{header, HeaderMap, HeaderValue, StatusCode};
use lambda_http::{Body, Response};
use sha2::{Digest, Sha256};

use crate::config::AuthMode;

const TEMPLATE: &str = include_str!("page/index.html");
const STYLE: &str = include_str!("page/page.css");
const SCRIPT: &str = include_str!("page/page.js");

/// The assembled page and the headers it is served with.
pub struct Page {
    html: String,
    etag: HeaderValue,
    csp: HeaderValue,
}

fn hash(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
}

impl Page {
    pub fn new(auth_mode: AuthMode) -> Page {
        let mode = match auth_mode {
            AuthMode::AwsIam => "AWS_IAM",
            AuthMode::Jwt => "JWT",
            AuthMode::None => "NONE",
        };
        let html = TEMPLATE
            .replacen("{{AUTH_MODE}}", mode, 1)
            .replacen("/*{{STYLE}}*/", STYLE, 1)
            .replacen("/*{{SCRIPT}}*/", SCRIPT, 1);
        let digest = Sha256::digest(html.as_bytes());
        let etag: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        let csp = format!(
            "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
            hash(SCRIPT),
            hash(STYLE)
        );
        Page {
            html,
            // Hex and base64 only: always a valid header value.
            etag: HeaderValue::from_str(&format!("\"{etag}\""))
                .unwrap_or_else(|_| HeaderValue::from_static("\"page\"")),
            csp: HeaderValue::from_str(&csp)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
        }
    }

    pub fn len(&self) -> usize {
        self.html.len()
    }

    pub fn is_empty(&self) -> bool {
        self.html.is_empty()
    }

    /// Whether an `If-None-Match` header names this version of the page.
    fn matches(&self, headers: &HeaderMap) -> bool {
        let Ok(etag) = self.etag.to_str() else {
            return false;
        };
        headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|tag| tag.trim().trim_start_matches("W/"))
            .any(|tag| tag == etag || tag == "*")
    }

    /// `200` with the page, or `304` when the browser's copy is this one.
    pub fn response(&self, request_headers: &HeaderMap) -> Response<Body> {
        let fresh = self.matches(request_headers);
        let mut response = Response::new(if fresh {
            Body::Empty
        } else {
            Body::Text(self.html.clone())
        });
        *response.status_mut() = if fresh {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::OK
        };
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        // Revalidate every time (a deploy changes the page), at the cost of a 304.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_small() {
        for mode in [AuthMode::AwsIam, AuthMode::Jwt, AuthMode::None] {
            let page = Page::new(mode);
            assert!(page.len() < 72 * 1024, "{} bytes", page.len());
            assert!(!page.html.contains("{{"), "every placeholder filled");
            assert!(page.html.contains(STYLE) && page.html.contains(SCRIPT));
            // Nothing loaded from elsewhere.
            for needle in ["http://", "https://", "src=", "<link rel=\"stylesheet\""] {
                assert!(!page.html.contains(needle), "{needle}");
            }
        }
        assert!(Page::new(AuthMode::Jwt)
            .html
            .contains("data-auth-mode=\"JWT\""));
        // Data is written as text, never parsed as HTML.
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("insertAdjacentHTML"));
    }

    #[test]
    fn served_with_its_headers_and_revalidated() {
        let page = Page::new(AuthMode::None);
        let first = page.response(&HeaderMap::new());
        assert_eq!(first.status(), 200);
        let h = first.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains(&format!("'sha256-{}'", hash(SCRIPT))), "{csp}");
        let etag = h[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag.clone());
        let second = page.response(&again);
        assert_eq!(second.status(), 304);
        assert!(matches!(second.body(), Body::Empty));
        assert_eq!(second.headers()[header::ETAG], etag);
        let mut other = HeaderMap::new();
        other.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"old\""));
        assert_eq!(page.response(&other).status(), 200);
        assert_ne!(
            Page::new(AuthMode::Jwt).etag,
            etag,
            "each mode's page is its own version"
        );
    }
}
