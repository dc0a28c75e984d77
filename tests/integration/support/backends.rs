//! The production backends for tests: a PostgreSQL database of its own on
//! the machine's server, a Garage S3 server of its own, a private
//! PostgreSQL server and a private Redis (for faults: stopped and restarted).
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

/// A single-node Garage S3 server in a temporary directory. It can be
/// stopped and started again on the same ports and data.
pub struct Garage {
    child: Option<Child>,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    admin: u16,
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
            let mut garage = Self {
                child: None,
                endpoint: format!("http://127.0.0.1:{s3}"),
                access_key: format!("GK{}", hex(24)),
                secret_key: hex(64),
                admin,
                _dir: dir,
            };
            if garage.run() {
                return garage;
            }
            let log = std::fs::read_to_string(garage._dir.path().join("garage.log")).unwrap_or_default();
            eprintln!("garage did not become healthy; retrying on other ports:\n{log}");
        }
        panic!("garage did not start");
    }

    /// Starts the server on its configuration; answers whether it became
    /// healthy within 30 s (it exits when a port is taken).
    fn run(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self._dir.path().join("garage.log"))
            .unwrap();
        let child = Command::new(garage_binary())
            .arg("-c")
            .arg(self._dir.path().join("garage.toml"))
            .args(["server", "--single-node", "--default-access-key"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &self.access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &self.secret_key)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let child = self.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            let ok = Command::new("curl")
                .args(["-sf", "--noproxy", "*", "-o", "/dev/null"])
                .arg(format!("http://127.0.0.1:{}/health", self.admin))
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Kills the server (SIGKILL: connections in flight break); its data
    /// directory and ports stay for [`Garage::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports, with the data it had.
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..5 {
            if self.run() {
                return;
            }
            // A port of ours may still be in TIME_WAIT or taken for a moment.
            self.stop();
            std::thread::sleep(Duration::from_millis(500));
        }
        let log = std::fs::read_to_string(self._dir.path().join("garage.log")).unwrap_or_default();
        panic!("garage did not start again:\n{log}");
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
        self.stop();
    }
}

/// A PostgreSQL server of this test's own (not the machine's shared one),
/// in a temporary directory, on a port of its own, with trust
/// authentication: it can be stopped and started again on the same port and
/// data. PostgreSQL refuses to run as root, so it runs as `postgres`.
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    running: bool,
}

/// The server programs of the newest PostgreSQL installed (Debian keeps
/// them under /usr/lib/postgresql/<version>/bin).
fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|bin| bin.join("initdb").exists());
    found.sort_by_key(|bin| {
        bin.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    found.pop().expect(
        "PostgreSQL's server programs are installed: the README's test command (./test.sh) installs them",
    )
}

fn as_postgres(program: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(pg_bin().join(program));
    cmd
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let chown = Command::new("chown").arg("postgres:postgres").arg(dir.path()).status().unwrap();
        assert!(chown.success(), "chown the data directory to postgres");
        let out = as_postgres("initdb")
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let mut pg = Self { port: 0, dir, running: false };
        for _ in 0..5 {
            pg.port = free_port();
            if pg.run() {
                return pg;
            }
        }
        panic!("the private PostgreSQL did not start:\n{}", pg.log());
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// `pg_ctl start` on our port; answers whether it accepts connections.
    fn run(&mut self) -> bool {
        let options = format!(
            "-h 127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        let out = as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("postgres.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        self.running = out.success();
        self.running
    }

    /// A database URL on this server (the `postgres` database).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (`immediate`: connections are cut, as in a
    /// crash; the next start recovers from the WAL).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let _ = as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "-t", "60", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.running = false;
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..5 {
            if self.run() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("the private PostgreSQL did not start again:\n{}", self.log());
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
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
