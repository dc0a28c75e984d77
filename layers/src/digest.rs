//! Digests that package metadata promises for files, checked when the files
//! are fetched.
//!
//! A PyPI page says `…/pkg.whl#sha256=…`, an npm packument says
//! `"integrity": "sha512-…"`; when the document is rewritten, the promise is
//! recorded under the cache key the rewritten link leads to, and the fill of
//! that file hashes the bytes as they arrive: a mismatch fails the transfer
//! and nothing is cached. Bounded: past the capacity, the oldest half is
//! forgotten (an unknown digest is simply not checked).

use std::{collections::HashMap, sync::Mutex};

use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine as _,
};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

use crate::{
    budget::{Cancel, ZipBudget},
    format::go::h1,
};

/// A digest algorithm metadata uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// SHA-1 (Maven's `.sha1` files).
    Sha1,
    /// SHA-256 (PyPI, OCI).
    Sha256,
    /// SHA-512 (npm `integrity`).
    Sha512,
    /// Go's `h1:` hash of a `go.mod` ([`h1`]): the SHA-256 of one line
    /// naming the file's SHA-256, so it is computed as the bytes arrive.
    GoModH1,
    /// Go's `h1:` hash of a module zip ([`h1`]): read from the zip's
    /// directory, so it is computed over the whole spooled file, before the
    /// client has its last byte.
    GoZipH1,
}

/// A promised digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Which algorithm.
    pub algorithm: Algorithm,
    /// The digest's bytes.
    pub digest: Vec<u8>,
}

impl Expected {
    /// From a hex SHA-256 (`#sha256=…`).
    pub fn sha256_hex(hex_digest: &str) -> Option<Self> {
        let digest = hex::decode(hex_digest).ok().filter(|d| d.len() == 32)?;
        Some(Self { algorithm: Algorithm::Sha256, digest })
    }

    /// From a hex SHA-1 (a Maven `.sha1` file).
    pub fn sha1_hex(hex_digest: &str) -> Option<Self> {
        let digest = hex::decode(hex_digest).ok().filter(|d| d.len() == 20)?;
        Some(Self { algorithm: Algorithm::Sha1, digest })
    }

    /// From a Subresource Integrity string (`sha512-…`); the strongest
    /// supported entry wins.
    pub fn integrity(sri: &str) -> Option<Self> {
        sri.split_whitespace()
            .filter_map(|item| {
                let (algorithm, b64) = item.split_once('-')?;
                let b64 = b64.split('?').next()?;
                let (algorithm, len) = match algorithm {
                    "sha512" => (Algorithm::Sha512, 64),
                    "sha256" => (Algorithm::Sha256, 32),
                    _ => return None,
                };
                let digest = base64_decode(b64).filter(|d| d.len() == len)?;
                Some(Self { algorithm, digest })
            })
            .max_by_key(|e| e.digest.len())
    }

    /// From a go.sum hash (`h1:…`) of a module's `.mod` (`zip` false) or
    /// `.zip` (`zip` true).
    pub fn go_h1(sum: &str, zip: bool) -> Option<Self> {
        let algorithm = if zip { Algorithm::GoZipH1 } else { Algorithm::GoModH1 };
        Some(Self { algorithm, digest: h1::parse(sum)?.to_vec() })
    }

    /// A hasher for this digest's algorithm (`None` for one computed over
    /// the whole file, see [`Expected::of_file`]).
    pub fn hasher(&self) -> Option<Hasher> {
        match self.algorithm {
            Algorithm::Sha1 => Some(Hasher::Sha1(Sha1::new())),
            Algorithm::Sha256 => Some(Hasher::Sha256(Sha256::new())),
            Algorithm::Sha512 => Some(Hasher::Sha512(Box::new(Sha512::new()))),
            Algorithm::GoModH1 => Some(Hasher::GoModH1(Sha256::new())),
            Algorithm::GoZipH1 => None,
        }
    }

    /// This digest's algorithm over the first `len` bytes of `file`, for an
    /// algorithm with no [`hasher`](Expected::hasher), within `budget` and
    /// until `cancel` is set; an error says why the file cannot be hashed
    /// so (not a zip, past a limit, nobody waits any more).
    pub fn of_file(
        &self,
        file: &std::fs::File,
        len: u64,
        budget: &ZipBudget,
        cancel: &Cancel,
    ) -> Result<Vec<u8>, String> {
        match self.algorithm {
            Algorithm::GoZipH1 => h1::zip_file(file, len, budget, cancel).map(|sum| sum.to_vec()),
            _ => Err(format!("{:?} is computed as the bytes arrive", self.algorithm)),
        }
    }

    /// `digest` as this algorithm is written (`h1:` base64 for Go, hex for
    /// the others), for messages.
    pub fn show(&self, digest: &[u8]) -> String {
        match self.algorithm {
            Algorithm::GoModH1 | Algorithm::GoZipH1 => h1::shown(digest),
            algorithm => format!("{algorithm:?} {}", hex::encode(digest)),
        }
    }

    /// Who made the promise, for messages.
    pub fn vouched_by(&self) -> &'static str {
        match self.algorithm {
            Algorithm::GoModH1 | Algorithm::GoZipH1 => "the checksum database",
            _ => "the metadata",
        }
    }

    /// Whether this digest is computed over the whole file once it is
    /// there, not as the bytes arrive: its check can only end after the
    /// last byte, so a client waits for it before the answer starts.
    pub fn whole_file(&self) -> bool {
        self.hasher().is_none()
    }

    /// The digest in hex, for messages.
    pub fn hex(&self) -> String {
        hex::encode(&self.digest)
    }
}

/// A running hash of one of the supported algorithms.
#[derive(Debug, Clone)]
pub enum Hasher {
    /// SHA-1.
    Sha1(Sha1),
    /// SHA-256.
    Sha256(Sha256),
    /// SHA-512.
    Sha512(Box<Sha512>),
    /// Go's `h1:` of a `go.mod`: its SHA-256, summarized at the end.
    GoModH1(Sha256),
}

impl Hasher {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) | Hasher::GoModH1(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything added.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::GoModH1(h) => h1::go_mod_sum(h.finalize().into()).to_vec(),
        }
    }
}

/// Subresource Integrity allows either alphabet (`+/` or `-_`), padded or not.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const CONFIG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);
    STANDARD.decode(s).or_else(|_| URL_SAFE.decode(s)).ok()
}

/// The digests promised for files, by cache key.
#[derive(Debug)]
pub struct ExpectedDigests {
    inner: Mutex<Promises>,
    capacity: usize,
}

/// Digests by key, each with the tick it was recorded at.
#[derive(Debug, Default)]
struct Promises {
    by_key: HashMap<String, (Expected, u64)>,
    tick: u64,
}

impl ExpectedDigests {
    /// Remembers up to `capacity` promises.
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new(Promises::default()), capacity: capacity.max(2) }
    }

    /// Records that the file under `key` must have this digest.
    pub fn expect(&self, key: String, expected: Expected) {
        let mut inner = self.inner.lock().expect("digest lock");
        inner.tick += 1;
        let tick = inner.tick;
        inner.by_key.insert(key, (expected, tick));
        if inner.by_key.len() > self.capacity {
            let cut = tick - (self.capacity as u64 / 2);
            inner.by_key.retain(|_, (_, t)| *t > cut);
        }
    }

    /// The digest promised for the file under `key`, if any.
    pub fn get(&self, key: &str) -> Option<Expected> {
        self.inner.lock().expect("digest lock").by_key.get(key).map(|(e, _)| e.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_and_subresource_integrity() {
        let hex = "ab".repeat(32);
        assert_eq!(Expected::sha256_hex(&hex).unwrap().digest, vec![0xab; 32]);
        assert!(Expected::sha256_hex("xyz").is_none());
        assert!(Expected::sha256_hex("abcd").is_none());
        // sha512 of the empty string.
        let empty =
            "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==";
        let e = Expected::integrity(empty).unwrap();
        assert_eq!(e.algorithm, Algorithm::Sha512);
        let mut h = e.hasher().unwrap();
        h.update(b"");
        assert_eq!(h.finish(), e.digest);
        let both = format!("sha1-abc {empty}");
        assert_eq!(Expected::integrity(&both).unwrap().algorithm, Algorithm::Sha512);
        assert!(Expected::integrity("md5-xyz").is_none());
    }

    #[test]
    fn integrity_may_be_unpadded_or_url_safe() {
        let padded =
            "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==";
        let digest = Expected::integrity(padded).unwrap().digest;
        let unpadded = padded.trim_end_matches('=');
        let url_safe = unpadded.replace('+', "-").replace('/', "_");
        assert_eq!(Expected::integrity(unpadded).unwrap().digest, digest);
        assert_eq!(Expected::integrity(&url_safe).unwrap().digest, digest);
        assert_eq!(Expected::integrity(&format!("{padded}?opt")).unwrap().digest, digest);
        assert!(Expected::integrity("sha512-not*base64").is_none());
        assert!(Expected::integrity("sha256-YWJj").is_none(), "too short for its algorithm");
    }

    #[test]
    fn remembers_within_capacity() {
        let d = ExpectedDigests::new(4);
        let e = Expected::sha256_hex(&"ab".repeat(32)).unwrap();
        d.expect("k".into(), e.clone());
        assert_eq!(d.get("k"), Some(e.clone()));
        for i in 0..10 {
            d.expect(format!("k{i}"), e.clone());
        }
        assert!(d.inner.lock().unwrap().by_key.len() <= 4);
        assert!(d.get("k9").is_some(), "the newest are kept");
    }
}
