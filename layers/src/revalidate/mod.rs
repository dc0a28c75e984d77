//! Revalidates an expired mutable entry with one conditional request instead
//! of downloading it again.
//!
//! When the cache lookup attached an expired entry
//! ([`StaleEntry`](crate::StaleEntry)) that is mutable and has validators, the
//! conditional request is built from the entry's stored HTTP cache policy
//! (http-cache-semantics: `If-None-Match` from the `ETag`, `If-Modified-Since`
//! from `Last-Modified`) and handed to the fill below as a
//! [`Conditional`](crate::extensions::Conditional) — so concurrent
//! revalidations of one key still make one upstream request. A 304 refreshes
//! the entry's lifetime, validators and policy without touching its bytes, and
//! the entry is answered with `X-Cache-Status: REVALIDATED`; a 200 replaces the
//! entry through the normal fill.
//!
//! Which entries: paths matched by a package type's built-in mutable patterns
//! always (except Docker tag manifests, which the registry router refreshes by
//! digest); paths matched by the user's `mutable_patterns` when the remote has
//! `check_mutable_updates: true` (otherwise they are fetched again, as the seed
//! did). Immutable entries whose `immutable_ttl` ran out are fetched again.

mod layer;
mod service;

pub use layer::RevalidateLayer;
pub use service::Revalidate;
