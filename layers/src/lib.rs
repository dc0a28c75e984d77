//! Tower layers for a caching artifact proxy.
//!
//! A request for `/{remote}/{path}` passes, outermost first, through
//! [`RemoteResolveLayer`] (which remote, which path), [`PatternGuardLayer`]
//! (is the path allowed, and is it mutable or immutable), [`CacheLookupLayer`]
//! (serve a fresh entry from the store), [`StaleOnErrorLayer`] (serve the
//! expired copy when upstream fails), [`RevalidateLayer`] (ask upstream
//! conditionally whether an expired copy is still current) and [`S3TeeLayer`]
//! (fetch once from upstream, stream to every waiting client and into the
//! store at once, and commit only a complete body). The innermost service fetches from upstream;
//! it is any `tower::Service` that answers an upstream response.
//!
//! The layers talk to each other only through typed request extensions
//! ([`ResolvedRemote`], [`ArtifactPath`], [`Classification`], [`CacheKey`],
//! [`StaleEntry`]), and storage sits behind the [`store::Index`] and
//! [`store::BlobStore`] traits, so this crate has no database, S3 or Redis
//! dependency and the layers can be reused in any axum or tower application.
#![deny(missing_docs, unreachable_pub, unsafe_code)]

/// `get_ref`, `get_mut` and `into_inner` for a middleware whose inner
/// service is the field `inner`.
macro_rules! inner_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Unwraps the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}
pub(crate) use inner_accessors;

/// Takes the service that `poll_ready` readied for this call and leaves a
/// clone for the next one (tower's rule for services used from a future).
pub(crate) fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

pub mod body;
pub mod budget;
pub mod cache_lookup;
pub mod client;
pub mod content_type;
pub mod coord;
pub mod digest;
pub mod error;
pub mod extensions;
pub mod format;
pub mod group;
pub mod local;
pub mod path;
pub mod pattern;
pub mod pattern_guard;
pub mod policy;
pub mod problem;
pub mod range;
pub mod remote;
pub mod remote_resolve;
pub mod rescue;
mod respond;
pub mod revalidate;
pub mod rewrite;
pub mod stale_on_error;
pub mod store;
pub mod tee;

pub use body::ArtifactBody;
pub use cache_lookup::{CacheLookup, CacheLookupLayer};
pub use error::{BoxError, UpstreamError, UpstreamErrorKind};
pub use extensions::{CacheKey, CacheStatus, Classification, StaleEntry, UpstreamUrl};
pub use group::{GroupLayer, GroupService, GroupStats, ViaGroup};
pub use path::{ArtifactPath, PathError};
pub use pattern::{Class, Classifier, Decision, Pattern};
pub use pattern_guard::{PatternGuard, PatternGuardLayer};
pub use remote::{Credentials, Package, Remote, RemoteKind, Remotes, SharedRemotes, Ttl};
pub use remote_resolve::{Door, RemoteResolve, RemoteResolveLayer, ResolvedRemote};
pub use revalidate::{Revalidate, RevalidateLayer};
pub use rewrite::{BodyRewrite, BodyRewriteLayer};
pub use stale_on_error::{StaleOnError, StaleOnErrorLayer};
pub use tee::{S3Tee, S3TeeLayer};
