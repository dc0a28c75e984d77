//! The cache's lifecycle: purging entries, and what the store holds.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{client, Proxy, Upstream};

const TOKEN: &str = "lifecycle-token";

async fn get(proxy: &Proxy, path: &str, accept: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut req = client().get(proxy.url(path));
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let cache =
        res.headers().get("x-cache-status").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, cache, res.bytes().await.unwrap().to_vec())
}

async fn purge(proxy: &Proxy, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = client().delete(proxy.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, serde_json::from_slice(&res.bytes().await.unwrap()).unwrap_or(Value::Null))
}

async fn listing(proxy: &Proxy, remote: &str) -> Value {
    let res = client().get(proxy.url(&format!("/artifacts/{remote}"))).send().await.unwrap();
    serde_json::from_slice(&res.bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_a_file_makes_the_next_request_a_fresh_miss() {
    let upstream = Upstream::start().await;
    upstream.put("/rel/a.tgz", vec![1u8; 1000], &[]);
    upstream.put("/rel/b.tgz", vec![2u8; 500], &[]);
    let yaml = "remotes:\n  files:\n    base_url: \"{upstream}\"\n  internal:\n    type: local\n";
    let proxy = Proxy::start_with(yaml, &upstream.url(), &[("ADMIN_TOKEN", TOKEN)]).await;
    assert_eq!(get(&proxy, "/api/files/rel/a.tgz", None).await.1, "MISS");
    assert_eq!(get(&proxy, "/api/files/rel/b.tgz", None).await.1, "MISS");
    assert_eq!(get(&proxy, "/api/files/rel/a.tgz", None).await.1, "HIT");
    let list = listing(&proxy, "files").await;
    assert_eq!((list["count"].as_u64(), list["total_bytes"].as_u64()), (Some(2), Some(1500)));

    assert_eq!(purge(&proxy, "/cache/files/rel/a.tgz", None).await.0, 401);
    assert_eq!(purge(&proxy, "/cache/files/rel/a.tgz", Some("wrong")).await.0, 403);
    let (status, answer) = purge(&proxy, "/cache/files/rel/a.tgz", Some(TOKEN)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["removed"], 1);
    let list = listing(&proxy, "files").await;
    assert_eq!((list["count"].as_u64(), list["total_bytes"].as_u64()), (Some(1), Some(500)));
    let blobs = proxy.blob_files();
    assert_eq!(blobs.len(), 1, "the purged bytes are gone: {blobs:?}");

    // Fetched again from upstream, even within the linger of the first fill.
    let (status, cache, body) = get(&proxy, "/api/files/rel/a.tgz", None).await;
    assert_eq!((status, cache.as_str(), body.len()), (200, "MISS", 1000));
    assert_eq!(upstream.count("GET", "/rel/a.tgz"), 2);

    assert_eq!(purge(&proxy, "/cache/files/rel/never.tgz", Some(TOKEN)).await.0, 404);
    assert_eq!(purge(&proxy, "/cache/nope/x", Some(TOKEN)).await.0, 404);
    assert_eq!(purge(&proxy, "/cache/internal/x", Some(TOKEN)).await.0, 400, "local repositories are data");

    let metrics = client().get(proxy.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("artifactapi_purged_entries_total{remote=\"files\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_an_npm_packument_removes_both_variants() {
    let upstream = Upstream::start().await;
    let packument = |version: &str| {
        format!(
            "{{\"name\":\"left-pad\",\"dist-tags\":{{\"latest\":\"{version}\"}},\"versions\":{{\"{version}\":{{\"name\":\"left-pad\",\"version\":\"{version}\",\"dist\":{{\"tarball\":\"{}/left-pad/-/left-pad-{version}.tgz\"}}}}}}}}",
            upstream.url()
        )
    };
    upstream.put("/left-pad", packument("1.0.0"), &[("content-type", "application/json")]);
    let yaml = "remotes:\n  npm:\n    base_url: \"{upstream}\"\n    package: npm\n    npm_files_url: \"{upstream}\"\n    npm_files_remote: npm\n";
    let proxy = Proxy::start_with(yaml, &upstream.url(), &[("ADMIN_TOKEN", TOKEN)]).await;
    let abbreviated = Some("application/vnd.npm.install-v1+json");
    assert_eq!(get(&proxy, "/api/npm/left-pad", None).await.1, "MISS");
    assert_eq!(get(&proxy, "/api/npm/left-pad", abbreviated).await.1, "MISS");
    assert_eq!(get(&proxy, "/api/npm/left-pad", abbreviated).await.1, "HIT");
    assert_eq!(upstream.count("GET", "/left-pad"), 2);

    upstream.put("/left-pad", packument("1.0.1"), &[("content-type", "application/json")]);
    let (status, answer) = purge(&proxy, "/cache/npm/left-pad", Some(TOKEN)).await;
    assert_eq!((status, answer["removed"].as_u64()), (200, Some(2)), "{answer}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    for accept in [None, abbreviated] {
        let (_, cache, body) = get(&proxy, "/api/npm/left-pad", accept).await;
        assert_eq!(cache, "MISS");
        assert!(String::from_utf8(body).unwrap().contains("1.0.1"));
    }
    assert_eq!(upstream.count("GET", "/left-pad"), 4);
}
