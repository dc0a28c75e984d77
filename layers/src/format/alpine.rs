//! Alpine `apk` repositories: `APKINDEX.tar.gz` changes with every publish;
//! packages are `{name}-{version}-r{release}.apk`.

use super::{Format, PathKind, Spec};
use crate::path::ArtifactPath;

/// Alpine `apk` repositories.
pub(super) struct Alpine;

impl Format for Alpine {
    fn spec(&self) -> &'static Spec {
        static SPEC: Spec =
            Spec { mutable: &[r"APKINDEX\.tar\.gz$"], names_files: true, ..Spec::plain("alpine") };
        &SPEC
    }

    /// `APKINDEX.tar.gz` is metadata; a package file names its package and
    /// `version-rN`; anything else is unknown.
    fn classify(&self, path: &ArtifactPath) -> PathKind {
        if path.file_name() == "APKINDEX.tar.gz" {
            return PathKind::Metadata(None);
        }
        package_of(path.file_name())
            .map_or(PathKind::Unknown, |(name, version)| PathKind::file(name, version))
    }
}

/// `py3-requests-2.31.0-r0.apk` is `py3-requests` at `2.31.0-r0`. apk
/// versions hold no `-`, names may: the last `-` segment is the release
/// (`r` and digits), the one before it the version (starting with a digit),
/// and the rest the name.
fn package_of(file_name: &str) -> Option<(&str, String)> {
    let stem = file_name.strip_suffix(".apk")?;
    let (rest, release) = stem.rsplit_once('-')?;
    let (name, version) = rest.rsplit_once('-')?;
    let release_number = release.strip_prefix('r')?;
    if name.is_empty()
        || !version.starts_with(|c: char| c.is_ascii_digit())
        || release_number.is_empty()
        || !release_number.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((name, format!("{version}-{release}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tests::{version_of as package, *};

    fn at(path: &str) -> Option<Coordinates> {
        coordinates_at(&Alpine, path)
    }

    #[test]
    fn alpine_indexes_are_mutable_and_packages_immutable() {
        let alpine = classifier("alpine", Some(&[r"\.apk$"]), &[]);
        assert_eq!(alpine.classify("v3.20/main/x86_64/APKINDEX.tar.gz"), BUILTIN_MUTABLE);
        assert_eq!(alpine.classify("v3.20/main/x86_64/curl-8.0-r0.apk"), Decision::Allow(Class::Immutable));
    }

    #[test]
    fn a_package_file_names_its_package_and_version_with_release() {
        assert_eq!(at("v3.20/main/x86_64/curl-8.0-r0.apk"), package("curl", "8.0-r0"));
        assert_eq!(
            at("v3.20/community/x86_64/py3-requests-2.31.0-r0.apk"),
            package("py3-requests", "2.31.0-r0")
        );
        assert_eq!(at("edge/main/aarch64/musl-1.2.5-r12.apk"), package("musl", "1.2.5-r12"));
        // Suffixes and a name segment that starts with a digit.
        assert_eq!(at("x/font-noto-cjk-2-20230817-r0.apk"), package("font-noto-cjk-2", "20230817-r0"));
        assert_eq!(at("x/busybox-1.36.1_git20240101-r3.apk"), package("busybox", "1.36.1_git20240101-r3"));
        assert_eq!(at("a-1-r0.apk"), package("a", "1-r0"));
    }

    #[test]
    fn indexes_and_odd_names_have_no_coordinates() {
        for path in [
            "v3.20/main/x86_64/APKINDEX.tar.gz",
            "v3.20/main/x86_64/",
            "keys/builder@example.internal-6165ee59.rsa.pub",
            "curl-8.0-r0.apk.sig",
            ".apk",
            "-.apk",
            "--.apk",
            "curl.apk",
            "curl-r0.apk",
            "curl-8.0.apk",
            "-8.0-r0.apk",
            "curl-8.0-r.apk",
            "curl-8.0-rx.apk",
            "curl-8.0-r0x.apk",
            "curl-8.0-0.apk",
            "curl-beta-r0.apk",
            "curl-8.0--r0.apk",
            "é-1-r0.ap",
        ] {
            assert_eq!(at(path), None, "{path}");
        }
    }
}
