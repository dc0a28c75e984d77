//! Serves the expired copy when upstream fails: stale beats broken.
//!
//! When an expired entry is attached ([`StaleEntry`](crate::StaleEntry)) and
//! the layers below fail because of upstream — it cannot be reached, times
//! out, or answers 5xx or 429 — the expired copy is answered with
//! `X-Cache-Status: STALE` and its lifetime refreshed, so that an outage is
//! not re-tried on every request. Never for 404, 403 or 410: those are
//! upstream's answers, not its failures. With nothing cached the error goes
//! on unchanged.
//!
//! ```
//! use std::sync::Arc;
//! use artifactapi_layers::{error::UpstreamErrorKind, store::{Entry, EntryClass, Index, Store, memory::*}, *};
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let (index, blobs) = (Arc::new(MemoryIndex::new()), Arc::new(MemoryBlobs::new()));
//! blobs.insert("b1", "last known good");
//! index.put(Entry {
//!     key: ArtifactPath::parse("APKINDEX.tar.gz", None).unwrap().cache_key("alpine"),
//!     remote: "alpine".into(), path: "APKINDEX.tar.gz".into(), blob: "b1".into(), size: 15,
//!     class: EntryClass::Mutable, headers: vec![], cached_at_ms: 0,
//!     expires_at_ms: Some(1), // long expired
//!     policy: None,
//! }).await.unwrap();
//! let store = Store::new(index, blobs);
//! let remotes = Arc::new(Remotes::new([Remote::proxy("alpine", "https://dl.example.com".parse().unwrap())]));
//! // Upstream is down.
//! let upstream = service_fn(|_req: Request<()>| async {
//!     Err::<Response<ArtifactBody>, BoxError>(Box::new(UpstreamError::new(UpstreamErrorKind::Connect, "refused")))
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(RemoteResolveLayer::new(remotes))
//!     .layer(PatternGuardLayer::new())
//!     .layer(CacheLookupLayer::new(store.clone()))
//!     .layer(StaleOnErrorLayer::new(store))
//!     .service(upstream);
//! let res = svc.oneshot(Request::get("/alpine/APKINDEX.tar.gz").body(()).unwrap()).await.unwrap();
//! assert_eq!(res.extensions().get::<CacheStatus>(), Some(&CacheStatus::Stale));
//! # }
//! ```

mod layer;
mod service;

pub use layer::StaleOnErrorLayer;
pub use service::{is_upstream_failure, StaleOnError};
