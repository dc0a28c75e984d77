//! The miss → store → hit path for generic remotes, against a real upstream
//! server on 127.0.0.1 that counts every request.

use std::time::Duration;

use crate::support::{client, large_sha256, sha256, Proxy, Upstream};
use reqwest::StatusCode;

const CONFIG: &str = r#"
remotes:
  files:
    base_url: "{upstream}"
  guarded:
    base_url: "{upstream}"
    immutable_patterns: ['\.tar\.gz$']
    mutable_patterns: ['index\.yaml$']
  short:
    base_url: "{upstream}"
    cache: { immutable_ttl: 1 }
  always:
    base_url: "{upstream}"
    mutable_patterns: ['index\.yaml$']
    cache: { mutable_ttl: 0 }
  local-generic:
    type: local
"#;

async fn setup() -> (Upstream, Proxy) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(CONFIG, &upstream.url()).await;
    (upstream, proxy)
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

#[tokio::test]
async fn miss_then_hit_makes_exactly_one_upstream_request() {
    let (upstream, proxy) = setup().await;
    upstream.put(
        "/o/r/releases/download/v1/tool.tar.gz",
        "tool bytes",
        &[("etag", "\"abc\""), ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT")],
    );
    let url = proxy.url("/api/v1/remote/files/o/r/releases/download/v1/tool.tar.gz");

    let first = client().get(&url).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "x-cache-status"), "MISS");
    assert_eq!(header(&first, "x-artifact-source"), "remote");
    assert_eq!(header(&first, "content-length"), "10");
    assert_eq!(first.bytes().await.unwrap(), "tool bytes");

    for _ in 0..3 {
        let again = client().get(&url).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        assert_eq!(header(&again, "x-cache-status"), "HIT");
        assert_eq!(header(&again, "x-artifact-source"), "cache");
        assert_eq!(header(&again, "etag"), "\"abc\"");
        assert_eq!(header(&again, "last-modified"), "Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(header(&again, "content-type"), "application/gzip");
        assert_eq!(header(&again, "content-disposition"), "attachment; filename=\"tool.tar.gz\"");
        assert_eq!(header(&again, "accept-ranges"), "bytes");
        assert_eq!(again.bytes().await.unwrap(), "tool bytes");
    }
    assert_eq!(upstream.count("GET", "/o/r/releases/download/v1/tool.tar.gz"), 1);
    assert_eq!(upstream.total(), 1);
}

#[tokio::test]
async fn both_route_forms_share_one_entry() {
    let (upstream, proxy) = setup().await;
    upstream.put("/a/b.zip", "zip", &[]);
    let res = client().get(proxy.url("/api/files/a/b.zip")).send().await.unwrap();
    assert_eq!(res.bytes().await.unwrap(), "zip");
    let res = client().get(proxy.url("/api/v1/remote/files/a/b.zip")).send().await.unwrap();
    assert_eq!(header(&res, "x-cache-status"), "HIT");
    assert_eq!(header(&res, "content-type"), "application/zip");
    assert_eq!(res.bytes().await.unwrap(), "zip");
    assert_eq!(upstream.total(), 1);
}

#[tokio::test]
async fn head_on_a_miss_is_forwarded_as_head_and_caches_nothing() {
    let (upstream, proxy) = setup().await;
    upstream.put("/h.bin", "0123456789", &[]);
    let url = proxy.url("/api/files/h.bin");

    let res = client().head(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-cache-status"), "MISS");
    assert_eq!(header(&res, "content-length"), "10");
    assert_eq!(upstream.count("HEAD", "/h.bin"), 1);
    assert_eq!(upstream.count("GET", "/h.bin"), 0);

    // Nothing was cached by the HEAD: the GET goes upstream.
    let res = client().get(&url).send().await.unwrap();
    assert_eq!(header(&res, "x-cache-status"), "MISS");
    assert_eq!(res.bytes().await.unwrap(), "0123456789");
    assert_eq!(upstream.count("GET", "/h.bin"), 1);

    // HEAD on a hit is answered from the index.
    let res = client().head(&url).send().await.unwrap();
    assert_eq!(header(&res, "x-cache-status"), "HIT");
    assert_eq!(header(&res, "content-length"), "10");
    assert_eq!(upstream.count("HEAD", "/h.bin"), 1);
    assert_eq!(upstream.total(), 2);
}

#[tokio::test]
async fn range_on_a_hit_gives_206_and_416() {
    let (upstream, proxy) = setup().await;
    upstream.put("/r.bin", "0123456789", &[]);
    let url = proxy.url("/api/files/r.bin");
    client().get(&url).send().await.unwrap().bytes().await.unwrap();

    let res = client().get(&url).header("range", "bytes=2-4").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&res, "content-range"), "bytes 2-4/10");
    assert_eq!(header(&res, "x-cache-status"), "HIT");
    assert_eq!(res.bytes().await.unwrap(), "234");

    let res = client().get(&url).header("range", "bytes=-3").send().await.unwrap();
    assert_eq!(res.bytes().await.unwrap(), "789");

    let res = client().get(&url).header("range", "bytes=10-").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&res, "content-range"), "bytes */10");
    assert_eq!(upstream.total(), 1);
}

#[tokio::test]
async fn range_on_a_miss_fetches_the_whole_object_and_answers_the_range() {
    let (upstream, proxy) = setup().await;
    upstream.put("/big/r.bin", "abcdefghijklmnopqrstuvwxyz", &[]);
    let url = proxy.url("/api/files/big/r.bin");

    let res = client().get(&url).header("range", "bytes=-4").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&res, "content-range"), "bytes 22-25/26");
    assert_eq!(res.bytes().await.unwrap(), "wxyz");

    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].headers.get("range").is_none(), "upstream is asked for the whole object");

    let res = client().get(&url).send().await.unwrap();
    assert_eq!(header(&res, "x-cache-status"), "HIT");
    assert_eq!(res.bytes().await.unwrap(), "abcdefghijklmnopqrstuvwxyz");
    assert_eq!(upstream.total(), 1);
}

#[tokio::test]
async fn patterns_deny_with_403_and_unknown_remotes_are_404() {
    let (upstream, proxy) = setup().await;
    upstream.put("/x.zip", "zip", &[]);
    let res = client().get(proxy.url("/api/guarded/x.zip")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let json = read_json(res).await;
    assert_eq!(json["remote"], "guarded");
    assert_eq!(json["path"], "x.zip");
    assert!(json["error"].as_str().unwrap().contains("pattern"));

    let res = client().get(proxy.url("/api/nope/x.zip")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let json = read_json(res).await;
    assert_eq!(json["remote"], "nope");
    assert_eq!(upstream.total(), 0, "refused requests never reach upstream");

    upstream.put("/charts/index.yaml", "entries: {}", &[]);
    let res = client().get(proxy.url("/api/guarded/charts/index.yaml")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn query_strings_are_forwarded_and_part_of_the_key() {
    let (upstream, proxy) = setup().await;
    let one = client().get(proxy.url("/api/files/echo/x?version=1&arch=amd64")).send().await.unwrap();
    assert_eq!(one.bytes().await.unwrap(), "version=1&arch=amd64");
    let two = client().get(proxy.url("/api/files/echo/x?version=2")).send().await.unwrap();
    assert_eq!(two.bytes().await.unwrap(), "version=2");
    let again = client().get(proxy.url("/api/files/echo/x?version=1&arch=amd64")).send().await.unwrap();
    assert_eq!(header(&again, "x-cache-status"), "HIT");
    assert_eq!(again.bytes().await.unwrap(), "version=1&arch=amd64");
    assert_eq!(upstream.count("GET", "/echo/x"), 2);
    assert_eq!(upstream.requests()[0].query.as_deref(), Some("version=1&arch=amd64"));
}

#[tokio::test]
async fn a_gzip_encoded_body_is_stored_and_served_byte_for_byte() {
    let (upstream, proxy) = setup().await;
    // Bytes that are not valid gzip: any decompression on the way would fail.
    let raw: Vec<u8> = vec![0x1f, 0x8b, 0x08, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    upstream.put(
        "/meta.json",
        raw.clone(),
        &[("content-encoding", "gzip"), ("content-type", "application/json")],
    );
    for expected in ["MISS", "HIT"] {
        let res = client().get(proxy.url("/api/files/meta.json")).send().await.unwrap();
        assert_eq!(header(&res, "x-cache-status"), expected);
        assert_eq!(header(&res, "content-encoding"), "gzip");
        assert_eq!(header(&res, "content-type"), "application/json");
        assert_eq!(res.bytes().await.unwrap().to_vec(), raw);
    }
    let seen = upstream.requests();
    assert!(
        seen[0].headers.get("accept-encoding").is_none(),
        "no encoding is negotiated on the client's behalf"
    );
}

#[tokio::test]
async fn redirects_are_followed_and_credentials_stay_with_their_host() {
    let upstream = Upstream::start().await;
    let other = Upstream::start().await;
    other.put("/cdn/file.tar.gz", "from the cdn", &[]);
    upstream.put("/real/file.tar.gz", "moved here", &[]);
    let config =
        "remotes:\n  files:\n    base_url: \"{upstream}\"\n    username: builder\n    password: s3cret\n";
    let proxy = Proxy::start(config, &upstream.url()).await;

    let res = client().get(proxy.url("/api/files/redirect/real/file.tar.gz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap(), "moved here");
    let same_host = upstream.requests();
    assert_eq!(same_host.len(), 2);
    assert!(same_host.iter().all(|s| s.headers.get("authorization").is_some()));

    let path = format!("/api/files/redirect-to/{}/cdn/file.tar.gz", other.addr.port());
    let res = client().get(proxy.url(&path)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap(), "from the cdn");
    let cdn = other.requests();
    assert_eq!(cdn.len(), 1);
    assert!(cdn[0].headers.get("authorization").is_none(), "credentials never leave their host");

    // Cached under the path the client asked for.
    let res = client().get(proxy.url(&path)).send().await.unwrap();
    assert_eq!(header(&res, "x-cache-status"), "HIT");
    assert_eq!(other.total(), 1);
}

#[tokio::test]
async fn a_truncated_upstream_body_fails_the_transfer_and_is_not_cached() {
    let (upstream, proxy) = setup().await;
    let url = proxy.url("/api/files/truncated/half.tar.gz");
    for attempt in 1..=2 {
        let res = client().get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "headers were already sent");
        assert_eq!(header(&res, "content-length"), "1000");
        let body = res.bytes().await;
        assert!(body.is_err(), "the client must see a failed transfer, not a short 200");
        // Nothing partial was cached: every attempt goes upstream.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(upstream.count("GET", "/truncated/half.tar.gz"), attempt);
    }
    let spool = proxy.data_dir.path().join("tmp");
    assert_eq!(std::fs::read_dir(spool).unwrap().count(), 0, "no spool file is left behind");
}

#[tokio::test]
async fn traversal_and_malformed_paths_are_refused_before_upstream() {
    let (upstream, proxy) = setup().await;
    for path in [
        "/api/files/a/../../etc/passwd",
        "/api/files/a/%2e%2e/%2e%2e/etc/passwd",
        "/api/files/a/%2E%2E%2Fetc",
        "/api/files/a/..%2f..%2fetc",
        "/api/files/a%00b",
        "/api/files/a%0d%0aSet-Cookie:x",
        "/api/files//etc/passwd",
        "/api/files/http://evil.example/x",
        "/api/files/https:%2F%2Fevil.example%2Fx",
        "/api/files/a%5c..%5cb",
        "/api/files/a%zz",
    ] {
        let (status, body) = proxy.raw_get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("\"error\""), "{path}: {body}");
    }
    let long = format!("/api/files/{}", "a".repeat(5000));
    assert_eq!(proxy.raw_get(&long).await.0, 414);
    assert_eq!(upstream.total(), 0);

    // An encoded slash inside a segment is legitimate (npm scoped names).
    upstream.put("/@scope%2Fname", "{}", &[("content-type", "application/json")]);
    let (status, _) = proxy.raw_get("/api/files/@scope%2Fname").await;
    assert_eq!(status, 200);
    assert_eq!(upstream.requests()[0].path, "/@scope%2Fname");
}

#[tokio::test]
async fn wrong_methods_are_405() {
    let (upstream, proxy) = setup().await;
    for method in [reqwest::Method::POST, reqwest::Method::PUT, reqwest::Method::DELETE] {
        let res = client().request(method.clone(), proxy.url("/api/files/a.tgz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(header(&res, "allow"), "GET, HEAD");
    }
    assert_eq!(upstream.total(), 0);
}

#[tokio::test]
async fn a_body_larger_than_any_buffer_streams_through_intact() {
    let (upstream, proxy) = setup().await;
    let len: u64 = 48 * 1024 * 1024;
    let url = proxy.url(&format!("/api/files/large/{len}/big.bin"));
    let expected = large_sha256(len);
    for status in ["MISS", "HIT"] {
        let res = client().get(&url).send().await.unwrap();
        assert_eq!(header(&res, "x-cache-status"), status);
        assert_eq!(header(&res, "content-length"), len.to_string());
        let body = res.bytes().await.unwrap();
        assert_eq!(body.len() as u64, len);
        assert_eq!(sha256(&body), expected, "{status}");
    }
    assert_eq!(upstream.total(), 1);
}

#[tokio::test]
async fn upstream_failures_with_nothing_cached_map_to_gateway_errors() {
    let (upstream, proxy) = setup().await;
    let res = client().get(proxy.url("/api/files/status/503/x.tgz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&res, "retry-after"), "7");
    let json = read_json(res).await;
    assert_eq!(json["remote"], "files");
    assert_eq!(json["path"], "status/503/x.tgz");

    let res = client().get(proxy.url("/api/files/status/429/x.tgz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), "7");

    let res = client().get(proxy.url("/api/files/missing.tgz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(res.text().await.unwrap().contains("upstream answered 404"));

    // The 404 is remembered for `negative_ttl`, nothing else about it is cached.
    let res = client().get(proxy.url("/api/files/missing.tgz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(upstream.count("GET", "/missing.tgz"), 1);
    let res = client().get(proxy.url("/api/files/status/503/x.tgz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.count("GET", "/status/503/x.tgz"), 2, "a 503 is never remembered");

    // A port nothing listens on: connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let proxy = Proxy::start("remotes:\n  dead:\n    base_url: \"{upstream}\"\n", &dead).await;
    let res = client().get(proxy.url("/api/dead/x.tgz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let json = read_json(res).await;
    assert!(json["error"].as_str().unwrap().contains("connection"), "{json}");
}

#[tokio::test]
async fn an_upstream_that_never_answers_times_out_with_504() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start_with(
        "remotes:\n  files:\n    base_url: \"{upstream}\"\n",
        &upstream.url(),
        &[("UPSTREAM_READ_TIMEOUT", "0.5")],
    )
    .await;
    let res = client().get(proxy.url("/api/files/hang/x.tgz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn an_expired_entry_is_fetched_again() {
    let (upstream, proxy) = setup().await;
    upstream.put("/e.bin", "v1", &[]);
    let url = proxy.url("/api/short/e.bin");
    assert_eq!(client().get(&url).send().await.unwrap().bytes().await.unwrap(), "v1");
    let res = client().get(&url).send().await.unwrap();
    assert_eq!(header(&res, "x-cache-status"), "HIT");
    res.bytes().await.unwrap();

    tokio::time::sleep(Duration::from_millis(2100)).await;
    upstream.put("/e.bin", "v2", &[]);
    let res = client().get(&url).send().await.unwrap();
    assert_eq!(header(&res, "x-cache-status"), "EXPIRED");
    assert_eq!(header(&res, "x-artifact-source"), "remote");
    assert_eq!(res.bytes().await.unwrap(), "v2");
    let res = client().get(&url).send().await.unwrap();
    assert_eq!(header(&res, "x-cache-status"), "HIT");
    assert_eq!(res.bytes().await.unwrap(), "v2");
    assert_eq!(upstream.count("GET", "/e.bin"), 2);
}

#[tokio::test]
async fn mutable_ttl_zero_fetches_on_every_request_while_immutable_paths_stay_cached() {
    let (upstream, proxy) = setup().await;
    upstream.put("/charts/index.yaml", "v1", &[]);
    upstream.put("/charts/app-1.0.tgz", "chart", &[]);
    for _ in 0..3 {
        let res = client().get(proxy.url("/api/always/charts/index.yaml")).send().await.unwrap();
        assert_ne!(header(&res, "x-cache-status"), "HIT");
        res.bytes().await.unwrap();
        let res = client().get(proxy.url("/api/always/charts/app-1.0.tgz")).send().await.unwrap();
        res.bytes().await.unwrap();
    }
    assert_eq!(upstream.count("GET", "/charts/index.yaml"), 3);
    assert_eq!(upstream.count("GET", "/charts/app-1.0.tgz"), 1);
}

#[tokio::test]
async fn content_type_comes_from_upstream_or_the_extension() {
    let (upstream, proxy) = setup().await;
    upstream.put("/p.rpm", "rpm", &[]);
    upstream.put("/p.whl", "whl", &[("content-type", "application/x-wheel+zip")]);
    let res = client().get(proxy.url("/api/files/p.rpm")).send().await.unwrap();
    assert_eq!(header(&res, "content-type"), "application/x-rpm");
    let res = client().get(proxy.url("/api/files/p.whl")).send().await.unwrap();
    assert_eq!(header(&res, "content-type"), "application/x-wheel+zip");
}

async fn read_json(res: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&res.bytes().await.unwrap()).unwrap()
}
