//! Test harness: a real upstream HTTP server on 127.0.0.1 that counts every
//! request it sees, and the proxy itself served on 127.0.0.1.

pub mod backends;
pub mod browser;
pub mod gomod;
pub mod nginx;
pub mod npm;
pub mod pypi;
pub mod registry;
pub mod s3relay;
pub mod tcprelay;

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use artifactapi::{app, config, settings::Settings};
use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderMap, Method, Response, StatusCode},
    Router,
};
use bytes::Bytes;
use futures_util::stream;
use sha2::{Digest, Sha256};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
}

#[derive(Clone)]
struct File {
    body: Bytes,
    headers: Vec<(String, String)>,
}

#[derive(Clone, Default)]
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    files: Arc<Mutex<HashMap<String, File>>>,
    /// Paths forced to answer a status instead.
    failing: Arc<Mutex<HashMap<String, u16>>>,
    /// Bodies of `/slow/...` that were sent to the end, by path.
    finished: Arc<Mutex<HashMap<String, usize>>>,
}

/// A counting upstream. Besides registered files it answers:
/// - `/redirect/{rest}` with 302 to `/{rest}`; `/loop/{name}` with 302 to itself; `/redirect-to/{port}/{rest}` to another port;
///   `/redirect-host/{host:port}/{rest}` to another host;
/// - `/truncated/{name}`: announces 1000 bytes, sends 500, breaks the connection;
/// - `/large/{bytes}/{name}`: a deterministic body of that size, streamed;
/// - `/chunked/{bytes}/{name}`: the same, without a `Content-Length`;
/// - `/status/{code}/{name}`: that status with `Retry-After: 7`;
/// - `/echo/{name}`: the query string as the body;
/// - `/hang/{name}`: never answers;
/// - `/slow/{chunks}/{delay_ms}/{name}`: `chunks` pieces of 64 KiB (the
///   `/large` content), one every `delay_ms`;
///
/// Registered files answer `If-None-Match` and `If-Modified-Since` with 304.
pub struct Upstream {
    pub addr: SocketAddr,
    shared: Shared,
}

impl Upstream {
    pub async fn start() -> Self {
        let shared = Shared::default();
        let state = shared.clone();
        let router = Router::new().fallback(move |req: Request| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(answer(&state, req).await) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `body` at `path` (with a leading `/`), with extra headers.
    pub fn put(&self, path: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) {
        self.shared.files.lock().unwrap().insert(
            path.to_owned(),
            File {
                body: body.into(),
                headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            },
        );
    }

    /// Stops serving `path` (it answers 404 from now on).
    pub fn remove(&self, path: &str) {
        self.shared.files.lock().unwrap().remove(path);
    }

    /// Makes `path` answer `status` until [`Upstream::heal`].
    pub fn fail(&self, path: &str, status: u16) {
        self.shared.failing.lock().unwrap().insert(path.to_owned(), status);
    }

    pub fn heal(&self, path: &str) {
        self.shared.failing.lock().unwrap().remove(path);
    }

    /// How many `/slow/...` bodies for `path` were sent to the end.
    pub fn finished(&self, path: &str) -> usize {
        self.shared.finished.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// How many requests of `method` reached `path` (without query).
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.requests().iter().filter(|s| s.method == method && s.path == path).count()
    }

    pub fn total(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }
}

/// The deterministic body of `/large/{len}/...`.
pub fn large_chunk(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let x = (offset + i).wrapping_mul(2654435761);
            (x >> 13) as u8 ^ (x >> 29) as u8
        })
        .collect()
}

pub fn large_sha256(len: u64) -> String {
    let mut hasher = Sha256::new();
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(1 << 20) as usize;
        hasher.update(large_chunk(offset, n));
        offset += n as u64;
    }
    hex::encode(hasher.finalize())
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn answer(state: &Shared, req: Request) -> Response<Body> {
    let path = req.uri().path().to_owned();
    state.seen.lock().unwrap().push(Seen {
        method: req.method().clone(),
        path: path.clone(),
        query: req.uri().query().map(str::to_owned),
        headers: req.headers().clone(),
    });
    let head = req.method() == Method::HEAD;
    if let Some(status) = state.failing.lock().unwrap().get(&path).copied() {
        return Response::builder()
            .status(status)
            .header(header::RETRY_AFTER, "7")
            .body(Body::from("failing on purpose"))
            .unwrap();
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let builder = Response::builder();
    match segments.as_slice() {
        ["loop", ..] => {
            builder.status(302).header(header::LOCATION, path.clone()).body(Body::empty()).unwrap()
        }
        ["redirect", rest @ ..] => builder
            .status(302)
            .header(header::LOCATION, format!("/{}", rest.join("/")))
            .body(Body::empty())
            .unwrap(),
        ["redirect-host", authority, rest @ ..] => builder
            .status(302)
            .header(header::LOCATION, format!("http://{authority}/{}", rest.join("/")))
            .body(Body::empty())
            .unwrap(),
        ["redirect-to", port, rest @ ..] => builder
            .status(302)
            .header(header::LOCATION, format!("http://127.0.0.1:{port}/{}", rest.join("/")))
            .body(Body::empty())
            .unwrap(),
        ["truncated", ..] => {
            // Headers and half the body go out; then the connection breaks.
            let chunks = stream::unfold(0, |step| async move {
                match step {
                    0 => Some((Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 500])), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Some((Err(std::io::Error::other("upstream breaks off")), 2))
                    }
                    _ => None,
                }
            });
            builder.header(header::CONTENT_LENGTH, 1000).body(Body::from_stream(chunks)).unwrap()
        }
        ["chunked", len, ..] => {
            // The /large content with no Content-Length (chunked encoding).
            let len: u64 = len.parse().unwrap();
            let body = Body::from_stream(stream::unfold(0u64, move |offset| async move {
                if offset >= len {
                    return None;
                }
                let n = (len - offset).min(64 * 1024) as usize;
                Some((Ok::<_, Infallible>(Bytes::from(large_chunk(offset, n))), offset + n as u64))
            }));
            builder.body(if head { Body::empty() } else { body }).unwrap()
        }
        ["large", len, ..] => {
            let len: u64 = len.parse().unwrap();
            let body = if head {
                Body::empty()
            } else {
                Body::from_stream(stream::unfold(0u64, move |offset| async move {
                    if offset >= len {
                        return None;
                    }
                    let n = (len - offset).min(64 * 1024) as usize;
                    Some((Ok::<_, Infallible>(Bytes::from(large_chunk(offset, n))), offset + n as u64))
                }))
            };
            builder
                .header(header::CONTENT_LENGTH, len)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(body)
                .unwrap()
        }
        ["status", code, ..] => builder
            .status(code.parse::<u16>().unwrap())
            .header(header::RETRY_AFTER, "7")
            .body(Body::from("upstream says no"))
            .unwrap(),
        ["echo", ..] => builder
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(req.uri().query().unwrap_or_default().to_owned()))
            .unwrap(),
        ["slow", chunks, delay, ..] => {
            let chunks: u64 = chunks.parse().unwrap();
            let delay = Duration::from_millis(delay.parse().unwrap());
            let len = chunks * 64 * 1024;
            let finished = state.finished.clone();
            let body = Body::from_stream(stream::unfold(0u64, move |offset| {
                let finished = finished.clone();
                let path = path.clone();
                async move {
                    if offset >= len {
                        return None;
                    }
                    tokio::time::sleep(delay).await;
                    let chunk = Bytes::from(large_chunk(offset, 64 * 1024));
                    // Counted with the last chunk: with a Content-Length the
                    // server need not poll the stream for its end.
                    if offset + 64 * 1024 >= len {
                        *finished.lock().unwrap().entry(path).or_default() += 1;
                    }
                    Some((Ok::<_, Infallible>(chunk), offset + 64 * 1024))
                }
            }));
            builder.header(header::CONTENT_LENGTH, len).body(if head { Body::empty() } else { body }).unwrap()
        }
        ["hang", ..] => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            builder.body(Body::empty()).unwrap()
        }
        _ => {
            let file = state.files.lock().unwrap().get(&path).cloned();
            match file {
                None => builder.status(StatusCode::NOT_FOUND).body(Body::from("not found")).unwrap(),
                Some(file) if not_modified(&file, req.headers()) => {
                    let mut b = builder.status(StatusCode::NOT_MODIFIED);
                    for (k, v) in file.headers.iter().filter(|(k, _)| k == "etag" || k == "last-modified") {
                        b = b.header(k.as_str(), v.as_str());
                    }
                    b.body(Body::empty()).unwrap()
                }
                Some(file) => {
                    let mut b = builder.header(header::CONTENT_LENGTH, file.body.len());
                    for (k, v) in &file.headers {
                        b = b.header(k.as_str(), v.as_str());
                    }
                    b.body(if head { Body::empty() } else { Body::from(file.body) }).unwrap()
                }
            }
        }
    }
}

fn not_modified(file: &File, req: &HeaderMap) -> bool {
    let stored = |name: &str| file.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        return stored("etag").is_some_and(|etag| inm.split(',').any(|t| t.trim() == etag));
    }
    match (req.get(header::IF_MODIFIED_SINCE).and_then(|v| v.to_str().ok()), stored("last-modified")) {
        (Some(since), Some(modified)) => since == modified,
        _ => false,
    }
}

/// A TCP gate in front of an upstream: forwards, refuses (nothing listens
/// on its port), or accepts and never answers.
pub struct Gate {
    pub addr: SocketAddr,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

#[derive(Clone, Copy, PartialEq)]
enum GateMode {
    Forward,
    Hang,
}

impl Gate {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gate = Self { addr: listener.local_addr().unwrap(), target, tasks: Default::default() };
        gate.serve(listener, GateMode::Forward);
        gate
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&self, listener: tokio::net::TcpListener, mode: GateMode) {
        let target = self.target;
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                let conn = tokio::spawn(async move {
                    if mode == GateMode::Hang {
                        let mut sink = tokio::io::sink();
                        let _ = tokio::io::copy(&mut client, &mut sink).await;
                        std::future::pending::<()>().await;
                    }
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Drops the listener and every connection: connections are refused.
    pub fn close(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    async fn reopen(&self, mode: GateMode) {
        self.close();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        let mut tries = 0;
        while socket.bind(self.addr).is_err() {
            tries += 1;
            assert!(tries < 100, "cannot rebind {}", self.addr);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.serve(socket.listen(64).unwrap(), mode);
    }

    /// Forwards again.
    pub async fn open(&self) {
        self.reopen(GateMode::Forward).await;
    }

    /// Accepts connections and never answers.
    pub async fn hang(&self) {
        self.reopen(GateMode::Hang).await;
    }
}

/// The proxy, served in this process on 127.0.0.1.
pub struct Proxy {
    pub addr: SocketAddr,
    pub data_dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts the proxy with `yaml`, where `{upstream}` stands for `upstream`'s URL.
    pub async fn start(yaml: &str, upstream: &str) -> Self {
        Self::start_with(yaml, upstream, &[]).await
    }

    /// Like [`Proxy::start`], with extra environment settings.
    pub async fn start_with(yaml: &str, upstream: &str, env: &[(&str, &str)]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), yaml, upstream, env).await
    }

    /// Like [`Proxy::start_with`], on an existing `DATA_DIR`.
    pub async fn start_in(
        data_dir: tempfile::TempDir,
        yaml: &str,
        upstream: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let config = config::parse(&yaml.replace("{upstream}", upstream)).expect("test config is valid");
        let dir = data_dir.path().to_str().unwrap().to_owned();
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let settings = Settings::from_lookup(|k| {
            if k == "DATA_DIR" {
                return Some(dir.clone());
            }
            env.get(k).cloned()
        })
        .unwrap();
        let router = app::build(&settings, &config).await.unwrap().router;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { addr, data_dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every blob file in the store, with its modification time.
    pub fn blob_files(&self) -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, std::time::SystemTime)>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push((path.clone(), entry.metadata().unwrap().modified().unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data_dir.path().join("blobs"), &mut out);
        out.sort();
        out
    }

    /// Sends `request_line_path` exactly as written (no client normalises it)
    /// and answers the status and body.
    pub async fn raw_get(&self, path: &str) -> (u16, String) {
        self.raw(&format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")).await
    }

    /// The first page of `GET /artifacts/{remote}`: each entry's path and
    /// when it expires (RFC 3339, UTC, to the millisecond: they compare as
    /// strings).
    pub async fn listing(&self, remote: &str) -> Vec<(String, Option<String>)> {
        let res = client().get(self.url(&format!("/artifacts/{remote}?limit=1000"))).send().await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                let path = item["path"].as_str().unwrap().to_owned();
                (path, item["expires_at"].as_str().map(str::to_owned))
            })
            .collect()
    }

    /// How many entries `GET /artifacts/{remote}` lists.
    pub async fn cached_count(&self, remote: &str) -> u64 {
        let res = client().get(self.url(&format!("/artifacts/{remote}"))).send().await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        json["count"].as_u64().unwrap_or(0)
    }

    /// Sends `request` as written (it should ask `Connection: close`);
    /// answers the status (0 when none came) and the body.
    pub async fn raw(&self, request: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut text = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut text))
            .await
            .expect("the proxy answers and closes")
            .unwrap();
        let text = String::from_utf8_lossy(&text).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
    }
}

/// A client that neither decompresses nor uses a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The built `artifactapi` binary, running with its own config and data
/// directory, on a port it chose itself.
pub struct Binary {
    child: std::process::Child,
    pub base: String,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    /// Starts the binary with `yaml` (where `{upstream}` stands for
    /// `upstream`) and extra environment; answers once it listens.
    pub fn start(yaml: &str, upstream: &str, env: &[(String, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("remotes.yaml"), yaml.replace("{upstream}", upstream)).unwrap();
        let (child, base, lines) = Self::spawn(dir.path(), env);
        Self { child, base, dir, env: env.to_vec(), lines }
    }

    fn spawn(
        dir: &std::path::Path,
        env: &[(String, String)],
    ) -> (std::process::Child, String, Arc<Mutex<Vec<String>>>) {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_artifactapi"))
            .env("CONFIG_PATH", dir.join("remotes.yaml"))
            .env("DATA_DIR", dir.join("data"))
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let pid = child.id();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("[artifactapi {pid}] {line}");
                kept.lock().unwrap().push(line.clone());
                if let Some(addr) = line.split("addr=").nth(1) {
                    let _ = tx.send(addr.split_whitespace().next().unwrap_or_default().to_owned());
                } else if let Some(addr) = line.split("\"addr\":\"").nth(1) {
                    // LOG_FORMAT=json
                    let _ = tx.send(addr.split('"').next().unwrap_or_default().to_owned());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).expect("the binary starts and logs its address");
        (child, format!("http://{addr}"), lines)
    }

    /// Kills the process with SIGKILL if it still runs (no clean-up of any
    /// kind) and starts it again on the same configuration, `DATA_DIR` and
    /// environment; it listens on a new port (see [`Binary::base`]). Log
    /// lines start afresh.
    pub fn restart(&mut self) {
        self.kill();
        let (child, base, lines) = Self::spawn(self.dir.path(), &self.env);
        (self.child, self.base, self.lines) = (child, base, lines);
    }

    /// Kills the process with SIGKILL and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The configuration file it runs with.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("remotes.yaml")
    }

    /// Its `DATA_DIR`.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Sends it a signal (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    /// Waits up to `timeout` for a log line containing `text`.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.lines.lock().unwrap().iter().any(|l| l.contains(text)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits up to `timeout` for the process to exit; answers its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The peak resident memory of the process so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory now (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// What its open file descriptors point to (`socket:[…]`, a path, …),
    /// one entry per descriptor.
    pub fn fd_targets(&self) -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|t| t.to_string_lossy().into_owned())
            .collect()
    }

    /// How many file descriptors it has open.
    pub fn open_fds(&self) -> usize {
        self.fd_targets().len()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server on a free port: `spawn` starts it on the port it is given,
/// and it is ready when `probe(port)` answers 2xx to curl. A port found free
/// can be taken before the server binds it, so a server that exits or never
/// answers is tried again on another port.
pub fn start_on_free_port(
    spawn: impl Fn(u16) -> std::process::Child,
    probe: impl Fn(u16) -> String,
) -> (std::process::Child, u16) {
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = spawn(port);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            let ready = std::process::Command::new("curl")
                .args(["-sf", "--noproxy", "*", "-o", "/dev/null", &probe(port)])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return (child, port);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("the server did not start on any port");
}

/// How long [`eventually`] waits, by default, for something a background task
/// does at once on an idle machine (a commit, an invalidation, a download
/// getting under way): generous, for a busy one.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `check` every 20 ms until it answers true, and fails the test,
/// naming `what` never happened, once `deadline` has passed. Tests wait for a
/// background event this way, never with a fixed sleep that a busy machine
/// outlasts. A synchronous check is `|| async { upstream.finished(path) == 1 }`.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < deadline, "gave up after {deadline:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every fill `proxy` has started so far is committed: a client
/// has a body's last byte before the proxy has stored it, and a lifetime
/// counts from the commit.
pub async fn committed(proxy: &Proxy) {
    let metrics = proxy.url("/metrics");
    eventually("every fill is committed", PATIENCE, || async { fills_in_flight(&metrics).await == 0 }).await;
}

/// `artifactapi_fills_in_flight` at `metrics_url` (a `/metrics` URL): fills
/// still fetching or committing, the replaced blob's deletion included (a
/// finished fill that lingers, joinable, does not count). Zero once every
/// fill started so far has finished.
pub async fn fills_in_flight(metrics_url: &str) -> u64 {
    let text = client().get(metrics_url).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("artifactapi_fills_in_flight "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no artifactapi_fills_in_flight in {metrics_url}:\n{text}"))
}
