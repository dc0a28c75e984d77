//! Reading through this layer and the cache what a file is checked
//! against: the listing that promises its digest, or the record that
//! vouches for it; and marking listings expired once a new file appears.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use tower::{Service, ServiceExt};

use super::{read_capped, BodyRewrite};
use crate::{
    body::ArtifactBody,
    error::{find_cause, BoxError, UpstreamError, UpstreamErrorKind, UpstreamStatus},
    extensions::Classification,
    path::ArtifactPath,
    pattern::Decision,
    remote::Remote,
    remote_resolve::ResolvedRemote,
    store::{now_ms, Refresh, Store},
};

impl<S> BodyRewrite<S> {
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

    /// Reads `record` on `remote` through the cache, and records the digest
    /// it vouches for the file at `path` (cache key `key`). A record
    /// upstream does not have leaves the file unchecked (logged once); one
    /// that cannot be read, or does not vouch for the file, fails it.
    pub(super) async fn read_record<B>(
        self,
        remote: Arc<Remote>,
        record: ArtifactPath,
        path: ArtifactPath,
        key: String,
    ) -> Result<(), BoxError>
    where
        Self: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError>,
        B: Default,
    {
        let (digests, unknown, max) = (self.digests.clone(), self.unknown.clone(), self.max_bytes);
        let refuse = |why: String| -> BoxError {
            let message = format!("cannot check {} against {}: {why}", path.display(), record.display());
            Box::new(UpstreamError::new(UpstreamErrorKind::Other, message))
        };
        let bytes = match self.read_through(remote.clone(), &record).await {
            Ok(res) => read_capped(res.into_body(), max).await?.ok_or_else(|| refuse("too large".into()))?,
            Err(e) => {
                let status = find_cause::<UpstreamStatus>(&*e).map(UpstreamStatus::upstream);
                if !matches!(status, Some(StatusCode::NOT_FOUND | StatusCode::GONE)) {
                    return Err(refuse(e.to_string()));
                }
                if unknown.first_time(record.cache_key(&remote.name)) {
                    tracing::warn!(remote = %remote.name, record = %record.display(), file = %path.display(), "no record vouches for this version (a private module?); served unchecked");
                }
                return Ok(());
            }
        };
        let expected = remote.package.format().vouches(&bytes, &path).map_err(refuse)?;
        if let Some(digests) = digests {
            digests.expect(key, expected);
        }
        Ok(())
    }

    /// A request for `path` on `remote` through this layer and the cache.
    async fn read_through<B>(
        self,
        remote: Arc<Remote>,
        path: &ArtifactPath,
    ) -> Result<Response<ArtifactBody>, BoxError>
    where
        Self: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError>,
        B: Default,
    {
        let class = match remote.classifier.classify(path.decoded()) {
            Decision::Allow(class) => class,
            Decision::Deny(_) => {
                return Err(format!("{} is denied by the remote's patterns", path.display()).into())
            }
        };
        let mut req = Request::new(B::default());
        *req.uri_mut() = format!("/{}/{}", remote.name, path.raw()).parse()?;
        let extensions = req.extensions_mut();
        extensions.insert(ResolvedRemote(remote));
        extensions.insert(path.clone());
        extensions.insert(Classification(class));
        self.oneshot(req).await
    }
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

pub(super) async fn expire_metadata(store: Store, keys: Vec<String>) {
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
