//! What an error means for the client: a [`Refused`] request, and the
//! [`Problem`] the rescue works out of any error (status, message, cause)
//! for a format to shape its answer from. Formats read it; it knows no
//! format (the rescue, which knows them, re-exports it).

use std::{error::Error as StdError, fmt};

use http::StatusCode;

use crate::{
    error::{find_cause, UpstreamError, UpstreamStatus},
    path::PathError,
    store::StoreError,
};

/// A request a layer will not serve, with the status to answer.
#[derive(Debug, Clone)]
pub struct Refused {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) allow: Option<&'static str>,
}

impl Refused {
    /// Refused with `status`, saying `message` to the client.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), allow: None }
    }

    /// A method refused 405, with the methods that are allowed.
    pub fn method(message: impl Into<String>, allow: &'static str) -> Self {
        Self { status: StatusCode::METHOD_NOT_ALLOWED, message: message.into(), allow: Some(allow) }
    }

    /// The status answered.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Refused {}

/// What caused an error, as far as the answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A layer refused the request ([`Refused`]).
    Refused,
    /// Upstream answered this status, not a body to serve.
    UpstreamStatus(StatusCode),
    /// Upstream could not be reached, timed out or broke off.
    Upstream,
    /// The path is not one this proxy serves.
    Path,
    /// The cache store failed.
    Store,
    /// Anything else.
    Internal,
}

/// An error worked out for the client: the status and message the JSON
/// shape answers, its cause, where it was raised, and the error itself, in
/// which a format may look for causes of its own.
pub struct Problem<'a> {
    /// The status to answer.
    pub status: StatusCode,
    /// What to tell the client.
    pub message: String,
    /// What caused it.
    pub cause: Cause,
    /// The remote the request was for (as named in the request when none
    /// was resolved).
    pub remote: &'a str,
    /// The path, decoded.
    pub path: &'a str,
    /// The error.
    pub error: &'a (dyn StdError + 'static),
}

impl<'a> Problem<'a> {
    /// Works out `e`, raised for `path` of `remote`; logs what is not the
    /// client's doing.
    pub fn of(e: &'a (dyn StdError + 'static), remote: &'a str, path: &'a str) -> Self {
        let (status, message, cause) = if let Some(refused) = find_cause::<Refused>(e) {
            (refused.status, refused.message.clone(), Cause::Refused)
        } else if let Some(status) = find_cause::<UpstreamStatus>(e) {
            (status.client_status(), status.to_string(), Cause::UpstreamStatus(status.upstream()))
        } else if let Some(upstream) = find_cause::<UpstreamError>(e) {
            tracing::warn!(remote, path, error = %upstream, "upstream failed");
            (upstream.status(), upstream.to_string(), Cause::Upstream)
        } else if let Some(bad) = find_cause::<PathError>(e) {
            (bad.status(), bad.to_string(), Cause::Path)
        } else if let Some(store) = find_cause::<StoreError>(e) {
            tracing::error!(remote, path, error = %store, "store failed");
            (StatusCode::SERVICE_UNAVAILABLE, "cache store unavailable".to_owned(), Cause::Store)
        } else {
            tracing::error!(remote, path, error = %e, "request failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_owned(), Cause::Internal)
        };
        Self { status, message, cause, remote, path, error: e }
    }
}
