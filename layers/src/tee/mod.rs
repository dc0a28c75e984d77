//! Fetches a missed artifact from upstream once and streams it to every
//! client that asks for it and into the store at the same time.
//!
//! One *fill* runs per cache key: the first request for a key that is not
//! cached starts it, later requests for the same key join it. The fill writes
//! upstream's bytes into a local spool file; each client reads the spool at
//! its own pace, so a slow client slows neither the download nor anyone else,
//! memory per transfer stays at one chunk, and the fill completes into the
//! store even when the client that started it goes away.
//!
//! All or nothing: the entry becomes visible (an index row pointing at a
//! durable blob) only after the whole body arrived and its length matched
//! `Content-Length`. A body that breaks off is never cached, and every
//! client of that fill sees its transfer fail rather than end as a short 200.
//!
//! `HEAD` on a miss is forwarded as a `HEAD` and nothing is cached. A `Range`
//! request on a miss fetches the whole object into the cache and then answers
//! the range. Upstream answers other than 200 are never cached; they come back
//! as an [`UpstreamStatus`](crate::error::UpstreamStatus) error, and failed
//! exchanges as an [`UpstreamError`](crate::UpstreamError).
//!
//! ```
//! use std::sync::Arc;
//! use artifactapi_layers::{store::Store, *};
//! use http::{Request, Response};
//! use http_body_util::BodyExt;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let store = Store::memory();
//! let spool = tempfile::tempdir().unwrap();
//! let remotes = Arc::new(Remotes::new([Remote::proxy("files", "https://files.example.com".parse().unwrap())]));
//! // Any service can be "upstream"; here one that always answers the same bytes.
//! let upstream = service_fn(|_req: Request<()>| async {
//!     Ok::<_, BoxError>(Response::new(body::full("release bytes")))
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(RemoteResolveLayer::new(remotes))
//!     .layer(PatternGuardLayer::new())
//!     .layer(CacheLookupLayer::new(store.clone()))
//!     .layer(S3TeeLayer::new(store.clone(), spool.path()))
//!     .service(upstream);
//!
//! let first = svc.clone().oneshot(Request::get("/files/v1/tool.tar.gz").body(()).unwrap()).await.unwrap();
//! assert_eq!(first.extensions().get::<CacheStatus>(), Some(&CacheStatus::Miss));
//! assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), "release bytes");
//! # tokio::time::sleep(std::time::Duration::from_millis(100)).await;
//! let second = svc.oneshot(Request::get("/files/v1/tool.tar.gz").body(()).unwrap()).await.unwrap();
//! assert_eq!(second.extensions().get::<CacheStatus>(), Some(&CacheStatus::Hit));
//! # }
//! ```

mod fill;
mod flush;
mod layer;
mod service;
pub(crate) mod spool;

pub use spool::read_at;
mod waiting;

pub use fill::TeeStats;
pub use layer::S3TeeLayer;
pub use service::S3Tee;

#[cfg(test)]
mod one_answer;
#[cfg(test)]
mod tests;
