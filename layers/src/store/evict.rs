//! Keeping the store within its budget: least recently served entries go
//! first.
//!
//! Never evicted: local repository entries (data, not cache), a blob this
//! process is reading (a download in progress completes), and a Docker blob
//! while a manifest of its image is still cached (an image is kept whole or
//! not at all; its entries age together, see [`super::AccessLog`]). A blob
//! shared by several entries (content-addressed) is deleted with the last of
//! them. The index row goes first, so no replica serves the bytes afterwards.

use std::collections::HashSet;

use super::{access::docker_image, Store, StoreError};

/// How much may be stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budget {
    /// For the whole store (`CACHE_MAX_BYTES`); local repositories count
    /// but are never evicted.
    pub total: Option<u64>,
    /// Per remote (`cache.max_bytes`).
    pub per_remote: Vec<(String, u64)>,
}

impl Budget {
    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.total.is_some() || !self.per_remote.is_empty()
    }
}

/// What an eviction removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Entries removed.
    pub entries: u64,
    /// Their sizes, summed.
    pub bytes: u64,
}

/// Evicts until `store` is within `budget`, or nothing more may go.
pub async fn evict(store: &Store, budget: &Budget) -> Result<Evicted, StoreError> {
    store.access.flush(&*store.index).await?;
    let mut done = Evicted::default();
    if !budget.is_set() {
        return Ok(done);
    }
    let usage = store.index.usage().await?;
    for (remote, max) in &budget.per_remote {
        let used = usage.iter().find(|u| &u.remote == remote).map_or(0, |u| u.bytes);
        if used > *max {
            let freed = evict_from(store, Some(remote), used - max).await?;
            done.entries += freed.entries;
            done.bytes += freed.bytes;
        }
    }
    if let Some(max) = budget.total {
        let used = usage.iter().map(|u| u.bytes).sum::<u64>().saturating_sub(done.bytes);
        if used > max {
            let freed = evict_from(store, None, used - max).await?;
            done.entries += freed.entries;
            done.bytes += freed.bytes;
        }
    }
    Ok(done)
}

/// How many of the coldest entries are looked at in one round.
const ROUND: usize = 256;

async fn evict_from(store: &Store, remote: Option<&str>, excess: u64) -> Result<Evicted, StoreError> {
    let mut done = Evicted::default();
    let mut kept: HashSet<String> = HashSet::new();
    while done.bytes < excess {
        let cold = store.index.coldest(remote, ROUND + kept.len()).await?;
        let candidates: Vec<_> = cold.into_iter().filter(|e| !kept.contains(&e.key)).collect();
        if candidates.is_empty() {
            break;
        }
        for entry in candidates {
            if done.bytes >= excess {
                break;
            }
            let image_kept = match (entry.path.contains("/blobs/"), docker_image(&entry.path)) {
                (true, Some(image)) => {
                    store.index.has_prefix(&entry.remote, &format!("{image}/manifests/")).await?
                }
                _ => false,
            };
            if image_kept || store.access.is_being_read(&entry.blob) {
                kept.insert(entry.key);
                continue;
            }
            // Only the entry judged here: one written meanwhile is not the coldest.
            let Some(removed) = store.index.remove_if(&entry.key, &entry.blob).await? else { continue };
            if !store.index.blob_in_use(&removed.blob).await? && !store.access.is_being_read(&removed.blob) {
                if let Err(e) = store.blobs.delete(&removed.blob).await {
                    tracing::warn!(blob = %removed.blob, error = %e, "could not delete an evicted blob");
                }
            }
            tracing::debug!(remote = %removed.remote, path = %removed.path, size = removed.size, "evicted");
            done.entries += 1;
            done.bytes += removed.size;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{
        memory::{MemoryBlobs, MemoryIndex},
        Entry, EntryClass, Index,
    };

    fn entry(remote: &str, path: &str, size: u64, class: EntryClass, at: i64) -> Entry {
        Entry {
            key: format!("{remote}/{path}"),
            remote: remote.into(),
            path: path.into(),
            blob: format!("blob-{remote}/{path}"),
            size,
            class,
            headers: vec![],
            cached_at_ms: at,
            expires_at_ms: None,
            policy: None,
        }
    }

    async fn fixture(entries: &[Entry]) -> (Store, Arc<MemoryIndex>) {
        let index = Arc::new(MemoryIndex::new());
        let blobs = Arc::new(MemoryBlobs::new());
        for e in entries {
            blobs.insert(&e.blob, vec![0u8; e.size as usize]);
            index.put(e.clone()).await.unwrap();
        }
        (Store::new(index.clone(), blobs), index)
    }

    #[tokio::test]
    async fn least_recently_served_go_first_and_local_entries_never() {
        let (store, index) = fixture(&[
            entry("r", "a", 100, EntryClass::Immutable, 1),
            entry("r", "b", 100, EntryClass::Immutable, 2),
            entry("r", "c", 100, EntryClass::Mutable, 3),
            entry("local", "x", 500, EntryClass::Local, 0),
        ])
        .await;
        // `a` is served after the others were stored.
        index.touch(&[("r/a".into(), 10)]).await.unwrap();
        let done = evict(&store, &Budget { total: Some(700), per_remote: vec![] }).await.unwrap();
        assert_eq!(done, Evicted { entries: 1, bytes: 100 });
        assert!(index.get("r/b").await.unwrap().is_none(), "the least recently served went");
        assert!(index.get("r/a").await.unwrap().is_some());
        let done = evict(&store, &Budget { total: Some(100), per_remote: vec![] }).await.unwrap();
        assert_eq!(done.entries, 2);
        assert!(index.get("local/x").await.unwrap().is_some(), "local entries are never evicted");
        assert!(store.blobs.open("blob-r/a", None).await.is_err(), "evicted bytes are deleted");
    }

    #[tokio::test]
    async fn blobs_being_read_and_docker_layers_of_cached_images_stay() {
        let (store, index) = fixture(&[
            entry("hub", "lib/app/blobs/sha256:aa", 100, EntryClass::Immutable, 1),
            entry("hub", "lib/app/manifests/v1", 10, EntryClass::Mutable, 2),
            entry("r", "read.bin", 100, EntryClass::Immutable, 3),
        ])
        .await;
        let reading = store.access.reading("blob-r/read.bin");
        let budget = Budget { total: None, per_remote: vec![("hub".into(), 0), ("r".into(), 0)] };
        let done = evict(&store, &budget).await.unwrap();
        // The manifest goes first; the layer stays while it was there.
        assert!(index.get("hub/lib/app/manifests/v1").await.unwrap().is_none());
        assert!(index.get("r/read.bin").await.unwrap().is_some(), "a blob being read is not evicted");
        assert_eq!(done.entries, 1);
        let done = evict(&store, &budget).await.unwrap();
        assert_eq!(done.entries, 1, "with no manifest left, the layer may go");
        drop(reading);
        assert_eq!(evict(&store, &budget).await.unwrap().entries, 1);
    }

    #[tokio::test]
    async fn a_shared_blob_goes_with_its_last_entry() {
        let mut one = entry("one", "x/blobs/sha256:bb", 100, EntryClass::Immutable, 1);
        let mut two = entry("two", "x/blobs/sha256:bb", 100, EntryClass::Immutable, 2);
        one.blob = "cas/sha256/bb".into();
        two.blob = "cas/sha256/bb".into();
        let (store, index) = fixture(&[one, two]).await;
        evict(&store, &Budget { total: Some(100), per_remote: vec![] }).await.unwrap();
        assert!(index.get("one/x/blobs/sha256:bb").await.unwrap().is_none());
        assert!(store.blobs.open("cas/sha256/bb", None).await.is_ok(), "still the other entry's");
        evict(&store, &Budget { total: Some(0), per_remote: vec![] }).await.unwrap();
        assert!(store.blobs.open("cas/sha256/bb", None).await.is_err());
    }
}
