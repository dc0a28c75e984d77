//! TLS to upstreams as companies run them: nginx serving HTTPS with a
//! certificate from a private CA, and asking every client for a certificate
//! of that CA (`ssl_verify_client on`). Certificates are made by openssl for
//! each run.

use crate::support;

use std::{path::Path, process::Command, time::Duration};

use crate::support::{
    client, nginx,
    registry::{make_image, skopeo, Front, Registry},
    Binary,
};

/// A CA, a server certificate for 127.0.0.1 and a client certificate from
/// it; another CA with its own client certificate; a key of neither.
fn certificates(dir: &Path) {
    let script = r#"
set -e
ext() { printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=%s\n%s' "$1" "$2" > "$3.ext"; }
ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.pem" -days 2 -subj "/CN=$1" 2>/dev/null; }
leaf() { # name ca usage san
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  ext "$3" "$4" "$1"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -out "$1.pem" -days 2 -extfile "$1.ext" 2>/dev/null
}
ca ca
ca other-ca
leaf server ca serverAuth 'subjectAltName=IP:127.0.0.1'
leaf client ca clientAuth ''
leaf other-client other-ca clientAuth ''
openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 -out stray.key 2>/dev/null
"#;
    let status = Command::new("bash").arg("-c").arg(script).current_dir(dir).status().unwrap();
    assert!(status.success(), "openssl made the certificates");
}

struct Upstream {
    _nginx: nginx::Kill,
    port: u16,
    dir: tempfile::TempDir,
}

impl Upstream {
    /// nginx over mutual TLS serving files.
    fn start() -> Self {
        Self::start_with("")
    }

    /// nginx over mutual TLS, with `locations` in its server block. Why it
    /// refuses a client certificate goes to `client-errors.log` (nginx logs
    /// it at `info`).
    fn start_with(locations: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        certificates(dir.path());
        let d = dir.path().display();
        let server = format!(
            "ssl_certificate {d}/server.pem; ssl_certificate_key {d}/server.key;
             ssl_client_certificate {d}/ca.pem; ssl_verify_client on; error_log {d}/client-errors.log info;
             {locations}"
        );
        let (ca, cert, key) = (format!("{d}/ca.pem"), format!("{d}/client.pem"), format!("{d}/client.key"));
        let curl = ["--cacert", &ca, "--cert", &cert, "--key", &key];
        let (nginx, port) = nginx::start_tls(&dir.path().join("nginx"), &server, &curl);
        std::fs::create_dir_all(dir.path().join("nginx/www/rel")).unwrap();
        std::fs::write(dir.path().join("nginx/www/rel/tool.tar.gz"), "bytes over mutual TLS").unwrap();
        Self { _nginx: nginx, port, dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A remote of this upstream with `tls` (YAML lines, indented).
    fn remote(&self, name: &str, tls: &[(&str, &str)]) -> String {
        let mut yaml = format!("  {name}:\n    base_url: \"https://127.0.0.1:{}\"\n", self.port);
        if !tls.is_empty() {
            yaml.push_str("    tls:\n");
            for (key, file) in tls {
                yaml.push_str(&format!("      {key}: \"{}\"\n", self.file(file)));
            }
        }
        yaml
    }

    fn asked(&self, path: &str) -> usize {
        nginx::logged(&self.dir.path().join("nginx"), path)
    }

    /// How many requests nginx refused because they came without a client
    /// certificate (answered 400).
    fn refused_without_certificate(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("client-errors.log")).unwrap_or_default();
        log.lines().filter(|l| l.contains("client sent no required SSL certificate")).count()
    }
}

async fn get(proxy: &Binary, path: &str) -> (u16, String, String) {
    let res = client().get(proxy.url(path)).send().await.unwrap();
    let status = res.status().as_u16();
    let cache =
        res.headers().get("x-cache-status").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, cache, res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_and_a_client_certificate_reach_an_mtls_upstream_and_nothing_less_does() {
    let upstream = Upstream::start();
    let mut config = String::from("remotes:\n");
    config += &upstream.remote(
        "mtls",
        &[("ca_file", "ca.pem"), ("client_cert", "client.pem"), ("client_key", "client.key")],
    );
    config += &upstream.remote("no-cert", &[("ca_file", "ca.pem")]);
    config += &upstream.remote(
        "wrong-ca",
        &[("ca_file", "other-ca.pem"), ("client_cert", "client.pem"), ("client_key", "client.key")],
    );
    config += &upstream.remote("system-roots", &[]);
    let proxy = Binary::start(&config, "", &[]);

    let (status, cache, body) = get(&proxy, "/api/mtls/rel/tool.tar.gz").await;
    assert_eq!((status, cache.as_str(), body.as_str()), (200, "MISS", "bytes over mutual TLS"));
    support::eventually("the entry to be committed", support::PATIENCE, || async {
        get(&proxy, "/api/mtls/rel/tool.tar.gz").await.1 == "HIT"
    })
    .await;
    assert_eq!(upstream.asked("/rel/tool.tar.gz"), 1, "fetched once, then cached");

    // Without a client certificate nginx refuses the request (its 400,
    // logged as that), which is a 502 here.
    assert_eq!(upstream.refused_without_certificate(), 0);
    let (status, _, body) = get(&proxy, "/api/no-cert/rel/tool.tar.gz").await;
    println!("no client certificate: {status} {body}");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream answered 400 Bad Request"), "{body}");
    assert_eq!(upstream.refused_without_certificate(), 1, "nginx refused it for want of a certificate");
    // A CA that did not sign the server's certificate: the handshake
    // fails, and the error says why.
    let unknown_issuer = "invalid peer certificate: UnknownIssuer";
    let (status, _, body) = get(&proxy, "/api/wrong-ca/rel/tool.tar.gz").await;
    println!("a wrong CA: {status} {body}");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains(unknown_issuer), "the error names the certificate problem: {body}");
    let (status, _, body) = get(&proxy, "/api/system-roots/rel/tool.tar.gz").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains(unknown_issuer), "{body}");
    assert_eq!(upstream.asked("/rel/tool.tar.gz"), 2, "only the request without a certificate reached nginx");
}

/// Starts the binary on `config` and answers what it printed, once it exited
/// (within 30 s) or listened.
fn start_up(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("remotes.yaml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_artifactapi"))
        .env("CONFIG_PATH", dir.path().join("remotes.yaml"))
        .env("DATA_DIR", dir.path().join("data"))
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text =
                String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            return (status.success(), text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    (true, "still running".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_match_its_certificate_or_a_missing_file_stops_start_up_and_a_reload() {
    let upstream = Upstream::start();
    let bad_key = format!(
        "remotes:\n{}",
        upstream.remote(
            "mtls",
            &[("ca_file", "ca.pem"), ("client_cert", "client.pem"), ("client_key", "stray.key")]
        )
    );
    let (ok, text) = start_up(&bad_key);
    println!("a key that does not match: {text}");
    assert!(!ok, "started with a key that does not match its certificate: {text}");
    assert!(text.contains("remotes.mtls.tls"), "{text}");
    assert!(text.contains("client_key does not match the client_cert"), "names the key problem: {text}");

    let missing = format!("remotes:\n{}", upstream.remote("mtls", &[("ca_file", "nowhere.pem")]));
    let (ok, text) = start_up(&missing);
    assert!(!ok);
    assert!(text.contains("remotes.mtls.tls.ca_file") && text.contains("nowhere.pem"), "{text}");

    let half = format!("remotes:\n{}", upstream.remote("mtls", &[("client_cert", "client.pem")]));
    let (ok, text) = start_up(&half);
    assert!(!ok);
    assert!(text.contains("without `client_key`"), "{text}");

    // A reload with a bad key keeps the configuration that works.
    let good = format!(
        "remotes:\n{}",
        upstream.remote(
            "mtls",
            &[("ca_file", "ca.pem"), ("client_cert", "client.pem"), ("client_key", "client.key")]
        )
    );
    let proxy = Binary::start(&good, "", &[]);
    assert_eq!(get(&proxy, "/api/mtls/rel/tool.tar.gz").await.0, 200);
    std::fs::write(proxy.config_path(), &bad_key).unwrap();
    proxy.signal("HUP");
    assert!(proxy.wait_for_log("configuration not reloaded", Duration::from_secs(10)));
    assert!(proxy.wait_for_log("remotes.mtls.tls", Duration::from_secs(1)));
    assert_eq!(get(&proxy, "/api/mtls/rel/tool.tar.gz").await.0, 200, "still served");
}

/// A token-auth registry behind nginx over mutual TLS, its token realm
/// behind the same nginx: a docker remote with the CA and a client
/// certificate copies an image with skopeo; one without the certificate
/// gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_registry_and_its_token_realm_over_mutual_tls() {
    let registry = Registry::start();
    let images = tempfile::tempdir().unwrap();
    make_image(&images.path().join("app"), "v1", "linux/amd64", 2, 64 * 1024, "app");
    registry.push(&images.path().join("app"), "v1", "library/app:v1", false);
    let front = Front::start(registry.port, Some(("ci", "token-pw"))).await;
    let locations = format!(
        "location = /ready.txt {{ }}
         location / {{ proxy_pass http://{}; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}",
        front.addr
    );
    let upstream = Upstream::start_with(&locations);
    front.set_realm(&format!("https://127.0.0.1:{}", upstream.port));
    let remote = |name: &str, tls: &[(&str, &str)]| {
        upstream.remote(name, tls).replacen(
            "\n",
            "\n    package: docker\n    username: ci\n    password: token-pw\n",
            1,
        )
    };
    let mut config = String::from("remotes:\n");
    config +=
        &remote("reg", &[("ca_file", "ca.pem"), ("client_cert", "client.pem"), ("client_key", "client.key")]);
    config += &remote("reg-no-cert", &[("ca_file", "ca.pem")]);
    let proxy = Binary::start(&config, "", &[]);
    let host = proxy.base.trim_start_matches("http://").to_owned();

    let dest = tempfile::tempdir().unwrap();
    let (ok, err) = skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{host}/reg/library/app:v1"),
        &format!("oci:{}:x", dest.path().join("copy").display()),
    ]);
    assert!(ok, "skopeo copy over mutual TLS: {err}");
    assert!(front.token_requests() >= 1, "a token was asked for");
    assert!(upstream.asked("/token") >= 1, "through the TLS front, with the client certificate");
    assert!(front.count("GET", "/blobs/") >= 1);

    let (ok, _) = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{host}/reg-no-cert/library/app:v1"),
    ]);
    assert!(!ok, "no manifest without the client certificate");
    let refused = upstream.refused_without_certificate();
    assert!(refused >= 1, "nginx refused skopeo's requests for want of a certificate");
    let res = client().get(proxy.url("/v2/reg-no-cert/library/app/manifests/v1")).send().await.unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    println!("a manifest without the client certificate: {status} {body}");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream answered 400 Bad Request"), "{body}");
    assert!(upstream.refused_without_certificate() > refused, "nginx refused it for want of a certificate");
}

/// Issue 38: a remote's private CA and client certificate are for its own
/// origin. Its upstream redirects to another origin whose certificate the
/// same private CA signed and which asks for a client certificate: the
/// redirect is followed with the system's roots and no identity, so the
/// handshake fails and that server never sees a request. A redirect on the
/// remote's own origin keeps both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remotes_ca_and_client_certificate_do_not_follow_a_redirect_to_another_origin() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let d = dir.path().display();
    let server = |locations: &str| {
        format!(
            "ssl_certificate {d}/server.pem; ssl_certificate_key {d}/server.key;
             ssl_client_certificate {d}/ca.pem; ssl_verify_client on; {locations}"
        )
    };
    let (ca, cert, key) = (format!("{d}/ca.pem"), format!("{d}/client.pem"), format!("{d}/client.key"));
    let curl = ["--cacert", &ca, "--cert", &cert, "--key", &key];
    let (_elsewhere, elsewhere_port) = nginx::start_tls(&dir.path().join("elsewhere"), &server(""), &curl);
    std::fs::create_dir_all(dir.path().join("elsewhere/www/rel")).unwrap();
    std::fs::write(dir.path().join("elsewhere/www/rel/tool.tar.gz"), "elsewhere's bytes").unwrap();
    let redirects = format!(
        "location /away/ {{ return 302 https://127.0.0.1:{elsewhere_port}/rel/tool.tar.gz; }}
         location /here/ {{ return 302 /rel/tool.tar.gz; }}"
    );
    let (_own, own_port) = nginx::start_tls(&dir.path().join("own"), &server(&redirects), &curl);
    std::fs::create_dir_all(dir.path().join("own/www/rel")).unwrap();
    std::fs::write(dir.path().join("own/www/rel/tool.tar.gz"), "own bytes").unwrap();
    let config = format!(
        "remotes:\n  mtls:\n    base_url: \"https://127.0.0.1:{own_port}\"\n    tls:\n      \
         ca_file: \"{ca}\"\n      client_cert: \"{cert}\"\n      client_key: \"{key}\"\n"
    );
    let proxy = Binary::start(&config, "", &[]);

    let (status, _, body) = get(&proxy, "/api/mtls/here/x.tar.gz").await;
    assert_eq!((status, body.as_str()), (200, "own bytes"), "a redirect on the own origin keeps the TLS");
    let (status, _, body) = get(&proxy, "/api/mtls/away/x.tar.gz").await;
    println!("a redirect to another origin: {status} {body}");
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("invalid peer certificate: UnknownIssuer"),
        "the handshake failed on the CA: {body}"
    );
    assert_eq!(
        nginx::logged(&dir.path().join("elsewhere"), "/rel/tool.tar.gz"),
        0,
        "the other origin was never sent a request"
    );
    assert_eq!(nginx::logged(&dir.path().join("own"), "/away/x.tar.gz"), 1);
}
