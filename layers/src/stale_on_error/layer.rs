use tower::Layer;

use super::StaleOnError;
use crate::store::Store;

/// Applies [`StaleOnError`] to a service.
#[derive(Debug, Clone)]
pub struct StaleOnErrorLayer {
    store: Store,
}

impl StaleOnErrorLayer {
    /// Serves expired entries from `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl<S> Layer<S> for StaleOnErrorLayer {
    type Service = StaleOnError<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StaleOnError::new(inner, self.store.clone())
    }
}
