//! The production backends for tests: a PostgreSQL database of its own on
//! the machine's server, a Garage S3 server of its own, a private Redis.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A fresh database on the machine's PostgreSQL (127.0.0.1:5432, trust auth),
/// dropped when this is dropped.
pub struct PgDatabase {
    pub name: String,
}

fn psql(sql: &str) {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("psql runs (the PostgreSQL client is installed)");
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
}

impl PgDatabase {
    pub fn create() -> Self {
        let name = format!("artifactapi_test_{}_{}", std::process::id(), unique());
        psql(&format!("CREATE DATABASE {name}"));
        Self { name }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .output();
    }
}

pub fn unique() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}", nanos)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn hex(n: usize) -> String {
    let mut out = String::new();
    while out.len() < n {
        out.push_str(&format!("{:016x}", rand_u64()));
    }
    out.truncate(n);
    out
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    h.finish()
}

/// A single-node Garage S3 server in a temporary directory.
pub struct Garage {
    child: Child,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    _dir: tempfile::TempDir,
}

pub fn garage_binary() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    for candidate in [format!("{home}/.cargo/bin/garage"), "/usr/local/bin/garage".into()] {
        if std::path::Path::new(&candidate).exists() {
            return candidate.into();
        }
    }
    panic!("garage is not installed: the README's test command (./test.sh) installs it");
}

impl Garage {
    pub fn start() -> Self {
        let binary = garage_binary();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let (rpc, s3, admin) = (free_port(), free_port(), free_port());
            let config = format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"us-east-1\"\napi_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\nadmin_token = \"{token}\"\n",
                d = dir.path().display(),
                secret = hex(64),
                token = hex(32),
            );
            let file = dir.path().join("garage.toml");
            std::fs::write(&file, config).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            let access_key = format!("GK{}", hex(24));
            let secret_key = hex(64);
            let log = std::fs::File::create(dir.path().join("garage.log")).unwrap();
            let child = Command::new(&binary)
                .arg("-c")
                .arg(&file)
                .args(["server", "--single-node", "--default-access-key"])
                .env("GARAGE_DEFAULT_ACCESS_KEY", &access_key)
                .env("GARAGE_DEFAULT_SECRET_KEY", &secret_key)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut garage =
                Self { child, endpoint: format!("http://127.0.0.1:{s3}"), access_key, secret_key, _dir: dir };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = garage.child.try_wait() {
                    break; // it exited: a port was taken; try others
                }
                let ok = Command::new("curl")
                    .args(["-sf", "--noproxy", "*", "-o", "/dev/null"])
                    .arg(format!("http://127.0.0.1:{admin}/health"))
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    return garage;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let log = std::fs::read_to_string(garage._dir.path().join("garage.log")).unwrap_or_default();
            eprintln!("garage did not become healthy; retrying on other ports:\n{log}");
        }
        panic!("garage did not start");
    }

    /// The environment that points artifactapi at this server.
    pub fn env(&self, bucket: &str) -> Vec<(String, String)> {
        vec![
            ("MINIO_ENDPOINT".into(), self.endpoint.clone()),
            ("MINIO_ACCESS_KEY".into(), self.access_key.clone()),
            ("MINIO_SECRET_KEY".into(), self.secret_key.clone()),
            ("MINIO_BUCKET".into(), bucket.into()),
        ]
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis server of this test's own, on a port of its own, that can be
/// stopped and started again on the same port.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let mut redis = Self { port: free_port(), child: None };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
