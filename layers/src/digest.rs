//! Digests that package metadata promises for files, checked when the files
//! are fetched.
//!
//! A PyPI page says `…/pkg.whl#sha256=…`; when the page is rewritten, the
//! promise is recorded under the cache key the rewritten link leads to, and
//! the fill of that file hashes the bytes as they arrive: a mismatch fails the
//! transfer and nothing is cached. Bounded: past the capacity, the oldest half
//! is forgotten (an unknown digest is simply not checked).

use std::{collections::HashMap, sync::Mutex};

/// The expected SHA-256 (lower-case hex) of files by cache key.
#[derive(Debug)]
pub struct ExpectedDigests {
    inner: Mutex<Promises>,
    capacity: usize,
}

/// Digests by key, each with the tick it was recorded at.
#[derive(Debug, Default)]
struct Promises {
    by_key: HashMap<String, (String, u64)>,
    tick: u64,
}

impl ExpectedDigests {
    /// Remembers up to `capacity` promises.
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new(Promises::default()), capacity: capacity.max(2) }
    }

    /// Records that the file under `key` must have this SHA-256.
    pub fn expect(&self, key: String, sha256: &str) {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return;
        }
        let mut inner = self.inner.lock().expect("digest lock");
        inner.tick += 1;
        let tick = inner.tick;
        inner.by_key.insert(key, (sha256.to_ascii_lowercase(), tick));
        if inner.by_key.len() > self.capacity {
            let cut = tick - (self.capacity as u64 / 2);
            inner.by_key.retain(|_, (_, t)| *t > cut);
        }
    }

    /// The SHA-256 promised for the file under `key`, if any.
    pub fn get(&self, key: &str) -> Option<String> {
        self.inner.lock().expect("digest lock").by_key.get(key).map(|(d, _)| d.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_valid_digests_within_capacity() {
        let d = ExpectedDigests::new(4);
        let hex = "ab".repeat(32);
        d.expect("k".into(), &hex.to_ascii_uppercase());
        assert_eq!(d.get("k"), Some(hex.clone()));
        d.expect("bad".into(), "xyz");
        assert_eq!(d.get("bad"), None);
        for i in 0..10 {
            d.expect(format!("k{i}"), &hex);
        }
        assert!(d.inner.lock().unwrap().by_key.len() <= 4);
        assert!(d.get("k9").is_some(), "the newest are kept");
    }
}
