//! Metadata rewriting at its edges: the public URL, the size cap, and a
//! tarball that does not match the integrity its packument promises.

mod support;

use std::time::Duration;

use support::{client, Proxy, Upstream};

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
