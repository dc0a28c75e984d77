//! The contract between a format and the layers: a [`Spec`] (what the
//! format is, as data), the one question every format answers
//! ([`Format::classify`]), and capabilities a format has or has not. A
//! layer asks for the capability it needs (`format.integrity()`) and acts
//! only when the format has it; a capability's methods have no defaults,
//! so a format that takes one on answers all of what it asks.
//!
//! | capability | asked by | what it answers |
//! |---|---|---|
//! | [`Documents`] | rewrite, fills, read-through | which paths are documents the proxy rewrites; which document lists a file |
//! | [`Integrity`] | read-through | which record vouches for a file, and what it says |
//! | [`Relocation`] | read-through | where upstream really serves a file, from a document |
//! | [`Routes`] | resolve, upstream | paths asked of upstream elsewhere, or answered without it |
//! | [`Freshness`] | fills, lookup, revalidation | what a new version expires, what an expired entry is served with, headers the format owns |
//! | [`Grouping`] | groups | which document owns a package name; which documents merge, and how |
//! | [`Versions`] | policy | publish times, listed versions, filtering |
//! | [`Configured`](super::options::Configured) | configuration | the format's own `remotes.yaml` keys |

use http::{Response, StatusCode};
use url::Url;

use super::{options::Configured, version::Scheme, Document, Listed, Part, PathKind};
use crate::{
    body::ArtifactBody, digest::Expected, error::json_error, path::ArtifactPath, problem::Problem,
    remote::Remote,
};

/// What a format is, as data.
#[derive(Debug)]
pub struct Spec {
    /// The `package:` value in `remotes.yaml`.
    pub name: &'static str,
    /// Patterns (Python `re.search` syntax) of paths that change upstream:
    /// mutable whatever the user's patterns say.
    pub mutable: &'static [&'static str],
    /// Whether [`Format::classify`] can name this format's files at all: a
    /// policy on a format that cannot is refused by the configuration check
    /// (it would refuse every file).
    pub names_files: bool,
    /// Whether a remote's `immutable_patterns` gate every request (a
    /// registry's image names: a denied image is denied whole, tag
    /// manifests included) instead of classifying immutable paths.
    pub patterns_gate_every_path: bool,
    /// Where its remotes are served.
    pub served_at: ServedAt,
    /// Whether its remotes can be members of a group.
    pub grouping: Groupable,
    /// How it orders versions (policy ranges, "the newest").
    pub scheme: Scheme,
    /// How it compares package names; `None`: as written.
    pub normalize: Option<fn(&str) -> String>,
    /// Its ecosystem's name in OSV records, where OSV has one.
    pub osv_ecosystem: Option<&'static str>,
    /// The shape of its error answers.
    pub errors: Errors,
}

impl Spec {
    /// A format of plain files called `name`: no patterns of its own, names
    /// no files, served at `/api/`, groupable, semantic versions, JSON
    /// errors. Formats start from it and change what differs.
    pub const fn plain(name: &'static str) -> Self {
        Self {
            name,
            mutable: &[],
            names_files: false,
            patterns_gate_every_path: false,
            served_at: ServedAt::Api,
            grouping: Groupable::Yes,
            scheme: Scheme::Semver,
            normalize: None,
            osv_ecosystem: None,
            errors: Errors::Json,
        }
    }

    /// `name` as this format compares names (PyPI: PEP 503).
    pub fn normalize(&self, name: &str) -> String {
        match self.normalize {
            Some(normalize) => normalize(name),
            None => name.to_owned(),
        }
    }

    /// The answer to an error raised for one of this format's requests.
    /// (The rescue adds `Retry-After` and `Allow`.)
    pub fn error_answer(&self, problem: &Problem<'_>) -> Response<ArtifactBody> {
        match self.errors {
            Errors::Json => json_error(problem.status, &problem.message, problem.remote, problem.path),
            Errors::Own(answer) => answer(problem),
        }
    }
}

/// Where a format's remotes are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedAt {
    /// At `/api/{remote}/...`.
    Api,
    /// At `/v2/` (a container registry; `/api/{remote}/` too, unrouted).
    Registry,
}

/// Whether a format's remotes can be grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Groupable {
    /// They can.
    Yes,
    /// They cannot, for this reason (a sentence naming the format's kind of
    /// remote, as the configuration check says it).
    No(&'static str),
}

/// The shape of a format's error answers.
#[derive(Clone, Copy)]
pub enum Errors {
    /// The JSON body `{"error", "remote", "path"}` with the problem's status.
    Json,
    /// The format's own (a registry's `{"errors": [...]}`).
    Own(fn(&Problem<'_>) -> Response<ArtifactBody>),
}

impl std::fmt::Debug for Errors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Errors::Json => "Json",
            Errors::Own(_) => "Own",
        })
    }
}

/// The accessors of the capabilities a format implements on itself, inside
/// its `impl Format`: `capabilities!(documents, integrity);` answers
/// `Some(self)` from [`Format::documents`] and [`Format::integrity`].
#[macro_export]
macro_rules! capabilities {
    ($($capability:ident),* $(,)?) => { $( $crate::capabilities!(@one $capability); )* };
    (@one documents) => { fn documents(&self) -> Option<&dyn $crate::format::Documents> { Some(self) } };
    (@one integrity) => { fn integrity(&self) -> Option<&dyn $crate::format::Integrity> { Some(self) } };
    (@one relocation) => { fn relocation(&self) -> Option<&dyn $crate::format::Relocation> { Some(self) } };
    (@one routes) => { fn routes(&self) -> Option<&dyn $crate::format::Routes> { Some(self) } };
    (@one freshness) => { fn freshness(&self) -> Option<&dyn $crate::format::Freshness> { Some(self) } };
    (@one grouping) => { fn grouping(&self) -> Option<&dyn $crate::format::Grouping> { Some(self) } };
    (@one versions) => { fn versions(&self) -> Option<&dyn $crate::format::Versions> { Some(self) } };
    (@one configured) => {
        fn configured(&self) -> Option<&dyn $crate::format::options::Configured> { Some(self) }
    };
}

/// A package format: a [`Spec`], what it makes of a path, and the
/// capabilities it has. A capability it does not have answers `None`.
pub trait Format: Send + Sync + 'static {
    /// What the format is.
    fn spec(&self) -> &'static Spec;

    /// What `path` is: a metadata document (an index, a listing, a
    /// format's sidecars, signatures and checksums), a file of one version
    /// of a named package, or neither ([`PathKind`]). The query string is
    /// never part of the answer. A policy judges files by their package and
    /// version and refuses what is neither (fail closed); groups decide by
    /// the package name which member answers.
    fn classify(&self, path: &ArtifactPath) -> PathKind;

    /// Documents it rewrites so that the files they name come back here.
    fn documents(&self) -> Option<&dyn Documents> {
        None
    }

    /// Records that vouch for its files.
    fn integrity(&self) -> Option<&dyn Integrity> {
        None
    }

    /// Files upstream serves where a document says, not under `base_url`.
    fn relocation(&self) -> Option<&dyn Relocation> {
        None
    }

    /// Paths asked of upstream under another path or URL, or answered here.
    fn routes(&self) -> Option<&dyn Routes> {
        None
    }

    /// Freshness rules beyond the remote's lifetimes.
    fn freshness(&self) -> Option<&dyn Freshness> {
        None
    }

    /// How a group's members share its packages.
    fn grouping(&self) -> Option<&dyn Grouping> {
        None
    }

    /// What a policy reads: versions, publish times, filtering.
    fn versions(&self) -> Option<&dyn Versions> {
        None
    }

    /// Its own `remotes.yaml` keys.
    fn configured(&self) -> Option<&dyn Configured> {
        None
    }
}

/// Documents the proxy rewrites.
pub trait Documents: Send + Sync {
    /// The document at `path`, if it is one this format rewrites.
    fn document(&self, path: &ArtifactPath) -> Option<&'static dyn Document>;

    /// The document of `lister` (a remote of this format) that lists the
    /// file at `path` on `remote` and promises its digest, if any. Once a
    /// new file appears, that document's variants are marked expired (so a
    /// fresh publish is seen at once); when a file is fetched with no
    /// promise in memory (after a restart, or after the client's copy of the
    /// document was answered 304), the document is read through the cache
    /// first, so the file is still checked.
    fn listed_in(&self, lister: &Remote, remote: &Remote, path: &ArtifactPath) -> Option<ArtifactPath>;
}

/// Records that vouch for files.
pub trait Integrity: Send + Sync {
    /// The records on `remote` that may vouch for the file at `path`, if
    /// the file is checked against one (Go: the checksum database's lookup
    /// record of a module version, for its `.zip` and `.mod`; Cargo: the
    /// crate's index file; Maven: the `.sha1` or `.sha256` beside the
    /// file). When the file is not cached and no digest for it is in memory,
    /// the first record upstream has is read through the cache and the file
    /// checked against [`vouches`](Integrity::vouches) before it is stored.
    /// Records upstream does not have (404, 410) leave the file unchecked;
    /// one that cannot be read fails the file.
    fn vouched_by(&self, remote: &Remote, path: &ArtifactPath) -> Vec<ArtifactPath>;

    /// What `record` (read at [`vouched_by`](Integrity::vouched_by)) says
    /// the file at `path` hashes to; an error says why it does not vouch
    /// for it (and the file is refused).
    fn vouches(&self, record: &[u8], path: &ArtifactPath) -> Result<Expected, String>;
}

/// Files served where a document says.
pub trait Relocation: Send + Sync {
    /// The document on the same remote that says where upstream serves the
    /// file at `path`, when that is not `path` under `base_url` (Cargo:
    /// `config.json`, whose `dl` template names the downloads). It is read
    /// through the cache, as upstream sent it, before the file is fetched.
    fn located_by(&self, path: &ArtifactPath) -> Option<ArtifactPath>;

    /// Where upstream serves the file at `path` (an absolute URL, or one
    /// relative to `base_url`), from `document` (upstream's bytes at
    /// [`located_by`](Relocation::located_by)) and what the record vouches
    /// for the file. The remote's credentials go there only when it is on
    /// the remote's own origin; the egress rules apply as to a redirect.
    fn locate(
        &self,
        document: &[u8],
        path: &ArtifactPath,
        vouched: Option<&Expected>,
    ) -> Result<String, String>;
}

/// Paths that do not map one to one onto `base_url`.
pub trait Routes: Send + Sync {
    /// The path asked of upstream for `path`, when it is not `path` itself
    /// (a registry's `v2/{name}/...` for `{name}/...`). It is joined to the
    /// remote's `base_url` with the same checks.
    fn upstream_path(&self, path: &ArtifactPath) -> Option<ArtifactPath>;

    /// A path the format answers itself, with this status and no body,
    /// before the cache or upstream is asked (Go: a checksum database's
    /// `supported`). A status that is not a success is answered as an error
    /// in the format's shape.
    fn answers_itself(&self, remote: &Remote, path: &ArtifactPath) -> Option<StatusCode>;

    /// A path fetched from another upstream than the remote's `base_url`:
    /// that base and the path under it (Go: the checksum database the remote
    /// passes through). The remote's credentials are not sent there.
    fn fetched_elsewhere<'r>(
        &self,
        remote: &'r Remote,
        path: &ArtifactPath,
    ) -> Option<(&'r Url, ArtifactPath)>;
}

/// Freshness rules of the format's own.
pub trait Freshness: Send + Sync {
    /// When a new version of the mutable file at `path` replaces one with
    /// other bytes: the directory (with its trailing `/`, empty for the
    /// root) whose other mutable entries are out of date with it and are
    /// expired, to be fetched again (apt: a release file and the index files
    /// it lists).
    fn new_version_expires_under<'p>(&self, path: &'p ArtifactPath) -> Option<&'p str>;

    /// For an expired entry at `path` on `remote`: the cache keys of the
    /// documents it was fetched as a pair with, nearest first. While the
    /// first of them in the cache is fresh and not newer than the entry, the
    /// entry is served as it is (apt: an index file and the release file
    /// that lists its hashes, or apt reports "Hash Sum mismatch").
    fn served_as_long_as(&self, remote: &str, path: &ArtifactPath) -> Vec<String>;

    /// Whether clients check the `ETag` of the file at `path` as the quoted
    /// MD5 of its whole bytes (RubyGems' compact index): the cache stores
    /// that `ETag` with the file instead of upstream's, and a miss is
    /// answered without one.
    fn etag_is_md5_of_body(&self, path: &ArtifactPath) -> bool;
}

/// How a group's members share the format's packages.
pub trait Grouping: Send + Sync {
    /// The document that lists the versions of the package the file at
    /// `path` belongs to (npm: the packument; PyPI: the project's page; Go:
    /// `@v/list`; Cargo: the index file; Maven: the artifact's
    /// `maven-metadata.xml`); for such a document, itself. A group with
    /// `resolve: first` asks its members for it, in order: the first that
    /// has it owns the name, and only it is asked for the name's files.
    fn owner_document(&self, path: &ArtifactPath) -> Option<ArtifactPath>;

    /// Whether the document at `path` is merged across the members of a
    /// group with `resolve: merge` (else the first member that has it
    /// answers).
    fn merges(&self, path: &ArtifactPath) -> bool;

    /// The members' answers for the document at `path` (each as that member
    /// answered it, links already pointing at the member), merged: where
    /// they share a version or a file, the earliest member's wins. An error
    /// says why one of them is not this format's document.
    fn merge(&self, path: &ArtifactPath, parts: &[Part<'_>]) -> Result<Vec<u8>, String>;
}

/// What a policy reads of the format's metadata.
pub trait Versions: Send + Sync {
    /// Whether the document at `path` lists versions that a policy filters.
    fn lists_versions(&self, path: &ArtifactPath) -> bool;

    /// The versions the document at `path` lists (`json`: its
    /// `Content-Type` said JSON), and how many of its entries name no
    /// version this format can read (a file of an unknown kind on a PyPI
    /// page): a policy hides those rather than keep what it cannot judge.
    fn listed_versions(&self, path: &ArtifactPath, body: &[u8], json: bool) -> Option<Listed>;

    /// The document at `path` listing only the entries `keep` says yes to:
    /// `keep(Some(version))` for an entry of a version, `keep(None)` for one
    /// whose version cannot be read (npm moves a `dist-tag` off a hidden
    /// version).
    fn filter_versions(
        &self,
        path: &ArtifactPath,
        body: &[u8],
        json: bool,
        keep: &dyn Fn(Option<&str>) -> bool,
    ) -> Result<Vec<u8>, String>;

    /// Where the publish times of the package at `path` are, and the
    /// `Accept` to ask for them with: one document for every version
    /// (`version` is `None`: npm's full packument, PyPI's JSON page), or
    /// one per version (Go's `.info`). `None`: this format's metadata gives
    /// no publish times, and a policy's `min_release_age` cannot be kept.
    fn times_document(
        &self,
        path: &ArtifactPath,
        version: Option<&str>,
    ) -> Option<(ArtifactPath, &'static str)>;

    /// Whether [`times_document`](Versions::times_document) ever answers:
    /// whether a `min_release_age` can be enforced at all.
    fn publish_times(&self) -> bool;

    /// The publish times (Unix milliseconds) by version in a document of
    /// [`times_document`](Versions::times_document).
    fn publish_times_in(&self, body: &[u8]) -> Vec<(String, i64)>;

    /// For a document that names the newest version (Go's `@latest`): the
    /// document listing every version, to pick the newest the policy lets
    /// through instead.
    fn latest_list(&self, path: &ArtifactPath) -> Option<ArtifactPath>;
}

impl dyn Format {
    /// The `package:` value in `remotes.yaml`.
    pub fn name(&self) -> &'static str {
        self.spec().name
    }

    /// The package `path` belongs to, from [`classify`](Format::classify):
    /// its name, and its version when the path is one version's file.
    pub fn coordinates(&self, path: &ArtifactPath) -> Option<super::Coordinates> {
        self.classify(path).coordinates()
    }

    /// The document at `path`, if the format rewrites it.
    pub fn document(&self, path: &ArtifactPath) -> Option<&'static dyn Document> {
        self.documents()?.document(path)
    }
}
