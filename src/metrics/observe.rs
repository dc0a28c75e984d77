//! [`ObserveLayer`]: counts the requests that pass, times upstream answers
//! and opens their spans.

use std::{
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
    time::Instant,
};

use artifactapi_layers::{
    error::{find_cause, BoxError, UpstreamError, UpstreamErrorKind},
    extensions::{CacheStatus, Classification},
    ArtifactBody, ResolvedRemote,
};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument;

use crate::access_log::AccessNote;

use super::{
    registry::{Metrics, RemoteLabel, RequestLabels, SourceLabels, UpstreamLabels},
    tally::RemoteTally,
};

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
    match response.extensions().get::<CacheStatus>() {
        Some(CacheStatus::Hit) => "hit",
        Some(CacheStatus::Miss) => "miss",
        Some(CacheStatus::Expired) => "expired",
        Some(CacheStatus::Stale) => "stale",
        Some(CacheStatus::Revalidated) => "revalidated",
        Some(CacheStatus::Local) => "local",
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
        let resolved = req.extensions().get::<ResolvedRemote>();
        let remote = match resolved {
            Some(ResolvedRemote(remote)) => metrics.remote_label(&remote.name),
            None => "unknown".to_owned(),
        };
        let note = req.extensions().get::<AccessNote>().cloned();
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
                if let Some(note) = &note {
                    note.with(|n| n.remote = resolved.map(|r| r.0.clone()));
                }
                let call = observe_request(inner.oneshot(req), metrics, remote, class, span.clone(), note);
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
                let call = observe_upstream(inner.oneshot(req), metrics, remote, span.clone(), note);
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
    note: Option<AccessNote>,
) -> Result<Response<ArtifactBody>, BoxError> {
    let labels = |cache, status| RequestLabels { remote: remote.clone(), class, cache, status };
    let tally = metrics.tally.remote(&remote);
    tally.requests.fetch_add(1, Ordering::Relaxed);
    match call.await {
        Ok(response) => {
            let status = status_class(response.status().as_u16());
            let cache = cache_result(&response);
            let counted = match cache {
                "hit" | "revalidated" => Some(&tally.hits),
                "miss" | "expired" => Some(&tally.misses),
                "stale" => Some(&tally.stale),
                _ => None,
            };
            if let Some(n) = counted {
                n.fetch_add(1, Ordering::Relaxed);
            }
            record.record("cache", cache);
            record.record("status", response.status().as_u16());
            metrics.requests.get_or_create(&labels(cache, status)).inc();
            let source = match response.extensions().get::<CacheStatus>() {
                Some(CacheStatus::Miss | CacheStatus::Expired) => "upstream",
                Some(CacheStatus::Local) => "local",
                _ => "cache",
            };
            if let Some(note) = &note {
                note.with(|n| (n.cache, n.source) = (Some(cache), Some(source)));
            }
            let bytes =
                metrics.served_bytes.get_or_create(&SourceLabels { remote: remote.clone(), source }).clone();
            let transfers = metrics.transfers.clone();
            transfers.inc();
            let upstream = source == "upstream";
            Ok(response.map(|body| {
                Counted { inner: body, bytes, transfers, span: record, sent: 0, tally, upstream }
                    .boxed_unsync()
            }))
        }
        Err(e) => {
            if let Some(note) = &note {
                note.with(|n| n.cache = Some("error"));
            }
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
    note: Option<AccessNote>,
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
    if let Some(note) = &note {
        note.with(|n| n.upstream_ms = Some(elapsed.as_secs_f64() * 1000.0));
    }
    record.record("outcome", outcome);
    record.record("latency_ms", elapsed.as_secs_f64() * 1000.0);
    if let Ok(response) = &result {
        record.record("status", response.status().as_u16());
    }
    metrics
        .upstream_latency
        .get_or_create(&RemoteLabel { remote: remote.clone() })
        .observe(elapsed.as_secs_f64());
    if matches!(outcome, "5xx" | "timeout" | "connect" | "error") {
        metrics.tally.remote(&remote).upstream_errors.fetch_add(1, Ordering::Relaxed);
    }
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
        tally: Arc<RemoteTally>,
        upstream: bool,
    }

    impl PinnedDrop for Counted {
        fn drop(this: Pin<&mut Self>) {
            this.transfers.dec();
            this.span.record("bytes", this.sent);
            let bytes = if this.upstream { &this.tally.bytes_upstream } else { &this.tally.bytes_cache };
            bytes.fetch_add(this.sent, Ordering::Relaxed);
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
