//! A local disk tier in front of a shared object store: a least-recently
//! used copy of blobs on the replica's own disk, so that a hit on a large
//! artifact reads a local file instead of pulling the object again.
//!
//! - A fill's complete spool file becomes the copy after its upload (a hard
//!   link made before the upload consumes the spool; a copy when the two
//!   directories are on different filesystems): nothing is downloaded twice.
//! - A hit reads the copy when there is one. When there is none, one `GET`
//!   of the whole object is written to a file that every reader of the blob
//!   on this replica follows as it grows ([`fill`]); the file becomes the copy
//!   when complete. Reads of a range that does not start at 0 go to the
//!   object store as they are, and keep nothing.
//! - Copies are named by blob key and size (`{key}~{size}`). A blob key is
//!   unique to one fill (or names its content), so a purged or replaced entry
//!   never leads to an old copy: a hit finds its blob key in the index first.
//!   A copy is checked against its size when opened; a short, long or
//!   missing file is dropped and filled again from the object store.
//! - What a copy cannot know is a replica whose in-memory index entry is
//!   stale (nothing told it of a purge elsewhere). With `confirm_after`, a
//!   copy not confirmed that recently is confirmed with a `HEAD` on the
//!   object store before it is served: every hit without Redis, every 30 s
//!   with it (Redis tells replicas of purges at once; see `app.rs`).
//! - The budget counts copies and fills in progress, reserved before the
//!   first byte is written: a blob larger than the budget is never kept, and
//!   the least recently used copies are deleted to make room.
//! - Deleting a blob deletes its copy here and, through the coordinator,
//!   tells other replicas to delete theirs (only to free the space sooner).

mod copies;
mod fill;

use std::{
    collections::{BTreeMap, HashMap},
    io,
    ops::Range,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use artifactapi_layers::{
    coord::Coordinator,
    store::{BlobList, BlobStore, BlobStream, StoreError},
};
use async_trait::async_trait;

use super::FsBlobStore;
use fill::Filling;

/// What the local tier has done, for `/metrics`.
#[derive(Debug, Default)]
pub struct LocalStats {
    /// Reads answered from a local copy.
    pub hits: AtomicU64,
    /// Whole objects read from the object store into a copy.
    pub fills: AtomicU64,
    /// Copies made from a fill's spool file after its upload.
    pub kept: AtomicU64,
    /// Copies found short, long or missing, dropped and read again.
    pub repairs: AtomicU64,
    /// Copies deleted to keep within the budget.
    pub evictions: AtomicU64,
    /// Their bytes.
    pub evicted_bytes: AtomicU64,
    /// `HEAD` requests that confirmed a copy's blob still exists.
    pub confirms: AtomicU64,
}

/// A blob store that keeps copies of `inner`'s blobs on local disk.
#[derive(Clone)]
pub struct LocalTier(Arc<Tier>);

struct Tier {
    inner: Arc<dyn BlobStore>,
    copies: FsBlobStore,
    incoming: PathBuf,
    budget: u64,
    confirm_after: Option<Duration>,
    coordinator: Option<Arc<dyn Coordinator>>,
    state: Mutex<State>,
    stats: LocalStats,
}

struct Copy {
    size: u64,
    tick: u64,
    confirmed: Instant,
}

#[derive(Default)]
struct State {
    copies: HashMap<String, Copy>,
    /// Copies by last use: the first is the next to go.
    order: BTreeMap<u64, String>,
    /// Bytes of the copies and of the fills under way.
    bytes: u64,
    tick: u64,
    filling: HashMap<String, Arc<Filling>>,
}

impl State {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Forgets the copy of `key`, answering its size.
    fn take(&mut self, key: &str) -> Option<u64> {
        let copy = self.copies.remove(key)?;
        self.order.remove(&copy.tick);
        self.bytes -= copy.size;
        Some(copy.size)
    }

    /// Reserves `size` bytes, forgetting the least recently used copies to
    /// make room; answers the copies forgotten, or `None` when `size` is
    /// more than the whole budget.
    fn reserve(&mut self, size: u64, budget: u64) -> Option<Vec<(String, u64)>> {
        if size > budget {
            return None;
        }
        let mut evicted = Vec::new();
        while self.bytes + size > budget {
            let Some((_, key)) = self.order.pop_first() else { break };
            if let Some(copy) = self.copies.remove(&key) {
                self.bytes -= copy.size;
                evicted.push((key, copy.size));
            }
        }
        self.bytes += size;
        Some(evicted)
    }

    /// Makes the reserved `size` bytes under `key` a copy; answers the size
    /// of a copy it replaced.
    fn install(&mut self, key: &str, size: u64) -> Option<u64> {
        let replaced = self.take(key);
        let tick = self.next_tick();
        self.order.insert(tick, key.to_owned());
        self.copies.insert(key.to_owned(), Copy { size, tick, confirmed: Instant::now() });
        replaced
    }
}

/// The file name of the copy of `key`, `size` bytes long.
fn local_key(key: &str, size: u64) -> String {
    format!("{key}~{size}")
}

impl LocalTier {
    /// Copies of `inner`'s blobs under `root`, at most `budget` bytes. The
    /// copies already under `root` are kept when their size is right (the
    /// oldest go first when they exceed the budget); unfinished ones are
    /// removed.
    pub async fn open(inner: Arc<dyn BlobStore>, root: &Path, budget: u64) -> io::Result<Self> {
        let copies = FsBlobStore::new(root.join("blobs"))?;
        let incoming = root.join("incoming");
        let _ = std::fs::remove_dir_all(&incoming);
        std::fs::create_dir_all(&incoming)?;
        let blobs = copies.root().to_owned();
        let found =
            tokio::task::spawn_blocking(move || copies::scan(&blobs)).await.map_err(io::Error::other)??;
        let tier = Tier {
            inner,
            copies,
            incoming,
            budget,
            confirm_after: None,
            coordinator: None,
            state: Mutex::default(),
            stats: LocalStats::default(),
        };
        let mut evicted = Vec::new();
        {
            let mut state = tier.state.lock().expect("local tier lock");
            for (key, size) in found {
                match state.reserve(size, budget) {
                    Some(gone) => {
                        evicted.extend(gone);
                        state.install(&key, size);
                    }
                    None => evicted.push((key, size)),
                }
            }
        }
        tier.remove_files(evicted);
        Ok(Self(Arc::new(tier)))
    }

    /// Confirms with the object store that a copy's blob still exists when
    /// the copy was last confirmed `age` ago or more (`Duration::ZERO`: on
    /// every read).
    pub fn confirm_after(mut self, age: Duration) -> Self {
        Arc::get_mut(&mut self.0).expect("configured before use").confirm_after = Some(age);
        self
    }

    /// Tells other replicas through `coordinator` of every blob deleted.
    pub fn with_coordinator(mut self, coordinator: Arc<dyn Coordinator>) -> Self {
        Arc::get_mut(&mut self.0).expect("configured before use").coordinator = Some(coordinator);
        self
    }

    /// What the tier has done.
    pub fn stats(&self) -> &LocalStats {
        &self.0.stats
    }

    /// How many copies there are, of how many bytes (fills under way
    /// included), and the budget.
    pub fn usage(&self) -> (u64, u64, u64) {
        let state = self.0.state.lock().expect("local tier lock");
        (state.copies.len() as u64, state.bytes, self.0.budget)
    }

    /// Deletes the copy of `key` (another replica deleted the blob).
    pub fn forget(&self, key: &str) {
        self.0.forget(key);
    }
}

#[async_trait]
impl BlobStore for LocalTier {
    async fn put_file(&self, key: &str, file: &Path, size: u64) -> Result<(), StoreError> {
        let tier = &self.0;
        // Linked before the upload, which consumes the spool file.
        let staged = if size <= tier.budget {
            let (from, to) = (file.to_owned(), tier.incoming_path());
            let linked = tokio::task::spawn_blocking(move || {
                std::fs::hard_link(&from, &to).or_else(|_| std::fs::copy(&from, &to).map(|_| ())).map(|_| to)
            })
            .await;
            match linked {
                Ok(Ok(to)) => Some(to),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot keep a local copy of a new blob");
                    None
                }
                Err(_) => None,
            }
        } else {
            None
        };
        let stored = tier.inner.put_file(key, file, size).await;
        if let Some(staged) = staged {
            if stored.is_ok() && tier.reserve(size).await {
                match tier.keep(key, staged, size).await {
                    Ok(()) => {
                        tier.install(key, size, false);
                        tier.stats.kept.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tier.unreserve(size);
                        tracing::warn!(error = %e, "cannot keep a local copy of a new blob");
                    }
                }
            } else {
                let _ = tokio::fs::remove_file(staged).await;
            }
        }
        stored
    }

    async fn open(&self, key: &str, range: Option<Range<u64>>) -> Result<BlobStream, StoreError> {
        let tier = &self.0;
        if let Some((size, confirm)) = tier.lookup(key) {
            if confirm {
                match tier.inner.exists(key).await {
                    Ok(true) => {
                        tier.stats.confirms.fetch_add(1, Ordering::Relaxed);
                        tier.confirmed(key);
                    }
                    Ok(false) => {
                        tier.forget(key);
                        return Err(StoreError::NotFound);
                    }
                    // The object store cannot tell: the copy is served.
                    Err(e) => tracing::debug!(error = %e, "cannot confirm a local copy"),
                }
            }
            match tier.open_copy(key, size, range.clone()).await {
                Ok(stream) => {
                    tier.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(stream);
                }
                Err(e) => {
                    tracing::warn!(blob = key, error = %e, "local copy unusable; reading the object store");
                    tier.stats.repairs.fetch_add(1, Ordering::Relaxed);
                    tier.forget(key);
                }
            }
        }
        if range.as_ref().is_some_and(|r| r.start > 0) {
            return tier.inner.open(key, range).await;
        }
        fill::read_through(self.0.clone(), key, range).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.0.forget(key);
        let deleted = self.0.inner.delete(key).await;
        if let Some(coordinator) = self.0.coordinator.clone() {
            let key = key.to_owned();
            tokio::spawn(async move { coordinator.blob_deleted(&key).await });
        }
        deleted
    }

    async fn list(&self) -> Result<BlobList, StoreError> {
        self.0.inner.list().await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.0.inner.exists(key).await
    }

    async fn clean_up(&self, age: Duration) -> Result<u64, StoreError> {
        self.0.inner.clean_up(age).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.0.inner.ping().await
    }
}

#[cfg(test)]
mod tests;
