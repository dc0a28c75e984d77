//! The rescue's tests: each cause's answer, the format's shape, the cache
//! headers written at the edge.

use http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;
use tower::{service_fn, ServiceExt};

use super::*;
use crate::{
    error::{UpstreamError, UpstreamErrorKind},
    store::StoreError,
};

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
    let (status, _, body) = rescued(Refused::new(StatusCode::FORBIDDEN, "denied by pattern").into()).await;
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
async fn the_edge_writes_the_cache_headers_from_the_extension() {
    let answering = |status: Option<CacheStatus>| {
        RescueLayer::new().layer(service_fn(move |_req: Request<()>| async move {
            let mut res = Response::new(crate::body::empty());
            if let Some(status) = status {
                res.extensions_mut().insert(status);
            }
            Ok::<_, BoxError>(res)
        }))
    };
    let headers = |status| async move {
        let res = answering(status).oneshot(Request::get("/r/a").body(()).unwrap()).await.unwrap();
        let get = |name| res.headers().get(name).map(|v: &HeaderValue| v.to_str().unwrap().to_owned());
        (get(X_CACHE_STATUS), get(X_ARTIFACT_SOURCE))
    };
    assert_eq!(headers(Some(CacheStatus::Hit)).await, (Some("HIT".into()), Some("cache".into())));
    assert_eq!(headers(Some(CacheStatus::Miss)).await, (Some("MISS".into()), Some("remote".into())));
    assert_eq!(headers(Some(CacheStatus::Local)).await, (None, Some("local".into())));
    assert_eq!(headers(None).await, (None, None));
}

#[tokio::test]
async fn an_error_raised_for_a_remote_is_answered_in_its_formats_shape() {
    let registry = crate::format::docker::REGISTRY;
    let raised = Raised::new(
        registry,
        "hub",
        "library/nginx/manifests/1",
        Refused::new(StatusCode::FORBIDDEN, "no").into(),
    );
    let (status, _, body) = rescued(Box::new(raised)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["errors"][0]["code"], "DENIED");
    let res = RescueLayer::new()
        .layer(service_fn(move |_req: Request<()>| {
            let e: BoxError = Box::new(Raised::new(
                Package::GENERIC,
                "files",
                "a.tgz",
                Refused::method("read-only", "GET, HEAD").into(),
            ));
            async move { Err::<Response<ArtifactBody>, BoxError>(e) }
        }))
        .oneshot(Request::get("/x").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()[header::ALLOW], "GET, HEAD");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((json["remote"].as_str(), json["path"].as_str()), (Some("files"), Some("a.tgz")));
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

#[tokio::test]
async fn every_answer_is_sandboxed_and_unsniffable_errors_included() {
    let html = RescueLayer::new().layer(service_fn(|_req: Request<()>| async {
        let mut res = Response::new(crate::body::full("<script>alert(1)</script>"));
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("script-src *"));
        Ok::<_, BoxError>(res)
    }));
    let failing = RescueLayer::new().layer(service_fn(|_req: Request<()>| async {
        let passed_on = UpstreamStatus::new(StatusCode::SERVICE_UNAVAILABLE, None);
        Err::<Response<ArtifactBody>, BoxError>(passed_on.into())
    }));
    let answers = [
        html.oneshot(Request::get("/r/dir/").body(()).unwrap()).await.unwrap(),
        failing.oneshot(Request::get("/r/a").body(()).unwrap()).await.unwrap(),
    ];
    for res in answers {
        assert_eq!(
            res.headers().get_all(header::CONTENT_SECURITY_POLICY).iter().collect::<Vec<_>>(),
            ["sandbox"]
        );
        assert_eq!(res.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}
