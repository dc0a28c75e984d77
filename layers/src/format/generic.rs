//! Plain files: release pages, archives, anything without structure.

/// Plain files: no built-in patterns, no metadata.
pub(super) struct Generic;

impl super::Format for Generic {
    fn name(&self) -> &'static str {
        "generic"
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
