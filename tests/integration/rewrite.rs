//! Metadata rewriting at its edges: the public URL, the size cap, and a
//! tarball that does not match the integrity its packument promises.

use crate::support;

use std::time::Duration;

use crate::support::{client, Proxy, Upstream};

#[tokio::test]
async fn links_use_public_url_and_oversized_documents_are_errors_not_truncations() {
    let upstream = Upstream::start().await;
    let small = "<a href=\"/packages/a-1.0.tar.gz\">a-1.0.tar.gz</a>";
    let large = format!("<html>{}</html>", small.repeat(200));
    upstream.put("/simple/a/", small, &[("content-type", "text/html")]);
    upstream.put("/simple/big/", large, &[("content-type", "text/html")]);
    let config = "remotes:\n  pypi:\n    base_url: \"{upstream}\"\n    package: pypi\n";
    let env = [("PUBLIC_URL", "https://artifacts.example.com/"), ("METADATA_MAX_BYTES", "4096")];
    let proxy = Proxy::start_with(config, &upstream.url(), &env).await;

    let html = client().get(proxy.url("/api/pypi/simple/a/")).send().await.unwrap().text().await.unwrap();
    assert!(
        html.contains("href=\"https://artifacts.example.com/api/v1/remote/pypi/packages/a-1.0.tar.gz\""),
        "{html}"
    );

    let res = client().get(proxy.url("/api/pypi/simple/big/")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    let text = res.text().await.unwrap();
    assert!(text.contains("METADATA_MAX_BYTES"), "{text}");
}

#[tokio::test]
async fn a_tarball_that_does_not_match_its_integrity_is_refused_and_not_cached() {
    let upstream = Upstream::start().await;
    // sha512 of the empty string: no real tarball has it.
    let integrity =
        "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==";
    let packument = serde_json::json!({
        "name": "evil",
        "versions": { "1.0.0": { "name": "evil", "version": "1.0.0", "dist": {
            "tarball": format!("{}/evil/-/evil-1.0.0.tgz", upstream.url()),
            "integrity": integrity,
        }}},
    });
    upstream.put("/evil", packument.to_string(), &[("content-type", "application/json")]);
    upstream.put("/evil/-/evil-1.0.0.tgz", "not what the packument promised", &[]);
    let config = "remotes:\n  npm:\n    base_url: \"{upstream}\"\n    package: npm\n    immutable_patterns: ['\\.tgz$']\n    mutable_patterns: ['^(?!.*\\.tgz$).*']\n";
    let proxy = Proxy::start(config, &upstream.url()).await;
    let doc: serde_json::Value = serde_json::from_slice(
        &client().get(proxy.url("/api/npm/evil")).send().await.unwrap().bytes().await.unwrap(),
    )
    .unwrap();
    let tarball = doc["versions"]["1.0.0"]["dist"]["tarball"].as_str().unwrap().to_owned();
    assert_eq!(tarball, proxy.url("/api/v1/remote/npm/evil/-/evil-1.0.0.tgz"));
    for attempt in 1..=2 {
        let failed = match client().get(&tarball).send().await {
            Ok(res) if res.status() == 200 => res.bytes().await.is_err(),
            Ok(res) => res.status() == 502,
            Err(_) => true,
        };
        assert!(failed, "a tarball that does not match its integrity is never served whole");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(upstream.count("GET", "/evil/-/evil-1.0.0.tgz"), attempt, "and never cached");
    }
}

/// After a restart no digest promise is in memory, and a client that has
/// the page already (or a lock file) asks for the file straight away: the
/// proxy reads the page through the cache first, so the file is still
/// checked. Upstream's page is asked for once in all: the second read is a
/// hit.
#[tokio::test]
async fn a_file_fetched_after_a_restart_is_checked_against_the_cached_page() {
    use sha2::{Digest, Sha256};
    let upstream = Upstream::start().await;
    let files = Upstream::start().await;
    let link = |v: &str, body: &str| {
        let sha = hex::encode(Sha256::digest(body.as_bytes()));
        format!("<a href=\"{}/packages/delta-{v}.tar.gz#sha256={sha}\">delta-{v}.tar.gz</a>", files.url())
    };
    let page = format!("<html><body>{}{}</body></html>", link("1.0", "one"), link("2.0", "two"));
    upstream.put("/simple/delta/", page, &[("content-type", "text/html")]);
    files.put("/packages/delta-1.0.tar.gz", "one", &[]);
    files.put("/packages/delta-2.0.tar.gz", "two", &[]);
    let config = format!(
        "remotes:\n  pypi:\n    base_url: \"{{upstream}}\"\n    package: pypi\n    pypi_files_url: \"{files}\"\n    pypi_files_remote: pypi-files\n  pypi-files:\n    base_url: \"{files}\"\n",
        files = files.url()
    );
    let mut proxy = support::Binary::start(&config, &upstream.url(), &[]);
    let html = client().get(proxy.url("/api/pypi/simple/delta/")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("/api/v1/remote/pypi-files/packages/delta-1.0.tar.gz"), "{html}");
    support::eventually("the page to be committed", support::PATIENCE, || async {
        proxy_listing(&proxy, "pypi").await.contains("simple/delta/")
    })
    .await;

    // The process dies; meanwhile the file is replaced upstream.
    proxy.restart();
    files.put("/packages/delta-1.0.tar.gz", "tampered", &[]);
    let url = proxy.url("/api/v1/remote/pypi-files/packages/delta-1.0.tar.gz");
    for _ in 0..2 {
        let refused = match client().get(&url).send().await {
            Ok(res) if res.status() == 200 => res.bytes().await.is_err(),
            Ok(res) => res.status() == 502,
            Err(_) => true,
        };
        assert!(refused, "a file that does not match the page's digest is never served whole");
    }
    assert_eq!(files.count("GET", "/packages/delta-1.0.tar.gz"), 2, "and never cached");
    // The untampered file is served, and cached.
    let two = proxy.url("/api/v1/remote/pypi-files/packages/delta-2.0.tar.gz");
    for _ in 0..2 {
        assert_eq!(client().get(&two).send().await.unwrap().text().await.unwrap(), "two");
    }
    assert_eq!(files.count("GET", "/packages/delta-2.0.tar.gz"), 1);
    assert_eq!(upstream.count("GET", "/simple/delta/"), 1, "the page was read from the cache");
}

/// The raw `GET /artifacts/{remote}` listing of a running binary.
async fn proxy_listing(proxy: &support::Binary, remote: &str) -> String {
    client().get(proxy.url(&format!("/artifacts/{remote}"))).send().await.unwrap().text().await.unwrap()
}
