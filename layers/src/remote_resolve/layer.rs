use std::sync::Arc;

use tower::Layer;

use super::RemoteResolve;
use crate::remote::Remotes;

/// Applies [`RemoteResolve`] to a service.
#[derive(Debug, Clone)]
pub struct RemoteResolveLayer {
    remotes: Arc<Remotes>,
}

impl RemoteResolveLayer {
    /// Resolves names against `remotes`.
    pub fn new(remotes: Arc<Remotes>) -> Self {
        Self { remotes }
    }
}

impl<S> Layer<S> for RemoteResolveLayer {
    type Service = RemoteResolve<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RemoteResolve::new(inner, self.remotes.clone())
    }
}
