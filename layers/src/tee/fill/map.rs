//! The map of fills in flight: a request joins the fill for its key or
//! starts one (holding the coordination lease while it runs), and the
//! negative cache of keys upstream answered 404 for.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use http::{Request, Response};
use tokio::sync::watch;
use tower::Service;
use tracing::Instrument;

use super::{
    run::{run, LINGER},
    status::{FillJob, FillStatus},
};
use crate::{
    body::ArtifactBody,
    budget::{DocumentBudget, ZipBudget},
    coord::Coordinator,
    digest::ExpectedDigests,
    error::BoxError,
    store::{now_ms, Store},
    tee::flush::FlushMarks,
};

/// How long a fill lease lives unless renewed (renewed every third of it).
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(30);

/// The fills in flight, by cache key.
pub(crate) struct Fills {
    pub(super) store: Store,
    pub(super) spool_dir: PathBuf,
    /// Fills by key, with when each started.
    inflight: Mutex<HashMap<Arc<str>, InFlight>>,
    /// Keys upstream answered 404 for, until when (the negative cache).
    missing: Mutex<HashMap<Arc<str>, Instant>>,
    /// Coordination with other replicas, when there are any.
    coordinator: Option<Arc<dyn Coordinator>>,
    /// Digests promised by package metadata, checked as files arrive.
    pub(crate) digests: Option<Arc<ExpectedDigests>>,
    /// What a fetched metadata document may describe.
    pub(crate) document_budget: DocumentBudget,
    /// What a check over a whole file (a Go module zip) may inflate.
    pub(crate) zip_budget: ZipBudget,
    /// Counters for operators.
    pub(crate) stats: Arc<TeeStats>,
    /// Flushes that fills in flight must honour.
    pub(crate) flushes: FlushMarks,
    /// How long a committed fill stays joinable (two seconds unless set).
    pub(crate) linger: Duration,
}

/// What the tee has done, for metrics. Counters only grow.
#[derive(Debug, Default)]
pub struct TeeStats {
    /// Fills started (upstream fetches of a whole body).
    pub fills: AtomicU64,
    /// Requests that joined a fill in flight instead of fetching themselves.
    pub coalesced: AtomicU64,
    /// Fills that failed (upstream error, broken body, digest mismatch).
    pub failed: AtomicU64,
    /// Complete bodies that could not be stored (served uncached).
    pub store_failures: AtomicU64,
    /// Fills running now.
    pub in_flight: AtomicU64,
    /// Bodies passed through uncached because the store had no room.
    pub store_full: AtomicU64,
    /// Woken when the store is short of room: time to evict.
    pub short_of_room: tokio::sync::Notify,
}

/// A fill in the map: its progress, and when it started (ms since the epoch).
type InFlight = (watch::Receiver<FillStatus>, i64);

/// The receivers of a fill's status that are not clients: the map's and the
/// [`InflightGuard`]'s, both held while the fill runs.
const OWN_RECEIVERS: usize = 2;

/// How many clients wait for a running fill (each holds a receiver of its
/// status until it has its answer or goes away).
pub(super) fn clients(tx: &watch::Sender<FillStatus>) -> usize {
    tx.receiver_count().saturating_sub(OWN_RECEIVERS)
}

/// At most this many remembered 404s; past it, new ones are not remembered.
const MAX_MISSING: usize = 100_000;

impl std::fmt::Debug for Fills {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fills").field("spool_dir", &self.spool_dir).finish()
    }
}

impl Fills {
    pub(crate) fn new(store: Store, spool_dir: PathBuf, coordinator: Option<Arc<dyn Coordinator>>) -> Self {
        Self {
            store,
            spool_dir,
            inflight: Mutex::new(HashMap::new()),
            missing: Mutex::new(HashMap::new()),
            coordinator,
            digests: None,
            document_budget: DocumentBudget::default(),
            zip_budget: ZipBudget::default(),
            stats: Arc::default(),
            flushes: FlushMarks::default(),
            linger: LINGER,
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn coordinator(&self) -> Option<&Arc<dyn Coordinator>> {
        self.coordinator.as_ref()
    }

    /// Whether upstream answered 404 for `key` within its negative TTL.
    pub(crate) fn known_missing(&self, key: &str) -> bool {
        let mut missing = self.missing.lock().expect("negative cache lock");
        match missing.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                missing.remove(key);
                false
            }
            None => false,
        }
    }

    /// Remembers that upstream answered 404 for `key`, for `ttl`.
    pub(crate) fn remember_missing(&self, key: &Arc<str>, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut missing = self.missing.lock().expect("negative cache lock");
        let now = Instant::now();
        if missing.len() >= MAX_MISSING {
            missing.retain(|_, until| *until > now);
        }
        if missing.len() < MAX_MISSING {
            missing.insert(key.clone(), now + ttl);
        }
    }

    /// Forgets what is remembered of `key`: a finished fill still joinable,
    /// a remembered 404 (the entry was purged: the next request fetches).
    pub(crate) fn forget(&self, key: &str) {
        let mut inflight = self.inflight.lock().expect("fill map lock");
        if inflight.get(key).is_some_and(|(rx, _)| matches!(*rx.borrow(), FillStatus::Complete { .. })) {
            inflight.remove(key);
        }
        drop(inflight);
        self.missing.lock().expect("negative cache lock").remove(key);
    }

    /// Forgets every finished fill and remembered 404 of `remote` (of every
    /// remote with `None`): the cache was flushed, so nothing fetched before
    /// the flush may answer a request after it. Fills still fetching stay:
    /// what they commit is newer than the flush.
    pub(crate) fn forget_all(&self, remote: Option<&str>) {
        let of_remote = |key: &str| match remote {
            None => true,
            Some(remote) => {
                key.strip_prefix(remote).is_some_and(|rest| rest.starts_with(crate::path::KEY_SEPARATOR))
            }
        };
        self.inflight
            .lock()
            .expect("fill map lock")
            .retain(|key, (rx, _)| !(of_remote(key) && matches!(*rx.borrow(), FillStatus::Complete { .. })));
        self.missing.lock().expect("negative cache lock").retain(|key, _| !of_remote(key));
    }

    /// The fill in flight for `key`, if any.
    pub(crate) fn find(&self, key: &str) -> Option<watch::Receiver<FillStatus>> {
        self.inflight.lock().expect("fill map lock").get(key).map(|(rx, _)| rx.clone())
    }

    /// Joins the fill in flight for the job's key, or starts one that sends
    /// `req` to `inner`. Answers whether it joined one already complete:
    /// such a request is served without asking upstream.
    pub(crate) fn join_or_start<S, B>(
        self: &Arc<Self>,
        inner: S,
        req: Request<B>,
        job: FillJob,
    ) -> (watch::Receiver<FillStatus>, bool)
    where
        S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError> + Send + 'static,
        S::Future: Send,
        B: Send + 'static,
    {
        let mut inflight = self.inflight.lock().expect("fill map lock");
        // A failed fill stays in the map until its task has cleaned up; a
        // request that comes after the failure starts again.
        let live = inflight.get(&job.key).filter(|(rx, _)| !matches!(*rx.borrow(), FillStatus::Failed(_)));
        if let Some((rx, started_ms)) = live {
            let complete = matches!(*rx.borrow(), FillStatus::Complete { .. });
            // An entry that is never fresh (`mutable_ttl: 0`) must be asked
            // for upstream by every request: a finished fill does not answer it.
            let never_fresh = job.remote.ttl.for_class(job.class) == Some(Duration::ZERO);
            // A finished fill that began before the cached entry expired (one
            // lingering from an earlier fetch) holds bytes that old.
            let predates_expiry = job.replaces.is_some_and(|expired_at| *started_ms < expired_at);
            if !(complete && (never_fresh || predates_expiry)) {
                if complete {
                    // Answered from the cache, as a hit on the entry is: the
                    // access counts for eviction (an entry read only from
                    // its finished fill would otherwise age as if unread).
                    self.store.access.served(&job.key, &job.remote.name, &job.path.display());
                } else {
                    self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                    tracing::Span::current().record("coalesced", true);
                }
                if job.lease {
                    // A local fill is already at it: the lease is not needed.
                    if let Some(coord) = self.coordinator.clone() {
                        let key = job.key.clone();
                        tokio::spawn(async move { coord.release(&key).await });
                    }
                }
                return (rx.clone(), complete);
            }
        }
        let (tx, rx) = watch::channel(FillStatus::Pending);
        inflight.insert(job.key.clone(), (rx.clone(), now_ms()));
        tracing::info!(remote = %job.remote.name, path = %job.path.display(), conditional = job.conditional, "fill started");
        drop(inflight);
        // A child of the request that started it; it outlives that request
        // when the client goes away.
        let span = tracing::info_span!(
            "fill",
            remote = %job.remote.name,
            path = %job.path.display(),
            conditional = job.conditional,
            bytes = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        self.stats.fills.fetch_add(1, Ordering::Relaxed);
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InflightGuard { fills: self.clone(), key: job.key.clone(), rx: rx.clone() };
        tokio::spawn(async move {
            // The guard leaves the map however the task ends, panics included,
            // so a key is never stuck behind a dead fill.
            let guard = guard;
            let lease = match (job.lease, guard.fills.coordinator.clone()) {
                (true, Some(coord)) => Some((coord, job.key.clone())),
                _ => None,
            };
            // Keep the lease alive for as long as the fill runs.
            let renewal = lease.clone().map(|(coord, key)| {
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(LEASE_TTL / 3).await;
                        if !matches!(coord.renew(&key, LEASE_TTL).await, Ok(true)) {
                            break;
                        }
                    }
                })
            });
            let running = Running(guard.fills.stats.clone());
            let linger = run(guard.fills.clone(), inner, req, tx, job).instrument(span).await;
            drop(running);
            if let Some(renewal) = renewal {
                renewal.abort();
            }
            if let Some((coord, key)) = lease {
                coord.release(&key).await;
            }
            if let Some(linger) = linger {
                tokio::time::sleep(linger).await;
            }
            drop(guard);
        });
        (rx, false)
    }
}

/// Counts a fill as running until it has fetched (not while it lingers),
/// panics included.
struct Running(Arc<TeeStats>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

struct InflightGuard {
    fills: Arc<Fills>,
    key: Arc<str>,
    rx: watch::Receiver<FillStatus>,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if let Ok(mut inflight) = self.fills.inflight.lock() {
            if inflight.get(&self.key).is_some_and(|(rx, _)| rx.same_channel(&self.rx)) {
                inflight.remove(&self.key);
            }
        }
    }
}
