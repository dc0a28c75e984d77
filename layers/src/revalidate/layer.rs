use tower::Layer;

use super::Revalidate;
use crate::store::Store;

/// Applies [`Revalidate`] to a service.
#[derive(Debug, Clone)]
pub struct RevalidateLayer {
    store: Store,
}

impl RevalidateLayer {
    /// Refreshes revalidated entries in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl<S> Layer<S> for RevalidateLayer {
    type Service = Revalidate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Revalidate::new(inner, self.store.clone())
    }
}
