use tower::Layer;

use super::{Door, RemoteResolve};
use crate::remote::SharedRemotes;

/// Applies [`RemoteResolve`] to a service.
#[derive(Debug, Clone)]
pub struct RemoteResolveLayer {
    remotes: SharedRemotes,
    door: Door,
}

impl RemoteResolveLayer {
    /// Resolves names against `remotes` (an `Arc<Remotes>`, or
    /// [`SharedRemotes`] that a reload may replace).
    pub fn new(remotes: impl Into<SharedRemotes>) -> Self {
        Self { remotes: remotes.into(), door: Door::Remotes }
    }

    /// Resolves `/v2/...` (the registry API) against the docker remotes of
    /// `remotes`.
    pub fn registry(remotes: impl Into<SharedRemotes>) -> Self {
        Self { remotes: remotes.into(), door: Door::Registry }
    }
}

impl<S> Layer<S> for RemoteResolveLayer {
    type Service = RemoteResolve<S>;

    fn layer(&self, inner: S) -> Self::Service {
        match self.door {
            Door::Remotes => RemoteResolve::new(inner, self.remotes.clone()),
            Door::Registry => RemoteResolve::registry(inner, self.remotes.clone()),
        }
    }
}
