//! One fill per cache key: fetch, spool, publish progress, commit.
//!
//! - `status`: what a fill is asked to do ([`FillJob`]) and how far it has
//!   got ([`FillStatus`], the answer's [`Head`] and its window of recent bytes).
//! - `map`: the fills in flight by key ([`Fills`]): join or start one, the
//!   coordination lease, the negative cache, forgetting after a purge or flush.
//! - `run`: one fill, from upstream's answer to the end.
//! - `spooling`: the body into the spool and out to the clients, checked.
//! - `commit`: the blob, then the index row that makes the entry visible.

mod commit;
mod map;
mod run;
mod spooling;
mod status;

pub use map::TeeStats;
pub(crate) use map::{Fills, LEASE_TTL};
pub(crate) use status::{Direct, FillJob, FillStatus, Head};
