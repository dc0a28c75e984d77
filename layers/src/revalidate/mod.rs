//! Revalidates an expired mutable entry with one conditional request instead
//! of downloading it again.
//!
//! When the cache lookup attached an expired entry
//! ([`StaleEntry`](crate::StaleEntry)) that is mutable and has validators, the
//! conditional request is built from the entry's stored HTTP cache policy
//! (http-cache-semantics: `If-None-Match` from the `ETag`, `If-Modified-Since`
//! from `Last-Modified`) and handed to the fill below as a
//! [`Conditional`](crate::extensions::Conditional) — so concurrent
//! revalidations of one key still make one upstream request. A 304 refreshes
//! the entry's lifetime, validators and policy without touching its bytes, and
//! the entry is answered with `X-Cache-Status: REVALIDATED`; a 200 replaces the
//! entry through the normal fill.
//!
//! Which entries: paths matched by a package type's built-in mutable patterns
//! always (for Docker tag manifests, the registry's upstream service answers
//! the condition with a HEAD and a digest comparison); paths matched by the user's `mutable_patterns` when the remote has
//! `check_mutable_updates: true` (otherwise they are fetched again, as the seed
//! did). Immutable entries whose `immutable_ttl` ran out are fetched again.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use artifactapi_layers::{store::Store, *};
//! use http::{header, Request, Response, StatusCode};
//! use http_body_util::BodyExt;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // A PyPI remote whose index pages must be checked on every request.
//! let mut pypi = Remote::proxy("pypi", "https://pypi.example.internal".parse().unwrap());
//! pypi.package = Package::parse("pypi").unwrap();
//! pypi.classifier = Classifier::new(None, vec![], Package::parse("pypi").unwrap());
//! pypi.ttl.mutable = Duration::ZERO;
//! // Upstream answers 304 when asked with the validator it handed out.
//! let upstream = service_fn(|req: Request<()>| async move {
//!     let unchanged = req.headers().get(header::IF_NONE_MATCH).is_some_and(|v| v == "\"v1\"");
//!     let status = if unchanged { StatusCode::NOT_MODIFIED } else { StatusCode::OK };
//!     let res = Response::builder().status(status).header(header::ETAG, "\"v1\"");
//!     Ok::<_, BoxError>(res.body(body::full(if unchanged { "" } else { "<html>links</html>" })).unwrap())
//! });
//! let store = Store::memory();
//! let spool = tempfile::tempdir().unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(RemoteResolveLayer::new(Arc::new(Remotes::new([pypi]))))
//!     .layer(PatternGuardLayer::new())
//!     .layer(CacheLookupLayer::new(store.clone()))
//!     .layer(RevalidateLayer::new(store.clone()))
//!     .layer(S3TeeLayer::new(store, spool.path()))
//!     .service(upstream);
//!
//! let first = svc.clone().oneshot(Request::get("/pypi/simple/requests/").body(()).unwrap()).await.unwrap();
//! assert_eq!(first.status(), StatusCode::OK, "{:?}", first.headers());
//! assert_eq!(first.extensions().get::<CacheStatus>(), Some(&CacheStatus::Miss));
//! first.into_body().collect().await.unwrap();
//! # tokio::time::sleep(Duration::from_millis(100)).await;
//! let again = svc.oneshot(Request::get("/pypi/simple/requests/").body(()).unwrap()).await.unwrap();
//! assert_eq!(again.extensions().get::<CacheStatus>(), Some(&CacheStatus::Revalidated));
//! assert_eq!(again.into_body().collect().await.unwrap().to_bytes(), "<html>links</html>");
//! # }
//! ```

mod layer;
mod service;

pub use layer::RevalidateLayer;
pub use service::Revalidate;
