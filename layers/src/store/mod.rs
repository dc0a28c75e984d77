//! Storage behind the cache: an [`Index`] of entries (the source of truth for
//! what is cached and until when) and a [`BlobStore`] of their bytes.
//!
//! The split follows http-cache's storage traits: a body is stored once, and
//! an entry's metadata can change (a refreshed TTL) without touching it. A
//! blob key is unique to one fill, so replacing an entry never rewrites bytes
//! a reader may be streaming; the entry becomes visible only when the index
//! row pointing at a complete blob is written.

mod access;
pub mod breaker;
mod cleanup;
mod evict;
pub mod hot;
pub mod hot_blobs;
mod keys;
pub mod memory;

pub use access::{AccessLog, ExpiryMarks, ReadGuard};
pub use cleanup::{clean_up, CleanUp};
pub use evict::{evict, Budget, Evicted, Growth, Keeper};
pub use keys::{content_address, is_shared_blob, new_blob_key};

use std::{
    collections::HashMap,
    io,
    ops::Range,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

/// A stream of a blob's bytes.
pub type BlobStream = BoxStream<'static, io::Result<Bytes>>;

/// A blob store's listing: each blob's key and when it was written, in
/// bytewise order of key.
pub type BlobList = BoxStream<'static, Result<(String, SystemTime), StoreError>>;

/// One entry's hits since the last flush: its key, when it was last served
/// (milliseconds since the Unix epoch), and how many times.
pub type Served = (String, i64, u64);

/// What kind of entry an index row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryClass {
    /// Cached, never changes upstream.
    Immutable,
    /// Cached, changes upstream; expires.
    Mutable,
    /// Uploaded to a local repository; not a cache entry.
    Local,
}

impl EntryClass {
    /// The name stored in indexes and listed to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryClass::Immutable => "immutable",
            EntryClass::Mutable => "mutable",
            EntryClass::Local => "local",
        }
    }

    /// Parses [`EntryClass::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "immutable" => Some(EntryClass::Immutable),
            "mutable" => Some(EntryClass::Mutable),
            "local" => Some(EntryClass::Local),
            _ => None,
        }
    }
}

/// One cached (or stored) artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The cache key (see [`crate::ArtifactPath::cache_key`]).
    pub key: String,
    /// The remote's name.
    pub remote: String,
    /// The decoded path with its query, as listed to operators.
    pub path: String,
    /// Where the bytes are in the blob store.
    pub blob: String,
    /// The exact length of the bytes.
    pub size: u64,
    /// Its class.
    pub class: EntryClass,
    /// The response headers to answer with (`Content-Type`, `ETag`, ...).
    pub headers: Vec<(String, String)>,
    /// When it was stored, in milliseconds since the Unix epoch.
    pub cached_at_ms: i64,
    /// When it stops being fresh, in milliseconds since the Unix epoch; `None` never.
    pub expires_at_ms: Option<i64>,
    /// The serialized HTTP cache policy (request and response headers) that
    /// conditional revalidation is built from.
    pub policy: Option<String>,
}

impl Entry {
    /// Whether the entry is fresh at `now_ms`.
    pub fn is_fresh(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_none_or(|at| now_ms < at)
    }

    /// The stored value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The current time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// A failure of the store itself (not of upstream).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such blob or entry.
    #[error("not found in the store")]
    NotFound,
    /// A local file operation failed.
    #[error("store I/O failed: {0}")]
    Io(#[from] io::Error),
    /// The backend (database, object store) failed.
    #[error("store backend failed: {0}")]
    Backend(String),
    /// No connection to the backend can be made: it was refused, reset or
    /// closed. Known at once, unlike a backend that is merely slow.
    #[error("store backend unreachable: {0}")]
    Unreachable(String),
}

/// What a refresh changes in an entry whose bytes stay the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    /// The new expiry.
    pub expires_at_ms: Option<i64>,
    /// New response headers and policy, after upstream answered 304.
    pub revalidated: Option<Revalidated>,
}

/// What a 304 from upstream changes in an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revalidated {
    /// The response headers, with upstream's new validators.
    pub headers: Vec<(String, String)>,
    /// The new serialized cache policy.
    pub policy: Option<String>,
}

impl Entry {
    /// This entry with `refresh` applied.
    pub fn refreshed(mut self, refresh: &Refresh) -> Self {
        self.expires_at_ms = refresh.expires_at_ms;
        if let Some(revalidated) = &refresh.revalidated {
            self.headers = revalidated.headers.clone();
            self.policy = revalidated.policy.clone();
        }
        self
    }
}

/// The index of entries.
#[async_trait]
pub trait Index: Send + Sync + 'static {
    /// The entry under `key`, fresh or not.
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError>;
    /// Inserts or replaces the entry under `entry.key`; returns the one replaced,
    /// so that its blob can be deleted.
    async fn put(&self, entry: Entry) -> Result<Option<Entry>, StoreError>;
    /// Removes the entry under `key`, returning it.
    async fn remove(&self, key: &str) -> Result<Option<Entry>, StoreError>;
    /// Removes the entry under `key` only if it still points at `blob` (it
    /// was not replaced meanwhile, by this process or another replica);
    /// returns it if it did.
    async fn remove_if(&self, key: &str, blob: &str) -> Result<Option<Entry>, StoreError>;
    /// Applies `refresh` to the entry under `key` if it still points at
    /// `blob` (it was not replaced meanwhile); answers whether it did.
    async fn refresh(&self, key: &str, blob: &str, refresh: &Refresh) -> Result<bool, StoreError>;
    /// Up to `limit` entries of `remote` whose path sorts after `after`, by path.
    async fn list(&self, remote: &str, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, StoreError>;
    /// Expires the mutable entries of `remote` (every remote when `None`)
    /// at `now_ms`; with `drop_immutable`, also removes its immutable entries
    /// and answers them, so that their blobs can be deleted. Local entries
    /// are never touched: they are data, not cache.
    async fn flush(
        &self,
        remote: Option<&str>,
        drop_immutable: bool,
        now_ms: i64,
    ) -> Result<Flushed, StoreError>;
    /// Expires, at `now_ms`, the mutable entries of `remote` whose path
    /// starts with `dir`, except the entry under `keep`; answers how many.
    async fn expire_under(&self, remote: &str, dir: &str, keep: &str, now_ms: i64)
        -> Result<u64, StoreError>;
    /// Every entry of `remote` listed under `path` (its variants: the same
    /// path under several keys).
    async fn find_path(&self, remote: &str, path: &str) -> Result<Vec<Entry>, StoreError>;
    /// Records when entries were last served and how many times since the
    /// last call (batched by the caller); an earlier time never replaces a
    /// later one.
    async fn touch(&self, accesses: &[Served]) -> Result<(), StoreError>;
    /// How many times each of `keys` was served from the cache, and when
    /// last (as [`Index::touch`] recorded them); keys without a row, or
    /// never served, are left out.
    async fn served(&self, keys: &[String]) -> Result<HashMap<String, (u64, i64)>, StoreError>;
    /// Up to `limit` entries that are not local, of `remote` (or every
    /// remote), least recently served first (by access time, then key),
    /// from just after `after`: the [`Cold::cursor`] of the last entry a
    /// walk has seen, so that a walk reads each row once.
    async fn coldest(
        &self,
        remote: Option<&str>,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<Cold>, StoreError>;
    /// Whether any entry's bytes are `blob` (content-addressed blobs are shared).
    async fn blob_in_use(&self, blob: &str) -> Result<bool, StoreError>;
    /// Records that every entry of `remote` under `prefix` was served at `at`
    /// (a Docker image: its layers age with its manifests).
    async fn touch_prefix(&self, remote: &str, prefix: &str, at: i64) -> Result<(), StoreError>;
    /// Whether `remote` has any entry whose path starts with `prefix`.
    async fn has_prefix(&self, remote: &str, prefix: &str) -> Result<bool, StoreError>;
    /// Up to `limit` rows in blob order, ties by key, after the row
    /// `after` (a blob and a key): the clean-up reads the whole index this
    /// way, a page at a time, beside the blob store's sorted listing. Blobs
    /// compare bytewise, as [`BlobStore::list`] sorts them.
    async fn blob_rows(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<BlobRow>, StoreError>;
    /// How many entries, of how many bytes, each remote has (remotes with
    /// none are left out). Kept as entries come and go: reading it costs
    /// one row per remote, however many entries there are.
    async fn usage(&self) -> Result<Vec<Usage>, StoreError>;
    /// Whether the index answers at all (for health and readiness).
    async fn ping(&self) -> Result<(), StoreError> {
        self.get("\u{1f}ping").await.map(|_| ())
    }
    /// Whether a new connection to the index can be opened now, asked
    /// without waiting for a pool (which retries a refused connection until
    /// its acquire timeout): [`StoreError::Unreachable`] when it is refused,
    /// reset or closed; any other error when that cannot be told. An index
    /// with no connection to lose answers `Ok`.
    async fn connects(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// An entry as eviction walks them, least recently served first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cold {
    /// The entry.
    pub entry: Entry,
    /// When it was last served (when it was stored, if never since).
    pub last_access_ms: i64,
}

impl Cold {
    /// Where a walk that has seen this entry goes on from.
    pub fn cursor(&self) -> (i64, &str) {
        (self.last_access_ms, &self.entry.key)
    }
}

/// One index row as the clean-up sees it: which blob an entry points at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlobRow {
    /// The blob key.
    pub blob: String,
    /// The entry's key.
    pub key: String,
    /// When the entry was stored.
    pub cached_at_ms: i64,
}

/// What one remote holds in the index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// The remote's name.
    pub remote: String,
    /// How many entries (each variant and alias counts).
    pub entries: u64,
    /// Their sizes, summed (a blob shared by several entries counts for each).
    pub bytes: u64,
}

/// What a flush did.
#[derive(Debug, Default)]
pub struct Flushed {
    /// How many mutable entries were expired.
    pub expired: u64,
    /// The immutable entries removed (their blobs are still to be deleted).
    pub removed: Vec<Entry>,
}

/// The blob store.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Makes the complete file at `file` (of `size` bytes) durable under `key`.
    /// The file is consumed: moved or copied, then gone from `file`.
    async fn put_file(&self, key: &str, file: &Path, size: u64) -> Result<(), StoreError>;
    /// Streams the blob under `key`, or the `range` of it.
    async fn open(&self, key: &str, range: Option<Range<u64>>) -> Result<BlobStream, StoreError>;
    /// Like [`BlobStore::open`], with the blob's whole length when the store
    /// tells it with the first answer (an object store's `Content-Length` or
    /// `Content-Range`), so that a copy of the whole can be kept while it
    /// streams. The default tells nothing.
    async fn open_sized(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(BlobStream, Option<u64>), StoreError> {
        Ok((self.open(key, range).await?, None))
    }
    /// Deletes the blob under `key`; deleting a missing blob is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Every committed blob, with when it was written, in bytewise order of
    /// key, as a stream: the clean-up never holds the whole listing.
    async fn list(&self) -> Result<BlobList, StoreError>;
    /// Whether a blob is stored under `key` (asked before anything is removed
    /// on the strength of a listing).
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// Removes what interrupted writes left behind that is older than `age`
    /// (temporary files, unfinished multipart uploads); answers how many.
    async fn clean_up(&self, age: std::time::Duration) -> Result<u64, StoreError>;
    /// Whether the store can be used at all (for health and readiness).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// An index and a blob store together: what the cache layers are given.
/// Cheap to clone (one reference count): every layer of a stack holds one,
/// and stacks are cloned for every request.
#[derive(Clone)]
pub struct Store(std::sync::Arc<StoreParts>);

/// What a [`Store`] is made of; its fields are reached through the store.
pub struct StoreParts {
    /// The index of entries.
    pub index: std::sync::Arc<dyn Index>,
    /// The bytes.
    pub blobs: std::sync::Arc<dyn BlobStore>,
    /// What was served (for eviction) and what is being read.
    pub access: std::sync::Arc<AccessLog>,
    /// Metadata declared out of date while its fill may still be in flight.
    pub marks: std::sync::Arc<ExpiryMarks>,
    /// Bytes committed since eviction last measured the store.
    pub growth: std::sync::Arc<Growth>,
}

impl std::ops::Deref for Store {
    type Target = StoreParts;

    fn deref(&self) -> &StoreParts {
        &self.0
    }
}

impl Store {
    /// A store of `index` and `blobs`.
    pub fn new(index: std::sync::Arc<dyn Index>, blobs: std::sync::Arc<dyn BlobStore>) -> Self {
        Self(std::sync::Arc::new(StoreParts {
            index,
            blobs,
            access: std::sync::Arc::default(),
            marks: std::sync::Arc::default(),
            growth: std::sync::Arc::default(),
        }))
    }

    /// An in-memory store, for tests and examples.
    pub fn memory() -> Self {
        Self::new(
            std::sync::Arc::new(memory::MemoryIndex::new()),
            std::sync::Arc::new(memory::MemoryBlobs::new()),
        )
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}
