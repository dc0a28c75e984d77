//! Classifies the artifact path with the remote's patterns: immutable, mutable,
//! or denied (a [`Refused`](crate::rescue::Refused) 403, answered with a JSON
//! reason by [`RescueLayer`](crate::rescue::RescueLayer)).
//!
//! Needs [`ResolvedRemote`](crate::ResolvedRemote) and
//! [`ArtifactPath`](crate::ArtifactPath) on the request (set by
//! [`RemoteResolveLayer`](crate::RemoteResolveLayer)); attaches
//! [`Classification`](crate::Classification). A request missing them is
//! denied, since a policy that cannot be evaluated must not allow.
//!
//! ```
//! use std::sync::Arc;
//! use artifactapi_layers::*;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut remote = Remote::proxy("gh", "https://github.com".parse().unwrap());
//! remote.classifier = Classifier::new(Some(vec![Pattern::new(r"\.tar\.gz$").unwrap()]), vec![], Package::GENERIC);
//! let svc = ServiceBuilder::new()
//!     .layer(rescue::RescueLayer::new())
//!     .layer(RemoteResolveLayer::new(Arc::new(Remotes::new([remote]))))
//!     .layer(PatternGuardLayer::new())
//!     .service(service_fn(|req: Request<()>| async move {
//!         let Classification(class) = *req.extensions().get::<Classification>().unwrap();
//!         Ok::<_, BoxError>(Response::new(body::full(class.as_str())))
//!     }));
//! let res = svc.clone().oneshot(Request::get("/gh/a.tar.gz").body(()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! let res = svc.oneshot(Request::get("/gh/a.zip").body(()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! # }
//! ```

mod layer;
mod service;

pub use layer::PatternGuardLayer;
pub use service::PatternGuard;
