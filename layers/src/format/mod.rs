//! Package formats: everything the proxy knows about one kind of repository,
//! in one module per format, behind one contract ([`contract`]).
//!
//! A remote's `package:` names its format. A format is a [`Spec`] (its
//! name, its built-in mutable patterns, whether it names files, whether its
//! patterns gate every path, where it is served, whether it can be grouped,
//! its version scheme and name rules, its OSV ecosystem, its error shape)
//! plus what it makes of a path ([`Format::classify`]) and the capabilities
//! it has: [`Documents`] it rewrites, [`Integrity`] records that vouch for
//! its files, [`Relocation`] of files a document places elsewhere,
//! [`Routes`] to other upstream paths, [`Freshness`] rules of its own,
//! [`Grouping`] of its packages across a group's members, [`Versions`] a
//! policy reads, and its own `remotes.yaml` keys
//! ([`Configured`](options::Configured)). The layers ask the remote's format
//! for the capability they need; none of them names a format.
//!
//! | format | built-in mutable paths | coordinates | metadata | errors |
//! |---|---|---|---|---|
//! | `generic` | none | none | none (apt's release consistency, for seed configurations) | JSON |
//! | `alpine` | `APKINDEX.tar.gz` | `{name}-{ver}-r{n}.apk` | none | JSON |
//! | `rpm` | `repomd.xml`, `repodata/*` | `{name}-{ver}-{rel}.{arch}.rpm` | none | JSON |
//! | `apt` | `InRelease`, `Release`, index files | `{name}_{ver}_{arch}.deb` | release consistency ([`apt`]) | JSON |
//! | `docker` | tag manifests, tag lists | image, tag or digest | served at `/v2/` ([`docker::door`]); patterns gate image names | registry `{"errors"}` |
//! | `pypi` | `simple/...` | project (PEP 503), version | PEP 503 HTML and PEP 691 JSON pages | JSON |
//! | `npm` | none | package, version | packuments, full and abbreviated | JSON |
//! | `go` | `@v/list`, `@latest`, `.info` of a query | module (decoded), version | none; `.zip` and `.mod` checked against the checksum database's lookup record ([`Integrity::vouched_by`]) | JSON |
//! | `cargo` | `config.json`, index files | crate, version | `config.json` (`dl` pointed here, `api` removed); a download fetched from upstream's `dl` ([`Relocation::locate`]) and checked against its index line's `cksum` | JSON |
//! | `maven` | `maven-metadata.xml` and its checksums, `-SNAPSHOT` files | `groupId:artifactId`, version | none; an artifact checked against its `.sha1` (or `.sha256`); metadata checksums kept in step with the metadata | JSON |
//! | `rubygems` | `versions`, `names`, `info/*`, `specs.4.8.gz` files | gem, version | none; compact index `ETag`s are MD5s; a `.gem` checked against its `info` line's `checksum` | JSON |
//! | `helm` | `index.yaml` | chart, version | `index.yaml` (chart URLs pointed here; `digest` promised) | JSON |
//! | `terraform` | `index.json` | `namespace/type`, version | a provider network mirror composed from the registry protocol | JSON |
//!
//! # How to add a format
//!
//! 1. Write a module here with a unit struct implementing [`Format`]: a
//!    `static` [`Spec`] (start from [`Spec::plain`] and set what differs)
//!    and [`classify`](Format::classify) (metadata, a file of a named
//!    version, or neither: what a policy refuses), with unit tests for its
//!    patterns and its classification.
//! 2. For each capability it has, implement that trait (every method: none
//!    has a default) and answer `Some(self)` from the matching method of
//!    [`Format`]. Options of its own: implement
//!    [`Configured`](options::Configured), which reads and checks its keys
//!    into a type of its own that it reads back with
//!    [`Remote::options`](crate::Remote::options).
//! 3. Add it to [`BUILTIN`] (one line). [`Formats::register`] adds one at
//!    run time instead, as the tests in `tests.rs` do with a toy format that
//!    has every capability.
//!
//! Nothing else changes: configuration parsing looks formats and their keys
//! up by name, and the layers ask the remote's format.

mod alpine;
pub mod apt;
mod cargo;
pub mod docker;
mod generic;
pub mod go;
mod helm;
mod maven;
pub mod npm;
pub mod pypi;
mod rpm;
mod rubygems;
mod terraform;

mod contract;
pub mod options;
pub mod time;
pub mod version;

pub use contract::{
    Documents, Errors, Format, Freshness, Groupable, Grouping, Integrity, Relocation, Routes, ServedAt, Spec,
    Versions,
};

use std::{fmt, sync::Arc};

use url::Url;

use crate::{
    budget::{DocumentBudget, Exceeded},
    digest::Expected,
    path::{ArtifactPath, KEY_SEPARATOR},
    remote::{Remote, Remotes},
};

/// One member's answer for a document a group merges.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// The body, as the member answered it.
    pub body: &'a [u8],
    /// Whether its `Content-Type` said JSON.
    pub json: bool,
}

/// What a path is, as its format classifies it ([`Format::classify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathKind {
    /// A metadata document: an index or listing, or a sidecar, signature or
    /// checksum of a file; of the package named, when it is one package's.
    Metadata(Option<String>),
    /// A file of one version of a package.
    File {
        /// The package's name, normalized as the format compares names.
        name: String,
        /// The version.
        version: String,
    },
    /// A path the format cannot name: refused on a remote with a policy.
    Unknown,
}

impl PathKind {
    /// Metadata of the package `name`.
    pub fn metadata_of(name: impl Into<String>) -> Self {
        PathKind::Metadata(Some(name.into()))
    }

    /// A file of `name` at `version`.
    pub fn file(name: impl Into<String>, version: impl Into<String>) -> Self {
        PathKind::File { name: name.into(), version: version.into() }
    }

    /// The package this path belongs to, if it names one.
    pub fn coordinates(self) -> Option<Coordinates> {
        match self {
            PathKind::Metadata(name) => Some(Coordinates { name: name?, version: None }),
            PathKind::File { name, version } => Some(Coordinates { name, version: Some(version) }),
            PathKind::Unknown => None,
        }
    }
}

/// What a document listing versions lists ([`Versions::listed_versions`](crate::format::Versions::listed_versions)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listed {
    /// The versions, each once.
    pub versions: Vec<String>,
    /// How many entries name no version the format can read.
    pub unversioned: usize,
}

impl Listed {
    /// `versions`, every entry read.
    pub fn versions(versions: Vec<String>) -> Self {
        Self { versions, unversioned: 0 }
    }
}

/// The package a path belongs to (see [`Format::coordinates`]), attached to
/// a resolved request as an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinates {
    /// The package's name, normalized as the format compares names (PyPI's
    /// PEP 503 form, for example).
    pub name: String,
    /// The version, for a file of one version; `None` for the package's
    /// metadata.
    pub version: Option<String>,
}

impl Coordinates {
    /// The package `name`, at `version` when given.
    pub fn new(name: impl Into<String>, version: Option<&str>) -> Self {
        Self { name: name.into(), version: version.map(str::to_owned) }
    }

    /// A file of these coordinates' version, if they name one.
    pub fn into_file(self) -> Option<PathKind> {
        Some(PathKind::File { name: self.name, version: self.version? })
    }
}

/// A metadata document: its variants, and how it is rewritten.
pub trait Document: Send + Sync + 'static {
    /// The variant a client's `Accept` asks for, and the one `Accept` header
    /// upstream is asked with for that variant (so the bytes stored for a
    /// variant do not depend on which client asked first).
    fn negotiate(&self, accept: Option<&str>) -> Negotiated;

    /// Every variant [`Document::negotiate`] may answer.
    fn variants(&self) -> &'static [&'static str];

    /// The document with the file links `links` maps rewritten; `json`
    /// tells what upstream's `Content-Type` said. An error says why the
    /// document is not one of this format's (answered 502, never cached
    /// half rewritten).
    fn rewrite(&self, body: &[u8], json: bool, page: &Url, links: &dyn LinkMap) -> Result<Vec<u8>, String>;

    /// Measures the document against `budget` before it is parsed, so that
    /// parsing it takes no more than the budget allows. The default
    /// measures JSON (what most documents are) by its nesting and values,
    /// and leaves other text to its parser, which reads it in one pass; a
    /// format whose syntax can expand (YAML aliases) measures its own.
    fn measure(&self, body: &[u8], budget: &DocumentBudget) -> Result<(), Exceeded> {
        budget.scan(body)
    }

    /// Other documents of the same remote this one is composed with (a
    /// Terraform mirror's `{version}.json`: the registry's download answer
    /// of each platform), read through the cache before
    /// [`compose`](Document::compose).
    fn needs(&self, _page: &Url, _body: &[u8]) -> Vec<ArtifactPath> {
        Vec::new()
    }

    /// The document rewritten with the documents it [`needs`](Document::needs)
    /// (`None` where one could not be read).
    fn compose(
        &self,
        body: &[u8],
        json: bool,
        page: &Url,
        links: &dyn LinkMap,
        _needed: &[(ArtifactPath, Option<bytes::Bytes>)],
    ) -> Result<Vec<u8>, String> {
        self.rewrite(body, json, page, links)
    }
}

/// A negotiated variant of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Its name, part of the cache key.
    pub variant: &'static str,
    /// The `Accept` header sent upstream for it.
    pub accept: &'static str,
}

/// Maps a link found in a document to where clients should fetch it.
pub trait LinkMap {
    /// The link as a client of the proxy should see it, or `None` to keep
    /// it; `expected` is the digest the document promises for the file.
    fn map(&self, resolved: &Url, expected: Option<Expected>) -> Option<String>;

    /// The remote whose document this is, as clients reach it on this
    /// proxy (`{external URL}/api/{remote}`).
    fn here(&self) -> Option<String> {
        None
    }
}

/// Resolves `link` against `page` and maps it; a `#sha256=` fragment counts
/// as a promised digest when none is given.
pub(crate) fn rewrite_link(
    page: &Url,
    link: &str,
    expected: Option<Expected>,
    map: &dyn LinkMap,
) -> Option<String> {
    let resolved = page.join(link).ok()?;
    let from_fragment =
        || resolved.fragment().and_then(|f| f.strip_prefix("sha256=")).and_then(Expected::sha256_hex);
    let expected = expected.or_else(from_fragment);
    map.map(&resolved, expected)
}

/// The formats this build knows, in the order they are listed to users.
pub static BUILTIN: &[&dyn Format] = &[
    &generic::Generic,
    &alpine::Alpine,
    &rpm::Rpm,
    &apt::Apt,
    &docker::Docker,
    &pypi::Pypi,
    &npm::Npm,
    &go::Go,
    &cargo::Cargo,
    &maven::Maven,
    &rubygems::RubyGems,
    &helm::Helm,
    &terraform::Terraform,
];

/// The formats a configuration may name: the built-in ones and any
/// registered besides.
#[derive(Clone)]
pub struct Formats(Vec<&'static dyn Format>);

impl Default for Formats {
    fn default() -> Self {
        Self(BUILTIN.to_vec())
    }
}

impl Formats {
    /// The built-in formats.
    pub fn builtin() -> Self {
        Self::default()
    }

    /// Adds `format` (replacing one of the same name).
    pub fn register(&mut self, format: &'static dyn Format) {
        self.0.retain(|f| f.name() != format.name());
        self.0.push(format);
    }

    /// The format called `name`.
    pub fn get(&self, name: &str) -> Option<Package> {
        self.0.iter().find(|f| f.name() == name).map(|f| Package(*f))
    }

    /// The names, for messages.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|f| f.name()).collect()
    }

    /// The names of the formats that own the `remotes.yaml` key `key`.
    pub fn owners_of(&self, key: &str) -> Vec<&'static str> {
        let owns = |f: &&&dyn Format| f.configured().is_some_and(|c| c.keys().contains(&key));
        self.0.iter().filter(owns).map(|f| f.name()).collect()
    }
}

/// A remote's package format: a handle on a [`Format`], compared by name.
#[derive(Clone, Copy)]
pub struct Package(&'static dyn Format);

impl Package {
    /// The format of plain files, the default.
    pub const GENERIC: Package = Package(&generic::Generic);

    /// A handle on `format`.
    pub fn new(format: &'static dyn Format) -> Self {
        Self(format)
    }

    /// The format.
    pub fn format(self) -> &'static dyn Format {
        self.0
    }

    /// The name used in `remotes.yaml`.
    pub fn as_str(self) -> &'static str {
        self.0.name()
    }

    /// Parses the name used in `remotes.yaml`, among the built-in formats.
    pub fn parse(name: &str) -> Option<Self> {
        Formats::builtin().get(name)
    }
}

impl Default for Package {
    fn default() -> Self {
        Self::GENERIC
    }
}

impl PartialEq for Package {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Package {}

impl fmt::Debug for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Package({})", self.as_str())
    }
}

/// The documents (remote, path) that list the file at `path` on `remote`,
/// among `remotes` (see [`Documents::listed_in`](crate::format::Documents::listed_in)).
pub fn listed_in(
    remote: &Remote,
    path: &ArtifactPath,
    remotes: &Remotes,
) -> Vec<(Arc<Remote>, ArtifactPath)> {
    remotes
        .iter()
        .filter_map(|lister| {
            let listing = lister.package.format().documents()?.listed_in(lister, remote, path)?;
            Some((lister.clone(), listing))
        })
        .collect()
}

/// The cache keys of every variant of the documents `listings` (as
/// [`listed_in`] answers).
pub fn listing_keys(listings: &[(Arc<Remote>, ArtifactPath)]) -> Vec<String> {
    let mut keys = Vec::new();
    for (lister, listing) in listings {
        if let Some(document) = lister.package.format().document(listing) {
            let base = listing.cache_key(&lister.name);
            keys.extend(document.variants().iter().map(|v| format!("{base}{KEY_SEPARATOR}{v}")));
        }
    }
    keys
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod toy;
