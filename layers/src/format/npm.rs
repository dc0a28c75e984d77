//! npm packuments: full and abbreviated (`application/vnd.npm.install-v1+json`).

use serde_json::Value;
use url::Url;

use super::{rewrite_link, variant_keys, Document, Format, LinkMap, Negotiated};
use crate::{digest::Expected, path::ArtifactPath, remote::Remote};

/// npm registries (`package: npm`): every path but a tarball is a packument.
pub(super) struct Npm;

/// A packument, full or abbreviated.
struct Packument;

impl Format for Npm {
    fn name(&self) -> &'static str {
        "npm"
    }

    fn own_keys(&self) -> &'static [&'static str] {
        &["npm_files_url", "npm_files_remote"]
    }

    fn document(&self, path: &ArtifactPath) -> Option<&'static dyn Document> {
        (!path.decoded().ends_with(".tgz")).then_some(&Packument as &'static dyn Document)
    }

    /// A new tarball's packument (`{package}/-/{file}.tgz` is listed in
    /// `{package}`), both forms.
    fn listing_keys(&self, lister: &Remote, remote: &Remote, path: &ArtifactPath) -> Vec<String> {
        let decoded = path.decoded();
        match decoded.split_once("/-/").filter(|_| lister.name == remote.name && decoded.ends_with(".tgz")) {
            Some((package, _)) => variant_keys(&remote.name, package, &[FULL, ABBREVIATED]),
            None => Vec::new(),
        }
    }
}

impl Document for Packument {
    fn negotiate(&self, accept: Option<&str>) -> Negotiated {
        let variant = negotiate(accept);
        Negotiated { variant, accept: accept_for(variant) }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

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

    #[test]
    fn every_path_but_a_tarball_is_a_packument_listed_by_its_package() {
        let doc = |p: &str| Npm.document(&ArtifactPath::parse(p, None).unwrap()).is_some();
        assert!(doc("express") && doc("@babel%2fcore"));
        assert!(!doc("express/-/express-4.18.2.tgz"));
        let npm = Remote::proxy("npm", "https://npm.example.internal/".parse().unwrap());
        let other = Remote::proxy("other", "https://npm.example.internal/".parse().unwrap());
        let tarball = ArtifactPath::parse("@babel/core/-/core-7.21.0.tgz", None).unwrap();
        assert_eq!(
            Npm.listing_keys(&npm, &npm, &tarball),
            variant_keys("npm", "@babel/core", &[FULL, ABBREVIATED])
        );
        assert!(Npm.listing_keys(&other, &npm, &tarball).is_empty());
        assert!(Npm.listing_keys(&npm, &npm, &ArtifactPath::parse("express", None).unwrap()).is_empty());
    }
}
