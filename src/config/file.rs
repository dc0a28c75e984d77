//! The file as written: serde structs that refuse unknown keys (a remote's
//! keys that a format owns are kept as written, for the format to read).

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

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

/// One remote as written. Deserialized key by key ([`RemoteVisitor`]):
/// the common keys into their fields, the keys some format owns into
/// `format_keys`, and any other key refused as serde refuses an unknown
/// field (with the key's place in the file).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RemoteConfig {
    /// Upstream URL (remotes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// `remote` (default), `local` or `group`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The package format's name (`generic` by default).
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
    /// The keys a format owns (`go_sumdb_url`, `registry_hosts`, ...), as
    /// written: the remote's format reads and checks them.
    #[serde(flatten)]
    pub format_keys: BTreeMap<String, serde_yaml_ng::Value>,
    /// Groups: the member remotes, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberConfig>>,
    /// Groups: `first` (default) or `merge`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolve: Option<String>,
    /// Supply-chain policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyConfig>,
    /// TLS to upstream beyond the system's trusted roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// The `tls:` block as written: paths to PEM files.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A CA certificate (or several) trusted besides the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// The client certificate (chain) presented for mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// Its private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
}

/// The `policy:` block as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Versions younger than this are hidden: `7d`, `36h`...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_release_age: Option<String>,
    /// Exceptions to the cooldown: names, or `name@version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Denied: a name, `name@version` or `name@{range}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<String>>,
    /// A file or directory of OSV records whose affected versions are denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny_file: Option<String>,
    /// `enforce` (default) or `report`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `refuse` (the default) or `allow`: paths the format cannot name a
    /// package version for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unclassified: Option<String>,
}

/// A group member as written: a remote's name, or the name with the package
/// names it may answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum MemberConfig {
    /// Just the remote's name.
    Name(String),
    /// The remote and its name filters.
    Filtered(FilteredMember),
}

/// A member with name filters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilteredMember {
    /// The member remote.
    pub remote: String,
    /// Regexes (matched against the whole package name): only these names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only_names: Option<Vec<String>>,
    /// Regexes (matched against the whole package name): never these names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub except_names: Option<Vec<String>>,
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

/// The common keys of a remote, in the order serde's "expected one of"
/// lists them.
const COMMON_KEYS: &[&str] = &[
    "base_url",
    "type",
    "package",
    "description",
    "immutable_patterns",
    "mutable_patterns",
    "include_patterns",
    "index_patterns",
    "check_mutable_updates",
    "cache",
    "username",
    "password",
    "members",
    "resolve",
    "policy",
    "tls",
];

impl<'de> Deserialize<'de> for RemoteConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RemoteVisitor)
    }
}

/// Reads a remote's keys one at a time, so that an error names the key and
/// its line as a derived struct's would.
struct RemoteVisitor;

impl<'de> serde::de::Visitor<'de> for RemoteVisitor {
    type Value = RemoteConfig;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of a remote's settings")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RemoteConfig, A::Error> {
        use serde::de::Error;
        let mut rc = RemoteConfig::default();
        while let Some(key) = map.next_key::<String>()? {
            macro_rules! fields {
                ($($name:literal => $field:ident),* $(,)?) => {
                    match key.as_str() {
                        $($name => {
                            if rc.$field.is_some() {
                                return Err(A::Error::duplicate_field($name));
                            }
                            rc.$field = Some(map.next_value()?);
                        })*
                        _ if artifactapi_layers::format::Formats::builtin().owners_of(&key).is_empty() => {
                            return Err(A::Error::unknown_field(&key, COMMON_KEYS));
                        }
                        _ => {
                            let value = map.next_value()?;
                            rc.format_keys.insert(key, value);
                        }
                    }
                };
            }
            fields!(
                "base_url" => base_url,
                "type" => kind,
                "package" => package,
                "description" => description,
                "immutable_patterns" => immutable_patterns,
                "mutable_patterns" => mutable_patterns,
                "include_patterns" => include_patterns,
                "index_patterns" => index_patterns,
                "check_mutable_updates" => check_mutable_updates,
                "cache" => cache,
                "username" => username,
                "password" => password,
                "members" => members,
                "resolve" => resolve,
                "policy" => policy,
                "tls" => tls,
            );
        }
        Ok(rc)
    }
}
