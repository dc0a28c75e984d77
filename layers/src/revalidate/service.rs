use std::{
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use futures_util::future::BoxFuture;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_cache_semantics::{AfterResponse, BeforeRequest, CachePolicy};
use tower::{Service, ServiceExt};

use crate::{
    body::ArtifactBody,
    error::BoxError,
    extensions::{CacheStatus, Classification, Conditional, NotModified, StaleEntry},
    path::ArtifactPath,
    pattern::Class,
    remote::Remote,
    remote_resolve::ResolvedRemote,
    respond::serve_entry,
    store::{now_ms, Entry, EntryClass, Refresh, Revalidated, Store},
};

/// Middleware that revalidates expired mutable entries conditionally.
#[derive(Debug, Clone)]
pub struct Revalidate<S> {
    inner: S,
    store: Store,
}

impl<S> Revalidate<S> {
    /// Wraps `inner`, refreshing entries in `store`.
    pub fn new(inner: S, store: Store) -> Self {
        Self { inner, store }
    }

    crate::inner_accessors!();
}

/// What a revalidation needs to remember across the upstream call.
struct Plan {
    remote: Arc<Remote>,
    entry: Arc<Entry>,
    policy: CachePolicy,
    policy_req: Request<()>,
    /// The format decides the entry's `ETag` (the RubyGems MD5): a 304
    /// refreshes upstream's validators in the policy, never that header.
    etag_owned: bool,
}

/// Whether `entry`, expired, is revalidated rather than fetched again.
fn revalidates(remote: &Remote, class: Class, entry: &Entry) -> bool {
    let by_class = match class {
        // Built-in mutable paths (APKINDEX, repomd.xml, Docker tags) always:
        // a registry's upstream turns the condition into a HEAD and a digest
        // comparison.
        Class::Mutable { builtin: true } => true,
        Class::Mutable { builtin: false } => remote.check_mutable_updates,
        Class::Immutable => false,
    };
    by_class && entry.class == EntryClass::Mutable && entry.policy.is_some()
}

fn plan<B>(req: &Request<B>) -> Option<(Plan, HeaderMap)> {
    if req.method() != Method::GET {
        return None;
    }
    let ResolvedRemote(remote) = req.extensions().get::<ResolvedRemote>()?;
    let Classification(class) = req.extensions().get::<Classification>()?;
    let StaleEntry(entry) = req.extensions().get::<StaleEntry>()?;
    if !revalidates(remote, *class, entry) {
        return None;
    }
    let policy: CachePolicy = serde_json::from_str(entry.policy.as_deref()?).ok()?;
    let mut policy_req = Request::new(());
    *policy_req.uri_mut() = req.uri().clone();
    *policy_req.headers_mut() = req.headers().clone();
    // Our lifetimes come from configuration, not from upstream's
    // Cache-Control: ask the policy as if it were long expired.
    let long_after = SystemTime::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let BeforeRequest::Stale { request, .. } = policy.before_request(&policy_req, long_after) else {
        return None;
    };
    let mut validators = HeaderMap::new();
    for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
        if let Some(value) = request.headers.get(&name) {
            validators.insert(name, value.clone());
        }
    }
    if validators.is_empty() {
        return None;
    }
    let etag_owned = req
        .extensions()
        .get::<ArtifactPath>()
        .is_some_and(|p| remote.package.format().freshness().is_some_and(|f| f.etag_is_md5_of_body(p)));
    let plan = Plan { remote: remote.clone(), entry: entry.clone(), policy, policy_req, etag_owned };
    Some((plan, validators))
}

impl<S, B> Service<Request<B>> for Revalidate<S>
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
        let Some((plan, validators)) = plan(&req) else {
            return Box::pin(inner.oneshot(req));
        };
        req.extensions_mut().insert(Conditional(validators));
        let method = req.method().clone();
        let client_headers = req.headers().clone();
        let store = self.store.clone();
        Box::pin(async move {
            let response = inner.oneshot(req).await?;
            let Some(NotModified(answer)) = response.extensions().get::<NotModified>().cloned() else {
                return Ok(response);
            };
            let entry = refresh(&store, &plan, &answer).await;
            Ok(serve_entry(&store, &entry, &method, &client_headers, CacheStatus::Revalidated).await?)
        })
    }
}

/// Upstream confirmed the entry: new lifetime, validators and policy, same bytes.
async fn refresh(store: &Store, plan: &Plan, answer: &HeaderMap) -> Entry {
    let mut not_modified = Response::new(());
    *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
    *not_modified.headers_mut() = answer.clone();
    let policy = match plan.policy.after_response(&plan.policy_req, &not_modified, SystemTime::now()) {
        AfterResponse::NotModified(policy, _) => policy,
        // A 304 to exactly our validators, whatever it carries: the bytes we
        // hold are current; keep the policy we had.
        AfterResponse::Modified(..) => plan.policy.clone(),
    };
    let mut headers = plan.entry.headers.clone();
    let owned = if plan.etag_owned { Some(header::ETAG) } else { None };
    for name in [header::ETAG, header::LAST_MODIFIED].into_iter().filter(|name| Some(name) != owned.as_ref())
    {
        if let Some(value) = answer.get(&name).and_then(|v| v.to_str().ok()) {
            headers.retain(|(k, _)| k != name.as_str());
            headers.push((name.as_str().to_owned(), value.to_owned()));
        }
    }
    let refresh = Refresh {
        expires_at_ms: plan.remote.ttl.expiry(plan.entry.class, now_ms()),
        revalidated: Some(Revalidated { headers, policy: serde_json::to_string(&policy).ok() }),
    };
    if let Err(e) = store.index.refresh(&plan.entry.key, &plan.entry.blob, &refresh).await {
        tracing::warn!(path = %plan.entry.path, error = %e, "could not record a revalidation");
    }
    (*plan.entry).clone().refreshed(&refresh)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use http_body_util::BodyExt;
    use tower::{service_fn, util::BoxCloneService};

    type Upstream = BoxCloneService<Request<()>, Response<ArtifactBody>, BoxError>;

    use super::*;
    use crate::{
        body,
        store::{
            memory::{MemoryBlobs, MemoryIndex},
            Index,
        },
    };

    fn policy_for(etag: &str) -> String {
        let req = Request::get("/r/index.json").body(()).unwrap();
        let res = Response::builder().header("etag", etag).body(()).unwrap();
        serde_json::to_string(&CachePolicy::new(&req, &res)).unwrap()
    }

    async fn fixture(class: EntryClass) -> (Store, Arc<MemoryIndex>, Arc<Entry>) {
        let index = Arc::new(MemoryIndex::new());
        let blobs = Arc::new(MemoryBlobs::new());
        blobs.insert("b", "cached");
        let entry = Entry {
            key: "k".into(),
            remote: "r".into(),
            path: "index.json".into(),
            blob: "b".into(),
            size: 6,
            class,
            headers: vec![("etag".into(), "\"e1\"".into())],
            cached_at_ms: 0,
            expires_at_ms: Some(1),
            policy: Some(policy_for("\"e1\"")),
        };
        index.put(entry.clone()).await.unwrap();
        (Store::new(index.clone(), blobs), index, Arc::new(entry))
    }

    fn request(entry: Arc<Entry>, class: Class, check: bool) -> Request<()> {
        let mut remote = Remote::proxy("r", "http://127.0.0.1:9".parse().unwrap());
        remote.check_mutable_updates = check;
        let mut req = Request::get("/r/index.json").body(()).unwrap();
        req.extensions_mut().insert(ResolvedRemote(Arc::new(remote)));
        req.extensions_mut().insert(Classification(class));
        req.extensions_mut().insert(StaleEntry(entry));
        req
    }

    /// An upstream that records the validators it was handed and answers 304.
    fn upstream(seen: Arc<Mutex<Vec<Option<HeaderMap>>>>) -> Upstream {
        BoxCloneService::new(service_fn(move |req: Request<()>| {
            let conditional = req.extensions().get::<Conditional>().map(|c| c.0.clone());
            seen.lock().unwrap().push(conditional.clone());
            async move {
                let mut res = Response::new(body::empty());
                if conditional.is_some() {
                    *res.status_mut() = StatusCode::NOT_MODIFIED;
                    let mut headers = HeaderMap::new();
                    headers.insert(header::ETAG, "\"e1\"".parse().unwrap());
                    res.extensions_mut().insert(NotModified(Arc::new(headers)));
                }
                Ok::<_, BoxError>(res)
            }
        }))
    }

    #[tokio::test]
    async fn a_304_refreshes_the_entry_and_serves_the_cached_bytes() {
        let (store, index, entry) = fixture(EntryClass::Mutable).await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let svc = Revalidate::new(upstream(seen.clone()), store);
        let res = svc.oneshot(request(entry, Class::Mutable { builtin: false }, true)).await.unwrap();
        assert_eq!(res.extensions().get::<CacheStatus>(), Some(&CacheStatus::Revalidated));
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "cached");
        let validators = seen.lock().unwrap()[0].clone().expect("a conditional request");
        assert_eq!(validators[header::IF_NONE_MATCH], "\"e1\"");
        let refreshed = index.get("k").await.unwrap().unwrap();
        assert!(refreshed.expires_at_ms.unwrap() > now_ms());
        assert_eq!(refreshed.blob, "b");
    }

    #[tokio::test]
    async fn which_entries_are_revalidated() {
        let cases = [
            (EntryClass::Mutable, Class::Mutable { builtin: false }, false, false),
            (EntryClass::Mutable, Class::Mutable { builtin: true }, false, true),
            (EntryClass::Immutable, Class::Immutable, true, false),
        ];
        for (entry_class, class, check, conditional) in cases {
            let (store, _, entry) = fixture(entry_class).await;
            let seen = Arc::new(Mutex::new(Vec::new()));
            let svc = Revalidate::new(upstream(seen.clone()), store);
            svc.oneshot(request(entry, class, check)).await.unwrap();
            assert_eq!(seen.lock().unwrap()[0].is_some(), conditional, "{class:?} check={check}");
        }
    }
}
