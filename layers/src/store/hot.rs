//! A bounded in-memory index of hot entries in front of another index, so a
//! hit needs no database round trip.
//!
//! Writes go to the backing index first and then here; a replaced, refreshed
//! or removed entry is updated or dropped here as it is written, so the hot
//! copy is never staler than the write path (entries carry their expiry, so
//! freshness is still checked on every hit). Replicas drop each other's hot
//! copies through [`HotIndex::invalidate`].
//!
//! A little over 400 lines: one `impl Index` that must forward every method
//! of the trait, and the tests' stand-in index that must implement it too.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;

use super::{BlobRow, Cold, Entry, Flushed, Index, Refresh, Served, StoreError, Usage};
use crate::coord::Coordinator;

/// An index that keeps up to `capacity` recently used entries in memory.
pub struct HotIndex {
    inner: Arc<dyn Index>,
    hot: Mutex<Hot>,
    capacity: usize,
    coordinator: Option<Arc<dyn Coordinator>>,
}

#[derive(Default)]
struct Hot {
    entries: HashMap<String, (Entry, u64)>,
    tick: u64,
}

impl Hot {
    fn touch(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn insert(&mut self, entry: Entry, capacity: usize) {
        let tick = self.touch();
        self.entries.insert(entry.key.clone(), (entry, tick));
        if self.entries.len() > capacity {
            // Drop the least recently used eighth at once: amortised, and no
            // per-hit bookkeeping beyond a counter.
            let mut ticks: Vec<u64> = self.entries.values().map(|(_, t)| *t).collect();
            let cut = (capacity / 8).max(1);
            ticks.select_nth_unstable(cut - 1);
            let threshold = ticks[cut - 1];
            self.entries.retain(|_, (_, t)| *t > threshold);
        }
    }
}

impl HotIndex {
    /// Keeps up to `capacity` entries of `inner` in memory.
    pub fn new(inner: Arc<dyn Index>, capacity: usize) -> Self {
        Self { inner, hot: Mutex::new(Hot::default()), capacity: capacity.max(1), coordinator: None }
    }

    /// Tells other replicas (through `coordinator`) of every change written
    /// here, so they drop their hot copies.
    pub fn with_coordinator(mut self, coordinator: Arc<dyn Coordinator>) -> Self {
        self.coordinator = Some(coordinator);
        self
    }

    /// Tells other replicas of a write, in the background: a commit does
    /// not wait for Redis.
    fn announce(&self, key: Option<&str>) {
        if let Some(coord) = self.coordinator.clone() {
            let key = key.map(str::to_owned);
            tokio::spawn(async move { coord.invalidate(key.as_deref()).await });
        }
    }

    /// Tells other replicas of a removal and waits until they have acted on
    /// it: once a purge or a flush has answered, no replica serves what it
    /// removed from a memory copy.
    async fn announce_now(&self, key: Option<&str>) {
        if let Some(coord) = &self.coordinator {
            coord.invalidate_everywhere(key).await;
        }
    }

    /// Forgets the hot copy of `key` (another replica changed it).
    pub fn invalidate(&self, key: &str) {
        self.hot.lock().expect("hot index lock").entries.remove(key);
    }

    /// Forgets every hot copy.
    pub fn clear(&self) {
        self.hot.lock().expect("hot index lock").entries.clear();
    }

    /// How many entries are hot.
    pub fn len(&self) -> usize {
        self.hot.lock().expect("hot index lock").entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Index for HotIndex {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        {
            let mut hot = self.hot.lock().expect("hot index lock");
            let tick = hot.touch();
            if let Some((entry, used)) = hot.entries.get_mut(key) {
                *used = tick;
                return Ok(Some(entry.clone()));
            }
        }
        let found = self.inner.get(key).await?;
        if let Some(entry) = &found {
            let mut hot = self.hot.lock().expect("hot index lock");
            // A write that raced this read has already put the newer entry here.
            if !hot.entries.contains_key(key) {
                hot.insert(entry.clone(), self.capacity);
            }
        }
        Ok(found)
    }

    async fn put(&self, entry: Entry) -> Result<Option<Entry>, StoreError> {
        let key = entry.key.clone();
        match self.inner.put(entry.clone()).await {
            Ok(old) => {
                self.hot.lock().expect("hot index lock").insert(entry, self.capacity);
                self.announce(Some(&key));
                Ok(old)
            }
            Err(e) => {
                self.invalidate(&key);
                Err(e)
            }
        }
    }

    async fn remove(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.invalidate(key);
        let removed = self.inner.remove(key).await;
        self.invalidate(key);
        self.announce_now(Some(key)).await;
        removed
    }

    async fn remove_if(&self, key: &str, blob: &str) -> Result<Option<Entry>, StoreError> {
        // The copy here may be older than the row: forget it either way, so
        // that the next read sees what the backend has.
        self.invalidate(key);
        let removed = self.inner.remove_if(key, blob).await;
        self.invalidate(key);
        if matches!(removed, Ok(Some(_))) {
            self.announce(Some(key));
        }
        removed
    }

    async fn refresh(&self, key: &str, blob: &str, refresh: &Refresh) -> Result<bool, StoreError> {
        let done = self.inner.refresh(key, blob, refresh).await;
        let mut hot = self.hot.lock().expect("hot index lock");
        match (&done, hot.entries.get_mut(key)) {
            (Ok(true), Some((entry, _))) if entry.blob == blob => {
                *entry = entry.clone().refreshed(refresh);
            }
            _ => {
                hot.entries.remove(key);
            }
        }
        drop(hot);
        if matches!(done, Ok(true)) {
            self.announce(Some(key));
        }
        done
    }

    async fn list(&self, remote: &str, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.inner.list(remote, after, limit).await
    }

    async fn usage(&self) -> Result<Vec<Usage>, StoreError> {
        self.inner.usage().await
    }

    async fn find_path(&self, remote: &str, path: &str) -> Result<Vec<Entry>, StoreError> {
        self.inner.find_path(remote, path).await
    }

    async fn blob_rows(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<BlobRow>, StoreError> {
        self.inner.blob_rows(after, limit).await
    }

    async fn touch(&self, accesses: &[Served]) -> Result<(), StoreError> {
        self.inner.touch(accesses).await
    }

    async fn served(&self, keys: &[String]) -> Result<HashMap<String, (u64, i64)>, StoreError> {
        self.inner.served(keys).await
    }

    async fn coldest(
        &self,
        remote: Option<&str>,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<Cold>, StoreError> {
        self.inner.coldest(remote, after, limit).await
    }

    async fn blob_in_use(&self, blob: &str) -> Result<bool, StoreError> {
        self.inner.blob_in_use(blob).await
    }

    async fn touch_prefix(&self, remote: &str, prefix: &str, at: i64) -> Result<(), StoreError> {
        self.inner.touch_prefix(remote, prefix, at).await
    }

    async fn has_prefix(&self, remote: &str, prefix: &str) -> Result<bool, StoreError> {
        self.inner.has_prefix(remote, prefix).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn connects(&self) -> Result<(), StoreError> {
        self.inner.connects().await
    }

    async fn expire_under(
        &self,
        remote: &str,
        dir: &str,
        keep: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let expired = self.inner.expire_under(remote, dir, keep, now_ms).await;
        self.clear();
        self.announce(None);
        expired
    }

    async fn flush(
        &self,
        remote: Option<&str>,
        drop_immutable: bool,
        now_ms: i64,
    ) -> Result<Flushed, StoreError> {
        let flushed = self.inner.flush(remote, drop_immutable, now_ms).await;
        // Whatever happened, nothing hot may be trusted any more.
        self.clear();
        self.announce_now(None).await;
        flushed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::store::{memory::MemoryIndex, EntryClass};

    /// Counts reads that reach the backing index.
    struct Counting {
        inner: MemoryIndex,
        gets: AtomicUsize,
    }

    #[async_trait]
    impl Index for Counting {
        async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            self.inner.get(key).await
        }
        async fn put(&self, entry: Entry) -> Result<Option<Entry>, StoreError> {
            self.inner.put(entry).await
        }
        async fn remove(&self, key: &str) -> Result<Option<Entry>, StoreError> {
            self.inner.remove(key).await
        }
        async fn remove_if(&self, key: &str, blob: &str) -> Result<Option<Entry>, StoreError> {
            self.inner.remove_if(key, blob).await
        }
        async fn refresh(&self, key: &str, blob: &str, refresh: &Refresh) -> Result<bool, StoreError> {
            self.inner.refresh(key, blob, refresh).await
        }
        async fn list(
            &self,
            remote: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<Entry>, StoreError> {
            self.inner.list(remote, after, limit).await
        }
        async fn flush(&self, remote: Option<&str>, all: bool, now: i64) -> Result<Flushed, StoreError> {
            self.inner.flush(remote, all, now).await
        }
        async fn usage(&self) -> Result<Vec<Usage>, StoreError> {
            self.inner.usage().await
        }
        async fn find_path(&self, remote: &str, path: &str) -> Result<Vec<Entry>, StoreError> {
            self.inner.find_path(remote, path).await
        }
        async fn blob_rows(
            &self,
            after: Option<(&str, &str)>,
            limit: usize,
        ) -> Result<Vec<BlobRow>, StoreError> {
            self.inner.blob_rows(after, limit).await
        }
        async fn touch(&self, accesses: &[Served]) -> Result<(), StoreError> {
            self.inner.touch(accesses).await
        }
        async fn served(&self, keys: &[String]) -> Result<HashMap<String, (u64, i64)>, StoreError> {
            self.inner.served(keys).await
        }
        async fn coldest(
            &self,
            remote: Option<&str>,
            after: Option<(i64, &str)>,
            limit: usize,
        ) -> Result<Vec<Cold>, StoreError> {
            self.inner.coldest(remote, after, limit).await
        }
        async fn blob_in_use(&self, blob: &str) -> Result<bool, StoreError> {
            self.inner.blob_in_use(blob).await
        }
        async fn touch_prefix(&self, remote: &str, prefix: &str, at: i64) -> Result<(), StoreError> {
            self.inner.touch_prefix(remote, prefix, at).await
        }
        async fn has_prefix(&self, remote: &str, prefix: &str) -> Result<bool, StoreError> {
            self.inner.has_prefix(remote, prefix).await
        }
        async fn expire_under(&self, r: &str, d: &str, k: &str, now: i64) -> Result<u64, StoreError> {
            self.inner.expire_under(r, d, k, now).await
        }
    }

    fn entry(key: &str, blob: &str) -> Entry {
        Entry {
            key: key.into(),
            remote: "r".into(),
            path: key.into(),
            blob: blob.into(),
            size: 1,
            class: EntryClass::Mutable,
            headers: vec![],
            cached_at_ms: 0,
            expires_at_ms: Some(10),
            policy: None,
        }
    }

    fn setup(capacity: usize) -> (Arc<Counting>, HotIndex) {
        let backing = Arc::new(Counting { inner: MemoryIndex::new(), gets: AtomicUsize::new(0) });
        let hot = HotIndex::new(backing.clone(), capacity);
        (backing, hot)
    }

    #[tokio::test]
    async fn hits_are_answered_from_memory() {
        let (backing, hot) = setup(10);
        hot.put(entry("k", "b1")).await.unwrap();
        for _ in 0..5 {
            assert_eq!(hot.get("k").await.unwrap().unwrap().blob, "b1");
        }
        assert_eq!(backing.gets.load(Ordering::SeqCst), 0);
        // Read-through for keys written elsewhere (another process).
        backing.inner.put(entry("other", "b9")).await.unwrap();
        assert_eq!(hot.get("other").await.unwrap().unwrap().blob, "b9");
        assert_eq!(hot.get("other").await.unwrap().unwrap().blob, "b9");
        assert_eq!(backing.gets.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn replace_refresh_and_remove_keep_the_hot_copy_correct() {
        let (_, hot) = setup(10);
        hot.put(entry("k", "b1")).await.unwrap();
        hot.put(entry("k", "b2")).await.unwrap();
        assert_eq!(hot.get("k").await.unwrap().unwrap().blob, "b2");

        let refresh = Refresh { expires_at_ms: Some(500), revalidated: None };
        assert!(!hot.refresh("k", "b1", &refresh).await.unwrap());
        assert_eq!(hot.get("k").await.unwrap().unwrap().expires_at_ms, Some(10));
        assert!(hot.refresh("k", "b2", &refresh).await.unwrap());
        assert_eq!(hot.get("k").await.unwrap().unwrap().expires_at_ms, Some(500));

        hot.remove("k").await.unwrap();
        assert_eq!(hot.get("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn stays_within_capacity_and_keeps_recently_used_entries() {
        let (_, hot) = setup(16);
        hot.put(entry("keep", "b")).await.unwrap();
        for i in 0..100 {
            hot.get("keep").await.unwrap();
            hot.put(entry(&format!("k{i}"), "b")).await.unwrap();
            assert!(hot.len() <= 16);
        }
        assert!(hot.hot.lock().unwrap().entries.contains_key("keep"));
    }
}
