//! One rescue: errors travel up a stack as errors and become an HTTP answer
//! once, at its edge, by asking what caused them ([`find_cause`] over the
//! `source()` chain), never by matching strings.
//!
//! A layer that will not serve a request (no such remote, a path the
//! patterns deny) raises [`Refused`] with the status to answer; upstream
//! failures raise [`UpstreamStatus`] or [`UpstreamError`](crate::UpstreamError); the store
//! [`StoreError`](crate::store::StoreError). The front door wraps each in [`Raised`], naming the
//! format whose error shape answers it. [`RescueLayer`] goes outermost: it
//! works out a [`Problem`] (status, message, cause) and asks the format for
//! the answer ([`Spec::error_answer`](crate::format::Spec::error_answer):
//! the JSON body `{"error", "remote", "path"}` by default, the registry's
//! `{"errors": [...]}` for docker), adds `Retry-After` and `Allow`, and
//! writes `X-Cache-Status` and `X-Artifact-Source` from the answer's
//! [`CacheStatus`] extension: the one place those headers are written. It
//! also marks every answer as content that must not run on this origin
//! ([`put_sandbox_headers`]).
//!
//! ```
//! use artifactapi_layers::{rescue::{Refused, RescueLayer}, BoxError, ArtifactBody};
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let refuse = service_fn(|_req: Request<()>| async {
//!     Err::<Response<ArtifactBody>, BoxError>(Refused::new(StatusCode::FORBIDDEN, "denied").into())
//! });
//! let res = RescueLayer::new().layer(refuse).oneshot(Request::get("/files/a.tgz").body(()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! # }
//! ```

pub use crate::problem::{Cause, Problem, Refused};
use std::{
    convert::Infallible,
    error::Error as StdError,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{header, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::{
    body::ArtifactBody,
    error::{find_cause, BoxError, UpstreamStatus},
    extensions::{headers::*, CacheStatus},
    format::Package,
};

/// Where an error was raised, as the front door resolved the request: the
/// format whose error shape answers it, the remote and the (decoded) path.
/// The front door wraps every error in one; the rescue looks for it.
#[derive(Debug)]
pub struct Raised {
    format: Package,
    remote: String,
    path: String,
    source: BoxError,
}

impl Raised {
    /// `source`, raised for `path` of `remote`, answered in `format`'s shape.
    pub fn new(
        format: Package,
        remote: impl Into<String>,
        path: impl Into<String>,
        source: BoxError,
    ) -> Self {
        Self { format, remote: remote.into(), path: path.into(), source }
    }
}

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.source.fmt(f)
    }
}

impl StdError for Raised {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// The answer to `e`, in the error shape of the format it was raised for
/// ([`Raised`]); an error raised outside the front door is answered as JSON
/// for `path` (as requested, percent-encoded) of `remote`.
pub fn answer(e: &(dyn StdError + 'static), remote: &str, path: &str) -> Response<ArtifactBody> {
    let requested = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let (format, remote, path) = match find_cause::<Raised>(e) {
        Some(raised) => (raised.format, raised.remote.as_str(), raised.path.as_str()),
        None => (Package::GENERIC, remote, &*requested),
    };
    let mut answer = format.format().spec().error_answer(&Problem::of(e, remote, path));
    if let Some(retry_after) = find_cause::<UpstreamStatus>(e).and_then(UpstreamStatus::retry_after) {
        answer.headers_mut().insert(header::RETRY_AFTER, retry_after.clone());
    }
    if let Some(allow) = find_cause::<Refused>(e).and_then(|r| r.allow) {
        answer.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    answer
}

/// Writes the answer's [`CacheStatus`] extension as `X-Cache-Status` and
/// `X-Artifact-Source` (a local repository's answers have no cache status):
/// the only place these headers are written.
pub fn put_cache_headers<B>(response: &mut Response<B>) {
    let Some(status) = response.extensions().get::<CacheStatus>().copied() else { return };
    let headers = response.headers_mut();
    headers.insert(X_ARTIFACT_SOURCE, status.source());
    if status != CacheStatus::Local {
        headers.insert(X_CACHE_STATUS, status.header_value());
    }
}

/// Writes `Content-Security-Policy: sandbox` and `X-Content-Type-Options:
/// nosniff`. An artifact answer carries upstream's (or an uploader's)
/// bytes on this proxy's origin, where `/ui/` lives: an HTML page upstream
/// serves (a directory listing, a file it marks `inline`) would otherwise
/// run its scripts with this origin's rights. `sandbox` gives the document
/// an opaque origin and no scripts; `nosniff` keeps a browser from finding
/// HTML in a file labelled as something else. Package managers and
/// registry clients ignore both. Written on every answer, errors included,
/// since an upstream error page is upstream's content too.
pub fn put_sandbox_headers<B>(response: &mut Response<B>) {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

/// Applies [`Rescue`] to a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct RescueLayer;

impl RescueLayer {
    /// The rescue.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rescue { inner }
    }
}

/// Middleware at the edge: answers every error of `inner` (see [`answer`])
/// and writes the cache headers ([`put_cache_headers`]) and the sandbox
/// headers ([`put_sandbox_headers`]) of every answer.
#[derive(Debug, Clone)]
pub struct Rescue<S> {
    inner: S,
}

impl<S> Rescue<S> {
    crate::inner_accessors!();
}

impl<S, B> Service<Request<B>> for Rescue<S>
where
    S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError>,
{
    type Response = Response<ArtifactBody>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A service that cannot take requests any more is answered per request.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let full = req.uri().path().trim_start_matches('/');
        let (remote, path) = full.split_once('/').unwrap_or((full, ""));
        let named = (remote.to_owned(), path.to_owned());
        ResponseFuture { inner: self.inner.call(req), named: Some(named) }
    }
}

pin_project! {
    /// The answer of [`Rescue`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        named: Option<(String, String)>,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ArtifactBody>, BoxError>>,
{
    type Output = Result<Response<ArtifactBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = match std::task::ready!(this.inner.poll(cx)) {
            Ok(mut res) => {
                put_cache_headers(&mut res);
                res
            }
            Err(e) => {
                let (remote, path) = this.named.take().unwrap_or_default();
                answer(&*e, &remote, &path)
            }
        };
        put_sandbox_headers(&mut res);
        Poll::Ready(Ok(res))
    }
}

#[cfg(test)]
mod tests;
