//! Runtime settings from the environment (the seed's variables and ours).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use artifactapi_services::upstream::UpstreamConfig;
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
                    .map(Duration::from_secs_f64)
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
        Ok(Self {
            admin_token: var("ADMIN_TOKEN").filter(|s| !s.is_empty()),
            max_upload_bytes,
            listen_addr,
            data_dir: var("DATA_DIR").unwrap_or_else(|| "./data".into()).into(),
            public_url,
            config_path: var("CONFIG_PATH").unwrap_or_else(|| "./remotes.yaml".into()).into(),
            upstream: UpstreamConfig {
                connect_timeout: seconds("UPSTREAM_CONNECT_TIMEOUT", 10)?,
                read_timeout: seconds("UPSTREAM_READ_TIMEOUT", 60)?,
                ..UpstreamConfig::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(Settings::from_lookup(|k| (k == "MAX_UPLOAD_BYTES").then(|| "lots".into())).is_err());
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
