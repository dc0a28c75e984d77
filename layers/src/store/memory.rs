//! In-memory index and blob store, for tests and examples.

use std::{
    collections::HashMap,
    ops::Range,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream;

use super::{
    BlobList, BlobRow, BlobStore, BlobStream, Cold, Entry, EntryClass, Flushed, Index, Refresh, Served,
    StoreError, Usage,
};

/// An index kept in a `HashMap`.
#[derive(Debug, Default)]
pub struct MemoryIndex {
    entries: Mutex<HashMap<String, Entry>>,
    accessed: Mutex<HashMap<String, i64>>,
    /// Times served and when last, per key.
    served: Mutex<HashMap<String, (u64, i64)>>,
    cold_rows: AtomicUsize,
    /// Called with each entry before it is put (a test's way into the
    /// moment a row is on its way).
    before_put: Mutex<Option<BeforePut>>,
}

struct BeforePut(Box<dyn Fn(&Entry) + Send + Sync>);

impl std::fmt::Debug for BeforePut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforePut")
    }
}

impl MemoryIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("index lock").len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `hook` with each entry before it is put.
    pub fn before_put(&self, hook: impl Fn(&Entry) + Send + Sync + 'static) {
        *self.before_put.lock().expect("hook lock") = Some(BeforePut(Box::new(hook)));
    }

    /// How many rows [`Index::coldest`] has answered in all: what eviction
    /// walks have read.
    pub fn coldest_rows_read(&self) -> usize {
        self.cold_rows.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Index for MemoryIndex {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        Ok(self.entries.lock().expect("index lock").get(key).cloned())
    }

    async fn put(&self, entry: Entry) -> Result<Option<Entry>, StoreError> {
        if let Some(hook) = &*self.before_put.lock().expect("hook lock") {
            (hook.0)(&entry);
        }
        let mut entries = self.entries.lock().expect("index lock");
        Ok(entries.insert(entry.key.clone(), entry))
    }

    async fn remove(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        Ok(self.entries.lock().expect("index lock").remove(key))
    }

    async fn remove_if(&self, key: &str, blob: &str) -> Result<Option<Entry>, StoreError> {
        let mut entries = self.entries.lock().expect("index lock");
        if entries.get(key).is_some_and(|e| e.blob == blob) {
            return Ok(entries.remove(key));
        }
        Ok(None)
    }

    async fn refresh(&self, key: &str, blob: &str, refresh: &Refresh) -> Result<bool, StoreError> {
        let mut entries = self.entries.lock().expect("index lock");
        match entries.get_mut(key) {
            Some(entry) if entry.blob == blob => {
                *entry = entry.clone().refreshed(refresh);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn touch(&self, accesses: &[Served]) -> Result<(), StoreError> {
        let entries = self.entries.lock().expect("index lock");
        let mut accessed = self.accessed.lock().expect("access lock");
        let mut served = self.served.lock().expect("served lock");
        for (key, at, times) in accesses.iter().filter(|(k, ..)| entries.contains_key(k)) {
            let last = accessed.entry(key.clone()).or_insert(*at);
            *last = (*last).max(*at);
            if *times > 0 {
                let (count, last) = served.entry(key.clone()).or_insert((0, *at));
                *count += times;
                *last = (*last).max(*at);
            }
        }
        Ok(())
    }

    async fn served(&self, keys: &[String]) -> Result<HashMap<String, (u64, i64)>, StoreError> {
        let served = self.served.lock().expect("served lock");
        Ok(keys.iter().filter_map(|k| served.get(k).map(|s| (k.clone(), *s))).collect())
    }

    async fn coldest(
        &self,
        remote: Option<&str>,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<Cold>, StoreError> {
        let entries = self.entries.lock().expect("index lock");
        let accessed = self.accessed.lock().expect("access lock");
        let mut cold: Vec<Cold> = entries
            .values()
            .filter(|e| e.class != EntryClass::Local && remote.is_none_or(|r| e.remote == r))
            .map(|e| Cold {
                last_access_ms: accessed.get(&e.key).copied().unwrap_or(e.cached_at_ms).max(e.cached_at_ms),
                entry: e.clone(),
            })
            .filter(|c| after.is_none_or(|after| c.cursor() > after))
            .collect();
        cold.sort_by(|a, b| a.cursor().cmp(&b.cursor()));
        cold.truncate(limit);
        self.cold_rows.fetch_add(cold.len(), Ordering::Relaxed);
        Ok(cold)
    }

    async fn touch_prefix(&self, remote: &str, prefix: &str, at: i64) -> Result<(), StoreError> {
        // Access times only: an image's layers age with it, uncounted.
        let keys: Vec<Served> = {
            let entries = self.entries.lock().expect("index lock");
            entries
                .values()
                .filter(|e| e.remote == remote && e.path.starts_with(prefix))
                .map(|e| (e.key.clone(), at, 0))
                .collect()
        };
        self.touch(&keys).await
    }

    async fn blob_in_use(&self, blob: &str) -> Result<bool, StoreError> {
        Ok(self.entries.lock().expect("index lock").values().any(|e| e.blob == blob))
    }

    async fn has_prefix(&self, remote: &str, prefix: &str) -> Result<bool, StoreError> {
        let entries = self.entries.lock().expect("index lock");
        Ok(entries.values().any(|e| e.remote == remote && e.path.starts_with(prefix)))
    }

    async fn blob_rows(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<BlobRow>, StoreError> {
        let entries = self.entries.lock().expect("index lock");
        let mut rows: Vec<BlobRow> = entries
            .values()
            .filter(|e| after.is_none_or(|a| (e.blob.as_str(), e.key.as_str()) > a))
            .map(|e| BlobRow { blob: e.blob.clone(), key: e.key.clone(), cached_at_ms: e.cached_at_ms })
            .collect();
        rows.sort();
        rows.truncate(limit);
        Ok(rows)
    }

    async fn find_path(&self, remote: &str, path: &str) -> Result<Vec<Entry>, StoreError> {
        let entries = self.entries.lock().expect("index lock");
        Ok(entries.values().filter(|e| e.remote == remote && e.path == path).cloned().collect())
    }

    async fn usage(&self) -> Result<Vec<Usage>, StoreError> {
        let entries = self.entries.lock().expect("index lock");
        let mut by_remote = std::collections::BTreeMap::<String, Usage>::new();
        for e in entries.values() {
            let usage = by_remote
                .entry(e.remote.clone())
                .or_insert_with(|| Usage { remote: e.remote.clone(), ..Usage::default() });
            usage.entries += 1;
            usage.bytes += e.size;
        }
        Ok(by_remote.into_values().collect())
    }

    async fn list(&self, remote: &str, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let entries = self.entries.lock().expect("index lock");
        let mut page: Vec<Entry> = entries
            .values()
            .filter(|e| e.remote == remote && after.is_none_or(|a| e.path.as_str() > a))
            .cloned()
            .collect();
        page.sort_by(|a, b| a.path.cmp(&b.path));
        page.truncate(limit);
        Ok(page)
    }

    async fn expire_under(
        &self,
        remote: &str,
        dir: &str,
        keep: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut entries = self.entries.lock().expect("index lock");
        let mut expired = 0;
        for e in entries.values_mut() {
            if e.remote == remote
                && e.class == EntryClass::Mutable
                && e.key != keep
                && e.path.starts_with(dir)
            {
                e.expires_at_ms = Some(now_ms);
                expired += 1;
            }
        }
        Ok(expired)
    }

    async fn flush(
        &self,
        remote: Option<&str>,
        drop_immutable: bool,
        now_ms: i64,
    ) -> Result<Flushed, StoreError> {
        let mut entries = self.entries.lock().expect("index lock");
        let mut flushed = Flushed::default();
        entries.retain(|_, e| {
            if remote.is_some_and(|r| r != e.remote) {
                return true;
            }
            match e.class {
                EntryClass::Mutable => {
                    e.expires_at_ms = Some(now_ms);
                    flushed.expired += 1;
                    true
                }
                EntryClass::Immutable if drop_immutable => {
                    flushed.removed.push(e.clone());
                    false
                }
                _ => true,
            }
        });
        Ok(flushed)
    }
}

/// A blob store kept in a `HashMap`.
#[derive(Debug, Default)]
pub struct MemoryBlobs {
    blobs: Mutex<HashMap<String, Bytes>>,
}

impl MemoryBlobs {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes under `key`.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.blobs.lock().expect("blob lock").get(key).cloned()
    }

    /// How many blobs there are.
    pub fn len(&self) -> usize {
        self.blobs.lock().expect("blob lock").len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `bytes` under `key` directly.
    pub fn insert(&self, key: &str, bytes: impl Into<Bytes>) {
        self.blobs.lock().expect("blob lock").insert(key.to_owned(), bytes.into());
    }
}

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn put_file(&self, key: &str, file: &Path, size: u64) -> Result<(), StoreError> {
        let bytes = tokio::fs::read(file).await?;
        tokio::fs::remove_file(file).await?;
        if bytes.len() as u64 != size {
            return Err(StoreError::Backend(format!("file has {} bytes, expected {size}", bytes.len())));
        }
        self.insert(key, bytes);
        Ok(())
    }

    async fn open(&self, key: &str, range: Option<Range<u64>>) -> Result<BlobStream, StoreError> {
        let bytes = self.get(key).ok_or(StoreError::NotFound)?;
        let bytes = match range {
            Some(r) => bytes.slice(r.start as usize..(r.end as usize).min(bytes.len())),
            None => bytes,
        };
        Ok(Box::pin(stream::once(async move { Ok(bytes) })))
    }

    async fn open_sized(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(BlobStream, Option<u64>), StoreError> {
        let len = self.get(key).ok_or(StoreError::NotFound)?.len() as u64;
        Ok((self.open(key, range).await?, Some(len)))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.blobs.lock().expect("blob lock").remove(key);
        Ok(())
    }

    /// Memory blobs keep no time: each reports the epoch.
    async fn list(&self) -> Result<BlobList, StoreError> {
        let mut keys: Vec<String> = self.blobs.lock().expect("blob lock").keys().cloned().collect();
        keys.sort();
        Ok(Box::pin(stream::iter(keys.into_iter().map(|k| Ok((k, std::time::UNIX_EPOCH))))))
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.blobs.lock().expect("blob lock").contains_key(key))
    }

    async fn clean_up(&self, _age: std::time::Duration) -> Result<u64, StoreError> {
        Ok(0)
    }
}
