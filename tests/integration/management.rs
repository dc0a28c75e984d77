//! The management API, local repositories and write protection.

use crate::support::{client, eventually, sha256, Proxy, Upstream, PATIENCE};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const CONFIG: &str = r#"
remotes:
  files:
    base_url: "{upstream}"
    description: "release files"
    username: builder
    password: hunter2-upstream-secret
  meta:
    base_url: "{upstream}"
    package: generic
    mutable_patterns: ['\.json$']
  internal:
    type: local
    description: "our own tools"
"#;

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

async fn json(res: reqwest::Response) -> Value {
    serde_json::from_slice(&res.bytes().await.unwrap()).unwrap()
}

async fn send(method: Method, url: &str, token: Option<&str>, body: Option<Vec<u8>>) -> reqwest::Response {
    let mut req = client().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    req.send().await.unwrap()
}

async fn setup(env: &[(&str, &str)]) -> (Upstream, Proxy) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start_with(CONFIG, &upstream.url(), env).await;
    (upstream, proxy)
}

#[tokio::test]
async fn local_repositories_upload_download_head_range_replace_and_delete() {
    let (_upstream, proxy) = setup(&[]).await;
    let url = proxy.url("/api/v1/remote/internal/tools/mytool-1.0.tar.gz");
    let res = send(Method::PUT, &url, None, Some(b"version one".to_vec())).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body = json(res).await;
    assert_eq!(body["size"], 11);
    assert_eq!(body["sha256"], sha256(b"version one"));

    // Both route forms serve it.
    for url in [url.clone(), proxy.url("/api/internal/tools/mytool-1.0.tar.gz")] {
        let res = client().get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "x-artifact-source"), "local");
        assert_eq!(header(&res, "content-type"), "application/gzip");
        assert_eq!(header(&res, "etag"), format!("\"sha256:{}\"", sha256(b"version one")));
        assert!(res.headers().get("x-cache-status").is_none());
        assert_eq!(res.bytes().await.unwrap(), "version one");
    }
    let res = client().head(&url).send().await.unwrap();
    assert_eq!(header(&res, "content-length"), "11");
    let res = client().get(&url).header("range", "bytes=8-").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.bytes().await.unwrap(), "one");

    let res = send(Method::PUT, &url, None, Some(b"version two!".to_vec())).await;
    assert_eq!(res.status(), StatusCode::OK, "a replacement answers 200");
    assert_eq!(client().get(&url).send().await.unwrap().bytes().await.unwrap(), "version two!");
    assert_eq!(proxy.blob_files().len(), 1, "the replaced blob was deleted");

    let res = send(Method::DELETE, &url, None, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(client().get(&url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(send(Method::DELETE, &url, None, None).await.status(), StatusCode::NOT_FOUND);
    assert!(proxy.blob_files().is_empty());

    let res = send(Method::POST, &url, None, Some(b"x".to_vec())).await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&res, "allow"), "GET, HEAD, PUT, DELETE");
}

#[tokio::test]
async fn writes_to_a_caching_remote_are_405() {
    let (upstream, proxy) = setup(&[]).await;
    for method in [Method::PUT, Method::DELETE] {
        let res = send(method, &proxy.url("/api/files/a.tgz"), None, Some(b"x".to_vec())).await;
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(header(&res, "allow"), "GET, HEAD");
    }
    assert_eq!(upstream.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_during_a_download_never_mixes_bytes() {
    let (_upstream, proxy) = setup(&[]).await;
    let url = proxy.url("/api/internal/big/artifact.bin");
    let old: Vec<u8> = (0..16 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let new: Vec<u8> = (0..16 * 1024 * 1024).map(|i| (i % 241) as u8).collect();
    assert_eq!(send(Method::PUT, &url, None, Some(old.clone())).await.status(), StatusCode::CREATED);

    let mut reader = client().get(&url).send().await.unwrap();
    let mut got = reader.chunk().await.unwrap().unwrap().to_vec();
    assert_eq!(send(Method::PUT, &url, None, Some(new.clone())).await.status(), StatusCode::OK);
    while let Some(chunk) = reader.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(sha256(&got), sha256(&old), "the reader in flight got the old bytes, whole");
    let fresh = client().get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&fresh), sha256(&new));
}

#[tokio::test]
async fn uploads_over_the_cap_are_413_and_store_nothing() {
    let (_upstream, proxy) = setup(&[("MAX_UPLOAD_BYTES", "1000")]).await;
    let url = proxy.url("/api/internal/too/big.bin");
    let res = send(Method::PUT, &url, None, Some(vec![7; 1001])).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Without Content-Length (chunked), the cap holds while streaming.
    let chunks = futures_util::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![7u8; 400])));
    let res = client().put(&url).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(client().get(&url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert!(proxy.blob_files().is_empty());
    let spool = std::fs::read_dir(proxy.data_dir.path().join("tmp")).unwrap().count();
    assert_eq!(spool, 0, "no spool file is left behind");
    let res = send(Method::PUT, &url, None, Some(vec![7; 1000])).await;
    assert_eq!(res.status(), StatusCode::CREATED, "exactly at the cap is fine");
}

#[tokio::test]
async fn root_health_ready_and_config() {
    let (_upstream, proxy) = setup(&[]).await;
    let root = json(client().get(proxy.url("/")).send().await.unwrap()).await;
    assert_eq!(root["name"], "artifactapi");
    assert!(root["version"].is_string());
    let remotes = root["remotes"].as_array().unwrap();
    assert_eq!(remotes.len(), 3);
    let internal = remotes.iter().find(|r| r["name"] == "internal").unwrap();
    assert_eq!(internal["type"], "local");
    assert_eq!(internal["package"], "generic");
    assert_eq!(internal["description"], "our own tools");

    let res = client().get(proxy.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let health = json(res).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["backends"]["index"]["kind"], "sqlite");
    assert_eq!(health["backends"]["blobs"]["state"], "ok");
    let res = client().get(proxy.url("/ready")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let res = client().get(proxy.url("/config")).send().await.unwrap();
    let text = res.text().await.unwrap();
    assert!(!text.contains("hunter2-upstream-secret"), "{text}");
    assert!(!text.contains("builder"), "{text}");
    let config: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(config["remotes"]["files"]["password"], "***");
    assert_eq!(config["remotes"]["files"]["username"], "***");
    assert_eq!(config["remotes"]["meta"]["mutable_patterns"][0], "\\.json$");
}

#[tokio::test]
async fn health_stays_200_but_ready_is_503_when_the_store_is_gone() {
    let (_upstream, proxy) = setup(&[]).await;
    std::fs::remove_dir_all(proxy.data_dir.path().join("blobs")).unwrap();
    let res = client().get(proxy.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let health = json(res).await;
    assert_eq!(health["status"], "degraded");
    assert!(health["backends"]["blobs"]["state"].as_str().unwrap().starts_with("error"));
    assert_eq!(
        client().get(proxy.url("/ready")).send().await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn artifacts_are_listed_in_pages_sorted_by_path() {
    let (upstream, proxy) = setup(&[]).await;
    for name in ["e", "b", "d", "a", "c"] {
        let res =
            send(Method::PUT, &proxy.url(&format!("/api/internal/{name}.bin")), None, Some(vec![1; 3])).await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let first = json(client().get(proxy.url("/artifacts/internal?limit=2")).send().await.unwrap()).await;
    let paths: Vec<_> = first["items"].as_array().unwrap().iter().map(|i| i["path"].clone()).collect();
    assert_eq!(paths, ["a.bin", "b.bin"]);
    assert_eq!(first["next"], "b.bin");
    let item = &first["items"][0];
    assert_eq!(item["size"], 3);
    assert_eq!(item["class"], "local");
    assert!(item["cached_at"].as_str().unwrap().ends_with('Z'));
    assert!(item["expires_at"].is_null());
    let second =
        json(client().get(proxy.url("/artifacts/internal?limit=2&after=b.bin")).send().await.unwrap()).await;
    assert_eq!(second["items"][0]["path"], "c.bin");
    let last =
        json(client().get(proxy.url("/artifacts/internal?limit=2&after=d.bin")).send().await.unwrap()).await;
    assert_eq!(last["items"].as_array().unwrap().len(), 1);
    assert!(last["next"].is_null());

    // Cached entries list their class and expiry.
    upstream.put("/index.json", "{}", &[]);
    client().get(proxy.url("/api/meta/index.json")).send().await.unwrap().bytes().await.unwrap();
    // Committed just after the client has the last byte.
    eventually("the entry of meta to be committed", PATIENCE, || async {
        proxy.cached_count("meta").await == 1
    })
    .await;
    let meta = json(client().get(proxy.url("/artifacts/meta")).send().await.unwrap()).await;
    assert_eq!(meta["items"][0]["class"], "mutable");
    assert!(meta["items"][0]["expires_at"].as_str().unwrap().ends_with('Z'));

    let res = client().get(proxy.url("/artifacts/nope")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    for bad in ["0", "1001", "x"] {
        let res = client().get(proxy.url(&format!("/artifacts/internal?limit={bad}"))).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "limit={bad}");
    }
}

#[tokio::test]
async fn cache_artifact_warms_the_cache_through_the_normal_stack() {
    let (upstream, proxy) = setup(&[]).await;
    upstream.put("/rel/a.tar.gz", "aaa", &[]);
    // The upstream sees the path percent-encoded.
    upstream.put("/rel/b%20c.tar.gz", "bbb", &[]);
    let res = client()
        .post(proxy.url("/cache-artifact"))
        .header("content-type", "application/json")
        .body(r#"{"remote":"files","paths":["rel/a.tar.gz","rel/b c.tar.gz","rel/missing.tar.gz"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let results = json(res).await;
    let results = results["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "cached");
    assert_eq!(results[0]["path"], "rel/a.tar.gz");
    assert!(results[0].get("error").is_none());
    assert_eq!(results[1]["status"], "cached");
    assert_eq!(results[2]["status"], "error");
    assert!(results[2]["error"].as_str().unwrap().contains("404"), "{}", results[2]);

    // Each is committed just after its body has been read.
    eventually("both warmed entries to be committed", PATIENCE, || async {
        proxy.cached_count("files").await == 2
    })
    .await;
    let res = client().get(proxy.url("/api/files/rel/a.tar.gz")).send().await.unwrap();
    assert_eq!(header(&res, "x-cache-status"), "HIT");
    let res = client().get(proxy.url("/api/files/rel/b%20c.tar.gz")).send().await.unwrap();
    assert_eq!(header(&res, "x-cache-status"), "HIT");
    assert_eq!(upstream.count("GET", "/rel/a.tar.gz"), 1);

    let res = client()
        .post(proxy.url("/cache-artifact"))
        .header("content-type", "application/json")
        .body(r#"{"remote":"nope","paths":["x"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = client()
        .post(proxy.url("/cache-artifact"))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn flush_expires_mutable_entries_drops_immutable_ones_with_all_and_keeps_local_artifacts() {
    let (upstream, proxy) = setup(&[]).await;
    upstream.put("/index.json", "v1", &[]);
    upstream.put("/tool.tar.gz", "tool", &[]);
    let index = proxy.url("/api/meta/index.json");
    let tool = proxy.url("/api/meta/tool.tar.gz");
    client().get(&index).send().await.unwrap().bytes().await.unwrap();
    client().get(&tool).send().await.unwrap().bytes().await.unwrap();
    let local = proxy.url("/api/internal/keep.bin");
    send(Method::PUT, &local, None, Some(b"ours".to_vec())).await;
    // Both are committed just after their clients have the last byte; a flush
    // before a commit would miss it. (A finished fill still joinable is
    // forgotten by the flush itself: nothing to wait for there.)
    eventually("both entries of meta to be committed", PATIENCE, || async {
        proxy.cached_count("meta").await == 2
    })
    .await;

    let res = send(Method::PUT, &proxy.url("/cache/flush?remote=meta"), None, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let flushed = json(res).await;
    assert_eq!(flushed["expired"], 1);
    assert_eq!(flushed["removed"], 0);
    upstream.put("/index.json", "v2", &[]);
    let res = client().get(&index).send().await.unwrap();
    assert_eq!(header(&res, "x-cache-status"), "EXPIRED");
    assert_eq!(res.text().await.unwrap(), "v2");
    let res = client().get(&tool).send().await.unwrap();
    assert_eq!(header(&res, "x-cache-status"), "HIT", "immutable entries survive a plain flush");

    let res = send(Method::PUT, &proxy.url("/cache/flush?all=true"), None, None).await;
    let flushed = json(res).await;
    assert_eq!(flushed["removed"], 1);
    let res = client().get(&tool).send().await.unwrap();
    assert_eq!(header(&res, "x-cache-status"), "MISS");
    assert_eq!(
        client().get(&local).send().await.unwrap().text().await.unwrap(),
        "ours",
        "local artifacts are data"
    );

    let res = send(Method::PUT, &proxy.url("/cache/flush?remote=nope"), None, None).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_admin_token_guards_every_write_and_no_read() {
    let (upstream, proxy) = setup(&[("ADMIN_TOKEN", "t0p-s3cret")]).await;
    upstream.put("/a.tar.gz", "a", &[]);
    let local = proxy.url("/api/internal/x.bin");
    let local_alias = proxy.url("/api/v1/remote/internal/y%2Ebin");
    let flush = proxy.url("/cache/flush");
    let warm = proxy.url("/cache-artifact");
    let warm_body = br#"{"remote":"files","paths":["a.tar.gz"]}"#.to_vec();

    type Case = (Method, String, Option<Vec<u8>>);
    let cases: Vec<Case> = vec![
        (Method::PUT, local.clone(), Some(b"x".to_vec())),
        (Method::PUT, local_alias.clone(), Some(b"y".to_vec())),
        (Method::PUT, flush.clone(), None),
        (Method::POST, warm.clone(), Some(warm_body.clone())),
        (Method::DELETE, local.clone(), None),
    ];
    for (method, url, body) in &cases {
        let res = send(method.clone(), url, None, body.clone()).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method} {url} without a token");
        assert_eq!(header(&res, "www-authenticate"), "Bearer");
        let res = send(method.clone(), url, Some("wrong"), body.clone()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{method} {url} with a wrong token");
    }
    assert_eq!(upstream.total(), 0, "refused warming fetched nothing");
    assert_eq!(
        client().get(&local).send().await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "nothing was written"
    );

    for (method, url, body) in &cases {
        let mut req = client().request(method.clone(), url).bearer_auth("t0p-s3cret");
        if let Some(b) = body {
            req = req.body(b.clone()).header("content-type", "application/json");
        }
        let res = req.send().await.unwrap();
        assert!(res.status().is_success(), "{method} {url} with the token: {}", res.status());
    }
    // Reads stay open.
    for path in ["/", "/health", "/ready", "/config", "/artifacts/internal", "/api/internal/y.bin"] {
        let res = client().get(proxy.url(path)).send().await.unwrap();
        assert!(res.status().is_success(), "GET {path}: {}", res.status());
    }
}
