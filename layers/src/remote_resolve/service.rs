use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::{future::BoxFuture, FutureExt, TryFutureExt};
use http::{Request, Response, StatusCode};
use tower::Service;

use crate::{
    body::ArtifactBody,
    error::BoxError,
    format::{
        docker::{self, door},
        Package,
    },
    path::ArtifactPath,
    remote::{Remote, SharedRemotes},
    rescue::{Raised, Refused},
};

/// The remote a request is for, attached as a request extension.
#[derive(Debug, Clone)]
pub struct ResolvedRemote(pub Arc<Remote>);

/// Which URL form a request came in by, attached as a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// `/{remote}/{path}` (mounted at `/api` and `/api/v1/remote`).
    Remotes,
    /// The registry API, `/v2/...` (the path not stripped): see
    /// [`door`](crate::format::docker::door).
    Registry,
}

/// Middleware that resolves the remote and validates the path.
#[derive(Debug, Clone)]
pub struct RemoteResolve<S> {
    inner: S,
    remotes: SharedRemotes,
    door: Door,
}

impl<S> RemoteResolve<S> {
    /// Wraps `inner`, resolving `/{remote}/{path}` against `remotes`.
    pub fn new(inner: S, remotes: impl Into<SharedRemotes>) -> Self {
        Self { inner, remotes: remotes.into(), door: Door::Remotes }
    }

    /// Wraps `inner`, resolving `/v2/...` against the docker remotes of
    /// `remotes`.
    pub fn registry(inner: S, remotes: impl Into<SharedRemotes>) -> Self {
        Self { inner, remotes: remotes.into(), door: Door::Registry }
    }

    crate::inner_accessors!();
}

/// A request resolved: what the inner services see as extensions.
struct Resolution {
    remote: Arc<Remote>,
    path: ArtifactPath,
    call: Option<door::RegistryCall>,
}

impl<S> RemoteResolve<S> {
    /// Resolves the request's path; an error comes with the format, remote
    /// and path to answer it for.
    fn resolve<B>(&self, req: &Request<B>) -> Result<Resolution, Raised> {
        let query = req.uri().query();
        match self.door {
            Door::Remotes => {
                let full = req.uri().path().trim_start_matches('/');
                let (name, rest) = full.split_once('/').unwrap_or((full, ""));
                let decoded = || percent_encoding::percent_decode_str(rest).decode_utf8_lossy().into_owned();
                let Some(remote) = self.remotes.load().get(name).cloned() else {
                    let refused = Refused::new(StatusCode::NOT_FOUND, "unknown remote");
                    return Err(Raised::new(Package::GENERIC, name, decoded(), refused.into()));
                };
                match ArtifactPath::parse(rest, query) {
                    Ok(path) => Ok(Resolution { remote, path, call: None }),
                    Err(e) => Err(Raised::new(remote.package, name, decoded(), e.into())),
                }
            }
            Door::Registry => {
                let rest = req.uri().path().strip_prefix("/v2/").unwrap_or_default();
                match door::resolve(rest, query, &self.remotes.load()) {
                    Ok(door::Resolved { remote, path, call }) => {
                        Ok(Resolution { remote, path, call: Some(call) })
                    }
                    Err(e) => {
                        let rest = percent_encoding::percent_decode_str(rest).decode_utf8_lossy();
                        Err(Raised::new(docker::REGISTRY, "", rest, e))
                    }
                }
            }
        }
    }
}

impl<S, B> Service<Request<B>> for RemoteResolve<S>
where
    S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<ArtifactBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ArtifactBody>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Resolution { remote, path, call } = match self.resolve(&req) {
            Ok(resolution) => resolution,
            Err(raised) => return futures_util::future::err(raised.into()).boxed(),
        };
        // Errors from here on are answered in the remote's format.
        let raised = (remote.package, remote.name.clone(), path.decoded().to_owned());
        if let Some(status) = remote.package.format().routes().and_then(|r| r.answers_itself(&remote, &path))
        {
            let (format, remote, path) = raised;
            if status.is_success() {
                let mut res = Response::new(crate::body::empty());
                *res.status_mut() = status;
                return futures_util::future::ok(res).boxed();
            }
            let refused = Refused::new(status, "not served by this remote");
            return futures_util::future::err(Raised::new(format, remote, path, refused.into()).into())
                .boxed();
        }
        let extensions = req.extensions_mut();
        if let Some(coordinates) = remote.package.format().coordinates(&path) {
            extensions.insert(coordinates);
        }
        if let Some(call) = call {
            extensions.insert(call);
        }
        extensions.insert(self.door);
        extensions.insert(ResolvedRemote(remote));
        extensions.insert(path);
        self.inner
            .call(req)
            .map_err(move |e| {
                let (format, remote, path) = raised;
                BoxError::from(Raised::new(format, remote, path, e))
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{body, format::Coordinates, remote::Remote};
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

    /// What a door attaches, as text: remote, path, door, coordinates and
    /// the registry call.
    fn seen(req: &Request<()>) -> String {
        let e = req.extensions();
        let coordinates = e.get::<Coordinates>().map(|c| format!("{}@{:?}", c.name, c.version));
        let call = e.get::<door::RegistryCall>().map(|c| format!("{} {}", c.name, c.target.suffix()));
        format!(
            "{}|{}|{:?}|{coordinates:?}|{call:?}",
            e.get::<ResolvedRemote>().unwrap().0.name,
            e.get::<ArtifactPath>().unwrap().decoded(),
            e.get::<Door>().unwrap(),
        )
    }

    #[tokio::test]
    async fn both_doors_attach_remote_path_and_coordinates_and_errors_come_in_the_formats_shape() {
        use tower::Layer;
        let mut pypi = Remote::proxy("pypi", "https://pypi.example.internal".parse().unwrap());
        pypi.package = Package::parse("pypi").unwrap();
        let mut hub = Remote::proxy("hub", "https://registry-1.docker.io".parse().unwrap());
        hub.package = Package::parse("docker").unwrap();
        hub.format_options =
            crate::format::options::FormatOptions::new(crate::format::options::RegistryHosts(vec![
                "docker.io".into(),
            ]));
        let remotes: SharedRemotes = Arc::new(crate::remote::Remotes::new([pypi, hub])).into();
        let inner = service_fn(|req: Request<()>| async move {
            if req.uri().path().ends_with("/fail") || req.uri().path().contains("/manifests/fail") {
                return Err(BoxError::from(crate::error::UpstreamStatus::new(StatusCode::NOT_FOUND, None)));
            }
            Ok::<_, BoxError>(Response::new(body::full(seen(&req))))
        });
        let front = crate::rescue::RescueLayer::new().layer(RemoteResolve::new(inner, remotes.clone()));
        let registry = crate::rescue::RescueLayer::new().layer(RemoteResolve::registry(inner, remotes));
        let text = |res: Response<ArtifactBody>| async move {
            let status = res.status();
            (status, String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
        };
        let get = |uri: &str| Request::get(uri).body(()).unwrap();

        let (status, body) =
            text(front.clone().oneshot(get("/pypi/packages/Foo_Bar-1.0.tar.gz")).await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, r#"pypi|packages/Foo_Bar-1.0.tar.gz|Remotes|Some("foo-bar@Some(\"1.0\")")|None"#);

        let (_, body) = text(
            registry.clone().oneshot(get("/v2/library/nginx/manifests/1.27?ns=docker.io")).await.unwrap(),
        )
        .await;
        assert_eq!(
            body,
            r#"hub|library/nginx/manifests/1.27|Registry|Some("library/nginx@Some(\"1.27\")")|Some("library/nginx manifests/1.27")"#
        );

        // Errors: JSON on /api, the registry's shape on /v2/, before and after resolving.
        let (status, body) = text(front.clone().oneshot(get("/pypi/fail")).await.unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains(r#""remote":"pypi""#), "{body}");
        let (status, body) =
            text(registry.clone().oneshot(get("/v2/hub/x/manifests/fail")).await.unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("MANIFEST_UNKNOWN"), "{body}");
        let (status, body) =
            text(registry.clone().oneshot(get("/v2/x/manifests/1?ns=quay.io")).await.unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("NAME_UNKNOWN"), "{body}");
        let (status, body) = text(registry.oneshot(get("/v2/hub/Bad/manifests/1")).await.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("NAME_INVALID"), "{body}");
    }
}
