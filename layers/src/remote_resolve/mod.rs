//! Finds the remote named in the request path and validates the artifact path.
//!
//! The inner service sees a request whose path is `/{remote}/{path}` (for
//! example after axum's `nest_service("/api", ..)` stripped the prefix). An
//! unknown remote is refused 404, a refused path 400 (414 when too long), as
//! errors that [`RescueLayer`](crate::rescue::RescueLayer) answers with the
//! JSON error body; otherwise [`ResolvedRemote`] and
//! [`ArtifactPath`](crate::ArtifactPath) are attached as request extensions.
//!
//! ```
//! use std::{convert::Infallible, sync::Arc};
//! use artifactapi_layers::{body, rescue::RescueLayer, ArtifactBody, ArtifactPath, Remote, RemoteResolveLayer, Remotes, ResolvedRemote};
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let remotes = Remotes::new([Remote::proxy("files", "https://files.example.com".parse().unwrap())]);
//! let svc = ServiceBuilder::new()
//!     .layer(RescueLayer::new())
//!     .layer(RemoteResolveLayer::new(Arc::new(remotes)))
//!     .service(service_fn(|req: Request<()>| async move {
//!         let remote = &req.extensions().get::<ResolvedRemote>().unwrap().0;
//!         let path = req.extensions().get::<ArtifactPath>().unwrap();
//!         let text = format!("{} {}", remote.name, path.decoded());
//!         Ok::<_, artifactapi_layers::BoxError>(Response::new(body::full(text)))
//!     }));
//! let res = svc.clone().oneshot(Request::get("/files/a/b%20c.tgz").body(()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! let res = svc.oneshot(Request::get("/nope/a").body(()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::NOT_FOUND);
//! # }
//! ```

mod layer;
mod service;

pub use layer::RemoteResolveLayer;
pub use service::{RemoteResolve, ResolvedRemote};
