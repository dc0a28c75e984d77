//! Debian-style repositories: index files stay consistent with the
//! `InRelease`/`Release` that lists their hashes (otherwise apt reports
//! "Hash Sum mismatch").
//!
//! Two rules, for any remote: when a release file is replaced with new bytes,
//! the mutable entries under its directory are expired, so the index files
//! are fetched again along with it; and an expired index file (`Packages*`,
//! `Sources*`, `Contents-*`, `Translation-*`…) is still served while a release
//! file above it is fresh and not newer than it — the two were fetched as a
//! pair and upstream is not asked for one without the other. (Repositories
//! with `Acquire-By-Hash` are consistent anyway: by-hash files are immutable.)

use crate::path::ArtifactPath;

/// Debian-style repositories (`package: apt`): release and index files are
/// mutable, packages and by-hash files immutable. The consistency rules
/// above hold for any remote (a seed configuration mirrors apt as
/// `generic`); this format adds the built-in patterns.
pub(super) struct Apt;

impl super::Format for Apt {
    fn name(&self) -> &'static str {
        "apt"
    }

    fn builtin_mutable(&self) -> &'static [&'static str] {
        &[
            r"(^|/)(In)?Release(\.gpg)?$",
            r"(^|/)(Packages|Sources|Contents-[^/]*|Translation-[^/]*|Components-[^/]*|Commands-[^/]*|icons-[^/]*)(\.(gz|bz2|xz|lzma|zst))?$",
        ]
    }
}

const RELEASE_FILES: [&str; 2] = ["InRelease", "Release"];
const INDEX_PREFIXES: [&str; 7] =
    ["Packages", "Sources", "Contents-", "Translation-", "Components-", "Commands-", "icons-"];

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether `path` (decoded) is a release file.
pub(crate) fn is_release(path: &str) -> bool {
    RELEASE_FILES.contains(&file_name(path))
}

/// The directory of `path`, with its trailing `/` (empty at the root).
pub(crate) fn dir_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "",
    }
}

/// For an index file, the cache keys of the release files that may list it,
/// nearest directory first.
pub(crate) fn release_keys(remote: &str, path: &str) -> Vec<String> {
    let name = file_name(path);
    if !INDEX_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Vec::new();
    }
    let mut keys = Vec::new();
    let mut dir = dir_of(path);
    for _ in 0..6 {
        for release in RELEASE_FILES {
            if let Ok(p) = ArtifactPath::parse(&format!("{dir}{release}"), None) {
                keys.push(p.cache_key(remote));
            }
        }
        if dir.is_empty() {
            break;
        }
        dir = dir_of(&dir[..dir.len() - 1]);
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_release_and_index_files() {
        assert!(is_release("debian/dists/bookworm/InRelease"));
        assert!(is_release("Release"));
        assert!(!is_release("debian/dists/bookworm/Release.gpg"));
        assert_eq!(dir_of("debian/dists/bookworm/InRelease"), "debian/dists/bookworm/");
        assert_eq!(dir_of("Release"), "");
        let keys = release_keys("apt", "debian/dists/bookworm/main/binary-amd64/Packages.xz");
        assert_eq!(
            keys[0],
            ArtifactPath::parse("debian/dists/bookworm/main/binary-amd64/InRelease", None)
                .unwrap()
                .cache_key("apt")
        );
        assert!(keys
            .contains(&ArtifactPath::parse("debian/dists/bookworm/Release", None).unwrap().cache_key("apt")));
        assert!(release_keys("apt", "pool/main/h/hello/hello_1.0_all.deb").is_empty());
        let flat = release_keys("apt", "Packages.gz");
        assert_eq!(flat.len(), 2);
    }

    #[test]
    fn release_and_index_files_are_mutable_packages_and_by_hash_files_immutable() {
        use crate::{
            format::tests::{classifier, BUILTIN_MUTABLE},
            pattern::{Class, Decision},
        };
        let apt = classifier("apt", None, &[]);
        for path in [
            "debian/dists/bookworm/InRelease",
            "debian/dists/bookworm/Release",
            "debian/dists/bookworm/Release.gpg",
            "debian/dists/bookworm/main/binary-amd64/Packages.xz",
            "debian/dists/bookworm/main/i18n/Translation-en.bz2",
            "debian/dists/bookworm/main/Contents-amd64.gz",
            "Packages.gz",
        ] {
            assert_eq!(apt.classify(path), BUILTIN_MUTABLE, "{path}");
        }
        for path in [
            "debian/pool/main/h/hello/hello_2.10-3_amd64.deb",
            "debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/0a1b2c",
            "debian/dists/bookworm/ReleaseNotes",
        ] {
            assert_eq!(apt.classify(path), Decision::Allow(Class::Immutable), "{path}");
        }
    }
}
