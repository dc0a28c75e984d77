//! A format's own `remotes.yaml` keys (Go's `go_sumdb_url`, a registry's
//! `registry_hosts`, Helm's `helm_files_remote`): the format names them,
//! reads and checks them into options of its own type, and reads those back
//! from the remote it serves. The configuration check knows none of them: it
//! hands a remote's keys that no common part reads to the format that owns
//! them ([`Configured`]) and refuses a key no format owns, or one that the
//! remote's format does not.

use std::{any::Any, fmt, sync::Arc};

use url::Url;

use crate::remote::{FilesRewrite, Remote};

/// What a format reads its keys through: the configuration check, which
/// keeps the problems found (each named `remotes.{remote}.{key}`) and checks
/// URLs as it checks every URL of the file.
pub trait KeyReader {
    /// The value written for `key`, if the remote has it.
    fn value(&self, key: &str) -> Option<&serde_yaml_ng::Value>;
    /// `value` as an upstream URL (http or https, with a host, without
    /// credentials, a query or a fragment); `None` after a problem.
    fn url(&mut self, key: &str, value: &str) -> Option<Url>;
    /// The `base_url` of the remote called `name`, as written: `None` if
    /// there is no such remote, `Some(None)` if it has no `base_url`.
    fn base_url_of(&self, name: &str) -> Option<Option<String>>;
    /// A problem with `key`.
    fn problem(&mut self, key: &str, reason: String);
}

impl dyn KeyReader + '_ {
    /// `key` as a string; a problem if it is written as anything else.
    pub fn string(&mut self, key: &str) -> Option<String> {
        match self.value(key)? {
            serde_yaml_ng::Value::String(s) => Some(s.clone()),
            other => {
                self.problem(key, format!("expected a string, not {}", kind(other)));
                None
            }
        }
    }

    /// `key` as a list of strings; a problem if it is anything else.
    pub fn strings(&mut self, key: &str) -> Option<Vec<String>> {
        let value = self.value(key)?;
        let items = match value {
            serde_yaml_ng::Value::Sequence(items) => items,
            other => {
                let reason = format!("expected a list of strings, not {}", kind(other));
                self.problem(key, reason);
                return None;
            }
        };
        let mut out = Vec::with_capacity(items.len());
        let mut wrong = None;
        for (i, item) in items.iter().enumerate() {
            match item {
                serde_yaml_ng::Value::String(s) => out.push(s.clone()),
                other => wrong = Some((i, kind(other))),
            }
        }
        match wrong {
            Some((i, what)) => {
                self.problem(&format!("{key}[{i}]"), format!("expected a string, not {what}"));
                None
            }
            None => Some(out),
        }
    }
}

fn kind(value: &serde_yaml_ng::Value) -> &'static str {
    match value {
        serde_yaml_ng::Value::Null => "null",
        serde_yaml_ng::Value::Bool(_) => "a boolean",
        serde_yaml_ng::Value::Number(_) => "a number",
        serde_yaml_ng::Value::String(_) => "a string",
        serde_yaml_ng::Value::Sequence(_) => "a list",
        serde_yaml_ng::Value::Mapping(_) => "a map",
        serde_yaml_ng::Value::Tagged(_) => "a tagged value",
    }
}

/// The capability of a format with `remotes.yaml` keys of its own.
pub trait Configured: Send + Sync {
    /// The keys, beside the common ones.
    fn keys(&self) -> &'static [&'static str];

    /// Those of [`keys`](Configured::keys) whose value names another remote
    /// of ours (one that serves the files this format's documents link to).
    fn remote_keys(&self) -> &'static [&'static str];

    /// Reads the keys the remote has set (problems go to `keys`).
    fn read(&self, keys: &mut dyn KeyReader) -> Own;
}

/// What a format made of its keys on one remote.
#[derive(Debug, Clone, Default)]
pub struct Own {
    /// The format's options, read back with [`FormatOptions::get`].
    pub options: FormatOptions,
    /// Where links in the format's documents point at files that another
    /// remote of ours serves (Helm's `helm_files_remote`), when the keys
    /// say so.
    pub files: Option<FilesRewrite>,
}

/// A format's options on a remote, of the format's own type.
#[derive(Clone, Default)]
pub struct FormatOptions(Option<Arc<dyn Any + Send + Sync>>);

impl FormatOptions {
    /// `options`, for the format that reads them back.
    pub fn new<T: Any + Send + Sync>(options: T) -> Self {
        Self(Some(Arc::new(options)))
    }

    /// The options, if they are a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.as_deref()?.downcast_ref()
    }
}

impl fmt::Debug for FormatOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "FormatOptions(..)" } else { "FormatOptions(none)" })
    }
}

impl Remote {
    /// This remote's format options, if they are a `T` (set by its format's
    /// [`Configured::read`], or by a test).
    pub fn options<T: Any>(&self) -> Option<&T> {
        self.format_options.get()
    }
}

/// More host names a registry client may name a remote by (`registry_hosts`:
/// Docker's containerd `?ns=`, Terraform's provider source addresses),
/// lower-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryHosts(pub Vec<String>);

/// `registry_hosts` as the registry formats read it ([`RegistryHosts::KEYS`]).
pub struct RegistryHostKeys;

impl Configured for RegistryHostKeys {
    fn keys(&self) -> &'static [&'static str] {
        &[RegistryHosts::KEY]
    }

    fn remote_keys(&self) -> &'static [&'static str] {
        &[]
    }

    fn read(&self, keys: &mut dyn KeyReader) -> Own {
        Own { options: RegistryHosts::read(keys).map(FormatOptions::new).unwrap_or_default(), files: None }
    }
}

impl RegistryHosts {
    /// The key.
    pub const KEY: &'static str = "registry_hosts";
    /// Its reader, for a format's [`Format::configured`](super::Format::configured).
    pub const KEYS: RegistryHostKeys = RegistryHostKeys;

    /// Reads and checks `registry_hosts`.
    pub fn read(keys: &mut dyn KeyReader) -> Option<Self> {
        let hosts = keys.strings(Self::KEY)?;
        for host in &hosts {
            let valid =
                !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
            if !valid {
                keys.problem(Self::KEY, format!("{host:?} is not a host or host:port"));
            }
        }
        Some(Self(hosts.iter().map(|h| h.to_ascii_lowercase()).collect()))
    }

    /// Whether `host` names `remote`: the host (with its port, when
    /// `base_url` gives one) of its `base_url`, or one of its
    /// `registry_hosts`. Case-insensitive.
    pub fn answers_for(remote: &Remote, host: &str) -> bool {
        let own = remote.base_url().and_then(|url| {
            let name = url.host_str()?;
            Some(match url.port() {
                Some(port) => format!("{name}:{port}"),
                None => name.to_owned(),
            })
        });
        let more = remote.options::<Self>().map(|h| h.0.as_slice()).unwrap_or_default();
        own.iter().chain(more).any(|h| h.eq_ignore_ascii_case(host))
    }
}

/// A files URL written in a format's documents and our remote that serves
/// those files (`pypi_files_url` and `pypi_files_remote`, `npm_files_url`
/// and `npm_files_remote`): both or neither, and the remote must exist.
pub fn files_rewrite(keys: &mut dyn KeyReader, url_key: &str, remote_key: &str) -> Option<FilesRewrite> {
    let url = keys.string(url_key);
    let target = keys.string(remote_key);
    if let Some(url) = &url {
        keys.url(url_key, url);
    }
    if let Some(target) = &target {
        if keys.base_url_of(target).is_none() {
            keys.problem(remote_key, format!("names no remote: {target:?}"));
        }
    }
    match (url, target) {
        (Some(url), Some(remote)) => Some(FilesRewrite { url, remote }),
        (Some(_), None) => {
            keys.problem(remote_key, format!("`{url_key}` is set without `{remote_key}`"));
            None
        }
        (None, Some(_)) => {
            keys.problem(url_key, format!("`{remote_key}` is set without `{url_key}`"));
            None
        }
        (None, None) => None,
    }
}
