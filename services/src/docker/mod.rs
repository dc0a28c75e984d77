//! The Docker Registry HTTP API v2, as a pull-through mirror at `/v2/`.
//!
//! The front door resolves `/v2/` paths through the docker format
//! ([`artifactapi_layers::format::docker::door`]): the seed's RKE2 form
//! `/v2/{remote}/{name}/...` and containerd's `/v2/{name}/...?ns={host}`.
//! This module adds what needs more than the path:
//!
//! - [`router`]: `GET /v2/` answers 200, and every `/v2/` answer carries
//!   `Docker-Distribution-API-Version: registry/2.0`.
//! - [`RegistryRequestLayer`]: the request as the cache layers see it. A
//!   manifest is keyed by the set of manifest types the client accepts
//!   (see [`media`](artifactapi_layers::format::docker::media)), and
//!   upstream is asked with that set; a `HEAD` of a manifest or tag list is
//!   answered from a full fetch, so the manifest a client checked is the one
//!   it then finds cached.
//! - [`upstream`]: token authentication and digest checks.
//!
//! Errors are answered in the registry's error shape by the one rescue (the
//! docker format's `error_answer`).

pub mod auth;
pub mod upstream;

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use artifactapi_layers::{
    body::{self, ArtifactBody},
    error::BoxError,
    extensions::Variant,
    format::docker::{door::RegistryCall, media::Accepted, reference::Target},
};
use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response},
    middleware::map_response,
    routing::get,
    Router,
};
use futures_util::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};

/// `Docker-Distribution-API-Version`, on every answer.
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

/// The `/v2/` routes: the version check, and every other path to `front`
/// (the front door in its registry form, with the one rescue).
pub fn router<F>(front: F) -> Router
where
    F: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    F::Future: Send + 'static,
{
    Router::new()
        .route("/v2", get(version_check))
        .route("/v2/", get(version_check))
        .route_service("/v2/{*rest}", front)
        .layer(map_response(|mut answer: Response<Body>| async move {
            answer.headers_mut().insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
            answer
        }))
}

async fn version_check() -> Response<Body> {
    let mut answer = Response::new(Body::from("{}"));
    answer.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

/// Applies [`RegistryRequest`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RegistryRequestLayer;

impl<S> Layer<S> for RegistryRequestLayer {
    type Service = RegistryRequest<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RegistryRequest { inner }
    }
}

/// Shapes a resolved `/v2/` request (one carrying a [`RegistryCall`]) for
/// the cache layers, and their answer for the client.
#[derive(Debug, Clone)]
pub struct RegistryRequest<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for RegistryRequest<S>
where
    S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ArtifactBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ArtifactBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let Some(call) = req.extensions().get::<RegistryCall>().cloned() else {
            return Box::pin(inner.oneshot(req));
        };
        // A HEAD of a manifest or tag list is answered from a full fetch.
        let head_only = req.method() == Method::HEAD;
        if head_only && !matches!(call.target, Target::Blob(_)) {
            *req.method_mut() = Method::GET;
        }
        if let Target::Manifest(_) = call.target {
            let accepted = Accepted::from_headers(req.headers());
            req.extensions_mut().insert(Variant(accepted.variant().into()));
        }
        let forwarded = forwarded(req.headers(), &call.target);
        *req.headers_mut() = forwarded;
        Box::pin(async move {
            let mut answer = inner.oneshot(req).await?;
            // Registry answers are not downloads.
            answer.headers_mut().remove(header::CONTENT_DISPOSITION);
            if head_only {
                *answer.body_mut() = body::empty();
            }
            Ok(answer)
        })
    }
}

/// The client headers that go on: the accepted manifest types (normalized,
/// so that one entry serves every client accepting the same types), ranges
/// and conditions, and the user agent.
fn forwarded(client: &HeaderMap, target: &Target) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Target::Manifest(_) = target {
        if let Some(accept) = Accepted::from_headers(client).header() {
            headers.insert(header::ACCEPT, accept);
        }
    }
    for name in [
        header::RANGE,
        header::IF_RANGE,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::USER_AGENT,
    ] {
        if let Some(value) = client.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_accepted_manifest_types_and_conditions_go_on() {
        let mut client = HeaderMap::new();
        client
            .insert(header::ACCEPT, HeaderValue::from_static("application/vnd.oci.image.index.v1+json, */*"));
        client.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\""));
        client.insert(header::COOKIE, HeaderValue::from_static("secret"));
        let manifest =
            Target::Manifest(artifactapi_layers::format::docker::reference::Reference::Tag("v".into()));
        let sent = forwarded(&client, &manifest);
        assert_eq!(sent[header::ACCEPT], "application/vnd.oci.image.index.v1+json");
        assert_eq!(sent[header::IF_NONE_MATCH], "\"x\"");
        assert!(sent.get(header::COOKIE).is_none());
        assert!(forwarded(&client, &Target::Tags).get(header::ACCEPT).is_none());
    }
}
