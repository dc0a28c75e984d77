//! Coordination between replicas: who fetches a key, and who must forget a
//! hot entry.
//!
//! One process needs none of this (its fills are single-flight already); with
//! several replicas a [`Coordinator`] (Redis in production) hands out a lease
//! per cache key, so concurrent misses across replicas make one upstream
//! request, and carries invalidations of hot index entries. Coordination
//! fails open: when it cannot answer, a replica fetches by itself (possibly a
//! duplicate fetch, never an error).

use std::time::Duration;

use async_trait::async_trait;

/// The coordination backend.
#[async_trait]
pub trait Coordinator: Send + Sync + 'static {
    /// Takes the fill lease for `key` for `ttl`: `Ok(true)` when this replica
    /// is to fetch, `Ok(false)` when another holds it.
    async fn acquire(&self, key: &str, ttl: Duration) -> Result<bool, String>;
    /// Extends a lease this replica holds; `Ok(false)` if it is no longer ours.
    async fn renew(&self, key: &str, ttl: Duration) -> Result<bool, String>;
    /// Gives a lease up, if it is still ours.
    async fn release(&self, key: &str);
    /// Whether any replica holds the lease for `key`.
    async fn held(&self, key: &str) -> Result<bool, String>;
    /// Tells the other replicas that the entry under `key` changed (`None`: all).
    async fn invalidate(&self, key: Option<&str>);
    /// Like [`Coordinator::invalidate`], and waits (briefly) until every
    /// listening replica has acted on it: a purge or a flush answers only
    /// then, so that no replica answers afterwards from what it removed.
    /// The default waits for nothing.
    async fn invalidate_everywhere(&self, key: Option<&str>) {
        self.invalidate(key).await;
    }
    /// Before a flush of `remote` (every remote with `None`) touches the
    /// index: asks every other replica to keep its fills in flight from
    /// committing as fresh and to finish the commits under way, and waits
    /// (briefly) until each has. The default has no other replicas.
    async fn flushing(&self, _remote: Option<&str>, _remove_immutable: bool) {}
    /// Tells the other replicas that the blob under `key` was deleted, so
    /// that they free their local copies of it (a copy is never served for
    /// an entry that no longer names it; this only frees the space sooner).
    /// The default tells no one.
    async fn blob_deleted(&self, _key: &str) {}
    /// A short-lived value every replica may use (an upstream registry
    /// token), if one is shared under `key`. The default shares nothing.
    async fn shared_value(&self, _key: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
    /// Shares `value` under `key` with every replica for `ttl`.
    async fn share_value(&self, _key: &str, _value: &str, _ttl: Duration) -> Result<(), String> {
        Ok(())
    }
}
