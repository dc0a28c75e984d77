//! Cleaning up after crashes: what interrupted writes left behind, index rows
//! whose blob is gone, and blobs no row points to.
//!
//! A blob is always written before the row that makes it visible, so a row
//! whose blob is missing is a loss (a deleted file, a bucket restored from an
//! older backup) and is removed, so that the next request fetches again; a
//! blob without a row is either a crash between the two writes or a commit
//! in progress, which is why only blobs older than the grace period go, and
//! only rows stored before the grace period are judged, so a commit racing
//! the clean-up is never undone.
//!
//! A round reads the index a page at a time in blob order beside the blob
//! store's listing, which is in the same (bytewise) order, like a merge: its
//! memory is a page, whatever the number of entries, and each page is one
//! short query. Nothing is removed on the strength of the walk alone: a row
//! goes only if its blob is still absent when asked, and a blob only if no
//! row points at it when asked (a commit sharing a content-addressed blob may
//! have landed behind the walk).

use std::time::{Duration, SystemTime};

use futures_util::StreamExt;

use super::{now_ms, BlobList, BlobRow, Store, StoreError};

/// Index rows read per query.
const PAGE: usize = 1000;

/// What a clean-up removed, and how much it looked at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanUp {
    /// Temporary files and unfinished multipart uploads.
    pub leftovers: u64,
    /// Index rows whose blob was missing.
    pub orphan_rows: u64,
    /// Blobs no index row pointed to.
    pub orphan_blobs: u64,
    /// Index rows checked.
    pub rows_checked: u64,
    /// Blobs checked.
    pub blobs_checked: u64,
}

impl CleanUp {
    /// Whether anything was removed.
    pub fn is_empty(&self) -> bool {
        self.leftovers == 0 && self.orphan_rows == 0 && self.orphan_blobs == 0
    }
}

/// The blob store's listing, one blob ahead.
struct Listing {
    list: BlobList,
    head: Option<(String, SystemTime)>,
}

impl Listing {
    async fn new(mut list: BlobList) -> Result<Self, StoreError> {
        let head = list.next().await.transpose()?;
        Ok(Self { list, head })
    }

    /// Takes the next blob if it sorts at or before `blob` (every blob when `None`).
    async fn take_through(&mut self, blob: Option<&str>) -> Result<Option<(String, SystemTime)>, StoreError> {
        match &self.head {
            Some((key, _)) if blob.is_none_or(|b| key.as_str() <= b) => {
                let next = self.list.next().await.transpose()?;
                Ok(std::mem::replace(&mut self.head, next))
            }
            _ => Ok(None),
        }
    }
}

/// Cleans `store` of everything older than `grace` that nothing will ever use.
pub async fn clean_up(store: &Store, grace: Duration) -> Result<CleanUp, StoreError> {
    let grace_ms = grace.as_millis().min(i64::MAX as u128) as i64;
    let judged_before = now_ms().saturating_sub(grace_ms);
    let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut done = CleanUp { leftovers: store.blobs.clean_up(grace).await?, ..CleanUp::default() };

    let mut listing = Listing::new(store.blobs.list().await?).await?;
    // The last listed blob that a row pointed at: rows sharing it follow.
    let mut matched: Option<String> = None;
    let mut after: Option<BlobRow> = None;
    loop {
        let rows =
            store.index.blob_rows(after.as_ref().map(|r| (r.blob.as_str(), r.key.as_str())), PAGE).await?;
        for row in &rows {
            done.rows_checked += 1;
            while let Some((blob, written)) = listing.take_through(Some(&row.blob)).await? {
                done.blobs_checked += 1;
                if blob == row.blob {
                    matched = Some(blob);
                } else if written < cutoff {
                    // Listed before this row's blob, and no earlier row had it.
                    orphan_blob(store, &blob, &mut done).await?;
                }
            }
            if matched.as_deref() != Some(row.blob.as_str()) && row.cached_at_ms < judged_before {
                orphan_row(store, row, &mut done).await?;
            }
        }
        match rows.last() {
            Some(last) if rows.len() == PAGE => after = Some(last.clone()),
            _ => break,
        }
    }
    while let Some((blob, written)) = listing.take_through(None).await? {
        done.blobs_checked += 1;
        if written < cutoff {
            orphan_blob(store, &blob, &mut done).await?;
        }
    }
    Ok(done)
}

/// Removes the row if its blob is still absent, and only this row: one that
/// replaced it meanwhile stays.
async fn orphan_row(store: &Store, row: &BlobRow, done: &mut CleanUp) -> Result<(), StoreError> {
    if store.blobs.exists(&row.blob).await? {
        return Ok(());
    }
    if let Ok(Some(removed)) = store.index.remove_if(&row.key, &row.blob).await {
        tracing::warn!(key = %removed.path, remote = %removed.remote, blob = %row.blob, "index row without its blob removed");
        done.orphan_rows += 1;
    }
    Ok(())
}

/// Deletes the blob if still no row points at it.
async fn orphan_blob(store: &Store, blob: &str, done: &mut CleanUp) -> Result<(), StoreError> {
    if store.index.blob_in_use(blob).await? {
        return Ok(());
    }
    store.blobs.delete(blob).await?;
    done.orphan_blobs += 1;
    Ok(())
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

    /// Several pages of rows sharing blobs, with missing blobs and unused
    /// blobs between them: the walk judges each exactly once.
    #[tokio::test]
    async fn a_round_walks_pages_of_shared_blobs() {
        let index = Arc::new(MemoryIndex::new());
        let blobs = Arc::new(MemoryBlobs::new());
        let store = Store::new(index.clone(), blobs.clone());
        // 3 000 rows over 300 blobs; every tenth blob is missing; 50 blobs
        // (sorting among the others) have no row.
        for b in 0..300 {
            if b % 10 != 3 {
                blobs.insert(&format!("cas/{b:04}"), "x");
            }
        }
        for b in 0..50 {
            blobs.insert(&format!("cas/{:04}.unused", b * 6), "y");
        }
        for i in 0..3_000 {
            index.put(entry(&format!("k{i:05}"), &format!("cas/{:04}", i % 300), 0)).await.unwrap();
        }
        let done = clean_up(&store, Duration::from_secs(60)).await.unwrap();
        assert_eq!(done.orphan_rows, 300, "ten rows for each of the 30 missing blobs");
        assert_eq!(done.orphan_blobs, 50);
        assert_eq!(done.rows_checked, 3_000);
        assert_eq!(done.blobs_checked, 270 + 50);
        assert_eq!(index.len(), 2_700);
        assert_eq!(blobs.len(), 270);
        let again = clean_up(&store, Duration::from_secs(60)).await.unwrap();
        assert!(again.is_empty(), "{again:?}");
    }
}
