//! Package formats: everything the proxy knows about one kind of repository,
//! in one module per format behind one trait.
//!
//! (Over 400 lines: the trait is the formats' one contract, and its
//! defaulted hooks are documented where they are declared; splitting it
//! would scatter that contract.)
//!
//! A remote's `package:` names its format. The format says which of its
//! paths change upstream (its built-in mutable patterns), whether its
//! patterns gate every request of a package (a registry's image names),
//! which package and version a path belongs to ([`Coordinates`]), which
//! paths are metadata documents, which variants a document has and how a
//! client's `Accept` picks one, how a document is rewritten so that the
//! files it names come back through this proxy (and which digests it
//! promises for them), which document lists a file (marked expired when a
//! new file appears; read through the cache for its promises when none is
//! in memory), what a new version of a file makes out of date and what an
//! expired entry is served with (apt's release consistency), the path asked
//! of upstream, and the shape of its error answers. The layers ask the
//! remote's format; none of them names a format.
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
//! | `go` | `@v/list`, `@latest`, `.info` of a query | module (decoded), version | none; `.zip` and `.mod` checked against the checksum database's lookup record ([`Format::vouched_by`]) | JSON |
//! | `cargo` | `config.json`, index files | crate, version | `config.json` (`dl` pointed here, `api` removed); a download fetched from upstream's `dl` ([`Format::locate`]) and checked against its index line's `cksum` | JSON |
//! | `maven` | `maven-metadata.xml` and its checksums, `-SNAPSHOT` files | `groupId:artifactId`, version | none; an artifact checked against its `.sha1` (or `.sha256`); metadata checksums kept in step with the metadata | JSON |
//! | `rubygems` | `versions`, `names`, `info/*`, `specs.4.8.gz` files | gem, version | none; compact index `ETag`s are MD5s; a `.gem` checked against its `info` line's `checksum` | JSON |
//! | `helm` | `index.yaml` | chart, version | `index.yaml` (chart URLs pointed here; `digest` promised) | JSON |
//! | `terraform` | `index.json` | `namespace/type`, version | a provider network mirror composed from the registry protocol | JSON |
//!
//! # How to add a format
//!
//! 1. Write a module here with a unit struct that implements [`Format`]: its
//!    [`name`](Format::name) (the `package:` value), how it
//!    [`classify`](Format::classify)s a path (metadata, a file of a named
//!    version, or neither: what a policy refuses) and whether it
//!    [`names_files`](Format::names_files) at all, and whatever of the
//!    defaulted methods applies to it, with unit tests for its built-in
//!    patterns, its classification and its metadata detection.
//! 2. Add it to [`BUILTIN`] (one line). [`Formats::register`] adds one at
//!    run time instead, as the test at the end of this file does with a toy
//!    format.
//!
//! Nothing else changes: configuration parsing looks formats up by name, and
//! the layers ask the remote's format.

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

use std::{fmt, sync::Arc};

use http::{Response, StatusCode};
use url::Url;

use crate::{
    body::ArtifactBody,
    budget::{DocumentBudget, Exceeded},
    digest::Expected,
    error::json_error,
    path::{ArtifactPath, KEY_SEPARATOR},
    policy::Scheme,
    remote::{Remote, Remotes},
    rescue::Problem,
};

/// What a package format knows. Every method but [`Format::name`] has a
/// default that suits a format of plain files.
pub trait Format: Send + Sync + 'static {
    /// The `package:` value in `remotes.yaml`.
    fn name(&self) -> &'static str;

    /// Patterns (Python `re.search` syntax) of paths that change upstream:
    /// mutable whatever the user's patterns say.
    fn builtin_mutable(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether a remote's `immutable_patterns` gate every request (a
    /// registry's image names: a denied image is denied whole, tag
    /// manifests included) instead of classifying immutable paths.
    fn patterns_gate_every_path(&self) -> bool {
        false
    }

    /// Whether the format is a container registry, served at `/v2/` rather
    /// than at `/api/{remote}/...`.
    fn is_registry(&self) -> bool {
        false
    }

    /// Which `remotes.yaml` keys of this format's own a remote may set,
    /// beyond the common ones.
    fn own_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// What `path` is: a metadata document (an index, a listing, a
    /// format's sidecars, signatures and checksums), a file of one version
    /// of a named package, or neither ([`PathKind`]). The query string is
    /// never part of the answer. A policy judges files by their package and
    /// version and refuses what is neither (fail closed); groups decide by
    /// the package name which member answers.
    fn classify(&self, path: &ArtifactPath) -> PathKind;

    /// Whether [`classify`](Format::classify) can name this format's files
    /// at all: a policy on a format that cannot is refused by the
    /// configuration check (it would refuse every file).
    fn names_files(&self) -> bool;

    /// The package `path` belongs to, from [`classify`](Format::classify):
    /// its name, and its version when the path is one version's file.
    fn coordinates(&self, path: &ArtifactPath) -> Option<Coordinates> {
        self.classify(path).coordinates()
    }

    /// The metadata document at `path`, if it is one this format rewrites.
    fn document(&self, _path: &ArtifactPath) -> Option<&'static dyn Document> {
        None
    }

    /// The path asked of upstream for `path`, when it is not `path` itself
    /// (a registry's `v2/{name}/...` for `{name}/...`). It is joined to the
    /// remote's `base_url` with the same checks.
    fn upstream_path(&self, _path: &ArtifactPath) -> Option<ArtifactPath> {
        None
    }

    /// A path the format answers itself, with this status and no body,
    /// before the cache or upstream is asked (Go: a checksum database's
    /// `supported`). A status that is not a success is answered as an error
    /// in the format's shape.
    fn answers_itself(&self, _remote: &Remote, _path: &ArtifactPath) -> Option<StatusCode> {
        None
    }

    /// A path fetched from another upstream than the remote's `base_url`:
    /// that base and the path under it (Go: the checksum database the remote
    /// passes through). The remote's credentials are not sent there.
    fn fetched_elsewhere<'r>(
        &self,
        _remote: &'r Remote,
        _path: &ArtifactPath,
    ) -> Option<(&'r Url, ArtifactPath)> {
        None
    }

    /// The answer to an error raised for one of this format's requests: by
    /// default the JSON body `{"error", "remote", "path"}` with the
    /// problem's status. (The rescue adds `Retry-After` and `Allow`.)
    fn error_answer(&self, problem: &Problem<'_>) -> Response<ArtifactBody> {
        json_error(problem.status, &problem.message, problem.remote, problem.path)
    }

    /// When a new version of the mutable file at `path` replaces one with
    /// other bytes: the directory (with its trailing `/`, empty for the
    /// root) whose other mutable entries are out of date with it and are
    /// expired, to be fetched again (apt: a release file and the index files
    /// it lists).
    fn replacement_expires_under<'p>(&self, _path: &'p ArtifactPath) -> Option<&'p str> {
        None
    }

    /// For an expired entry at `path` on `remote`: the cache keys of the
    /// documents it was fetched as a pair with, nearest first. While the
    /// first of them in the cache is fresh and not newer than the entry, the
    /// entry is served as it is (apt: an index file and the release file
    /// that lists its hashes, or apt reports "Hash Sum mismatch").
    fn paired_with(&self, _remote: &str, _path: &ArtifactPath) -> Vec<String> {
        Vec::new()
    }

    /// The document of `lister` (a remote of this format) that lists the
    /// file at `path` on `remote` and promises its digest, if any. Once a
    /// new file appears, that document's variants are marked expired (so a
    /// fresh publish is seen at once); when a file is fetched with no
    /// promise in memory (after a restart, or after the client's copy of the
    /// document was answered 304), the document is read through the cache
    /// first, so the file is still checked.
    fn listed_in(&self, _lister: &Remote, _remote: &Remote, _path: &ArtifactPath) -> Option<ArtifactPath> {
        None
    }

    /// The records on `remote` that may vouch for the file at `path`, if
    /// the file is checked against one (Go: the checksum database's lookup
    /// record of a module version, for its `.zip` and `.mod`; Cargo: the
    /// crate's index file; Maven: the `.sha1` or `.sha256` beside the
    /// file). When the file is not cached and no digest for it is in memory,
    /// the first record upstream has is read through the cache and the file
    /// checked against [`vouches`](Format::vouches) before it is stored.
    /// Records upstream does not have (404, 410) leave the file unchecked;
    /// one that cannot be read fails the file.
    fn vouched_by(&self, _remote: &Remote, _path: &ArtifactPath) -> Vec<ArtifactPath> {
        Vec::new()
    }

    /// What the record read at [`vouched_by`](Format::vouched_by) says the
    /// file at `path` hashes to; an error says why the record does not
    /// vouch for it (and the file is refused).
    fn vouches(&self, _record: &[u8], _path: &ArtifactPath) -> Result<Expected, String> {
        Err("this format keeps no records".into())
    }

    /// The document that lists the versions of the package the file at
    /// `path` belongs to (npm: the packument; PyPI: the project's page; Go:
    /// `@v/list`; Cargo: the index file; Maven: the artifact's
    /// `maven-metadata.xml`); for such a document, itself. A group with
    /// `resolve: first` asks its members for it, in order: the first that
    /// has it owns the name, and only it is asked for the name's files.
    fn metadata_of(&self, _path: &ArtifactPath) -> Option<ArtifactPath> {
        None
    }

    /// Whether the document at `path` is merged across the members of a
    /// group with `resolve: merge` (else the first member that has it
    /// answers).
    fn merges(&self, _path: &ArtifactPath) -> bool {
        false
    }

    /// The members' answers for the document at `path` (each as that member
    /// answered it, links already pointing at the member), merged: where
    /// they share a version or a file, the earliest member's wins. An error
    /// says why one of them is not this format's document.
    fn merge(&self, _path: &ArtifactPath, _parts: &[Part<'_>]) -> Result<Vec<u8>, String> {
        Err("this format merges no documents".into())
    }

    /// How this format orders versions (policy ranges, "the newest").
    fn version_scheme(&self) -> Scheme {
        Scheme::Semver
    }

    /// A package name as this format compares names (PyPI: PEP 503).
    fn normalize_name(&self, name: &str) -> String {
        name.to_owned()
    }

    /// Whether this format's metadata gives versions' publish times, so
    /// that a policy's `min_release_age` can be enforced.
    fn publish_times(&self) -> bool {
        false
    }

    /// Whether the document at `path` lists versions that a policy filters.
    fn lists_versions(&self, _path: &ArtifactPath) -> bool {
        false
    }

    /// The versions the document at `path` lists (`json`: its
    /// `Content-Type` said JSON), and how many of its entries name no
    /// version this format can read (a file of an unknown kind on a PyPI
    /// page): a policy hides those rather than keep what it cannot judge.
    fn listed_versions(&self, _path: &ArtifactPath, _body: &[u8], _json: bool) -> Option<Listed> {
        None
    }

    /// The document at `path` listing only the entries `keep` says yes to:
    /// `keep(Some(version))` for an entry of a version, `keep(None)` for one
    /// whose version cannot be read (npm moves a `dist-tag` off a hidden
    /// version).
    fn filter_versions(
        &self,
        _path: &ArtifactPath,
        body: &[u8],
        _json: bool,
        _keep: &dyn Fn(Option<&str>) -> bool,
    ) -> Result<Vec<u8>, String> {
        Ok(body.to_vec())
    }

    /// Where the publish times of the package at `path` are, and the
    /// `Accept` to ask for them with: one document for every version
    /// (`version` is `None`: npm's full packument, PyPI's JSON page), or
    /// one per version (Go's `.info`).
    fn times_document(
        &self,
        _path: &ArtifactPath,
        _version: Option<&str>,
    ) -> Option<(ArtifactPath, &'static str)> {
        None
    }

    /// The publish times (Unix milliseconds) by version in a document of
    /// [`times_document`](Format::times_document).
    fn publish_times_in(&self, _body: &[u8]) -> Vec<(String, i64)> {
        Vec::new()
    }

    /// For a document that names the newest version (Go's `@latest`): the
    /// document listing every version, to pick the newest the policy lets
    /// through instead.
    fn latest_list(&self, _path: &ArtifactPath) -> Option<ArtifactPath> {
        None
    }

    /// Whether clients check the `ETag` of the file at `path` as the quoted
    /// MD5 of its whole bytes (RubyGems' compact index): the cache stores
    /// that `ETag` with the file instead of upstream's, and a miss is
    /// answered without one.
    fn etag_is_md5(&self, _path: &ArtifactPath) -> bool {
        false
    }

    /// The document on the same remote that says where upstream serves the
    /// file at `path`, when that is not `path` under `base_url` (Cargo:
    /// `config.json`, whose `dl` template names the downloads). It is read
    /// through the cache, as upstream sent it, before the file is fetched.
    fn located_by(&self, _path: &ArtifactPath) -> Option<ArtifactPath> {
        None
    }

    /// Where upstream serves the file at `path` (an absolute URL, or one
    /// relative to `base_url`), from `document` (upstream's bytes at
    /// [`located_by`](Format::located_by)) and what the record vouches for
    /// the file. The remote's credentials go there only when it is on the
    /// remote's own origin; the egress rules apply as to a redirect.
    fn locate(
        &self,
        _document: &[u8],
        _path: &ArtifactPath,
        _vouched: Option<&Expected>,
    ) -> Result<String, String> {
        Err("this format's files are under its base URL".into())
    }
}

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

/// What a document listing versions lists ([`Format::listed_versions`]).
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
        self.0.iter().filter(|f| f.own_keys().contains(&key)).map(|f| f.name()).collect()
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
/// among `remotes` (see [`Format::listed_in`]).
pub fn listed_in(
    remote: &Remote,
    path: &ArtifactPath,
    remotes: &Remotes,
) -> Vec<(Arc<Remote>, ArtifactPath)> {
    remotes
        .iter()
        .filter_map(|lister| Some((lister.clone(), lister.package.format().listed_in(lister, remote, path)?)))
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
