//! Blob keys: unique per fill for a new body, or the content's own address
//! for a body known by its digest.

/// The blob key for a new body of the entry under `key`:
/// `{remote}/{first two hash digits}/{hash of key}/{unique}/{file name}` —
/// readable, and unique per write, so that replacing an entry never rewrites
/// bytes being read. The two-digit level spreads a remote's entries over 256
/// directories (a directory per entry under the remote itself made one
/// directory of ten million names, which a sorted listing must read whole).
/// Keys of the earlier shape, without that level, stay valid: the index holds
/// every blob's full key.
pub fn new_blob_key(remote: &str, key: &str, file_name: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    let name: String = file_name
        .chars()
        .take(100)
        .map(|c| if c.is_ascii_alphanumeric() || "._-+@=".contains(c) { c } else { '_' })
        .collect();
    let name = if name.is_empty() || name.starts_with('.') { format!("blob{name}") } else { name };
    let hash = format!("{:016x}", hasher.finish());
    format!("{remote}/{}/{hash}/{}/{name}", &hash[..2], crate::tee::spool::unique_id())
}

/// The blob key of a body known by its digest (`algorithm` as in an OCI
/// digest, `hex` lower-case): `cas/{algorithm}/{hex}`. Every entry with these
/// bytes, in any remote, shares the one blob; such blobs are never deleted
/// when one entry pointing at them is replaced or flushed.
pub fn content_address(algorithm: &str, hex: &str) -> String {
    format!("{CONTENT_ADDRESSED}{algorithm}/{hex}")
}

const CONTENT_ADDRESSED: &str = "cas/";

/// Whether `blob` is a content-addressed blob that other entries may share.
/// (A remote called `cas` cannot produce such a key: its own keys continue
/// with a 16-digit hash, never with an algorithm name.)
pub fn is_shared_blob(blob: &str) -> bool {
    blob.strip_prefix(CONTENT_ADDRESSED).and_then(|rest| rest.split_once('/')).is_some_and(
        |(algorithm, hex)| {
            matches!(algorithm, "sha256" | "sha512") && hex.bytes().all(|b| b.is_ascii_hexdigit())
        },
    )
}
