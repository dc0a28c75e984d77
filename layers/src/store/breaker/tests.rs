//! The breaker against a stand-in index that can be slow, down, or refuse
//! connections.

use super::*;
use crate::store::memory::MemoryIndex;

/// An index that fails (slowly) while `down` is set. While `lost` is
/// set too, a new connection is refused, and a call waits out a pool's
/// 5 s acquire timeout as a pool that retries refused connections does.
struct Flaky {
    inner: MemoryIndex,
    down: AtomicBool,
    lost: AtomicBool,
    calls: AtomicU64,
    writes_done: AtomicU64,
}

fn flaky(down: bool) -> Arc<Flaky> {
    Arc::new(Flaky {
        inner: MemoryIndex::new(),
        down: AtomicBool::new(down),
        lost: AtomicBool::new(false),
        calls: AtomicU64::new(0),
        writes_done: AtomicU64::new(0),
    })
}

impl Flaky {
    async fn check(&self) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.lost.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(5)).await;
            return Err(StoreError::Backend("pool timed out while waiting for an open connection".into()));
        }
        if self.down.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return Err(StoreError::Backend("pool timed out".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Index for Flaky {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.check().await?;
        self.inner.get(key).await
    }
    async fn put(&self, entry: Entry) -> Result<Option<Entry>, StoreError> {
        let checked = self.check().await;
        self.writes_done.fetch_add(1, Ordering::SeqCst);
        checked?;
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
    async fn list(&self, remote: &str, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.inner.list(remote, after, limit).await
    }
    async fn flush(&self, r: Option<&str>, d: bool, now_ms: i64) -> Result<Flushed, StoreError> {
        self.inner.flush(r, d, now_ms).await
    }
    async fn expire_under(&self, r: &str, dir: &str, keep: &str, now_ms: i64) -> Result<u64, StoreError> {
        self.inner.expire_under(r, dir, keep, now_ms).await
    }
    async fn find_path(&self, remote: &str, path: &str) -> Result<Vec<Entry>, StoreError> {
        self.inner.find_path(remote, path).await
    }
    async fn touch(&self, accesses: &[Served]) -> Result<(), StoreError> {
        self.inner.touch(accesses).await
    }
    async fn served(
        &self,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, (u64, i64)>, StoreError> {
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
    async fn blob_rows(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<BlobRow>, StoreError> {
        self.inner.blob_rows(after, limit).await
    }
    async fn usage(&self) -> Result<Vec<Usage>, StoreError> {
        self.inner.usage().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.check().await
    }
    async fn connects(&self) -> Result<(), StoreError> {
        match self.lost.load(Ordering::SeqCst) {
            true => Err(StoreError::Unreachable("Connection refused (os error 111)".into())),
            false => Ok(()),
        }
    }
}

#[tokio::test]
async fn opens_on_failures_fails_fast_while_open_and_closes_when_the_index_answers() {
    let flaky = flaky(false);
    let breaker = Breaker::new(flaky.clone());
    assert!(breaker.get("k").await.unwrap().is_none());
    flaky.down.store(true, Ordering::SeqCst);
    for _ in 0..FAILURES_TO_OPEN {
        assert!(breaker.get("k").await.is_err());
    }
    assert!(breaker.is_open());
    let calls = flaky.calls.load(Ordering::SeqCst);
    let started = Instant::now();
    let refused = breaker.get("k").await.unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_millis(100), "no wait while open");
    assert!(refused.contains("circuit open") && refused.contains("pool timed out"), "{refused}");
    // Only the prober asks the index while it is open.
    assert!(flaky.calls.load(Ordering::SeqCst) <= calls + 1);
    flaky.down.store(false, Ordering::SeqCst);
    tokio::time::timeout(PROBE_EVERY * 4, async {
        while breaker.is_open() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the prober closes the breaker");
    assert!(breaker.get("k").await.unwrap().is_none());
    assert_eq!(breaker.opened.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_prober_opens_it_before_any_request_waits() {
    let flaky = flaky(true);
    let breaker = Breaker::new(flaky.clone());
    tokio::time::timeout(PROBE_EVERY * 6, async {
        while !breaker.is_open() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("opened by probes alone");
}

fn entry(key: &str) -> Entry {
    Entry {
        key: key.into(),
        remote: "r".into(),
        path: key.into(),
        blob: "b".into(),
        size: 1,
        class: super::super::EntryClass::Immutable,
        headers: Vec::new(),
        cached_at_ms: 0,
        expires_at_ms: None,
        policy: None,
    }
}

/// Refused connections, behind a pool that retries them for 5 s: the
/// reads already waiting fail once the first of them has waited
/// SLOW_CALL, the breaker opens on that one failure, and later reads
/// fail at once. A write waits for its own outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_opens_it_at_once_and_fails_the_waiting_reads() {
    let flaky = flaky(false);
    let breaker = Breaker::new(flaky.clone());
    assert!(breaker.get("k").await.unwrap().is_none());
    flaky.down.store(true, Ordering::SeqCst);
    flaky.lost.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let write = tokio::spawn({
        let breaker = breaker.clone();
        async move { breaker.put(entry("w")).await }
    });
    let reads: Vec<_> = (0..3)
        .map(|i| {
            let breaker = breaker.clone();
            tokio::spawn(async move {
                let failed = breaker.get(&format!("k{i}")).await.unwrap_err().to_string();
                (failed, started.elapsed())
            })
        })
        .collect();
    for read in reads {
        let (failed, after) = read.await.unwrap();
        // The reason is the refusal, not a timeout counted twice.
        assert!(failed.contains("circuit open") && failed.contains("Connection refused"), "{failed}");
        assert!(after < Duration::from_secs(2), "a read waited {after:?}: the pool's timeout is 5 s");
    }
    assert!(breaker.is_open(), "opened on the first refused connection");
    assert_eq!(breaker.opened.load(Ordering::SeqCst), 1);
    assert_eq!(flaky.writes_done.load(Ordering::SeqCst), 0, "the write is still waiting");
    let failed = write.await.unwrap().unwrap_err().to_string();
    assert!(failed.contains("pool timed out"), "the write's own outcome: {failed}");
    assert_eq!(flaky.writes_done.load(Ordering::SeqCst), 1);
    let calls = flaky.calls.load(Ordering::SeqCst);
    assert!(breaker.get("k").await.is_err());
    assert_eq!(flaky.calls.load(Ordering::SeqCst), calls, "open: the index is not asked");
    // Connections are accepted again: the prober closes it.
    flaky.lost.store(false, Ordering::SeqCst);
    flaky.down.store(false, Ordering::SeqCst);
    tokio::time::timeout(PROBE_EVERY * 6, async {
        while breaker.is_open() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the prober closes the breaker");
    assert!(breaker.get("k").await.unwrap().is_none());
}

/// A slow index with connections still possible is not unreachable:
/// the call waits for its answer, and one failure does not open it.
#[tokio::test]
async fn a_slow_index_is_waited_for_and_counts_as_one_failure() {
    let flaky = flaky(true);
    let breaker = Breaker::new(flaky.clone());
    let started = Instant::now();
    let failed = breaker.get("k").await.unwrap_err().to_string();
    assert!(failed.contains("pool timed out") && !failed.contains("circuit open"), "{failed}");
    assert!(started.elapsed() >= Duration::from_millis(300), "waited for the index's own answer");
    assert!(!breaker.is_open());
}

/// With nothing asking, the prober opens it on a refused connection:
/// the reason is the refusal, found on the first probe, not
/// [`FAILURES_TO_OPEN`] probes that time out.
#[tokio::test]
async fn the_prober_opens_it_on_a_refused_connection() {
    let flaky = flaky(false);
    let breaker = Breaker::new(flaky.clone());
    flaky.down.store(true, Ordering::SeqCst);
    flaky.lost.store(true, Ordering::SeqCst);
    tokio::time::timeout(PROBE_EVERY * 20, async {
        while !breaker.is_open() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("opened by the prober");
    let refused = breaker.refused().to_string();
    assert!(refused.contains("Connection refused"), "{refused}");
}
