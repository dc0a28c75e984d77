//! The cache's lifecycle: purging entries, and what the store holds.

use crate::support;

use std::time::Duration;

use crate::support::{client, Proxy, Upstream};
use serde_json::Value;

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

fn age(path: &std::path::Path, ago: &str) {
    let ok = std::process::Command::new("touch").arg("-d").arg(ago).arg(path).status().unwrap().success();
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_leftovers_are_cleaned_at_start_up() {
    use artifactapi_layers::store::{Entry, EntryClass, Index};
    let upstream = Upstream::start().await;
    upstream.put("/kept.tgz", "kept", &[]);
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    // What a killed process leaves: a spool file, a copy never renamed into
    // place, a blob whose row was never written, a row whose blob is gone.
    std::fs::create_dir_all(d.join("tmp")).unwrap();
    std::fs::write(d.join("tmp/fill-1.part"), "half").unwrap();
    std::fs::create_dir_all(d.join("blobs/files/1/2")).unwrap();
    std::fs::write(d.join("blobs/files/1/2/x.part"), "half").unwrap();
    std::fs::write(d.join("blobs/files/1/2/orphan.tgz"), "orphan").unwrap();
    std::fs::write(d.join("blobs/files/1/2/fresh.tgz"), "being committed").unwrap();
    std::fs::write(d.join("blobs/files/1/2/valid.tgz"), "valid").unwrap();
    for old in ["blobs/files/1/2/x.part", "blobs/files/1/2/orphan.tgz", "blobs/files/1/2/valid.tgz"] {
        age(&d.join(old), "2 hours ago");
    }
    {
        let index = artifactapi_services::index::SqliteIndex::open(&d.join("index.db")).await.unwrap();
        let entry = |path: &str, blob: &str| Entry {
            key: artifactapi_layers::ArtifactPath::parse(path, None).unwrap().cache_key("files"),
            remote: "files".into(),
            path: path.into(),
            blob: blob.into(),
            size: 5,
            class: EntryClass::Immutable,
            headers: vec![("content-type".into(), "application/gzip".into())],
            cached_at_ms: 1_000,
            expires_at_ms: None,
            policy: None,
        };
        index.put(entry("valid.tgz", "files/1/2/valid.tgz")).await.unwrap();
        index.put(entry("lost.tgz", "files/1/2/lost.tgz")).await.unwrap();
    }
    let yaml = "remotes:\n  files:\n    base_url: \"{upstream}\"\n";
    let proxy = Proxy::start_in(data, yaml, &upstream.url(), &[("CLEANUP_GRACE", "60")]).await;

    let d = proxy.data_dir.path();
    let mut cleaned = false;
    for _ in 0..100 {
        if !d.join("blobs/files/1/2/orphan.tgz").exists() && listing(&proxy, "files").await["count"] == 1 {
            cleaned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cleaned, "the orphan blob and the orphan row go: {:?}", proxy.blob_files());
    assert!(!d.join("tmp/fill-1.part").exists());
    assert!(!d.join("blobs/files/1/2/x.part").exists());
    assert!(d.join("blobs/files/1/2/fresh.tgz").exists(), "a blob younger than the grace period stays");
    // The valid entry is untouched; the lost one is a fresh miss.
    assert_eq!(get(&proxy, "/api/files/valid.tgz", None).await, (200, "HIT".into(), b"valid".to_vec()));
    upstream.put("/lost.tgz", "found again", &[]);
    assert_eq!(get(&proxy, "/api/files/lost.tgz", None).await, (200, "MISS".into(), b"found again".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_multipart_uploads_and_orphan_objects_are_cleaned_in_s3() {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use support::backends::{unique, Garage};
    let upstream = Upstream::start().await;
    upstream.put("/kept.tgz", "kept", &[]);
    let garage = Garage::start();
    let bucket = format!("cleanup-{}", unique());
    let env = garage.env(&bucket);
    let value = |k: &str| env.iter().find(|(key, _)| key == k).unwrap().1.clone();
    let mut env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env_refs.extend([("CLEANUP_INTERVAL", "0.5"), ("CLEANUP_GRACE", "1")]);
    let proxy =
        Proxy::start_with("remotes:\n  files:\n    base_url: \"{upstream}\"\n", &upstream.url(), &env_refs)
            .await;
    assert_eq!(get(&proxy, "/api/files/kept.tgz", None).await.1, "MISS");

    // A crashed replica's upload, and an object no row points to.
    let endpoint = value("MINIO_ENDPOINT");
    let endpoint = if endpoint.contains("://") { endpoint } else { format!("http://{endpoint}") };
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            value("MINIO_ACCESS_KEY"),
            value("MINIO_SECRET_KEY"),
            None,
            None,
            "test",
        ))
        .force_path_style(true)
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(config);
    let upload =
        s3.create_multipart_upload().bucket(&bucket).key("files/crashed/upload.bin").send().await.unwrap();
    assert!(upload.upload_id().is_some());
    s3.put_object()
        .bucket(&bucket)
        .key("files/orphan/object.bin")
        .body(b"orphan".to_vec().into())
        .send()
        .await
        .unwrap();

    let mut clean = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let uploads = s3.list_multipart_uploads().bucket(&bucket).send().await.unwrap();
        let objects = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
        let keys: Vec<_> = objects.contents().iter().filter_map(|o| o.key()).collect();
        if uploads.uploads().is_empty() && !keys.contains(&"files/orphan/object.bin") {
            assert_eq!(keys.len(), 1, "the cached file stays: {keys:?}");
            clean = true;
            break;
        }
    }
    assert!(clean, "the unfinished upload is aborted and the orphan object deleted");
    assert_eq!(get(&proxy, "/api/files/kept.tgz", None).await, (200, "HIT".into(), b"kept".to_vec()));
}

async fn count(proxy: &Proxy, remote: &str) -> u64 {
    listing(proxy, remote).await["count"].as_u64().unwrap_or(0)
}

async fn wait_for_count(proxy: &Proxy, remote: &str, expected: u64) -> bool {
    for _ in 0..100 {
        if count(proxy, remote).await == expected {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_budget_the_least_recently_used_go_and_local_artifacts_stay() {
    let upstream = Upstream::start().await;
    for i in 1..=4 {
        upstream.put(&format!("/f{i}.bin"), vec![i as u8; 1000], &[]);
    }
    let yaml = "remotes:\n  files:\n    base_url: \"{upstream}\"\n  small:\n    base_url: \"{upstream}\"\n    cache:\n      max_bytes: 1500\n  internal:\n    type: local\n";
    let env = [("CACHE_MAX_BYTES", "4200"), ("CACHE_EVICT_INTERVAL", "0.2")];
    let proxy = Proxy::start_with(yaml, &upstream.url(), &env).await;
    let put = client().put(proxy.url("/api/internal/tool.bin")).body(vec![9u8; 1000]).send().await.unwrap();
    assert!(put.status().is_success());

    let pause = || tokio::time::sleep(Duration::from_millis(30));
    assert_eq!(get(&proxy, "/api/files/f1.bin", None).await.1, "MISS");
    pause().await;
    assert_eq!(get(&proxy, "/api/files/f2.bin", None).await.1, "MISS");
    pause().await;
    assert_eq!(get(&proxy, "/api/files/f1.bin", None).await.1, "HIT", "f1 is used again");
    pause().await;
    assert_eq!(get(&proxy, "/api/files/f3.bin", None).await.1, "MISS");
    assert_eq!(get(&proxy, "/api/files/f4.bin", None).await.1, "MISS");
    // 4000 cached + 1000 local > 4200: the least recently used (f2) goes.
    let mut paths = Vec::new();
    for _ in 0..100 {
        paths = listing(&proxy, "files").await["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["path"].as_str().unwrap().to_owned())
            .collect::<Vec<String>>();
        if paths == ["f1.bin", "f3.bin", "f4.bin"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(paths, ["f1.bin", "f3.bin", "f4.bin"]);
    assert_eq!(get(&proxy, "/api/internal/tool.bin", None).await.2, vec![9u8; 1000], "local artifacts stay");
    assert_eq!(get(&proxy, "/api/files/f1.bin", None).await.1, "HIT");
    let metrics = client().get(proxy.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("artifactapi_evicted_entries_total 1\n"), "{metrics}");
    assert!(metrics.contains("artifactapi_evicted_bytes_total 1000\n"), "{metrics}");

    // A remote's own budget, with no total one.
    let env = [("CACHE_EVICT_INTERVAL", "0.2")];
    let proxy = Proxy::start_with(yaml, &upstream.url(), &env).await;
    assert_eq!(get(&proxy, "/api/small/f1.bin", None).await.1, "MISS");
    pause().await;
    assert_eq!(get(&proxy, "/api/small/f2.bin", None).await.1, "MISS");
    assert_eq!(get(&proxy, "/api/files/f3.bin", None).await.1, "MISS");
    assert_eq!(get(&proxy, "/api/files/f4.bin", None).await.1, "MISS");
    let mut only_f2 = false;
    for _ in 0..100 {
        let items = listing(&proxy, "small").await;
        if items["count"] == 1 && items["items"][0]["path"] == "f2.bin" {
            only_f2 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(only_f2, "the older entry of the remote over its budget went");
    assert_eq!(count(&proxy, "files").await, 2, "other remotes are not touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_in_progress_during_eviction_completes_intact() {
    use futures_util::StreamExt;
    let upstream = Upstream::start().await;
    let yaml = "remotes:\n  files:\n    base_url: \"{upstream}\"\n";
    // Larger than what socket buffers hold: the proxy is still reading the
    // blob while the client pauses.
    let env = [("CACHE_MAX_BYTES", "40M"), ("CACHE_EVICT_INTERVAL", "0.2")];
    let proxy = Proxy::start_with(yaml, &upstream.url(), &env).await;
    let big = "/api/files/large/33554432/big.bin";
    assert_eq!(get(&proxy, big, None).await.2.len(), 33554432);

    // A slow client starts reading the cached file...
    let res = client().get(proxy.url(big)).send().await.unwrap();
    assert_eq!(res.headers()["x-cache-status"], "HIT");
    let mut stream = res.bytes_stream();
    let mut body = stream.next().await.unwrap().unwrap().to_vec();
    // ...and another file pushes the store past its budget while it does.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(&proxy, "/api/files/large/16777216/other.bin", None).await.1, "MISS");
    assert!(wait_for_count(&proxy, "files", 1).await, "back within the budget");
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(support::sha256(&body), support::large_sha256(33554432), "the download completed intact");
    let items = listing(&proxy, "files").await;
    assert_eq!(items["items"][0]["path"], "large/33554432/big.bin", "the file being read was not evicted");
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct TinyFs(tempfile::TempDir);

impl TinyFs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root (as the test command runs): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir)
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_still_answers_uncached_and_leaves_nothing_behind() {
    let upstream = Upstream::start().await;
    upstream.put("/small.txt", "fits", &[]);
    let fs = TinyFs::mount("2m");
    let data = tempfile::tempdir_in(fs.0.path()).unwrap();
    let yaml = "remotes:\n  files:\n    base_url: \"{upstream}\"\n";
    let proxy = Proxy::start_in(data, yaml, &upstream.url(), &[]).await;

    // 3 MiB cannot be stored on 2 MiB: the client gets it whole anyway.
    let big = "/api/files/large/3145728/big.bin";
    for round in 1..=2 {
        let (status, cache, body) = get(&proxy, big, None).await;
        assert_eq!((status, cache.as_str()), (200, "MISS"), "round {round}");
        assert_eq!(support::sha256(&body), support::large_sha256(3145728), "round {round}");
    }
    assert_eq!(upstream.count("GET", "/large/3145728/big.bin"), 2, "served uncached, each time");
    assert_eq!(count(&proxy, "files").await, 0);
    let leftovers: Vec<_> = std::fs::read_dir(proxy.data_dir.path().join("tmp")).unwrap().flatten().collect();
    assert!(leftovers.is_empty(), "nothing half-written: {leftovers:?}");
    assert!(proxy.blob_files().is_empty());
    // What fits is still cached.
    assert_eq!(get(&proxy, "/api/files/small.txt", None).await.1, "MISS");
    assert_eq!(get(&proxy, "/api/files/small.txt", None).await.1, "HIT");
    let metrics = client().get(proxy.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("artifactapi_store_full_total 2"), "{metrics}");

    // No length announced: the spool fills up part way, and the client gets
    // the rest straight from upstream.
    let unannounced = "/api/files/chunked/3145728/stream.bin";
    let (status, _, body) = get(&proxy, unannounced, None).await;
    assert_eq!(status, 200);
    assert_eq!(support::sha256(&body), support::large_sha256(3145728), "whole, though the disk filled up");
    assert_eq!(count(&proxy, "files").await, 1, "only small.txt is cached");
    let leftovers: Vec<_> = std::fs::read_dir(proxy.data_dir.path().join("tmp")).unwrap().flatten().collect();
    assert!(leftovers.is_empty(), "nothing half-written: {leftovers:?}");
    let metrics = client().get(proxy.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("artifactapi_store_full_total 3"), "{metrics}");
}

fn flush_url(proxy: &Proxy, query: &str) -> String {
    proxy.url(&format!("/cache/flush?{query}"))
}

async fn flush(url: String) -> Value {
    let res = client().put(url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 200);
    serde_json::from_slice(&res.bytes().await.unwrap()).unwrap()
}

/// The `X-Cache-Status` and `X-Artifact-Source` of a GET.
async fn statuses(url: String) -> (String, String) {
    let res = client().get(url).send().await.unwrap();
    let header =
        |name: &str| res.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let answer = (header("x-cache-status"), header("x-artifact-source"));
    res.bytes().await.unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_right_after_a_fill_is_never_answered_from_that_fill() {
    let upstream = Upstream::start().await;
    upstream.put("/rel/a.tgz", vec![1u8; 1000], &[]);
    upstream.put("/rel/b.tgz", vec![2u8; 1000], &[]);
    upstream.put("/meta/index.json", "v1", &[("etag", "\"v1\"")]);
    let yaml = "remotes:\n  files:\n    base_url: \"{upstream}\"\n    mutable_patterns: ['\\.json$']\n  other:\n    base_url: \"{upstream}\"\n";
    let proxy = Proxy::start_with(yaml, &upstream.url(), &[("ADMIN_TOKEN", TOKEN)]).await;
    let file = |remote: &str, path: &str| proxy.url(&format!("/api/{remote}{path}"));

    // The fill's commit is a moment old when the flush removes the entry:
    // the finished fill (joinable for two seconds) must not answer for it.
    assert_eq!(statuses(file("files", "/rel/a.tgz")).await, ("MISS".into(), "remote".into()));
    assert_eq!(flush(flush_url(&proxy, "all=true")).await["removed"], 1);
    assert_eq!(statuses(file("files", "/rel/a.tgz")).await, ("MISS".into(), "remote".into()));
    assert_eq!(upstream.count("GET", "/rel/a.tgz"), 2);

    // Flushing one remote forgets that remote's fills, not another's.
    assert_eq!(statuses(file("files", "/rel/b.tgz")).await.0, "MISS");
    assert_eq!(statuses(file("other", "/rel/b.tgz")).await.0, "MISS");
    assert_eq!(flush(flush_url(&proxy, "remote=files&all=true")).await["removed"], 2, "a.tgz and b.tgz");
    assert_eq!(statuses(file("files", "/rel/b.tgz")).await.0, "MISS");
    assert_eq!(statuses(file("other", "/rel/b.tgz")).await.0, "HIT");
    assert_eq!(upstream.count("GET", "/rel/b.tgz"), 3);

    // Without all=true, mutable entries expire: the next request asks
    // upstream (conditionally), never a HIT from the fill just finished.
    assert_eq!(statuses(file("files", "/meta/index.json")).await.0, "MISS");
    assert_eq!(flush(flush_url(&proxy, "remote=files")).await["expired"], 1);
    assert_ne!(statuses(file("files", "/meta/index.json")).await.0, "HIT");
    assert_eq!(upstream.count("GET", "/meta/index.json"), 2);

    // A remembered 404 is forgotten too: a file published since is found.
    let (status, _, _) = get(&proxy, "/api/files/rel/new.tgz", None).await;
    assert_eq!(status, 404);
    upstream.put("/rel/new.tgz", "new", &[]);
    assert_eq!(get(&proxy, "/api/files/rel/new.tgz", None).await.0, 404, "remembered for negative_ttl");
    flush(flush_url(&proxy, "remote=files")).await;
    assert_eq!(get(&proxy, "/api/files/rel/new.tgz", None).await, (200, "MISS".into(), b"new".to_vec()));
    assert_eq!(upstream.count("GET", "/rel/new.tgz"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_replicas_a_flush_or_purge_that_answered_leaves_no_hit_anywhere() {
    use support::backends::{unique, Garage, PgDatabase};
    let upstream = Upstream::start().await;
    let garage = Garage::start();
    let db = PgDatabase::create();
    let mut env = garage.env(&format!("flush-{}", unique()));
    env.push(("DATABASE_URL".into(), db.url()));
    env.push(("REDIS_URL".into(), "redis://127.0.0.1:6379".into()));
    env.push(("REDIS_PREFIX".into(), format!("artifactapi-test:{}:", unique())));
    env.push(("ADMIN_TOKEN".into(), TOKEN.into()));
    let yaml = "remotes:\n  files:\n    base_url: \"{upstream}\"\n";
    let a = support::Binary::start(yaml, &upstream.url(), &env);
    let b = support::Binary::start(yaml, &upstream.url(), &env);
    let admin = |req: reqwest::RequestBuilder| async move {
        let res = req.bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(res.status(), 200);
    };
    upstream.put("/rel/a.tgz", "a", &[]);
    upstream.put("/rel/b.tgz", "b", &[]);

    // Replica b's finished fill (and its memory copy of the entry) are a
    // moment old when replica a flushes: b's next answer is not from them.
    assert_eq!(statuses(b.url("/api/files/rel/a.tgz")).await.0, "MISS");
    admin(client().put(a.url("/cache/flush?all=true"))).await;
    assert_eq!(statuses(b.url("/api/files/rel/a.tgz")).await, ("MISS".into(), "remote".into()));
    assert_eq!(upstream.count("GET", "/rel/a.tgz"), 2);

    // The same for a purge.
    assert_eq!(statuses(b.url("/api/files/rel/b.tgz")).await.0, "MISS");
    admin(client().delete(a.url("/cache/files/rel/b.tgz"))).await;
    assert_eq!(statuses(b.url("/api/files/rel/b.tgz")).await.0, "MISS");
    assert_eq!(upstream.count("GET", "/rel/b.tgz"), 2);

    // Past the linger, an entry served from b's memory copy: the flush
    // through a reaches it before a answers.
    tokio::time::sleep(Duration::from_millis(2200)).await; // the linger's two seconds pass
    assert_eq!(statuses(b.url("/api/files/rel/b.tgz")).await.0, "HIT");
    admin(client().put(a.url("/cache/flush?all=true"))).await;
    assert_eq!(statuses(b.url("/api/files/rel/b.tgz")).await.0, "MISS");
    assert_eq!(upstream.count("GET", "/rel/b.tgz"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_fills_is_evicted_as_it_lands_not_on_the_next_interval() {
    const BUDGET: u64 = 20_000_000;
    const SIZE: u64 = 5 * 1024 * 1024;
    let upstream = Upstream::start().await;
    let yaml = "remotes:\n  files:\n    base_url: \"{upstream}\"\n";
    // The interval is an hour: only the commits can wake eviction here.
    let env = [("CACHE_MAX_BYTES", "20000000"), ("CACHE_EVICT_INTERVAL", "3600")];
    let proxy = Proxy::start_with(yaml, &upstream.url(), &env).await;
    let mut peak = 0;
    for i in 1..=8 {
        let path = format!("large/{SIZE}/f{i}.bin");
        let (status, cache, body) = get(&proxy, &format!("/api/files/{path}"), None).await;
        assert_eq!((status, cache.as_str(), body.len() as u64), (200, "MISS", SIZE));
        // Once this fill is committed, eviction brings the store back within
        // its budget before the next fill (so it never holds more than one
        // artifact over it), with no interval to wake it.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let list = listing(&proxy, "files").await;
            let total = list["total_bytes"].as_u64().unwrap();
            peak = peak.max(total);
            let committed =
                list["items"].as_array().unwrap().iter().any(|item| item["path"] == path.as_str());
            if committed && total <= BUDGET {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "after fill {i}: {path} committed {committed}, {total} bytes stored"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(peak <= BUDGET + SIZE, "the store held {peak} bytes at one point");
    assert_eq!(count(&proxy, "files").await, BUDGET / SIZE, "as many as fit, the newest");
    let items = listing(&proxy, "files").await;
    assert_eq!(items["items"][0]["path"], format!("large/{SIZE}/f6.bin"));
}

/// Least recently used, under load (issue 39): with a 20 MB budget, a
/// small file read between each of five 5 MiB fills is the one file that
/// stays with the newest fills; repeated 20 times, with two threads
/// spinning to load the CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_read_between_fills_outlives_them_even_with_the_cpu_loaded() {
    const SIZE: u64 = 5 * 1024 * 1024;
    let upstream = Upstream::start().await;
    let yaml = "remotes:\n  files:\n    base_url: \"{upstream}\"\n";
    let env = [("CACHE_MAX_BYTES", "20000000"), ("CACHE_EVICT_INTERVAL", "3600")];
    let proxy = Proxy::start_with(yaml, &upstream.url(), &env).await;
    let spinning = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let spinning = spinning.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while spinning.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            })
        })
        .collect();
    let mut lost = Vec::new();
    for round in 0..20 {
        let kept = format!("/rel/kept-{round}.tgz");
        upstream.put(&kept, vec![round as u8; 1000], &[]);
        assert_eq!(get(&proxy, &format!("/api/files{kept}"), None).await.1, "MISS");
        for i in 1..=5 {
            let (status, _, body) =
                get(&proxy, &format!("/api/files/large/{SIZE}/r{round}-f{i}.bin"), None).await;
            assert_eq!((status, body.len() as u64), (200, SIZE));
            let (status, _, body) = get(&proxy, &format!("/api/files{kept}"), None).await;
            assert_eq!((status, body.len()), (200, 1000));
        }
        support::committed(&proxy).await;
        let listed = listing(&proxy, "files").await;
        let paths: Vec<&str> =
            listed["items"].as_array().unwrap().iter().filter_map(|item| item["path"].as_str()).collect();
        if !paths.contains(&&kept[1..]) || upstream.count("GET", &kept) != 1 {
            lost.push((
                round,
                paths.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                upstream.count("GET", &kept),
            ));
        }
    }
    spinning.store(false, std::sync::atomic::Ordering::Relaxed);
    for spinner in spinners {
        spinner.join().unwrap();
    }
    assert!(
        lost.is_empty(),
        "the file read between fills was evicted (round, what was left, fetches): {lost:?}"
    );
}
