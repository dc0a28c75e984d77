//! The Prometheus registry: every family, and what a scrape reads on demand.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use artifactapi_layers::{policy::PolicyStats, store::Store, tee::TeeStats, GroupStats, SharedRemotes};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub(super) remote: String,
    pub(super) class: &'static str,
    pub(super) cache: &'static str,
    pub(super) status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SourceLabels {
    pub(super) remote: String,
    pub(super) source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct UpstreamLabels {
    pub(super) remote: String,
    pub(super) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RemoteLabel {
    pub(super) remote: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DecisionLabels {
    pub(super) remote: String,
    pub(super) rule: String,
    pub(super) action: String,
}

type Latency = Family<RemoteLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 5 ms to about 80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Every metric, and what the scrape reads on demand.
pub struct Metrics {
    registry: Registry,
    pub(super) requests: Family<RequestLabels, Counter>,
    pub(super) served_bytes: Family<SourceLabels, Counter>,
    pub(super) transfers: Gauge,
    pub(super) upstream_requests: Family<UpstreamLabels, Counter>,
    pub(super) upstream_latency: Latency,
    fills: Counter,
    coalesced: Counter,
    group_merges: Counter,
    group_merged_hits: Counter,
    groups: Arc<GroupStats>,
    policy_decisions: Family<DecisionLabels, Counter>,
    policy: Arc<PolicyStats>,
    fill_failures: Counter,
    store_failures: Counter,
    store_full: Counter,
    fills_in_flight: Gauge,
    store_entries: Family<RemoteLabel, Gauge>,
    store_bytes: Family<RemoteLabel, Gauge>,
    purged: Family<RemoteLabel, Counter>,
    evicted_entries: Counter,
    evicted_bytes: Counter,
    tee: Vec<Arc<TeeStats>>,
    local: Option<super::local::LocalMetrics>,
    /// Per-remote totals for the operator page.
    pub tally: super::tally::Tally,
    breaker: Option<(std::sync::Arc<artifactapi_layers::store::breaker::Breaker>, Gauge, Counter)>,
    store: Store,
    remotes: SharedRemotes,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics of the stacks whose fills `tee` counts, over `store`.
    pub fn new(
        store: Store,
        tee: Vec<Arc<TeeStats>>,
        groups: Arc<GroupStats>,
        policy: Arc<PolicyStats>,
        remotes: SharedRemotes,
    ) -> Self {
        let mut registry = Registry::with_prefix("artifactapi");
        let requests = Family::default();
        registry.register("requests", "Artifact and registry requests by cache result", requests.clone());
        let served_bytes = Family::default();
        registry.register(
            "served_bytes",
            "Body bytes sent to clients, by where they came from",
            served_bytes.clone(),
        );
        let transfers = Gauge::default();
        registry.register("transfers_in_flight", "Responses whose body is being sent", transfers.clone());
        let upstream_requests = Family::default();
        registry.register(
            "upstream_requests",
            "Requests sent upstream, by outcome",
            upstream_requests.clone(),
        );
        let upstream_latency: Latency = Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_latency_seconds",
            "Time from an upstream request to its answer's head",
            upstream_latency.clone(),
        );
        let fills = Counter::default();
        registry.register("fills", "Upstream fetches of whole bodies into the store", fills.clone());
        let coalesced = Counter::default();
        registry.register("coalesced_requests", "Requests that joined a fill in flight", coalesced.clone());
        let group_merges = Counter::default();
        registry.register(
            "group_merges",
            "Documents a merge group merged (again only when a member's answer changed)",
            group_merges.clone(),
        );
        let group_merged_hits = Counter::default();
        registry.register(
            "group_merged_hits",
            "Merged documents answered from the kept merge",
            group_merged_hits.clone(),
        );
        let policy_decisions = Family::default();
        registry.register(
            "policy_decisions",
            "Policy decisions that changed or would have changed an answer, by remote, rule and action",
            policy_decisions.clone(),
        );
        let fill_failures = Counter::default();
        registry.register(
            "fill_failures",
            "Fills that failed (upstream, broken body, digest)",
            fill_failures.clone(),
        );
        let store_failures = Counter::default();
        registry.register(
            "store_failures",
            "Complete bodies the store could not take",
            store_failures.clone(),
        );
        let store_full = Counter::default();
        registry.register(
            "store_full",
            "Bodies served uncached because the store had no room",
            store_full.clone(),
        );
        let fills_in_flight = Gauge::default();
        registry.register("fills_in_flight", "Fills running now", fills_in_flight.clone());
        let store_entries = Family::default();
        registry.register("store_entries", "Entries in the index", store_entries.clone());
        let store_bytes = Family::default();
        registry.register("store_bytes", "Bytes of the entries in the index", store_bytes.clone());
        let purged = Family::default();
        registry.register(
            "purged_entries",
            "Entries removed by DELETE /cache/{remote}/{path}",
            purged.clone(),
        );
        let evicted_entries = Counter::default();
        registry.register(
            "evicted_entries",
            "Entries evicted to keep within the budget",
            evicted_entries.clone(),
        );
        let evicted_bytes = Counter::default();
        registry.register("evicted_bytes", "Bytes of the entries evicted", evicted_bytes.clone());
        Self {
            registry,
            requests,
            served_bytes,
            transfers,
            upstream_requests,
            upstream_latency,
            fills,
            coalesced,
            group_merges,
            group_merged_hits,
            groups,
            policy_decisions,
            policy,
            fill_failures,
            store_failures,
            store_full,
            fills_in_flight,
            store_entries,
            store_bytes,
            purged,
            evicted_entries,
            evicted_bytes,
            tee,
            local: None,
            tally: Default::default(),
            breaker: None,
            store,
            remotes,
        }
    }

    /// Adds `artifactapi_store_budget_bytes`: `CACHE_MAX_BYTES`, 0 without one.
    pub fn with_store_budget(mut self, budget: Option<u64>) -> Self {
        let gauge: Gauge = Gauge::default();
        gauge.set(i64::try_from(budget.unwrap_or(0)).unwrap_or(i64::MAX));
        self.registry.register(
            "store_budget_bytes",
            "The most the whole store may take (CACHE_MAX_BYTES; 0: no budget)",
            gauge,
        );
        self
    }

    /// Adds the index circuit breaker's metrics.
    pub fn with_breaker(
        mut self,
        breaker: Option<std::sync::Arc<artifactapi_layers::store::breaker::Breaker>>,
    ) -> Self {
        self.breaker = breaker.map(|breaker| {
            let (open, opened) = (Gauge::default(), Counter::default());
            self.registry.register(
                "index_circuit_open",
                "1 while index calls fail at once because the database does not answer",
                open.clone(),
            );
            self.registry.register("index_circuit_opened", "Times the index circuit opened", opened.clone());
            (breaker, open, opened)
        });
        self
    }

    /// Adds the local disk tier's metrics.
    pub fn with_local_tier(mut self, tier: Option<artifactapi_services::blob::LocalTier>) -> Self {
        self.local = tier.map(|tier| super::local::LocalMetrics::register(&mut self.registry, tier));
        self
    }

    /// The remote label for `name`: configured names only.
    pub(super) fn remote_label(&self, name: &str) -> String {
        if self.remotes.load().get(name).is_some() {
            name.to_owned()
        } else {
            "unknown".to_owned()
        }
    }

    /// Counts `n` entries of `remote` purged.
    pub fn purged(&self, remote: &str, n: u64) {
        self.purged.get_or_create(&RemoteLabel { remote: self.remote_label(remote) }).inc_by(n);
    }

    /// Counts an eviction round.
    pub fn evicted(&self, entries: u64, bytes: u64) {
        self.evicted_entries.inc_by(entries);
        self.evicted_bytes.inc_by(bytes);
    }

    /// The OpenMetrics text of every metric.
    pub async fn render(&self) -> String {
        let sum = |read: fn(&TeeStats) -> &AtomicU64| {
            self.tee.iter().map(|t| read(t).load(Ordering::Relaxed)).sum()
        };
        self.fills.inner().store(sum(|t| &t.fills), Ordering::Relaxed);
        self.coalesced.inner().store(sum(|t| &t.coalesced), Ordering::Relaxed);
        self.group_merges.inner().store(self.groups.merges.load(Ordering::Relaxed), Ordering::Relaxed);
        self.group_merged_hits
            .inner()
            .store(self.groups.merged_hits.load(Ordering::Relaxed), Ordering::Relaxed);
        for ((remote, rule, action), n) in self.policy.snapshot() {
            let labels =
                DecisionLabels { remote: self.remote_label(&remote), rule, action: action.to_owned() };
            self.policy_decisions.get_or_create(&labels).inner().store(n, Ordering::Relaxed);
        }
        self.fill_failures.inner().store(sum(|t| &t.failed), Ordering::Relaxed);
        self.store_failures.inner().store(sum(|t| &t.store_failures), Ordering::Relaxed);
        self.store_full.inner().store(sum(|t| &t.store_full), Ordering::Relaxed);
        self.fills_in_flight.set(sum(|t| &t.in_flight) as i64);
        if let Some(local) = &self.local {
            local.update();
        }
        if let Some((breaker, open, opened)) = &self.breaker {
            open.set(i64::from(breaker.is_open()));
            opened.inner().store(breaker.opened.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        // One grouped index query a scrape (scrapes come every 15-60 s).
        match self.store.index.usage().await {
            Ok(usage) => {
                self.store_entries.clear();
                self.store_bytes.clear();
                for u in usage {
                    let label = RemoteLabel { remote: u.remote };
                    self.store_entries.get_or_create(&label).set(u.entries as i64);
                    self.store_bytes.get_or_create(&label).set(u.bytes as i64);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read store sizes for /metrics"),
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        text
    }
}
