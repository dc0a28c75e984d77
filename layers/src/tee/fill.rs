//! One fill per cache key: fetch, spool, publish progress, commit.

use std::{
    collections::HashMap,
    fs::File,
    io::Write,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use http_cache_semantics::CachePolicy;
use tokio::sync::watch;
use tower::{Service, ServiceExt};
use tracing::Instrument;

use super::{
    flush::{FlushMarks, Flushed},
    spool,
};
use crate::{
    body::ArtifactBody,
    coord::Coordinator,
    digest::{Expected, ExpectedDigests},
    error::{find_cause, BoxError, UpstreamError, UpstreamErrorKind, UpstreamStatus},
    extensions::StoreAs,
    path::ArtifactPath,
    pattern::Class,
    remote::Remote,
    respond,
    store::{is_shared_blob, new_blob_key, now_ms, Entry, EntryClass, Store, StoreError},
};

/// What a fill has got to, as seen by every client of it.
#[derive(Debug, Clone)]
pub(crate) enum FillStatus {
    /// Waiting for upstream's answer.
    Pending,
    /// Upstream answered 200; `received` bytes have arrived, the first
    /// `written` of them are in the spool, and the rest are in the head's
    /// memory window ([`Head::recent`]), so clients need not wait for the
    /// spool write to send them.
    Streaming { head: Arc<Head>, written: u64, received: u64 },
    /// The whole body is in the spool and checked.
    Complete { head: Arc<Head>, written: u64 },
    /// The fill failed; nothing is cached.
    Failed(FillError),
    /// The fill was conditional and upstream answered 304 with these headers.
    NotModified(Arc<http::HeaderMap>),
    /// The store has no room for the body: it goes to one client as it
    /// arrives, uncached (the first to take it; the others are refused).
    Direct(Arc<Direct>),
    /// The spool filled up part way: its first `at` bytes are readable, the
    /// rest goes on to the one client that reaches `at` first, uncached.
    Handover(Arc<Handover>),
}

/// The rest of a body the spool had no room for.
#[derive(Debug)]
pub(crate) struct Handover {
    pub(crate) head: Arc<Head>,
    pub(crate) at: u64,
    /// Bytes read from upstream but not spooled, then the rest of the body.
    pub(crate) rest: Mutex<Option<(Vec<Bytes>, ArtifactBody)>>,
}

/// An upstream answer passed through uncached.
#[derive(Debug)]
pub(crate) struct Direct {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) content_length: Option<u64>,
    pub(crate) body: Mutex<Option<ArtifactBody>>,
}

/// The answer's head, and the spool its body is in.
#[derive(Debug)]
pub(crate) struct Head {
    /// The headers to answer (and store) with.
    pub(crate) headers: Vec<(String, String)>,
    /// Upstream's `Content-Length`, when it sent one.
    pub(crate) content_length: Option<u64>,
    /// The spool file.
    pub(crate) file: Arc<File>,
    /// The serialized cache policy of the exchange, for later revalidation.
    pub(crate) policy: Option<String>,
    /// The last bytes received, still in memory: every byte not yet in the
    /// spool, and the last few MiB that are. Clients that keep up with the
    /// fill take them from here instead of reading the spool back (no copy,
    /// no blocking read, no wait for the write).
    pub(crate) recent: Mutex<Recent>,
}

/// How much of what a fill wrote last stays in memory for its clients.
const RECENT_BYTES: usize = 4 * 1024 * 1024;

/// The most recently received frames, contiguous, ending at what was
/// received. Frames not yet in the spool are never forgotten.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    /// The spool offset of the first frame.
    start: u64,
    frames: std::collections::VecDeque<Bytes>,
    len: usize,
    /// How much of the body is in the spool: frames past it stay.
    durable: u64,
}

impl Recent {
    /// Appends frames received at `offset` (which follows the last one), and
    /// forgets the oldest spooled ones beyond the window.
    fn push(&mut self, offset: u64, frames: &[Bytes]) {
        if self.start + self.len as u64 != offset {
            *self = Recent { start: offset, durable: self.durable.min(offset), ..Recent::default() };
        }
        for f in frames.iter().filter(|f| !f.is_empty()) {
            self.len += f.len();
            self.frames.push_back(f.clone());
        }
        self.trim();
    }

    /// Records that the spool holds the first `upto` bytes.
    fn spooled(&mut self, upto: u64) {
        self.durable = self.durable.max(upto);
        self.trim();
    }

    fn trim(&mut self) {
        while self.len > RECENT_BYTES {
            let Some(old) = self.frames.front() else { break };
            if self.start + old.len() as u64 > self.durable {
                break;
            }
            self.len -= old.len();
            self.start += old.len() as u64;
            self.frames.pop_front();
        }
    }

    /// The bytes at `offset`, up to the end of the frame holding it (and
    /// before `limit`), when they are still here.
    pub(crate) fn at(&self, offset: u64, limit: u64) -> Option<Bytes> {
        if offset < self.start || offset >= limit {
            return None;
        }
        let mut frame_start = self.start;
        for f in &self.frames {
            let frame_end = frame_start + f.len() as u64;
            if offset < frame_end {
                let from = (offset - frame_start) as usize;
                let to = (frame_end.min(limit) - frame_start) as usize;
                return Some(f.slice(from..to));
            }
            frame_start = frame_end;
        }
        None
    }
}

/// Why a fill failed. Cloned to every client of the fill.
#[derive(Debug, Clone)]
pub(crate) enum FillError {
    Upstream(UpstreamError),
    Status(UpstreamStatus),
    Store(Arc<str>),
}

impl FillError {
    pub(crate) fn into_box(self) -> BoxError {
        match self {
            FillError::Upstream(e) => Box::new(e),
            FillError::Status(e) => Box::new(e),
            FillError::Store(e) => Box::new(StoreError::Backend(e.to_string())),
        }
    }

    fn from_box(e: BoxError, kind: UpstreamErrorKind) -> Self {
        match find_cause::<UpstreamError>(&*e) {
            Some(upstream) => FillError::Upstream(upstream.clone()),
            None => FillError::Upstream(UpstreamError::new(kind, e.to_string())),
        }
    }
}

/// What a fill fetches and how it is stored.
pub(crate) struct FillJob {
    pub(crate) key: Arc<str>,
    pub(crate) remote: Arc<Remote>,
    pub(crate) path: ArtifactPath,
    pub(crate) class: Class,
    /// The request carries validators; a 304 is an answer, not a failure.
    pub(crate) conditional: bool,
    /// This replica holds the coordination lease for the key.
    pub(crate) lease: bool,
    /// When the expired entry this fill replaces expired, if there is one.
    pub(crate) replaces: Option<i64>,
    /// When the fill was asked for (ms since the epoch).
    pub(crate) started_ms: i64,
}

/// How long a fill lease lives unless renewed (renewed every third of it).
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(30);

/// The fills in flight, by cache key.
pub(crate) struct Fills {
    store: Store,
    spool_dir: PathBuf,
    /// Fills by key, with when each started.
    inflight: Mutex<HashMap<Arc<str>, InFlight>>,
    /// Keys upstream answered 404 for, until when (the negative cache).
    missing: Mutex<HashMap<Arc<str>, Instant>>,
    /// Coordination with other replicas, when there are any.
    coordinator: Option<Arc<dyn Coordinator>>,
    /// Digests promised by package metadata, checked as files arrive.
    pub(crate) digests: Option<Arc<ExpectedDigests>>,
    /// Counters for operators.
    pub(crate) stats: Arc<TeeStats>,
    /// Flushes that fills in flight must honour.
    pub(crate) flushes: FlushMarks,
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
            stats: Arc::default(),
            flushes: FlushMarks::default(),
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
        if let Some((rx, started_ms)) = inflight.get(&job.key) {
            let complete = matches!(*rx.borrow(), FillStatus::Complete { .. });
            // An entry that is never fresh (`mutable_ttl: 0`) must be asked
            // for upstream by every request: a finished fill does not answer it.
            let never_fresh = job.remote.ttl.for_class(job.class) == Some(Duration::ZERO);
            // A finished fill that began before the cached entry expired (one
            // lingering from an earlier fetch) holds bytes that old.
            let predates_expiry = job.replaces.is_some_and(|expired_at| *started_ms < expired_at);
            if !(complete && (never_fresh || predates_expiry)) {
                if !complete {
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

/// Free space kept on the spool's filesystem beyond a body's size.
const ROOM_TO_SPARE: u64 = 1 << 20;

/// How long a committed fill stays joinable. A request that looked the key
/// up in the index just before the commit finds the finished fill here
/// instead of starting a second upstream fetch.
const LINGER: Duration = Duration::from_secs(2);

/// Runs one fill; answers how long it should stay joinable afterwards.
async fn run<S, B>(
    fills: Arc<Fills>,
    inner: S,
    req: Request<B>,
    tx: watch::Sender<FillStatus>,
    job: FillJob,
) -> Option<Duration>
where
    S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError>,
{
    // The exchange as the cache policy records it (for revalidation later).
    let mut policy_req = Request::new(());
    *policy_req.method_mut() = req.method().clone();
    *policy_req.uri_mut() = req.uri().clone();
    *policy_req.headers_mut() = req.headers().clone();
    let response = match inner.oneshot(req).await {
        Ok(response) => response,
        Err(e) => {
            fills.stats.failed.fetch_add(1, Ordering::Relaxed);
            tx.send_replace(FillStatus::Failed(FillError::from_box(e, UpstreamErrorKind::Other)));
            return None;
        }
    };
    let span = tracing::Span::current();
    if response.status() == StatusCode::NOT_MODIFIED && job.conditional {
        span.record("outcome", "not modified");
        tx.send_replace(FillStatus::NotModified(Arc::new(response.headers().clone())));
        return None;
    }
    if response.status() != StatusCode::OK {
        if response.status() == StatusCode::NOT_FOUND {
            fills.remember_missing(&job.key, job.remote.ttl.negative);
        }
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        span.record("outcome", response.status().as_u16());
        let status = UpstreamStatus::new(response.status(), retry_after);
        tx.send_replace(FillStatus::Failed(FillError::Status(status)));
        return None;
    }
    let policy = serde_json::to_string(&CachePolicy::new(&policy_req, &response)).ok();
    let announced: Option<u64> = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if let (Some(len), Some(free)) = (announced, spool::free_bytes(&fills.spool_dir)) {
        if len.saturating_add(ROOM_TO_SPARE) > free {
            // No room to spool it: the client gets the body as it arrives,
            // uncached, and eviction is asked to make room.
            tracing::warn!(remote = %job.remote.name, path = %job.path.display(), size = len, free, "no room in the store; serving uncached");
            fills.stats.store_full.fetch_add(1, Ordering::Relaxed);
            fills.stats.short_of_room.notify_one();
            span.record("outcome", "uncached: no room");
            let headers = respond::stored_headers(response.headers(), &job.path);
            let body = Mutex::new(Some(response.into_body()));
            tx.send_replace(FillStatus::Direct(Arc::new(Direct {
                headers,
                content_length: Some(len),
                body,
            })));
            return None;
        }
    }
    let store_as = response.extensions().get::<StoreAs>().cloned().unwrap_or_default();
    let (parts, body) = response.into_parts();
    let (spool_path, file) = match spool::create(&fills.spool_dir) {
        Ok(created) => created,
        Err(e) => {
            tracing::warn!(error = %e, dir = %fills.spool_dir.display(), "cannot create a spool file");
            fills.stats.failed.fetch_add(1, Ordering::Relaxed);
            tx.send_replace(FillStatus::Failed(FillError::Store(format!("cannot spool: {e}").into())));
            return None;
        }
    };
    let head = Arc::new(Head {
        headers: respond::stored_headers(&parts.headers, &job.path),
        content_length: parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        file: Arc::new(file),
        policy,
        recent: Mutex::new(Recent::default()),
    });
    tx.send_replace(FillStatus::Streaming { head: head.clone(), written: 0, received: 0 });
    let expected = fills.digests.as_ref().and_then(|d| d.get(&job.key));
    let written = match spool_body(body, &head, &tx, expected).await {
        Ok(Spooled::Whole(written)) => written,
        Ok(Spooled::NoRoom { at, pending, rest, error }) => {
            // The disk filled up part way: the clients read what is spooled,
            // then one of them the rest straight from upstream, uncached.
            tracing::warn!(remote = %job.remote.name, path = %job.path.display(), at, error, "the spool filled up; serving the rest uncached");
            span.record("outcome", "uncached: no room");
            fills.stats.store_full.fetch_add(1, Ordering::Relaxed);
            fills.stats.short_of_room.notify_one();
            // Readers keep the open file; the name goes now.
            let _ = tokio::fs::remove_file(&spool_path).await;
            let rest = Mutex::new(Some((pending, rest)));
            tx.send_replace(FillStatus::Handover(Arc::new(Handover { head: head.clone(), at, rest })));
            return None;
        }
        Err(e) => {
            span.record("outcome", "failed");
            if matches!(e, FillError::Store(_)) {
                fills.stats.short_of_room.notify_one();
            }
            tracing::warn!(remote = %job.remote.name, path = %job.path.display(), error = ?e, "fill failed; nothing cached");
            fills.stats.failed.fetch_add(1, Ordering::Relaxed);
            tx.send_replace(FillStatus::Failed(e));
            let _ = tokio::fs::remove_file(&spool_path).await;
            return None;
        }
    };
    // From before the clients see the body complete until its row is
    // written: a flush waits for this commit, or this commit sees the flush.
    let _committing = fills.flushes.gate.read().await;
    tx.send_replace(FillStatus::Complete { head: head.clone(), written });
    span.record("bytes", written);
    let flushed = fills.flushes.since(&job.remote.name, job.started_ms);
    if flushed == Flushed::Removed {
        // The cache was flushed while this fill ran: its bytes are older
        // than the flush, so its clients have them and the cache does not.
        span.record("outcome", "not stored: flushed");
        let _ = tokio::fs::remove_file(&spool_path).await;
        return None;
    }
    let expired = flushed == Flushed::Expired;
    let committed = commit(&fills.store, &job, &head, &spool_path, written, &store_as, expired).await;
    span.record("outcome", if committed.is_ok() { "stored" } else { "not stored" });
    match committed {
        // Only an entry that stays fresh longer than the linger may be
        // answered from the finished fill: `mutable_ttl: 0` means every
        // request asks upstream.
        Ok(ttl) if ttl.is_none_or(|t| t > LINGER) => Some(LINGER),
        Ok(_) => None,
        Err(e) => {
            fills.stats.store_failures.fetch_add(1, Ordering::Relaxed);
            fills.stats.short_of_room.notify_one();
            tracing::warn!(remote = %job.remote.name, path = %job.path.display(), error = %e, "could not store a complete body; served uncached");
            let _ = tokio::fs::remove_file(&spool_path).await;
            None
        }
    }
}

/// How spooling a body ended, when upstream did not fail.
enum Spooled {
    /// Every byte is in the spool, checked.
    Whole(u64),
    /// The spool could take only the first `at` bytes; `pending` holds the
    /// bytes received after them, `rest` the body still to come.
    NoRoom { at: u64, pending: Vec<Bytes>, rest: ArtifactBody, error: String },
}

/// A batch of frames: what upstream has sent so far, up to a chunk.
struct Batch {
    frames: Vec<Bytes>,
    len: usize,
    /// The body ended after these frames.
    ended: bool,
}

/// Waits for the next frame, then takes every frame already there, up to a
/// chunk.
async fn next_batch(body: &mut ArtifactBody) -> Result<Batch, FillError> {
    let mut batch = Batch { frames: Vec::new(), len: 0, ended: false };
    let take = |frame: http_body::Frame<Bytes>, batch: &mut Batch| {
        if let Ok(data) = frame.into_data() {
            batch.len += data.len();
            batch.frames.push(data);
        }
    };
    match body.frame().await {
        None => batch.ended = true,
        Some(Err(e)) => return Err(FillError::from_box(e, UpstreamErrorKind::Body)),
        Some(Ok(frame)) => take(frame, &mut batch),
    }
    while !batch.ended && batch.len < spool::CHUNK {
        match body.frame().now_or_never() {
            None => break,
            Some(None) => batch.ended = true,
            Some(Some(Err(e))) => return Err(FillError::from_box(e, UpstreamErrorKind::Body)),
            Some(Some(Ok(frame))) => take(frame, &mut batch),
        }
    }
    Ok(batch)
}

/// A spool write in flight: the frames it writes, and how it went.
type Writing = tokio::task::JoinHandle<(Vec<Bytes>, std::io::Result<()>)>;

/// Copies the body into the spool and publishes it to the fill's clients.
///
/// Pipelined: a batch is published to clients (from memory) as soon as it
/// arrives, and written to the spool while the next batch is received, so
/// neither upstream nor the clients wait for the disk. One write is in
/// flight at a time, in order (the digest is computed as it writes), so at
/// most two batches are in memory unspooled.
async fn spool_body(
    mut body: ArtifactBody,
    head: &Head,
    tx: &watch::Sender<FillStatus>,
    expected: Option<Expected>,
) -> Result<Spooled, FillError> {
    let mut hasher = expected.as_ref().map(|e| Arc::new(Mutex::new(e.hasher())));
    let (mut written, mut received) = (0u64, 0u64);
    let mut writing: Option<Writing> = None;
    let mut ended = false;
    loop {
        let batch = if ended { None } else { Some(next_batch(&mut body).await?) };
        if let Some(batch) = &batch {
            ended = batch.ended;
            if batch.len > 0 {
                head.recent.lock().expect("recent lock").push(received, &batch.frames);
                received += batch.len as u64;
                tx.send_modify(|status| {
                    if let FillStatus::Streaming { received: r, .. } = status {
                        *r = received;
                    }
                });
            }
        }
        if let Some(write) = writing.take() {
            let (frames, wrote) = write.await.map_err(|e| FillError::Store(e.to_string().into()))?;
            match wrote {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(28 | 122)) => {
                    // ENOSPC or EDQUOT: no room, but upstream is fine.
                    let mut pending = frames;
                    pending.extend(batch.map(|b| b.frames).unwrap_or_default());
                    return Ok(Spooled::NoRoom { at: written, pending, rest: body, error: e.to_string() });
                }
                Err(e) => return Err(FillError::Store(format!("spool write failed: {e}").into())),
            }
            written += frames.iter().map(|f| f.len() as u64).sum::<u64>();
            head.recent.lock().expect("recent lock").spooled(written);
            tx.send_modify(|status| {
                if let FillStatus::Streaming { written: w, .. } = status {
                    *w = written;
                }
            });
        }
        match batch {
            Some(batch) if batch.len > 0 => {
                let file = head.file.clone();
                let hashing = hasher.clone();
                writing = Some(tokio::task::spawn_blocking(move || {
                    if let Some(h) = hashing {
                        let mut h = h.lock().expect("hasher lock");
                        batch.frames.iter().for_each(|b| h.update(b));
                    }
                    let mut f: &File = &file;
                    let wrote = batch.frames.iter().try_for_each(|b| f.write_all(b));
                    (batch.frames, wrote)
                }));
            }
            _ if ended => break,
            _ => {}
        }
    }
    if let Some(expected) = head.content_length {
        if expected != written {
            return Err(FillError::Upstream(UpstreamError::new(
                UpstreamErrorKind::Body,
                format!("upstream sent {written} of the {expected} bytes it announced"),
            )));
        }
    }
    if let (Some(expected), Some(hasher)) = (expected, hasher.take()) {
        let hasher = Arc::try_unwrap(hasher).map(|m| m.into_inner().expect("hasher lock")).ok();
        let got = hasher.map(|h| h.finish()).unwrap_or_default();
        if got != expected.digest {
            return Err(FillError::Upstream(UpstreamError::new(
                UpstreamErrorKind::Body,
                format!(
                    "digest mismatch: the metadata promised {:?} {}, upstream sent {}",
                    expected.algorithm,
                    expected.hex(),
                    hex::encode(got)
                ),
            )));
        }
    }
    Ok(Spooled::Whole(written))
}

/// Makes the spool durable as a blob, then writes the index row: only then
/// is the entry visible. Answers the entry's time to live.
async fn commit(
    store: &Store,
    job: &FillJob,
    head: &Head,
    spool_path: &std::path::Path,
    size: u64,
    store_as: &StoreAs,
    flushed: bool,
) -> Result<Option<Duration>, StoreError> {
    let file = head.file.clone();
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))??;
    let blob = match &store_as.content_address {
        Some(address) => address.clone(),
        None => new_blob_key(&job.remote.name, &job.key, job.path.file_name()),
    };
    store.blobs.put_file(&blob, spool_path, size).await?;
    let now = now_ms();
    let ttl = job.remote.ttl.for_class(job.class);
    let entry = Entry {
        key: job.key.to_string(),
        remote: job.remote.name.clone(),
        path: job.path.display(),
        blob: blob.clone(),
        size,
        class: match job.class {
            Class::Immutable => EntryClass::Immutable,
            Class::Mutable { .. } => EntryClass::Mutable,
        },
        headers: head.headers.clone(),
        cached_at_ms: now,
        expires_at_ms: match ttl {
            // Declared out of date while this fill ran: stored, but expired.
            Some(_) if flushed && job.class != Class::Immutable => Some(now - 1),
            Some(_) if store.marks.marked_since(&job.key, job.started_ms) => Some(now - 1),
            ttl => ttl.map(|d| now.saturating_add(d.as_millis() as i64)),
        },
        policy: head.policy.clone(),
    };
    let replaced_release =
        job.class != Class::Immutable && crate::format::apt::is_release(job.path.decoded());
    for (key, path) in &store_as.aliases {
        // The same bytes under another key (a manifest by digest): immutable.
        let alias = Entry {
            key: key.to_string(),
            path: path.display(),
            class: EntryClass::Immutable,
            expires_at_ms: job.remote.ttl.expiry(EntryClass::Immutable, now),
            policy: None,
            ..entry.clone()
        };
        match store.index.put(alias).await {
            Ok(_) => store.growth.add(&job.remote.name, size),
            Err(e) => tracing::warn!(key = %path.display(), error = %e, "could not store an alias entry"),
        }
    }
    let committed = store.index.put(entry).await;
    if committed.is_ok() {
        // Eviction checks the budget at once, not on its next round.
        store.growth.add(&job.remote.name, size);
    }
    match committed {
        Ok(Some(old)) if old.blob != blob => {
            if replaced_release {
                // New release file: the index files it lists must follow.
                let dir = crate::format::apt::dir_of(job.path.decoded());
                if let Err(e) = store.index.expire_under(&job.remote.name, dir, &job.key, now).await {
                    tracing::warn!(error = %e, "could not expire the index files of a new release file");
                }
            }
            // A shared blob may still be another entry's.
            if !is_shared_blob(&old.blob) {
                if let Err(e) = store.blobs.delete(&old.blob).await {
                    tracing::warn!(blob = %old.blob, error = %e, "could not delete a replaced blob");
                }
            }
            Ok(ttl)
        }
        Ok(_) => Ok(ttl),
        Err(e) => {
            if !is_shared_blob(&blob) {
                let _ = store.blobs.delete(&blob).await;
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod recent_tests {
    use super::*;

    #[test]
    fn recent_bytes_are_sliced_by_offset_and_bounded() {
        let mut r = Recent::default();
        r.push(0, &[Bytes::from_static(b"abcd"), Bytes::from_static(b""), Bytes::from_static(b"efgh")]);
        assert_eq!(r.at(0, 8).as_deref(), Some(&b"abcd"[..]));
        assert_eq!(r.at(2, 8).as_deref(), Some(&b"cd"[..]));
        assert_eq!(r.at(5, 8).as_deref(), Some(&b"fgh"[..]));
        assert_eq!(r.at(5, 6).as_deref(), Some(&b"f"[..]), "never past what is published");
        assert_eq!(r.at(8, 8), None);
        // The window keeps the newest RECENT_BYTES once they are spooled.
        let big = Bytes::from(vec![7u8; RECENT_BYTES]);
        r.push(8, &[big]);
        r.spooled(8 + RECENT_BYTES as u64);
        assert_eq!(r.at(0, 8 + RECENT_BYTES as u64), None, "forgotten: read from the spool");
        assert_eq!(r.at(8, 9).as_deref(), Some(&[7u8][..]));
        // A gap (a write this window did not see) starts it again.
        r.push(100 + RECENT_BYTES as u64, &[Bytes::from_static(b"xyz")]);
        assert_eq!(r.at(8, 9), None);
        assert_eq!(r.at(101 + RECENT_BYTES as u64, u64::MAX).as_deref(), Some(&b"yz"[..]));
    }

    #[test]
    fn bytes_not_yet_spooled_are_never_forgotten() {
        let mut r = Recent::default();
        let mib = Bytes::from(vec![1u8; 1 << 20]);
        for i in 0..8u64 {
            r.push(i << 20, std::slice::from_ref(&mib));
        }
        // Nothing is spooled: all 8 MiB stay, past the window.
        assert!(r.at(0, 8 << 20).is_some(), "the first unspooled byte is still here");
        // Once the spool has 6 MiB, the window shrinks back to its size.
        r.spooled(6 << 20);
        assert!(r.at(0, 8 << 20).is_none());
        assert!(r.at((8 << 20) - RECENT_BYTES as u64, 8 << 20).is_some());
        assert!(r.at(7 << 20, 8 << 20).is_some());
    }
}
