//! A circuit breaker in front of a shared index (PostgreSQL): while the
//! database is down, index calls fail at once instead of each waiting out
//! the pool's acquire timeout.
//!
//! Closed, calls pass through, and a prober asks the index every
//! [`PROBE_EVERY`] whether it answers (with its own short deadline). The
//! breaker opens after [`FAILURES_TO_OPEN`] failures in a row, of calls or
//! probes; open, every call fails at once with the reason, and the prober
//! keeps asking until the index answers, when the breaker closes by itself.
//! What sits above decides what a failed call means: a hit on an entry held
//! in memory ([`super::hot::HotIndex`]) is still served, a miss is served
//! from upstream without being cached, and readiness says the index is down.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;

use super::{BlobRow, Cold, Entry, Flushed, Index, Refresh, Served, StoreError, Usage};

/// How often the prober asks the index.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// How long a probe may take before it counts as a failure.
const PROBE_DEADLINE: Duration = Duration::from_secs(1);

/// Failures in a row (calls or probes) that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 2;

/// An index behind a circuit breaker.
pub struct Breaker {
    inner: Arc<dyn Index>,
    open: AtomicBool,
    state: Mutex<State>,
    /// How many times the breaker opened.
    pub opened: AtomicU64,
}

#[derive(Default)]
struct State {
    failures: u32,
    reason: String,
    since: Option<Instant>,
}

impl Breaker {
    /// Puts `inner` behind a breaker, with its prober running for as long
    /// as the breaker lives.
    pub fn new(inner: Arc<dyn Index>) -> Arc<Self> {
        let breaker = Arc::new(Self {
            inner,
            open: AtomicBool::new(false),
            state: Mutex::default(),
            opened: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&breaker);
        tokio::spawn(probe(weak));
        breaker
    }

    /// Whether calls fail at once now.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    fn refused(&self) -> StoreError {
        let state = self.state.lock().expect("breaker lock");
        let secs = state.since.map(|s| s.elapsed().as_secs()).unwrap_or_default();
        StoreError::Backend(format!(
            "the index is unavailable (circuit open for {secs} s after: {}); retrying in the background",
            state.reason
        ))
    }

    fn failed(&self, error: &str) {
        let mut state = self.state.lock().expect("breaker lock");
        state.failures += 1;
        if state.failures >= FAILURES_TO_OPEN && !self.open.load(Ordering::Relaxed) {
            state.reason = error.to_owned();
            state.since = Some(Instant::now());
            self.open.store(true, Ordering::Relaxed);
            self.opened.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error, "the index does not answer: circuit open, requests no longer wait for it");
        }
    }

    fn succeeded(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        state.failures = 0;
        if self.open.swap(false, Ordering::Relaxed) {
            let secs = state.since.take().map(|s| s.elapsed().as_secs_f64()).unwrap_or_default();
            tracing::warn!(down_s = secs, "the index answers again: circuit closed");
        }
    }

    /// Runs an index call unless the breaker is open, and learns from it.
    async fn guard<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self.is_open() {
            return Err(self.refused());
        }
        let result = call.await;
        match &result {
            Ok(_) | Err(StoreError::NotFound) => {
                if self.state.lock().expect("breaker lock").failures > 0 {
                    self.succeeded();
                }
            }
            Err(e) => self.failed(&e.to_string()),
        }
        result
    }
}

/// Asks the index whether it answers, every [`PROBE_EVERY`], until the
/// breaker is dropped.
async fn probe(breaker: Weak<Breaker>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(breaker) = breaker.upgrade() else { return };
        match tokio::time::timeout(PROBE_DEADLINE, breaker.inner.ping()).await {
            Ok(Ok(())) => {
                if breaker.is_open() || breaker.state.lock().expect("breaker lock").failures > 0 {
                    breaker.succeeded();
                }
            }
            Ok(Err(e)) => breaker.failed(&e.to_string()),
            Err(_) => breaker.failed(&format!("no answer within {PROBE_DEADLINE:?}")),
        }
    }
}

#[async_trait]
impl Index for Breaker {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.guard(self.inner.get(key)).await
    }

    async fn put(&self, entry: Entry) -> Result<Option<Entry>, StoreError> {
        self.guard(self.inner.put(entry)).await
    }

    async fn remove(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.guard(self.inner.remove(key)).await
    }

    async fn remove_if(&self, key: &str, blob: &str) -> Result<Option<Entry>, StoreError> {
        self.guard(self.inner.remove_if(key, blob)).await
    }

    async fn refresh(&self, key: &str, blob: &str, refresh: &Refresh) -> Result<bool, StoreError> {
        self.guard(self.inner.refresh(key, blob, refresh)).await
    }

    async fn list(&self, remote: &str, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.guard(self.inner.list(remote, after, limit)).await
    }

    async fn flush(
        &self,
        remote: Option<&str>,
        drop_immutable: bool,
        now_ms: i64,
    ) -> Result<Flushed, StoreError> {
        self.guard(self.inner.flush(remote, drop_immutable, now_ms)).await
    }

    async fn expire_under(
        &self,
        remote: &str,
        dir: &str,
        keep: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        self.guard(self.inner.expire_under(remote, dir, keep, now_ms)).await
    }

    async fn find_path(&self, remote: &str, path: &str) -> Result<Vec<Entry>, StoreError> {
        self.guard(self.inner.find_path(remote, path)).await
    }

    async fn touch(&self, accesses: &[Served]) -> Result<(), StoreError> {
        self.guard(self.inner.touch(accesses)).await
    }

    async fn served(
        &self,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, (u64, i64)>, StoreError> {
        self.guard(self.inner.served(keys)).await
    }

    async fn coldest(
        &self,
        remote: Option<&str>,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<Cold>, StoreError> {
        self.guard(self.inner.coldest(remote, after, limit)).await
    }

    async fn blob_in_use(&self, blob: &str) -> Result<bool, StoreError> {
        self.guard(self.inner.blob_in_use(blob)).await
    }

    async fn touch_prefix(&self, remote: &str, prefix: &str, at: i64) -> Result<(), StoreError> {
        self.guard(self.inner.touch_prefix(remote, prefix, at)).await
    }

    async fn has_prefix(&self, remote: &str, prefix: &str) -> Result<bool, StoreError> {
        self.guard(self.inner.has_prefix(remote, prefix)).await
    }

    async fn blob_rows(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<BlobRow>, StoreError> {
        self.guard(self.inner.blob_rows(after, limit)).await
    }

    async fn usage(&self) -> Result<Vec<Usage>, StoreError> {
        self.guard(self.inner.usage()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.guard(self.inner.ping()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryIndex;

    /// An index that fails (slowly) while `down` is set.
    struct Flaky {
        inner: MemoryIndex,
        down: AtomicBool,
        calls: AtomicU64,
    }

    impl Flaky {
        async fn check(&self) -> Result<(), StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
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
            self.check().await?;
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
        async fn blob_rows(
            &self,
            after: Option<(&str, &str)>,
            limit: usize,
        ) -> Result<Vec<BlobRow>, StoreError> {
            self.inner.blob_rows(after, limit).await
        }
        async fn usage(&self) -> Result<Vec<Usage>, StoreError> {
            self.inner.usage().await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.check().await
        }
    }

    #[tokio::test]
    async fn opens_on_failures_fails_fast_while_open_and_closes_when_the_index_answers() {
        let flaky = Arc::new(Flaky {
            inner: MemoryIndex::new(),
            down: AtomicBool::new(false),
            calls: AtomicU64::new(0),
        });
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
        let flaky = Arc::new(Flaky {
            inner: MemoryIndex::new(),
            down: AtomicBool::new(true),
            calls: AtomicU64::new(0),
        });
        let breaker = Breaker::new(flaky.clone());
        tokio::time::timeout(PROBE_EVERY * 6, async {
            while !breaker.is_open() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("opened by probes alone");
    }
}
