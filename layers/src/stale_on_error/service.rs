use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tower::{Service, ServiceExt};

use crate::{
    body::ArtifactBody,
    error::{find_cause, BoxError, UpstreamError, UpstreamStatus},
    extensions::{CacheStatus, StaleEntry},
    remote_resolve::ResolvedRemote,
    respond::serve_entry,
    store::{now_ms, Refresh, Store},
};

/// Middleware that answers an expired copy when upstream fails.
#[derive(Debug, Clone)]
pub struct StaleOnError<S> {
    inner: S,
    store: Store,
}

impl<S> StaleOnError<S> {
    /// Wraps `inner`, serving expired entries from `store`.
    pub fn new(inner: S, store: Store) -> Self {
        Self { inner, store }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Whether `e` means upstream failed (unreachable, timed out, broke off, or
/// answered 5xx or 429), as opposed to answering.
pub fn is_upstream_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    if find_cause::<UpstreamError>(e).is_some() {
        return true;
    }
    find_cause::<UpstreamStatus>(e).is_some_and(|s| {
        let code = s.upstream().as_u16();
        code == 429 || (500..=599).contains(&code)
    })
}

impl<S, B> Service<Request<B>> for StaleOnError<S>
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
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (Some(StaleEntry(entry)), Some(ResolvedRemote(remote))) =
            (req.extensions().get::<StaleEntry>(), req.extensions().get::<ResolvedRemote>())
        else {
            return Box::pin(inner.oneshot(req));
        };
        let (entry, remote) = (entry.clone(), remote.clone());
        let method = req.method().clone();
        let headers = req.headers().clone();
        let store = self.store.clone();
        Box::pin(async move {
            let e = match inner.oneshot(req).await {
                Ok(response) => return Ok(response),
                Err(e) if is_upstream_failure(&*e) => e,
                Err(e) => return Err(e),
            };
            let refresh =
                Refresh { expires_at_ms: remote.ttl.expiry(entry.class, now_ms()), revalidated: None };
            if let Err(store_err) = store.index.refresh(&entry.key, &entry.blob, &refresh).await {
                tracing::warn!(path = %entry.path, error = %store_err, "could not refresh a stale entry");
            }
            let refreshed = (*entry).clone().refreshed(&refresh);
            match serve_entry(&store, &refreshed, &method, &headers, CacheStatus::Stale).await {
                Ok(response) => {
                    tracing::warn!(remote = %remote.name, path = %entry.path, error = %e, "upstream failed; serving the expired copy");
                    Ok(response)
                }
                // The stale bytes are gone too: say what upstream did.
                Err(_) => Err(e),
            }
        })
    }
}
