use tower::Layer;

use super::CacheLookup;
use crate::store::Store;

/// Applies [`CacheLookup`] to a service.
#[derive(Debug, Clone)]
pub struct CacheLookupLayer {
    store: Store,
}

impl CacheLookupLayer {
    /// Looks entries up in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl<S> Layer<S> for CacheLookupLayer {
    type Service = CacheLookup<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheLookup::new(inner, self.store.clone())
    }
}
