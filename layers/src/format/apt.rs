//! Debian-style repositories: index files stay consistent with the
//! `InRelease`/`Release` that lists their hashes (otherwise apt reports
//! "Hash Sum mismatch").
//!
//! Two rules, for `apt` and `generic` remotes (a seed configuration mirrors
//! apt as `generic`), through [`Freshness::new_version_expires_under`](crate::format::Freshness::new_version_expires_under) and
//! [`Freshness::served_as_long_as`](crate::format::Freshness::served_as_long_as): when a release file is replaced with new bytes,
//! the mutable entries under its directory are expired, so the index files
//! are fetched again along with it; and an expired index file (`Packages*`,
//! `Sources*`, `Contents-*`, `Translation-*`…) is still served while a release
//! file above it is fresh and not newer than it — the two were fetched as a
//! pair and upstream is not asked for one without the other. (Repositories
//! with `Acquire-By-Hash` are consistent anyway: by-hash files are immutable.)

use super::{Coordinates, Format, Freshness, PathKind, Spec};
use crate::path::ArtifactPath;

/// Debian-style repositories (`package: apt`): release and index files are
/// mutable, packages and by-hash files immutable, and the consistency rules
/// above hold.
pub(super) struct Apt;

impl Format for Apt {
    fn spec(&self) -> &'static Spec {
        static SPEC: Spec = Spec {
            mutable: &[
                r"(^|/)(In)?Release(\.gpg)?$",
                r"(^|/)(Packages|Sources|Contents-[^/]*|Translation-[^/]*|Components-[^/]*|Commands-[^/]*|icons-[^/]*)(\.(gz|bz2|xz|lzma|zst))?$",
            ],
            names_files: true,
            ..Spec::plain("apt")
        };
        &SPEC
    }

    /// Release and index files, their signatures and `by-hash/` files are
    /// metadata; a package file (binary or source) names its package and
    /// version; anything else is unknown.
    fn classify(&self, path: &ArtifactPath) -> PathKind {
        if is_index(path) {
            return PathKind::Metadata(None);
        }
        package_of(path.file_name()).and_then(Coordinates::into_file).unwrap_or(PathKind::Unknown)
    }

    fn freshness(&self) -> Option<&dyn Freshness> {
        Some(&ReleaseConsistency)
    }
}

/// apt's release consistency, here and on `generic` remotes (seed
/// configurations mirror Debian repositories as `generic`).
pub(super) struct ReleaseConsistency;

impl Freshness for ReleaseConsistency {
    fn new_version_expires_under<'p>(&self, path: &'p ArtifactPath) -> Option<&'p str> {
        replacement_expires_under(path)
    }

    fn served_as_long_as(&self, remote: &str, path: &ArtifactPath) -> Vec<String> {
        paired_with(remote, path)
    }

    fn etag_is_md5_of_body(&self, _path: &ArtifactPath) -> bool {
        false
    }
}

/// Whether `path` is a release or index file (or its signature), or a
/// `by-hash/` file: what apt reads to learn and check packages.
fn is_index(path: &ArtifactPath) -> bool {
    let decoded = path.decoded();
    if decoded.split('/').any(|segment| segment == "by-hash") {
        return true;
    }
    let file = path.file_name();
    if matches!(file, "InRelease" | "Release" | "Release.gpg") {
        return true;
    }
    let stem = INDEX_COMPRESSIONS.iter().find_map(|c| file.strip_suffix(c)).unwrap_or(file);
    matches!(stem, "Packages" | "Sources")
        || ["Contents-", "Translation-", "Components-", "Commands-", "icons-"]
            .iter()
            .any(|prefix| stem.starts_with(prefix))
}

/// How index files may be compressed.
const INDEX_COMPRESSIONS: [&str; 5] = [".gz", ".bz2", ".xz", ".lzma", ".zst"];

/// Compressions of source tarballs.
const TAR_COMPRESSIONS: [&str; 5] = ["gz", "bz2", "xz", "lzma", "zst"];

/// The package and version of a pool file. Neither names nor versions hold
/// `_`, so it separates them: `hello_2.10-3_amd64.deb` (also `.udeb`,
/// `.ddeb`), `hello_2.10-3.dsc`, `hello_2.10-3.debian.tar.xz`,
/// `hello_2.10-3.diff.gz`, and `hello_2.10.orig.tar.gz`, whose version is
/// the upstream one. An epoch appears in a file name only percent-encoded
/// (`1%3a2.0-1`), which the decoded path has already turned into `1:2.0-1`.
fn package_of(file_name: &str) -> Option<Coordinates> {
    let (name, rest) = file_name.split_once('_')?;
    let version = if let Some(stem) = [".deb", ".udeb", ".ddeb"].iter().find_map(|ext| rest.strip_suffix(ext))
    {
        let (version, arch) = stem.split_once('_')?;
        (!arch.is_empty() && !arch.contains('_')).then_some(version)?
    } else if let Some(version) = rest.strip_suffix(".dsc").or_else(|| rest.strip_suffix(".diff.gz")) {
        version
    } else {
        let (version, compression) =
            rest.split_once(".orig.tar.").or_else(|| rest.split_once(".debian.tar."))?;
        TAR_COMPRESSIONS.contains(&compression).then_some(version)?
    };
    if name.is_empty() || version.is_empty() || version.contains('_') {
        return None;
    }
    Some(Coordinates::new(name, Some(version)))
}

const RELEASE_FILES: [&str; 2] = ["InRelease", "Release"];
const INDEX_PREFIXES: [&str; 7] =
    ["Packages", "Sources", "Contents-", "Translation-", "Components-", "Commands-", "icons-"];

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether `path` (decoded) is a release file.
fn is_release(path: &str) -> bool {
    RELEASE_FILES.contains(&file_name(path))
}

/// A new release file makes the mutable entries under its directory out of
/// date (the first rule above).
pub(super) fn replacement_expires_under(path: &ArtifactPath) -> Option<&str> {
    is_release(path.decoded()).then(|| dir_of(path.decoded()))
}

/// An index file pairs with the release files above it (the second rule).
pub(super) fn paired_with(remote: &str, path: &ArtifactPath) -> Vec<String> {
    release_keys(remote, path.decoded())
}

/// The directory of `path`, with its trailing `/` (empty at the root).
fn dir_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "",
    }
}

/// For an index file, the cache keys of the release files that may list it,
/// nearest directory first.
fn release_keys(remote: &str, path: &str) -> Vec<String> {
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

    fn at(path: &str) -> Option<Coordinates> {
        crate::format::tests::coordinates_at(&Apt, path)
    }

    use crate::format::tests::version_of as package;

    #[test]
    fn a_pool_file_names_its_package_and_version() {
        assert_eq!(at("debian/pool/main/h/hello/hello_2.10-3_amd64.deb"), package("hello", "2.10-3"));
        assert_eq!(
            at("pool/main/libf/libfoo/libfoo1_1.2.3-1+deb12u1_arm64.deb"),
            package("libfoo1", "1.2.3-1+deb12u1")
        );
        assert_eq!(at("pool/main/d/di/di-utils_1.0_all.udeb"), package("di-utils", "1.0"));
        assert_eq!(at("pool/main/h/hello/hello-dbgsym_2.10-3_amd64.ddeb"), package("hello-dbgsym", "2.10-3"));
        assert_eq!(at("pool/main/h/hello/hello_2.10-3.dsc"), package("hello", "2.10-3"));
        assert_eq!(at("pool/main/h/hello/hello_2.10-3.debian.tar.xz"), package("hello", "2.10-3"));
        assert_eq!(at("pool/main/h/hello/hello_2.10-3.diff.gz"), package("hello", "2.10-3"));
        assert_eq!(at("pool/main/h/hello/hello_2.10.orig.tar.gz"), package("hello", "2.10"));
        assert_eq!(at("pool/main/g/gcc/gcc-13_13.2.0.orig.tar.xz"), package("gcc-13", "13.2.0"));
        // An epoch, percent-encoded in either case; a tilde; a flat repository.
        assert_eq!(at("pool/main/v/vim/vim_2%3a9.0.1378-2_amd64.deb"), package("vim", "2:9.0.1378-2"));
        assert_eq!(at("pool/main/v/vim/vim_2%3A9.0.1378-2_amd64.deb"), package("vim", "2:9.0.1378-2"));
        assert_eq!(at("repo/g++_4:12.2.0-3~bpo1_amd64.deb"), package("g++", "4:12.2.0-3~bpo1"));
    }

    #[test]
    fn release_index_and_odd_files_have_no_coordinates() {
        for path in [
            "debian/dists/bookworm/InRelease",
            "debian/dists/bookworm/Release.gpg",
            "debian/dists/bookworm/main/binary-amd64/Packages.xz",
            "debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/0a1b2c",
            "debian/dists/bookworm/main/i18n/Translation-en.bz2",
            "debian/dists/bookworm/main/Contents-amd64.gz",
            "debian/pool/main/h/hello/",
            "hello.deb",
            "hello_2.10-3.deb",
            "hello_2.10-3_.deb",
            "_2.10-3_amd64.deb",
            "hello__amd64.deb",
            "hello_2.10_3_amd64.deb",
            "hello_.dsc",
            "hello_2.10.orig.tar",
            "hello_2.10.orig.tar.",
            "hello_2.10.orig.tar.gz.asc",
            "hello_.orig.tar.gz",
            "hello_2.10.tar.gz",
            "hello_2.10-3_amd64.changes",
            "hello_2.10-3_amd64.buildinfo",
            "_",
            "_.dsc",
        ] {
            assert_eq!(at(path), None, "{path}");
        }
    }

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
