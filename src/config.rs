//! `remotes.yaml`: the seed's configuration surface, parsed strictly and
//! compiled once at start-up.
//!
//! Every key of the seed is accepted, plus the older aliases
//! (`include_patterns`, `index_patterns`, `cache.file_ttl`, `cache.index_ttl`)
//! with a warning. Any other key is an error: a typo such as
//! `imutable_patterns` would otherwise silently open a remote to every path.
//! Errors name the remote, the key and the reason, and all of them are
//! reported at once.

use std::{collections::BTreeMap, fmt, path::Path, time::Duration};

use artifactapi_layers::{
    format::Formats, remote::FilesRewrite, Classifier, Credentials, Package, Pattern, Remote, RemoteKind,
    Remotes, Ttl,
};
use serde::{Deserialize, Serialize};
use url::Url;

/// The file as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The remotes by name (a name written twice is an error, not a
    /// silent choice of one).
    #[serde(deserialize_with = "unique_names")]
    pub remotes: BTreeMap<String, RemoteConfig>,
}

fn unique_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, RemoteConfig>, D::Error> {
    struct Names;
    impl<'de> serde::de::Visitor<'de> for Names {
        type Value = BTreeMap<String, RemoteConfig>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of remote names to remotes")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(name) = map.next_key::<String>()? {
                if out.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!("remote {name:?} is defined twice")));
                }
                let remote = map.next_value()?;
                out.insert(name, remote);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Names)
}

/// One remote as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Upstream URL (remotes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// `remote` (default) or `local`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `generic` (default), `alpine`, `rpm`, `docker`, `pypi` or `npm`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Paths cached for `immutable_ttl`; when present, other paths are denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub immutable_patterns: Option<Vec<String>>,
    /// Paths cached for `mutable_ttl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutable_patterns: Option<Vec<String>>,
    /// Legacy name of `immutable_patterns`.
    #[serde(skip_serializing)]
    pub include_patterns: Option<Vec<String>>,
    /// Legacy name of `mutable_patterns`.
    #[serde(skip_serializing)]
    pub index_patterns: Option<Vec<String>>,
    /// Revalidate expired user-mutable entries conditionally.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_mutable_updates: Option<bool>,
    /// Lifetimes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
    /// Upstream user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Upstream password or token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// PyPI: the files URL written in index pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pypi_files_url: Option<String>,
    /// PyPI: our remote that serves those files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pypi_files_remote: Option<String>,
    /// npm: the tarball URL prefix written in metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub npm_files_url: Option<String>,
    /// npm: our remote that serves those tarballs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub npm_files_remote: Option<String>,
    /// Docker: more registry host names containerd's `?ns=` may name this remote by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_hosts: Option<Vec<String>>,
}

/// The `cache:` block as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Seconds immutable entries stay fresh; 0 keeps them forever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub immutable_ttl: Option<u64>,
    /// Seconds mutable entries stay fresh; 0 checks upstream every time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutable_ttl: Option<u64>,
    /// Seconds an upstream 404 is remembered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negative_ttl: Option<u64>,
    /// The most this remote's entries may take: bytes, or `500M`, `20G`...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<serde_yaml_ng::Value>,
    /// Legacy name of `immutable_ttl`.
    #[serde(skip_serializing)]
    pub file_ttl: Option<u64>,
    /// Legacy name of `mutable_ttl`.
    #[serde(skip_serializing)]
    pub index_ttl: Option<u64>,
}

/// Everything wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Each problem, naming where it is.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(problem: impl Into<String>) -> Self {
        Self { problems: vec![problem.into()] }
    }
}

/// A compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file as written (for `/config`, with credentials masked).
    pub file: ConfigFile,
    /// The compiled remotes.
    pub remotes: Remotes,
    /// Things that work but deserve attention (legacy keys).
    pub warnings: Vec<String>,
}

impl Config {
    /// The configuration as written, with every credential replaced by `***`.
    pub fn masked(&self) -> serde_json::Value {
        let mut file = self.file.clone();
        for remote in file.remotes.values_mut() {
            for secret in [&mut remote.username, &mut remote.password] {
                if secret.is_some() {
                    *secret = Some("***".to_owned());
                }
            }
        }
        serde_json::to_value(&file).unwrap_or_default()
    }
}

/// Reads and compiles the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::one(format!("cannot read {}: {e}", path.display())))?;
    parse(&text)
}

/// How deeply `[`/`{` collections may nest. The YAML scanner's time grows
/// with the square of the depth (100 000 levels: a minute), and no real
/// configuration nests more than a few.
const MAX_FLOW_DEPTH: usize = 64;

/// Checks the nesting of flow collections outside quotes and comments.
fn flow_depth_within(text: &str, max: usize) -> Result<(), String> {
    let (mut depth, mut line) = (0usize, 1usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut previous = '\n';
    for c in text.chars() {
        if c == '\n' {
            line += 1;
            comment = false;
        }
        match (quote, c) {
            _ if comment => {}
            (Some('"'), '\\') if previous == '\\' => {
                previous = ' ';
                continue;
            }
            (Some(q), c) if c == q && !(q == '"' && previous == '\\') => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if previous.is_whitespace() => comment = true,
            (None, '[' | '{') => {
                depth += 1;
                if depth > max {
                    return Err(format!(
                        "remotes.yaml: collections nested more than {max} levels deep at line {line}"
                    ));
                }
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    Ok(())
}

/// Parses and compiles configuration text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with_env(text, &|name| std::env::var(name).ok())
}

/// Parses and compiles configuration text, reading `${VAR}` credentials
/// through `env`.
pub fn parse_with_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    flow_depth_within(text, MAX_FLOW_DEPTH).map_err(ConfigError::one)?;
    let file: ConfigFile = serde_yaml_ng::from_str(text).map_err(|e| {
        let mut message = format!("remotes.yaml: {e}");
        if message.contains("escape") {
            message.push_str(
                " (in YAML double quotes a backslash starts an escape: write regular expressions in single quotes, e.g. '\\.tgz$')",
            );
        }
        ConfigError::one(message)
    })?;
    compile(file, env)
}

fn compile(file: ConfigFile, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut remotes = Vec::new();
    for (name, rc) in &file.remotes {
        let mut ctx = Ctx { name, problems: &mut problems, warnings: &mut warnings, env };
        if let Some(remote) = ctx.remote(rc, &file.remotes) {
            remotes.push(remote);
        }
    }
    if problems.is_empty() {
        Ok(Config { file, remotes: Remotes::new(remotes), warnings })
    } else {
        Err(ConfigError { problems })
    }
}

struct Ctx<'a> {
    name: &'a str,
    problems: &'a mut Vec<String>,
    warnings: &'a mut Vec<String>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Ctx<'_> {
    fn problem(&mut self, key: &str, reason: impl fmt::Display) {
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

    fn patterns(&mut self, key: &str, list: Option<Vec<String>>) -> Option<Vec<Pattern>> {
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

    fn remote(&mut self, rc: &RemoteConfig, all: &BTreeMap<String, RemoteConfig>) -> Option<Remote> {
        let before = self.problems.len();
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
        let package = match rc.package.as_deref() {
            None => Package::GENERIC,
            Some(p) => Package::parse(p).unwrap_or_else(|| {
                let known = Formats::builtin().names().join(", ");
                self.problem("package", format!("{p:?} is not one of {known}"));
                Package::GENERIC
            }),
        };
        let kind = match (rc.kind.as_deref().unwrap_or("remote"), &rc.base_url) {
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
            (other, _) => {
                self.problem("type", format!("{other:?} is not `remote` or `local`"));
                None
            }
        };
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

        let cache = rc.cache.clone().unwrap_or_default();
        let immutable_ttl =
            self.legacy("cache.immutable_ttl", &cache.immutable_ttl, "cache.file_ttl", &cache.file_ttl);
        let mutable_ttl =
            self.legacy("cache.mutable_ttl", &cache.mutable_ttl, "cache.index_ttl", &cache.index_ttl);
        let defaults = Ttl::default();
        let ttl = Ttl {
            immutable: immutable_ttl.filter(|s| *s > 0).map(Duration::from_secs),
            mutable: mutable_ttl.map(Duration::from_secs).unwrap_or(defaults.mutable),
            negative: cache.negative_ttl.map(Duration::from_secs).unwrap_or(defaults.negative),
        };

        let username = rc.username.as_deref().map(|u| self.secret("username", u));
        let password = rc.password.as_deref().map(|p| self.secret("password", p));
        let credentials = match (&username, &password) {
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
        };

        let mut files = None;
        for (url_key, url, remote_key, target) in [
            ("pypi_files_url", &rc.pypi_files_url, "pypi_files_remote", &rc.pypi_files_remote),
            ("npm_files_url", &rc.npm_files_url, "npm_files_remote", &rc.npm_files_remote),
        ] {
            if let Some(url) = url {
                self.url(url_key, url);
            }
            if let Some(target) = target {
                if !all.contains_key(target) {
                    self.problem(remote_key, format!("names no remote: {target:?}"));
                }
            }
            match (url, target) {
                (Some(url), Some(target)) => {
                    files = Some(FilesRewrite { url: url.clone(), remote: target.clone() })
                }
                (Some(_), None) => {
                    self.problem(remote_key, format!("`{url_key}` is set without `{remote_key}`"))
                }
                (None, Some(_)) => {
                    self.problem(url_key, format!("`{remote_key}` is set without `{url_key}`"))
                }
                (None, None) => {}
            }
        }

        let max_bytes = match &cache.max_bytes {
            None => None,
            Some(value) => {
                let text = match value {
                    serde_yaml_ng::Value::Number(n) => n.to_string(),
                    serde_yaml_ng::Value::String(s) => s.clone(),
                    _ => String::new(),
                };
                match crate::settings::parse_bytes(&text) {
                    Some(n) => Some(n),
                    None => {
                        self.problem(
                            "cache.max_bytes",
                            format!("{text:?} is not a size (bytes, or 500M, 20G, 1T)"),
                        );
                        None
                    }
                }
            }
        };
        let has_registry_hosts = package.format().own_keys().contains(&"registry_hosts");
        let registry_hosts = match (&rc.registry_hosts, has_registry_hosts) {
            (None, _) => Vec::new(),
            (Some(hosts), true) => {
                for host in hosts {
                    let valid = !host.is_empty()
                        && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
                    if !valid {
                        self.problem("registry_hosts", format!("{host:?} is not a host or host:port"));
                    }
                }
                hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
            }
            (Some(_), _) => {
                let owners = Formats::builtin().owners_of("registry_hosts").join(", ");
                self.problem(
                    "registry_hosts",
                    format!("only a remote of package {owners} has registry hosts"),
                );
                Vec::new()
            }
        };

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
            files,
            registry_hosts,
            max_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use artifactapi_layers::{Class, Decision};

    use super::*;

    #[test]
    fn deeply_nested_collections_are_refused_before_the_scanner_sees_them() {
        let deep = format!("remotes: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        let err = parse(&deep).unwrap_err().to_string();
        assert!(err.contains("nested more than 64 levels deep at line 1"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "refused without parsing");
        // Brackets in quoted patterns and comments are not nesting.
        let text = "# {{{{{{\nremotes:  # [[[[\n  a:\n    base_url: https://e.example\n    immutable_patterns: ['\\[\\[\\[', \"\\\"\\\\[\\\"\"]\n";
        assert!(flow_depth_within(text, 1).is_ok(), "{text}");
        assert!(parse(text).is_ok(), "{text}");
        assert!(flow_depth_within("a: [[[[", 3).is_err());
        assert!(flow_depth_within("a: {b: [c, {d: [e]}]}", 4).is_ok());
    }

    fn problems(text: &str) -> Vec<String> {
        parse(text).expect_err("should be rejected").problems
    }

    #[test]
    fn the_example_file_compiles() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/remotes.yaml")).unwrap();
        let config = parse(&text).unwrap();
        assert!(config.remotes.iter().count() >= 5);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn registry_hosts_belong_to_docker_remotes() {
        let config = parse(
            "remotes:\n  hub:\n    base_url: https://registry-1.docker.io\n    package: docker\n    registry_hosts: ['Docker.io']\n",
        )
        .unwrap();
        let hub = config.remotes.get("hub").unwrap();
        assert!(hub.answers_for_registry("docker.io"));
        assert!(hub.answers_for_registry("registry-1.docker.io"));
        assert!(!hub.answers_for_registry("quay.io"));
        let problems = problems(
            "remotes:\n  files:\n    base_url: https://github.com\n    registry_hosts: ['github.com']\n  hub:\n    base_url: https://registry-1.docker.io\n    package: docker\n    registry_hosts: ['bad host/x']\n",
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("remotes.files.registry_hosts")));
        assert!(problems.iter().any(|p| p.contains("\"bad host/x\"")));
    }

    #[test]
    fn every_seed_key_is_understood() {
        let config = parse(
            r#"
remotes:
  pypi:
    base_url: "https://pypi.example.internal"
    type: "remote"
    package: "pypi"
    description: "Python packages"
    pypi_files_url: "https://files.example.internal"
    pypi_files_remote: "pypi-files"
    check_mutable_updates: true
    username: "u"
    password: "p"
    cache:
      immutable_ttl: 0
      mutable_ttl: 600
      negative_ttl: 5
  pypi-files:
    base_url: "https://files.example.internal"
    immutable_patterns: ['packages/.*\.whl$']
  npm:
    base_url: "https://npm.example.internal"
    package: npm
    npm_files_url: "https://npm.example.internal"
    npm_files_remote: npm
    immutable_patterns: ['\.tgz$']
    mutable_patterns: ['^(?!.*\.tgz$).*']
    cache: { immutable_ttl: 100 }
  local-generic:
    type: local
"#,
        )
        .unwrap();
        let pypi = config.remotes.get("pypi").unwrap();
        assert_eq!(pypi.package.as_str(), "pypi");
        assert!(pypi.check_mutable_updates);
        assert_eq!(pypi.ttl.mutable, Duration::from_secs(600));
        assert_eq!(pypi.ttl.immutable, None, "0 keeps immutable entries forever");
        assert_eq!(pypi.ttl.negative, Duration::from_secs(5));
        assert_eq!(pypi.credentials.as_ref().unwrap().password, "p");
        assert_eq!(pypi.files.as_ref().unwrap().remote, "pypi-files");
        assert_eq!(pypi.classifier.classify("simple/x/"), Decision::Allow(Class::Mutable { builtin: true }));
        let npm = config.remotes.get("npm").unwrap();
        assert_eq!(npm.ttl.immutable, Some(Duration::from_secs(100)));
        assert_eq!(npm.ttl.mutable, Duration::from_secs(3600), "mutable_ttl defaults to an hour");
        assert_eq!(
            npm.classifier.classify("@babel/core"),
            Decision::Allow(Class::Mutable { builtin: false })
        );
        assert_eq!(config.remotes.get("local-generic").unwrap().kind, RemoteKind::Local);
    }

    #[test]
    fn credentials_can_come_from_the_environment() {
        let yaml = "remotes:\n  hub:\n    base_url: https://registry.example.com\n    username: '${HUB_USER}'\n    password: '${HUB_TOKEN}'\n";
        let env = |name: &str| match name {
            "HUB_USER" => Some("robot".to_owned()),
            "HUB_TOKEN" => Some("t0ken".to_owned()),
            _ => None,
        };
        let config = parse_with_env(yaml, &env).unwrap();
        let creds = config.remotes.get("hub").unwrap().credentials.clone().unwrap();
        assert_eq!((creds.username.as_str(), creds.password.as_str()), ("robot", "t0ken"));
        assert_eq!(
            config.file.remotes["hub"].password.as_deref(),
            Some("${HUB_TOKEN}"),
            "the file keeps the reference"
        );

        let problems = parse_with_env(yaml, &|_| None).unwrap_err().problems;
        assert!(
            problems.iter().any(|p| p == "remotes.hub.password: environment variable HUB_TOKEN is not set"),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.contains("HUB_USER")), "{problems:?}");
        let bad =
            "remotes:\n  hub:\n    base_url: https://e.com\n    username: u\n    password: '${1BAD-NAME}'\n";
        assert!(parse_with_env(bad, &|_| None).is_err());
    }

    #[test]
    fn legacy_keys_are_aliases_with_a_warning() {
        let config = parse(
            r#"
remotes:
  old:
    base_url: https://example.com
    include_patterns: ['\.tar\.gz$']
    index_patterns: ['index\.yaml$']
    cache: { file_ttl: 0, index_ttl: 60 }
"#,
        )
        .unwrap();
        let old = config.remotes.get("old").unwrap();
        assert_eq!(old.classifier.classify("a.tar.gz"), Decision::Allow(Class::Immutable));
        assert_eq!(old.classifier.classify("index.yaml"), Decision::Allow(Class::Mutable { builtin: false }));
        assert!(matches!(old.classifier.classify("a.zip"), Decision::Deny(_)));
        assert_eq!(old.ttl.mutable, Duration::from_secs(60));
        assert_eq!(config.warnings.len(), 4, "{:?}", config.warnings);
        assert!(config.warnings[0].contains("legacy"));

        let p = problems("remotes:\n  x:\n    base_url: https://e.com\n    include_patterns: []\n    immutable_patterns: []\n");
        assert!(p[0].contains("both `immutable_patterns` and its legacy name"), "{p:?}");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let p = problems("remotes:\n  gh:\n    base_url: https://github.com\n    imutable_patterns: ['x']\n");
        assert!(p[0].contains("imutable_patterns"), "{p:?}");
        let p =
            problems("remotes:\n  gh:\n    base_url: https://github.com\n    cache: { mutable_tll: 3 }\n");
        assert!(p[0].contains("mutable_tll"), "{p:?}");
        let p = problems("remote:\n  gh: {}\n");
        assert!(p[0].contains("remote"), "{p:?}");
    }

    #[test]
    fn double_quoted_regexes_get_a_hint() {
        let p = problems(
            "remotes:\n  npm:\n    base_url: https://e.com\n    immutable_patterns:\n      - \"\\.tgz$\"\n",
        );
        assert!(p[0].contains("single quotes"), "{p:?}");
    }

    #[test]
    fn bad_values_name_remote_key_and_reason() {
        let p = problems(
            r#"
remotes:
  a: { base_url: "not a url" }
  b: { base_url: "ftp://e.com" }
  c: { base_url: "https://u:p@e.com" }
  d: { base_url: "https://e.com", immutable_patterns: ['ok', '([a-z]'] }
  e: { type: local, base_url: "https://e.com" }
  f: { base_url: "https://e.com", package: pypi, pypi_files_url: "https://f.com", pypi_files_remote: nowhere }
  g: { type: remote }
  h: { base_url: "https://e.com", package: maven }
  i: { base_url: "https://e.com", username: u }
  "bad name": { base_url: "https://e.com" }
"#,
        );
        let all = p.join("\n");
        for expected in [
            "remotes.a.base_url: \"not a url\" is not a valid URL",
            "remotes.b.base_url: \"ftp://e.com\" is not an http or https URL",
            "remotes.c.base_url: credentials in the URL",
            "remotes.d.immutable_patterns[1]: pattern \"([a-z]\" does not compile",
            "remotes.e.base_url: a local repository",
            "remotes.f.pypi_files_remote: names no remote: \"nowhere\"",
            "remotes.g.base_url: a remote of type `remote` needs a base_url",
            "remotes.h.package: \"maven\" is not one of",
            "remotes.i.password: `username` is set without `password`",
            "remotes.bad name: a remote name",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in\n{all}");
        }
    }

    #[test]
    fn a_file_that_is_not_yaml_or_not_there_is_an_error() {
        assert!(!problems("remotes: [").is_empty());
        assert!(load(Path::new("/nonexistent/remotes.yaml")).is_err());
    }
}
