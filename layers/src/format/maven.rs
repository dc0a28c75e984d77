//! Maven repositories (`package: maven`).
//!
//! `maven-metadata.xml` at every level changes with each release, and so do
//! its checksum files (`.md5`, `.sha1`, `.sha256`, `.sha512`), which are
//! kept in step with it: a new revision of the metadata expires the other
//! mutable entries of its directory and below, and an expired checksum of
//! the metadata is served as it is while the metadata it was fetched with
//! is fresh and not newer (so a client never checks one revision against
//! another's checksum). Non-unique snapshot files (`x-1.0-SNAPSHOT.jar`)
//! move too; everything else (releases, timestamped snapshots, their
//! checksums) never changes.
//!
//! An artifact is checked before it is stored against the `.sha1` upstream
//! publishes beside it (or its `.sha256`, when there is no `.sha1`), read
//! through the cache, so the client's own check of it is then a hit. Where
//! upstream has neither, the artifact is stored as it is.

use super::{Format, Freshness, Grouping, Integrity, Part, PathKind, Spec};
use crate::{digest::Expected, path::ArtifactPath, remote::Remote};

/// Maven repositories.
pub(super) struct Maven;

/// The checksum files a repository may have beside a file.
const CHECKSUMS: [&str; 4] = [".md5", ".sha1", ".sha256", ".sha512"];

/// The file name of the repository metadata.
const METADATA: &str = "maven-metadata.xml";

static SPEC: Spec = Spec {
    mutable: &[r"(^|/)maven-metadata\.xml(\.(md5|sha1|sha256|sha512))?$", r"/[^/]*-SNAPSHOT[^/]*$"],
    names_files: true,
    osv_ecosystem: Some("Maven"),
    ..Spec::plain("maven")
};

impl Format for Maven {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    /// `maven-metadata.xml` (and its checksums) is metadata, an
    /// artifact's (`groupId:artifactId`) when it lists the artifact's
    /// versions; a file in a version's directory named after its artifact
    /// is that artifact's at that version, and its checksums and signature
    /// are the artifact's metadata; anything else is unknown.
    fn classify(&self, path: &ArtifactPath) -> PathKind {
        let segments: Vec<&str> = path.decoded().split('/').collect();
        let Some((file, dirs)) = segments.split_last() else { return PathKind::Unknown };
        if *file == METADATA || CHECKSUMS.iter().any(|c| file.strip_suffix(c) == Some(METADATA)) {
            // Metadata of an artifact (its versions), not of a group (its
            // plugins) nor of one snapshot version.
            let artifact = match dirs.split_last() {
                Some((artifact, group)) if !group.is_empty() && !artifact.ends_with("-SNAPSHOT") => {
                    Some(format!("{}:{artifact}", group.join(".")))
                }
                _ => None,
            };
            return PathKind::Metadata(artifact);
        }
        let [group @ .., artifact, version] = dirs else { return PathKind::Unknown };
        if group.is_empty() || !file.starts_with(&format!("{artifact}-")) {
            return PathKind::Unknown;
        }
        let name = format!("{}:{artifact}", group.join("."));
        if CHECKSUMS.iter().chain(&[".asc"]).any(|c| file.ends_with(c)) {
            return PathKind::Metadata(Some(name));
        }
        PathKind::file(name, *version)
    }

    crate::capabilities!(integrity, freshness, grouping);
}

impl Integrity for Maven {
    /// An artifact (not metadata, a checksum, a signature or a moving
    /// snapshot) is vouched for by its `.sha1`, else its `.sha256`.
    fn vouched_by(&self, _remote: &Remote, path: &ArtifactPath) -> Vec<ArtifactPath> {
        let decoded = path.decoded();
        let file = path.file_name();
        let not_an_artifact = file == METADATA
            || file.contains("-SNAPSHOT")
            || CHECKSUMS.iter().chain(&[".asc"]).any(|c| file.ends_with(c))
            || !matches!(self.classify(path), PathKind::File { .. });
        if not_an_artifact {
            return Vec::new();
        }
        [".sha1", ".sha256"]
            .iter()
            .filter_map(|ext| ArtifactPath::parse(&format!("{decoded}{ext}"), None).ok())
            .collect()
    }

    /// The checksum file's first word: 40 hex digits (SHA-1) or 64 (SHA-256).
    fn vouches(&self, record: &[u8], _path: &ArtifactPath) -> Result<Expected, String> {
        let text = std::str::from_utf8(record).map_err(|_| "the checksum file is not text")?;
        let word = text.split_whitespace().next().unwrap_or_default();
        let expected = match word.len() {
            40 => Expected::sha1_hex(word),
            64 => Expected::sha256_hex(word),
            _ => None,
        };
        expected.ok_or_else(|| format!("the checksum file does not start with a SHA-1 or SHA-256: {word:?}"))
    }
}

impl Freshness for Maven {
    /// A new `maven-metadata.xml` makes the mutable entries of its
    /// directory (its checksums, and moving snapshots below) out of date.
    fn new_version_expires_under<'p>(&self, path: &'p ArtifactPath) -> Option<&'p str> {
        let decoded = path.decoded();
        let dir = decoded.strip_suffix(METADATA)?;
        (dir.is_empty() || dir.ends_with('/')).then_some(dir)
    }

    /// A checksum of the metadata pairs with the metadata.
    fn served_as_long_as(&self, remote: &str, path: &ArtifactPath) -> Vec<String> {
        let decoded = path.decoded();
        CHECKSUMS
            .iter()
            .filter_map(|c| decoded.strip_suffix(c))
            .filter(|document| document.ends_with(METADATA))
            .filter_map(|document| ArtifactPath::parse(document, None).ok())
            .map(|document| document.cache_key(remote))
            .collect()
    }

    fn etag_is_md5_of_body(&self, _path: &ArtifactPath) -> bool {
        false
    }
}

impl Grouping for Maven {
    /// An artifact's `maven-metadata.xml`, for any file of one of its
    /// versions or the metadata itself.
    fn owner_document(&self, path: &ArtifactPath) -> Option<ArtifactPath> {
        let name = Format::classify(self, path).coordinates()?.name;
        let (group, artifact) = name.rsplit_once(':')?;
        ArtifactPath::parse(&format!("{}/{artifact}/{METADATA}", group.replace('.', "/")), None).ok()
    }

    /// Its documents are not merged: the first member that has one answers.
    fn merges(&self, _path: &ArtifactPath) -> bool {
        false
    }

    fn merge(&self, _path: &ArtifactPath, _parts: &[Part<'_>]) -> Result<Vec<u8>, String> {
        Err("this format merges no documents".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tests::*;

    fn path(p: &str) -> ArtifactPath {
        ArtifactPath::parse(p, None).unwrap()
    }

    #[test]
    fn metadata_and_moving_snapshots_are_mutable_releases_are_not() {
        let class = |p: &str| classifier("maven", None, &[]).classify(p);
        for p in [
            "org/example/lib/maven-metadata.xml",
            "org/example/lib/maven-metadata.xml.sha1",
            "org/example/lib/maven-metadata.xml.sha512",
            "org/apache/maven/plugins/maven-metadata.xml",
            "org/example/lib/1.0-SNAPSHOT/maven-metadata.xml",
            "org/example/lib/1.0-SNAPSHOT/lib-1.0-SNAPSHOT.jar",
            "org/example/lib/1.0-SNAPSHOT/lib-1.0-SNAPSHOT-sources.jar.sha1",
        ] {
            assert_eq!(class(p), BUILTIN_MUTABLE, "{p}");
        }
        for p in [
            "org/example/lib/1.0/lib-1.0.jar",
            "org/example/lib/1.0/lib-1.0.pom.sha1",
            "org/example/lib/1.0-SNAPSHOT/lib-1.0-20240102.030405-1.jar",
        ] {
            assert_ne!(class(p), BUILTIN_MUTABLE, "{p}");
        }
    }

    #[test]
    fn coordinates_are_group_artifact_and_version() {
        let at = |p: &str| coordinates_at(&Maven, p);
        assert_eq!(at("org/example/lib/1.0/lib-1.0.jar"), version_of("org.example:lib", "1.0"));
        // A checksum is the artifact's metadata, not a file of the version.
        assert_eq!(
            at("org/example/lib/1.0/lib-1.0-sources.jar.sha1"),
            Some(Coordinates::new("org.example:lib", None))
        );
        assert_eq!(at("org/example/lib/maven-metadata.xml"), Some(Coordinates::new("org.example:lib", None)));
        for p in [
            "lib-1.0.jar",
            "org/example/lib/1.0/other-1.0.jar",
            "org/example/lib/1.0-SNAPSHOT/maven-metadata.xml",
        ] {
            assert_eq!(at(p), None, "{p}");
        }
    }

    #[test]
    fn an_artifact_is_vouched_for_by_its_checksum_files() {
        let remote = Remote::proxy("maven", "http://repo.example/".parse().unwrap());
        let jar = path("org/example/lib/1.0/lib-1.0.jar");
        assert_eq!(
            Maven.vouched_by(&remote, &jar),
            vec![
                path("org/example/lib/1.0/lib-1.0.jar.sha1"),
                path("org/example/lib/1.0/lib-1.0.jar.sha256")
            ]
        );
        for p in [
            "org/example/lib/1.0/lib-1.0.jar.sha1",
            "org/example/lib/1.0/lib-1.0.jar.asc",
            "org/example/lib/maven-metadata.xml",
            "org/example/lib/1.0-SNAPSHOT/lib-1.0-SNAPSHOT.jar",
        ] {
            assert!(Maven.vouched_by(&remote, &path(p)).is_empty(), "{p}");
        }
        let sha1 = "a".repeat(40);
        assert_eq!(Maven.vouches(format!("{sha1}  lib-1.0.jar\n").as_bytes(), &jar).unwrap().hex(), sha1);
        assert_eq!(Maven.vouches("b".repeat(64).as_bytes(), &jar).unwrap().hex(), "b".repeat(64));
        assert!(Maven.vouches(b"<html>not found</html>", &jar).is_err());
    }

    #[test]
    fn metadata_checksums_follow_the_metadata() {
        let meta = path("org/example/lib/maven-metadata.xml");
        assert_eq!(Maven.new_version_expires_under(&meta), Some("org/example/lib/"));
        assert_eq!(Maven.new_version_expires_under(&path("org/example/lib/1.0/lib-1.0.jar")), None);
        let sha1 = path("org/example/lib/maven-metadata.xml.sha1");
        assert_eq!(Maven.served_as_long_as("m", &sha1), vec![meta.cache_key("m")]);
        assert!(Maven.served_as_long_as("m", &path("org/example/lib/1.0/lib-1.0.jar.sha1")).is_empty());
    }
}
