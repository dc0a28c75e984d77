//! RPM repositories (dnf, yum): `repodata/` changes with every publish.

/// RPM repositories.
pub(super) struct Rpm;

impl super::Format for Rpm {
    fn name(&self) -> &'static str {
        "rpm"
    }

    fn builtin_mutable(&self) -> &'static [&'static str] {
        &[
            r"repomd\.xml(\.asc|\.key)?$",
            r"repodata/[^/]+\.(xml|sqlite|yaml|asc|txt)(\.(gz|bz2|xz|zst))?$",
            r"Packages\.gz$",
        ]
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        format::tests::{classifier, BUILTIN_MUTABLE},
        pattern::{Class, Decision},
    };

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
