//! Serves fresh entries from the store; passes everything else on.
//!
//! For a `GET` or `HEAD` of a resolved artifact path, the entry under the
//! request's cache key is looked up in the index. A fresh entry is answered
//! from the blob store (`HEAD` from the index alone; `Range` gives 206 or 416;
//! `If-None-Match` / `If-Modified-Since` give 304) with `X-Cache-Status: HIT`.
//! An expired entry is attached as [`StaleEntry`](crate::StaleEntry) for the
//! layers below, and the request goes on, as does a miss. The
//! [`CacheKey`](crate::CacheKey) is attached either way. When the index
//! cannot be read, the request passes through to upstream rather than fail.
//!
//! ```
//! use std::sync::Arc;
//! use artifactapi_layers::{store::{Entry, EntryClass, Store, memory::*}, *};
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let blobs = Arc::new(MemoryBlobs::new());
//! let index = Arc::new(MemoryIndex::new());
//! let store = Store::new(index.clone(), blobs.clone());
//! blobs.insert("b1", "cached bytes");
//! # use artifactapi_layers::store::Index;
//! index.put(Entry {
//!     key: ArtifactPath::parse("a.txt", None).unwrap().cache_key("files"),
//!     remote: "files".into(), path: "a.txt".into(), blob: "b1".into(), size: 12,
//!     class: EntryClass::Immutable, headers: vec![], cached_at_ms: 0, expires_at_ms: None, policy: None,
//! }).await.unwrap();
//! let remotes = Arc::new(Remotes::new([Remote::proxy("files", "https://files.example.com".parse().unwrap())]));
//! let svc = ServiceBuilder::new()
//!     .layer(RemoteResolveLayer::new(remotes))
//!     .layer(PatternGuardLayer::new())
//!     .layer(CacheLookupLayer::new(store))
//!     .service(service_fn(|_req: Request<()>| async {
//!         Ok::<_, BoxError>(Response::builder().status(502).body(body::empty()).unwrap())
//!     }));
//! let res = svc.oneshot(Request::get("/files/a.txt").header("range", "bytes=0-5").body(()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
//! assert_eq!(res.extensions().get::<CacheStatus>(), Some(&CacheStatus::Hit));
//! # }
//! ```

mod layer;
mod service;

pub use layer::CacheLookupLayer;
pub use service::CacheLookup;
