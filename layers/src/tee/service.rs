use std::{
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tower::{Service, ServiceExt};

use super::{
    fill::{FillJob, Fills, LEASE_TTL},
    waiting::{direct_answer, not_modified, tail, wait_complete, wait_head, Waited},
};
use crate::{
    body::{self, ArtifactBody},
    coord::Coordinator,
    error::{find_cause, BoxError, UpstreamStatus},
    extensions::{CacheKey, CacheStatus, Classification, Conditional, StaleEntry},
    path::ArtifactPath,
    remote_resolve::ResolvedRemote,
    respond::{self, serve_entry, Source, Stored},
    store::{now_ms, Entry},
};

/// Middleware that fills the cache from the inner (upstream) service.
#[derive(Debug, Clone)]
pub struct S3Tee<S> {
    inner: S,
    fills: Arc<Fills>,
}

impl<S> S3Tee<S> {
    pub(crate) fn new(inner: S, fills: Arc<Fills>) -> Self {
        Self { inner, fills }
    }

    crate::inner_accessors!();
}

impl<S, B> Service<Request<B>> for S3Tee<S>
where
    S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<ArtifactBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ArtifactBody>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The ready service goes with this request; a clone stays for the next.
        let inner = crate::take_ready(&mut self.inner);
        Box::pin(handle(self.fills.clone(), inner, req))
    }
}

async fn handle<S, B>(
    fills: Arc<Fills>,
    inner: S,
    mut req: Request<B>,
) -> Result<Response<ArtifactBody>, BoxError>
where
    S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError> + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    let ext = req.extensions();
    let (Some(ResolvedRemote(remote)), Some(path), Some(Classification(class))) =
        (ext.get::<ResolvedRemote>(), ext.get::<ArtifactPath>(), ext.get::<Classification>())
    else {
        // Not a classified artifact request: nothing to cache.
        return inner.oneshot(req).await;
    };
    let (remote, path, class) = (remote.clone(), path.clone(), *class);
    let key = match ext.get::<CacheKey>() {
        Some(CacheKey(key)) => key.clone(),
        None => Arc::from(path.cache_key(&remote.name)),
    };
    let replaces = ext.get::<StaleEntry>().map(|StaleEntry(e)| e.expires_at_ms.unwrap_or(i64::MAX));
    let status = if replaces.is_some() { CacheStatus::Expired } else { CacheStatus::Miss };

    if matches!(*req.method(), Method::GET | Method::HEAD) && fills.known_missing(&key) {
        // The negative cache: upstream said 404 moments ago.
        return Err(Box::new(UpstreamStatus::new(StatusCode::NOT_FOUND, None)));
    }

    // A format that decides a header from the whole body (the RubyGems MD5
    // `ETag`) is answered once the body is complete, a HEAD too (from a
    // GET's fill): every answer then has the headers the entry stores.
    let decided_at_commit = remote.package.format().freshness().is_some_and(|f| f.etag_is_md5_of_body(&path));
    let method = req.method().clone();
    if method == Method::HEAD && !decided_at_commit {
        // A fill in flight already knows the answer's head.
        if let Some(mut rx) = fills.find(&key) {
            if let Ok(Waited::Head(head, complete)) = wait_head(&mut rx).await {
                if complete.is_some() {
                    fills.store().access.served(&key, &remote.name, &path.display());
                }
                let status = if complete.is_some() { CacheStatus::Hit } else { status };
                let mut response = Response::new(body::empty());
                respond::put_headers(&mut response, &head.headers, status);
                if let Some(len) = complete.or(head.content_length) {
                    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                }
                return Ok(response);
            }
        }
        let answer = head_miss(inner, req, &path, status).await;
        if let Err(e) = &answer {
            let status = find_cause::<UpstreamStatus>(&**e).map(UpstreamStatus::upstream);
            if status == Some(StatusCode::NOT_FOUND) {
                fills.remember_missing(&key, remote.ttl.negative);
            }
        }
        return answer;
    }
    if method == Method::HEAD {
        *req.method_mut() = Method::GET;
    } else if method != Method::GET {
        return inner.oneshot(req).await;
    }

    // The fill fetches the whole, unconditional body; the client's range and
    // conditions are answered here.
    let client_headers = req.headers().clone();
    for name in [
        header::RANGE,
        header::IF_RANGE,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
    ] {
        req.headers_mut().remove(name);
    }
    // Validators set by the revalidation layer go upstream instead.
    let conditional = req.extensions().get::<Conditional>().map(|c| c.0.clone());
    if let Some(validators) = &conditional {
        for (name, value) in validators {
            req.headers_mut().insert(name.clone(), value.clone());
        }
    }
    let mut lease = false;
    if let (None, Some(coord)) = (fills.find(&key), fills.coordinator().cloned()) {
        match coordinate(&fills, &*coord, &key).await {
            Coordinated::Fetch { leased } => lease = leased,
            Coordinated::Committed(entry) => {
                // Another replica fetched it while this one waited.
                let store = fills.store();
                return Ok(serve_entry(store, &entry, &method, &client_headers, CacheStatus::Hit).await?);
            }
        }
    }
    // A file checked over its whole body (a Go module zip) is answered once
    // checked: a check that fails, or a limit it reaches, is then an error
    // answer instead of a transfer that breaks off.
    let checked_whole = fills.digests.as_ref().and_then(|d| d.get(&key)).is_some_and(|e| e.whole_file());
    let started_ms = now_ms();
    let job =
        FillJob { key, remote, path, class, conditional: conditional.is_some(), lease, replaces, started_ms };
    let (mut rx, joined_complete) = fills.join_or_start(inner, req, job);
    // Joining a fill that had already finished is answering from the cache:
    // upstream was not asked for this request.
    let status = if joined_complete { CacheStatus::Hit } else { status };

    if client_headers.contains_key(header::RANGE) || checked_whole || decided_at_commit {
        let (head, written) = match wait_complete(&mut rx).await? {
            Waited::Head(head, written) => (head, written.unwrap_or_default()),
            Waited::NotModified(headers) => return Ok(not_modified(headers)),
            // Uncached: the whole body (a server may answer a Range with 200).
            Waited::Direct(direct) => return direct_answer(&direct, status),
        };
        let stored = Stored { headers: head.complete_headers(), size: written, status };
        let source = Source::Spool(head.file.clone());
        return Ok(stored.answer(&method, &client_headers, source).await?);
    }

    let (head, complete) = match wait_head(&mut rx).await? {
        Waited::Head(head, complete) => (head, complete),
        Waited::NotModified(headers) => return Ok(not_modified(headers)),
        Waited::Direct(direct) => return direct_answer(&direct, status),
    };
    let mut response = Response::new(tail(rx, head.clone()));
    respond::put_headers(&mut response, &head.headers, status);
    if let Some(len) = complete.or(head.content_length) {
        response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(response)
}

/// How long a replica waits for another replica's fill before fetching itself.
const MAX_REMOTE_WAIT: Duration = Duration::from_secs(600);

enum Coordinated {
    /// Fetch from upstream, holding the lease or (coordination failed) not.
    Fetch { leased: bool },
    /// Another replica committed the entry.
    Committed(Entry),
}

/// Takes the key's lease, or waits for the replica that holds it to commit.
/// Fails open: whenever coordination cannot answer, this replica fetches.
async fn coordinate(fills: &Fills, coord: &dyn Coordinator, key: &str) -> Coordinated {
    let started = Instant::now();
    let started_ms = now_ms();
    let committed_since = |entry: &Entry| entry.cached_at_ms >= started_ms || entry.is_fresh(now_ms());
    loop {
        match coord.acquire(key, LEASE_TTL).await {
            Ok(true) => {
                // The previous holder commits before it releases: a request
                // that missed the index just before that commit finds it now.
                if let Ok(Some(entry)) = fills.store().index.get(key).await {
                    if committed_since(&entry) {
                        coord.release(key).await;
                        return Coordinated::Committed(entry);
                    }
                }
                return Coordinated::Fetch { leased: true };
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "coordination unavailable; fetching without a lease");
                return Coordinated::Fetch { leased: false };
            }
        }
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Ok(Some(entry)) = fills.store().index.get(key).await {
                if committed_since(&entry) {
                    return Coordinated::Committed(entry);
                }
            }
            if started.elapsed() > MAX_REMOTE_WAIT {
                return Coordinated::Fetch { leased: false };
            }
            match coord.held(key).await {
                Ok(true) => continue,
                // Released without a fresh entry (the holder failed): try to take it.
                Ok(false) => break,
                Err(_) => return Coordinated::Fetch { leased: false },
            }
        }
    }
}

async fn head_miss<S, B>(
    inner: S,
    req: Request<B>,
    path: &ArtifactPath,
    status: CacheStatus,
) -> Result<Response<ArtifactBody>, BoxError>
where
    S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError>,
{
    let upstream = inner.oneshot(req).await?;
    if upstream.status() != StatusCode::OK {
        let retry_after = upstream.headers().get(header::RETRY_AFTER).cloned();
        return Err(Box::new(UpstreamStatus::new(upstream.status(), retry_after)));
    }
    let mut response = Response::new(body::empty());
    let stored = respond::stored_headers(upstream.headers(), path);
    respond::put_headers(&mut response, &stored, status);
    if let Some(len) = upstream.headers().get(header::CONTENT_LENGTH) {
        response.headers_mut().insert(header::CONTENT_LENGTH, len.clone());
    }
    Ok(response)
}
