//! The tier's own bookkeeping: opening, keeping, installing and deleting
//! copies under the budget, and finding the copies a previous run left.

use std::{
    io,
    ops::Range,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use artifactapi_layers::store::{BlobStore, BlobStream, StoreError};

use super::{local_key, Tier};

impl Tier {
    pub(super) fn forget(&self, key: &str) {
        let taken = {
            let mut state = self.state.lock().expect("local tier lock");
            if let Some(filling) = state.filling.get(key) {
                filling.cancel();
            }
            state.take(key)
        };
        if let Some(size) = taken {
            self.remove_files(vec![(key.to_owned(), size)]);
        }
    }

    /// Deletes the files of copies no longer counted, off the async threads.
    pub(super) fn remove_files(&self, copies: Vec<(String, u64)>) {
        if copies.is_empty() {
            return;
        }
        let paths = self.paths(&copies);
        let work = move || {
            for path in paths {
                let _ = std::fs::remove_file(path);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(work)),
            Err(_) => work(),
        }
    }

    /// The size of the copy of `key`, marked as used, and whether it must
    /// be confirmed before it is served.
    pub(super) fn lookup(&self, key: &str) -> Option<(u64, bool)> {
        let mut state = self.state.lock().expect("local tier lock");
        let tick = state.next_tick();
        let copy = state.copies.get_mut(key)?;
        let old = std::mem::replace(&mut copy.tick, tick);
        let (size, confirmed) = (copy.size, copy.confirmed);
        state.order.remove(&old);
        state.order.insert(tick, key.to_owned());
        let confirm = self.confirm_after.is_some_and(|age| confirmed.elapsed() >= age);
        Some((size, confirm))
    }

    pub(super) fn confirmed(&self, key: &str) {
        if let Some(copy) = self.state.lock().expect("local tier lock").copies.get_mut(key) {
            copy.confirmed = Instant::now();
        }
    }

    /// Opens the copy of `key`, checking its length first.
    pub(super) async fn open_copy(
        &self,
        key: &str,
        size: u64,
        range: Option<Range<u64>>,
    ) -> Result<BlobStream, StoreError> {
        let name = local_key(key, size);
        let len = std::fs::metadata(self.copies.path(&name)?)?.len();
        if len != size {
            return Err(StoreError::Backend(format!("the local copy has {len} bytes, not {size}")));
        }
        self.copies.open(&name, Some(range.unwrap_or(0..size))).await
    }

    /// A path for a file on its way to becoming a copy.
    pub(super) fn incoming_path(&self) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        self.incoming.join(format!("{nanos:x}-{}-{n}", std::process::id()))
    }

    /// Makes the complete file at `staged` (reserved already) the copy of
    /// `key`: flushed to disk, renamed into place, counted.
    pub(super) async fn keep(&self, key: &str, staged: PathBuf, size: u64) -> io::Result<()> {
        let dest = self.copies.path(&local_key(key, size)).map_err(io::Error::other)?;
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            std::fs::File::open(&staged)?.sync_data()?;
            std::fs::create_dir_all(dest.parent().expect("copies have a parent"))?;
            std::fs::rename(&staged, &dest).inspect_err(|_| {
                let _ = std::fs::remove_file(&staged);
            })
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Makes `size` reserved bytes under `key` a copy, unless the blob was
    /// deleted meanwhile (`cancelled`), when its file goes.
    pub(super) fn install(&self, key: &str, size: u64, cancelled: bool) {
        let replaced = {
            let mut state = self.state.lock().expect("local tier lock");
            if cancelled {
                state.bytes -= size;
                None
            } else {
                state.install(key, size)
            }
        };
        match replaced {
            Some(old) if old != size => self.remove_files(vec![(key.to_owned(), old)]),
            _ => {}
        }
        if cancelled {
            self.remove_files(vec![(key.to_owned(), size)]);
        }
    }

    /// Reserves `size` bytes, deleting what must go first (so the disk
    /// never holds more than the budget); answers whether it could.
    pub(super) async fn reserve(&self, size: u64) -> bool {
        let evicted = self.state.lock().expect("local tier lock").reserve(size, self.budget);
        let Some(evicted) = evicted else { return false };
        if !evicted.is_empty() {
            self.stats.evictions.fetch_add(evicted.len() as u64, Ordering::Relaxed);
            let bytes = evicted.iter().map(|(_, size)| size).sum();
            self.stats.evicted_bytes.fetch_add(bytes, Ordering::Relaxed);
            let paths = self.paths(&evicted);
            let _ = tokio::task::spawn_blocking(move || {
                for path in paths {
                    let _ = std::fs::remove_file(path);
                }
            })
            .await;
        }
        true
    }

    pub(super) fn paths(&self, copies: &[(String, u64)]) -> Vec<PathBuf> {
        copies.iter().filter_map(|(key, size)| self.copies.path(&local_key(key, *size)).ok()).collect()
    }

    pub(super) fn unreserve(&self, size: u64) {
        self.state.lock().expect("local tier lock").bytes -= size;
    }
}

/// The copies under `root` with their sizes, oldest first; files that are
/// not a whole copy are removed.
pub(super) fn scan(root: &Path) -> io::Result<Vec<(String, u64)>> {
    let mut found = Vec::new();
    let mut broken = Vec::new();
    crate::blob::fs::walk(root, &mut |path, modified| {
        let named = path
            .strip_prefix(root)
            .ok()
            .and_then(|p| p.to_str())
            .and_then(|p| p.rsplit_once('~'))
            .and_then(|(key, size)| Some((key.to_owned(), size.parse::<u64>().ok()?)));
        match (named, std::fs::metadata(path)) {
            (Some((key, size)), Ok(meta)) if meta.len() == size => found.push((modified, key, size)),
            _ => broken.push(path.to_owned()),
        }
    })?;
    for path in broken {
        tracing::warn!(path = %path.display(), "removing a local copy that is not whole");
        let _ = std::fs::remove_file(path);
    }
    found.sort();
    Ok(found.into_iter().map(|(_, key, size)| (key, size)).collect())
}
