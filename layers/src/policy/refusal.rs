//! What the policy answers a client: the 403 of a refused version.

use http::{header, HeaderValue, Response, StatusCode};

use super::{time, Verdict, Withheld};
use crate::{
    body::{self, ArtifactBody},
    path::ArtifactPath,
};

pub(super) fn is_json<T>(res: &Response<T>) -> bool {
    res.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"))
}

/// The 403 of a version the policy refuses: `{"error", "remote", "path",
/// "policy", "available_at"}` (and the OSV record's `id`).
pub(super) fn refusal(
    remote: &str,
    path: &ArtifactPath,
    name: &str,
    version: &str,
    verdict: &Verdict,
) -> Response<ArtifactBody> {
    let (policy, available_at, id, why) = match verdict {
        Verdict::TooYoung(at) => (
            "min_release_age",
            at.map(time::format_rfc3339),
            None,
            match at {
                Some(at) => format!(
                    "{name} {version} is younger than the remote's min_release_age; available at {}",
                    time::format_rfc3339(*at)
                ),
                None => {
                    format!("{name} {version} has no publish time the policy can check (min_release_age)")
                }
            },
        ),
        Verdict::Denied(rule) if rule == "deny" => {
            ("deny", None, None, format!("{name} {version} is denied by the remote's policy"))
        }
        Verdict::Denied(rule) => (
            "deny",
            None,
            Some(rule.clone()),
            format!("{name} {version} is denied by the remote's policy ({rule})"),
        ),
        _ => ("", None, None, String::new()),
    };
    forbidden(serde_json::json!({
        "error": why, "remote": remote, "path": path.display(), "policy": policy,
        "available_at": available_at, "id": id,
    }))
}

/// The 403 of a path whose package the format cannot name, on a remote
/// with a policy: it cannot be judged, so it is not served.
pub(super) fn unclassified(remote: &str, path: &ArtifactPath) -> Response<ArtifactBody> {
    let why = "the policy cannot judge this path: its format names no package version for it \
               (policy.unclassified: allow serves such paths)";
    forbidden(serde_json::json!({
        "error": why, "remote": remote, "path": path.display(), "policy": "unclassified",
    }))
}

/// A 403 with `body`, marked as the policy's refusal (final for a group).
fn forbidden(body: serde_json::Value) -> Response<ArtifactBody> {
    let mut res = Response::new(body::full(body.to_string()));
    *res.status_mut() = StatusCode::FORBIDDEN;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.extensions_mut().insert(Withheld { refused: true, ..Withheld::default() });
    res
}
