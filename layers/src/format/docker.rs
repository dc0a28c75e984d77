//! Docker / OCI registries, mirrored at `/v2/` (the registry's own router,
//! in the `services` crate, parses names and references and authenticates).
//! Paths as patterns see them: `{name}/manifests/{tag or digest}`,
//! `{name}/blobs/{digest}`, `{name}/tags/list`.

/// Docker and OCI registries.
pub(super) struct Docker;

impl super::Format for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn builtin_mutable(&self) -> &'static [&'static str] {
        // Tags move; digests never do.
        &[r"/manifests/(?!sha256:)", r"/tags/list$"]
    }

    fn patterns_gate_every_path(&self) -> bool {
        true
    }

    fn is_registry(&self) -> bool {
        true
    }

    fn own_keys(&self) -> &'static [&'static str] {
        &["registry_hosts"]
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        format::tests::{classifier, BUILTIN_MUTABLE},
        pattern::{Class, Decision},
    };

    #[test]
    fn tags_are_mutable_and_digests_immutable() {
        let c = classifier("docker", None, &[]);
        assert_eq!(c.classify("library/nginx/manifests/latest"), BUILTIN_MUTABLE);
        assert_eq!(c.classify("library/nginx/manifests/sha256:abc"), Decision::Allow(Class::Immutable));
        assert_eq!(c.classify("library/nginx/tags/list"), BUILTIN_MUTABLE);
    }

    #[test]
    fn patterns_gate_every_request_for_an_image_name() {
        let c = classifier("docker", Some(&["^library/nginx/", "^rancher/"]), &[]);
        assert_eq!(c.classify("library/nginx/manifests/latest"), BUILTIN_MUTABLE);
        assert_eq!(c.classify("rancher/rke2-runtime/tags/list"), BUILTIN_MUTABLE);
        assert_eq!(c.classify("library/nginx/blobs/sha256:ab"), Decision::Allow(Class::Immutable));
        for denied in ["library/redis/manifests/latest", "library/redis/tags/list", "evil/x/blobs/sha256:ab"]
        {
            assert!(matches!(c.classify(denied), Decision::Deny(_)), "{denied}");
        }
    }
}
