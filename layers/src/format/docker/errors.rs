//! The registry's error shape, `{"errors":[{"code","message","detail"}]}`:
//! what every `/v2/` error is answered with.

use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

use super::reference::{self, Invalid, Target};
use crate::{
    body::{self, ArtifactBody},
    error::find_cause,
    problem::{Cause, Problem},
};

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

/// The registry answer to `problem` (see [`Spec::error_answer`](crate::format::Spec::error_answer)).
pub(super) fn answer(problem: &Problem<'_>) -> Response<ArtifactBody> {
    // The path is `{name}/{target}` once resolved, the path after `/v2/`
    // before that.
    let split = reference::split(problem.path).ok();
    let target = split.as_ref().map(|(_, target)| target);
    let detail = match &split {
        Some((name, target)) => {
            json!({"remote": problem.remote, "name": name.join("/"), "reference": target.suffix()})
        }
        None => json!({"remote": problem.remote}),
    };
    if let Some(invalid) = find_cause::<Invalid>(problem.error) {
        let (status, code) = match invalid {
            Invalid::Endpoint => (StatusCode::NOT_FOUND, Code::NameUnknown),
            Invalid::Name(_) => (StatusCode::BAD_REQUEST, Code::NameInvalid),
            Invalid::Tag(_) => (StatusCode::BAD_REQUEST, Code::TagInvalid),
            Invalid::Digest(_) => (StatusCode::BAD_REQUEST, Code::DigestInvalid),
        };
        return registry_error(status, code, &invalid.to_string(), detail);
    }
    let (status, code, message) = match problem.cause {
        Cause::Refused => {
            let code = match problem.status {
                StatusCode::FORBIDDEN => Code::Denied,
                StatusCode::METHOD_NOT_ALLOWED => Code::Unsupported,
                StatusCode::NOT_FOUND => Code::NameUnknown,
                _ => Code::Unknown,
            };
            (problem.status, code, problem.message.clone())
        }
        Cause::UpstreamStatus(upstream) => match upstream.as_u16() {
            404 | 410 => {
                let code = match target {
                    Some(Target::Manifest(_)) => Code::ManifestUnknown,
                    Some(Target::Blob(_)) => Code::BlobUnknown,
                    _ => Code::NameUnknown,
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
            429 => (StatusCode::TOO_MANY_REQUESTS, Code::TooManyRequests, "upstream rate limit reached".into()),
            _ => (problem.status, Code::Unavailable, problem.message.clone()),
        },
        Cause::Upstream | Cause::Store => (problem.status, Code::Unavailable, problem.message.clone()),
        Cause::Path => (problem.status, Code::NameInvalid, problem.message.clone()),
        Cause::Internal => (problem.status, Code::Unknown, problem.message.clone()),
    };
    registry_error(status, code, &message, detail)
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::{error::UpstreamStatus, problem::Refused};

    async fn answered(e: &(dyn std::error::Error + 'static), path: &str) -> (StatusCode, serde_json::Value) {
        let res = answer(&Problem::of(e, "hub", path));
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (status, json["errors"][0].clone())
    }

    #[tokio::test]
    async fn each_cause_has_its_registry_code() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let blob = format!("library/nginx/blobs/{digest}");
        let gone = UpstreamStatus::new(StatusCode::NOT_FOUND, None);
        let cases: Vec<(Box<dyn std::error::Error>, &str, StatusCode, &str)> = vec![
            (
                Box::new(gone.clone()),
                "library/nginx/manifests/latest",
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
            ),
            (Box::new(gone.clone()), &blob, StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            (Box::new(gone), "library/nginx/tags/list", StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            (
                Box::new(UpstreamStatus::new(StatusCode::UNAUTHORIZED, None)),
                "x/manifests/v1",
                StatusCode::FORBIDDEN,
                "DENIED",
            ),
            (
                Box::new(UpstreamStatus::new(StatusCode::TOO_MANY_REQUESTS, None)),
                "x/manifests/v1",
                StatusCode::TOO_MANY_REQUESTS,
                "TOOMANYREQUESTS",
            ),
            (
                Box::new(Refused::new(StatusCode::FORBIDDEN, "no pattern allows it")),
                "x/manifests/v1",
                StatusCode::FORBIDDEN,
                "DENIED",
            ),
            (
                Box::new(Refused::method("read-only", "GET, HEAD")),
                "x/manifests/v1",
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
            ),
            (Box::new(Invalid::Name("A".into())), "A/manifests/v1", StatusCode::BAD_REQUEST, "NAME_INVALID"),
            (Box::new(Invalid::Endpoint), "_catalog", StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            (
                Box::<dyn std::error::Error>::from("boom"),
                "x/manifests/v1",
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
            ),
        ];
        for (e, path, status, code) in cases {
            let (got, error) = answered(&*e, path).await;
            assert_eq!((got, error["code"].as_str().unwrap()), (status, code), "{path}: {e}");
            assert_eq!(error["detail"]["remote"], "hub");
        }
        let (_, error) =
            answered(&Refused::new(StatusCode::FORBIDDEN, "no"), "library/nginx/manifests/v1").await;
        assert_eq!(error["detail"]["name"], "library/nginx");
        assert_eq!(error["detail"]["reference"], "manifests/v1");
    }
}
