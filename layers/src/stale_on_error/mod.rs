//! Serves the expired copy when upstream fails: stale beats broken.
//!
//! When an expired entry is attached ([`StaleEntry`](crate::StaleEntry)) and
//! the layers below fail because of upstream — it cannot be reached, times
//! out, or answers 5xx or 429 — the expired copy is answered with
//! `X-Cache-Status: STALE` and its lifetime refreshed, so that an outage is
//! not re-tried on every request. Never for 404, 403 or 410: those are
//! upstream's answers, not its failures. With nothing cached the error goes
//! on unchanged.

mod layer;
mod service;

pub use layer::StaleOnErrorLayer;
pub use service::{is_upstream_failure, StaleOnError};
