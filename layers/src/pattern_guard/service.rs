use std::task::{Context, Poll};

use futures_util::future::{self, Either, Ready};
use http::{Request, Response, StatusCode};
use tower::Service;

use crate::{
    body::ArtifactBody, error::BoxError, extensions::Classification, path::ArtifactPath, pattern::Decision,
    remote_resolve::ResolvedRemote, rescue::Refused,
};

/// Middleware that allows or denies a path and attaches its class.
#[derive(Debug, Clone)]
pub struct PatternGuard<S> {
    inner: S,
}

impl<S> PatternGuard<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    crate::inner_accessors!();
}

impl<S, B> Service<Request<B>> for PatternGuard<S>
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
        let decision =
            match (req.extensions().get::<ResolvedRemote>(), req.extensions().get::<ArtifactPath>()) {
                (Some(ResolvedRemote(remote)), Some(path)) => {
                    match remote.classifier.classify(path.decoded()) {
                        Decision::Allow(class) => Ok(class),
                        Decision::Deny(reason) => Err(Refused::new(StatusCode::FORBIDDEN, reason)),
                    }
                }
                _ => Err(Refused::new(StatusCode::FORBIDDEN, "no remote resolved for this request")),
            };
        match decision {
            Ok(class) => {
                req.extensions_mut().insert(Classification(class));
                Either::Right(self.inner.call(req))
            }
            Err(refused) => Either::Left(future::err(refused.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use super::*;
    use crate::{
        body,
        pattern::{Class, Classifier, Pattern},
        remote::{Package, Remote},
    };
    use http_body_util::BodyExt;
    use tower::{service_fn, Layer, ServiceExt};

    use crate::rescue::RescueLayer;

    fn request(path: &str, remote: &Remote) -> Request<()> {
        let mut req = Request::get(format!("/{}/{path}", remote.name)).body(()).unwrap();
        req.extensions_mut().insert(ResolvedRemote(Arc::new(remote.clone())));
        req.extensions_mut().insert(ArtifactPath::parse(path, None).unwrap());
        req
    }

    #[tokio::test]
    async fn denies_with_403_json_and_allows_with_the_class() {
        let mut remote = Remote::proxy("gh", "https://github.com".parse().unwrap());
        remote.classifier = Classifier::new(
            Some(vec![Pattern::new(r"\.tar\.gz$").unwrap()]),
            vec![Pattern::new(r"index\.yaml$").unwrap()],
            Package::GENERIC,
        );
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let svc = RescueLayer::new().layer(PatternGuard::new(service_fn(move |req: Request<()>| {
            seen.fetch_add(1, Ordering::SeqCst);
            let class = req.extensions().get::<Classification>().unwrap().0;
            async move { Ok::<_, BoxError>(Response::new(body::full(class.as_str()))) }
        })));

        let res = svc.clone().oneshot(request("x.zip", &remote)).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let json: serde_json::Value =
            serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(json["remote"], "gh");
        assert_eq!(json["path"], "x.zip");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "a denied request never reaches the inner service");

        let res = svc.clone().oneshot(request("charts/index.yaml", &remote)).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "mutable");
        let res = svc.oneshot(request("a.tar.gz", &remote)).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "immutable");
        assert_eq!(Class::Immutable.as_str(), "immutable");
    }

    #[tokio::test]
    async fn without_a_resolved_remote_it_fails_closed() {
        let svc = RescueLayer::new().layer(PatternGuard::new(service_fn(|_req: Request<()>| async {
            Ok::<_, BoxError>(Response::new(body::empty()))
        })));
        let res = svc.oneshot(Request::get("/x").body(()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    }
}
