//! Errors in the registry's own format, `{"errors":[{"code","message","detail"}]}`,
//! and the one place where a failed stack call becomes such an answer.

use artifactapi_layers::{
    body::{self, ArtifactBody},
    error::{find_cause, UpstreamError, UpstreamStatus},
    store::StoreError,
    PathError,
};
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

use super::reference::{Invalid, Target};

/// The error codes of the distribution specification this proxy answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The blob is not known upstream.
    BlobUnknown,
    /// A digest that is malformed or of an unsupported algorithm.
    DigestInvalid,
    /// The manifest is not known upstream (in a type the client accepts).
    ManifestUnknown,
    /// A malformed repository name.
    NameInvalid,
    /// No such repository, or no remote for it.
    NameUnknown,
    /// A malformed tag.
    TagInvalid,
    /// Refused by policy, or by the upstream registry.
    Denied,
    /// Not something a pull-through mirror does (pushing, deleting).
    Unsupported,
    /// Upstream's rate limit.
    TooManyRequests,
    /// Upstream or the cache store is unavailable.
    Unavailable,
    /// Anything else.
    Unknown,
}

impl Code {
    /// The code as written in the error body.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::TagInvalid => "TAG_INVALID",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::Unavailable => "UNAVAILABLE",
            Code::Unknown => "UNKNOWN",
        }
    }
}

/// A registry error answer.
pub fn registry_error(
    status: StatusCode,
    code: Code,
    message: &str,
    detail: serde_json::Value,
) -> Response<ArtifactBody> {
    let body = json!({"errors": [{"code": code.as_str(), "message": message, "detail": detail}]});
    let mut answer = Response::new(body::full(body.to_string()));
    *answer.status_mut() = status;
    answer.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

/// The answer to a path that is not a valid request.
pub fn invalid(e: &Invalid) -> Response<ArtifactBody> {
    let (status, code) = match e {
        Invalid::Endpoint => (StatusCode::NOT_FOUND, Code::NameUnknown),
        Invalid::Name(_) => (StatusCode::BAD_REQUEST, Code::NameInvalid),
        Invalid::Tag(_) => (StatusCode::BAD_REQUEST, Code::TagInvalid),
        Invalid::Digest(_) => (StatusCode::BAD_REQUEST, Code::DigestInvalid),
    };
    registry_error(status, code, &e.to_string(), json!({}))
}

/// Turns an error a stack raised for `target` of `name` on `remote` into its
/// registry answer, by asking what caused it.
pub fn rescue(
    e: &(dyn std::error::Error + 'static),
    remote: &str,
    name: &str,
    target: &Target,
) -> Response<ArtifactBody> {
    let detail = json!({"remote": remote, "name": name, "reference": target.suffix()});
    if let Some(status) = find_cause::<UpstreamStatus>(e) {
        let upstream = status.upstream();
        let (client, code, message) = match upstream.as_u16() {
            404 | 410 => {
                let code = match target {
                    Target::Manifest(_) => Code::ManifestUnknown,
                    Target::Blob(_) => Code::BlobUnknown,
                    Target::Tags | Target::Upload => Code::NameUnknown,
                };
                (StatusCode::NOT_FOUND, code, format!("unknown to the upstream registry ({upstream})"))
            }
            401 | 403 => (
                StatusCode::FORBIDDEN,
                Code::Denied,
                format!(
                    "the upstream registry refused access ({upstream}); the remote's username/password may be missing or wrong"
                ),
            ),
            429 => (StatusCode::TOO_MANY_REQUESTS, Code::TooManyRequests, "upstream rate limit reached".to_owned()),
            _ => (status.client_status(), Code::Unavailable, status.to_string()),
        };
        let mut answer = registry_error(client, code, &message, detail);
        if let Some(retry_after) = status.retry_after() {
            answer.headers_mut().insert(header::RETRY_AFTER, retry_after.clone());
        }
        return answer;
    }
    if let Some(upstream) = find_cause::<UpstreamError>(e) {
        tracing::warn!(remote, name, reference = %target.suffix(), error = %upstream, "upstream registry failed");
        return registry_error(upstream.status(), Code::Unavailable, &upstream.to_string(), detail);
    }
    if let Some(bad) = find_cause::<PathError>(e) {
        return registry_error(bad.status(), Code::NameInvalid, &bad.to_string(), detail);
    }
    if let Some(store) = find_cause::<StoreError>(e) {
        tracing::error!(remote, name, error = %store, "store failed");
        return registry_error(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "cache store unavailable",
            detail,
        );
    }
    tracing::error!(remote, name, error = %e, "registry request failed");
    registry_error(StatusCode::INTERNAL_SERVER_ERROR, Code::Unknown, "internal error", detail)
}
