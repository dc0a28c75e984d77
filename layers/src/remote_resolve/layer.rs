use tower::Layer;

use super::RemoteResolve;
use crate::remote::SharedRemotes;

/// Applies [`RemoteResolve`] to a service.
#[derive(Debug, Clone)]
pub struct RemoteResolveLayer {
    remotes: SharedRemotes,
}

impl RemoteResolveLayer {
    /// Resolves names against `remotes` (an `Arc<Remotes>`, or
    /// [`SharedRemotes`] that a reload may replace).
    pub fn new(remotes: impl Into<SharedRemotes>) -> Self {
        Self { remotes: remotes.into() }
    }
}

impl<S> Layer<S> for RemoteResolveLayer {
    type Service = RemoteResolve<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RemoteResolve::new(inner, self.remotes.clone())
    }
}
