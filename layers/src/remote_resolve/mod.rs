//! The front door: finds the remote a request is for and validates the
//! artifact path, for every URL form — `/{remote}/{path}` (mounted at `/api`
//! and `/api/v1/remote`) and, with [`RemoteResolveLayer::registry`], the
//! registry API's `/v2/...` (parsed by the docker format's
//! [`door`](crate::format::docker::door)). It attaches [`ResolvedRemote`],
//! the [`ArtifactPath`](crate::ArtifactPath), the [`Door`], the package
//! [`Coordinates`](crate::format::Coordinates) the remote's format reads off
//! the path, and for the registry its
//! [`RegistryCall`](crate::format::docker::door::RegistryCall). Every error,
//! its own or the inner service's, goes up wrapped in a
//! [`Raised`](crate::rescue::Raised) naming the format whose error shape
//! answers it.
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
pub use service::{Door, RemoteResolve, ResolvedRemote};
