//! Keeping the store within its budget: least recently served entries go
//! first.
//!
//! Never evicted: local repository entries (data, not cache), a blob this
//! process is reading (a download in progress completes), and a Docker blob
//! while a manifest of its image is still cached (an image is kept whole or
//! not at all; its entries age together, see [`super::AccessLog`]). A blob
//! shared by several entries (content-addressed) is deleted with the last of
//! them. The index row goes first, so no replica serves the bytes afterwards.

use std::{collections::HashMap, sync::Mutex};

use super::{access::docker_image, Cold, Store, StoreError};

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

/// Bytes by remote.
type Bytes = HashMap<String, u64>;

/// Evicts until `store` is within `budget`, or nothing more may go.
pub async fn evict(store: &Store, budget: &Budget) -> Result<Evicted, StoreError> {
    Ok(evict_measured(store, budget).await?.0)
}

/// [`evict`], answering also what each remote holds afterwards.
async fn evict_measured(store: &Store, budget: &Budget) -> Result<(Evicted, Bytes), StoreError> {
    store.access.flush(&*store.index).await?;
    let mut done = Evicted::default();
    if !budget.is_set() {
        return Ok((done, Bytes::new()));
    }
    let mut usage: Bytes = store.index.usage().await?.into_iter().map(|u| (u.remote, u.bytes)).collect();
    for (remote, max) in &budget.per_remote {
        let used = usage.get(remote).copied().unwrap_or(0);
        if used > *max {
            evict_from(store, Some(remote), used - max, &mut done, &mut usage).await?;
        }
    }
    if let Some(max) = budget.total {
        let used = usage.values().sum::<u64>();
        if used > max {
            evict_from(store, None, used - max, &mut done, &mut usage).await?;
        }
    }
    Ok((done, usage))
}

/// Bytes committed since the store was last measured, by remote. A commit
/// records its size here and wakes the [`Keeper`], so that a burst of fills
/// is evicted as it lands rather than on the next interval.
#[derive(Debug, Default)]
pub struct Growth {
    added: Mutex<Bytes>,
    wake: tokio::sync::Notify,
}

impl Growth {
    /// Records that `bytes` were committed for `remote`.
    pub fn add(&self, remote: &str, bytes: u64) {
        let mut added = self.added.lock().expect("growth lock");
        match added.get_mut(remote) {
            Some(sum) => *sum = sum.saturating_add(bytes),
            None => {
                added.insert(remote.to_owned(), bytes);
            }
        }
        drop(added);
        self.wake.notify_one();
    }

    /// Waits until something is committed.
    pub async fn grown(&self) {
        self.wake.notified().await;
    }

    fn take(&self) -> Bytes {
        std::mem::take(&mut *self.added.lock().expect("growth lock"))
    }
}

/// Keeps a store within its budget between full checks: it remembers what
/// each remote held at the last check and adds what [`Growth`] reports, and
/// evicts as soon as that estimate passes a limit. The estimate errs high (a
/// commit that replaces an entry counts whole), so a check is never skipped
/// when one is due; each check measures again.
#[derive(Debug, Default)]
pub struct Keeper {
    /// What each remote held at the last check, plus what was committed
    /// since; `None` before the first check.
    estimate: Option<Bytes>,
}

impl Keeper {
    /// A keeper that has measured nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes what was committed since the last call; answers whether the
    /// store may now be past `budget` (always, before the first check).
    pub fn may_exceed(&mut self, store: &Store, budget: &Budget) -> bool {
        let grown = store.growth.take();
        if !budget.is_set() {
            return false;
        }
        let Some(estimate) = &mut self.estimate else { return true };
        for (remote, bytes) in grown {
            *estimate.entry(remote).or_default() += bytes;
        }
        let over_remote = budget.per_remote.iter().any(|(r, max)| estimate.get(r).is_some_and(|b| b > max));
        let over_total = budget.total.is_some_and(|max| estimate.values().sum::<u64>() > max);
        over_remote || over_total
    }

    /// Measures the store and evicts until it is within `budget`.
    pub async fn check(&mut self, store: &Store, budget: &Budget) -> Result<Evicted, StoreError> {
        // Commits from here on are not in the measure: they count from now.
        store.growth.take();
        match evict_measured(store, budget).await {
            Ok((done, usage)) => {
                self.estimate = budget.is_set().then_some(usage);
                Ok(done)
            }
            Err(e) => {
                self.estimate = None;
                Err(e)
            }
        }
    }
}

/// How many of the coldest entries are looked at in one round.
const ROUND: usize = 256;

/// Evicts at least `excess` bytes of `remote` (of any remote with `None`)
/// when it can; adds what went to `done` and takes it off `usage`.
async fn evict_from(
    store: &Store,
    remote: Option<&str>,
    excess: u64,
    done: &mut Evicted,
    usage: &mut Bytes,
) -> Result<(), StoreError> {
    let mut freed = 0;
    // Where the walk has got to: every entry before it was judged in this
    // round, removed or kept, and is not read again (entries kept, such as
    // the layers of cached images, would otherwise be read by every batch).
    let mut after: Option<(i64, String)> = None;
    while freed < excess {
        let cursor = after.as_ref().map(|(at, key)| (*at, key.as_str()));
        let cold = store.index.coldest(remote, cursor, ROUND).await?;
        let Some(last) = cold.last() else { break };
        after = Some((last.last_access_ms, last.entry.key.clone()));
        for Cold { entry, .. } in cold {
            if freed >= excess {
                break;
            }
            let image_kept = match (entry.path.contains("/blobs/"), docker_image(&entry.path)) {
                (true, Some(image)) => {
                    store.index.has_prefix(&entry.remote, &format!("{image}/manifests/")).await?
                }
                _ => false,
            };
            if image_kept || store.access.is_being_read(&entry.blob) {
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
            freed += removed.size;
            if let Some(used) = usage.get_mut(&removed.remote) {
                *used = used.saturating_sub(removed.size);
            }
        }
    }
    Ok(())
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
        index.touch(&[("r/a".into(), 10, 1)]).await.unwrap();
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
    async fn a_round_reads_each_row_once_however_many_it_keeps() {
        // 2 000 cold layers of an image whose manifest is cached stay; the
        // 300 files served after them are what the round must free.
        let mut entries: Vec<_> = (0..2000)
            .map(|i| entry("hub", &format!("lib/big/blobs/sha256:{i:04}"), 1, EntryClass::Immutable, i))
            .collect();
        entries.push(entry("hub", "lib/big/manifests/v1", 10, EntryClass::Mutable, 5000));
        entries.extend((0..300).map(|i| entry("r", &format!("f{i}"), 100, EntryClass::Immutable, 3000 + i)));
        let (store, index) = fixture(&entries).await;
        let done = evict(&store, &Budget { total: Some(2010), per_remote: vec![] }).await.unwrap();
        assert_eq!(done, Evicted { entries: 300, bytes: 30_000 });
        assert_eq!(index.len(), 2001, "the layers and their manifest stay");
        let read = index.coldest_rows_read();
        assert!(read <= entries.len(), "{read} rows read for {} entries", entries.len());
    }

    #[tokio::test]
    async fn the_keeper_checks_as_soon_as_commits_may_pass_a_limit() {
        let (store, index) = fixture(&[entry("r", "a", 600, EntryClass::Immutable, 1)]).await;
        let budget = Budget { total: Some(1000), per_remote: vec![("s".into(), 100)] };
        let mut keeper = Keeper::new();
        assert!(keeper.may_exceed(&store, &budget), "nothing measured yet");
        assert_eq!(keeper.check(&store, &budget).await.unwrap(), Evicted::default());
        store.growth.add("r", 300);
        assert!(!keeper.may_exceed(&store, &budget), "900 of 1000");
        store.growth.add("s", 50);
        assert!(!keeper.may_exceed(&store, &budget), "950 of 1000, s at 50 of 100");
        store.growth.add("s", 60);
        assert!(keeper.may_exceed(&store, &budget), "s past its own 100");
        // What the commits added is in the index; the check measures it.
        index.put(entry("r", "b", 500, EntryClass::Immutable, 2)).await.unwrap();
        index.put(entry("s", "c", 110, EntryClass::Immutable, 3)).await.unwrap();
        let done = keeper.check(&store, &budget).await.unwrap();
        assert_eq!(done, Evicted { entries: 2, bytes: 710 }, "s/c for its remote, then r/a for the total");
        assert!(!keeper.may_exceed(&store, &budget), "500 of 1000 after the check");
        assert!(!keeper.may_exceed(&store, &Budget::default()), "no budget, no check");
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
