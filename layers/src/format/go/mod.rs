//! Go module proxies (`GOPROXY`): `{module}/@v/list` and `{module}/@latest`
//! change with every release; `{module}/@v/{version}.info`, `.mod` and
//! `.zip` never change for a canonical semantic version (`v1.2.3`, a
//! pre-release, a pseudo-version, `+incompatible`), while an `.info` for any
//! other query (a branch or a commit, which upstream resolves) moves.
//!
//! Module paths arrive case-encoded (`!x` for `X`, so that they fit a
//! case-insensitive file system) and are kept that way in cache keys and
//! upstream requests; [`Format::coordinates`] decodes them.
//!
//! A remote with `go_sumdb_url` passes that checksum database through at
//! `sumdb/{its host}/...`: `supported` is answered 200 here, lookups and
//! tiles are fetched from the database and are immutable, `latest` moves.
//! Any other `sumdb/` path (every one, without `go_sumdb_url`) is a 404, so
//! the go command asks its database itself.
//!
//! With a database, a canonical version's `.zip` and `.mod` are checked
//! before they are stored against the `h1:` lines of that version's lookup
//! record ([`h1`]), read through the cache: a poisoned upstream cannot plant
//! a module the database does not vouch for. A version the database does
//! not know (a private module: 404 or 410) is served unchecked.

pub mod h1;

use http::StatusCode;
use url::Url;

use super::{
    options::{Configured, FormatOptions, KeyReader, Own},
    Format, Grouping, Integrity, Listed, Part, PathKind, Routes, Spec, Versions,
};
use crate::{digest::Expected, path::ArtifactPath, remote::Remote};

/// Go module proxies.
pub(super) struct Go;

/// A canonical semantic version as the go command writes it (`v1.2.3`, a
/// pre-release, a pseudo-version, `+incompatible`; a literal, for
/// `concat!`): what makes an `.info`, `.mod` or `.zip` immutable.
macro_rules! canonical {
    () => {
        r"v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+incompatible)?"
    };
}

static SPEC: Spec = Spec {
    mutable: &[
        r"/@v/list$",
        r"/@latest$",
        // An `.info` of anything but a canonical version: a branch, a
        // commit, a version query upstream resolves.
        concat!(r"/@v/(?!", canonical!(), r"\.info$)[^/]+\.info$"),
        r"^sumdb/[^/]+/(latest|supported)$",
    ],
    names_files: true,
    osv_ecosystem: Some("Go"),
    ..Spec::plain("go")
};

impl Format for Go {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    /// The checksum database's paths are metadata, and so are a module's
    /// `@v/list` and `@latest`; a version's `.info`, `.mod` and `.zip` are
    /// the module's (decoded) at that version. The query string plays no
    /// part. Anything else is unknown.
    fn classify(&self, path: &ArtifactPath) -> PathKind {
        let path = path.decoded();
        if path.starts_with("sumdb/") {
            return PathKind::Metadata(None);
        }
        if let Some(module) = path.strip_suffix("/@v/list").or_else(|| path.strip_suffix("/@latest")) {
            return decode(module).map_or(PathKind::Unknown, PathKind::metadata_of);
        }
        let file = || {
            let (module, file) = path.rsplit_once("/@v/")?;
            let version = [".info", ".mod", ".zip"].iter().find_map(|ext| file.strip_suffix(ext))?;
            if version.is_empty() || version.contains('/') {
                return None;
            }
            Some(PathKind::file(decode(module)?, decode(version)?))
        };
        file().unwrap_or(PathKind::Unknown)
    }

    crate::capabilities!(integrity, routes, grouping, versions, configured);
}

impl Integrity for Go {
    /// `sumdb/{host}/lookup/{module}@{version}` for a canonical version's
    /// `.zip` or `.mod`, on a remote with a checksum database.
    fn vouched_by(&self, remote: &Remote, path: &ArtifactPath) -> Vec<ArtifactPath> {
        let record = || {
            let host = remote.options::<GoOptions>()?.sumdb.as_ref()?.host_str()?;
            let (module, version, _) = module_file(path)?;
            ArtifactPath::parse(&format!("sumdb/{host}/lookup/{module}@{version}"), None).ok()
        };
        record().into_iter().collect()
    }

    /// The `h1:` the record gives the `.zip` (`{module} {version} h1:…`)
    /// or the `.mod` (`{module} {version}/go.mod h1:…`).
    fn vouches(&self, record: &[u8], path: &ArtifactPath) -> Result<Expected, String> {
        let (module, version, zip) = module_file(path).ok_or("not a module version's file")?;
        let (module, version) =
            (decode(module).ok_or("bad module path")?, decode(version).ok_or("bad version")?);
        let record = std::str::from_utf8(record).map_err(|_| "the lookup record is not text")?;
        let names = if zip { version.clone() } else { format!("{version}/go.mod") };
        let sum = record
            .lines()
            .find_map(|line| {
                let mut words = line.split(' ');
                let found = (words.next()? == module && words.next()? == names).then(|| words.next())?;
                found.filter(|_| words.next().is_none())
            })
            .ok_or_else(|| format!("the lookup record has no line for {module} {names}"))?;
        Expected::go_h1(sum, zip)
            .ok_or_else(|| format!("the lookup record's hash {sum:?} is not an h1: hash"))
    }
}

impl Routes for Go {
    fn answers_itself(&self, remote: &Remote, path: &ArtifactPath) -> Option<StatusCode> {
        let rest = path.decoded().strip_prefix("sumdb/")?;
        match sumdb_path(remote, rest) {
            Some("supported") => Some(StatusCode::OK),
            Some(_) => None,
            None => Some(StatusCode::NOT_FOUND),
        }
    }

    fn fetched_elsewhere<'r>(
        &self,
        remote: &'r Remote,
        path: &ArtifactPath,
    ) -> Option<(&'r Url, ArtifactPath)> {
        let rest = sumdb_path(remote, path.raw().strip_prefix("sumdb/")?)?;
        Some((remote.options::<GoOptions>()?.sumdb.as_ref()?, ArtifactPath::parse(rest, path.query()).ok()?))
    }

    fn upstream_path(&self, _path: &ArtifactPath) -> Option<ArtifactPath> {
        None
    }
}

impl Grouping for Go {
    /// A module's `@v/list`, for any of its paths.
    fn owner_document(&self, path: &ArtifactPath) -> Option<ArtifactPath> {
        let decoded = path.decoded();
        if decoded.starts_with("sumdb/") {
            return None;
        }
        let module =
            decoded.strip_suffix("/@latest").or_else(|| decoded.rsplit_once("/@v/").map(|(m, _)| m))?;
        decode(module)?;
        ArtifactPath::parse(&format!("{module}/@v/list"), None).ok()
    }

    fn merges(&self, path: &ArtifactPath) -> bool {
        path.decoded().ends_with("/@v/list") && !path.decoded().starts_with("sumdb/")
    }

    /// The versions every member lists, once each, in order of appearance.
    fn merge(&self, _path: &ArtifactPath, parts: &[Part<'_>]) -> Result<Vec<u8>, String> {
        let mut seen = std::collections::HashSet::new();
        let mut out = String::new();
        for part in parts {
            let text = std::str::from_utf8(part.body).map_err(|_| "a version list is not text")?;
            for version in text.lines().map(str::trim).filter(|v| !v.is_empty()) {
                if seen.insert(version) {
                    out.push_str(version);
                    out.push('\n');
                }
            }
        }
        Ok(out.into_bytes())
    }
}

impl Versions for Go {
    fn publish_times(&self) -> bool {
        true
    }

    fn lists_versions(&self, path: &ArtifactPath) -> bool {
        self.merges(path)
    }

    /// A list's lines; `@latest`'s (or an `.info`'s) `Version`.
    fn listed_versions(&self, path: &ArtifactPath, body: &[u8], _json: bool) -> Option<Listed> {
        if path.decoded().ends_with("/@v/list") {
            let text = std::str::from_utf8(body).ok()?;
            let versions = text.lines().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
            return Some(Listed::versions(versions.collect()));
        }
        let info: serde_json::Value = serde_json::from_slice(body).ok()?;
        Some(Listed::versions(vec![info["Version"].as_str()?.to_owned()]))
    }

    fn filter_versions(
        &self,
        _path: &ArtifactPath,
        body: &[u8],
        _json: bool,
        keep: &dyn Fn(Option<&str>) -> bool,
    ) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(body).map_err(|_| "a version list is not text")?;
        let kept = text.lines().filter(|v| !v.trim().is_empty() && keep(Some(v.trim())));
        Ok(kept.map(|v| format!("{v}\n")).collect::<String>().into_bytes())
    }

    /// A version's `.info` (whose `Time` the module's author sets).
    fn times_document(
        &self,
        path: &ArtifactPath,
        version: Option<&str>,
    ) -> Option<(ArtifactPath, &'static str)> {
        let list = self.owner_document(path)?;
        let module = list.raw().strip_suffix("/@v/list")?;
        Some((ArtifactPath::parse(&format!("{module}/@v/{}.info", version?), None).ok()?, "application/json"))
    }

    fn publish_times_in(&self, body: &[u8]) -> Vec<(String, i64)> {
        let Ok(info) = serde_json::from_slice::<serde_json::Value>(body) else { return Vec::new() };
        let (Some(version), Some(time)) = (info["Version"].as_str(), info["Time"].as_str()) else {
            return Vec::new();
        };
        match crate::format::time::parse_rfc3339(time) {
            Some(t) => vec![(version.to_owned(), t)],
            None => Vec::new(),
        }
    }

    fn latest_list(&self, path: &ArtifactPath) -> Option<ArtifactPath> {
        path.decoded().ends_with("/@latest").then(|| self.owner_document(path)).flatten()
    }
}

/// The module and version (both still case-encoded) of a canonical
/// version's `.zip` (true) or `.mod` (false).
fn module_file(path: &ArtifactPath) -> Option<(&str, &str, bool)> {
    static CANONICAL: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(concat!("^", canonical!(), "$")).expect("pattern"));
    let (module, file) = path.decoded().rsplit_once("/@v/")?;
    let (version, zip) = match file.strip_suffix(".zip") {
        Some(version) => (version, true),
        None => (file.strip_suffix(".mod")?, false),
    };
    (!module.starts_with("sumdb/") && CANONICAL.is_match(version)).then_some((module, version, zip))
}

/// `rest` (after `sumdb/`) without `{name}/`, when `name` is the host of
/// the database `remote` passes through.
fn sumdb_path<'p>(remote: &Remote, rest: &'p str) -> Option<&'p str> {
    let (name, path) = rest.split_once('/')?;
    let host = remote.options::<GoOptions>()?.sumdb.as_ref()?.host_str()?;
    (name.eq_ignore_ascii_case(host) && !path.is_empty()).then_some(path)
}

/// Undoes the go command's case-encoding (`!a` is `A`); `None` for a path
/// that is not validly encoded (an upper-case letter, or `!` before
/// anything but a lower-case letter).
pub(super) fn decode(encoded: &str) -> Option<String> {
    let mut out = String::with_capacity(encoded.len());
    let mut bang = false;
    for c in encoded.chars() {
        match (bang, c) {
            (true, 'a'..='z') => {
                out.push(c.to_ascii_uppercase());
                bang = false;
            }
            (true, _) => return None,
            (false, '!') => bang = true,
            (false, 'A'..='Z') => return None,
            (false, c) => out.push(c),
        }
    }
    (!bang && !out.is_empty()).then_some(out)
}

/// A Go remote's own options.
#[derive(Debug, Clone, Default)]
pub struct GoOptions {
    /// The checksum database passed through at `sumdb/{its host}/...`
    /// (`go_sumdb_url`).
    pub sumdb: Option<url::Url>,
}

impl Configured for Go {
    fn keys(&self) -> &'static [&'static str] {
        &["go_sumdb_url"]
    }

    fn remote_keys(&self) -> &'static [&'static str] {
        &[]
    }

    fn read(&self, keys: &mut dyn KeyReader) -> Own {
        let sumdb = keys.string("go_sumdb_url").and_then(|url| keys.url("go_sumdb_url", &url));
        Own { options: FormatOptions::new(GoOptions { sumdb }), files: None }
    }
}

#[cfg(test)]
mod tests;
