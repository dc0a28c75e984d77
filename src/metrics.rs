//! Prometheus metrics, served at `GET /metrics` (OpenMetrics text).
//!
//! Labels are bounded: a remote's name (only configured ones; anything else
//! is `unknown`), a class, a cache result, a status class — never a path.
//!
//! - `artifactapi_requests_total{remote,class,cache,status}`: artifact and
//!   registry requests by cache result (`hit`, `miss`, `expired`, `stale`,
//!   `revalidated`, `local`, `none`, `error`) and status class.
//! - `artifactapi_served_bytes_total{remote,source}`: body bytes sent to
//!   clients from the `cache`, from `upstream` as it arrives, or `local`.
//! - `artifactapi_transfers_in_flight`: responses whose body is being sent.
//! - `artifactapi_upstream_requests_total{remote,outcome}` (`2xx`…`5xx`,
//!   `timeout`, `connect`, `error`) and
//!   `artifactapi_upstream_latency_seconds{remote}`: upstream requests, and
//!   the time to their answer's head.
//! - `artifactapi_fills_total`, `artifactapi_coalesced_requests_total`
//!   (requests that joined a fill in flight: single flight at work),
//!   `artifactapi_fill_failures_total`, `artifactapi_store_failures_total`,
//!   `artifactapi_store_full_total` (served uncached: no room),
//!   `artifactapi_fills_in_flight`.
//! - `artifactapi_store_entries{remote}`, `artifactapi_store_bytes{remote}`:
//!   what the index holds (one grouped query a scrape).
//! - `artifactapi_purged_entries_total{remote}`: entries purged by operators;
//!   `artifactapi_evicted_entries_total`, `artifactapi_evicted_bytes_total`:
//!   evicted to keep within the budget.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Instant,
};

use artifactapi_layers::{
    error::{find_cause, BoxError, UpstreamError, UpstreamErrorKind},
    extensions::{headers::X_ARTIFACT_SOURCE, headers::X_CACHE_STATUS, Classification},
    store::Store,
    tee::TeeStats,
    ArtifactBody, ResolvedRemote, SharedRemotes,
};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    remote: String,
    class: &'static str,
    cache: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    remote: String,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    remote: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemoteLabel {
    remote: String,
}

type Latency = Family<RemoteLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 5 ms to about 80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Every metric, and what the scrape reads on demand.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    served_bytes: Family<SourceLabels, Counter>,
    transfers: Gauge,
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_latency: Latency,
    fills: Counter,
    coalesced: Counter,
    fill_failures: Counter,
    store_failures: Counter,
    store_full: Counter,
    fills_in_flight: Gauge,
    store_entries: Family<RemoteLabel, Gauge>,
    store_bytes: Family<RemoteLabel, Gauge>,
    purged: Family<RemoteLabel, Counter>,
    evicted_entries: Counter,
    evicted_bytes: Counter,
    tee: Vec<Arc<TeeStats>>,
    store: Store,
    remotes: SharedRemotes,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics of the stacks whose fills `tee` counts, over `store`.
    pub fn new(store: Store, tee: Vec<Arc<TeeStats>>, remotes: SharedRemotes) -> Self {
        let mut registry = Registry::with_prefix("artifactapi");
        let requests = Family::default();
        registry.register("requests", "Artifact and registry requests by cache result", requests.clone());
        let served_bytes = Family::default();
        registry.register(
            "served_bytes",
            "Body bytes sent to clients, by where they came from",
            served_bytes.clone(),
        );
        let transfers = Gauge::default();
        registry.register("transfers_in_flight", "Responses whose body is being sent", transfers.clone());
        let upstream_requests = Family::default();
        registry.register(
            "upstream_requests",
            "Requests sent upstream, by outcome",
            upstream_requests.clone(),
        );
        let upstream_latency: Latency = Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_latency_seconds",
            "Time from an upstream request to its answer's head",
            upstream_latency.clone(),
        );
        let fills = Counter::default();
        registry.register("fills", "Upstream fetches of whole bodies into the store", fills.clone());
        let coalesced = Counter::default();
        registry.register("coalesced_requests", "Requests that joined a fill in flight", coalesced.clone());
        let fill_failures = Counter::default();
        registry.register(
            "fill_failures",
            "Fills that failed (upstream, broken body, digest)",
            fill_failures.clone(),
        );
        let store_failures = Counter::default();
        registry.register(
            "store_failures",
            "Complete bodies the store could not take",
            store_failures.clone(),
        );
        let store_full = Counter::default();
        registry.register(
            "store_full",
            "Bodies served uncached because the store had no room",
            store_full.clone(),
        );
        let fills_in_flight = Gauge::default();
        registry.register("fills_in_flight", "Fills running now", fills_in_flight.clone());
        let store_entries = Family::default();
        registry.register("store_entries", "Entries in the index", store_entries.clone());
        let store_bytes = Family::default();
        registry.register("store_bytes", "Bytes of the entries in the index", store_bytes.clone());
        let purged = Family::default();
        registry.register(
            "purged_entries",
            "Entries removed by DELETE /cache/{remote}/{path}",
            purged.clone(),
        );
        let evicted_entries = Counter::default();
        registry.register(
            "evicted_entries",
            "Entries evicted to keep within the budget",
            evicted_entries.clone(),
        );
        let evicted_bytes = Counter::default();
        registry.register("evicted_bytes", "Bytes of the entries evicted", evicted_bytes.clone());
        Self {
            registry,
            requests,
            served_bytes,
            transfers,
            upstream_requests,
            upstream_latency,
            fills,
            coalesced,
            fill_failures,
            store_failures,
            store_full,
            fills_in_flight,
            store_entries,
            store_bytes,
            purged,
            evicted_entries,
            evicted_bytes,
            tee,
            store,
            remotes,
        }
    }

    /// The remote label for `name`: configured names only.
    fn remote_label(&self, name: &str) -> String {
        if self.remotes.load().get(name).is_some() {
            name.to_owned()
        } else {
            "unknown".to_owned()
        }
    }

    /// Counts `n` entries of `remote` purged.
    pub fn purged(&self, remote: &str, n: u64) {
        self.purged.get_or_create(&RemoteLabel { remote: self.remote_label(remote) }).inc_by(n);
    }

    /// Counts an eviction round.
    pub fn evicted(&self, entries: u64, bytes: u64) {
        self.evicted_entries.inc_by(entries);
        self.evicted_bytes.inc_by(bytes);
    }

    /// The OpenMetrics text of every metric.
    pub async fn render(&self) -> String {
        let sum = |read: fn(&TeeStats) -> &AtomicU64| {
            self.tee.iter().map(|t| read(t).load(Ordering::Relaxed)).sum()
        };
        self.fills.inner().store(sum(|t| &t.fills), Ordering::Relaxed);
        self.coalesced.inner().store(sum(|t| &t.coalesced), Ordering::Relaxed);
        self.fill_failures.inner().store(sum(|t| &t.failed), Ordering::Relaxed);
        self.store_failures.inner().store(sum(|t| &t.store_failures), Ordering::Relaxed);
        self.store_full.inner().store(sum(|t| &t.store_full), Ordering::Relaxed);
        self.fills_in_flight.set(sum(|t| &t.in_flight) as i64);
        // One grouped index query a scrape (scrapes come every 15-60 s).
        match self.store.index.usage().await {
            Ok(usage) => {
                self.store_entries.clear();
                self.store_bytes.clear();
                for u in usage {
                    let label = RemoteLabel { remote: u.remote };
                    self.store_entries.get_or_create(&label).set(u.entries as i64);
                    self.store_bytes.get_or_create(&label).set(u.bytes as i64);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read store sizes for /metrics"),
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        text
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

fn cache_result(response: &Response<ArtifactBody>) -> &'static str {
    match response.headers().get(X_CACHE_STATUS).map(|v| v.as_bytes()) {
        Some(b"HIT") => "hit",
        Some(b"MISS") => "miss",
        Some(b"EXPIRED") => "expired",
        Some(b"STALE") => "stale",
        Some(b"REVALIDATED") => "revalidated",
        Some(_) => "other",
        None if response.headers().get(X_ARTIFACT_SOURCE).is_some_and(|v| v == "local") => "local",
        None => "none",
    }
}

/// Where an [`Observe`] layer stands, which decides what it records.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// Requests answered and bytes sent (where remote and class are known).
    Requests,
    /// Upstream requests: outcome and latency (around the upstream service).
    Upstream,
}

/// Records metrics and spans for the requests that pass.
#[derive(Clone, Debug)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
    stage: Stage,
}

impl ObserveLayer {
    /// Counts the requests a stack answers and the bytes it sends. Placed
    /// where the remote and class are known (after the pattern guard).
    pub fn requests(metrics: Arc<Metrics>) -> Self {
        Self { metrics, stage: Stage::Requests }
    }

    /// Counts upstream requests by outcome and times them to their answer's
    /// head. Wraps the innermost (upstream) service.
    pub fn upstream(metrics: Arc<Metrics>) -> Self {
        Self { metrics, stage: Stage::Upstream }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, metrics: self.metrics.clone(), stage: self.stage }
    }
}

/// See [`ObserveLayer`].
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<Metrics>,
    stage: Stage,
}

impl<S, B> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<ArtifactBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ArtifactBody>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The readied service goes with this call; a clone stays for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        let remote = match req.extensions().get::<ResolvedRemote>() {
            Some(ResolvedRemote(remote)) => metrics.remote_label(&remote.name),
            None => "unknown".to_owned(),
        };
        match self.stage {
            Stage::Requests => {
                let class = match req.extensions().get::<Classification>() {
                    Some(Classification(class)) => class.as_str(),
                    None => "none",
                };
                let span = tracing::info_span!(
                    "artifact",
                    remote = %remote,
                    class,
                    method = %req.method(),
                    cache = tracing::field::Empty,
                    status = tracing::field::Empty,
                    bytes = tracing::field::Empty,
                    coalesced = tracing::field::Empty,
                );
                let call = observe_request(inner.oneshot(req), metrics, remote, class, span.clone());
                Box::pin(call.instrument(span))
            }
            Stage::Upstream => {
                let span = tracing::info_span!(
                    "upstream",
                    remote = %remote,
                    outcome = tracing::field::Empty,
                    status = tracing::field::Empty,
                    latency_ms = tracing::field::Empty,
                );
                let call = observe_upstream(inner.oneshot(req), metrics, remote, span.clone());
                Box::pin(call.instrument(span))
            }
        }
    }
}

async fn observe_request(
    call: impl std::future::Future<Output = Result<Response<ArtifactBody>, BoxError>>,
    metrics: Arc<Metrics>,
    remote: String,
    class: &'static str,
    record: tracing::Span,
) -> Result<Response<ArtifactBody>, BoxError> {
    let labels = |cache, status| RequestLabels { remote: remote.clone(), class, cache, status };
    match call.await {
        Ok(response) => {
            let status = status_class(response.status().as_u16());
            let cache = cache_result(&response);
            record.record("cache", cache);
            record.record("status", response.status().as_u16());
            metrics.requests.get_or_create(&labels(cache, status)).inc();
            let source = match response.headers().get(X_ARTIFACT_SOURCE).map(|v| v.as_bytes()) {
                Some(b"remote") => "upstream",
                Some(b"local") => "local",
                _ => "cache",
            };
            let bytes =
                metrics.served_bytes.get_or_create(&SourceLabels { remote: remote.clone(), source }).clone();
            let transfers = metrics.transfers.clone();
            transfers.inc();
            Ok(response
                .map(|body| Counted { inner: body, bytes, transfers, span: record, sent: 0 }.boxed_unsync()))
        }
        Err(e) => {
            record.record("cache", "error");
            metrics.requests.get_or_create(&labels("error", "error")).inc();
            Err(e)
        }
    }
}

async fn observe_upstream(
    call: impl std::future::Future<Output = Result<Response<ArtifactBody>, BoxError>>,
    metrics: Arc<Metrics>,
    remote: String,
    record: tracing::Span,
) -> Result<Response<ArtifactBody>, BoxError> {
    let started = Instant::now();
    let result = call.await;
    let outcome = match &result {
        Ok(response) => status_class(response.status().as_u16()),
        Err(e) => match find_cause::<UpstreamError>(&**e).map(UpstreamError::kind) {
            Some(UpstreamErrorKind::Timeout) => "timeout",
            Some(UpstreamErrorKind::Connect) => "connect",
            _ => "error",
        },
    };
    let elapsed = started.elapsed();
    record.record("outcome", outcome);
    record.record("latency_ms", elapsed.as_secs_f64() * 1000.0);
    if let Ok(response) = &result {
        record.record("status", response.status().as_u16());
    }
    metrics
        .upstream_latency
        .get_or_create(&RemoteLabel { remote: remote.clone() })
        .observe(elapsed.as_secs_f64());
    metrics.upstream_requests.get_or_create(&UpstreamLabels { remote, outcome }).inc();
    result
}

pin_project_lite::pin_project! {
    /// A body that counts its bytes, and a transfer until it is dropped
    /// (when its span, which ends with it, learns how many were sent).
    struct Counted {
        #[pin]
        inner: ArtifactBody,
        bytes: Counter,
        transfers: Gauge,
        span: tracing::Span,
        sent: u64,
    }

    impl PinnedDrop for Counted {
        fn drop(this: Pin<&mut Self>) {
            this.transfers.dec();
            this.span.record("bytes", this.sent);
        }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.bytes.inc_by(data.len() as u64);
                *this.sent += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
