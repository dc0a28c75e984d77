//! The local disk tier's metrics: its copies against its budget, and what it
//! answered (read at each scrape from the tier's own counters).

use std::sync::atomic::{AtomicU64, Ordering};

use artifactapi_services::blob::{LocalStats, LocalTier};
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

/// Reads one of the tier's counters.
type Read = fn(&LocalStats) -> &AtomicU64;

/// The families of the local tier, registered once.
pub(super) struct LocalMetrics {
    tier: LocalTier,
    copies: Gauge,
    bytes: Gauge,
    budget: Gauge,
    counters: Vec<(Counter, Read)>,
}

impl LocalMetrics {
    pub(super) fn register(registry: &mut Registry, tier: LocalTier) -> Self {
        let (copies, bytes, budget) = (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register("local_copies", "Blobs with a copy on this replica's disk", copies.clone());
        registry.register(
            "local_bytes",
            "Bytes of the local copies, and of those being written",
            bytes.clone(),
        );
        registry.register("local_budget_bytes", "The most the local copies may take", budget.clone());
        let mut counters: Vec<(Counter, Read)> = Vec::new();
        let families: [(&str, &str, Read); 7] = [
            ("local_hits", "Reads answered from a local copy", |s| &s.hits),
            ("local_fills", "Whole objects read from S3 into a local copy", |s| &s.fills),
            ("local_kept", "Local copies made from a fill's spool after its upload", |s| &s.kept),
            ("local_repairs", "Local copies found short or missing, and read again", |s| &s.repairs),
            ("local_evictions", "Local copies deleted to keep within the budget", |s| &s.evictions),
            ("local_evicted_bytes", "Bytes of the local copies evicted", |s| &s.evicted_bytes),
            ("local_confirms", "HEAD requests confirming a local copy's blob still exists", |s| &s.confirms),
        ];
        for (name, help, read) in families {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counters.push((counter, read));
        }
        Self { tier, copies, bytes, budget, counters }
    }

    pub(super) fn update(&self) {
        let (copies, bytes, budget) = self.tier.usage();
        self.copies.set(copies as i64);
        self.bytes.set(bytes as i64);
        self.budget.set(budget as i64);
        for (counter, read) in &self.counters {
            counter.inner().store(read(self.tier.stats()).load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}
