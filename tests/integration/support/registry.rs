//! A real Docker registry (distribution's `docker-registry`) as an upstream,
//! images built without a container engine, and a counting front that can
//! demand tokens and inject faults.

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderValue, Response, StatusCode},
    Router,
};

use super::nginx::Kill;

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("{name} is not installed: the README's test command (./test.sh) installs it");
}

/// distribution's registry, serving from its own temporary storage.
pub struct Registry {
    child: Option<Kill>,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let (child, port) = super::start_on_free_port(
            |port| {
                let config = root.join(format!("config-{port}.yml"));
                std::fs::write(
                    &config,
                    format!(
                        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                        root.join("storage").display()
                    ),
                )
                .unwrap();
                Command::new(tool("docker-registry"))
                    .args(["serve", config.to_str().unwrap()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            },
            |port| format!("http://127.0.0.1:{port}/v2/"),
        );
        Self { child: Some(Kill(child)), port, _dir: dir }
    }

    /// Pushes the image tagged `tag` in the OCI layout `layout` as `dest`
    /// (`name:tag`), converted to Docker schema 2 with `v2s2`.
    pub fn push(&self, layout: &Path, tag: &str, dest: &str, v2s2: bool) {
        let mut args = vec![
            "copy".to_owned(),
            "--quiet".into(),
            "--dest-tls-verify=false".into(),
            "--multi-arch".into(),
            "all".into(),
        ];
        if v2s2 {
            args.extend(["--format".into(), "v2s2".into()]);
        }
        args.push(format!("oci:{}:{tag}", layout.display()));
        args.push(format!("docker://127.0.0.1:{}/{dest}", self.port));
        let out = Command::new(tool("skopeo")).args(&args).output().unwrap();
        assert!(out.status.success(), "skopeo push failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops the registry for good.
    pub fn stop(&mut self) {
        self.child.take();
    }
}

/// Writes an OCI layout with `make_oci.py`; answers the top digest.
pub fn make_image(
    dir: &Path,
    tag: &str,
    platforms: &str,
    layers: usize,
    layer_size: usize,
    seed: &str,
) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/make_oci.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg(tag)
        .args(["--platforms", platforms, "--layers", &layers.to_string()])
        .args(["--layer-size", &layer_size.to_string(), "--seed", seed])
        .output()
        .unwrap();
    assert!(out.status.success(), "make_oci.py failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs skopeo with `args`; answers whether it succeeded, and its stderr.
pub fn skopeo(args: &[&str]) -> (bool, String) {
    let out = Command::new(tool("skopeo")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// What the front saw.
#[derive(Default)]
struct FrontState {
    target: AtomicU16,
    seen: Mutex<Vec<(String, String)>>,
    credentials: Option<(String, String)>,
    issued: Mutex<HashSet<String>>,
    token_requests: AtomicUsize,
    corrupt: Mutex<HashSet<String>>,
    status: Mutex<Option<u16>>,
    down: AtomicBool,
    port: AtomicU16,
    /// Asks for Basic credentials instead of tokens.
    basic: bool,
    unauthorized: AtomicUsize,
    /// Where the token realm is said to be, when not this front itself.
    realm: Mutex<Option<String>>,
}

/// A counting front of a registry. With credentials it is a token-auth
/// registry: `/v2/` requests need a Bearer token from its own `/token`
/// endpoint, which needs those credentials.
#[derive(Clone)]
pub struct Front {
    pub addr: SocketAddr,
    state: Arc<FrontState>,
}

impl Front {
    pub async fn start(registry_port: u16, credentials: Option<(&str, &str)>) -> Self {
        Self::start_as(registry_port, credentials, false).await
    }

    /// A front that asks for Basic credentials (`WWW-Authenticate: Basic`).
    pub async fn start_basic(registry_port: u16, user: &str, password: &str) -> Self {
        Self::start_as(registry_port, Some((user, password)), true).await
    }

    async fn start_as(registry_port: u16, credentials: Option<(&str, &str)>, basic: bool) -> Self {
        let state = Arc::new(FrontState {
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
            basic,
            ..FrontState::default()
        });
        state.target.store(registry_port, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        state.port.store(addr.port(), Ordering::SeqCst);
        let app = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests with `method` whose path contains `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.state.seen.lock().unwrap().iter().filter(|(m, p)| m == method && p.contains(part)).count()
    }

    /// The paths of requests with `method` whose path contains `part`.
    pub fn paths(&self, method: &str, part: &str) -> Vec<String> {
        let seen = self.state.seen.lock().unwrap();
        seen.iter().filter(|(m, p)| m == method && p.contains(part)).map(|(_, p)| p.clone()).collect()
    }

    /// Every request to `/v2/...` so far.
    pub fn total(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    /// How many requests were answered 401.
    pub fn unauthorized(&self) -> usize {
        self.state.unauthorized.load(Ordering::SeqCst)
    }

    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Serves the blob `digest` with one byte changed (same length).
    pub fn corrupt(&self, digest: &str) {
        self.state.corrupt.lock().unwrap().insert(digest.to_owned());
    }

    pub fn heal(&self) {
        self.state.corrupt.lock().unwrap().clear();
        *self.state.status.lock().unwrap() = None;
        self.state.down.store(false, Ordering::SeqCst);
    }

    /// Names `{base}/token` as the token realm (a TLS front of this front).
    pub fn set_realm(&self, base: &str) {
        *self.state.realm.lock().unwrap() = Some(format!("{base}/token"));
    }

    /// Answers every `/v2/` request with `status` (429 with `Retry-After`).
    pub fn fail_with(&self, status: u16) {
        *self.state.status.lock().unwrap() = Some(status);
    }
}

fn answer(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
}

fn repository(path: &str) -> String {
    let rest = path.trim_start_matches("/v2/");
    for marker in ["/manifests/", "/blobs/", "/tags/"] {
        if let Some(i) = rest.find(marker) {
            return rest[..i].to_owned();
        }
    }
    rest.to_owned()
}

async fn handle(State(state): State<Arc<FrontState>>, req: Request) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path == "/token" {
        state.token_requests.fetch_add(1, Ordering::SeqCst);
        let Some((user, pass)) = &state.credentials else { return answer(StatusCode::NOT_FOUND, "") };
        let expected = format!("Basic {}", base64(&format!("{user}:{pass}")));
        if req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            return answer(StatusCode::UNAUTHORIZED, "{\"details\":\"bad credentials\"}");
        }
        let token = format!("tok-{}", state.token_requests.load(Ordering::SeqCst));
        state.issued.lock().unwrap().insert(token.clone());
        return answer(StatusCode::OK, format!("{{\"token\":\"{token}\",\"expires_in\":300}}"));
    }
    state.seen.lock().unwrap().push((req.method().to_string(), path.clone()));
    if let Some(status) = *state.status.lock().unwrap() {
        let mut response = answer(StatusCode::from_u16(status).unwrap(), "{\"errors\":[]}");
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        return response;
    }
    if let (true, Some((user, pass))) = (state.basic, &state.credentials) {
        let expected = format!("Basic {}", base64(&format!("{user}:{pass}")));
        if req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            state.unauthorized.fetch_add(1, Ordering::SeqCst);
            let mut response = answer(StatusCode::UNAUTHORIZED, "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"test\""));
            return response;
        }
    } else if state.credentials.is_some() && path != "/v2/" {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        if !token.is_some_and(|t| state.issued.lock().unwrap().contains(&t)) {
            let port = state.port.load(Ordering::SeqCst);
            let realm = state
                .realm
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_else(|| format!("http://127.0.0.1:{port}/token"));
            let challenge = format!(
                "Bearer realm=\"{realm}\",service=\"test-registry\",scope=\"repository:{}:pull\"",
                repository(&path)
            );
            state.unauthorized.fetch_add(1, Ordering::SeqCst);
            let mut response = answer(StatusCode::UNAUTHORIZED, "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_str(&challenge).unwrap());
            return response;
        }
    }
    let target = state.target.load(Ordering::SeqCst);
    let url =
        format!("http://127.0.0.1:{target}{}", req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let client =
        reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut upstream = client.request(req.method().clone(), url);
    for name in [header::ACCEPT, header::RANGE] {
        for value in req.headers().get_all(&name) {
            upstream = upstream.header(&name, value.clone());
        }
    }
    let response = match upstream.send().await {
        Ok(response) => response,
        Err(_) => return answer(StatusCode::BAD_GATEWAY, "registry unreachable"),
    };
    let mut out = Response::builder().status(response.status());
    for (name, value) in response.headers() {
        if name != header::TRANSFER_ENCODING && name != header::CONNECTION {
            out = out.header(name, value);
        }
    }
    let corrupt = state.corrupt.lock().unwrap().iter().any(|d| path.ends_with(&format!("/blobs/{d}")));
    if corrupt {
        let mut bytes = response.bytes().await.unwrap().to_vec();
        if let Some(b) = bytes.last_mut() {
            *b ^= 0xff;
        }
        return out.body(Body::from(bytes)).unwrap();
    }
    out.body(Body::from_stream(response.bytes_stream())).unwrap()
}

fn base64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= chunk.len() { A[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// containerd, run as root with its own root, state and socket, the CRI
/// plugin off.
pub struct Containerd {
    _child: Kill,
    dir: tempfile::TempDir,
}

impl Containerd {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("config.toml"),
            format!(
                "version = 2\nroot = \"{r}/root\"\nstate = \"{r}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{r}/containerd.sock\"\n",
                r = d.display()
            ),
        )
        .unwrap();
        let child = Command::new(tool("containerd"))
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let this = Self { _child: Kill(child), dir };
        for _ in 0..100 {
            if this.ctr(&["version"]).0 {
                return this;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("containerd did not start");
    }

    /// Runs `ctr` against this containerd.
    pub fn ctr(&self, args: &[&str]) -> (bool, String) {
        let socket = self.dir.path().join("containerd.sock");
        let out = Command::new(tool("ctr")).arg("--address").arg(socket).args(args).output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// A hosts directory that sends every pull of `registry` to `mirror`
    /// (and nowhere else: the fallback server is a closed local port).
    pub fn hosts_dir(&self, registry: &str, mirror: &str) -> PathBuf {
        let dir = self.dir.path().join("hosts");
        std::fs::create_dir_all(dir.join(registry)).unwrap();
        std::fs::write(
            dir.join(registry).join("hosts.toml"),
            format!("server = \"http://127.0.0.1:9\"\n[host.\"{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
        )
        .unwrap();
        dir
    }
}
