//! `remotes.yaml`: the seed's configuration surface, parsed strictly and
//! compiled once at start-up.
//!
//! Every key of the seed is accepted, plus the older aliases
//! (`include_patterns`, `index_patterns`, `cache.file_ttl`, `cache.index_ttl`)
//! with a warning. Any other key is an error: a typo such as
//! `imutable_patterns` would otherwise silently open a remote to every path.
//! Errors name the remote, the key and the reason, and all of them are
//! reported at once.
//!
//! `file` holds the serde structs of the file as written, `remote` the
//! checks that compile one remote, and this module what ties them together.

mod file;
mod group;
mod policy;
mod remote;
#[cfg(test)]
mod tests;
mod tls;

use std::{fmt, path::Path};

use artifactapi_layers::Remotes;

pub use file::{CacheConfig, ConfigFile, RemoteConfig};
use remote::Ctx;

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
