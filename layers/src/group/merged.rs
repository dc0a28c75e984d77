//! `resolve: merge`: a document asked of every allowed member and merged by
//! the format, kept with a fingerprint of the members' answers so that it is
//! merged again only when one of them changed (never a merge per request).

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc, Mutex},
};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use tower::Service;

use super::{
    members::{lacking, lacks, not_found, Asker},
    GroupStats,
};
use crate::{
    body::{self, read_capped, ArtifactBody},
    error::{BoxError, UpstreamError, UpstreamErrorKind},
    extensions::CacheStatus,
    format::{Format, Part},
    policy::Withheld,
    remote::Remote,
};

/// Merged documents kept, by group, path and representation.
#[derive(Debug, Default)]
pub(super) struct Merged(Mutex<HashMap<String, Kept>>);

/// How many merged documents are kept; past it, they are all merged again.
const MAX_KEPT: usize = 10_000;

#[derive(Debug, Clone)]
struct Kept {
    fingerprint: [u8; 32],
    body: Bytes,
    content_type: Option<HeaderValue>,
}

/// One member's answer.
struct Answer {
    member: String,
    body: Bytes,
    content_type: Option<HeaderValue>,
}

impl Answer {
    fn json(&self) -> bool {
        self.content_type.as_ref().and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"))
    }
}

/// The merged document the client asked the group for.
pub(super) async fn answer<S, B>(
    asker: &Asker<S>,
    members: &[Arc<Remote>],
    format: &'static dyn Format,
    merged: &Merged,
    stats: &GroupStats,
    max_bytes: usize,
) -> Result<Response<ArtifactBody>, BoxError>
where
    S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError> + Clone,
    B: Default,
{
    let path = asker.path();
    let mut answers = Vec::new();
    let mut failure = None;
    // What members' policies hid: a merge never brings it back from a
    // member without one.
    let mut hidden = Withheld::default();
    for member in members {
        match asker.ask(member, path, false).await {
            Ok(res) if lacks(&res) => {}
            // A member's policy refused it: final.
            Ok(res) if res.extensions().get::<Withheld>().is_some_and(|w| w.refused) => return Ok(res),
            Ok(res) if res.status() != StatusCode::OK => {
                failure.get_or_insert_with(|| format!("{} answered {}", member.name, res.status()).into());
            }
            Ok(res) => {
                if let Some(withheld) = res.extensions().get::<Withheld>() {
                    hidden.versions.extend(withheld.versions.iter().cloned());
                    hidden.unversioned |= withheld.unversioned;
                }
                let content_type = res.headers().get(header::CONTENT_TYPE).cloned();
                let body = read_capped(res.into_body(), max_bytes).await?.ok_or_else(|| -> BoxError {
                    let message =
                        format!("a member's document is larger than {max_bytes} bytes (METADATA_MAX_BYTES)");
                    Box::new(UpstreamError::new(UpstreamErrorKind::Other, message))
                })?;
                answers.push(Answer { member: member.name.clone(), body, content_type });
            }
            Err(e) if lacking(&e) => {}
            Err(e) => {
                // Counts as not knowing the document (its own stale copy
                // could not answer either).
                tracing::debug!(member = %member.name, error = %e, "a group member failed; merging the others");
                failure.get_or_insert(e);
            }
        }
    }
    let Some(first) = answers.first() else {
        return Err(failure.unwrap_or_else(|| not_found(asker.group(), members)));
    };
    let mut hash = Sha256::new();
    for answer in &answers {
        hash.update(answer.member.as_bytes());
        hash.update((answer.body.len() as u64).to_le_bytes());
        hash.update(&answer.body);
    }
    let fingerprint: [u8; 32] = hash.finalize().into();
    let key = format!("{}\u{1f}{}", path.cache_key(asker.group()), first.json());
    let kept =
        merged.0.lock().expect("merged lock").get(&key).filter(|k| k.fingerprint == fingerprint).cloned();
    let (kept, status) = match kept {
        Some(kept) => {
            stats.merged_hits.fetch_add(1, Ordering::Relaxed);
            (kept, CacheStatus::Hit)
        }
        None => {
            let body = if answers.len() == 1 {
                first.body.clone()
            } else {
                let parts: Vec<Part<'_>> =
                    answers.iter().map(|a| Part { body: &a.body, json: a.json() }).collect();
                let merged = format.merge(path, &parts).map_err(|e| -> BoxError {
                    let message = format!("cannot merge the members' documents: {e}");
                    Box::new(UpstreamError::new(UpstreamErrorKind::Other, message))
                })?;
                stats.merges.fetch_add(1, Ordering::Relaxed);
                let merged = if hidden == Withheld::default() {
                    merged
                } else {
                    let keep = |version: Option<&str>| match version {
                        Some(version) => !hidden.versions.iter().any(|v| v == version),
                        None => !hidden.unversioned,
                    };
                    format.filter_versions(path, &merged, first.json(), &keep).map_err(|e| -> BoxError {
                        let message = format!("cannot keep hidden versions out of the merge: {e}");
                        Box::new(UpstreamError::new(UpstreamErrorKind::Other, message))
                    })?
                };
                Bytes::from(merged)
            };
            let kept = Kept { fingerprint, body, content_type: first.content_type.clone() };
            let mut all = merged.0.lock().expect("merged lock");
            if all.len() >= MAX_KEPT {
                all.clear();
            }
            all.insert(key, kept.clone());
            (kept, CacheStatus::Miss)
        }
    };
    Ok(respond(asker, kept, status))
}

/// The merged document as the client asked for it: a weak `ETag` from the
/// fingerprint (304 when the client has it), `Vary: Accept`.
fn respond<S>(asker: &Asker<S>, kept: Kept, status: CacheStatus) -> Response<ArtifactBody> {
    let etag = format!("W/\"{}\"", hex::encode(&kept.fingerprint[..16]));
    let matches = asker
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim().trim_start_matches("W/") == etag.trim_start_matches("W/"));
    let head = asker.method() == Method::HEAD;
    let mut res = if matches {
        let mut res = Response::new(body::empty());
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        res
    } else {
        let len = kept.body.len();
        let mut res = Response::new(if head { body::empty() } else { body::full(kept.body) });
        res.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if let Some(content_type) = kept.content_type {
            res.headers_mut().insert(header::CONTENT_TYPE, content_type);
        }
        res
    };
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        res.headers_mut().insert(header::ETAG, etag);
    }
    res.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept"));
    res.extensions_mut().insert(status);
    res
}
