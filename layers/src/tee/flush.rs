//! Flushes that fills in flight must honour: a fill that began before a
//! flush of its remote holds bytes from before it, so it does not commit
//! them as a fresh entry afterwards.
//!
//! A flush first records itself here, then waits at the [`FlushMarks::gate`]
//! for every commit already under way (each holds the gate's read side from
//! before its clients see the body complete until its index row is written),
//! and only then flushes the index. A commit that starts later sees the mark;
//! one that started earlier has written its row before the index flush, which
//! removes or expires it. Either way, once the flush answers, nothing fetched
//! before it is a fresh entry.

use std::{collections::HashMap, sync::Mutex};

/// The latest flushes, by remote (`None`: every remote).
#[derive(Debug, Default)]
pub(crate) struct FlushMarks {
    /// When each scope was last flushed, and last flushed with its
    /// immutable entries (ms since the epoch).
    latest: Mutex<HashMap<Option<String>, Latest>>,
    /// Commits hold the read side; a flush waits for the write side.
    pub(crate) gate: tokio::sync::RwLock<()>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Latest {
    expired_at: i64,
    removed_at: i64,
}

/// What a flush since a fill began means for its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// No flush: commit as usual.
    No,
    /// Mutable entries were expired: a mutable entry commits expired.
    Expired,
    /// Every entry was removed: nothing is committed.
    Removed,
}

impl FlushMarks {
    /// Records a flush of `remote` (every remote with `None`) at `now_ms`,
    /// then waits until the commits under way have written their rows.
    pub(crate) async fn flush(&self, remote: Option<&str>, remove_immutable: bool, now_ms: i64) {
        {
            let mut latest = self.latest.lock().expect("flush marks lock");
            let mark = latest.entry(remote.map(str::to_owned)).or_default();
            mark.expired_at = mark.expired_at.max(now_ms);
            if remove_immutable {
                mark.removed_at = mark.removed_at.max(now_ms);
            }
        }
        drop(self.gate.write().await);
    }

    /// Whether `remote` was flushed at or after `since_ms`.
    pub(crate) fn since(&self, remote: &str, since_ms: i64) -> Flushed {
        let latest = self.latest.lock().expect("flush marks lock");
        let marks = [latest.get(&None), latest.get(&Some(remote.to_owned()))];
        let mut flushed = Flushed::No;
        for mark in marks.into_iter().flatten() {
            if mark.removed_at >= since_ms {
                return Flushed::Removed;
            }
            if mark.expired_at >= since_ms {
                flushed = Flushed::Expired;
            }
        }
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flush_counts_for_fills_begun_before_it_of_its_remote() {
        let marks = FlushMarks::default();
        assert_eq!(marks.since("a", 0), Flushed::No);
        marks.flush(Some("a"), false, 100).await;
        assert_eq!(marks.since("a", 100), Flushed::Expired);
        assert_eq!(marks.since("a", 101), Flushed::No, "begun after the flush");
        assert_eq!(marks.since("b", 50), Flushed::No, "another remote");
        marks.flush(None, true, 200).await;
        assert_eq!(marks.since("b", 150), Flushed::Removed);
        assert_eq!(marks.since("a", 150), Flushed::Removed);
    }

    #[tokio::test]
    async fn a_flush_waits_for_the_commits_under_way() {
        let marks = std::sync::Arc::new(FlushMarks::default());
        let commit = marks.gate.read().await;
        let flushing = tokio::spawn({
            let marks = marks.clone();
            async move { marks.flush(None, true, 1).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!flushing.is_finished(), "the commit under way is waited for");
        drop(commit);
        flushing.await.unwrap();
    }
}
