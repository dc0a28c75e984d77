//! PyPI through the proxy with the real clients: pip and uv install packages
//! (with a dependency) from a pypiserver upstream — HTML pages with
//! root-relative links — and again with the upstream stopped.

use crate::support;

use std::{process::Command, time::Duration};

use crate::support::{
    client, eventually, fills_in_flight,
    pypi::{make_wheel, pip_install, serve_static_index, static_index, uv_install, venv, PypiServer},
    Proxy, PATIENCE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_and_uv_install_through_the_proxy_and_again_with_the_upstream_down() {
    let venv = venv();
    let work = tempfile::tempdir().unwrap();
    let packages = work.path().join("packages");
    std::fs::create_dir_all(&packages).unwrap();
    make_wheel(&packages, "alpha", "1.0", &["beta>=2"]);
    make_wheel(&packages, "beta", "2.0", &[]);
    let mut upstream = PypiServer::start(&venv, &packages);
    // Index pages expire after a second: the offline installs below need the
    // stale copies, not merely fresh ones.
    let config =
        "remotes:\n  pypi:\n    base_url: \"{upstream}\"\n    package: pypi\n    cache: { mutable_ttl: 1 }\n";
    let proxy = Proxy::start(config, &upstream.url).await;
    let index = proxy.url("/api/v1/remote/pypi/simple/");
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();

    // The page is rewritten: its links come back through the proxy.
    let page = client().get(proxy.url("/api/v1/remote/pypi/simple/alpha/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["vary"], "Accept");
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&proxy.url("/api/v1/remote/pypi/packages/alpha-1.0-py3-none-any.whl#sha256=")),
        "{html}"
    );

    // Behind an ingress, links use the external URL it reports.
    let page = client()
        .get(proxy.url("/api/pypi/simple/alpha/"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "artifacts.example.com")
        .send()
        .await
        .unwrap();
    let html = page.text().await.unwrap();
    assert!(
        html.contains(
            "https://artifacts.example.com/api/v1/remote/pypi/packages/alpha-1.0-py3-none-any.whl#sha256="
        ),
        "{html}"
    );

    let (ok, log) = pip_install(&venv, &index, &work.path().join("pip"), &home).await;
    assert!(ok, "pip install through the proxy failed:\n{log}");
    assert!(work.path().join("pip/alpha/__init__.py").exists());
    assert!(work.path().join("pip/beta/__init__.py").exists(), "the dependency came too");

    let (ok, log) = uv_install(&venv, &index, &work.path().join("uv"), &home).await;
    assert!(ok, "uv pip install through the proxy failed:\n{log}");
    assert!(work.path().join("uv/beta/__init__.py").exists());

    // Warm: with pypiserver gone (and every index page expired), both install
    // again from the cache.
    upstream.stop();
    // What pip and uv fetched is committed just after they had the bytes: wait
    // for every fill to have finished, then (time, not an event) for the
    // pages' mutable_ttl to run out.
    eventually("every fill to finish", PATIENCE, || async {
        fills_in_flight(&proxy.url("/metrics")).await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let pip_accept =
        "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.1, text/html;q=0.01";
    let page = client()
        .get(proxy.url("/api/v1/remote/pypi/simple/beta/"))
        .header("accept", pip_accept)
        .send()
        .await
        .unwrap();
    assert_eq!(page.headers()["x-cache-status"], "STALE");
    // Variants are cached apart: the HTML one was never fetched.
    let page = client()
        .get(proxy.url("/api/v1/remote/pypi/simple/beta/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 502);
    let (ok, log) = pip_install(&venv, &index, &work.path().join("pip-offline"), &home).await;
    assert!(ok, "pip install with the upstream down failed:\n{log}");
    assert!(work.path().join("pip-offline/beta/__init__.py").exists());
    let (ok, log) = uv_install(&venv, &index, &work.path().join("uv-offline"), &home).await;
    assert!(ok, "uv pip install with the upstream down failed:\n{log}");
    assert!(work.path().join("uv-offline/alpha/__init__.py").exists());
}

#[tokio::test]
async fn files_are_checked_against_the_sha256_their_index_page_promises() {
    let upstream = support::Upstream::start().await;
    let good = b"the real sdist".to_vec();
    let good_sha = support::sha256(&good);
    let wrong_sha = support::sha256(b"something else");
    upstream.put("/packages/good-1.0.tar.gz", good.clone(), &[]);
    upstream.put("/packages/bad-1.0.tar.gz", b"tampered bytes".to_vec(), &[]);
    let page = |name: &str, sha: &str| {
        format!("<html><body><a href=\"/packages/{name}-1.0.tar.gz#sha256={sha}\">{name}-1.0.tar.gz</a></body></html>")
    };
    upstream.put("/simple/good/", page("good", &good_sha), &[("content-type", "text/html")]);
    upstream.put("/simple/bad/", page("bad", &wrong_sha), &[("content-type", "text/html")]);
    let proxy =
        Proxy::start("remotes:\n  pypi:\n    base_url: \"{upstream}\"\n    package: pypi\n", &upstream.url())
            .await;

    for name in ["good", "bad"] {
        let html = client()
            .get(proxy.url(&format!("/api/pypi/simple/{name}/")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            html.contains(&proxy.url(&format!("/api/v1/remote/pypi/packages/{name}-1.0.tar.gz#sha256="))),
            "{html}"
        );
    }
    let res = client().get(proxy.url("/api/v1/remote/pypi/packages/good-1.0.tar.gz")).send().await.unwrap();
    assert_eq!(res.bytes().await.unwrap().to_vec(), good);

    for attempt in 1..=2 {
        let failed = match client().get(proxy.url("/api/v1/remote/pypi/packages/bad-1.0.tar.gz")).send().await
        {
            Ok(res) if res.status() == 200 => res.bytes().await.is_err(),
            Ok(res) => res.status() == 502,
            Err(_) => true,
        };
        assert!(failed, "a file that does not match its index is never served whole");
        // The failed fill is done with (its spool removed) only after its
        // client heard of the failure; a request before that would join it.
        eventually("the failed fill to finish", PATIENCE, || async {
            fills_in_flight(&proxy.url("/metrics")).await == 0
        })
        .await;
        assert_eq!(upstream.count("GET", "/packages/bad-1.0.tar.gz"), attempt, "and never cached");
    }
    assert!(listed(&proxy, "pypi").await.contains(&"packages/good-1.0.tar.gz".to_owned()));
    let res = client().get(proxy.url("/api/v1/remote/pypi/packages/good-1.0.tar.gz")).send().await.unwrap();
    assert_eq!(res.headers()["x-cache-status"], "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_and_uv_install_from_a_static_pep_691_and_pep_658_index() {
    let venv = venv();
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let packages = root.join("www/packages");
    std::fs::create_dir_all(&packages).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/make_wheel.py");
    for (name, version, requires) in [("alpha", "1.0", vec!["beta>=2"]), ("beta", "2.0", vec![])] {
        let status = Command::new("python3")
            .arg(script)
            .arg("--metadata")
            .arg(&packages)
            .args([name, version])
            .args(requires)
            .status()
            .unwrap();
        assert!(status.success());
    }
    static_index(&root.join("www"), &[("alpha", "1.0"), ("beta", "2.0")]);
    let (mut upstream, port) = serve_static_index(root);
    let config = "remotes:\n  static:\n    base_url: \"{upstream}\"\n    package: pypi\n    cache: { mutable_ttl: 1 }\n";
    let proxy = Proxy::start(config, &format!("http://127.0.0.1:{port}")).await;
    let index = proxy.url("/api/v1/remote/static/simple/");
    let home = root.join("home");
    std::fs::create_dir_all(&home).unwrap();

    // The JSON variant is served to JSON clients, rewritten.
    let pip_accept =
        "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.1, text/html;q=0.01";
    let res = client()
        .get(proxy.url("/api/static/simple/alpha/"))
        .header("accept", pip_accept)
        .send()
        .await
        .unwrap();
    assert!(res.headers()["content-type"].to_str().unwrap().contains("vnd.pypi.simple.v1+json"));
    let doc: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let url = doc["files"][0]["url"].as_str().unwrap().to_owned();
    assert_eq!(url, proxy.url("/api/v1/remote/static/packages/alpha-1.0-py3-none-any.whl"));
    // Every advertised .metadata URL works through the proxy.
    let res = client().get(format!("{url}.metadata")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("Requires-Dist: beta>=2"));
    let html =
        client().get(proxy.url("/api/static/simple/alpha/")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("data-core-metadata=\"sha256="), "{html}");

    let (ok, log) = pip_install(&venv, &index, &root.join("pip"), &home).await;
    assert!(ok, "pip install from the static index failed:\n{log}");
    let (ok, log) = uv_install(&venv, &index, &root.join("uv"), &home).await;
    assert!(ok, "uv pip install from the static index failed:\n{log}");
    assert!(root.join("uv/beta/__init__.py").exists());

    upstream.0.kill().unwrap();
    upstream.0.wait().unwrap();
    // Every fill finished (committed), then time, not an event: the pages'
    // mutable_ttl runs out.
    eventually("every fill to finish", PATIENCE, || async {
        fills_in_flight(&proxy.url("/metrics")).await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (ok, log) = uv_install(&venv, &index, &root.join("uv-offline"), &home).await;
    assert!(ok, "uv pip install with the upstream down failed:\n{log}");
    let (ok, log) = pip_install(&venv, &index, &root.join("pip-offline"), &home).await;
    assert!(ok, "pip install with the upstream down failed:\n{log}");
    assert!(root.join("pip-offline/alpha/__init__.py").exists());
}

#[tokio::test]
async fn fetching_a_new_file_from_the_files_remote_refreshes_the_cached_page() {
    let upstream = support::Upstream::start().await;
    let files = support::Upstream::start().await;
    let page = |versions: &[&str]| {
        let links: String = versions
            .iter()
            .map(|v| format!("<a href=\"{}/packages/gamma-{v}.tar.gz\">gamma-{v}.tar.gz</a>", files.url()))
            .collect();
        format!("<html><body>{links}</body></html>")
    };
    upstream.put("/simple/gamma/", page(&["1.0"]), &[("content-type", "text/html")]);
    files.put("/packages/gamma-1.0.tar.gz", "one", &[]);
    let config = format!(
        "remotes:\n  pypi:\n    base_url: \"{{upstream}}\"\n    package: pypi\n    pypi_files_url: \"{files}\"\n    pypi_files_remote: pypi-files\n  pypi-files:\n    base_url: \"{files}\"\n",
        files = files.url()
    );
    let proxy = Proxy::start(&config, &upstream.url()).await;
    let html = client().get(proxy.url("/api/pypi/simple/gamma/")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains(&proxy.url("/api/v1/remote/pypi-files/packages/gamma-1.0.tar.gz")), "{html}");
    assert!(!html.contains("gamma-1.1"));
    eventually("the page to be committed", PATIENCE, || async {
        !expiries(&proxy, "pypi", "simple/gamma/").await.is_empty()
    })
    .await;
    let fresh_until = expiries(&proxy, "pypi", "simple/gamma/").await;

    // 1.1 is published; a client that knows of it (a lock file) fetches it.
    upstream.put("/simple/gamma/", page(&["1.0", "1.1"]), &[("content-type", "text/html")]);
    files.put("/packages/gamma-1.1.tar.gz", "one point one", &[]);
    let res =
        client().get(proxy.url("/api/v1/remote/pypi-files/packages/gamma-1.1.tar.gz")).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "one point one");
    // Fetching it marked the cached page expired (before its answer went out).
    eventually("the cached page to be marked expired", PATIENCE, || async {
        let now = expiries(&proxy, "pypi", "simple/gamma/").await;
        !now.is_empty() && now.iter().all(|e| fresh_until.iter().all(|before| e < before))
    })
    .await;
    let html = client().get(proxy.url("/api/pypi/simple/gamma/")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("gamma-1.1.tar.gz"), "the cached page was refreshed: {html}");
    assert_eq!(upstream.count("GET", "/simple/gamma/"), 2);
}

/// The first page of `GET /artifacts/{remote}`: paths and expiry times.
async fn listing(proxy: &Proxy, remote: &str) -> Vec<(String, Option<String>)> {
    proxy.listing(remote).await
}

/// The paths of the entries of `remote`.
async fn listed(proxy: &Proxy, remote: &str) -> Vec<String> {
    listing(proxy, remote).await.into_iter().map(|(path, _)| path).collect()
}

/// When each entry of `remote` at `path` expires.
async fn expiries(proxy: &Proxy, remote: &str, path: &str) -> Vec<String> {
    listing(proxy, remote)
        .await
        .into_iter()
        .filter(|(p, _)| p == path)
        .map(|(_, expires)| expires.expect("metadata expires"))
        .collect()
}
