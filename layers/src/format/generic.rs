//! Plain files: release pages, archives, anything without structure.

use crate::path::ArtifactPath;

/// Plain files: no built-in patterns, no metadata. A seed configuration
/// mirrors Debian repositories as `generic`, so apt's release consistency
/// ([`super::apt`]) holds here too; it acts on apt's file names only.
pub(super) struct Generic;

impl super::Format for Generic {
    fn spec(&self) -> &'static super::Spec {
        static SPEC: super::Spec = super::Spec::plain("generic");
        &SPEC
    }

    /// Plain files name no package: a policy cannot judge them.
    fn classify(&self, _path: &ArtifactPath) -> super::PathKind {
        super::PathKind::Unknown
    }

    fn freshness(&self) -> Option<&dyn super::Freshness> {
        Some(&super::apt::ReleaseConsistency)
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        format::tests::classifier,
        pattern::{Class, Decision},
    };

    #[test]
    fn without_patterns_everything_is_immutable() {
        let generic = classifier("generic", None, &[]);
        assert_eq!(generic.classify("simple/x"), Decision::Allow(Class::Immutable));
        assert_eq!(generic.classify("a/repodata/repomd.xml"), Decision::Allow(Class::Immutable));
    }
}
