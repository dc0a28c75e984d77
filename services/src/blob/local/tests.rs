use std::sync::atomic::AtomicUsize;

use artifactapi_layers::store::memory::MemoryBlobs;
use futures_util::TryStreamExt;

use super::*;

/// A memory store that counts the reads that reach it; while `open` is
/// false, reads wait (so that concurrent readers meet).
struct Counting {
    blobs: MemoryBlobs,
    reads: AtomicUsize,
    heads: AtomicUsize,
    open: tokio::sync::watch::Sender<bool>,
}

impl Default for Counting {
    fn default() -> Self {
        Self {
            blobs: MemoryBlobs::default(),
            reads: AtomicUsize::default(),
            heads: AtomicUsize::default(),
            open: tokio::sync::watch::channel(true).0,
        }
    }
}

#[async_trait]
impl BlobStore for Counting {
    async fn put_file(&self, key: &str, file: &Path, size: u64) -> Result<(), StoreError> {
        self.blobs.put_file(key, file, size).await
    }
    async fn open(&self, key: &str, range: Option<Range<u64>>) -> Result<BlobStream, StoreError> {
        Ok(self.open_sized(key, range).await?.0)
    }
    async fn open_sized(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(BlobStream, Option<u64>), StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let _ = self.open.subscribe().wait_for(|open| *open).await;
        self.blobs.open_sized(key, range).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.blobs.delete(key).await
    }
    async fn list(&self) -> Result<BlobList, StoreError> {
        self.blobs.list().await
    }
    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.heads.fetch_add(1, Ordering::SeqCst);
        self.blobs.exists(key).await
    }
    async fn clean_up(&self, age: Duration) -> Result<u64, StoreError> {
        self.blobs.clean_up(age).await
    }
}

fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

async fn put(tier: &LocalTier, dir: &Path, key: &str, bytes: &[u8]) {
    let spool = dir.join(format!("spool-{}", key.replace('/', "_")));
    std::fs::write(&spool, bytes).unwrap();
    tier.put_file(key, &spool, bytes.len() as u64).await.unwrap();
    assert!(!spool.exists(), "the spool file is consumed");
}

async fn read(tier: &LocalTier, key: &str, range: Option<Range<u64>>) -> Result<Vec<u8>, StoreError> {
    let chunks: Vec<Bytes> = tier.open(key, range).await?.try_collect().await?;
    Ok(chunks.concat())
}

use bytes::Bytes;

async fn tier(budget: u64) -> (Arc<Counting>, LocalTier, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let counting = Arc::new(Counting::default());
    let tier = LocalTier::open(counting.clone(), &dir.path().join("local"), budget).await.unwrap();
    (counting, tier, dir)
}

fn copy_path(dir: &Path, key: &str, size: usize) -> PathBuf {
    dir.join("local/blobs").join(format!("{key}~{size}"))
}

/// Polls `done` every 10 ms, failing the test, naming `what`, after 20 s (a
/// busy machine).
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("gave up waiting for: {what}"));
}

/// How many readers follow the fill of `key`'s copy, besides the one that
/// started it (each holds the fill, as do the tier and the leading reader).
fn followers(tier: &LocalTier, key: &str) -> usize {
    let state = tier.0.state.lock().unwrap();
    state.filling.get(key).map_or(0, |filling| Arc::strong_count(filling).saturating_sub(2))
}

#[tokio::test]
async fn a_stored_blob_is_read_from_its_copy_without_asking_the_store() {
    let (store, tier, dir) = tier(1 << 20).await;
    let bytes = body(300_000, 1);
    put(&tier, dir.path(), "r/ab/1/file.tgz", &bytes).await;
    assert_eq!(read(&tier, "r/ab/1/file.tgz", Some(0..300_000)).await.unwrap(), bytes);
    assert_eq!(read(&tier, "r/ab/1/file.tgz", Some(10..20)).await.unwrap(), &bytes[10..20]);
    assert_eq!(store.reads.load(Ordering::SeqCst), 0);
    assert_eq!(tier.usage(), (1, 300_000, 1 << 20));
    assert_eq!(tier.stats().kept.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn concurrent_first_reads_make_one_store_read_and_leave_a_copy() {
    let (store, tier, dir) = tier(4 << 20).await;
    let bytes = body(3_000_000, 2);
    std::fs::write(dir.path().join("b"), &bytes).unwrap();
    store.blobs.put_file("r/cd/2/big.bin", &dir.path().join("b"), 3_000_000).await.unwrap();
    // The first read of the store waits until the other five readers follow it.
    store.open.send_replace(false);
    let readers: Vec<_> = (0..6)
        .map(|i| {
            let tier = tier.clone();
            let range = if i % 2 == 0 { Some(0..3_000_000) } else { Some(0..1000) };
            tokio::spawn(async move { read(&tier, "r/cd/2/big.bin", range).await.unwrap() })
        })
        .collect();
    eventually("five readers following the first", || followers(&tier, "r/cd/2/big.bin") == 5).await;
    store.open.send_replace(true);
    for (i, reader) in readers.into_iter().enumerate() {
        let got = reader.await.unwrap();
        let want = if i % 2 == 0 { &bytes[..] } else { &bytes[..1000] };
        assert!(got == want, "reader {i} got {} bytes", got.len());
    }
    assert_eq!(store.reads.load(Ordering::SeqCst), 1, "one read of the store for six readers");
    eventually("the copy", || tier.usage().0 == 1).await;
    assert_eq!(read(&tier, "r/cd/2/big.bin", None).await.unwrap(), bytes);
    assert_eq!(store.reads.load(Ordering::SeqCst), 1, "then read from the copy");
    // A range from the middle of a blob with no copy goes to the store as it is.
    store
        .blobs
        .put_file(
            "r/cd/3/other",
            &{
                std::fs::write(dir.path().join("o"), b"0123456789").unwrap();
                dir.path().join("o")
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(read(&tier, "r/cd/3/other", Some(4..6)).await.unwrap(), b"45");
    assert_eq!(tier.usage().0, 1, "and keeps nothing");
}

#[tokio::test]
async fn a_short_or_missing_copy_is_read_again_and_repaired() {
    let (store, tier, dir) = tier(1 << 20).await;
    let bytes = body(100_000, 3);
    put(&tier, dir.path(), "r/ef/3/a.rpm", &bytes).await;
    let file = copy_path(dir.path(), "r/ef/3/a.rpm", 100_000);
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(5000).unwrap();
    assert_eq!(read(&tier, "r/ef/3/a.rpm", Some(0..100_000)).await.unwrap(), bytes);
    assert_eq!(store.reads.load(Ordering::SeqCst), 1);
    assert_eq!(tier.stats().repairs.load(Ordering::SeqCst), 1);
    eventually("the copy is whole again", || {
        tier.usage().0 == 1 && std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) == 100_000
    })
    .await;
    std::fs::remove_file(&file).unwrap();
    assert_eq!(read(&tier, "r/ef/3/a.rpm", Some(0..100_000)).await.unwrap(), bytes);
    assert_eq!(tier.stats().repairs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_budget_holds_and_the_least_recently_used_copy_goes_first() {
    let (_store, tier, dir) = tier(250_000).await;
    for i in 0..3 {
        put(&tier, dir.path(), &format!("r/00/{i}/f"), &body(100_000, i)).await;
        if i == 1 {
            // The first is used again: the second is now the oldest.
            read(&tier, "r/00/0/f", Some(0..10)).await.unwrap();
        }
        assert!(tier.usage().1 <= 250_000, "{:?}", tier.usage());
    }
    assert_eq!(tier.usage().0, 2);
    assert_eq!(tier.stats().evictions.load(Ordering::SeqCst), 1);
    // The evicted copy's file is deleted after its place is given up.
    eventually("the evicted copy's file deleted", || !copy_path(dir.path(), "r/00/1/f", 100_000).exists())
        .await;
    assert!(copy_path(dir.path(), "r/00/0/f", 100_000).exists());
    // Larger than the whole budget: served, never kept.
    put(&tier, dir.path(), "r/00/9/huge", &body(300_000, 9)).await;
    assert_eq!(tier.usage().0, 2);
}

#[tokio::test]
async fn copies_survive_a_restart_unless_broken() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Counting::default());
    let tier = LocalTier::open(store.clone(), &dir.path().join("local"), 1 << 20).await.unwrap();
    put(&tier, dir.path(), "r/11/1/good", &body(1000, 1)).await;
    put(&tier, dir.path(), "r/11/2/bad", &body(1000, 2)).await;
    drop(tier);
    std::fs::write(copy_path(dir.path(), "r/11/2/bad", 1000), b"short").unwrap();
    std::fs::write(dir.path().join("local/incoming/leftover"), b"x").unwrap();
    let tier = LocalTier::open(store.clone(), &dir.path().join("local"), 1 << 20).await.unwrap();
    assert_eq!(tier.usage(), (1, 1000, 1 << 20));
    assert!(!dir.path().join("local/incoming/leftover").exists());
    assert_eq!(read(&tier, "r/11/1/good", Some(0..1000)).await.unwrap(), body(1000, 1));
    assert_eq!(store.reads.load(Ordering::SeqCst), 0);
    assert_eq!(read(&tier, "r/11/2/bad", Some(0..1000)).await.unwrap(), body(1000, 2));
    assert_eq!(store.reads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_deleted_blob_loses_its_copy_and_a_confirming_tier_sees_deletes_it_was_not_told_of() {
    let (store, tier, dir) = tier(1 << 20).await;
    put(&tier, dir.path(), "r/22/1/x", b"bytes").await;
    tier.delete("r/22/1/x").await.unwrap();
    assert_eq!(tier.usage().0, 0);
    assert!(matches!(read(&tier, "r/22/1/x", Some(0..5)).await, Err(StoreError::NotFound)));

    let confirming = LocalTier::open(store.clone(), &dir.path().join("other"), 1 << 20)
        .await
        .unwrap()
        .confirm_after(Duration::ZERO);
    put(&confirming, dir.path(), "r/22/2/y", b"more bytes").await;
    let reads = store.reads.load(Ordering::SeqCst);
    assert_eq!(read(&confirming, "r/22/2/y", Some(0..10)).await.unwrap(), b"more bytes");
    assert_eq!(store.heads.load(Ordering::SeqCst), 1);
    // Another process deletes the blob: the copy is not served.
    store.blobs.delete("r/22/2/y").await.unwrap();
    assert!(matches!(read(&confirming, "r/22/2/y", Some(0..10)).await, Err(StoreError::NotFound)));
    assert_eq!(confirming.usage().0, 0);
    assert_eq!(store.reads.load(Ordering::SeqCst), reads, "nothing read");
}
