//! Docker / OCI registries, mirrored at `/v2/`: the registry API's names and
//! references ([`reference`](mod@reference)), how a `/v2/` request finds its remote
//! ([`door`]), which manifest types a client accepts ([`media`]) and the
//! registry's error shape ([`errors`]). Token authentication and digest
//! checks need I/O and live in the `services` crate.
//!
//! Paths as patterns and cache keys see them: `{name}/manifests/{tag or
//! digest}`, `{name}/blobs/{digest}`, `{name}/tags/list`; upstream is asked
//! for `v2/{path}`. Patterns gate every request for an image name (tag
//! manifests included). Tags and tag lists are mutable, digests immutable.

pub mod door;
pub mod errors;
pub mod media;
pub mod reference;

use self::reference::Target;
use super::{
    options::{Configured, RegistryHosts},
    Errors, Format, Groupable, Package, PathKind, Routes, ServedAt, Spec,
};
use crate::{path::ArtifactPath, remote::Remote};

/// Docker and OCI registries.
pub(super) struct Docker;

/// The registry format: its error shape answers `/v2/` requests that name
/// no remote.
pub const REGISTRY: Package = Package(&Docker);

static SPEC: Spec = Spec {
    // Tags move; digests never do.
    mutable: &[r"/manifests/(?!sha256:)", r"/tags/list$"],
    names_files: true,
    patterns_gate_every_path: true,
    served_at: ServedAt::Registry,
    grouping: Groupable::No("registry remotes cannot be grouped: a client pulls each image from one mirror"),
    errors: Errors::Own(errors::answer),
    ..Spec::plain("docker")
};

impl Format for Docker {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    /// The image name, and the tag or digest of a manifest.
    /// A manifest is its image's at its tag or digest; blobs and tag lists
    /// are the image's metadata; anything else is unknown.
    fn classify(&self, path: &ArtifactPath) -> PathKind {
        let Ok((components, target)) = reference::split(path.decoded()) else { return PathKind::Unknown };
        let Ok(name) = reference::name(&components) else { return PathKind::Unknown };
        match target {
            Target::Manifest(reference) => PathKind::file(name, reference.to_string()),
            _ => PathKind::metadata_of(name),
        }
    }

    /// `registry_hosts`, read as every registry format reads it.
    fn configured(&self) -> Option<&dyn Configured> {
        Some(&RegistryHosts::KEYS)
    }

    crate::capabilities!(routes);
}

impl Routes for Docker {
    fn upstream_path(&self, path: &ArtifactPath) -> Option<ArtifactPath> {
        ArtifactPath::parse(&format!("v2/{}", path.raw()), path.query()).ok()
    }

    fn answers_itself(&self, _remote: &Remote, _path: &ArtifactPath) -> Option<http::StatusCode> {
        None
    }

    fn fetched_elsewhere<'r>(
        &self,
        _remote: &'r Remote,
        _path: &ArtifactPath,
    ) -> Option<(&'r url::Url, ArtifactPath)> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        format::{
            tests::{classifier, BUILTIN_MUTABLE},
            Coordinates,
        },
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

    #[test]
    fn coordinates_are_the_image_and_its_reference() {
        let at = |p: &str| Format::classify(&Docker, &ArtifactPath::parse(p, None).unwrap()).coordinates();
        assert_eq!(at("library/nginx/manifests/1.27"), Some(Coordinates::new("library/nginx", Some("1.27"))));
        let digest = format!("sha256:{}", "0".repeat(64));
        assert_eq!(at(&format!("a/b/c/manifests/{digest}")), Some(Coordinates::new("a/b/c", Some(&digest))));
        assert_eq!(at(&format!("x/blobs/{digest}")), Some(Coordinates::new("x", None)));
        assert_eq!(at("x/tags/list"), Some(Coordinates::new("x", None)));
        assert_eq!(at("not/an/endpoint"), None);
        assert_eq!(at("Upper/manifests/1"), None);
    }

    #[test]
    fn upstream_is_asked_under_v2() {
        let path = ArtifactPath::parse("library/nginx/tags/list", Some("n=10")).unwrap();
        let upstream = Docker.upstream_path(&path).unwrap();
        assert_eq!((upstream.decoded(), upstream.query()), ("v2/library/nginx/tags/list", Some("n=10")));
    }
}
