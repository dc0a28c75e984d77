//! RubyGems (`package: rubygems`): the compact index that Bundler and gem
//! read (`versions`, `names`, `info/{name}`) and the legacy `specs.4.8.gz`
//! files change; gems (`gems/{name}-{version}[-{platform}].gem`) and their
//! specs (`quick/Marshal.4.8/...gemspec.rz`) do not.
//!
//! Bundler checks a compact index file's `ETag` as the quoted MD5 of the
//! whole file (on a 206 it must match the file it appended to), so the cache
//! gives these files that `ETag` ([`Freshness::etag_is_md5_of_body`](crate::format::Freshness::etag_is_md5_of_body)); a new
//! `versions` expires the cached `info/` files (each line of `versions`
//! names its info file's MD5, and a new one may change any of them).
//!
//! A `.gem` is checked before it is stored against the `checksum:` of its
//! line in `info/{name}`, read through the cache. A gem's name may contain
//! `-`: the name is the prefix whose `info` file exists, longest first.

use super::{Format, Freshness, Groupable, Grouping, Integrity, Part, PathKind, Spec};
use crate::{digest::Expected, path::ArtifactPath, remote::Remote};

/// RubyGems servers.
pub(super) struct RubyGems;

static SPEC: Spec = Spec {
    mutable: &[r"^versions$", r"^names$", r"^info/[^/]+$", r"^(latest_|prerelease_)?specs\.4\.8(\.gz)?$"],
    names_files: true,
    grouping: Groupable::No("rubygems remotes cannot be grouped yet: their indexes are not merged"),
    ..Spec::plain("rubygems")
};

impl Format for RubyGems {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    /// The compact index (`versions`, `names`, `info/{name}`, its gem's)
    /// and the specs files are metadata; a `.gem` or `.gemspec.rz` is its
    /// gem's at its version, when its file name reads one way only (a name
    /// may hold `-` and digits, and a version may be followed by a platform:
    /// `a-1-2.gem` could be `a` 1 on platform `2` or `a-1` 2, so it is
    /// unknown); anything else is unknown.
    fn classify(&self, path: &ArtifactPath) -> PathKind {
        let decoded = path.decoded();
        if let Some(name) = decoded.strip_prefix("info/") {
            return if !name.is_empty() && !name.contains('/') {
                PathKind::metadata_of(name)
            } else {
                PathKind::Unknown
            };
        }
        let index = matches!(decoded, "versions" | "names")
            || ["specs.4.8", "latest_specs.4.8", "prerelease_specs.4.8"]
                .iter()
                .any(|s| decoded == *s || decoded.strip_suffix(".gz") == Some(s))
            || decoded.starts_with("api/v1/dependencies");
        if index {
            return PathKind::Metadata(None);
        }
        match gem_file(decoded).map(splits).as_deref() {
            Some([(name, version)]) => {
                PathKind::file(*name, version.split_once('-').map_or(*version, |(v, _)| v))
            }
            _ => PathKind::Unknown,
        }
    }

    crate::capabilities!(integrity, freshness, grouping);
}

impl Integrity for RubyGems {
    /// A gem is vouched for by its name's `info` file: each possible name,
    /// longest first.
    fn vouched_by(&self, _remote: &Remote, path: &ArtifactPath) -> Vec<ArtifactPath> {
        let decoded = path.decoded();
        let Some(file) = decoded.strip_prefix("gems/").and_then(|f| f.strip_suffix(".gem")) else {
            return Vec::new();
        };
        splits(file)
            .iter()
            .filter_map(|(name, _)| ArtifactPath::parse(&format!("info/{name}"), None).ok())
            .collect()
    }

    /// The `checksum:` of the info line of the gem's version (and platform).
    fn vouches(&self, record: &[u8], path: &ArtifactPath) -> Result<Expected, String> {
        let file =
            path.decoded().strip_prefix("gems/").and_then(|f| f.strip_suffix(".gem")).ok_or("not a gem")?;
        let text = std::str::from_utf8(record).map_err(|_| "the info file is not text")?;
        for (name, version) in splits(file) {
            for line in text.lines() {
                let (listed, rest) = line.split_once(' ').unwrap_or((line, ""));
                if listed != version {
                    continue;
                }
                let requirements = rest.split_once('|').map_or("", |(_, r)| r);
                let checksum = requirements.split(',').find_map(|r| r.trim().strip_prefix("checksum:"));
                return checksum
                    .and_then(Expected::sha256_hex)
                    .ok_or_else(|| format!("the info line of {name} {version} has no SHA-256 checksum"));
            }
        }
        Err(format!("the info file lists no version of {file}"))
    }
}

impl Freshness for RubyGems {
    /// A new `versions` may list new MD5s for any `info/` file.
    fn new_version_expires_under<'p>(&self, path: &'p ArtifactPath) -> Option<&'p str> {
        (path.decoded() == "versions").then_some("info/")
    }

    fn etag_is_md5_of_body(&self, path: &ArtifactPath) -> bool {
        let decoded = path.decoded();
        decoded == "versions" || decoded == "names" || decoded.starts_with("info/")
    }

    fn served_as_long_as(&self, _remote: &str, _path: &ArtifactPath) -> Vec<String> {
        Vec::new()
    }
}

impl Grouping for RubyGems {
    fn owner_document(&self, path: &ArtifactPath) -> Option<ArtifactPath> {
        let name = Format::classify(self, path).coordinates()?.name;
        ArtifactPath::parse(&format!("info/{name}"), None).ok()
    }

    /// Its documents are not merged: the first member that has one answers.
    fn merges(&self, _path: &ArtifactPath) -> bool {
        false
    }

    fn merge(&self, _path: &ArtifactPath, _parts: &[Part<'_>]) -> Result<Vec<u8>, String> {
        Err("this format merges no documents".into())
    }
}

/// The `{name}-{version}[-{platform}]` part of a gem or gemspec path.
fn gem_file(path: &str) -> Option<&str> {
    path.strip_prefix("gems/")
        .and_then(|f| f.strip_suffix(".gem"))
        .or_else(|| path.strip_prefix("quick/Marshal.4.8/").and_then(|f| f.strip_suffix(".gemspec.rz")))
        .filter(|f| !f.contains('/'))
}

/// Each way to read `file` as `{name}-{rest}` with `rest` starting with a
/// digit (a version), longest name first.
fn splits(file: &str) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = file
        .match_indices('-')
        .map(|(at, _)| (&file[..at], &file[at + 1..]))
        .filter(|(name, rest)| !name.is_empty() && rest.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tests::*;

    fn path(p: &str) -> ArtifactPath {
        ArtifactPath::parse(p, None).unwrap()
    }

    #[test]
    fn the_index_moves_gems_do_not() {
        let class = |p: &str| classifier("rubygems", None, &[]).classify(p);
        for p in [
            "versions",
            "names",
            "info/rails",
            "specs.4.8.gz",
            "latest_specs.4.8.gz",
            "prerelease_specs.4.8.gz",
        ] {
            assert_eq!(class(p), BUILTIN_MUTABLE, "{p}");
        }
        for p in ["gems/rails-7.1.0.gem", "quick/Marshal.4.8/rails-7.1.0.gemspec.rz"] {
            assert_ne!(class(p), BUILTIN_MUTABLE, "{p}");
        }
    }

    #[test]
    fn names_with_dashes_versions_and_platforms() {
        let at = |p: &str| coordinates_at(&RubyGems, p);
        assert_eq!(at("gems/rails-html-sanitizer-1.6.0.gem"), version_of("rails-html-sanitizer", "1.6.0"));
        assert_eq!(at("gems/nokogiri-1.15.4-x86_64-linux.gem"), version_of("nokogiri", "1.15.4"));
        assert_eq!(at("quick/Marshal.4.8/rake-13.0.6.gemspec.rz"), version_of("rake", "13.0.6"));
        assert_eq!(at("info/rake"), Some(Coordinates::new("rake", None)));
        assert_eq!(at("versions"), None);
        let remote = Remote::proxy("gems", "http://gems.example/".parse().unwrap());
        assert_eq!(
            RubyGems.vouched_by(&remote, &path("gems/net-http-2-0.1.0.gem")),
            vec![path("info/net-http-2"), path("info/net-http")],
        );
    }

    #[test]
    fn a_gem_is_vouched_for_by_its_info_line() {
        let (a, b) = ("ab".repeat(32), "cd".repeat(32));
        let info = format!(
            "---\n1.0.0 |checksum:{a}\n1.1.0 dep:>= 1.0|checksum:{b},ruby:>= 2.7\n1.1.0-java |checksum:{a}\n"
        );
        let gem = path("gems/my-gem-1.1.0.gem");
        assert_eq!(RubyGems.vouches(info.as_bytes(), &gem).unwrap().hex(), b);
        assert_eq!(RubyGems.vouches(info.as_bytes(), &path("gems/my-gem-1.1.0-java.gem")).unwrap().hex(), a);
        assert!(RubyGems.vouches(info.as_bytes(), &path("gems/my-gem-2.0.0.gem")).is_err());
        assert!(RubyGems.etag_is_md5_of_body(&path("info/my-gem")) && !RubyGems.etag_is_md5_of_body(&gem));
    }
}
