//! One rescue: errors travel up a stack as errors and become an HTTP answer
//! once, at its edge, by asking what caused them ([`find_cause`] over the
//! `source()` chain), never by matching strings.
//!
//! A layer that will not serve a request (no such remote, a path the
//! patterns deny) raises [`Refused`] with the status to answer; upstream
//! failures raise [`UpstreamStatus`] or [`UpstreamError`]; the store
//! [`StoreError`]. [`RescueLayer`] goes outermost and answers each with the
//! JSON error body `{"error", "remote", "path"}`.
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

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{header, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::{
    body::ArtifactBody,
    error::{find_cause, json_error, BoxError, UpstreamError, UpstreamStatus},
    path::PathError,
    store::StoreError,
};

/// A request a layer will not serve, with the status to answer.
#[derive(Debug, Clone)]
pub struct Refused {
    status: StatusCode,
    message: String,
}

impl Refused {
    /// Refused with `status`, saying `message` to the client.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    /// The status answered.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

/// The answer to `e`, raised for `path` (as requested, percent-encoded) of
/// `remote`.
pub fn answer(e: &(dyn std::error::Error + 'static), remote: &str, path: &str) -> Response<ArtifactBody> {
    let path = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    if let Some(refused) = find_cause::<Refused>(e) {
        return json_error(refused.status, &refused.message, remote, &path);
    }
    if let Some(status) = find_cause::<UpstreamStatus>(e) {
        let mut answer = json_error(status.client_status(), &status.to_string(), remote, &path);
        if let Some(retry_after) = status.retry_after() {
            answer.headers_mut().insert(header::RETRY_AFTER, retry_after.clone());
        }
        return answer;
    }
    if let Some(upstream) = find_cause::<UpstreamError>(e) {
        tracing::warn!(remote, path = %path, error = %upstream, "upstream failed");
        return json_error(upstream.status(), &upstream.to_string(), remote, &path);
    }
    if let Some(bad) = find_cause::<PathError>(e) {
        return json_error(bad.status(), &bad.to_string(), remote, &path);
    }
    if let Some(store) = find_cause::<StoreError>(e) {
        tracing::error!(remote, path = %path, error = %store, "store failed");
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "cache store unavailable", remote, &path);
    }
    tracing::error!(remote, path = %path, error = %e, "request failed");
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error", remote, &path)
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

/// Middleware that answers every error of `inner` (see [`answer`]); for
/// `/{remote}/{path}` requests.
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
        match std::task::ready!(this.inner.poll(cx)) {
            Ok(res) => Poll::Ready(Ok(res)),
            Err(e) => {
                let (remote, path) = this.named.take().unwrap_or_default();
                Poll::Ready(Ok(answer(&*e, &remote, &path)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use http_body_util::BodyExt;
    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::error::UpstreamErrorKind;

    async fn rescued(e: BoxError) -> (StatusCode, Option<HeaderValue>, serde_json::Value) {
        let e = std::sync::Mutex::new(Some(e));
        let failing = service_fn(move |_req: Request<()>| {
            let e = e.lock().unwrap().take().expect("called once");
            async move { Err::<Response<ArtifactBody>, BoxError>(e) }
        });
        let res = RescueLayer::new()
            .layer(failing)
            .oneshot(Request::get("/files/dir/a%20b.tgz").body(()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let retry = res.headers().get(header::RETRY_AFTER).cloned();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, retry, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn each_cause_gets_its_status_and_the_json_body() {
        let (status, _, body) =
            rescued(Refused::new(StatusCode::FORBIDDEN, "denied by pattern").into()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body,
            serde_json::json!({"error": "denied by pattern", "remote": "files", "path": "dir/a b.tgz"})
        );
        let limited = UpstreamStatus::new(StatusCode::TOO_MANY_REQUESTS, Some(HeaderValue::from_static("7")));
        let (status, retry, _) = rescued(limited.into()).await;
        assert_eq!((status, retry), (StatusCode::TOO_MANY_REQUESTS, Some(HeaderValue::from_static("7"))));
        let timeout = UpstreamError::new(UpstreamErrorKind::Timeout, "slow");
        assert_eq!(rescued(timeout.into()).await.0, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(rescued(StoreError::NotFound.into()).await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rescued("something else".into()).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn a_cause_is_found_down_the_source_chain() {
        #[derive(Debug)]
        struct Wrapped(Refused);
        impl fmt::Display for Wrapped {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "wrapped")
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let (status, _, body) = rescued(Box::new(Wrapped(Refused::new(StatusCode::GONE, "gone")))).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::GONE, Some("gone")));
    }
}
