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
//!
//! A lost connection is known sooner than a slow one. A pool retries a
//! refused connection until its acquire timeout, so whenever a call fails,
//! or has not answered within [`SLOW_CALL`], the breaker asks the index
//! whether a new connection can be made at all ([`Index::connects`], one
//! check at a time, its answer shared by every call that waits). Refused,
//! reset or closed: the breaker opens on that first failure, and every read
//! still waiting fails at once. A write waits for its own outcome (it may
//! have reached the database), then fails or succeeds as it does. A check
//! that cannot tell (it timed out) counts as today: one failure more.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{BlobRow, Cold, Entry, Flushed, Index, Refresh, Served, StoreError, Usage};

/// How often the prober asks the index.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// How long a probe may take before it counts as a failure.
const PROBE_DEADLINE: Duration = Duration::from_secs(1);

/// Failures in a row (calls or probes) that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 2;

/// How long a call may go unanswered before the breaker checks whether the
/// index can be reached at all.
pub const SLOW_CALL: Duration = Duration::from_millis(100);

/// How long one connection check's answer stands for the calls after it.
const CHECK_STANDS: Duration = Duration::from_millis(250);

/// An index behind a circuit breaker.
pub struct Breaker {
    inner: Arc<dyn Index>,
    open: AtomicBool,
    state: Mutex<State>,
    /// Wakes the reads waiting on the index when the breaker opens.
    opened_now: Notify,
    /// The last connection check: one at a time, its answer shared.
    check: tokio::sync::Mutex<Option<(Instant, Reach)>>,
    /// How many times the breaker opened.
    pub opened: AtomicU64,
}

#[derive(Default)]
struct State {
    failures: u32,
    reason: String,
    since: Option<Instant>,
}

/// What a connection check found.
#[derive(Debug, Clone)]
enum Reach {
    /// A connection can be made (or it could not be told).
    Unknown,
    /// Refused, reset or closed.
    Lost(String),
}

/// Whether a call may be abandoned once the breaker opens.
#[derive(Clone, Copy, PartialEq)]
enum Call {
    /// A read: nothing changes if it is dropped.
    Read,
    /// A write may have reached the database: it waits for its outcome.
    Write,
}

impl Breaker {
    /// Puts `inner` behind a breaker, with its prober running for as long
    /// as the breaker lives.
    pub fn new(inner: Arc<dyn Index>) -> Arc<Self> {
        let breaker = Arc::new(Self {
            inner,
            open: AtomicBool::new(false),
            state: Mutex::default(),
            opened_now: Notify::new(),
            check: tokio::sync::Mutex::new(None),
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
        if state.failures >= FAILURES_TO_OPEN {
            self.open_with(&mut state, error);
        }
    }

    /// The index cannot be reached: open now, and wake the waiting reads.
    fn lost(&self, error: &str) {
        let mut state = self.state.lock().expect("breaker lock");
        state.failures = state.failures.max(FAILURES_TO_OPEN);
        self.open_with(&mut state, error);
    }

    fn open_with(&self, state: &mut State, error: &str) {
        if self.open.load(Ordering::Relaxed) {
            return;
        }
        state.reason = error.to_owned();
        state.since = Some(Instant::now());
        self.open.store(true, Ordering::Relaxed);
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.opened_now.notify_waiters();
        tracing::error!(error, "the index does not answer: circuit open, requests no longer wait for it");
    }

    fn succeeded(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        state.failures = 0;
        if self.open.swap(false, Ordering::Relaxed) {
            let secs = state.since.take().map(|s| s.elapsed().as_secs_f64()).unwrap_or_default();
            tracing::warn!(down_s = secs, "the index answers again: circuit closed");
        }
    }

    /// Asks whether a new connection can be made, unless a check answered
    /// moments ago; opens the breaker when it cannot.
    async fn reach(&self) -> Reach {
        let mut last = self.check.lock().await;
        if let Some((at, reach)) = &*last {
            if at.elapsed() < CHECK_STANDS {
                return reach.clone();
            }
        }
        let reach = match tokio::time::timeout(PROBE_DEADLINE, self.inner.connects()).await {
            Ok(Err(StoreError::Unreachable(reason))) => Reach::Lost(reason),
            _ => Reach::Unknown,
        };
        if let Reach::Lost(reason) = &reach {
            self.lost(reason);
        }
        *last = Some((Instant::now(), reach.clone()));
        reach
    }

    /// Resolves once the index is known to be unreachable: at once when
    /// the breaker opens, or when a check started after [`SLOW_CALL`] finds
    /// the connection lost; never otherwise.
    async fn unreachable(&self) {
        let opened = self.opened_now.notified();
        tokio::pin!(opened);
        opened.as_mut().enable();
        if self.is_open() {
            return;
        }
        let slow_then_check = async {
            tokio::time::sleep(SLOW_CALL).await;
            if let Reach::Unknown = self.reach().await {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = opened => {}
            () = slow_then_check => {}
        }
    }

    /// Runs an index call unless the breaker is open, and learns from it.
    async fn guard<T>(
        &self,
        kind: Call,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self.is_open() {
            return Err(self.refused());
        }
        let result = match kind {
            Call::Read => {
                tokio::select! {
                    result = call => result,
                    () = self.unreachable() => return Err(self.refused()),
                }
            }
            Call::Write => {
                tokio::pin!(call);
                tokio::select! {
                    result = &mut call => result,
                    // Others learn of a lost connection; this write waits.
                    () = self.unreachable() => call.await,
                }
            }
        };
        match &result {
            Ok(_) | Err(StoreError::NotFound) => {
                if self.state.lock().expect("breaker lock").failures > 0 {
                    self.succeeded();
                }
            }
            Err(e) => {
                if let Reach::Unknown = self.reach().await {
                    self.failed(&e.to_string());
                }
            }
        }
        result
    }
}

/// Asks the index whether it answers, every [`PROBE_EVERY`], until the
/// breaker is dropped. While open, a connection that cannot be made says
/// enough: the pool is not asked.
async fn probe(breaker: Weak<Breaker>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(breaker) = breaker.upgrade() else { return };
        if breaker.is_open() {
            if let Reach::Lost(_) = breaker.reach().await {
                continue;
            }
        }
        let ping = tokio::time::timeout(PROBE_DEADLINE, breaker.inner.ping());
        let answer = tokio::select! {
            answer = ping => answer,
            () = breaker.unreachable(), if !breaker.is_open() => continue,
        };
        match answer {
            Ok(Ok(())) => {
                if breaker.is_open() || breaker.state.lock().expect("breaker lock").failures > 0 {
                    breaker.succeeded();
                }
            }
            Ok(Err(e)) => {
                if let Reach::Unknown = breaker.reach().await {
                    breaker.failed(&e.to_string());
                }
            }
            Err(_) => breaker.failed(&format!("no answer within {PROBE_DEADLINE:?}")),
        }
    }
}

#[async_trait]
impl Index for Breaker {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.guard(Call::Read, self.inner.get(key)).await
    }

    async fn put(&self, entry: Entry) -> Result<Option<Entry>, StoreError> {
        self.guard(Call::Write, self.inner.put(entry)).await
    }

    async fn remove(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.guard(Call::Write, self.inner.remove(key)).await
    }

    async fn remove_if(&self, key: &str, blob: &str) -> Result<Option<Entry>, StoreError> {
        self.guard(Call::Write, self.inner.remove_if(key, blob)).await
    }

    async fn refresh(&self, key: &str, blob: &str, refresh: &Refresh) -> Result<bool, StoreError> {
        self.guard(Call::Write, self.inner.refresh(key, blob, refresh)).await
    }

    async fn list(&self, remote: &str, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.guard(Call::Read, self.inner.list(remote, after, limit)).await
    }

    async fn flush(
        &self,
        remote: Option<&str>,
        drop_immutable: bool,
        now_ms: i64,
    ) -> Result<Flushed, StoreError> {
        self.guard(Call::Write, self.inner.flush(remote, drop_immutable, now_ms)).await
    }

    async fn expire_under(
        &self,
        remote: &str,
        dir: &str,
        keep: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        self.guard(Call::Write, self.inner.expire_under(remote, dir, keep, now_ms)).await
    }

    async fn find_path(&self, remote: &str, path: &str) -> Result<Vec<Entry>, StoreError> {
        self.guard(Call::Read, self.inner.find_path(remote, path)).await
    }

    async fn touch(&self, accesses: &[Served]) -> Result<(), StoreError> {
        self.guard(Call::Write, self.inner.touch(accesses)).await
    }

    async fn served(
        &self,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, (u64, i64)>, StoreError> {
        self.guard(Call::Read, self.inner.served(keys)).await
    }

    async fn coldest(
        &self,
        remote: Option<&str>,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<Cold>, StoreError> {
        self.guard(Call::Read, self.inner.coldest(remote, after, limit)).await
    }

    async fn blob_in_use(&self, blob: &str) -> Result<bool, StoreError> {
        self.guard(Call::Read, self.inner.blob_in_use(blob)).await
    }

    async fn touch_prefix(&self, remote: &str, prefix: &str, at: i64) -> Result<(), StoreError> {
        self.guard(Call::Write, self.inner.touch_prefix(remote, prefix, at)).await
    }

    async fn has_prefix(&self, remote: &str, prefix: &str) -> Result<bool, StoreError> {
        self.guard(Call::Read, self.inner.has_prefix(remote, prefix)).await
    }

    async fn blob_rows(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<BlobRow>, StoreError> {
        self.guard(Call::Read, self.inner.blob_rows(after, limit)).await
    }

    async fn usage(&self) -> Result<Vec<Usage>, StoreError> {
        self.guard(Call::Read, self.inner.usage()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.guard(Call::Read, self.inner.ping()).await
    }

    async fn connects(&self) -> Result<(), StoreError> {
        self.inner.connects().await
    }
}

#[cfg(test)]
mod tests;
