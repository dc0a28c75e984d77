//! No open proxy: a client's request reaches its remote's `base_url` and
//! nothing else. Redirects from upstream are followed, but never into a
//! private network unless the remote itself is in one.
//!
//! Loopback stands in for both sides: `UPSTREAM_PRIVATE_NETWORKS=127.0.0.2/32`
//! makes 127.0.0.1 (where the upstreams listen) count as outside and
//! 127.0.0.2 as the private network, where a trap counts every connection
//! that reaches it. `UPSTREAM_RESOLVE` gives names without DNS.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use crate::support::{client, Proxy, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server on 127.0.0.2 that counts connections and answers each with a
/// small 200.
async fn trap() -> (u16, Arc<AtomicUsize>) {
    let listener =
        tokio::net::TcpListener::bind("127.0.0.2:0").await.expect("127.0.0.2 is loopback on Linux");
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ninside")
                    .await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (port, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_from_a_public_remote_never_reach_a_private_network() {
    let upstream = Upstream::start().await;
    let cdn = Upstream::start().await;
    cdn.put("/cdn/ok.tgz", "from the cdn", &[]);
    let (trap_port, trapped) = trap().await;
    let yaml = format!(
        "remotes:\n  files:\n    base_url: \"{{upstream}}\"\n    username: builder\n    password: s3cret\n  \
         inside:\n    base_url: \"http://inside.example.test:{trap_port}\"\n"
    );
    let resolve = format!(
        "inside.example.test=127.0.0.2:{trap_port},cdn.example.test={},rebound.example.test=127.0.0.2:{trap_port}",
        cdn.addr
    );
    let env = [("UPSTREAM_PRIVATE_NETWORKS", "127.0.0.2/32"), ("UPSTREAM_RESOLVE", resolve.as_str())];
    let proxy = Proxy::start_with(&yaml, &upstream.url(), &env).await;

    // Into the private network: by address, by a name that resolves there,
    // and by the name of another remote that lives there.
    for target in [
        format!("127.0.0.2:{trap_port}"),
        format!("rebound.example.test:{trap_port}"),
        format!("inside.example.test:{trap_port}"),
    ] {
        let path = format!("/api/files/redirect-host/{target}/x.tgz");
        let res = client().get(proxy.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), 502, "{target}");
        let text = res.text().await.unwrap();
        assert!(text.contains("private network refused"), "{target}: {text}");
        assert_eq!(trapped.load(Ordering::SeqCst), 0, "{target}: nothing reached the private network");
    }
    assert_eq!(proxy.cached_count("files").await, 0, "the refusals cached nothing");

    // Outside, by name: followed, and without the remote's credentials.
    let path = format!("/api/files/redirect-host/cdn.example.test:{}/cdn/ok.tgz", cdn.addr.port());
    let res = client().get(proxy.url(&path)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "from the cdn");
    let seen = cdn.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].headers.get("authorization").is_none(), "credentials stay with their host");
    assert!(upstream.requests().iter().all(|r| r.headers.get("authorization").is_some()));

    // A remote that is itself inside reaches its own network.
    let res = client().get(proxy.url("/api/inside/y.tgz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "inside");
    assert_eq!(trapped.load(Ordering::SeqCst), 1, "the trap counts what reaches it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_line_header_or_path_trick_reaches_another_host() {
    let upstream = Upstream::start().await;
    let (trap_port, trapped) = trap().await;
    let yaml = "remotes:\n  files:\n    base_url: \"{upstream}\"\n  hub:\n    base_url: \"{upstream}\"\n    package: docker\n";
    let proxy =
        Proxy::start_with(yaml, &upstream.url(), &[("UPSTREAM_PRIVATE_NETWORKS", "127.0.0.2/32")]).await;
    let t = format!("127.0.0.2:{trap_port}");
    let requests = [
        // Absolute-form request targets and Host headers are not destinations.
        format!("GET http://{t}/x.tgz HTTP/1.1\r\nHost: {t}\r\nConnection: close\r\n\r\n"),
        format!("GET http://{t}/api/files/a.tgz HTTP/1.1\r\nHost: {t}\r\nConnection: close\r\n\r\n"),
        format!("GET /api/files/b.tgz HTTP/1.1\r\nHost: {t}\r\nX-Forwarded-Host: {t}\r\nConnection: close\r\n\r\n"),
        format!("CONNECT {t} HTTP/1.1\r\nHost: {t}\r\nConnection: close\r\n\r\n"),
        // Paths that try to become a URL or an authority.
        format!("GET /api/files/@{t}/c.tgz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        format!("GET /api/files//{t}/d.tgz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        format!("GET /api/files/%2F%2F{t}/e.tgz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        format!("GET /api/files/http:%2F%2F{t}/f.tgz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        format!("GET /api/files/..%2F..%2F{t}/g.tgz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        format!("GET /api/files/%5C%5C{t}/h.tgz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        format!("GET /api/files/i.tgz?url=http://{t}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        format!("GET /api/{t}/j.tgz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        // The registry mirror: `ns` picks among configured remotes only.
        format!("GET /v2/library/k/manifests/latest?ns={t} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        format!("GET /v2/{t}/library/l/manifests/latest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        format!("GET /v2/hub/library/m/blobs/sha256:{} HTTP/1.1\r\nHost: {t}\r\nConnection: close\r\n\r\n", "a".repeat(64)),
    ];
    for request in &requests {
        let (status, body) = proxy.raw(request).await;
        assert!(status != 0, "an answer for {request:?}");
        assert_eq!(trapped.load(Ordering::SeqCst), 0, "{request:?} reached another host: {status} {body}");
    }
    // Whatever went upstream went to the remote's own host (the upstream
    // counted it) with a path under the remote.
    for seen in upstream.requests() {
        assert!(!seen.path.starts_with("//"), "{}", seen.path);
    }
    // And the trap is real: a remote pointing at it reaches it.
    let yaml = format!("remotes:\n  inside:\n    base_url: \"http://{t}\"\n");
    let inside = Proxy::start(&yaml, &upstream.url()).await;
    assert_eq!(client().get(inside.url("/api/inside/n.tgz")).send().await.unwrap().status(), 200);
    assert_eq!(trapped.load(Ordering::SeqCst), 1);
}

/// A registry that answers every request with a token challenge whose realm
/// is `realm`.
async fn challenging_registry(realm: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let realm = realm.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let answer = format!(
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"r\",scope=\"repository:library/app:pull\"\r\n\
                     Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_registry_cannot_send_its_token_request_or_credentials_inside() {
    let (trap_port, trapped) = trap().await;
    let registry = challenging_registry(format!("http://127.0.0.2:{trap_port}/token")).await;
    let yaml = "remotes:\n  hub:\n    base_url: \"{upstream}\"\n    package: docker\n    username: builder\n    password: s3cret\n";
    let proxy = Proxy::start_with(yaml, &registry, &[("UPSTREAM_PRIVATE_NETWORKS", "127.0.0.2/32")]).await;
    let res = client().get(proxy.url("/v2/hub/library/app/manifests/latest")).send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    assert!(status.is_server_error(), "{status}: {text}");
    assert!(text.contains("token realm refused"), "{text}");
    assert_eq!(trapped.load(Ordering::SeqCst), 0, "no token request went inside");
}

/// Issue 38: a URL an upstream *document* names passes the same gate as a
/// redirect. A Cargo `dl`, a Terraform discovery's `providers.v1` and a
/// provider's `download_url` that name an address inside (an IP literal,
/// which no resolver sees), or a public located URL that redirects inside:
/// 502 naming the rule, nothing reaches the trap, nothing is cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_that_upstream_documents_name_pass_the_egress_gate() {
    let upstream = Upstream::start().await;
    let (trap_port, trapped) = trap().await;
    let inside = format!("127.0.0.2:{trap_port}");
    let host = upstream.addr.to_string();
    let yaml = "remotes:\n  crates:\n    base_url: \"{upstream}/crates\"\n    package: cargo\n  \
                crates-bounce:\n    base_url: \"{upstream}/bounce\"\n    package: cargo\n  \
                tf:\n    base_url: \"{upstream}/tf\"\n    package: terraform\n  \
                tf-dl:\n    base_url: \"{upstream}/tfdl\"\n    package: terraform\n";
    let env = [("UPSTREAM_PRIVATE_NETWORKS", "127.0.0.2/32")];
    let proxy = Proxy::start_with(yaml, &upstream.url(), &env).await;

    // Cargo: `dl` names a private address outright, or a public URL that
    // redirects there.
    let json = |v: serde_json::Value| v.to_string();
    upstream.put(
        "/crates/config.json",
        json(serde_json::json!({ "dl": format!("http://{inside}/dl/{{crate}}/{{version}}/download") })),
        &[("content-type", "application/json")],
    );
    let bounce = format!("http://{host}/redirect-host/{inside}/dl/{{crate}}/{{version}}/download");
    upstream.put("/bounce/config.json", json(serde_json::json!({ "dl": bounce })), &[]);
    // Terraform: the discovery's protocol base is inside; or the protocol is
    // on upstream and a provider's download_url is inside.
    upstream.put(
        "/tf/.well-known/terraform.json",
        json(serde_json::json!({ "providers.v1": format!("http://{inside}/v1/providers/") })),
        &[],
    );
    upstream.put(
        "/tfdl/.well-known/terraform.json",
        json(serde_json::json!({ "providers.v1": "/tfdl/v1/providers/" })),
        &[],
    );
    upstream.put(
        "/tfdl/v1/providers/hashicorp/null/3.2.1/download/linux/amd64",
        json(serde_json::json!({
            "download_url": format!("http://{inside}/terraform-provider-null_3.2.1_linux_amd64.zip"),
            "shasum": "0".repeat(64),
            "filename": "terraform-provider-null_3.2.1_linux_amd64.zip",
        })),
        &[],
    );

    let zip = format!(
        "/api/tf-dl/{host}/hashicorp/null/3.2.1/linux_amd64/terraform-provider-null_3.2.1_linux_amd64.zip"
    );
    let cases = [
        ("/api/crates/dl/serde/1.0.0/download".to_owned(), "private network refused"),
        ("/api/crates-bounce/dl/serde/1.0.0/download".to_owned(), "private network refused"),
        (format!("/api/tf/{host}/hashicorp/null/index.json"), "private network refused"),
        (zip, "private network refused"),
    ];
    for (path, rule) in &cases {
        let res = client().get(proxy.url(path)).send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        assert_eq!(status, 502, "{path}: {text}");
        assert!(text.contains(rule) && text.contains("UPSTREAM_PRIVATE_NETWORKS"), "{path}: {text}");
        assert_eq!(trapped.load(Ordering::SeqCst), 0, "{path}: nothing reached the private network");
    }
    // Asked again: refused again (nothing was cached), and still nothing inside.
    for (path, _) in &cases {
        assert_eq!(client().get(proxy.url(path)).send().await.unwrap().status(), 502, "{path}");
    }
    assert_eq!(trapped.load(Ordering::SeqCst), 0);
    for remote in ["crates", "crates-bounce", "tf", "tf-dl"] {
        let listed = proxy.listing(remote).await;
        assert!(
            listed.iter().all(|(path, _)| !path.ends_with(".zip")
                && !path.ends_with("/download")
                && !path.ends_with("index.json")),
            "{remote}: {listed:?}"
        );
    }
    // The bounce really went through the public upstream first.
    assert!(upstream.count("GET", &format!("/redirect-host/{inside}/dl/serde/1.0.0/download")) >= 1);
}
