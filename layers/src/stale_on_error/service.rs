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

    crate::inner_accessors!();
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
        let inner = crate::take_ready(&mut self.inner);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::{service_fn, util::BoxCloneService};

    type Upstream = BoxCloneService<Request<()>, Response<ArtifactBody>, BoxError>;

    use super::*;
    use crate::{
        body,
        error::{UpstreamErrorKind, UpstreamStatus},
        remote::Remote,
        store::{
            memory::{MemoryBlobs, MemoryIndex},
            Entry, EntryClass, Index,
        },
    };

    async fn fixture() -> (Store, Arc<MemoryIndex>, Arc<Entry>) {
        let index = Arc::new(MemoryIndex::new());
        let blobs = Arc::new(MemoryBlobs::new());
        blobs.insert("b", "old bytes");
        let entry = Entry {
            key: "k".into(),
            remote: "r".into(),
            path: "index.yaml".into(),
            blob: "b".into(),
            size: 9,
            class: EntryClass::Mutable,
            headers: vec![],
            cached_at_ms: 0,
            expires_at_ms: Some(1),
            policy: None,
        };
        index.put(entry.clone()).await.unwrap();
        (Store::new(index.clone(), blobs), index, Arc::new(entry))
    }

    fn request(entry: Option<Arc<Entry>>) -> Request<()> {
        let mut req = Request::get("/r/index.yaml").body(()).unwrap();
        req.extensions_mut()
            .insert(ResolvedRemote(Arc::new(Remote::proxy("r", "http://127.0.0.1:9".parse().unwrap()))));
        if let Some(entry) = entry {
            req.extensions_mut().insert(StaleEntry(entry));
        }
        req
    }

    fn failing(e: BoxError) -> Upstream {
        let e = Arc::new(std::sync::Mutex::new(Some(e)));
        BoxCloneService::new(service_fn(move |_req: Request<()>| {
            let e = e.lock().unwrap().take().unwrap();
            async move { Err::<Response<ArtifactBody>, _>(e) }
        }))
    }

    #[tokio::test]
    async fn serves_the_expired_copy_and_refreshes_it_when_upstream_is_unreachable() {
        let (store, index, entry) = fixture().await;
        let svc = StaleOnError::new(
            failing(Box::new(UpstreamError::new(UpstreamErrorKind::Connect, "refused"))),
            store,
        );
        let res = svc.oneshot(request(Some(entry))).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.extensions().get::<CacheStatus>(), Some(&CacheStatus::Stale));
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "old bytes");
        let refreshed = index.get("k").await.unwrap().unwrap();
        assert!(refreshed.expires_at_ms.unwrap() > now_ms(), "the lifetime was refreshed");
    }

    #[tokio::test]
    async fn a_404_or_nothing_cached_passes_the_error_on() {
        let (store, _, entry) = fixture().await;
        let not_found = Box::new(UpstreamStatus::new(StatusCode::NOT_FOUND, None));
        let svc = StaleOnError::new(failing(not_found), store.clone());
        assert!(svc.oneshot(request(Some(entry))).await.is_err());

        let unavailable = Box::new(UpstreamStatus::new(StatusCode::SERVICE_UNAVAILABLE, None));
        let svc = StaleOnError::new(failing(unavailable), store);
        assert!(svc.oneshot(request(None)).await.is_err());
    }

    #[test]
    fn which_failures_are_upstream_failures() {
        let status = |code: u16| UpstreamStatus::new(StatusCode::from_u16(code).unwrap(), None);
        for code in [500, 502, 503, 504, 429] {
            assert!(is_upstream_failure(&status(code)), "{code}");
        }
        for code in [404, 403, 410, 401] {
            assert!(!is_upstream_failure(&status(code)), "{code}");
        }
        assert!(is_upstream_failure(&UpstreamError::new(UpstreamErrorKind::Timeout, "slow")));
        let store_error = crate::store::StoreError::NotFound;
        assert!(!is_upstream_failure(&store_error));
        let _ = body::empty();
    }
}
