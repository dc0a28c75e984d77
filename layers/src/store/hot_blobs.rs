//! A bounded in-memory copy of small, recently served blobs in front of
//! another blob store, so a hit on a small artifact opens no file and sends
//! no object-store request.
//!
//! A copy here is never stale: a blob key never changes its bytes (a fill
//! writes under a key of its own, and a content address names its bytes),
//! and a blob deleted or written through this store is dropped here first.
//! A read that raced such a change is not kept. Only a blob's first bytes are
//! copied (a prefix, read from its start), so a range past what is held goes
//! to the store below.
//!
//! What this store cannot see is another process deleting a blob (a replica
//! purging an entry in a shared S3 bucket). Where that can happen, copies are
//! kept at most [`HotBlobs::with_max_age`]: past it the store below is asked
//! again, and a missing blob is found missing.

use std::{
    collections::HashMap,
    ops::Range,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{BlobList, BlobStore, BlobStream, StoreError};

/// Blobs up to this size are kept in memory when served.
pub const MAX_OBJECT: u64 = 256 * 1024;

/// A blob store that keeps up to `capacity` bytes of small blobs in memory.
pub struct HotBlobs {
    inner: Arc<dyn BlobStore>,
    state: Mutex<State>,
    capacity: usize,
    max_age: Option<Duration>,
}

#[derive(Default)]
struct State {
    /// A prefix of each blob (the whole blob when it is small), when it was
    /// last used, and when it was read from the store below.
    blobs: HashMap<String, (Bytes, u64, Instant)>,
    bytes: usize,
    tick: u64,
    /// Bumped by every delete and write: a read that began before one is
    /// not kept.
    epoch: u64,
}

impl State {
    fn remove(&mut self, key: &str) {
        if let Some((bytes, ..)) = self.blobs.remove(key) {
            self.bytes -= bytes.len();
        }
        self.epoch += 1;
    }

    fn insert(&mut self, key: &str, bytes: Bytes, capacity: usize) {
        self.tick += 1;
        let tick = self.tick;
        self.bytes += bytes.len();
        if let Some((old, ..)) = self.blobs.insert(key.to_owned(), (bytes, tick, Instant::now())) {
            self.bytes -= old.len();
        }
        while self.bytes > capacity && !self.blobs.is_empty() {
            // Drop the least recently used eighth at once: amortised, and no
            // per-hit bookkeeping beyond a counter.
            let mut ticks: Vec<u64> = self.blobs.values().map(|(_, t, _)| *t).collect();
            let cut = (ticks.len() / 8).max(1);
            ticks.select_nth_unstable(cut - 1);
            let threshold = ticks[cut - 1];
            let mut freed = 0;
            self.blobs.retain(|_, (b, t, _)| {
                let keep = *t > threshold;
                if !keep {
                    freed += b.len();
                }
                keep
            });
            self.bytes -= freed;
        }
    }
}

impl HotBlobs {
    /// Keeps up to `capacity` bytes of `inner`'s small blobs in memory.
    pub fn new(inner: Arc<dyn BlobStore>, capacity: usize) -> Self {
        Self { inner, state: Mutex::new(State::default()), capacity, max_age: None }
    }

    /// Keeps each copy at most `max_age`: for a store that other processes
    /// delete from.
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// How many blobs, and how many bytes, are held now.
    pub fn usage(&self) -> (usize, usize) {
        let state = self.state.lock().expect("hot blobs lock");
        (state.blobs.len(), state.bytes)
    }

    fn lookup(&self, key: &str, range: &Range<u64>) -> Option<Bytes> {
        let mut state = self.state.lock().expect("hot blobs lock");
        state.tick += 1;
        let tick = state.tick;
        let (bytes, used, read_at) = state.blobs.get_mut(key)?;
        if self.max_age.is_some_and(|age| read_at.elapsed() > age) {
            state.remove(key);
            return None;
        }
        if range.end > bytes.len() as u64 || range.start > range.end {
            return None;
        }
        *used = tick;
        Some(bytes.slice(range.start as usize..range.end as usize))
    }
}

#[async_trait]
impl BlobStore for HotBlobs {
    async fn put_file(&self, key: &str, file: &Path, size: u64) -> Result<(), StoreError> {
        self.state.lock().expect("hot blobs lock").remove(key);
        self.inner.put_file(key, file, size).await
    }

    async fn open(&self, key: &str, range: Option<Range<u64>>) -> Result<BlobStream, StoreError> {
        let range = match range {
            Some(range) if self.capacity > 0 => range,
            range => return self.inner.open(key, range).await,
        };
        if let Some(bytes) = self.lookup(key, &range) {
            return Ok(futures_util::stream::once(async move { Ok(bytes) }).boxed());
        }
        if range.start != 0 || range.end == 0 || range.end > MAX_OBJECT {
            return self.inner.open(key, Some(range)).await;
        }
        // A small blob read from its start: read it whole here, keep it.
        let epoch = self.state.lock().expect("hot blobs lock").epoch;
        let mut stream = self.inner.open(key, Some(range.clone())).await?;
        let mut read = BytesMut::with_capacity(range.end as usize);
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => read.extend_from_slice(&chunk),
                Err(e) => {
                    // What was read, then the error: the body breaks off.
                    let read = read.freeze();
                    return Ok(futures_util::stream::iter([Ok(read), Err(e)]).boxed());
                }
            }
        }
        let read = read.freeze();
        if read.len() as u64 == range.end {
            let mut state = self.state.lock().expect("hot blobs lock");
            if state.epoch == epoch {
                state.insert(key, read.clone(), self.capacity);
            }
        }
        Ok(futures_util::stream::once(async move { Ok(read) }).boxed())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.state.lock().expect("hot blobs lock").remove(key);
        let deleted = self.inner.delete(key).await;
        // A read that began before the delete and ends after it is not kept.
        self.state.lock().expect("hot blobs lock").remove(key);
        deleted
    }

    async fn list(&self) -> Result<BlobList, StoreError> {
        self.inner.list().await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.exists(key).await
    }

    async fn clean_up(&self, age: std::time::Duration) -> Result<u64, StoreError> {
        self.inner.clean_up(age).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::store::memory::MemoryBlobs;

    /// Counts the opens that reach the store below.
    struct Counting {
        inner: MemoryBlobs,
        opens: AtomicUsize,
    }

    #[async_trait]
    impl BlobStore for Counting {
        async fn put_file(&self, key: &str, file: &Path, size: u64) -> Result<(), StoreError> {
            self.inner.put_file(key, file, size).await
        }
        async fn open(&self, key: &str, range: Option<Range<u64>>) -> Result<BlobStream, StoreError> {
            self.opens.fetch_add(1, Ordering::SeqCst);
            self.inner.open(key, range).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.inner.delete(key).await
        }
        async fn list(&self) -> Result<BlobList, StoreError> {
            self.inner.list().await
        }
        async fn exists(&self, key: &str) -> Result<bool, StoreError> {
            self.inner.exists(key).await
        }
        async fn clean_up(&self, age: std::time::Duration) -> Result<u64, StoreError> {
            self.inner.clean_up(age).await
        }
    }

    fn fixture(capacity: usize) -> (Arc<Counting>, HotBlobs) {
        let below = Arc::new(Counting { inner: MemoryBlobs::new(), opens: AtomicUsize::new(0) });
        let hot = HotBlobs::new(below.clone(), capacity);
        (below, hot)
    }

    async fn read(store: &dyn BlobStore, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        let mut stream = store.open(key, Some(range)).await?;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_small_blob_is_read_from_below_once_then_from_memory() {
        let (below, hot) = fixture(1 << 20);
        below.inner.insert("a", "hello world");
        assert_eq!(read(&hot, "a", 0..11).await.unwrap(), b"hello world");
        assert_eq!(read(&hot, "a", 0..11).await.unwrap(), b"hello world");
        assert_eq!(read(&hot, "a", 6..11).await.unwrap(), b"world", "ranges are cut from the copy");
        assert_eq!(below.opens.load(Ordering::SeqCst), 1);
        assert_eq!(hot.usage(), (1, 11));
    }

    #[tokio::test]
    async fn delete_and_write_drop_the_copy() {
        let (below, hot) = fixture(1 << 20);
        below.inner.insert("a", "v1");
        read(&hot, "a", 0..2).await.unwrap();
        hot.delete("a").await.unwrap();
        assert_eq!(hot.usage(), (0, 0));
        assert!(matches!(read(&hot, "a", 0..2).await, Err(StoreError::NotFound)), "gone below and here");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "v2").unwrap();
        below.inner.insert("b", "v1");
        read(&hot, "b", 0..2).await.unwrap();
        hot.put_file("b", &file, 2).await.unwrap();
        assert_eq!(read(&hot, "b", 0..2).await.unwrap(), b"v2");
    }

    #[tokio::test]
    async fn large_blobs_and_ranges_not_from_the_start_go_below_every_time() {
        let (below, hot) = fixture(8 << 20);
        let big = vec![7u8; MAX_OBJECT as usize + 1];
        below.inner.insert("big", big.clone());
        below.inner.insert("small", "abcdef");
        for _ in 0..2 {
            assert_eq!(read(&hot, "big", 0..big.len() as u64).await.unwrap(), big);
            assert_eq!(read(&hot, "small", 2..4).await.unwrap(), b"cd");
        }
        assert_eq!(below.opens.load(Ordering::SeqCst), 4);
        assert_eq!(hot.usage(), (0, 0));
        // A prefix held serves ranges inside it only.
        read(&hot, "small", 0..3).await.unwrap();
        assert_eq!(read(&hot, "small", 1..3).await.unwrap(), b"bc");
        assert_eq!(below.opens.load(Ordering::SeqCst), 5);
        assert_eq!(read(&hot, "small", 0..6).await.unwrap(), b"abcdef");
        assert_eq!(below.opens.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn memory_stays_within_capacity_keeping_the_recently_used() {
        let (below, hot) = fixture(10_000);
        for i in 0..40 {
            below.inner.insert(&format!("b{i}"), vec![i as u8; 1000]);
        }
        for i in 0..40 {
            read(&hot, &format!("b{i}"), 0..1000).await.unwrap();
            // b0 stays in use.
            read(&hot, "b0", 0..1000).await.unwrap();
            assert!(hot.usage().1 <= 10_000, "{:?}", hot.usage());
        }
        let opens = below.opens.load(Ordering::SeqCst);
        read(&hot, "b0", 0..1000).await.unwrap();
        read(&hot, "b39", 0..1000).await.unwrap();
        assert_eq!(below.opens.load(Ordering::SeqCst), opens, "the recently used are held");
    }

    #[tokio::test]
    async fn with_a_max_age_a_copy_is_read_again_and_a_deletion_below_is_seen() {
        let below = Arc::new(Counting { inner: MemoryBlobs::new(), opens: AtomicUsize::new(0) });
        let hot = HotBlobs::new(below.clone(), 1 << 20).with_max_age(Duration::from_millis(50));
        below.inner.insert("a", "bytes");
        read(&hot, "a", 0..5).await.unwrap();
        read(&hot, "a", 0..5).await.unwrap();
        assert_eq!(below.opens.load(Ordering::SeqCst), 1);
        // Another process deletes it below, unseen here.
        below.inner.delete("a").await.unwrap();
        assert_eq!(read(&hot, "a", 0..5).await.unwrap(), b"bytes", "still the copy");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(
            matches!(read(&hot, "a", 0..5).await, Err(StoreError::NotFound)),
            "past its age: asked below"
        );
    }

    #[tokio::test]
    async fn capacity_zero_holds_nothing() {
        let (below, hot) = fixture(0);
        below.inner.insert("a", "x");
        read(&hot, "a", 0..1).await.unwrap();
        read(&hot, "a", 0..1).await.unwrap();
        assert_eq!(below.opens.load(Ordering::SeqCst), 2);
    }
}
