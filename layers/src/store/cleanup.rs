//! Cleaning up after crashes: what interrupted writes left behind, index rows
//! whose blob is gone, and blobs no row points to.
//!
//! A blob is always written before the row that makes it visible, so a row
//! whose blob is missing is a loss (a deleted file, a bucket restored from an
//! older backup) and is removed, so that the next request fetches again; a
//! blob without a row is either a crash between the two writes or a commit
//! in progress, which is why only blobs older than the grace period go. Rows
//! are read after blobs are listed, and only rows stored before the grace
//! period are judged, so a commit racing the clean-up is never undone.

use std::{
    collections::HashSet,
    time::{Duration, SystemTime},
};

use super::{now_ms, Store, StoreError};

/// What a clean-up removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanUp {
    /// Temporary files and unfinished multipart uploads.
    pub leftovers: u64,
    /// Index rows whose blob was missing.
    pub orphan_rows: u64,
    /// Blobs no index row pointed to.
    pub orphan_blobs: u64,
}

impl CleanUp {
    /// Whether anything was removed.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Cleans `store` of everything older than `grace` that nothing will ever use.
pub async fn clean_up(store: &Store, grace: Duration) -> Result<CleanUp, StoreError> {
    let grace_ms = grace.as_millis().min(i64::MAX as u128) as i64;
    let judged_before = now_ms().saturating_sub(grace_ms);
    let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut done = CleanUp { leftovers: store.blobs.clean_up(grace).await?, ..CleanUp::default() };

    let blobs = store.blobs.list().await?;
    let rows = store.index.blobs().await?;
    let present: HashSet<&str> = blobs.iter().map(|(key, _)| key.as_str()).collect();
    let referenced: HashSet<&str> = rows.iter().map(|(_, blob, _)| blob.as_str()).collect();

    for (key, blob, cached_at_ms) in &rows {
        if *cached_at_ms < judged_before && !present.contains(blob.as_str()) {
            // Only this row: one that replaced it meanwhile stays.
            if let Ok(Some(removed)) = store.index.remove_if(key, blob).await {
                tracing::warn!(key = %removed.path, remote = %removed.remote, blob, "index row without its blob removed");
                done.orphan_rows += 1;
            }
        }
    }
    for (blob, modified) in &blobs {
        if *modified < cutoff && !referenced.contains(blob.as_str()) {
            store.blobs.delete(blob).await?;
            done.orphan_blobs += 1;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        memory::{MemoryBlobs, MemoryIndex},
        BlobStore, Entry, EntryClass, Index,
    };
    use std::sync::Arc;

    fn entry(key: &str, blob: &str, cached_at_ms: i64) -> Entry {
        Entry {
            key: key.into(),
            remote: "r".into(),
            path: key.into(),
            blob: blob.into(),
            size: 1,
            class: EntryClass::Immutable,
            headers: vec![],
            cached_at_ms,
            expires_at_ms: None,
            policy: None,
        }
    }

    #[tokio::test]
    async fn rows_without_blobs_go_and_recent_rows_stay() {
        let index = Arc::new(MemoryIndex::new());
        let blobs = Arc::new(MemoryBlobs::new());
        let store = Store::new(index.clone(), blobs.clone());
        blobs.insert("b-kept", "x");
        index.put(entry("kept", "b-kept", 0)).await.unwrap();
        index.put(entry("lost", "b-lost", 0)).await.unwrap();
        index.put(entry("committing", "b-new", now_ms())).await.unwrap();
        let done = clean_up(&store, Duration::from_secs(60)).await.unwrap();
        assert_eq!(done.orphan_rows, 1);
        assert!(index.get("lost").await.unwrap().is_none());
        assert!(index.get("kept").await.unwrap().is_some());
        assert!(index.get("committing").await.unwrap().is_some(), "within the grace period");
        // Memory blobs carry no time: they count as old.
        blobs.insert("b-orphan", "y");
        assert_eq!(clean_up(&store, Duration::from_secs(60)).await.unwrap().orphan_blobs, 1);
        assert!(blobs.open("b-orphan", None).await.is_err());
        assert!(blobs.open("b-kept", None).await.is_ok());
    }
}
