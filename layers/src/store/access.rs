//! Which entries were served and which blobs are being read: recorded in
//! memory on the hot path, written to the index in batches.
//!
//! A hit costs one map insert; [`AccessLog::flush`] writes the batch with one
//! index call. For a Docker image, serving any of its manifests or blobs
//! counts for the whole image (`{name}/...`): a node that already has the
//! layers asks only for the manifest, and the layers must age with it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use super::{now_ms, Index, Served, StoreError};

/// The access record of a store.
#[derive(Debug, Default)]
pub struct AccessLog {
    served: Mutex<Batch>,
    reading: Mutex<HashMap<String, usize>>,
}

#[derive(Debug, Default)]
struct Batch {
    /// When each key was last served, and how many times since the flush.
    keys: HashMap<String, (i64, u64)>,
    /// `(remote, path prefix)` of images served.
    images: HashMap<(String, String), i64>,
}

/// At most this many served keys wait for a flush; past it, more are dropped
/// (an entry served that often is recorded by a later request; its count
/// misses those hits).
const MAX_BATCH: usize = 200_000;

impl AccessLog {
    /// Records that the entry under `key` (of `remote`, at `path`) was served now.
    pub fn served(&self, key: &str, remote: &str, path: &str) {
        let now = now_ms();
        let mut batch = self.served.lock().expect("access lock");
        if let Some((at, times)) = batch.keys.get_mut(key) {
            *at = now;
            *times += 1;
        } else if batch.keys.len() < MAX_BATCH {
            batch.keys.insert(key.to_owned(), (now, 1));
        }
        if let Some(image) = docker_image(path) {
            if batch.images.len() < MAX_BATCH {
                batch.images.insert((remote.to_owned(), format!("{image}/")), now);
            }
        }
    }

    /// Writes what was served since the last flush; answers how many records.
    pub async fn flush(&self, index: &dyn Index) -> Result<usize, StoreError> {
        let batch = std::mem::take(&mut *self.served.lock().expect("access lock"));
        let count = batch.keys.len() + batch.images.len();
        if !batch.keys.is_empty() {
            let keys: Vec<Served> =
                batch.keys.into_iter().map(|(key, (at, times))| (key, at, times)).collect();
            index.touch(&keys).await?;
        }
        for ((remote, prefix), at) in batch.images {
            index.touch_prefix(&remote, &prefix, at).await?;
        }
        Ok(count)
    }

    /// Marks `blob` as being read until the guard is dropped.
    pub fn reading(self: &Arc<Self>, blob: &str) -> ReadGuard {
        *self.reading.lock().expect("reading lock").entry(blob.to_owned()).or_default() += 1;
        ReadGuard { log: self.clone(), blob: blob.to_owned() }
    }

    /// Whether this process is reading `blob` now.
    pub fn is_being_read(&self, blob: &str) -> bool {
        self.reading.lock().expect("reading lock").get(blob).is_some_and(|n| *n > 0)
    }
}

/// Keys whose metadata was declared out of date (a file it lists was fetched
/// for the first time), with when. A fill of such a key that began before
/// the mark commits already expired: the mark reaches fills still in flight,
/// which the index does not hold yet.
#[derive(Debug, Default)]
pub struct ExpiryMarks {
    marks: Mutex<HashMap<String, i64>>,
}

/// Marks older than this are forgotten (no fill takes that long to commit a
/// metadata document).
const MARK_LIFETIME_MS: i64 = 10 * 60 * 1000;
/// At most this many marks; past it the oldest half goes.
const MAX_MARKS: usize = 100_000;

impl ExpiryMarks {
    /// Marks `key` out of date from now on.
    pub fn mark(&self, key: &str) {
        let now = now_ms();
        let mut marks = self.marks.lock().expect("marks lock");
        if marks.len() >= MAX_MARKS {
            marks.retain(|_, at| now - *at < MARK_LIFETIME_MS / 2);
        }
        marks.insert(key.to_owned(), now);
    }

    /// Whether `key` was marked at or after `since_ms`.
    pub fn marked_since(&self, key: &str, since_ms: i64) -> bool {
        let now = now_ms();
        let mut marks = self.marks.lock().expect("marks lock");
        match marks.get(key) {
            Some(at) if now - *at >= MARK_LIFETIME_MS => {
                marks.remove(key);
                false
            }
            Some(at) => *at >= since_ms,
            None => false,
        }
    }
}

/// Held while a blob is read; see [`AccessLog::reading`].
#[derive(Debug)]
pub struct ReadGuard {
    log: Arc<AccessLog>,
    blob: String,
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        let mut reading = self.log.reading.lock().expect("reading lock");
        if let Some(n) = reading.get_mut(&self.blob) {
            *n -= 1;
            if *n == 0 {
                reading.remove(&self.blob);
            }
        }
    }
}

/// The image name of a registry path (`{name}/manifests/{ref}`,
/// `{name}/blobs/{digest}`).
pub(crate) fn docker_image(path: &str) -> Option<&str> {
    let (name, rest) = path.rsplit_once("/manifests/").or_else(|| path.rsplit_once("/blobs/"))?;
    let shaped = !name.is_empty() && !rest.is_empty() && !rest.contains('/');
    let blob = path[name.len()..].starts_with("/blobs/");
    (shaped && (!blob || rest.starts_with("sha256:") || rest.starts_with("sha512:"))).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_of_registry_paths() {
        assert_eq!(docker_image("library/nginx/manifests/latest"), Some("library/nginx"));
        assert_eq!(docker_image("a/b/c/blobs/sha256:abc"), Some("a/b/c"));
        assert_eq!(docker_image("a/blobs/readme.txt"), None);
        assert_eq!(docker_image("releases/v1/tool.tgz"), None);
        assert_eq!(docker_image("x/manifests/a/b"), None);
    }

    #[test]
    fn read_guards_count() {
        let log = Arc::new(AccessLog::default());
        let a = log.reading("b");
        let b = log.reading("b");
        assert!(log.is_being_read("b"));
        drop(a);
        assert!(log.is_being_read("b"));
        drop(b);
        assert!(!log.is_being_read("b"));
    }
}
