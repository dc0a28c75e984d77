use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{self, Either, Ready};
use http::{Request, Response, StatusCode};
use tower::Service;

use crate::{
    body::ArtifactBody,
    error::BoxError,
    path::ArtifactPath,
    remote::{Remote, SharedRemotes},
    rescue::Refused,
};

/// The remote a request is for, attached as a request extension.
#[derive(Debug, Clone)]
pub struct ResolvedRemote(pub Arc<Remote>);

/// Middleware that resolves the remote and validates the path.
#[derive(Debug, Clone)]
pub struct RemoteResolve<S> {
    inner: S,
    remotes: SharedRemotes,
}

impl<S> RemoteResolve<S> {
    /// Wraps `inner`, resolving names against `remotes`.
    pub fn new(inner: S, remotes: impl Into<SharedRemotes>) -> Self {
        Self { inner, remotes: remotes.into() }
    }

    crate::inner_accessors!();
}

impl<S, B> Service<Request<B>> for RemoteResolve<S>
where
    S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError>,
{
    type Response = Response<ArtifactBody>;
    type Error = BoxError;
    type Future = Either<Ready<Result<Response<ArtifactBody>, BoxError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let full = req.uri().path().trim_start_matches('/');
        let (name, rest) = full.split_once('/').unwrap_or((full, ""));
        let Some(remote) = self.remotes.load().get(name).cloned() else {
            let refused = Refused::new(StatusCode::NOT_FOUND, "unknown remote");
            return Either::Left(future::err(refused.into()));
        };
        let path = match ArtifactPath::parse(rest, req.uri().query()) {
            Ok(path) => path,
            Err(e) => return Either::Left(future::err(e.into())),
        };
        req.extensions_mut().insert(ResolvedRemote(remote.clone()));
        req.extensions_mut().insert(path);
        Either::Right(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{body, remote::Remote};
    use http_body_util::BodyExt;
    use tower::{service_fn, ServiceExt};

    fn svc(
    ) -> impl Service<Request<()>, Response = Response<ArtifactBody>, Error = std::convert::Infallible> + Clone
    {
        let remotes =
            crate::remote::Remotes::new([Remote::proxy("gh", "https://github.com".parse().unwrap())]);
        use tower::Layer;
        crate::rescue::RescueLayer::new().layer(RemoteResolve::new(
            service_fn(|req: Request<()>| async move {
                let remote = req.extensions().get::<ResolvedRemote>().expect("remote attached");
                let path = req.extensions().get::<ArtifactPath>().expect("path attached");
                let text = format!("{}|{}|{}|{:?}", remote.0.name, path.decoded(), path.raw(), path.query());
                Ok::<_, BoxError>(Response::new(body::full(text)))
            }),
            Arc::new(remotes),
        ))
    }

    async fn call(uri: &str) -> (StatusCode, String) {
        let res = svc().oneshot(Request::get(uri).body(()).unwrap()).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn attaches_remote_and_path() {
        let (status, text) = call("/gh/o/r/a%20b.tgz?x=1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text, "gh|o/r/a b.tgz|o/r/a%20b.tgz|Some(\"x=1\")");
    }

    #[tokio::test]
    async fn unknown_remote_is_404_with_json() {
        let (status, text) = call("/nope/a.tgz").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["remote"], "nope");
        assert_eq!(json["path"], "a.tgz");
        assert_eq!(json["error"], "unknown remote");
    }

    #[tokio::test]
    async fn refused_paths_never_reach_the_inner_service() {
        for uri in ["/gh/a/../b", "/gh/a/%2e%2e/b", "/gh/a%00", "/gh/", "/gh", "/gh/a//b"] {
            let (status, text) = call(uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {text}");
            assert!(text.contains("\"error\""), "{uri}: {text}");
        }
    }
}
