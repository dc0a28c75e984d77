//! The Docker Registry HTTP API v2, as a pull-through mirror: its own axum
//! [`Router`] at `/v2/`, in front of the same cache layers as every remote.
//!
//! - `GET /v2/` answers 200 with `Docker-Distribution-API-Version: registry/2.0`.
//! - `/v2/{remote}/{name}/manifests/{tag|digest}`, `.../blobs/{digest}` and
//!   `.../tags/list` (GET, HEAD; Range on blobs), where the name has any number
//!   of components: the seed's RKE2 `rewrite` form.
//! - `/v2/{name}/...?ns={registry host}`: containerd's mirror form. The
//!   request goes to the `package: docker` remote for that host (its
//!   `base_url`'s, or one of its `registry_hosts`). When the name's first
//!   component names a docker remote, that remote wins. `ns` is never part
//!   of a cache key.
//! - Pushing, deleting and the catalog answer in the registry error format
//!   (`UNSUPPORTED`).
//!
//! The name and what follows it (`library/nginx/manifests/latest`) is the
//! artifact path patterns see, so `immutable_patterns` restrict image names
//! (they gate every request for a name, tag manifests included). Tags and
//! tag lists are mutable, digests immutable. Manifests are keyed by the set of
//! manifest types the client accepts (see [`media`]); a `HEAD` of a manifest
//! is answered from a full fetch, so the manifest a client checked is the one
//! it then finds cached. Errors are registry errors ([`errors`]).

pub mod auth;
pub mod errors;
pub mod media;
pub mod reference;
pub mod upstream;

use std::sync::Arc;

use artifactapi_layers::{
    body::{self, ArtifactBody},
    error::BoxError,
    extensions::{Classification, Variant},
    ArtifactPath, Decision, Remote, RemoteKind, ResolvedRemote, SharedRemotes,
};
use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode},
    routing::{any, get},
    Router,
};
use serde_json::json;
use tower::{util::BoxCloneSyncService, ServiceExt};

use self::{
    errors::{invalid, registry_error, rescue, Code},
    media::Accepted,
    reference::Target,
    upstream::RegistryCall,
};
use crate::upstream::UpstreamPath;

/// `Docker-Distribution-API-Version`, on every answer.
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

/// The cache stack the registry routes call: cache lookup down to the
/// registry's upstream service.
pub type RegistryStack = BoxCloneSyncService<Request<Body>, Response<ArtifactBody>, BoxError>;

#[derive(Clone)]
struct Registry {
    stack: RegistryStack,
    remotes: SharedRemotes,
}

/// The `/v2/` routes over `stack`, for the docker remotes among `remotes`.
pub fn router(stack: RegistryStack, remotes: impl Into<SharedRemotes>) -> Router {
    Router::new()
        .route("/v2", get(version_check))
        .route("/v2/", get(version_check))
        .route("/v2/{*rest}", any(dispatch))
        .with_state(Registry { stack, remotes: remotes.into() })
}

async fn version_check() -> Response<Body> {
    let mut answer = Response::new(Body::from("{}"));
    answer.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer.headers_mut().insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    answer
}

async fn dispatch(State(registry): State<Registry>, req: Request<Body>) -> Response<Body> {
    let mut answer = registry.handle(req).await;
    answer.headers_mut().insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    answer.map(Body::new)
}

impl Registry {
    async fn handle(&self, req: Request<Body>) -> Response<ArtifactBody> {
        let rest = req.uri().path().strip_prefix("/v2/").unwrap_or_default().to_owned();
        let (components, target) = match reference::split(&rest) {
            Ok(split) => split,
            Err(e) => return invalid(&e),
        };
        let (ns, query) = split_query(req.uri().query());
        let Some((remote, skip)) = self.remote_for(&components, ns.as_deref()) else {
            let message = match &ns {
                Some(ns) => {
                    format!("no docker remote serves the registry {ns:?} (base_url host or registry_hosts)")
                }
                None => format!("no docker remote is named {:?}", components[0]),
            };
            return registry_error(StatusCode::NOT_FOUND, Code::NameUnknown, &message, json!({}));
        };
        let name = match reference::name(&components[skip..]) {
            Ok(name) => name,
            Err(e) => return invalid(&e),
        };
        let method = req.method().clone();
        if target == Target::Upload || !matches!(method, Method::GET | Method::HEAD) {
            let mut answer = registry_error(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::Unsupported,
                "this registry is a read-only pull-through mirror",
                json!({"method": method.as_str()}),
            );
            answer.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return answer;
        }
        let path_text = format!("{name}/{}", target.suffix());
        let class = match remote.classifier.classify(&path_text) {
            Decision::Allow(class) => class,
            Decision::Deny(reason) => {
                let detail = json!({"remote": remote.name, "name": name});
                return registry_error(StatusCode::FORBIDDEN, Code::Denied, &reason, detail);
            }
        };
        // Only a tag list takes parameters (`n`, `last`); they are part of its key.
        let query = if target == Target::Tags { query } else { None };
        let (path, upstream_path) = match (
            ArtifactPath::parse(&path_text, query.as_deref()),
            ArtifactPath::parse(&format!("v2/{path_text}"), query.as_deref()),
        ) {
            (Ok(path), Ok(upstream)) => (path, upstream),
            (Err(e), _) | (_, Err(e)) => {
                return registry_error(e.status(), Code::NameInvalid, &e.to_string(), json!({}));
            }
        };

        // A HEAD of a manifest or tag list is answered from a full fetch.
        let head_only = method == Method::HEAD;
        let inner_method = if head_only && !matches!(target, Target::Blob(_)) { Method::GET } else { method };
        let mut inner = Request::new(Body::empty());
        *inner.method_mut() = inner_method;
        *inner.uri_mut() = format!("/{}/{path_text}", remote.name).parse().unwrap_or_default();
        *inner.headers_mut() = forwarded(req.headers(), &target);
        let ext = inner.extensions_mut();
        ext.insert(ResolvedRemote(remote.clone()));
        ext.insert(path);
        ext.insert(UpstreamPath(upstream_path));
        ext.insert(Classification(class));
        if matches!(target, Target::Manifest(_)) {
            let accepted = Accepted::from_headers(req.headers());
            ext.insert(Variant(accepted.variant().into()));
        }
        ext.insert(RegistryCall { name: name.clone(), target: target.clone() });

        let mut answer = match self.stack.clone().oneshot(inner).await {
            Ok(answer) => answer,
            Err(e) => return rescue(&*e, &remote.name, &name, &target),
        };
        // Registry answers are not downloads.
        answer.headers_mut().remove(header::CONTENT_DISPOSITION);
        if head_only {
            *answer.body_mut() = body::empty();
        }
        answer
    }

    /// The docker remote a request is for, and how many name components
    /// named it: the first component when it is a docker remote's name,
    /// otherwise the remote for containerd's `ns`.
    fn remote_for(&self, components: &[&str], ns: Option<&str>) -> Option<(Arc<Remote>, usize)> {
        let is_docker =
            |r: &Remote| r.package.format().is_registry() && matches!(r.kind, RemoteKind::Remote { .. });
        let remotes = self.remotes.load();
        if components.len() >= 2 {
            if let Some(remote) = remotes.get(components[0]).filter(|r| is_docker(r)) {
                return Some((remote.clone(), 1));
            }
        }
        let ns = ns?;
        let found = remotes.iter().find(|r| is_docker(r) && r.answers_for_registry(ns)).cloned();
        found.map(|r| (r, 0))
    }
}

/// Splits containerd's `ns` off the query; answers it and the rest.
fn split_query(query: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(query) = query else { return (None, None) };
    let mut ns = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("ns", value)) => {
                ns = Some(percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned())
            }
            _ => rest.push(pair),
        }
    }
    (ns, (!rest.is_empty()).then(|| rest.join("&")))
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
    fn ns_is_split_off_the_query() {
        assert_eq!(split_query(Some("ns=docker.io")), (Some("docker.io".into()), None));
        assert_eq!(
            split_query(Some("n=10&ns=ghcr.io&last=a")),
            (Some("ghcr.io".into()), Some("n=10&last=a".into()))
        );
        assert_eq!(split_query(None), (None, None));
    }

    #[test]
    fn remotes_are_found_by_name_first_then_by_registry_host() {
        let mut hub = Remote::proxy("dockerhub", "https://registry-1.docker.io".parse().unwrap());
        hub.package = artifactapi_layers::Package::parse("docker").unwrap();
        hub.registry_hosts = vec!["docker.io".into()];
        let mut local = Remote::proxy("local", "http://127.0.0.1:5000".parse().unwrap());
        local.package = artifactapi_layers::Package::parse("docker").unwrap();
        let files = Remote::proxy("files", "https://github.com".parse().unwrap());
        let registry = Registry {
            stack: BoxCloneSyncService::new(tower::service_fn(|_req: Request<Body>| async {
                Ok::<_, BoxError>(Response::new(body::empty()))
            })),
            remotes: Arc::new(artifactapi_layers::Remotes::new([hub, local, files])).into(),
        };
        let found = |c: &[&str], ns| registry.remote_for(c, ns).map(|(r, skip)| (r.name.clone(), skip));
        assert_eq!(
            found(&["dockerhub", "library", "nginx"], Some("docker.io")),
            Some(("dockerhub".into(), 1))
        );
        assert_eq!(found(&["library", "nginx"], Some("docker.io")), Some(("dockerhub".into(), 0)));
        assert_eq!(found(&["library", "nginx"], Some("registry-1.docker.io")), Some(("dockerhub".into(), 0)));
        assert_eq!(found(&["x"], Some("127.0.0.1:5000")), Some(("local".into(), 0)));
        assert_eq!(found(&["library", "nginx"], Some("quay.io")), None);
        assert_eq!(found(&["library", "nginx"], None), None);
        // Only docker remotes are routed to.
        assert_eq!(found(&["files", "x"], None), None);
        // A one-component name is an image name, not a remote.
        assert_eq!(found(&["dockerhub"], None), None);
    }
}
