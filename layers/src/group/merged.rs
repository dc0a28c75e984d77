//! `resolve: merge`: a document asked of every allowed member and merged by
//! the format, kept with a fingerprint of the members' answers so that it is
//! merged again only when one of them changed (never a merge per request).

use std::{
    collections::{BTreeMap, HashMap},
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
    budget::DocumentBudget,
    error::{BoxError, UpstreamError, UpstreamErrorKind},
    extensions::CacheStatus,
    format::{Format, Part},
    path::ArtifactPath,
    policy::Withheld,
    remote::Remote,
};

/// Merged documents kept, by group, path (without its query) and
/// representation, within a byte budget: past it, the least recently used
/// go first.
#[derive(Debug)]
pub(super) struct Merged {
    budget: usize,
    kept: Mutex<Shelf>,
}

/// What one kept document costs besides its key and body (the map's
/// entry, the order's entry, the content type): small documents count too.
const OVERHEAD: usize = 256;

#[derive(Debug, Default)]
struct Shelf {
    /// Documents by key, with the tick they were last used at.
    by_key: HashMap<String, (Kept, u64)>,
    /// Keys by the tick they were last used at, oldest first.
    order: BTreeMap<u64, String>,
    bytes: usize,
    tick: u64,
}

impl Merged {
    /// Keeps at most `budget` bytes of merged documents.
    pub(super) fn new(budget: usize) -> Self {
        Self { budget, kept: Mutex::default() }
    }

    /// The document kept under `key`, if it was merged from answers with
    /// this `fingerprint`.
    fn get(&self, key: &str, fingerprint: &[u8; 32]) -> Option<Kept> {
        let mut shelf = self.kept.lock().expect("merged lock");
        shelf.tick += 1;
        let tick = shelf.tick;
        let (kept, used) = shelf.by_key.get_mut(key).filter(|(k, _)| k.fingerprint == *fingerprint)?;
        let (kept, old) = (kept.clone(), std::mem::replace(used, tick));
        shelf.order.remove(&old);
        shelf.order.insert(tick, key.to_owned());
        Some(kept)
    }

    /// Keeps `kept` under `key`, making room by forgetting the least
    /// recently used; a document larger than the whole budget is not kept.
    fn put(&self, key: String, kept: Kept) {
        let cost = key.len() + kept.body.len() + OVERHEAD;
        let mut shelf = self.kept.lock().expect("merged lock");
        shelf.forget(&key);
        if cost > self.budget {
            return;
        }
        while shelf.bytes + cost > self.budget {
            let Some((_, oldest)) = shelf.order.pop_first() else { break };
            shelf.forget(&oldest);
        }
        shelf.tick += 1;
        let tick = shelf.tick;
        shelf.order.insert(tick, key.clone());
        shelf.by_key.insert(key, (kept, tick));
        shelf.bytes += cost;
    }

    /// How many bytes the kept documents take, as the budget counts them.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.kept.lock().expect("merged lock").bytes
    }
}

impl Shelf {
    fn forget(&mut self, key: &str) {
        if let Some((kept, used)) = self.by_key.remove(key) {
            self.order.remove(&used);
            self.bytes -= key.len() + kept.body.len() + OVERHEAD;
        }
    }
}

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
    budget: &DocumentBudget,
) -> Result<Response<ArtifactBody>, BoxError>
where
    S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError> + Clone,
    B: Default,
{
    let path = asker.path();
    // The query is not part of a merged document: each distinct one would
    // otherwise be merged, kept and asked of every member apart.
    let bare = ArtifactPath::parse(path.raw(), None)?;
    let mut answers = Vec::new();
    let mut failure = None;
    // What members' policies hid: a merge never brings it back from a
    // member without one.
    let mut hidden = Withheld::default();
    for member in members {
        match asker.ask(member, &bare, false).await {
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
                budget.scan(&body).map_err(UpstreamError::from)?;
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
    let key = format!("{}\u{1f}{}", bare.cache_key(asker.group()), first.json());
    let (kept, status) = match merged.get(&key, &fingerprint) {
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
                let merge = |grouping: &dyn crate::format::Grouping| grouping.merge(path, &parts);
                let merged = format.grouping().map_or(Err("this format merges no documents".into()), merge);
                let merged = merged.map_err(|e| -> BoxError {
                    let message = format!("cannot merge the members' documents: {e}");
                    Box::new(UpstreamError::new(UpstreamErrorKind::Other, message))
                })?;
                budget.check_output(merged.len()).map_err(UpstreamError::from)?;
                stats.merges.fetch_add(1, Ordering::Relaxed);
                let merged = if hidden == Withheld::default() {
                    merged
                } else {
                    let keep = |version: Option<&str>| match version {
                        Some(version) => !hidden.versions.iter().any(|v| v == version),
                        None => !hidden.unversioned,
                    };
                    let filter = |v: &dyn crate::format::Versions| {
                        v.filter_versions(path, &merged, first.json(), &keep)
                    };
                    let filtered =
                        format.versions().map_or(Err("this format lists no versions".into()), filter);
                    filtered.map_err(|e| -> BoxError {
                        let message = format!("cannot keep hidden versions out of the merge: {e}");
                        Box::new(UpstreamError::new(UpstreamErrorKind::Other, message))
                    })?
                };
                Bytes::from(merged)
            };
            let kept = Kept { fingerprint, body, content_type: first.content_type.clone() };
            merged.put(key, kept.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(len: usize, fingerprint: u8) -> Kept {
        Kept { fingerprint: [fingerprint; 32], body: Bytes::from(vec![b'x'; len]), content_type: None }
    }

    #[test]
    fn kept_documents_stay_within_their_byte_budget_least_recently_used_first() {
        let merged = Merged::new(3 * (1_000 + 1 + OVERHEAD));
        for key in ["a", "b", "c"] {
            merged.put(key.into(), kept(1_000, 1));
        }
        assert!(merged.get("a", &[1; 32]).is_some(), "used again: now the newest");
        merged.put("d".into(), kept(1_000, 1));
        assert!(merged.get("b", &[1; 32]).is_none(), "the least recently used went");
        assert!(merged.get("a", &[1; 32]).is_some() && merged.get("d", &[1; 32]).is_some());
        assert!(merged.bytes() <= 3 * (1_000 + 1 + OVERHEAD));
        assert!(merged.get("a", &[2; 32]).is_none(), "another fingerprint is another document");
        // Larger than the whole budget: served, not kept, and nothing else
        // is forgotten for it.
        merged.put("huge".into(), kept(10_000, 1));
        assert!(merged.get("huge", &[1; 32]).is_none());
        assert!(merged.get("a", &[1; 32]).is_some());
        // Replacing a document counts it once.
        merged.put("a".into(), kept(500, 3));
        merged.put("a".into(), kept(500, 4));
        assert_eq!(merged.bytes(), 2 * (1_001 + OVERHEAD) + 501 + OVERHEAD);
    }
}
