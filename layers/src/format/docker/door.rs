//! The registry's front door: how a `/v2/` request names its remote, image
//! and target.
//!
//! - `/v2/{remote}/{name}/...`: the seed's RKE2 `rewrite` form, the first
//!   component naming a `package: docker` remote.
//! - `/v2/{name}/...?ns={registry host}`: containerd's mirror form, for the
//!   docker remote of that host (its `base_url`'s, or one of its
//!   `registry_hosts`). When the name's first component names a docker
//!   remote, that remote wins. `ns` is never part of a cache key.

use std::sync::Arc;

use http::StatusCode;

use super::reference::{self, Target};
use crate::format::{options::RegistryHosts, ServedAt};
use crate::{
    error::BoxError,
    path::ArtifactPath,
    problem::Refused,
    remote::{Remote, RemoteKind, Remotes},
};

/// What a `/v2/` request asks for, attached as a request extension.
#[derive(Debug, Clone)]
pub struct RegistryCall {
    /// The image name upstream knows (`library/nginx`).
    pub name: String,
    /// The manifest, blob or tag list asked for.
    pub target: Target,
}

/// A `/v2/` request, resolved.
#[derive(Debug)]
pub struct Resolved {
    /// The docker remote it is for.
    pub remote: Arc<Remote>,
    /// The artifact path patterns and cache keys see: `{name}/{target}`.
    pub path: ArtifactPath,
    /// The image and target.
    pub call: RegistryCall,
}

/// Resolves `rest`, the path after `/v2/`, with its `query`. Errors: the
/// path's [`Invalid`](reference::Invalid), a [`Refused`] 404 when no docker
/// remote serves it or 405 for an upload, or a path error.
pub fn resolve(rest: &str, query: Option<&str>, remotes: &Remotes) -> Result<Resolved, BoxError> {
    let (components, target) = reference::split(rest)?;
    let (ns, query) = split_query(query);
    let Some((remote, skip)) = remote_for(remotes, &components, ns.as_deref()) else {
        let message = match &ns {
            Some(ns) => {
                format!("no docker remote serves the registry {ns:?} (base_url host or registry_hosts)")
            }
            None => format!("no docker remote is named {:?}", components[0]),
        };
        return Err(Refused::new(StatusCode::NOT_FOUND, message).into());
    };
    let name = reference::name(&components[skip..])?;
    if target == Target::Upload {
        return Err(Refused::method("this registry is a read-only pull-through mirror", "GET, HEAD").into());
    }
    // Only a tag list takes parameters (`n`, `last`); they are part of its key.
    let query = if target == Target::Tags { query } else { None };
    let path = ArtifactPath::parse(&format!("{name}/{}", target.suffix()), query.as_deref())?;
    Ok(Resolved { remote, path, call: RegistryCall { name, target } })
}

/// The docker remote a request is for, and how many name components named
/// it: the first component when it is a docker remote's name, otherwise the
/// remote for containerd's `ns`.
fn remote_for(remotes: &Remotes, components: &[&str], ns: Option<&str>) -> Option<(Arc<Remote>, usize)> {
    let is_docker = |r: &Remote| {
        r.package.format().spec().served_at == ServedAt::Registry
            && matches!(r.kind, RemoteKind::Remote { .. })
    };
    if components.len() >= 2 {
        if let Some(remote) = remotes.get(components[0]).filter(|r| is_docker(r)) {
            return Some((remote.clone(), 1));
        }
    }
    let ns = ns?;
    let found = remotes.iter().find(|r| is_docker(r) && RegistryHosts::answers_for(r, ns)).cloned();
    found.map(|r| (r, 0))
}

/// Splits containerd's `ns` off the query; answers it and the rest.
fn split_query(query: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(query) = query else { return (None, None) };
    let mut ns = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("ns", value)) => {
                ns = Some(percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned())
            }
            _ => rest.push(pair),
        }
    }
    (ns, (!rest.is_empty()).then(|| rest.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{error::find_cause, format::Package};

    fn docker(name: &str, base: &str) -> Remote {
        let mut remote = Remote::proxy(name, base.parse().unwrap());
        remote.package = Package::parse("docker").unwrap();
        remote
    }

    fn remotes() -> Remotes {
        let mut hub = docker("dockerhub", "https://registry-1.docker.io");
        hub.format_options =
            crate::format::options::FormatOptions::new(RegistryHosts(vec!["docker.io".into()]));
        let local = docker("local", "http://127.0.0.1:5000");
        let files = Remote::proxy("files", "https://github.com".parse().unwrap());
        Remotes::new([hub, local, files])
    }

    #[test]
    fn ns_is_split_off_the_query() {
        assert_eq!(split_query(Some("ns=docker.io")), (Some("docker.io".into()), None));
        assert_eq!(
            split_query(Some("n=10&ns=ghcr.io&last=a")),
            (Some("ghcr.io".into()), Some("n=10&last=a".into()))
        );
        assert_eq!(split_query(None), (None, None));
    }

    #[test]
    fn remotes_are_found_by_name_first_then_by_registry_host() {
        let remotes = remotes();
        let found = |c: &[&str], ns| remote_for(&remotes, c, ns).map(|(r, skip)| (r.name.clone(), skip));
        assert_eq!(
            found(&["dockerhub", "library", "nginx"], Some("docker.io")),
            Some(("dockerhub".into(), 1))
        );
        assert_eq!(found(&["library", "nginx"], Some("docker.io")), Some(("dockerhub".into(), 0)));
        assert_eq!(found(&["library", "nginx"], Some("registry-1.docker.io")), Some(("dockerhub".into(), 0)));
        assert_eq!(found(&["x"], Some("127.0.0.1:5000")), Some(("local".into(), 0)));
        assert_eq!(found(&["library", "nginx"], Some("quay.io")), None);
        assert_eq!(found(&["library", "nginx"], None), None);
        // Only docker remotes are routed to.
        assert_eq!(found(&["files", "x"], None), None);
        // A one-component name is an image name, not a remote.
        assert_eq!(found(&["dockerhub"], None), None);
    }

    #[test]
    fn a_request_becomes_remote_path_and_call() {
        let remotes = remotes();
        let r = resolve("library/nginx/tags/list", Some("ns=docker.io&n=10"), &remotes).unwrap();
        assert_eq!((r.remote.name.as_str(), r.path.decoded()), ("dockerhub", "library/nginx/tags/list"));
        assert_eq!(r.path.query(), Some("n=10"));
        assert_eq!((r.call.name.as_str(), &r.call.target), ("library/nginx", &Target::Tags));
        let r =
            resolve("dockerhub/library/nginx/manifests/1.27", Some("ns=docker.io&x=1"), &remotes).unwrap();
        assert_eq!(r.path.decoded(), "library/nginx/manifests/1.27");
        assert_eq!(r.path.query(), None, "only a tag list keeps its query");

        let refused = |rest, query| {
            let e = resolve(rest, query, &remotes).unwrap_err();
            find_cause::<Refused>(&*e).map(Refused::status)
        };
        assert_eq!(refused("library/nginx/manifests/1", Some("ns=quay.io")), Some(StatusCode::NOT_FOUND));
        assert_eq!(refused("dockerhub/x/blobs/uploads/", None), Some(StatusCode::METHOD_NOT_ALLOWED));
        assert!(resolve("dockerhub/Bad/manifests/1", None, &remotes).is_err());
        assert!(resolve("_catalog", None, &remotes).is_err());
    }
}
