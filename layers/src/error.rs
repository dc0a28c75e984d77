//! Error types shared by the layers, and the JSON error answer.
//!
//! Errors stay boxed ([`BoxError`]) inside a stack and are turned into HTTP
//! answers in one place at its edge, by asking what caused them
//! ([`find_cause`]), never by matching strings.

use std::{error::Error as StdError, fmt};

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, ArtifactBody};

/// The boxed error that travels through a stack.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a request to upstream did not produce a usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The connection could not be made (refused, unreachable, name not resolved).
    Connect,
    /// Upstream did not answer, or stopped sending, within the timeout.
    Timeout,
    /// The body broke off, or was shorter or longer than announced.
    Body,
    /// Redirects went in a loop, too far, or to a forbidden address.
    Redirect,
    /// Any other failure of the exchange (protocol error, bad URL).
    Other,
}

/// A failed exchange with upstream. Cheap to clone, so that one failed fill
/// can fail every client waiting on it.
#[derive(Debug, Clone)]
pub struct UpstreamError {
    kind: UpstreamErrorKind,
    message: String,
}

impl UpstreamError {
    /// An error of `kind`, described by `message` (never containing credentials).
    pub fn new(kind: UpstreamErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// What kind of failure this was.
    pub fn kind(&self) -> UpstreamErrorKind {
        self.kind
    }

    /// The HTTP status a client receives for this failure when nothing cached can be served.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            UpstreamErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            UpstreamErrorKind::Connect => "upstream connection failed",
            UpstreamErrorKind::Timeout => "upstream timed out",
            UpstreamErrorKind::Body => "upstream body broke off",
            UpstreamErrorKind::Redirect => "upstream redirect refused",
            UpstreamErrorKind::Other => "upstream request failed",
        };
        write!(f, "{what}: {}", self.message)
    }
}

impl StdError for UpstreamError {}

/// Walks `err` and its `source()` chain for an error of type `E`.
pub fn find_cause<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        // An error carried through a body is wrapped in an `io::Error`,
        // whose `source()` skips the error it wraps.
        current = match e.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(wrapped) => Some(wrapped as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    None
}

/// The JSON error answer: `{"error", "remote", "path"}`.
pub fn json_error(status: StatusCode, error: &str, remote: &str, path: &str) -> Response<ArtifactBody> {
    let body = serde_json::json!({ "error": error, "remote": remote, "path": path });
    let mut response = Response::new(body::full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Upstream answered, but not with a body to cache (404, 503, 429, ...).
#[derive(Debug, Clone)]
pub struct UpstreamStatus {
    status: StatusCode,
    retry_after: Option<HeaderValue>,
}

impl UpstreamStatus {
    /// Upstream's `status`, with its `Retry-After` if it sent one.
    pub fn new(status: StatusCode, retry_after: Option<HeaderValue>) -> Self {
        Self { status, retry_after }
    }

    /// The status upstream answered.
    pub fn upstream(&self) -> StatusCode {
        self.status
    }

    /// Upstream's `Retry-After`.
    pub fn retry_after(&self) -> Option<&HeaderValue> {
        self.retry_after.as_ref()
    }

    /// The status passed on to the client: upstream's own for "not there"
    /// (404, 410), "forbidden" (403), overload (429) and server errors (5xx);
    /// 502 for anything a client could not act on (401 for our credentials,
    /// an unfollowed redirect, a stray 206).
    pub fn client_status(&self) -> StatusCode {
        match self.status.as_u16() {
            403 | 404 | 410 | 429 | 500..=599 => self.status,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

impl fmt::Display for UpstreamStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream answered {}", self.status)
    }
}

impl StdError for UpstreamStatus {}
