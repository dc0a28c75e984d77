use std::{path::PathBuf, sync::Arc};

use tower::Layer;

use super::{
    fill::{Fills, TeeStats},
    S3Tee,
};
use crate::{
    budget::{DocumentBudget, ZipBudget},
    coord::Coordinator,
    digest::ExpectedDigests,
    store::Store,
};

/// Applies [`S3Tee`] to a service.
#[derive(Debug, Clone)]
pub struct S3TeeLayer {
    fills: Arc<Fills>,
}

impl S3TeeLayer {
    /// Fills go into `store`, spooling through files in `spool_dir` (which
    /// should be on the same filesystem as a file blob store, so that a commit
    /// is a rename).
    pub fn new(store: Store, spool_dir: impl Into<PathBuf>) -> Self {
        Self { fills: Arc::new(Fills::new(store, spool_dir.into(), None)) }
    }

    /// Like [`S3TeeLayer::new`], coordinating fills with other replicas: a
    /// miss takes the key's lease before fetching, and a replica that finds
    /// the lease taken waits for the holder's commit instead of fetching too.
    pub fn with_coordinator(
        store: Store,
        spool_dir: impl Into<PathBuf>,
        coordinator: Arc<dyn Coordinator>,
    ) -> Self {
        Self { fills: Arc::new(Fills::new(store, spool_dir.into(), Some(coordinator))) }
    }

    /// Checks fetched files against the digests package metadata promised
    /// for them: a mismatch fails the transfer and caches nothing.
    pub fn verify_with(mut self, digests: Arc<ExpectedDigests>) -> Self {
        Arc::get_mut(&mut self.fills).expect("configured before the layer is used").digests = Some(digests);
        self
    }

    /// What a fetched metadata document may describe (`document`: measured
    /// before it is stored, so one past it is never cached) and what a
    /// check over a whole file may inflate (`zip`; default: Go's own limits
    /// on a module zip).
    pub fn check_within(mut self, document: DocumentBudget, zip: ZipBudget) -> Self {
        let fills = Arc::get_mut(&mut self.fills).expect("configured before the layer is used");
        (fills.document_budget, fills.zip_budget) = (document, zip);
        self
    }
}

impl S3TeeLayer {
    /// How long a committed fill stays joinable (two seconds by default):
    /// a request that looked the key up in the index just before the
    /// commit is answered from the finished fill. Tests set it to hold a
    /// fill for as long as they look at it, or to have none.
    pub fn linger(mut self, linger: std::time::Duration) -> Self {
        Arc::get_mut(&mut self.fills).expect("configured before the layer is used").linger = linger;
        self
    }

    /// Forgets a finished fill of `key` and a remembered 404 for it, so that
    /// the next request for a purged entry goes upstream.
    pub fn forget(&self, key: &str) {
        self.fills.forget(key);
    }

    /// Before a flush of `remote` (of every remote with `None`) touches the
    /// index: fills in flight that began before it will not commit their
    /// bytes as fresh entries (none at all with `remove_immutable`), and
    /// the commits under way are waited for, so that the flush sees them.
    pub async fn flushing(&self, remote: Option<&str>, remove_immutable: bool) {
        self.fills.flushes.flush(remote, remove_immutable, crate::store::now_ms()).await;
    }

    /// Waits until the commits under way have written their rows: a purge
    /// then finds an entry whose body a client has already received whole.
    pub async fn settled(&self) {
        drop(self.fills.flushes.gate.write().await);
    }

    /// Forgets every finished fill and remembered 404 of `remote` (of every
    /// remote with `None`), so that after a flush no request is answered
    /// from bytes fetched before it.
    pub fn forget_all(&self, remote: Option<&str>) {
        self.fills.forget_all(remote);
    }

    /// What the fills behind this layer (and its clones) have done.
    pub fn stats(&self) -> Arc<TeeStats> {
        self.fills.stats.clone()
    }
}

impl<S> Layer<S> for S3TeeLayer {
    type Service = S3Tee<S>;

    fn layer(&self, inner: S) -> Self::Service {
        S3Tee::new(inner, self.fills.clone())
    }
}
