//! Prometheus metrics, served at `GET /metrics` (OpenMetrics text).
//!
//! Labels are bounded: a remote's name (only configured ones; anything else
//! is `unknown`), a class, a cache result, a status class — never a path.
//!
//! - `artifactapi_requests_total{remote,class,cache,status}`: artifact and
//!   registry requests by cache result (`hit`, `miss`, `expired`, `stale`,
//!   `revalidated`, `local`, `none`, `error`) and status class.
//! - `artifactapi_served_bytes_total{remote,source}`: body bytes sent to
//!   clients from the `cache`, from `upstream` as it arrives, or `local`.
//! - `artifactapi_transfers_in_flight`: responses whose body is being sent.
//! - `artifactapi_upstream_requests_total{remote,outcome}` (`2xx`…`5xx`,
//!   `timeout`, `connect`, `error`) and
//!   `artifactapi_upstream_latency_seconds{remote}`: upstream requests, and
//!   the time to their answer's head.
//! - `artifactapi_fills_total`, `artifactapi_coalesced_requests_total`
//!   (requests that joined a fill in flight: single flight at work),
//!   `artifactapi_fill_failures_total`, `artifactapi_store_failures_total`,
//!   `artifactapi_store_full_total` (served uncached: no room),
//!   `artifactapi_fills_in_flight`.
//! - `artifactapi_store_entries{remote}`, `artifactapi_store_bytes{remote}`:
//!   what the index holds (one grouped query a scrape).
//! - `artifactapi_purged_entries_total{remote}`: entries purged by operators;
//!   `artifactapi_evicted_entries_total`, `artifactapi_evicted_bytes_total`:
//!   evicted to keep within the budget.
//! - With a local disk tier (`CACHE_LOCAL_DIR`): `artifactapi_local_copies`,
//!   `artifactapi_local_bytes`, `artifactapi_local_budget_bytes`, and
//!   `artifactapi_local_{hits,fills,kept,repairs,evictions,evicted_bytes,confirms}_total`.
//! - `artifactapi_store_budget_bytes`: `CACHE_MAX_BYTES` (0: none).
//! - With PostgreSQL: `artifactapi_index_circuit_open` (1 while index calls
//!   fail at once) and `artifactapi_index_circuit_opened_total`.
//!
//! `registry` holds the families and renders them for a scrape; `observe`
//! is the tower middleware that feeds them from the requests that pass.

mod local;
mod observe;
mod registry;
pub mod tally;

pub use observe::{Observe, ObserveLayer};
pub use registry::Metrics;
