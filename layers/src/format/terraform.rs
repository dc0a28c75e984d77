//! A Terraform / OpenTofu provider network mirror (`package: terraform`),
//! translated from the provider registry protocol of the registry at the
//! remote's `base_url`. Clients point `provider_installation {
//! network_mirror { url = ".../api/{remote}/" } }` here.
//!
//! | mirror path | from the registry |
//! |---|---|
//! | `{hostname}/{namespace}/{type}/index.json` (mutable) | `v1/providers/{namespace}/{type}/versions` |
//! | `{hostname}/{namespace}/{type}/{version}.json` (immutable) | the same, and `.../{version}/download/{os}/{arch}` of each platform |
//! | `{hostname}/{namespace}/{type}/{version}/{os}_{arch}/{file}` (immutable) | the download answer's `download_url`, checked against its `shasum` |
//!
//! `{hostname}` must be the host (with its port, if any) of `base_url` or
//! one of `registry_hosts`, else 404. The archive is fetched where the
//! download answer says (usually another host: under the egress rules,
//! without the remote's credentials). Where the registry serves the
//! protocol is what its `/.well-known/terraform.json` says (`providers.v1`);
//! its answers are cached under `v1/providers/...` whatever that is.

use http::StatusCode;
use serde_json::{Map, Value};
use url::Url;

use super::{
    options::{Configured, RegistryHosts},
    Document, Documents, Format, Groupable, Integrity, LinkMap, Negotiated, PathKind, Relocation, Routes,
    Spec,
};
use crate::{digest::Expected, path::ArtifactPath, remote::Remote};

/// Provider network mirrors.
pub(super) struct Terraform;

/// The registry's discovery document.
const DISCOVERY: &str = ".well-known/terraform.json";

/// Where the registry paths are cached (and asked, when the discovery says
/// the protocol is there).
const PROTOCOL: &str = "v1/providers/";

/// `index.json`: the versions.
struct IndexJson;

/// `{version}.json`: the archives of one version.
struct VersionJson;

/// A mirror path's parts.
struct Parts<'a> {
    hostname: &'a str,
    namespace: &'a str,
    kind: &'a str,
    rest: Vec<&'a str>,
}

fn parts(path: &str) -> Option<Parts<'_>> {
    let mut segments = path.split('/');
    let (hostname, namespace, kind) = (segments.next()?, segments.next()?, segments.next()?);
    let rest: Vec<&str> = segments.collect();
    let valid = |s: &str| !s.is_empty() && s != "." && s != "..";
    (valid(hostname) && valid(namespace) && valid(kind) && !rest.is_empty()).then_some(Parts {
        hostname,
        namespace,
        kind,
        rest,
    })
}

/// An archive path's version, os and arch.
fn archive(path: &str) -> Option<(Parts<'_>, &str, &str, &str)> {
    let p = parts(path)?;
    let [version, platform, _file] = p.rest[..] else { return None };
    let (os, arch) = platform.split_once('_')?;
    Some((p, version, os, arch))
}

static SPEC: Spec = Spec {
    mutable: &[r"/index\.json$", r"^v1/providers/[^/]+/[^/]+/versions$", r"^\.well-known/terraform\.json$"],
    names_files: true,
    grouping: Groupable::No("terraform remotes cannot be grouped yet: their indexes are not merged"),
    ..Spec::plain("terraform")
};

impl Format for Terraform {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    /// `{namespace}/{type}`, and the version of a `{version}.json` or an archive.
    /// The registry's discovery and protocol answers (`v1/providers/...`)
    /// and a mirror's `index.json` are metadata (a provider's, when they
    /// name it); a mirror's `{version}.json` and an archive are their
    /// provider's (`namespace/type`) at that version; anything else is
    /// unknown.
    fn classify(&self, path: &ArtifactPath) -> PathKind {
        let decoded = path.decoded();
        if decoded == DISCOVERY {
            return PathKind::Metadata(None);
        }
        if let Some(rest) = decoded.strip_prefix(PROTOCOL) {
            let mut segments = rest.split('/');
            return match (segments.next(), segments.next()) {
                (Some(namespace), Some(kind)) if !namespace.is_empty() && !kind.is_empty() => {
                    PathKind::metadata_of(format!("{namespace}/{kind}"))
                }
                _ => PathKind::Metadata(None),
            };
        }
        let Some(p) = parts(decoded) else { return PathKind::Unknown };
        let name = format!("{}/{}", p.namespace, p.kind);
        match p.rest[..] {
            ["index.json"] => PathKind::metadata_of(name),
            [file] => file.strip_suffix(".json").map_or(PathKind::Unknown, |v| PathKind::file(name, v)),
            [version, _, _] => PathKind::file(name, version),
            _ => PathKind::Unknown,
        }
    }

    /// `registry_hosts`, read as every registry format reads it.
    fn configured(&self) -> Option<&dyn Configured> {
        Some(&RegistryHosts::KEYS)
    }

    crate::capabilities!(documents, integrity, relocation, routes);
}

impl Documents for Terraform {
    fn document(&self, path: &ArtifactPath) -> Option<&'static dyn Document> {
        let p = parts(path.decoded())?;
        match p.rest[..] {
            ["index.json"] => Some(&IndexJson),
            [file] if file.ends_with(".json") => Some(&VersionJson),
            _ => None,
        }
    }

    fn listed_in(&self, _lister: &Remote, _remote: &Remote, _path: &ArtifactPath) -> Option<ArtifactPath> {
        None
    }
}

impl Integrity for Terraform {
    /// An archive is vouched for, and located, by its download answer.
    fn vouched_by(&self, _remote: &Remote, path: &ArtifactPath) -> Vec<ArtifactPath> {
        archive(path.decoded()).and_then(|_| self.located_by(path)).into_iter().collect()
    }

    fn vouches(&self, record: &[u8], _path: &ArtifactPath) -> Result<Expected, String> {
        let answer: Value =
            serde_json::from_slice(record).map_err(|e| format!("not a download answer: {e}"))?;
        let shasum = answer["shasum"].as_str().ok_or("the download answer has no shasum")?;
        Expected::sha256_hex(shasum).ok_or_else(|| format!("the shasum {shasum:?} is not a SHA-256"))
    }
}

impl Relocation for Terraform {
    /// An archive is located by its download answer; the registry's
    /// documents (and the mirror's, made from them) by its discovery.
    fn located_by(&self, path: &ArtifactPath) -> Option<ArtifactPath> {
        let decoded = path.decoded();
        if let Some((p, version, os, arch)) = archive(decoded) {
            let download = format!("{PROTOCOL}{}/{}/{version}/download/{os}/{arch}", p.namespace, p.kind);
            return ArtifactPath::parse(&download, None).ok();
        }
        let registry = decoded.starts_with(PROTOCOL);
        (registry || self.document(path).is_some()).then(|| ArtifactPath::parse(DISCOVERY, None).ok())?
    }

    /// The download answer's `download_url`; or where the discovery's
    /// `providers.v1` puts a registry path.
    fn locate(
        &self,
        document: &[u8],
        path: &ArtifactPath,
        _vouched: Option<&Expected>,
    ) -> Result<String, String> {
        let answer: Value = serde_json::from_slice(document).map_err(|e| format!("not JSON: {e}"))?;
        if archive(path.decoded()).is_some() {
            let url = answer["download_url"].as_str();
            return url.map(str::to_owned).ok_or_else(|| "the download answer has no download_url".into());
        }
        let base = answer["providers.v1"].as_str().ok_or("the registry's discovery has no providers.v1")?;
        let base = format!("{}/", base.trim_end_matches('/'));
        let rest = match path.decoded().strip_prefix(PROTOCOL) {
            Some(rest) => rest.to_owned(),
            None => {
                let p = parts(path.decoded()).ok_or("not a mirror path")?;
                format!("{}/{}/versions", p.namespace, p.kind)
            }
        };
        Ok(format!("{base}{rest}"))
    }
}

impl Routes for Terraform {
    /// Both documents come from the registry's versions list.
    fn upstream_path(&self, path: &ArtifactPath) -> Option<ArtifactPath> {
        self.document(path)?;
        let p = parts(path.decoded())?;
        ArtifactPath::parse(&format!("v1/providers/{}/{}/versions", p.namespace, p.kind), None).ok()
    }

    /// A hostname this remote does not mirror is not here.
    fn answers_itself(&self, remote: &Remote, path: &ArtifactPath) -> Option<StatusCode> {
        if path.decoded().starts_with("v1/providers/") {
            return None;
        }
        let p = parts(path.decoded())?;
        (!RegistryHosts::answers_for(remote, p.hostname)).then_some(StatusCode::NOT_FOUND)
    }

    fn fetched_elsewhere<'r>(
        &self,
        _remote: &'r Remote,
        _path: &ArtifactPath,
    ) -> Option<(&'r url::Url, ArtifactPath)> {
        None
    }
}

const NEGOTIATED: Negotiated = Negotiated { variant: "terraform-mirror", accept: "application/json" };

impl Document for IndexJson {
    fn negotiate(&self, _accept: Option<&str>) -> Negotiated {
        NEGOTIATED
    }

    fn variants(&self) -> &'static [&'static str] {
        &["terraform-mirror"]
    }

    /// `{"versions": {"1.0.0": {}, ...}}`.
    fn rewrite(
        &self,
        body: &[u8],
        _json: bool,
        _page: &Url,
        _links: &dyn LinkMap,
    ) -> Result<Vec<u8>, String> {
        let listed: Value = serde_json::from_slice(body).map_err(|e| format!("not a versions list: {e}"))?;
        let versions: Map<String, Value> = listed["versions"]
            .as_array()
            .ok_or("the versions list has no versions")?
            .iter()
            .filter_map(|v| Some((v["version"].as_str()?.to_owned(), Value::Object(Map::new()))))
            .collect();
        serde_json::to_vec(&serde_json::json!({ "versions": versions })).map_err(|e| e.to_string())
    }
}

/// `{version}.json`'s version, namespace and type, from its URL.
fn version_of(page: &Url) -> Option<(String, String, String)> {
    let mut segments: Vec<&str> = page.path_segments()?.collect();
    let version = segments.pop()?.strip_suffix(".json")?.to_owned();
    let kind = segments.pop()?.to_owned();
    let namespace = segments.pop()?.to_owned();
    Some((version, namespace, kind))
}

impl Document for VersionJson {
    fn negotiate(&self, _accept: Option<&str>) -> Negotiated {
        NEGOTIATED
    }

    fn variants(&self) -> &'static [&'static str] {
        &["terraform-mirror"]
    }

    fn rewrite(&self, body: &[u8], json: bool, page: &Url, links: &dyn LinkMap) -> Result<Vec<u8>, String> {
        self.compose(body, json, page, links, &[])
    }

    /// The download answer of each platform the version lists.
    fn needs(&self, page: &Url, body: &[u8]) -> Vec<ArtifactPath> {
        let (Some((version, namespace, kind)), Ok(listed)) =
            (version_of(page), serde_json::from_slice::<Value>(body))
        else {
            return Vec::new();
        };
        let entry =
            listed["versions"].as_array().into_iter().flatten().find(|v| v["version"] == version.as_str());
        entry
            .and_then(|e| e["platforms"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let (os, arch) = (p["os"].as_str()?, p["arch"].as_str()?);
                ArtifactPath::parse(
                    &format!("v1/providers/{namespace}/{kind}/{version}/download/{os}/{arch}"),
                    None,
                )
                .ok()
            })
            .collect()
    }

    /// `{"archives": {"{os}_{arch}": {"url": "{version}/{os}_{arch}/{file}",
    /// "hashes": ["zh:{shasum}"]}}}`; a version the registry does not list
    /// is an error, and so is a platform whose download answer is missing.
    fn compose(
        &self,
        body: &[u8],
        _json: bool,
        page: &Url,
        _links: &dyn LinkMap,
        needed: &[(ArtifactPath, Option<bytes::Bytes>)],
    ) -> Result<Vec<u8>, String> {
        let (version, _, _) = version_of(page).ok_or("not a version document")?;
        if needed.is_empty() {
            let listed: Value =
                serde_json::from_slice(body).map_err(|e| format!("not a versions list: {e}"))?;
            let known =
                listed["versions"].as_array().into_iter().flatten().any(|v| v["version"] == version.as_str());
            return Err(if known {
                "the version lists no platform".into()
            } else {
                format!("no version {version}")
            });
        }
        let mut archives = Map::new();
        for (path, answer) in needed {
            let answer =
                answer.as_ref().ok_or_else(|| format!("no download answer at {}", path.display()))?;
            let answer: Value =
                serde_json::from_slice(answer).map_err(|e| format!("not a download answer: {e}"))?;
            let (Some(os), Some(arch), Some(file), Some(shasum)) = (
                answer["os"].as_str(),
                answer["arch"].as_str(),
                answer["filename"].as_str(),
                answer["shasum"].as_str(),
            ) else {
                return Err(format!("the download answer at {} is incomplete", path.display()));
            };
            archives.insert(
                format!("{os}_{arch}"),
                serde_json::json!({"url": format!("{version}/{os}_{arch}/{file}"), "hashes": [format!("zh:{shasum}")]}),
            );
        }
        serde_json::to_vec(&serde_json::json!({ "archives": archives })).map_err(|e| e.to_string())
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
    fn mirror_paths_and_their_registry_sources() {
        let class = |p: &str| classifier("terraform", None, &[]).classify(p);
        assert_eq!(class("registry.example/hashicorp/random/index.json"), BUILTIN_MUTABLE);
        assert_ne!(class("registry.example/hashicorp/random/3.5.1.json"), BUILTIN_MUTABLE);
        let index = path("registry.example/hashicorp/random/index.json");
        assert_eq!(Terraform.upstream_path(&index), Some(path("v1/providers/hashicorp/random/versions")));
        let zip = path("registry.example/hashicorp/random/3.5.1/linux_amd64/terraform-provider-random_3.5.1_linux_amd64.zip");
        assert_eq!(
            Terraform.located_by(&zip),
            Some(path("v1/providers/hashicorp/random/3.5.1/download/linux/amd64"))
        );
        assert_eq!(coordinates_at(&Terraform, zip.decoded()), version_of_name("hashicorp/random", "3.5.1"));
        assert_eq!(Terraform.located_by(&index), Some(path(".well-known/terraform.json")));
        let discovery = br#"{"providers.v1": "/registry/providers/v1/"}"#;
        let at = |p: &ArtifactPath| Terraform.locate(discovery, p, None).unwrap();
        assert_eq!(at(&index), "/registry/providers/v1/hashicorp/random/versions");
        let download = path("v1/providers/hashicorp/random/3.5.1/download/linux/amd64");
        assert_eq!(at(&download), "/registry/providers/v1/hashicorp/random/3.5.1/download/linux/amd64");
        let plain = Remote::proxy("t", "https://r.example/".parse().unwrap());
        assert!(Terraform.vouched_by(&plain, &download).is_empty());
        let mut remote = Remote::proxy("tf", "https://registry.example/".parse().unwrap());
        assert_eq!(Terraform.answers_itself(&remote, &index), None);
        assert_eq!(
            Terraform.answers_itself(&remote, &path("other.example/a/b/index.json")),
            Some(StatusCode::NOT_FOUND)
        );
        remote.format_options =
            crate::format::options::FormatOptions::new(RegistryHosts(vec!["registry.terraform.io".into()]));
        assert_eq!(Terraform.answers_itself(&remote, &path("registry.terraform.io/a/b/index.json")), None);
    }

    fn version_of_name(name: &str, version: &str) -> Option<Coordinates> {
        Some(Coordinates::new(name, Some(version)))
    }
}
