use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::BoxFuture;
use http::{Method, Request, Response};
use tower::{Service, ServiceExt};

use crate::{
    body::ArtifactBody,
    error::BoxError,
    extensions::{CacheKey, CacheStatus, StaleEntry, Variant},
    path::ArtifactPath,
    remote_resolve::ResolvedRemote,
    respond::serve_entry,
    store::{now_ms, Entry, Store, StoreError},
};

/// Middleware that answers fresh entries from the store.
#[derive(Debug, Clone)]
pub struct CacheLookup<S> {
    inner: S,
    store: Store,
}

impl<S> CacheLookup<S> {
    /// Wraps `inner`, looking entries up in `store`.
    pub fn new(inner: S, store: Store) -> Self {
        Self { inner, store }
    }

    crate::inner_accessors!();
}

impl<S, B> Service<Request<B>> for CacheLookup<S>
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

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let inner = crate::take_ready(&mut self.inner);
        let key = match (req.extensions().get::<ResolvedRemote>(), req.extensions().get::<ArtifactPath>()) {
            (Some(ResolvedRemote(remote)), Some(path))
                if matches!(*req.method(), Method::GET | Method::HEAD) =>
            {
                let mut key = path.cache_key(&remote.name);
                if let Some(Variant(variant)) = req.extensions().get::<Variant>() {
                    key.push(crate::path::KEY_SEPARATOR);
                    key.push_str(variant);
                }
                Arc::<str>::from(key)
            }
            _ => return Box::pin(inner.oneshot(req)),
        };
        req.extensions_mut().insert(CacheKey(key.clone()));
        let store = self.store.clone();
        Box::pin(async move {
            match store.index.get(&key).await {
                Ok(Some(entry)) if entry.is_fresh(now_ms()) => {
                    match serve_entry(&store, &entry, req.method(), req.headers(), CacheStatus::Hit).await {
                        Ok(response) => return Ok(response),
                        Err(StoreError::NotFound) => {
                            // The row outlived its blob: drop it and fetch again.
                            tracing::warn!(key = %entry.path, blob = %entry.blob, "cached blob is missing; fetching again");
                            // Drop this row only: the copy read may be older than
                            // a row another replica has written since, which is
                            // served instead.
                            if let Ok(None) = store.index.remove_if(&key, &entry.blob).await {
                                if let Ok(Some(newer)) = store.index.get(&key).await {
                                    if newer.blob != entry.blob && newer.is_fresh(now_ms()) {
                                        let served = serve_entry(
                                            &store,
                                            &newer,
                                            req.method(),
                                            req.headers(),
                                            CacheStatus::Hit,
                                        )
                                        .await;
                                        if let Ok(response) = served {
                                            return Ok(response);
                                        }
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(key = %entry.path, error = %e, "cannot read a cached blob; fetching from upstream");
                        }
                    }
                }
                Ok(Some(entry)) => {
                    // An expired entry stays with the document it came with
                    // (apt: an index file with its release file).
                    if paired_with_fresh(&store, paired_keys(&req), &entry).await {
                        if let Ok(response) =
                            serve_entry(&store, &entry, req.method(), req.headers(), CacheStatus::Hit).await
                        {
                            return Ok(response);
                        }
                    }
                    req.extensions_mut().insert(StaleEntry(Arc::new(entry)));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "index lookup failed; passing the request through");
                }
            }
            inner.oneshot(req).await
        })
    }
}

/// The keys of the documents the request's entry pairs with.
fn paired_keys<B>(req: &Request<B>) -> Vec<String> {
    match (req.extensions().get::<ResolvedRemote>(), req.extensions().get::<ArtifactPath>()) {
        (Some(ResolvedRemote(remote)), Some(path)) => remote
            .package
            .format()
            .freshness()
            .map_or_else(Vec::new, |f| f.served_as_long_as(&remote.name, path)),
        _ => Vec::new(),
    }
}

/// Whether `entry`, expired, was fetched with a fresh document it pairs with
/// (not after it): see [`Freshness::served_as_long_as`](crate::format::Freshness::served_as_long_as).
async fn paired_with_fresh(store: &Store, pairs: Vec<String>, entry: &Entry) -> bool {
    for key in pairs {
        if let Ok(Some(release)) = store.index.get(&key).await {
            return release.is_fresh(now_ms()) && release.cached_at_ms <= entry.cached_at_ms;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{header, StatusCode};
    use http_body_util::BodyExt;
    use tower::service_fn;

    use super::*;
    use crate::{
        body,
        remote::Remote,
        store::{
            memory::{MemoryBlobs, MemoryIndex},
            Entry, EntryClass, Index,
        },
    };

    struct Fixture {
        store: Store,
        blobs: Arc<MemoryBlobs>,
        index: Arc<MemoryIndex>,
        upstream_calls: Arc<AtomicUsize>,
    }

    impl Fixture {
        fn new() -> Self {
            let blobs = Arc::new(MemoryBlobs::new());
            let index = Arc::new(MemoryIndex::new());
            Self {
                store: Store::new(index.clone(), blobs.clone()),
                blobs,
                index,
                upstream_calls: Arc::new(AtomicUsize::new(0)),
            }
        }

        async fn cache(&self, path: &str, bytes: &'static str, expires_at_ms: Option<i64>) {
            let key = ArtifactPath::parse(path, None).unwrap().cache_key("r");
            self.blobs.insert(&format!("blob-{path}"), bytes);
            self.index
                .put(Entry {
                    key,
                    remote: "r".into(),
                    path: path.into(),
                    blob: format!("blob-{path}"),
                    size: bytes.len() as u64,
                    class: EntryClass::Immutable,
                    headers: vec![
                        ("content-type".into(), "text/plain".into()),
                        ("etag".into(), "\"v1\"".into()),
                    ],
                    cached_at_ms: 0,
                    expires_at_ms,
                    policy: None,
                })
                .await
                .unwrap();
        }

        async fn call(&self, req: http::request::Builder, path: &str) -> Response<ArtifactBody> {
            let calls = self.upstream_calls.clone();
            let svc = CacheLookup::new(
                service_fn(move |req: Request<()>| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let stale = req.extensions().get::<StaleEntry>().is_some();
                    let keyed = req.extensions().get::<CacheKey>().is_some();
                    async move {
                        Ok::<_, BoxError>(Response::new(body::full(format!(
                            "upstream stale={stale} keyed={keyed}"
                        ))))
                    }
                }),
                self.store.clone(),
            );
            let mut req = req.body(()).unwrap();
            req.extensions_mut()
                .insert(ResolvedRemote(Arc::new(Remote::proxy("r", "http://127.0.0.1:9".parse().unwrap()))));
            req.extensions_mut().insert(ArtifactPath::parse(path, None).unwrap());
            svc.oneshot(req).await.unwrap()
        }
    }

    async fn text(res: Response<ArtifactBody>) -> String {
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn fresh_entry_is_served_without_upstream() {
        let f = Fixture::new();
        f.cache("a.txt", "hello world", None).await;
        let res = f.call(Request::get("/"), "a.txt").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.extensions().get::<CacheStatus>(), Some(&CacheStatus::Hit));
        assert_eq!(res.headers()[header::CONTENT_LENGTH], "11");
        assert_eq!(res.headers()[header::ETAG], "\"v1\"");
        assert_eq!(text(res).await, "hello world");
        assert_eq!(f.upstream_calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn head_range_and_conditional_on_a_hit() {
        let f = Fixture::new();
        f.cache("a.txt", "hello world", None).await;
        let res = f.call(Request::head("/"), "a.txt").await;
        assert_eq!(res.headers()[header::CONTENT_LENGTH], "11");
        assert_eq!(text(res).await, "");

        let res = f.call(Request::get("/").header("range", "bytes=6-"), "a.txt").await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes 6-10/11");
        assert_eq!(text(res).await, "world");

        let res = f.call(Request::get("/").header("range", "bytes=20-"), "a.txt").await;
        assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes */11");

        let res = f.call(Request::get("/").header("if-none-match", "\"v1\""), "a.txt").await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);

        // If-Range with another validator: the whole body.
        let res = f
            .call(Request::get("/").header("range", "bytes=0-0").header("if-range", "\"v0\""), "a.txt")
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(f.upstream_calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn expired_entry_goes_on_with_the_stale_copy_attached() {
        let f = Fixture::new();
        f.cache("a.txt", "old", Some(1)).await;
        let res = f.call(Request::get("/"), "a.txt").await;
        assert_eq!(text(res).await, "upstream stale=true keyed=true");
        assert_eq!(f.upstream_calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_row_whose_blob_is_gone_is_a_miss_and_is_dropped() {
        let f = Fixture::new();
        f.cache("a.txt", "x", None).await;
        f.blobs.delete("blob-a.txt").await.unwrap();
        let res = f.call(Request::get("/"), "a.txt").await;
        assert_eq!(text(res).await, "upstream stale=false keyed=true");
        assert!(f.index.is_empty());
    }

    use crate::store::BlobStore;
}
