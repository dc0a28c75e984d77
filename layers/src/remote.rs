//! A compiled remote: where it fetches from, what it allows, how long it keeps.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, RwLock},
    time::Duration,
};

use url::Url;

pub use crate::format::Package;
use crate::{
    pattern::{Class, Classifier, Pattern},
    store::EntryClass,
};

/// Whether a remote proxies an upstream or stores its own artifacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteKind {
    /// A caching proxy of `base_url`.
    Remote {
        /// The upstream every path of this remote is fetched from.
        base_url: Url,
    },
    /// A local repository: artifacts are uploaded, never fetched.
    Local,
    /// A group: one URL over other remotes of the same package type.
    Group(Group),
}

/// A group's members, in order, and how their answers combine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The members, first first.
    pub members: Vec<Member>,
    /// How their answers combine.
    pub resolve: Resolve,
}

/// How a group's members answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Resolve {
    /// For each package name, the first member (in order, among those
    /// allowed for the name) whose metadata knows it answers for that name
    /// alone: later members are never asked about it (no dependency
    /// confusion).
    #[default]
    First,
    /// Metadata is merged across the members (the earliest member wins a
    /// version or file they share); files come from the first member that
    /// has them.
    Merge,
}

impl Resolve {
    /// The name in `remotes.yaml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolve::First => "first",
            Resolve::Merge => "merge",
        }
    }
}

/// One member of a group, and the package names it may answer.
#[derive(Debug, Clone)]
pub struct Member {
    /// The member remote's name.
    pub remote: String,
    /// When not empty, only names one of these matches are asked of it.
    pub only_names: Vec<Pattern>,
    /// Names one of these matches are never asked of it.
    pub except_names: Vec<Pattern>,
}

impl PartialEq for Member {
    fn eq(&self, other: &Self) -> bool {
        let sources = |p: &[Pattern]| p.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>();
        self.remote == other.remote
            && sources(&self.only_names) == sources(&other.only_names)
            && sources(&self.except_names) == sources(&other.except_names)
    }
}

impl Eq for Member {}

impl Member {
    /// A member that may answer every name.
    pub fn new(remote: impl Into<String>) -> Self {
        Self { remote: remote.into(), only_names: Vec::new(), except_names: Vec::new() }
    }

    /// Whether this member may answer for the package `name` (`None`: a
    /// path of no package, which every member may answer). The patterns
    /// are compiled anchored (`^(?:...)$`: a name matches whole); one that
    /// cannot be evaluated counts as a match for `except_names` and as no
    /// match for `only_names`.
    pub fn allows(&self, name: Option<&str>) -> bool {
        let Some(name) = name else { return true };
        (self.only_names.is_empty() || self.only_names.iter().any(|p| p.is_match(name).unwrap_or(false)))
            && !self.except_names.iter().any(|p| p.is_match(name).unwrap_or(true))
    }
}

/// Upstream credentials. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"***").finish()
    }
}

/// TLS to a remote's upstream beyond the system's trusted roots (`tls:`):
/// the PEM bytes of the files it names, read at start-up and at each reload.
/// `Debug` shows the files, never the key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// More trusted roots (`tls.ca_file`), added to the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate chain followed by its private key
    /// (`tls.client_cert`, `tls.client_key`), for mutual TLS.
    pub identity_pem: Option<Vec<u8>>,
    /// The files, as written, for messages.
    pub files: String,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls").field("files", &self.files).finish_non_exhaustive()
    }
}

/// How long entries stay fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl {
    /// For immutable paths; `None` keeps them forever.
    pub immutable: Option<Duration>,
    /// For mutable paths; zero checks upstream on every request.
    pub mutable: Duration,
    /// How long an upstream 404 is remembered.
    pub negative: Duration,
}

impl Default for Ttl {
    fn default() -> Self {
        Self { immutable: None, mutable: Duration::from_secs(3600), negative: Duration::from_secs(30) }
    }
}

impl Ttl {
    /// How long an entry of `class` stays fresh (`None`: forever).
    pub fn for_class(&self, class: Class) -> Option<Duration> {
        match class {
            Class::Immutable => self.immutable,
            Class::Mutable { .. } => Some(self.mutable),
        }
    }

    /// When a stored entry of `class`, refreshed at `now_ms`, expires next.
    pub fn expiry(&self, class: EntryClass, now_ms: i64) -> Option<i64> {
        let ttl = match class {
            EntryClass::Immutable => self.immutable,
            EntryClass::Mutable => Some(self.mutable),
            EntryClass::Local => None,
        };
        ttl.map(|d| now_ms.saturating_add(d.as_millis() as i64))
    }
}

/// Where a package type's metadata points its files, and which remote of ours
/// serves them instead (PyPI `pypi_files_*`, npm `npm_files_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesRewrite {
    /// The URL prefix written in upstream metadata.
    pub url: String,
    /// The name of the remote that serves those files through this proxy.
    pub remote: String,
}

/// A remote, compiled from configuration once at start-up.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The name in paths (`/api/{name}/...`).
    pub name: String,
    /// Proxy of an upstream, or local repository.
    pub kind: RemoteKind,
    /// The package type.
    pub package: Package,
    /// Free text for people.
    pub description: String,
    /// The compiled patterns.
    pub classifier: Classifier,
    /// Freshness lifetimes.
    pub ttl: Ttl,
    /// Revalidate expired user-mutable entries with a conditional request.
    pub check_mutable_updates: bool,
    /// Credentials sent to this remote's upstream host only.
    pub credentials: Option<Credentials>,
    /// TLS to this remote's upstream host (and a registry's token realm).
    pub tls: Option<Arc<UpstreamTls>>,
    /// Metadata file-URL rewriting for PyPI and npm.
    pub files: Option<FilesRewrite>,
    /// Its format's options, from the format's own `remotes.yaml` keys
    /// (read back with [`Remote::options`]).
    pub format_options: crate::format::options::FormatOptions,
    /// The most this remote's entries may take (`cache.max_bytes`).
    pub max_bytes: Option<u64>,
    /// Supply-chain policy (`policy:`).
    pub policy: Option<Arc<crate::policy::Policy>>,
}

impl Remote {
    /// A remote named `name` proxying `base_url`, allowing every path, with
    /// default lifetimes: the starting point for tests and examples.
    pub fn proxy(name: &str, base_url: Url) -> Self {
        Self {
            name: name.to_owned(),
            kind: RemoteKind::Remote { base_url },
            package: Package::GENERIC,
            description: String::new(),
            classifier: Classifier::default(),
            ttl: Ttl::default(),
            check_mutable_updates: false,
            credentials: None,
            tls: None,
            files: None,
            format_options: Default::default(),
            max_bytes: None,
            policy: None,
        }
    }

    /// The upstream base URL, for a proxying remote.
    pub fn base_url(&self) -> Option<&Url> {
        match &self.kind {
            RemoteKind::Remote { base_url } => Some(base_url),
            RemoteKind::Local | RemoteKind::Group(_) => None,
        }
    }
}

/// All remotes by name.
#[derive(Debug, Clone, Default)]
pub struct Remotes {
    by_name: BTreeMap<String, Arc<Remote>>,
}

impl Remotes {
    /// A table of `remotes`; a later remote of the same name replaces an earlier one.
    pub fn new(remotes: impl IntoIterator<Item = Remote>) -> Self {
        Self { by_name: remotes.into_iter().map(|r| (r.name.clone(), Arc::new(r))).collect() }
    }

    /// The remote called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Remote>> {
        self.by_name.get(name)
    }

    /// Every remote, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Remote>> {
        self.by_name.values()
    }
}

/// The remotes in force, replaceable while requests run (a configuration
/// reload). Cheap to clone: clones share the one table. A request resolves
/// its remote once and keeps it, so a reload never changes a request midway.
#[derive(Debug, Clone, Default)]
pub struct SharedRemotes(Arc<RwLock<Arc<Remotes>>>);

impl SharedRemotes {
    /// A table in force now.
    pub fn new(remotes: Arc<Remotes>) -> Self {
        Self(Arc::new(RwLock::new(remotes)))
    }

    /// The remotes in force.
    pub fn load(&self) -> Arc<Remotes> {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Puts `remotes` in force for every request from now on.
    pub fn replace(&self, remotes: Arc<Remotes>) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = remotes;
    }
}

impl From<Arc<Remotes>> for SharedRemotes {
    fn from(remotes: Arc<Remotes>) -> Self {
        Self::new(remotes)
    }
}
