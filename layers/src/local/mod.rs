//! A local repository: artifacts uploaded with `PUT`, served with `GET` and
//! `HEAD` (Range included), removed with `DELETE`. The terminal service of a
//! `type: local` remote, on the same storage traits as the cache.
//!
//! An upload streams into a spool file (never into memory) up to a size cap
//! (413 beyond it, nothing stored) and becomes visible only when complete: a
//! re-upload writes a new blob and then swaps the index row, so a reader sees
//! the old bytes or the new ones, never a mix. Answers carry
//! `X-Artifact-Source: local`, an `ETag` of the content's SHA-256 and the
//! upload time as `Last-Modified`.
//!
//! ```
//! use std::sync::Arc;
//! use artifactapi_layers::{local::LocalRepo, store::Store, *};
//! use http::{Request, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use bytes::Bytes;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut tools = Remote::proxy("tools", "http://unused.invalid".parse().unwrap());
//! tools.kind = RemoteKind::Local;
//! let spool = tempfile::tempdir().unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(rescue::RescueLayer::new())
//!     .layer(RemoteResolveLayer::new(Arc::new(Remotes::new([tools]))))
//!     .service(LocalRepo::new(Store::memory(), spool.path(), 1 << 20));
//! let put = Request::put("/tools/bin/tool-1.0").body(Full::new(Bytes::from("#!/bin/sh"))).unwrap();
//! assert_eq!(svc.clone().oneshot(put).await.unwrap().status(), StatusCode::CREATED);
//! let get = Request::get("/tools/bin/tool-1.0").body(Full::new(Bytes::new())).unwrap();
//! let res = svc.oneshot(get).await.unwrap();
//! assert_eq!(res.headers()["x-artifact-source"], "local");
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "#!/bin/sh");
//! # }
//! ```

mod service;

pub use service::LocalRepo;
