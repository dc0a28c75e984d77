//! npm packuments: full and abbreviated (`application/vnd.npm.install-v1+json`).
//!
//! A little over 400 lines with its tests (from line 255); the version merge
//! and filter are in `versions.rs`.

use serde_json::Value;
use url::Url;

mod versions;

use versions::{filter_packument, merge_packuments};

use super::{
    options::{files_rewrite, Configured, FormatOptions, KeyReader, Own},
    rewrite_link, Document, Documents, Format, Grouping, Integrity, LinkMap, Listed, Negotiated, Part,
    PathKind, Spec, Versions,
};
use crate::{digest::Expected, path::ArtifactPath, remote::Remote};

/// npm registries (`package: npm`): every path but a tarball is a packument.
pub(super) struct Npm;

/// A packument, full or abbreviated.
struct Packument;

static SPEC: Spec = Spec { names_files: true, osv_ecosystem: Some("npm"), ..Spec::plain("npm") };

impl Format for Npm {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    /// A packument is its package's metadata (`express`, `@scope/name`,
    /// however the `/` was encoded), and so are the registry's own
    /// endpoints (`-/...`); a tarball, by any route (`{name}/-/{file}`,
    /// verdaccio's `{@scope%2fname}/-/{@scope}/{file}`, anything else after
    /// `/-/`), is its package's at the version its file name gives; a
    /// version's or a tag's document (`{name}/{version}`) is its package's
    /// metadata. Anything else is unknown, and so is a tarball whose file
    /// name is not `{unscoped name}-{version}.tgz`.
    fn classify(&self, path: &ArtifactPath) -> PathKind {
        let decoded = path.decoded();
        if decoded.starts_with("-/") {
            return if decoded.ends_with(".tgz") { PathKind::Unknown } else { PathKind::Metadata(None) };
        }
        if let Some((package, file)) = decoded.split_once("/-/") {
            return tarball(package, file).unwrap_or(PathKind::Unknown);
        }
        if decoded.ends_with(".tgz") {
            // A tarball by no tarball route.
            return PathKind::Unknown;
        }
        if let Some(name) = package_name(decoded) {
            return PathKind::metadata_of(name);
        }
        // `{name}/{version}` or `@scope/name/{tag}`.
        match decoded.rsplit_once('/') {
            Some((package, version)) if !version.is_empty() => {
                package_name(package).map_or(PathKind::Unknown, PathKind::metadata_of)
            }
            _ => PathKind::Unknown,
        }
    }

    crate::capabilities!(documents, integrity, grouping, versions, configured);
}

impl Documents for Npm {
    fn document(&self, path: &ArtifactPath) -> Option<&'static dyn Document> {
        (!path.decoded().ends_with(".tgz")).then_some(&Packument as &'static dyn Document)
    }

    /// A tarball's packument: `{package}/-/{file}.tgz` is listed in
    /// `{package}`, on the same remote.
    fn listed_in(&self, lister: &Remote, remote: &Remote, path: &ArtifactPath) -> Option<ArtifactPath> {
        let decoded = path.decoded();
        let (package, _) = decoded.split_once("/-/").filter(|_| lister.name == remote.name)?;
        ArtifactPath::parse(package, None).ok().filter(|_| decoded.ends_with(".tgz"))
    }
}

impl Integrity for Npm {
    /// A tarball is vouched for by its packument's `dist.integrity` (else
    /// `dist.shasum`): whichever route it was asked by, so a tarball asked
    /// for by a path no packument links is still checked.
    fn vouched_by(&self, _remote: &Remote, path: &ArtifactPath) -> Vec<ArtifactPath> {
        match self.classify(path) {
            PathKind::File { .. } if path.decoded().ends_with(".tgz") => {
                self.owner_document(path).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    fn vouches(&self, record: &[u8], path: &ArtifactPath) -> Result<Expected, String> {
        let PathKind::File { name, version } = self.classify(path) else {
            return Err("not a tarball".into());
        };
        let doc: Value = serde_json::from_slice(record).map_err(|e| format!("not a packument: {e}"))?;
        let dist = doc
            .get("versions")
            .and_then(|v| v.get(&version))
            .and_then(|v| v.get("dist"))
            .ok_or_else(|| format!("the packument of {name} has no version {version}"))?;
        let integrity = dist.get("integrity").and_then(Value::as_str).and_then(Expected::integrity);
        let shasum = || dist.get("shasum").and_then(Value::as_str).and_then(Expected::sha1_hex);
        integrity.or_else(shasum).ok_or_else(|| format!("the packument gives {name} {version} no digest"))
    }
}

impl Grouping for Npm {
    /// A packument is its own; a tarball's is its package's.
    fn owner_document(&self, path: &ArtifactPath) -> Option<ArtifactPath> {
        let decoded = path.decoded();
        let package = match decoded.split_once("/-/") {
            Some((package, _)) if decoded.ends_with(".tgz") => package,
            Some(_) => return None,
            None => decoded,
        };
        package_name(package)?;
        ArtifactPath::parse(package, None).ok()
    }

    fn merges(&self, path: &ArtifactPath) -> bool {
        self.document(path).is_some() && package_name(path.decoded()).is_some()
    }

    /// Packuments merged: `versions`, their `time` and `dist-tags`, the
    /// earliest member that has one winning it; the rest of the document is
    /// the first member's.
    fn merge(&self, _path: &ArtifactPath, parts: &[Part<'_>]) -> Result<Vec<u8>, String> {
        merge_packuments(parts)
    }
}

impl Versions for Npm {
    fn publish_times(&self) -> bool {
        true
    }

    fn lists_versions(&self, path: &ArtifactPath) -> bool {
        self.merges(path)
    }

    fn listed_versions(&self, _path: &ArtifactPath, body: &[u8], _json: bool) -> Option<Listed> {
        let doc: Value = serde_json::from_slice(body).ok()?;
        Some(Listed::versions(doc.get("versions")?.as_object()?.keys().cloned().collect()))
    }

    /// Hidden versions leave `versions` and `time`; a `dist-tag` on one
    /// moves to the newest version left (`latest`: the newest release) or
    /// goes.
    fn filter_versions(
        &self,
        _path: &ArtifactPath,
        body: &[u8],
        _json: bool,
        keep: &dyn Fn(Option<&str>) -> bool,
    ) -> Result<Vec<u8>, String> {
        filter_packument(body, &|version| keep(Some(version)))
    }

    /// The full packument has every version's publish time.
    fn times_document(
        &self,
        path: &ArtifactPath,
        _version: Option<&str>,
    ) -> Option<(ArtifactPath, &'static str)> {
        Some((self.owner_document(path)?, accept_for(FULL)))
    }

    fn publish_times_in(&self, body: &[u8]) -> Vec<(String, i64)> {
        let Ok(doc) = serde_json::from_slice::<Value>(body) else { return Vec::new() };
        let Some(times) = doc.get("time").and_then(Value::as_object) else { return Vec::new() };
        times
            .iter()
            .filter(|(v, _)| !matches!(v.as_str(), "created" | "modified"))
            .filter_map(|(v, t)| Some((v.clone(), crate::format::time::parse_rfc3339(t.as_str()?)?)))
            .collect()
    }

    fn latest_list(&self, _path: &ArtifactPath) -> Option<ArtifactPath> {
        None
    }
}

impl Document for Packument {
    fn negotiate(&self, accept: Option<&str>) -> Negotiated {
        let variant = negotiate(accept);
        Negotiated { variant, accept: accept_for(variant) }
    }

    fn variants(&self) -> &'static [&'static str] {
        &[FULL, ABBREVIATED]
    }

    fn rewrite(&self, body: &[u8], json: bool, page: &Url, links: &dyn LinkMap) -> Result<Vec<u8>, String> {
        if json {
            rewrite_packument(body, page, links)
        } else {
            // Not a packument (an npm path that answers something else).
            Ok(body.to_vec())
        }
    }
}

/// A tarball of `package`: `file` (what follows `/-/`) ends in
/// `{unscoped name}-{version}.tgz`.
fn tarball(package: &str, file: &str) -> Option<PathKind> {
    let name = package_name(package)?;
    let file = file.rsplit('/').next()?;
    let unscoped = name.rsplit('/').next().unwrap_or(name);
    let version = file.strip_suffix(".tgz")?.strip_prefix(unscoped)?.strip_prefix('-')?;
    (!version.is_empty()).then(|| PathKind::file(name, version))
}

/// `path` (decoded) when it is a package's name: one segment, or a scope
/// and one segment. Names are kept as published (npm compares them as they
/// are; new ones are lower case). The registry's own endpoints (`-/...`)
/// are not packages.
fn package_name(path: &str) -> Option<&str> {
    let valid = |segment: &str| !segment.is_empty() && !segment.starts_with('-');
    let ok = match path.split_once('/') {
        Some((scope, name)) => {
            scope.strip_prefix('@').is_some_and(valid) && valid(name) && !name.contains('/')
        }
        None => valid(path) && !path.starts_with('@'),
    };
    ok.then_some(path)
}

/// The two representations of a packument, cached apart.
const FULL: &str = "npm-full";
const ABBREVIATED: &str = "npm-abbreviated";

/// What upstream is asked for, per variant.
fn accept_for(variant: &str) -> &'static str {
    if variant == ABBREVIATED {
        "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
    } else {
        "application/json"
    }
}

/// npm, yarn and pnpm ask for the abbreviated form when they can install from it.
fn negotiate(accept: Option<&str>) -> &'static str {
    match accept {
        Some(a) if a.contains("application/vnd.npm.install-v1+json") => ABBREVIATED,
        _ => FULL,
    }
}

/// Rewrites every `versions.*.dist.tarball`, recording `dist.integrity`.
fn rewrite_packument(body: &[u8], page: &Url, map: &dyn LinkMap) -> Result<Vec<u8>, String> {
    let mut doc: Value = serde_json::from_slice(body).map_err(|e| format!("not an npm packument: {e}"))?;
    if let Some(versions) = doc.get_mut("versions").and_then(Value::as_object_mut) {
        for version in versions.values_mut() {
            let expected =
                version.pointer("/dist/integrity").and_then(Value::as_str).and_then(Expected::integrity);
            if let Some(tarball) = version.pointer_mut("/dist/tarball") {
                if let Some(new) = tarball.as_str().and_then(|u| rewrite_link(page, u, expected, map)) {
                    *tarball = Value::String(new);
                }
            }
        }
    }
    serde_json::to_vec(&doc).map_err(|e| e.to_string())
}

impl Configured for Npm {
    fn keys(&self) -> &'static [&'static str] {
        &["npm_files_url", "npm_files_remote"]
    }

    fn remote_keys(&self) -> &'static [&'static str] {
        &["npm_files_remote"]
    }

    fn read(&self, keys: &mut dyn KeyReader) -> Own {
        Own {
            options: FormatOptions::default(),
            files: files_rewrite(keys, "npm_files_url", "npm_files_remote"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::format::Coordinates;

    #[test]
    fn packuments_merge_with_the_earliest_member_winning() {
        let internal = serde_json::json!({"name": "acme-utils", "dist-tags": {"latest": "1.0.0"},
            "versions": {"1.0.0": {"v": "internal"}}, "time": {"1.0.0": "2024-01-01", "modified": "2024-01-01"}});
        let public = serde_json::json!({"name": "acme-utils", "dist-tags": {"latest": "9.0.0", "next": "9.1.0"},
            "versions": {"1.0.0": {"v": "public"}, "9.0.0": {"v": "public"}},
            "time": {"1.0.0": "2020-01-01", "9.0.0": "2025-01-01", "modified": "2025-01-01"}});
        let (a, b) = (internal.to_string(), public.to_string());
        let parts = [Part { body: a.as_bytes(), json: true }, Part { body: b.as_bytes(), json: true }];
        let merged: Value = serde_json::from_slice(&merge_packuments(&parts).unwrap()).unwrap();
        assert_eq!(merged["versions"]["1.0.0"]["v"], "internal");
        assert_eq!(merged["versions"]["9.0.0"]["v"], "public");
        assert_eq!(merged["time"]["1.0.0"], "2024-01-01");
        assert_eq!(merged["time"]["9.0.0"], "2025-01-01");
        assert_eq!(merged["time"]["modified"], "2025-01-01");
        assert_eq!(merged["dist-tags"]["latest"], "1.0.0");
        assert_eq!(merged["dist-tags"]["next"], "9.1.0");
        assert!(merge_packuments(&[Part { body: b"nope", json: true }]).is_err());
    }

    #[test]
    fn a_tarballs_metadata_is_its_packument() {
        let at = |p: &str| {
            Npm.owner_document(&ArtifactPath::parse(p, None).unwrap()).map(|p| p.decoded().to_owned())
        };
        assert_eq!(at("@acme/utils/-/utils-1.0.0.tgz").as_deref(), Some("@acme/utils"));
        assert_eq!(at("acme-utils").as_deref(), Some("acme-utils"));
        assert_eq!(at("-/v1/search"), None);
    }

    struct Map(Mutex<Vec<(String, Option<Expected>)>>);
    impl LinkMap for Map {
        fn map(&self, u: &Url, expected: Option<Expected>) -> Option<String> {
            let rest = u.as_str().strip_prefix("https://npm.example.internal/")?;
            self.0.lock().unwrap().push((rest.to_owned(), expected));
            Some(format!("http://proxy/api/v1/remote/npm/{rest}"))
        }
    }

    #[test]
    fn rewrites_tarballs_of_every_version_and_keeps_the_rest() {
        let packument = br#"{"_id":"@babel/core","name":"@babel/core","dist-tags":{"latest":"7.21.0"},
          "versions":{
            "7.21.0":{"name":"@babel/core","version":"7.21.0","dependencies":{"debug":"^4.1.0"},
              "dist":{"tarball":"https://npm.example.internal/@babel/core/-/core-7.21.0.tgz","shasum":"abc",
                      "integrity":"sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="}},
            "7.20.0":{"name":"@babel/core","version":"7.20.0","dist":{"tarball":"https://elsewhere.example.com/core.tgz"}}},
          "time":{"7.21.0":"2023-02-20T15:31:00.000Z"}}"#;
        let map = Map(Mutex::new(Vec::new()));
        let page: Url = "https://npm.example.internal/@babel%2fcore".parse().unwrap();
        let out: Value = serde_json::from_slice(&rewrite_packument(packument, &page, &map).unwrap()).unwrap();
        assert_eq!(
            out["versions"]["7.21.0"]["dist"]["tarball"],
            "http://proxy/api/v1/remote/npm/@babel/core/-/core-7.21.0.tgz"
        );
        assert_eq!(out["versions"]["7.20.0"]["dist"]["tarball"], "https://elsewhere.example.com/core.tgz");
        assert_eq!(out["versions"]["7.21.0"]["dependencies"]["debug"], "^4.1.0");
        assert_eq!(out["dist-tags"]["latest"], "7.21.0");
        let seen = map.0.lock().unwrap();
        assert!(seen[0].1.is_some(), "the integrity was handed on for verification");
        assert!(rewrite_packument(b"not json", &page, &map).is_err());
    }

    #[test]
    fn rewrites_a_large_packument_whole() {
        // A popular package: thousands of versions, a document of megabytes.
        let versions: serde_json::Map<String, Value> = (0..3000)
            .map(|i| {
                let v = format!("1.{i}.0");
                let doc = serde_json::json!({
                    "name": "big", "version": v, "description": "x".repeat(500),
                    "dist": { "tarball": format!("https://npm.example.internal/big/-/big-{v}.tgz") },
                });
                (v, doc)
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "name": "big", "versions": versions })).unwrap();
        assert!(body.len() > 1_500_000);
        let map = Map(Mutex::new(Vec::new()));
        let page: Url = "https://npm.example.internal/big".parse().unwrap();
        let out: Value = serde_json::from_slice(&rewrite_packument(&body, &page, &map).unwrap()).unwrap();
        let versions = out["versions"].as_object().unwrap();
        assert_eq!(versions.len(), 3000);
        assert!(versions.values().all(|v| v["dist"]["tarball"]
            .as_str()
            .unwrap()
            .starts_with("http://proxy/api/v1/remote/npm/big/-/")));
    }

    #[test]
    fn negotiates_the_abbreviated_form() {
        assert_eq!(
            negotiate(Some("application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*")),
            ABBREVIATED
        );
        assert_eq!(negotiate(Some("application/json")), FULL);
        assert_eq!(negotiate(None), FULL);
    }

    fn at(path: &str) -> Option<Coordinates> {
        crate::format::tests::coordinates_at(&Npm, path)
    }

    fn package(name: &str, version: Option<&str>) -> Option<Coordinates> {
        Some(Coordinates::new(name, version))
    }

    #[test]
    fn a_packument_names_its_package_in_every_encoding() {
        assert_eq!(at("express"), package("express", None));
        assert_eq!(at("@babel/core"), package("@babel/core", None));
        assert_eq!(at("@babel%2fcore"), package("@babel/core", None));
        assert_eq!(at("@babel%2Fcore"), package("@babel/core", None));
        // Kept as published: legacy names have capitals.
        assert_eq!(at("JSONStream"), package("JSONStream", None));
        assert_eq!(at("lodash.merge"), package("lodash.merge", None));
    }

    #[test]
    fn a_tarball_names_its_package_and_version() {
        assert_eq!(at("express/-/express-4.18.2.tgz"), package("express", Some("4.18.2")));
        assert_eq!(at("@babel/core/-/core-7.24.0.tgz"), package("@babel/core", Some("7.24.0")));
        assert_eq!(at("@babel%2fcore/-/core-7.24.0.tgz"), package("@babel/core", Some("7.24.0")));
        assert_eq!(at("left-pad/-/left-pad-1.0.0-beta.1.tgz"), package("left-pad", Some("1.0.0-beta.1")));
        assert_eq!(at("@types/node/-/node-20.11.5.tgz"), package("@types/node", Some("20.11.5")));
        assert_eq!(at("a/-/a-1.0.0+build.5.tgz"), package("a", Some("1.0.0+build.5")));
    }

    #[test]
    fn endpoints_and_odd_paths_have_no_coordinates() {
        for path in [
            "-/ping",
            "-/v1/search",
            "-/npm/v1/security/advisories/bulk",
            "-",
            "@babel",
            "@babel/",
            "@/core",
            "express/",
            "express.tgz",
            "express/-/express.tgz",
            "express/-/express-.tgz",
            "express/-/other-1.0.0.tgz",
            "express/-/expressx-1.0.0.tgz",
            "express/-/express-1.0.0.tar.gz",
            "@babel/core/-/babel-core-7.24.0.tgz",
            "a/b/c/-/c-1.0.0.tgz",
            "-/-/--1.tgz",
        ] {
            assert_eq!(at(path), None, "{path}");
        }
    }

    #[test]
    fn every_path_but_a_tarball_is_a_packument_listed_by_its_package() {
        let doc = |p: &str| Npm.document(&ArtifactPath::parse(p, None).unwrap()).is_some();
        assert!(doc("express") && doc("@babel%2fcore"));
        assert!(!doc("express/-/express-4.18.2.tgz"));
        let npm = Remote::proxy("npm", "https://npm.example.internal/".parse().unwrap());
        let other = Remote::proxy("other", "https://npm.example.internal/".parse().unwrap());
        let tarball = ArtifactPath::parse("@babel/core/-/core-7.21.0.tgz", None).unwrap();
        assert_eq!(Npm.listed_in(&npm, &npm, &tarball).unwrap().decoded(), "@babel/core");
        assert!(Npm.listed_in(&other, &npm, &tarball).is_none());
        assert!(Npm.listed_in(&npm, &npm, &ArtifactPath::parse("express", None).unwrap()).is_none());
        let mut npm = npm;
        npm.package = crate::format::Package::parse("npm").unwrap();
        let remotes = crate::remote::Remotes::new([npm.clone(), other]);
        let keys = crate::format::listing_keys(&crate::format::listed_in(&npm, &tarball, &remotes));
        let base = ArtifactPath::parse("@babel/core", None).unwrap().cache_key("npm");
        let sep = crate::path::KEY_SEPARATOR;
        assert_eq!(keys, [format!("{base}{sep}{FULL}"), format!("{base}{sep}{ABBREVIATED}")]);
    }
}
