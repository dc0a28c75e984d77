//! One remote as written compiled into a [`Remote`]: each key checked by a
//! short method that reports what is wrong with the remote's name, the key
//! and the reason.

use std::{collections::BTreeMap, fmt, time::Duration};

use artifactapi_layers::{
    format::{
        options::{KeyReader, Own},
        Formats,
    },
    Classifier, Credentials, Package, Pattern, Remote, RemoteKind, Ttl,
};
use url::Url;

use super::file::{CacheConfig, RemoteConfig};

/// Where the problems and warnings of one remote go.
pub(super) struct Ctx<'a> {
    pub(super) name: &'a str,
    pub(super) problems: &'a mut Vec<String>,
    pub(super) warnings: &'a mut Vec<String>,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
}

impl Ctx<'_> {
    pub(super) fn problem(&mut self, key: &str, reason: impl fmt::Display) {
        self.problems.push(format!("remotes.{}.{key}: {reason}", self.name));
    }

    fn legacy<T: Clone>(&mut self, key: &str, new: &Option<T>, old_key: &str, old: &Option<T>) -> Option<T> {
        match (new, old) {
            (Some(_), Some(_)) => {
                self.problem(
                    old_key,
                    format!("both `{key}` and its legacy name `{old_key}` are set; keep `{key}`"),
                );
                None
            }
            (None, Some(v)) => {
                self.warnings
                    .push(format!("remotes.{}.{old_key} is a legacy name; write `{key}`", self.name));
                Some(v.clone())
            }
            (v, None) => v.clone(),
        }
    }

    /// A credential as written, or `${VAR}` read from the environment (so
    /// that secrets stay out of ConfigMaps).
    fn secret(&mut self, key: &str, value: &str) -> String {
        let Some(var) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) else {
            return value.to_owned();
        };
        let valid = !var.is_empty()
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !var.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            self.problem(key, format!("`${{{var}}}` is not a valid environment variable reference"));
            return String::new();
        }
        match (self.env)(var) {
            Some(v) => v,
            None => {
                self.problem(key, format!("environment variable {var} is not set"));
                String::new()
            }
        }
    }

    pub(super) fn patterns(&mut self, key: &str, list: Option<Vec<String>>) -> Option<Vec<Pattern>> {
        let list = list?;
        let mut compiled = Vec::new();
        for (i, source) in list.iter().enumerate() {
            match Pattern::new(source) {
                Ok(p) => compiled.push(p),
                Err(e) => self.problem(&format!("{key}[{i}]"), e),
            }
        }
        Some(compiled)
    }

    fn url(&mut self, key: &str, value: &str) -> Option<Url> {
        match Url::parse(value) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                self.problem(key, format!("{value:?} is not an http or https URL"));
                None
            }
            Ok(url) if url.host().is_none() => {
                self.problem(key, format!("{value:?} has no host"));
                None
            }
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                self.problem(key, "credentials in the URL are not allowed; use `username` and `password`");
                None
            }
            Ok(url) if url.query().is_some() || url.fragment().is_some() => {
                self.problem(key, format!("{value:?} must not have a query or fragment"));
                None
            }
            Ok(url) => Some(url),
            Err(e) => {
                self.problem(key, format!("{value:?} is not a valid URL: {e}"));
                None
            }
        }
    }

    /// One remote as written, compiled; `None` (and problems) if anything is
    /// wrong with it. Every check runs, so that all problems come at once.
    pub(super) fn remote(
        &mut self,
        rc: &RemoteConfig,
        all: &BTreeMap<String, RemoteConfig>,
    ) -> Option<Remote> {
        let before = self.problems.len();
        self.check_name();
        let package = self.package(rc);
        let kind = self.kind(rc, all);
        self.group_keys_only_on_groups(rc);
        let (immutable, mutable) = self.classifier_patterns(rc);
        let cache = rc.cache.clone().unwrap_or_default();
        let ttl = self.ttl(&cache);
        let credentials = self.credentials(rc);
        let tls = self.tls(rc.tls.as_ref(), rc.kind.as_deref().unwrap_or("remote") == "remote");
        let own = self.format_keys(rc, all, package);
        let max_bytes = self.max_bytes(&cache);
        let policy = self.policy(rc.policy.as_ref(), package);
        if policy.is_some() && rc.kind.as_deref() == Some("local") {
            self.problem(
                "policy",
                "a local repository serves what was uploaded to it: put the policy on a group",
            );
        }
        if self.problems.len() > before {
            return None;
        }
        Some(Remote {
            name: self.name.to_owned(),
            kind: kind?,
            package,
            description: rc.description.clone().unwrap_or_default(),
            classifier: Classifier::new(immutable, mutable, package),
            ttl,
            check_mutable_updates: rc.check_mutable_updates.unwrap_or(false),
            credentials,
            tls,
            files: own.files,
            format_options: own.options,
            max_bytes,
            policy,
        })
    }

    /// The name is a path segment and a metric label: keep it plain.
    fn check_name(&mut self) {
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && self.name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if !valid_name {
            self.problems.push(format!(
                "remotes.{}: a remote name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
                self.name
            ));
        }
    }

    /// `package`, `generic` when absent (and after a problem, so that the
    /// checks that depend on it still run).
    fn package(&mut self, rc: &RemoteConfig) -> Package {
        match rc.package.as_deref() {
            None => Package::GENERIC,
            Some(p) => Package::parse(p).unwrap_or_else(|| {
                let known = Formats::builtin().names().join(", ");
                self.problem("package", format!("{p:?} is not one of {known}"));
                Package::GENERIC
            }),
        }
    }

    /// `type` and `base_url`, which only make sense together.
    fn kind(&mut self, rc: &RemoteConfig, all: &BTreeMap<String, RemoteConfig>) -> Option<RemoteKind> {
        match (rc.kind.as_deref().unwrap_or("remote"), &rc.base_url) {
            ("remote", Some(url)) => {
                self.url("base_url", url).map(|base_url| RemoteKind::Remote { base_url })
            }
            ("remote", None) => {
                self.problem("base_url", "a remote of type `remote` needs a base_url");
                None
            }
            ("local", Some(_)) => {
                self.problem("base_url", "a local repository stores uploads and has no base_url");
                None
            }
            ("local", None) => Some(RemoteKind::Local),
            ("group", Some(_)) => {
                self.problem("base_url", "a group answers from its members and has no base_url");
                None
            }
            ("group", None) => self.group(rc, all).map(RemoteKind::Group),
            (other, _) => {
                self.problem("type", format!("{other:?} is not `remote`, `local` or `group`"));
                None
            }
        }
    }

    /// The immutable patterns (`None`: every path is allowed) and the
    /// mutable ones, under their current or legacy names.
    fn classifier_patterns(&mut self, rc: &RemoteConfig) -> (Option<Vec<Pattern>>, Vec<Pattern>) {
        let immutable = self.legacy(
            "immutable_patterns",
            &rc.immutable_patterns,
            "include_patterns",
            &rc.include_patterns,
        );
        let mutable =
            self.legacy("mutable_patterns", &rc.mutable_patterns, "index_patterns", &rc.index_patterns);
        if immutable.as_ref().is_some_and(Vec::is_empty) {
            self.warnings.push(format!(
                "remotes.{}.immutable_patterns is empty, which (as in the seed) allows every path; remove it or list patterns",
                self.name
            ));
        }
        let immutable = self.patterns("immutable_patterns", immutable.filter(|l| !l.is_empty()));
        let mutable = self.patterns("mutable_patterns", mutable).unwrap_or_default();
        (immutable, mutable)
    }

    /// The lifetimes of `cache:`, under their current or legacy names.
    fn ttl(&mut self, cache: &CacheConfig) -> Ttl {
        let immutable_ttl =
            self.legacy("cache.immutable_ttl", &cache.immutable_ttl, "cache.file_ttl", &cache.file_ttl);
        let mutable_ttl =
            self.legacy("cache.mutable_ttl", &cache.mutable_ttl, "cache.index_ttl", &cache.index_ttl);
        let defaults = Ttl::default();
        Ttl {
            immutable: immutable_ttl.filter(|s| *s > 0).map(Duration::from_secs),
            mutable: mutable_ttl.map(Duration::from_secs).unwrap_or(defaults.mutable),
            negative: cache.negative_ttl.map(Duration::from_secs).unwrap_or(defaults.negative),
        }
    }

    /// `username` and `password`: both or neither.
    fn credentials(&mut self, rc: &RemoteConfig) -> Option<Credentials> {
        let username = rc.username.as_deref().map(|u| self.secret("username", u));
        let password = rc.password.as_deref().map(|p| self.secret("password", p));
        match (&username, &password) {
            (Some(u), Some(p)) => Some(Credentials { username: u.clone(), password: p.clone() }),
            (None, None) => None,
            (Some(_), None) => {
                self.problem("password", "`username` is set without `password`");
                None
            }
            (None, Some(_)) => {
                self.problem("username", "`password` is set without `username`");
                None
            }
        }
    }

    /// `cache.max_bytes`: a number of bytes or a size such as `20G`.
    fn max_bytes(&mut self, cache: &CacheConfig) -> Option<u64> {
        let value = cache.max_bytes.as_ref()?;
        let text = match value {
            serde_yaml_ng::Value::Number(n) => n.to_string(),
            serde_yaml_ng::Value::String(s) => s.clone(),
            _ => String::new(),
        };
        let bytes = crate::settings::parse_bytes(&text);
        if bytes.is_none() {
            self.problem("cache.max_bytes", format!("{text:?} is not a size (bytes, or 500M, 20G, 1T)"));
        }
        bytes
    }

    /// The keys the remote's format owns, read by the format; a key another
    /// format owns is a problem here.
    fn format_keys(
        &mut self,
        rc: &RemoteConfig,
        all: &BTreeMap<String, RemoteConfig>,
        package: Package,
    ) -> Own {
        let configured = package.format().configured();
        let owned = configured.map(|c| c.keys()).unwrap_or_default();
        for key in rc.format_keys.keys().filter(|k| !owned.contains(&k.as_str())) {
            let owners = Formats::builtin().owners_of(key).join(", ");
            self.problem(key, format!("only a remote of package {owners} has `{key}`"));
        }
        match configured {
            Some(configured) => configured.read(&mut Keys { ctx: self, rc, all }),
            None => Own::default(),
        }
    }
}

/// A remote's format keys, as its format reads them.
struct Keys<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    rc: &'c RemoteConfig,
    all: &'c BTreeMap<String, RemoteConfig>,
}

impl KeyReader for Keys<'_, '_> {
    fn value(&self, key: &str) -> Option<&serde_yaml_ng::Value> {
        self.rc.format_keys.get(key)
    }

    fn url(&mut self, key: &str, value: &str) -> Option<Url> {
        self.ctx.url(key, value)
    }

    fn base_url_of(&self, name: &str) -> Option<Option<String>> {
        self.all.get(name).map(|remote| remote.base_url.clone())
    }

    fn problem(&mut self, key: &str, reason: String) {
        self.ctx.problem(key, reason)
    }
}
