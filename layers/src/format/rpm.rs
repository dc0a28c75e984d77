//! RPM repositories (dnf, yum): `repodata/` changes with every publish;
//! packages are `{name}-{version}-{release}.{arch}.rpm`.

use super::{Format, PathKind, Spec};
use crate::path::ArtifactPath;

/// RPM repositories.
pub(super) struct Rpm;

impl Format for Rpm {
    fn spec(&self) -> &'static Spec {
        static SPEC: Spec = Spec {
            mutable: &[
                r"repomd\.xml(\.asc|\.key)?$",
                r"repodata/[^/]+\.(xml|sqlite|yaml|asc|txt)(\.(gz|bz2|xz|zst))?$",
                r"Packages\.gz$",
            ],
            names_files: true,
            ..Spec::plain("rpm")
        };
        &SPEC
    }

    /// Repository metadata (`repomd.xml` and its signature and key,
    /// `repodata/*`, signing keys) is metadata; a package names its package
    /// and `version-release`; anything else is unknown.
    fn classify(&self, path: &ArtifactPath) -> PathKind {
        let decoded = path.decoded();
        let file = path.file_name();
        let metadata = decoded.contains("repodata/")
            || matches!(file, "repomd.xml" | "repomd.xml.asc" | "repomd.xml.key" | "Packages.gz")
            || file.starts_with("RPM-GPG-KEY");
        if metadata && !file.ends_with(".rpm") {
            return PathKind::Metadata(None);
        }
        package_of(file).map_or(PathKind::Unknown, |(name, version)| PathKind::file(name, version))
    }
}

/// `bash-5.1.8-6.el9.x86_64.rpm` is `bash` at `5.1.8-6.el9`: neither the
/// version nor the release holds a `-`, the name may (the epoch is not in
/// file names).
fn package_of(file_name: &str) -> Option<(&str, String)> {
    let (nvr, arch) = file_name.strip_suffix(".rpm")?.rsplit_once('.')?;
    let (name_version, release) = nvr.rsplit_once('-')?;
    let (name, version) = name_version.rsplit_once('-')?;
    if [name, version, release, arch].iter().any(|part| part.is_empty()) {
        return None;
    }
    Some((name, format!("{version}-{release}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tests::{version_of as package, *};

    fn at(path: &str) -> Option<Coordinates> {
        coordinates_at(&Rpm, path)
    }

    #[test]
    fn a_package_names_its_package_and_version_with_release() {
        assert_eq!(
            at("el9/BaseOS/x86_64/os/Packages/bash-5.1.8-6.el9.x86_64.rpm"),
            package("bash", "5.1.8-6.el9")
        );
        assert_eq!(
            at("Packages/p/python3-requests-2.25.1-8.el9.noarch.rpm"),
            package("python3-requests", "2.25.1-8.el9")
        );
        assert_eq!(at("SRPMS/bash-5.1.8-6.el9.src.rpm"), package("bash", "5.1.8-6.el9"));
        assert_eq!(
            at("x/kernel-core-5.14.0-427.13.1.el9_4.x86_64.rpm"),
            package("kernel-core", "5.14.0-427.13.1.el9_4")
        );
        assert_eq!(at("gpg-pubkey-1-2.noarch.rpm"), package("gpg-pubkey", "1-2"));
        assert_eq!(at("a-b-c.d.rpm"), package("a", "b-c"));
    }

    #[test]
    fn repository_metadata_and_odd_names_have_no_coordinates() {
        for path in [
            "el9/repodata/repomd.xml",
            "el9/repodata/repomd.xml.asc",
            "el9/repodata/abc-primary.xml.gz",
            "el9/Packages/",
            "RPM-GPG-KEY-EPEL-9",
            "drpms/bash-5.1.8-5.el9_5.1.8-6.el9.x86_64.drpm",
            "bash-5.1.8-6.el9.x86_64.rpm.sig",
            ".rpm",
            "bash.rpm",
            "bash-5.1.8.x86_64.rpm",
            "bash-5.1.8-6.el9..rpm",
            "bash-5.1.8-.x86_64.rpm",
            "bash--6.el9.x86_64.rpm",
            "-5.1.8-6.el9.x86_64.rpm",
            "--.x.rpm",
        ] {
            assert_eq!(at(path), None, "{path}");
        }
    }

    #[test]
    fn repository_metadata_is_mutable_and_packages_immutable() {
        let rpm = classifier("rpm", Some(&[r"\.rpm$"]), &[]);
        for path in [
            "el9/repodata/repomd.xml",
            "el9/repodata/repomd.xml.asc",
            "el9/repodata/abc-primary.xml.gz",
            "el9/repodata/abc-comps.xml.zst",
            "deb/Packages.gz",
        ] {
            assert_eq!(rpm.classify(path), BUILTIN_MUTABLE, "{path}");
        }
        assert_eq!(rpm.classify("x86_64/a.rpm"), Decision::Allow(Class::Immutable));
        assert!(matches!(rpm.classify("x86_64/a.deb"), Decision::Deny(_)));
    }

    #[test]
    fn a_user_mutable_pattern_is_reported_as_the_user_s_even_when_a_builtin_matches_too() {
        let c = classifier("rpm", None, &[r"repomd\.xml$"]);
        assert_eq!(c.classify("repodata/repomd.xml"), Decision::Allow(Class::Mutable { builtin: false }));
    }
}
