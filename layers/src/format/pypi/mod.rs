//! PyPI index pages: PEP 503 HTML and PEP 691 JSON.

use serde_json::Value;
use url::Url;

mod merge;
mod versions;

use super::{
    options::{files_rewrite, Configured, FormatOptions, KeyReader, Own},
    rewrite_link, Coordinates, Document, Documents, Format, Grouping, LinkMap, Listed, Negotiated, Part,
    PathKind, Spec, Versions,
};
use crate::{digest::Expected, path::ArtifactPath, remote::Remote};

/// Python package indexes (`package: pypi`): PEP 503/691 simple pages are
/// metadata; files may live on another remote (`pypi_files_remote`).
pub(super) struct Pypi;

/// A simple page, in either representation.
struct SimplePage;

static SPEC: Spec = Spec {
    mutable: &[r"^simple(/|$)"],
    names_files: true,
    scheme: crate::format::version::Scheme::Pep440,
    normalize: Some(normalize_name),
    osv_ecosystem: Some("PyPI"),
    ..Spec::plain("pypi")
};

/// A project name as PEP 503 compares them (as written when it is not one).
fn normalize_name(name: &str) -> String {
    normalize(name).unwrap_or_else(|| name.to_owned())
}

impl Format for Pypi {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    /// A distribution file names its project and version, wherever it is
    /// (static PEP 503 trees keep files under `simple/{name}/`); the simple
    /// pages and a file's sidecars (PEP 658 `.metadata`, `.asc`, PEP 740
    /// `.provenance`) are metadata; anything else is unknown. Names are
    /// normalized (PEP 503).
    fn classify(&self, path: &ArtifactPath) -> PathKind {
        let file = path.file_name();
        if let Some(Coordinates { name, version: Some(version) }) = distribution_of(file) {
            return PathKind::File { name, version };
        }
        if let Some(page) = page_of(path.decoded()) {
            return PathKind::Metadata(page);
        }
        let sidecar = SIDECARS.iter().find_map(|suffix| file.strip_suffix(suffix)).and_then(distribution_of);
        sidecar.map_or(PathKind::Unknown, |c| PathKind::Metadata(Some(c.name)))
    }

    crate::capabilities!(documents, grouping, versions, configured);
}

impl Documents for Pypi {
    fn document(&self, path: &ArtifactPath) -> Option<&'static dyn Document> {
        self.merges(path).then_some(&SimplePage as &'static dyn Document)
    }

    /// A new file's simple page, on the index that serves its own files
    /// (like pypiserver) or lists those of `pypi_files_remote`.
    fn listed_in(&self, lister: &Remote, remote: &Remote, path: &ArtifactPath) -> Option<ArtifactPath> {
        let lists =
            lister.name == remote.name || lister.files.as_ref().is_some_and(|f| f.remote == remote.name);
        match self.classify(path) {
            PathKind::File { name, .. } if lists => {
                ArtifactPath::parse(&format!("simple/{name}/"), None).ok()
            }
            _ => None,
        }
    }
}

impl Grouping for Pypi {
    /// A project's page is its own; a file's is its project's.
    fn owner_document(&self, path: &ArtifactPath) -> Option<ArtifactPath> {
        let name = Format::classify(self, path).coordinates()?.name;
        ArtifactPath::parse(&format!("simple/{name}/"), None).ok()
    }

    /// The simple pages: the root and each project's (not a file kept
    /// under `simple/`).
    fn merges(&self, path: &ArtifactPath) -> bool {
        matches!(self.classify(path), PathKind::Metadata(_)) && page_of(path.decoded()).is_some()
    }

    fn merge(&self, _path: &ArtifactPath, parts: &[Part<'_>]) -> Result<Vec<u8>, String> {
        merge::merge(parts)
    }
}

impl Document for SimplePage {
    fn negotiate(&self, accept: Option<&str>) -> Negotiated {
        let variant = negotiate(accept);
        Negotiated { variant, accept: accept_for(variant) }
    }

    fn variants(&self) -> &'static [&'static str] {
        &[JSON, HTML]
    }

    fn rewrite(&self, body: &[u8], json: bool, page: &Url, links: &dyn LinkMap) -> Result<Vec<u8>, String> {
        if json {
            return rewrite_json(body, page, links);
        }
        Ok(match std::str::from_utf8(body) {
            Ok(text) => rewrite_html(text, page, links).into_bytes(),
            // Not text: not a page this can rewrite; passed on as it came.
            Err(_) => body.to_vec(),
        })
    }
}

/// The two representations of a simple page, cached apart.
const JSON: &str = "pypi-json";
const HTML: &str = "pypi-html";

/// What upstream is asked for, per variant (one canonical `Accept` each, so
/// the bytes stored for a variant do not depend on which client asked first).
fn accept_for(variant: &str) -> &'static str {
    if variant == JSON {
        "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.1, text/html;q=0.01"
    } else {
        "application/vnd.pypi.simple.v1+html, text/html;q=0.9"
    }
}

/// The variant a client's `Accept` prefers: JSON when it rates PEP 691 JSON
/// at least as high as any HTML type, HTML otherwise (and by default).
fn negotiate(accept: Option<&str>) -> &'static str {
    let Some(accept) = accept else { return HTML };
    let mut json = 0.0f32;
    let mut html = 0.0f32;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/vnd.pypi.simple.v1+json" | "application/vnd.pypi.simple.latest+json" => {
                json = json.max(q)
            }
            "application/vnd.pypi.simple.v1+html"
            | "application/vnd.pypi.simple.latest+html"
            | "text/html" => html = html.max(q),
            _ => {}
        }
    }
    if json > 0.0 && json >= html {
        JSON
    } else {
        HTML
    }
}

/// A simple page at `path`: `Some(None)` for the root list of projects,
/// `Some(Some(name))` for a project's page (`simple/{name}/`, with or without
/// the slash, or its `index.html`).
fn page_of(path: &str) -> Option<Option<String>> {
    let rest = match path {
        "simple" | "simple/" | "simple/index.html" => return Some(None),
        _ => path.strip_prefix("simple/")?,
    };
    let project = rest.strip_suffix("/index.html").or_else(|| rest.strip_suffix('/')).unwrap_or(rest);
    if project.is_empty() || project.contains('/') {
        return None;
    }
    Some(Some(normalize(project)?))
}

/// What may follow a distribution's file name for a file about it: PEP 658
/// core metadata, a detached signature, PEP 740 provenance.
const SIDECARS: [&str; 3] = [".metadata", ".asc", ".provenance"];

/// Every suffix pip accepts for a distribution, with its kind.
const DISTRIBUTIONS: [(&str, Kind); 13] = [
    (".whl", Kind::Wheel),
    (".egg", Kind::Egg),
    (".tar.gz", Kind::Sdist),
    (".tgz", Kind::Sdist),
    (".tar.bz2", Kind::Sdist),
    (".tbz", Kind::Sdist),
    (".tar.xz", Kind::Sdist),
    (".txz", Kind::Sdist),
    (".tlz", Kind::Sdist),
    (".tar.lz", Kind::Sdist),
    (".tar.lzma", Kind::Sdist),
    (".tar", Kind::Sdist),
    (".zip", Kind::Sdist),
];

/// The normalized project name and the version of a distribution file:
/// `Foo_Bar-1.0-py3-none-any.whl` and `foo.bar-1.0.tar.gz` are `foo-bar`
/// at `1.0`. Versions are kept as the file name spells them.
fn distribution_of(file_name: &str) -> Option<Coordinates> {
    let (stem, kind) =
        DISTRIBUTIONS.into_iter().find_map(|(ext, kind)| Some((file_name.strip_suffix(ext)?, kind)))?;
    let (name, version) = match kind {
        // `{name}-{version}(-{build})?-{python}-{abi}-{platform}`: neither
        // the name nor the version holds a `-` (both escape it as `_`).
        Kind::Wheel => {
            let parts: Vec<&str> = stem.split('-').collect();
            if !(5..=6).contains(&parts.len()) {
                return None;
            }
            (parts[0], parts[1])
        }
        // `{name}-{version}(-{python}(-{platform})?)?`, name and version
        // escaped the same way (a platform may hold `-`: `linux-x86_64`).
        Kind::Egg => {
            let mut parts = stem.split('-');
            (parts.next()?, parts.next()?)
        }
        // `{name}-{version}`, where old names hold `-` (`python-dateutil`)
        // and old versions may too (`1.0-beta`): the version starts at the
        // last `-` followed by a digit, or else at the last `-`.
        Kind::Sdist => {
            let at = stem
                .rmatch_indices('-')
                .map(|(i, _)| i)
                .find(|&i| stem[i + 1..].starts_with(|c: char| c.is_ascii_digit()))
                .or_else(|| stem.rfind('-'))?;
            (&stem[..at], &stem[at + 1..])
        }
    };
    if version.is_empty() {
        return None;
    }
    Some(Coordinates::new(normalize(name)?, Some(version)))
}

/// How a distribution file's name is laid out.
#[derive(Clone, Copy)]
enum Kind {
    Wheel,
    Egg,
    Sdist,
}

/// A project name as PEP 503 compares it: lower case, every run of `-`,
/// `_` and `.` one `-`. `None` for an empty name.
fn normalize(name: &str) -> Option<String> {
    let mut normalized = String::with_capacity(name.len());
    let mut in_separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator {
                normalized.push('-');
            }
            in_separator = true;
        } else {
            normalized.push(c);
            in_separator = false;
        }
    }
    (!normalized.is_empty()).then(|| normalized.to_lowercase())
}

/// Rewrites the `href`s of a PEP 503 page, keeping everything else
/// (`#sha256=` fragments, `data-requires-python`, `data-yanked`,
/// `data-dist-info-metadata`, `data-core-metadata`) byte for byte.
fn rewrite_html(body: &str, page: &Url, map: &dyn LinkMap) -> String {
    let mut out = String::with_capacity(body.len() + body.len() / 4);
    let mut rest = body;
    while let Some(at) = find_href(rest) {
        let (before, after) = rest.split_at(at.value_start);
        out.push_str(before);
        let value = &after[..at.value_len];
        let unescaped = value.replace("&amp;", "&");
        match rewrite_link(page, &unescaped, None, map) {
            Some(new) => out.push_str(&new.replace('&', "&amp;").replace('"', "&quot;")),
            None => out.push_str(value),
        }
        rest = &after[at.value_len..];
    }
    out.push_str(rest);
    out
}

struct HrefAt {
    value_start: usize,
    value_len: usize,
}

/// The next `href="..."` or `href='...'` attribute value. Looks at each byte
/// of `s` at most a few times whatever the number of links: a page is
/// rewritten in time linear in its size (it may be `METADATA_MAX_BYTES` with
/// tens of thousands of links), so nothing here copies or lowercases the
/// rest of the page per link.
fn find_href(s: &str) -> Option<HrefAt> {
    let bytes = s.as_bytes();
    let mut from = 0;
    while let Some(i) = bytes[from..].windows(4).position(|w| w.eq_ignore_ascii_case(b"href")) {
        let start = from + i;
        from = start + 4;
        // Only as an attribute name: preceded by whitespace.
        if start > 0 && !bytes[start - 1].is_ascii_whitespace() {
            continue;
        }
        let after = s[from..].trim_start();
        let Some(after_eq) = after.strip_prefix('=') else { continue };
        let value = after_eq.trim_start();
        let quote = match value.chars().next() {
            Some(q @ ('"' | '\'')) => q,
            _ => continue,
        };
        let value_start = s.len() - value.len() + 1;
        let value_len = s[value_start..].find(quote)?;
        return Some(HrefAt { value_start, value_len });
    }
    None
}

/// Rewrites `files[].url` of a PEP 691 page; everything else is kept.
fn rewrite_json(body: &[u8], page: &Url, map: &dyn LinkMap) -> Result<Vec<u8>, String> {
    let mut doc: Value = serde_json::from_slice(body).map_err(|e| format!("not a PEP 691 document: {e}"))?;
    if let Some(files) = doc.get_mut("files").and_then(Value::as_array_mut) {
        for file in files {
            let expected =
                file.pointer("/hashes/sha256").and_then(Value::as_str).and_then(Expected::sha256_hex);
            if let Some(url) = file.get_mut("url") {
                if let Some(new) = url.as_str().and_then(|u| rewrite_link(page, u, expected, map)) {
                    *url = Value::String(new);
                }
            }
        }
    }
    serde_json::to_vec(&doc).map_err(|e| e.to_string())
}

impl Configured for Pypi {
    fn keys(&self) -> &'static [&'static str] {
        &["pypi_files_url", "pypi_files_remote"]
    }

    fn remote_keys(&self) -> &'static [&'static str] {
        &["pypi_files_remote"]
    }

    fn read(&self, keys: &mut dyn KeyReader) -> Own {
        Own {
            options: FormatOptions::default(),
            files: files_rewrite(keys, "pypi_files_url", "pypi_files_remote"),
        }
    }
}

#[cfg(test)]
mod tests;
