use tower::Layer;

use super::PatternGuard;

/// Applies [`PatternGuard`] to a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct PatternGuardLayer {
    _priv: (),
}

impl PatternGuardLayer {
    /// The layer; the patterns come from each request's resolved remote.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for PatternGuardLayer {
    type Service = PatternGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PatternGuard::new(inner)
    }
}
