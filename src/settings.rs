//! Runtime settings from the environment (the seed's variables and ours).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use artifactapi_layers::budget::{DocumentBudget, ZipBudget};
use artifactapi_services::{blob::S3Config, egress::PrivateNetworks, upstream::UpstreamConfig};
use url::Url;

/// Everything that is not in `remotes.yaml`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `LISTEN_ADDR`, default `0.0.0.0:8000`.
    pub listen_addr: SocketAddr,
    /// `DATA_DIR`, default `./data`: blobs, the index, spool files.
    pub data_dir: PathBuf,
    /// `PUBLIC_URL`: the proxy's external URL, when set.
    pub public_url: Option<Url>,
    /// `CONFIG_PATH`, default `./remotes.yaml`.
    pub config_path: PathBuf,
    /// `UPSTREAM_CONNECT_TIMEOUT` and `UPSTREAM_READ_TIMEOUT` (seconds).
    pub upstream: UpstreamConfig,
    /// `ADMIN_TOKEN`: when set, writes need `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// `MAX_UPLOAD_BYTES`, default 10 GiB: the largest local upload.
    pub max_upload_bytes: u64,
    /// `MINIO_*`: blobs in an S3-compatible store instead of `DATA_DIR`.
    pub s3: Option<S3Config>,
    /// `DATABASE_URL` or `DBHOST`...: the index in PostgreSQL instead of SQLite.
    pub postgres: Option<PostgresConfig>,
    /// `REDIS_URL`: coordination between replicas.
    pub redis_url: Option<String>,
    /// `REDIS_PREFIX`, default `artifactapi:`: the Redis key namespace.
    pub redis_prefix: String,
    /// `METADATA_MAX_BYTES`, default 64 MiB: the largest package metadata
    /// document that is read whole to be rewritten.
    pub metadata_max_bytes: usize,
    /// `METADATA_MAX_OUTPUT_BYTES` (default: `METADATA_MAX_BYTES`),
    /// `METADATA_MAX_DEPTH` (128) and `METADATA_MAX_ENTRIES` (1 000 000):
    /// what one metadata transform may produce, YAML aliases counted
    /// expanded.
    pub document_budget: DocumentBudget,
    /// `INTEGRITY_MAX_INFLATED_BYTES` (500 MiB) and `INTEGRITY_MAX_ENTRIES`
    /// (65 535): what a check over a whole file (a Go module zip) may
    /// inflate.
    pub zip_budget: ZipBudget,
    /// `GROUP_MERGED_MAX_BYTES`, default 64 MiB: the most memory merged
    /// group documents are kept in.
    pub group_merged_max_bytes: usize,
    /// `LOOKUP_MAX_REQUESTS`, default 4: the most upstream requests the
    /// check of one file makes for the documents it is checked against.
    pub lookup_max_requests: usize,
    /// `AUDIT_LOG`: the file policy decisions are appended to, one JSON
    /// line each; unset, they are log events with `audit=true`.
    pub audit_log: Option<PathBuf>,
    /// `SHUTDOWN_TIMEOUT`, default 30 s: how long in-flight transfers may
    /// take to finish after SIGTERM or SIGINT.
    pub shutdown_timeout: Duration,
    /// `CLEANUP_INTERVAL`, default 3600 s (`0`: at start-up only): how often
    /// leftovers and orphans are cleaned up.
    pub cleanup_interval: Option<Duration>,
    /// `CLEANUP_GRACE`, default 3600 s: how old a leftover or orphan must
    /// be before the clean-up removes it.
    pub cleanup_grace: Duration,
    /// `CACHE_MAX_BYTES`: the most the whole store may take (bytes, or
    /// `500M`, `20G`, `1T`); least recently used entries are evicted past it.
    pub cache_max_bytes: Option<u64>,
    /// `CACHE_MEMORY_BYTES`, default 32 MiB (`0`: off): how much memory
    /// holds copies of small, recently served blobs, so their hits read
    /// no file and send no object-store request.
    pub cache_memory_bytes: u64,
    /// `ACCESS_LOG`, default `off`: `stdout` or a file path for one line
    /// per request.
    pub access_log: crate::access_log::AccessLogTarget,
    /// `TRUSTED_PROXIES`: CIDRs (comma separated) whose `X-Forwarded-For`
    /// the access log believes; default none.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `LOG_FORMAT=json`: JSON log and access lines.
    pub log_json: bool,
    /// `CACHE_LOCAL_DIR`: with S3, a directory on the replica's own disk
    /// that keeps least-recently-used copies of blobs, so hits read local
    /// files instead of the object store.
    pub cache_local_dir: Option<PathBuf>,
    /// `CACHE_LOCAL_BYTES`, default 10 GiB: the most the copies under
    /// `CACHE_LOCAL_DIR` take.
    pub cache_local_bytes: u64,
    /// `CACHE_EVICT_INTERVAL`, default 10 s: how often the budget is checked
    /// (and served entries' access times written).
    pub evict_interval: Duration,
    /// `CONFIG_WATCH_INTERVAL`, default 10 s (`0`: off): how often
    /// `remotes.yaml` is checked for changes, besides SIGHUP.
    pub config_watch: Option<Duration>,
}

/// `UPSTREAM_RESOLVE`: `host=ip:port[|ip:port...]` entries, comma
/// separated; `host=` makes a name fail to resolve without asking DNS.
fn resolve_from(text: Option<&str>) -> Result<Vec<(String, Vec<std::net::SocketAddr>)>, String> {
    let mut out = Vec::new();
    for item in text.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (host, addrs) =
            item.split_once('=').ok_or_else(|| format!("UPSTREAM_RESOLVE {item:?} is not host=ip:port"))?;
        let addrs = addrs
            .split('|')
            .filter(|a| !a.trim().is_empty())
            .map(|a| a.trim().parse().map_err(|_| format!("UPSTREAM_RESOLVE {item:?}: {a:?} is not ip:port")))
            .collect::<Result<Vec<_>, _>>()?;
        out.push((host.trim().to_ascii_lowercase(), addrs));
    }
    Ok(out)
}

/// `TRUSTED_PROXIES`: CIDRs or single addresses, comma separated.
fn trusted_proxies(text: Option<&str>) -> Result<Vec<ipnet::IpNet>, String> {
    text.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("TRUSTED_PROXIES {s:?} is not an address or CIDR (10.0.0.0/8)"))
        })
        .collect()
}

/// A size: plain bytes, or a number with `K`, `M`, `G` or `T` (powers of
/// 1024, as nginx reads them; `KB`/`KiB` and lower case too).
pub fn parse_bytes(text: &str) -> Option<u64> {
    // `with_binary`: `M` and `MB` are 2^20 as well as `MiB`, as the README
    // promises; the library's default would make them 10^6.
    const SIZES: parse_size::Config = parse_size::Config::new().with_binary();
    SIZES.parse_size(text.trim()).ok()
}

/// Every environment variable artifactapi reads (the settings above, and
/// logging and tracing, which start-up reads itself).
pub const VARIABLES: &[&str] = &[
    "LISTEN_ADDR",
    "DATA_DIR",
    "PUBLIC_URL",
    "CONFIG_PATH",
    "CONFIG_WATCH_INTERVAL",
    "UPSTREAM_CONNECT_TIMEOUT",
    "UPSTREAM_READ_TIMEOUT",
    "UPSTREAM_RESOLVE",
    "UPSTREAM_PRIVATE_NETWORKS",
    "ADMIN_TOKEN",
    "MAX_UPLOAD_BYTES",
    "METADATA_MAX_BYTES",
    "METADATA_MAX_OUTPUT_BYTES",
    "METADATA_MAX_DEPTH",
    "METADATA_MAX_ENTRIES",
    "INTEGRITY_MAX_INFLATED_BYTES",
    "INTEGRITY_MAX_ENTRIES",
    "GROUP_MERGED_MAX_BYTES",
    "LOOKUP_MAX_REQUESTS",
    "AUDIT_LOG",
    "SHUTDOWN_TIMEOUT",
    "CACHE_MAX_BYTES",
    "CACHE_MEMORY_BYTES",
    "CACHE_LOCAL_DIR",
    "ACCESS_LOG",
    "TRUSTED_PROXIES",
    "CACHE_LOCAL_BYTES",
    "CACHE_EVICT_INTERVAL",
    "CLEANUP_INTERVAL",
    "CLEANUP_GRACE",
    "MINIO_ENDPOINT",
    "MINIO_ACCESS_KEY",
    "MINIO_SECRET_KEY",
    "MINIO_BUCKET",
    "MINIO_SECURE",
    "MINIO_REGION",
    "DATABASE_URL",
    "DBHOST",
    "DBPORT",
    "DBUSER",
    "DBPASS",
    "DBNAME",
    "REDIS_URL",
    "REDIS_PREFIX",
    "RUST_LOG",
    "LOG_FORMAT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_SDK_DISABLED",
];

/// Where PostgreSQL is. `Debug` never shows the password.
#[derive(Clone)]
pub enum PostgresConfig {
    /// `DATABASE_URL`.
    Url(String),
    /// `DBHOST`, `DBPORT`, `DBUSER`, `DBPASS`, `DBNAME`.
    Parts {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// User.
        user: String,
        /// Password, if any.
        password: Option<String>,
        /// Database.
        database: String,
    },
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PostgresConfig::Url(_) => f.write_str("PostgresConfig::Url(***)"),
            PostgresConfig::Parts { host, port, user, database, .. } => {
                write!(f, "PostgresConfig {{ {user}@{host}:{port}/{database} }}")
            }
        }
    }
}

impl PostgresConfig {
    /// The connection options.
    pub fn options(&self) -> Result<sqlx::postgres::PgConnectOptions, String> {
        match self {
            PostgresConfig::Url(url) => {
                url.parse().map_err(|e| format!("DATABASE_URL is not a PostgreSQL URL: {e}"))
            }
            PostgresConfig::Parts { host, port, user, password, database } => {
                let mut options = sqlx::postgres::PgConnectOptions::new()
                    .host(host)
                    .port(*port)
                    .username(user)
                    .database(database);
                if let Some(password) = password {
                    options = options.password(password);
                }
                Ok(options)
            }
        }
    }
}

fn s3_from(var: &impl Fn(&str) -> Option<String>) -> Result<Option<S3Config>, String> {
    let Some(endpoint) = var("MINIO_ENDPOINT").filter(|s| !s.is_empty()) else { return Ok(None) };
    let need = |name: &str| {
        var(name).filter(|s| !s.is_empty()).ok_or_else(|| format!("MINIO_ENDPOINT is set but {name} is not"))
    };
    let secure = match var("MINIO_SECURE").unwrap_or_default().to_ascii_lowercase().as_str() {
        "" | "false" | "0" | "no" => false,
        "true" | "1" | "yes" => true,
        other => return Err(format!("MINIO_SECURE {other:?} is not true or false")),
    };
    let endpoint = if endpoint.contains("://") {
        endpoint
    } else {
        format!("{}://{endpoint}", if secure { "https" } else { "http" })
    };
    url::Url::parse(&endpoint)
        .map_err(|e| format!("MINIO_ENDPOINT {endpoint:?} is not host:port or a URL: {e}"))?;
    Ok(Some(S3Config {
        endpoint,
        access_key: need("MINIO_ACCESS_KEY")?,
        secret_key: need("MINIO_SECRET_KEY")?,
        bucket: need("MINIO_BUCKET")?,
        region: var("MINIO_REGION").filter(|s| !s.is_empty()).unwrap_or_else(|| "us-east-1".into()),
    }))
}

fn postgres_from(var: &impl Fn(&str) -> Option<String>) -> Result<Option<PostgresConfig>, String> {
    if let Some(url) = var("DATABASE_URL").filter(|s| !s.is_empty()) {
        return Ok(Some(PostgresConfig::Url(url)));
    }
    let Some(host) = var("DBHOST").filter(|s| !s.is_empty()) else { return Ok(None) };
    let need = |name: &str| {
        var(name).filter(|s| !s.is_empty()).ok_or_else(|| format!("DBHOST is set but {name} is not"))
    };
    let port = match var("DBPORT").filter(|s| !s.is_empty()) {
        None => 5432,
        Some(p) => p.parse().map_err(|_| format!("DBPORT {p:?} is not a port number"))?,
    };
    Ok(Some(PostgresConfig::Parts {
        host,
        port,
        user: need("DBUSER")?,
        password: var("DBPASS").filter(|s| !s.is_empty()),
        database: need("DBNAME")?,
    }))
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `var` (for tests).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let listen_addr = var("LISTEN_ADDR").unwrap_or_else(|| "0.0.0.0:8000".into());
        let listen_addr =
            listen_addr.parse().map_err(|e| format!("LISTEN_ADDR {listen_addr:?} is not host:port: {e}"))?;
        let public_url = match var("PUBLIC_URL").filter(|s| !s.is_empty()) {
            Some(s) => Some(Url::parse(&s).map_err(|e| format!("PUBLIC_URL {s:?} is not a URL: {e}"))?),
            None => None,
        };
        let seconds = |name: &str, default: u64| -> Result<Duration, String> {
            match var(name).filter(|s| !s.is_empty()) {
                None => Ok(Duration::from_secs(default)),
                Some(s) => s
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .and_then(|v| Duration::try_from_secs_f64(v).ok())
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| format!("{name} {s:?} is not a positive number of seconds")),
            }
        };
        let max_upload_bytes = match var("MAX_UPLOAD_BYTES").filter(|s| !s.is_empty()) {
            None => 10 << 30,
            Some(s) => s
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("MAX_UPLOAD_BYTES {s:?} is not a positive number of bytes"))?,
        };
        let metadata_max_bytes = match var("METADATA_MAX_BYTES").filter(|s| !s.is_empty()) {
            None => 64 << 20,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("METADATA_MAX_BYTES {s:?} is not a positive number of bytes"))?,
        };
        // A count or a size (`512M`), at least one: zero would refuse
        // every document or check.
        let limit = |name: &str, default: u64| -> Result<u64, String> {
            match var(name).filter(|s| !s.is_empty()) {
                None => Ok(default),
                Some(s) => parse_bytes(&s)
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name} {s:?} is not a positive number (or a size such as 64M)")),
            }
        };
        let as_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let defaults = DocumentBudget::default();
        let document_budget = DocumentBudget {
            output_bytes: as_usize(limit("METADATA_MAX_OUTPUT_BYTES", metadata_max_bytes as u64)?),
            depth: as_usize(limit("METADATA_MAX_DEPTH", defaults.depth as u64)?),
            entries: as_usize(limit("METADATA_MAX_ENTRIES", defaults.entries as u64)?),
        };
        let defaults = ZipBudget::default();
        let zip_budget = ZipBudget {
            inflated_bytes: limit("INTEGRITY_MAX_INFLATED_BYTES", defaults.inflated_bytes)?,
            entries: as_usize(limit("INTEGRITY_MAX_ENTRIES", defaults.entries as u64)?),
        };
        let group_merged_max_bytes = as_usize(limit("GROUP_MERGED_MAX_BYTES", 64 << 20)?);
        let lookup_max_requests = as_usize(limit("LOOKUP_MAX_REQUESTS", 4)?);
        let config_watch = match var("CONFIG_WATCH_INTERVAL").filter(|s| !s.is_empty()).as_deref() {
            Some("0") => None,
            _ => Some(seconds("CONFIG_WATCH_INTERVAL", 10)?),
        };
        let cleanup_interval = match var("CLEANUP_INTERVAL").filter(|s| !s.is_empty()).as_deref() {
            Some("0") => None,
            _ => Some(seconds("CLEANUP_INTERVAL", 3600)?),
        };
        let cleanup_grace = match var("CLEANUP_GRACE").filter(|s| !s.is_empty()).as_deref() {
            Some("0") => Duration::ZERO,
            _ => seconds("CLEANUP_GRACE", 3600)?,
        };
        let cache_max_bytes =
            match var("CACHE_MAX_BYTES").filter(|s| !s.is_empty()) {
                None => None,
                Some(s) => Some(parse_bytes(&s).ok_or_else(|| {
                    format!("CACHE_MAX_BYTES {s:?} is not a size (bytes, or 500M, 20G, 1T)")
                })?),
            };
        let cache_memory_bytes = match var("CACHE_MEMORY_BYTES").filter(|s| !s.is_empty()) {
            None => 32 << 20,
            Some(s) => parse_bytes(&s).ok_or_else(|| {
                format!("CACHE_MEMORY_BYTES {s:?} is not a size (bytes, or 64M, 1G; 0 turns it off)")
            })?,
        };
        let cache_local_bytes = match var("CACHE_LOCAL_BYTES").filter(|s| !s.is_empty()) {
            None => 10 << 30,
            Some(s) => parse_bytes(&s)
                .ok_or_else(|| format!("CACHE_LOCAL_BYTES {s:?} is not a size (bytes, or 500M, 20G, 1T)"))?,
        };
        Ok(Self {
            cache_max_bytes,
            cache_memory_bytes,
            cache_local_dir: var("CACHE_LOCAL_DIR").filter(|s| !s.is_empty()).map(PathBuf::from),
            access_log: crate::access_log::AccessLogTarget::parse(var("ACCESS_LOG").as_deref()),
            trusted_proxies: trusted_proxies(var("TRUSTED_PROXIES").as_deref())?,
            log_json: var("LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json")),
            cache_local_bytes,
            evict_interval: seconds("CACHE_EVICT_INTERVAL", 10)?,
            shutdown_timeout: seconds("SHUTDOWN_TIMEOUT", 30)?,
            config_watch,
            cleanup_interval,
            cleanup_grace,
            metadata_max_bytes,
            document_budget,
            zip_budget,
            group_merged_max_bytes,
            lookup_max_requests,
            audit_log: var("AUDIT_LOG").filter(|s| !s.is_empty()).map(PathBuf::from),
            s3: s3_from(&var)?,
            postgres: postgres_from(&var)?,
            redis_url: var("REDIS_URL").filter(|s| !s.is_empty()),
            redis_prefix: var("REDIS_PREFIX")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "artifactapi:".into()),
            admin_token: var("ADMIN_TOKEN").filter(|s| !s.is_empty()),
            max_upload_bytes,
            listen_addr,
            data_dir: var("DATA_DIR").unwrap_or_else(|| "./data".into()).into(),
            public_url,
            config_path: var("CONFIG_PATH").unwrap_or_else(|| "./remotes.yaml".into()).into(),
            upstream: UpstreamConfig {
                connect_timeout: seconds("UPSTREAM_CONNECT_TIMEOUT", 10)?,
                read_timeout: seconds("UPSTREAM_READ_TIMEOUT", 60)?,
                resolve: resolve_from(var("UPSTREAM_RESOLVE").as_deref())?,
                private_networks: match var("UPSTREAM_PRIVATE_NETWORKS").filter(|s| !s.trim().is_empty()) {
                    Some(text) => PrivateNetworks::parse(&text)
                        .map_err(|e| format!("UPSTREAM_PRIVATE_NETWORKS: {e}"))?,
                    None => PrivateNetworks::default(),
                },
                ..UpstreamConfig::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_nginx() {
        assert_eq!(parse_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_bytes("500M"), Some(500 << 20));
        assert_eq!(parse_bytes("20G"), Some(20 << 30));
        assert_eq!(parse_bytes("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_bytes("2 tb"), Some(2 << 40));
        assert_eq!(parse_bytes("10x"), None);
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes(""), None);
    }

    #[test]
    fn every_spelling_of_a_unit_is_a_power_of_1024() {
        for text in ["1k", "1K", "1KB", "1kb", "1KiB", "1 kib", " 1K "] {
            assert_eq!(parse_bytes(text), Some(1024), "{text:?}");
        }
        assert_eq!(parse_bytes("64MB"), Some(64 << 20));
        assert_eq!(parse_bytes("1TiB"), Some(1 << 40));
        assert_eq!(parse_bytes("0.5K"), Some(512));
        assert_eq!(parse_bytes("20000000T"), None, "past u64");
        assert_eq!(parse_bytes("M"), None);
    }

    #[test]
    fn every_variable_read_is_listed() {
        let asked = std::sync::Mutex::new(std::collections::BTreeSet::new());
        // Every backend on, so that every companion variable is asked for.
        let set = [
            "MINIO_ENDPOINT",
            "MINIO_ACCESS_KEY",
            "MINIO_SECRET_KEY",
            "MINIO_BUCKET",
            "DBHOST",
            "DBUSER",
            "DBNAME",
        ];
        Settings::from_lookup(|name| {
            asked.lock().unwrap().insert(name.to_owned());
            set.contains(&name).then(|| "x:1".to_owned())
        })
        .unwrap();
        let asked = asked.into_inner().unwrap();
        for name in &asked {
            assert!(VARIABLES.contains(&name.as_str()), "{name} is read but not listed");
        }
        let elsewhere =
            |v: &&&str| ["RUST_LOG", "LOG_FORMAT", "DATABASE_URL"].contains(v) || v.starts_with("OTEL_");
        for name in VARIABLES.iter().filter(|v| !elsewhere(v)) {
            assert!(asked.contains(*name), "{name} is listed but never read");
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let s = Settings::from_lookup(|_| None).unwrap();
        assert_eq!(s.listen_addr.to_string(), "0.0.0.0:8000");
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.config_path, PathBuf::from("./remotes.yaml"));
        assert_eq!(s.upstream.connect_timeout, Duration::from_secs(10));
        assert_eq!(s.upstream.read_timeout, Duration::from_secs(60));
        assert_eq!(s.admin_token, None);
        assert_eq!(s.max_upload_bytes, 10 << 30);
        assert_eq!(
            s.document_budget,
            DocumentBudget { output_bytes: 64 << 20, depth: 128, entries: 1_000_000 }
        );
        assert_eq!(s.zip_budget, ZipBudget { inflated_bytes: 500 << 20, entries: 65_535 });
        assert_eq!((s.group_merged_max_bytes, s.lookup_max_requests), (64 << 20, 4));
        let s = Settings::from_lookup(|k| (k == "METADATA_MAX_BYTES").then(|| "1000".into())).unwrap();
        assert_eq!(s.document_budget.output_bytes, 1000, "the output cap follows the input cap");
        assert!(Settings::from_lookup(|k| (k == "LOOKUP_MAX_REQUESTS").then(|| "0".into())).is_err());
        assert!(Settings::from_lookup(|k| (k == "METADATA_MAX_DEPTH").then(|| "deep".into())).is_err());
        assert!(Settings::from_lookup(|k| (k == "MAX_UPLOAD_BYTES").then(|| "lots".into())).is_err());
        assert!(s.s3.is_none() && s.postgres.is_none() && s.redis_url.is_none(), "the embedded default");
    }

    #[test]
    fn production_backends_switch_on_by_their_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let s = Settings::from_lookup(env(&[
            ("MINIO_ENDPOINT", "minio-service:9000"),
            ("MINIO_ACCESS_KEY", "ak"),
            ("MINIO_SECRET_KEY", "sk"),
            ("MINIO_BUCKET", "artifacts"),
            ("DBHOST", "postgres-service"),
            ("DBUSER", "artifacts"),
            ("DBPASS", "artifacts123"),
            ("DBNAME", "artifacts"),
            ("REDIS_URL", "redis://redis-service:6379"),
        ]))
        .unwrap();
        let s3 = s.s3.unwrap();
        assert_eq!(s3.endpoint, "http://minio-service:9000");
        assert_eq!(s3.region, "us-east-1");
        assert!(!format!("{s3:?}").contains("sk\""), "the secret key is not shown");
        let pg = s.postgres.unwrap();
        assert!(!format!("{pg:?}").contains("artifacts123"));
        assert!(pg.options().is_ok());
        assert_eq!(s.redis_url.as_deref(), Some("redis://redis-service:6379"));

        let s = Settings::from_lookup(env(&[
            ("MINIO_ENDPOINT", "https://s3.example.com"),
            ("MINIO_ACCESS_KEY", "ak"),
            ("MINIO_SECRET_KEY", "sk"),
            ("MINIO_BUCKET", "b"),
            ("MINIO_SECURE", "true"),
        ]))
        .unwrap();
        assert_eq!(s.s3.unwrap().endpoint, "https://s3.example.com");

        let err = Settings::from_lookup(env(&[("MINIO_ENDPOINT", "m:9000"), ("MINIO_ACCESS_KEY", "a")]))
            .unwrap_err();
        assert!(err.contains("MINIO_SECRET_KEY"), "{err}");
        let err = Settings::from_lookup(env(&[("DBHOST", "db")])).unwrap_err();
        assert!(err.contains("DBUSER"), "{err}");
        let s = Settings::from_lookup(env(&[("DATABASE_URL", "postgres://u:p@h/db")])).unwrap();
        assert!(s.postgres.unwrap().options().is_ok());
        let s = Settings::from_lookup(|k| match k {
            "UPSTREAM_READ_TIMEOUT" => Some("0.5".into()),
            "PUBLIC_URL" => Some("https://artifacts.example.com".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.upstream.read_timeout, Duration::from_millis(500));
        assert!(s.public_url.is_some());
        assert!(Settings::from_lookup(|k| (k == "LISTEN_ADDR").then(|| "nope".into())).is_err());
        assert!(Settings::from_lookup(|k| (k == "UPSTREAM_CONNECT_TIMEOUT").then(|| "-1".into())).is_err());
    }
}
