//! Cargo sparse registries (`package: cargo`, `base_url` the sparse index).
//!
//! The index (`config.json`, `1/{name}`, `2/{name}`, `3/{c}/{name}`,
//! `{ab}/{cd}/{name}`, lower-cased names) changes with every publish and a
//! yank. `config.json` is rewritten: its `dl` becomes this proxy's
//! `{remote}/dl/{crate}/{version}/download` and its `api` goes, so `cargo
//! publish` through the mirror is refused by cargo itself. A download is
//! immutable, fetched from upstream's own `dl` template
//! ([`Relocation::locate`](crate::format::Relocation::locate)) and checked against the `cksum` of its version's
//! index line ([`Integrity::vouches`](crate::format::Integrity::vouches)) before it is stored. Yanked versions stay
//! downloadable: lock files name them.

use serde_json::Value;
use url::Url;

use super::{
    Document, Documents, Format, Grouping, Integrity, LinkMap, Negotiated, Part, PathKind, Relocation, Spec,
};
use crate::{digest::Expected, path::ArtifactPath, remote::Remote};

/// Cargo sparse registries.
pub(super) struct Cargo;

/// The registry's `config.json`.
struct Config;

static SPEC: Spec = Spec {
    mutable: &[r"^config\.json$", r"^[12]/[^/]+$", r"^3/[^/]/[^/]+$", r"^[^/]{2}/[^/]{2}/[^/]+$"],
    names_files: true,
    ..Spec::plain("cargo")
};

impl Format for Cargo {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    /// `config.json` and a crate's index file are metadata (the index
    /// file its crate's); a download is its crate's at its version;
    /// anything else is unknown.
    fn classify(&self, path: &ArtifactPath) -> PathKind {
        if let Some((name, version)) = download(path) {
            return PathKind::file(name, version);
        }
        if path.decoded() == "config.json" {
            return PathKind::Metadata(None);
        }
        match path.decoded().rsplit('/').next() {
            Some(name) if index_path(name).as_deref() == Some(path.decoded()) => PathKind::metadata_of(name),
            _ => PathKind::Unknown,
        }
    }

    crate::capabilities!(documents, integrity, relocation, grouping);
}

impl Documents for Cargo {
    fn document(&self, path: &ArtifactPath) -> Option<&'static dyn Document> {
        (path.decoded() == "config.json").then_some(&Config as &'static dyn Document)
    }

    fn listed_in(&self, _lister: &Remote, _remote: &Remote, _path: &ArtifactPath) -> Option<ArtifactPath> {
        None
    }
}

impl Integrity for Cargo {
    /// A download is vouched for by its crate's index file.
    fn vouched_by(&self, _remote: &Remote, path: &ArtifactPath) -> Vec<ArtifactPath> {
        let record = || ArtifactPath::parse(&index_path(download(path)?.0)?, None).ok();
        record().into_iter().collect()
    }

    /// The `cksum` (SHA-256) of the index line of the download's version,
    /// yanked or not.
    fn vouches(&self, record: &[u8], path: &ArtifactPath) -> Result<Expected, String> {
        let (name, version) = download(path).ok_or("not a download")?;
        let line = index_line(record, version)
            .ok_or_else(|| format!("the index of {name} has no version {version}"))?;
        let cksum = line.get("cksum").and_then(Value::as_str).unwrap_or_default();
        Expected::sha256_hex(cksum).ok_or_else(|| format!("the index line of {name} {version} has no cksum"))
    }
}

impl Relocation for Cargo {
    fn located_by(&self, path: &ArtifactPath) -> Option<ArtifactPath> {
        download(path).and_then(|_| ArtifactPath::parse("config.json", None).ok())
    }

    /// Upstream's `dl` template filled in (`{crate}`, `{version}`,
    /// `{prefix}`, `{lowerprefix}`, `{sha256-checksum}`), or with
    /// `/{crate}/{version}/download` appended when it has no marker.
    fn locate(
        &self,
        document: &[u8],
        path: &ArtifactPath,
        vouched: Option<&Expected>,
    ) -> Result<String, String> {
        let (name, version) = download(path).ok_or("not a download")?;
        let config: Value =
            serde_json::from_slice(document).map_err(|e| format!("upstream's config.json: {e}"))?;
        let dl = config.get("dl").and_then(Value::as_str).ok_or("upstream's config.json has no dl")?;
        const MARKERS: [&str; 5] = ["{crate}", "{version}", "{prefix}", "{lowerprefix}", "{sha256-checksum}"];
        if !MARKERS.iter().any(|m| dl.contains(m)) {
            return Ok(format!("{}/{name}/{version}/download", dl.trim_end_matches('/')));
        }
        let prefix = prefix(name).ok_or("not a crate name")?;
        let mut url = dl
            .replace("{crate}", name)
            .replace("{version}", version)
            .replace("{lowerprefix}", &prefix.to_ascii_lowercase())
            .replace("{prefix}", &prefix);
        if url.contains("{sha256-checksum}") {
            let sum = vouched.ok_or("the download URL needs the index's checksum, and there is none")?;
            url = url.replace("{sha256-checksum}", &sum.hex());
        }
        Ok(url)
    }
}

impl Grouping for Cargo {
    /// A crate's index file, for a download or the index file itself.
    fn owner_document(&self, path: &ArtifactPath) -> Option<ArtifactPath> {
        let name = match download(path) {
            Some((name, _)) => name.to_owned(),
            None => Format::classify(self, path).coordinates()?.name,
        };
        ArtifactPath::parse(&index_path(&name)?, None).ok()
    }

    fn merges(&self, path: &ArtifactPath) -> bool {
        download(path).is_none() && Format::classify(self, path).coordinates().is_some()
    }

    /// Index lines by version, the earliest member winning a version.
    fn merge(&self, _path: &ArtifactPath, parts: &[Part<'_>]) -> Result<Vec<u8>, String> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for part in parts {
            for line in part.body.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
                let entry: Value =
                    serde_json::from_slice(line).map_err(|e| format!("not an index line: {e}"))?;
                let version = entry.get("vers").and_then(Value::as_str).ok_or("an index line has no vers")?;
                if seen.insert(version.to_owned()) {
                    out.extend_from_slice(line);
                    out.push(b'\n');
                }
            }
        }
        Ok(out)
    }
}

impl Document for Config {
    fn negotiate(&self, _accept: Option<&str>) -> Negotiated {
        Negotiated { variant: "json", accept: "application/json" }
    }

    fn variants(&self) -> &'static [&'static str] {
        &["json"]
    }

    /// `dl` pointed at this proxy, `api` removed.
    fn rewrite(&self, body: &[u8], _json: bool, _page: &Url, links: &dyn LinkMap) -> Result<Vec<u8>, String> {
        let mut config: Value = serde_json::from_slice(body).map_err(|e| format!("config.json: {e}"))?;
        let object = config.as_object_mut().ok_or("config.json is not a JSON object")?;
        let here = links.here().ok_or("no address of this remote on the proxy")?;
        object.insert("dl".into(), Value::String(format!("{here}/dl/{{crate}}/{{version}}/download")));
        object.remove("api");
        serde_json::to_vec(&config).map_err(|e| e.to_string())
    }
}

/// A download path's crate and version: `dl/{crate}/{version}/download`.
fn download(path: &ArtifactPath) -> Option<(&str, &str)> {
    let rest = path.decoded().strip_prefix("dl/")?.strip_suffix("/download")?;
    let (name, version) = rest.split_once('/')?;
    (prefix(name).is_some() && !version.is_empty() && !version.contains('/')).then_some((name, version))
}

/// The index directory of a crate name, as cargo's `{prefix}` (case kept).
fn prefix(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return None;
    }
    Some(match name.len() {
        1 => "1".into(),
        2 => "2".into(),
        3 => format!("3/{}", &name[..1]),
        _ => format!("{}/{}", &name[..2], &name[2..4]),
    })
}

/// Where the index keeps a crate's file (lower-cased).
fn index_path(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    Some(format!("{}/{lower}", prefix(&lower)?))
}

/// The index line (one JSON object per line) of `version`.
fn index_line(file: &[u8], version: &str) -> Option<Value> {
    file.split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .find(|line| line.get("vers").and_then(Value::as_str) == Some(version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tests::*;

    fn path(p: &str) -> ArtifactPath {
        ArtifactPath::parse(p, None).unwrap()
    }

    #[test]
    fn the_index_moves_downloads_do_not() {
        let class = |p: &str| classifier("cargo", None, &[]).classify(p);
        for p in ["config.json", "1/a", "2/ab", "3/a/abc", "se/rd/serde", "dl/xx/dlxxx"] {
            assert_eq!(class(p), BUILTIN_MUTABLE, "{p}");
        }
        for p in ["dl/serde/1.0.0/download", "dl/a/0.1.0/download"] {
            assert_ne!(class(p), BUILTIN_MUTABLE, "{p}");
        }
    }

    #[test]
    fn coordinates_of_index_files_and_downloads() {
        let at = |p: &str| coordinates_at(&Cargo, p);
        assert_eq!(at("se/rd/serde"), Some(Coordinates::new("serde", None)));
        assert_eq!(at("3/a/abc"), Some(Coordinates::new("abc", None)));
        assert_eq!(at("1/a"), Some(Coordinates::new("a", None)));
        assert_eq!(at("dl/Inflector/0.11.4/download"), version_of("Inflector", "0.11.4"));
        for p in ["config.json", "se/xx/serde", "dl/serde/download", "dl/ser de/1.0.0/download"] {
            assert_eq!(at(p), None, "{p}");
        }
    }

    #[test]
    fn a_download_is_vouched_for_by_its_index_line_yanked_or_not() {
        let remote = Remote::proxy("crates", "http://index.example/".parse().unwrap());
        let dl = path("dl/Inflector/0.11.4/download");
        assert_eq!(Cargo.vouched_by(&remote, &dl), vec![path("in/fl/inflector")]);
        assert!(Cargo.vouched_by(&remote, &path("in/fl/inflector")).is_empty());
        let (a, b) = ("ab".repeat(32), "cd".repeat(32));
        let file = format!(
            "{{\"name\":\"Inflector\",\"vers\":\"0.11.3\",\"cksum\":\"{a}\"}}\n\
             {{\"name\":\"Inflector\",\"vers\":\"0.11.4\",\"cksum\":\"{b}\",\"yanked\":true}}\n"
        );
        assert_eq!(Cargo.vouches(file.as_bytes(), &dl).unwrap().hex(), b);
        let missing = Cargo.vouches(file.as_bytes(), &path("dl/Inflector/9.0.0/download")).unwrap_err();
        assert!(missing.contains("no version 9.0.0"), "{missing}");
    }

    #[test]
    fn the_download_url_is_upstreams_template_filled_in() {
        let dl = path("dl/Inflector/0.11.4/download");
        let sum = Expected::sha256_hex(&"ab".repeat(32));
        let locate = |dl_template: &str| {
            let config = format!("{{\"dl\":\"{dl_template}\"}}");
            Cargo.locate(config.as_bytes(), &dl, sum.as_ref())
        };
        assert_eq!(
            locate("https://files.example/{prefix}/{lowerprefix}/{crate}/{crate}-{version}.crate").unwrap(),
            "https://files.example/In/fl/in/fl/Inflector/Inflector-0.11.4.crate"
        );
        assert_eq!(
            locate("https://files.example/api/v1/crates/").unwrap(),
            "https://files.example/api/v1/crates/Inflector/0.11.4/download"
        );
        assert_eq!(
            locate("https://f.example/{sha256-checksum}").unwrap(),
            format!("https://f.example/{}", "ab".repeat(32))
        );
        assert!(Cargo.locate(b"{\"dl\":\"https://f.example/{sha256-checksum}\"}", &dl, None).is_err());
        assert!(Cargo.locate(b"not json", &dl, None).is_err());
        assert!(Cargo.locate(b"{}", &dl, None).is_err());
    }

    #[test]
    fn index_files_merge_by_version() {
        let (a, b) = (
            "{\"vers\":\"1.0.0\",\"m\":\"a\"}\n",
            "{\"vers\":\"1.0.0\",\"m\":\"b\"}\n{\"vers\":\"2.0.0\"}\n",
        );
        let parts = [Part { body: a.as_bytes(), json: false }, Part { body: b.as_bytes(), json: false }];
        let merged = String::from_utf8(Cargo.merge(&path("se/rd/serde"), &parts).unwrap()).unwrap();
        assert_eq!(merged, "{\"vers\":\"1.0.0\",\"m\":\"a\"}\n{\"vers\":\"2.0.0\"}\n");
        assert!(Cargo.merges(&path("se/rd/serde")) && !Cargo.merges(&path("config.json")));
        assert_eq!(Cargo.owner_document(&path("dl/Serde/1.0.0/download")), Some(path("se/rd/serde")));
    }

    struct Here;
    impl LinkMap for Here {
        fn map(&self, _resolved: &Url, _expected: Option<Expected>) -> Option<String> {
            None
        }
        fn here(&self) -> Option<String> {
            Some("http://proxy.example/api/crates".into())
        }
    }

    #[test]
    fn config_points_dl_here_and_drops_api() {
        let page = Url::parse("http://index.example/config.json").unwrap();
        let body =
            br#"{"dl":"https://files.example/crates","api":"https://api.example","auth-required":false}"#;
        let out: Value = serde_json::from_slice(&Config.rewrite(body, true, &page, &Here).unwrap()).unwrap();
        assert_eq!(out["dl"], "http://proxy.example/api/crates/dl/{crate}/{version}/download");
        assert_eq!(out.get("api"), None);
        assert_eq!(out["auth-required"], false);
        assert!(Config.rewrite(b"[1]", true, &page, &Here).is_err());
    }
}
