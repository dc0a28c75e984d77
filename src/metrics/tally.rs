//! Per-remote totals for the operator page (`/ui/`): requests by cache
//! result, upstream errors and bytes by where they came from, since start,
//! with a snapshot a minute for the last hour. Fed by the same observe layer
//! as the Prometheus families (one map lookup a request).

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

/// What one remote did since start.
#[derive(Debug, Default)]
pub struct RemoteTally {
    /// Requests answered (any result).
    pub requests: AtomicU64,
    /// Answered from the cache (hits and revalidated entries).
    pub hits: AtomicU64,
    /// Fetched from upstream (misses and expired entries).
    pub misses: AtomicU64,
    /// Stale copies answered while upstream failed.
    pub stale: AtomicU64,
    /// Requests upstream answered with 5xx, or that timed out or failed.
    pub upstream_errors: AtomicU64,
    /// Body bytes sent from the cache.
    pub bytes_cache: AtomicU64,
    /// Body bytes sent as they came from upstream.
    pub bytes_upstream: AtomicU64,
}

/// The totals as numbers, in the field order above.
pub type Totals = [u64; 7];

impl RemoteTally {
    fn totals(&self) -> Totals {
        [
            &self.requests,
            &self.hits,
            &self.misses,
            &self.stale,
            &self.upstream_errors,
            &self.bytes_cache,
            &self.bytes_upstream,
        ]
        .map(|n| n.load(Ordering::Relaxed))
    }
}

/// Every remote's tally, and the last hour of minute snapshots.
#[derive(Debug, Default)]
pub struct Tally {
    remotes: Mutex<HashMap<String, Arc<RemoteTally>>>,
    history: Mutex<VecDeque<(Instant, HashMap<String, Totals>)>>,
}

impl Tally {
    /// The tally of `remote` (a configured name or `unknown`).
    pub fn remote(&self, remote: &str) -> Arc<RemoteTally> {
        let mut remotes = self.remotes.lock().expect("tally lock");
        match remotes.get(remote) {
            Some(tally) => tally.clone(),
            None => remotes.entry(remote.to_owned()).or_default().clone(),
        }
    }

    /// Every remote's totals now.
    pub fn now(&self) -> HashMap<String, Totals> {
        self.remotes.lock().expect("tally lock").iter().map(|(k, v)| (k.clone(), v.totals())).collect()
    }

    /// Keeps a snapshot of now; those older than an hour (and a minute) go.
    pub fn remember(&self) {
        let now = self.now();
        let mut history = self.history.lock().expect("history lock");
        history.push_back((Instant::now(), now));
        while history.front().is_some_and(|(at, _)| at.elapsed() > Duration::from_secs(3660)) {
            history.pop_front();
        }
    }

    /// The oldest snapshot of the last hour, and how long ago it was taken.
    pub fn hour_ago(&self) -> Option<(Duration, HashMap<String, Totals>)> {
        let history = self.history.lock().expect("history lock");
        history
            .iter()
            .find(|(at, _)| at.elapsed() <= Duration::from_secs(3600))
            .map(|(at, totals)| (at.elapsed(), totals.clone()))
    }
}
