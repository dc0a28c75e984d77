//! A request for a file (anything but a document): before it reaches the
//! cache, what the file is checked against is read through this layer and
//! the cache (the listing that promises its digest, or the record that
//! vouches for it), and where upstream serves it is worked out when the
//! format says so; once a new file appears, its listings are marked
//! expired.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tower::{Service, ServiceExt};
use url::Url;

use super::BodyRewrite;
use crate::{
    body::{read_capped, ArtifactBody},
    budget::Exceeded,
    digest::Expected,
    error::{find_cause, BoxError, UpstreamError, UpstreamErrorKind, UpstreamStatus},
    extensions::{CacheStatus, Classification, UpstreamUrl, Variant},
    format,
    path::ArtifactPath,
    pattern::Decision,
    remote::Remote,
    remote_resolve::ResolvedRemote,
    store::{now_ms, Refresh, Store},
};

impl<S> BodyRewrite<S> {
    /// Answers a request for a file: reads what it is checked against and
    /// where upstream serves it first, when it is not cached.
    pub(super) fn file<B>(
        &self,
        inner: S,
        mut req: Request<B>,
        remote: Arc<Remote>,
        path: ArtifactPath,
    ) -> BoxFuture<'static, Result<Response<ArtifactBody>, BoxError>>
    where
        S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send,
        B: Default + Send + 'static,
    {
        let get = req.method() == Method::GET;
        let fetch = get || req.method() == Method::HEAD;
        let format = remote.package.format();
        let listings = match (&self.store, get) {
            (Some((_, remotes)), true) => format::listed_in(&remote, &path, &remotes.load()),
            _ => Vec::new(),
        };
        let records = match (&self.digests, fetch) {
            (Some(_), true) => format.integrity().map_or_else(Vec::new, |i| i.vouched_by(&remote, &path)),
            _ => Vec::new(),
        };
        let located = fetch.then(|| format.relocation()?.located_by(&path)).flatten();
        let Some((store, _)) =
            self.store.clone().filter(|_| !listings.is_empty() || !records.is_empty() || located.is_some())
        else {
            return Box::pin(inner.oneshot(req));
        };
        // No digest promised for this file in memory (after a restart, or
        // after the client's copy of its listing was answered 304), or its
        // upstream URL to work out: read what is needed through the cache
        // first, unless the file is cached already.
        let key = path.cache_key(&remote.name);
        let promise = self.digests.as_ref().and_then(|d| d.get(&key));
        let promised = self.digests.is_none() || promise.is_some();
        let reader = (!promised || located.is_some()).then(|| self.clone());
        Box::pin(async move {
            if let Some(reader) = reader {
                let cached = matches!(store.index.get(&key).await, Ok(Some(e)) if e.is_fresh(now_ms()));
                if !cached {
                    for (lister, listing) in listings.iter().filter(|_| !promised) {
                        reader.clone().read_listing(lister.clone(), listing.clone()).await;
                    }
                    let vouched = match promise {
                        Some(promise) => Some(promise),
                        None if records.is_empty() => None,
                        None => {
                            reader.clone().read_record(remote.clone(), records, path.clone(), key).await?
                        }
                    };
                    if let Some(document) = located {
                        let url =
                            reader.locate(inner.clone(), remote, document, &path, vouched.as_ref()).await?;
                        req.extensions_mut().insert(UpstreamUrl(url));
                    }
                }
            }
            let res = inner.oneshot(req).await?;
            let fetched = res.extensions().get::<CacheStatus>() == Some(&CacheStatus::Miss);
            if fetched && res.status() == StatusCode::OK {
                // Before the client hears of the file: its next look at the
                // metadata must list it. Once per new file.
                expire_metadata(store, format::listing_keys(&listings)).await;
            }
            Ok(res)
        })
    }

    /// Where upstream serves the file at `path`: what the format makes of
    /// upstream's own bytes of `document` (read through the cache below
    /// this layer, not rewritten).
    pub(super) async fn locate<B>(
        self,
        inner: S,
        remote: Arc<Remote>,
        document: ArtifactPath,
        path: &ArtifactPath,
        vouched: Option<&Expected>,
    ) -> Result<Url, BoxError>
    where
        S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError>,
        B: Default,
    {
        let refuse = |why: String| -> BoxError {
            let message = format!("cannot tell where upstream serves {}: {why}", path.display());
            Box::new(UpstreamError::new(UpstreamErrorKind::Other, message))
        };
        let format = remote.package.format();
        let mut req = request(&remote, &document)?;
        if let Some(negotiated) = format.document(&document).map(|d| d.negotiate(None)) {
            req.extensions_mut().insert(Variant(negotiated.variant.into()));
            req.headers_mut().insert(header::ACCEPT, HeaderValue::from_static(negotiated.accept));
        }
        let res = inner.oneshot(req).await.map_err(|e| refuse(format!("{}: {e}", document.display())))?;
        let bytes =
            read_capped(res.into_body(), self.max_bytes).await?.ok_or_else(|| refuse("too large".into()))?;
        let relocation =
            format.relocation().ok_or_else(|| refuse("this format's files are under its base URL".into()))?;
        let location = relocation.locate(&bytes, path, vouched).map_err(refuse)?;
        let base = remote.base_url().ok_or_else(|| refuse("a local repository has no upstream".into()))?;
        let url = base.join(&location).map_err(|e| refuse(format!("{location:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refuse(format!("{url} is not http or https")));
        }
        Ok(url)
    }

    /// Reads `listing`, a document of `lister`, through the cache and this
    /// layer, for the digests it promises; failures only leave the file
    /// unchecked, as before.
    pub(super) async fn read_listing<B>(self, lister: Arc<Remote>, listing: ArtifactPath)
    where
        Self: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError>,
        B: Default,
    {
        let name = lister.name.clone();
        match self.read_through(lister, &listing).await {
            Ok(res) => {
                tracing::debug!(remote = %name, listing = %listing.display(), status = %res.status(), "read a listing for the digests it promises")
            }
            Err(e) => {
                tracing::debug!(remote = %name, listing = %listing.display(), error = %e, "could not read a listing; the file goes unchecked")
            }
        }
    }

    /// Reads the first of `records` on `remote` that upstream has through
    /// the cache, and records the digest it vouches for the file at `path`
    /// (cache key `key`). When upstream has none of them, the file goes
    /// unchecked (logged once); a record that cannot be read, or does not
    /// vouch for the file, fails it.
    pub(super) async fn read_record<B>(
        self,
        remote: Arc<Remote>,
        records: Vec<ArtifactPath>,
        path: ArtifactPath,
        key: String,
    ) -> Result<Option<Expected>, BoxError>
    where
        Self: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError>,
        S: Clone,
        B: Default,
    {
        let (digests, unknown, max) = (self.digests.clone(), self.unknown.clone(), self.max_bytes);
        // Upstream requests made for this file's check so far: a name that
        // could be read a thousand ways must not make a thousand of them.
        let (mut asked, lookups) = (0usize, self.lookups);
        let refuse = |record: &ArtifactPath, why: String| -> BoxError {
            let message = format!("cannot check {} against {}: {why}", path.display(), record.display());
            Box::new(UpstreamError::new(UpstreamErrorKind::Other, message))
        };
        let store = self.store.as_ref().map(|(store, _)| store.clone());
        for record in &records {
            let mut first = true;
            let expected = loop {
                if asked >= lookups {
                    let what = format!("more than {lookups} upstream requests to check one file");
                    let over = Exceeded::new("LOOKUP_MAX_REQUESTS", what);
                    return Err(refuse(record, over.to_string()));
                }
                let read = self.clone().read_through(remote.clone(), record).await;
                // Answered from the cache, a record costs upstream nothing;
                // any other answer, a failure included, was asked upstream.
                let cached = read.as_ref().ok().and_then(|res| res.extensions().get::<CacheStatus>());
                if !matches!(cached, Some(CacheStatus::Hit | CacheStatus::Stale)) {
                    asked += 1;
                }
                let bytes = match read {
                    Ok(res) => read_capped(res.into_body(), max)
                        .await?
                        .ok_or_else(|| refuse(record, "too large".into()))?,
                    Err(e) => {
                        let status = find_cause::<UpstreamStatus>(&*e).map(UpstreamStatus::upstream);
                        if !matches!(status, Some(StatusCode::NOT_FOUND | StatusCode::GONE)) {
                            return Err(refuse(record, e.to_string()));
                        }
                        break None;
                    }
                };
                let vouches = remote.package.format().integrity().map(|i| i.vouches(&bytes, &path));
                match (vouches.unwrap_or_else(|| Err("this format keeps no records".into())), &store) {
                    (Ok(expected), _) => break Some(expected),
                    // The cached record may predate the file (a lock file
                    // made elsewhere names a version published since): ask
                    // upstream for the record again, once.
                    (Err(_), Some(store)) if first => {
                        first = false;
                        // A record that is a document (npm's packument) is
                        // cached per variant.
                        let keys = match remote.package.format().document(record) {
                            Some(_) => format::listing_keys(&[(remote.clone(), record.clone())]),
                            None => vec![record.cache_key(&remote.name)],
                        };
                        expire_metadata(store.clone(), keys).await;
                    }
                    (Err(why), _) => return Err(refuse(record, why)),
                }
            };
            if let Some(expected) = expected {
                if let Some(digests) = &digests {
                    digests.expect(key, expected.clone());
                }
                return Ok(Some(expected));
            }
        }
        if unknown.first_time(key) {
            let records: Vec<String> = records.iter().map(ArtifactPath::display).collect();
            tracing::info!(remote = %remote.name, file = %path.display(), records = ?records, "upstream has no record that vouches for this file; served unchecked");
        }
        Ok(None)
    }

    /// A request for `path` on `remote` through this layer and the cache.
    pub(super) async fn read_through<B>(
        self,
        remote: Arc<Remote>,
        path: &ArtifactPath,
    ) -> Result<Response<ArtifactBody>, BoxError>
    where
        Self: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError>,
        B: Default,
    {
        self.oneshot(request(&remote, path)?).await
    }
}

/// A GET of `path` on `remote`, resolved and classified as the front door
/// would.
fn request<B: Default>(remote: &Arc<Remote>, path: &ArtifactPath) -> Result<Request<B>, BoxError> {
    let class = match remote.classifier.classify(path.decoded()) {
        Decision::Allow(class) => class,
        Decision::Deny(_) => {
            return Err(format!("{} is denied by the remote's patterns", path.display()).into())
        }
    };
    let mut req = Request::new(B::default());
    *req.uri_mut() = format!("/{}/{}", remote.name, path.raw()).parse()?;
    let extensions = req.extensions_mut();
    extensions.insert(ResolvedRemote(remote.clone()));
    extensions.insert(path.clone());
    extensions.insert(Classification(class));
    Ok(req)
}

/// Names seen once, for logging a thing once (forgotten past a bound).
#[derive(Debug, Default)]
pub(super) struct Once(std::sync::Mutex<std::collections::HashSet<String>>);

impl Once {
    /// Whether `name` is new.
    pub(super) fn first_time(&self, name: String) -> bool {
        let mut seen = self.0.lock().expect("once lock");
        if seen.len() >= 4096 {
            seen.clear();
        }
        seen.insert(name)
    }
}

async fn expire_metadata(store: Store, keys: Vec<String>) {
    for key in keys {
        // A fill of it still in flight commits it already expired.
        store.marks.mark(&key);
        if let Ok(Some(entry)) = store.index.get(&key).await {
            if entry.is_fresh(now_ms()) {
                let refresh = Refresh { expires_at_ms: Some(now_ms() - 1), revalidated: None };
                let _ = store.index.refresh(&key, &entry.blob, &refresh).await;
            }
        }
    }
}
