//! Cache behaviour under a build fleet's load and upstream's changes and
//! failures: single-flight streaming fills, conditional revalidation,
//! stale-on-error and the negative cache. Every claim is a count of the
//! requests a real upstream on 127.0.0.1 saw.

use std::time::{Duration, Instant};

use crate::support::{
    client, eventually, fills_in_flight, large_chunk, large_sha256, sha256, Gate, Proxy, Upstream, PATIENCE,
};
use reqwest::StatusCode;

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

async fn get(url: &str) -> (String, String) {
    let res = client().get(url).send().await.unwrap();
    let status = header(&res, "x-cache-status").to_owned();
    let body = res.text().await.unwrap();
    (status, body)
}

/// Waits for the one entry of `remote` to be in the index: it is committed
/// just after its client has the last byte.
async fn committed(proxy: &Proxy, remote: &str) {
    eventually(&format!("an entry of {remote} to be committed"), PATIENCE, || async {
        proxy.cached_count(remote).await == 1
    })
    .await;
}

const GENERIC: &str = "remotes:\n  files:\n    base_url: \"{upstream}\"\n";

// ---- single flight -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_cold_requests_make_one_upstream_request() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(GENERIC, &upstream.url()).await;
    let url = proxy.url("/api/files/slow/16/40/shared.bin");
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { client().get(&url).send().await.unwrap().bytes().await.unwrap() })
        })
        .collect();
    let expected = large_sha256(16 * 64 * 1024);
    for c in clients {
        let body = c.await.unwrap();
        assert_eq!(body.len(), 16 * 64 * 1024);
        assert_eq!(sha256(&body), expected);
    }
    assert_eq!(upstream.count("GET", "/slow/16/40/shared.bin"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_receive_bytes_before_the_upstream_body_has_finished() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(GENERIC, &upstream.url()).await;
    let path = "/slow/20/100/stream.bin";
    let url = proxy.url(&format!("/api/files{path}"));
    let mut leader = client().get(&url).send().await.unwrap();
    assert_eq!(header(&leader, "x-cache-status"), "MISS");
    let first = leader.chunk().await.unwrap().unwrap();

    // A second client joins the fill in flight and streams as bytes arrive.
    let mut waiter = client().get(&url).send().await.unwrap();
    let chunk = waiter.chunk().await.unwrap().unwrap();
    assert_eq!(upstream.finished(path), 0, "the waiter got bytes while upstream was still sending");
    assert_eq!(&chunk[..], &large_chunk(0, chunk.len())[..]);
    assert_eq!(&first[..], &large_chunk(0, first.len())[..]);

    let mut rest = chunk.to_vec();
    while let Some(c) = waiter.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert_eq!(sha256(&rest), large_sha256(20 * 64 * 1024));
    assert_eq!(upstream.count("GET", path), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fill_completes_when_the_first_client_disconnects_mid_transfer() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(GENERIC, &upstream.url()).await;
    let path = "/slow/12/50/left.bin";
    let url = proxy.url(&format!("/api/files{path}"));
    let mut leader = client().get(&url).send().await.unwrap();
    leader.chunk().await.unwrap().unwrap();
    drop(leader);
    eventually("upstream to finish sending", PATIENCE, || async { upstream.finished(path) == 1 }).await;
    committed(&proxy, "files").await;

    let res = client().get(&url).send().await.unwrap();
    assert_eq!(header(&res, "x-cache-status"), "HIT");
    assert_eq!(sha256(&res.bytes().await.unwrap()), large_sha256(12 * 64 * 1024));
    assert_eq!(upstream.count("GET", path), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_that_breaks_off_fails_every_waiter_and_the_next_request_starts_again() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(GENERIC, &upstream.url()).await;
    let url = proxy.url("/api/files/truncated/broken.tgz");
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                match client().get(&url).send().await {
                    Ok(res) if res.status() == StatusCode::OK => res.bytes().await.is_err(),
                    Ok(res) => res.status().is_server_error(),
                    Err(_) => true,
                }
            })
        })
        .collect();
    for c in clients {
        assert!(c.await.unwrap(), "every client of a broken fill sees its transfer fail");
    }
    assert_eq!(upstream.count("GET", "/truncated/broken.tgz"), 1);
    let res = client().get(&url).send().await.unwrap();
    assert!(res.bytes().await.is_err());
    assert_eq!(upstream.count("GET", "/truncated/broken.tgz"), 2, "nothing was cached; a new fill started");
}

// ---- revalidation --------------------------------------------------------

const META: &str = r#"
remotes:
  meta:
    base_url: "{upstream}"
    mutable_patterns: ['\.json$']
    check_mutable_updates: true
    cache: { mutable_ttl: 1 }
  refetch:
    base_url: "{upstream}"
    mutable_patterns: ['\.json$']
    cache: { mutable_ttl: 1 }
  repo:
    base_url: "{upstream}"
    package: rpm
    cache: { mutable_ttl: 1 }
  always:
    base_url: "{upstream}"
    mutable_patterns: ['\.json$']
    check_mutable_updates: true
    cache: { mutable_ttl: 0 }
"#;

const EXPIRE: Duration = Duration::from_millis(1200);

#[tokio::test]
async fn an_expired_entry_is_revalidated_and_a_304_keeps_its_bytes() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(META, &upstream.url()).await;
    upstream.put("/index.json", "v1", &[("etag", "\"e1\""), ("content-type", "application/json")]);
    let url = proxy.url("/api/meta/index.json");
    assert_eq!(get(&url).await, ("MISS".into(), "v1".into()));
    committed(&proxy, "meta").await;
    let blobs = proxy.blob_files();
    assert_eq!(blobs.len(), 1);

    // Time, not an event: the committed entry's mutable_ttl runs out.
    tokio::time::sleep(EXPIRE).await;
    let res = client().get(&url).send().await.unwrap();
    assert_eq!(header(&res, "x-cache-status"), "REVALIDATED");
    assert_eq!(header(&res, "x-artifact-source"), "cache");
    assert_eq!(header(&res, "etag"), "\"e1\"");
    assert_eq!(header(&res, "content-type"), "application/json");
    assert_eq!(res.text().await.unwrap(), "v1");

    let seen = upstream.requests();
    assert_eq!(seen.len(), 2, "one conditional GET, nothing else");
    assert_eq!(seen[1].method, "GET");
    assert_eq!(seen[1].headers["if-none-match"], "\"e1\"");
    assert_eq!(proxy.blob_files(), blobs, "the stored body was not touched");
    // The lifetime was refreshed.
    assert_eq!(get(&url).await, ("HIT".into(), "v1".into()));
    assert_eq!(upstream.total(), 2);
}

#[tokio::test]
async fn a_changed_upstream_answers_200_and_replaces_the_entry() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(META, &upstream.url()).await;
    upstream.put("/index.json", "v1", &[("etag", "\"e1\"")]);
    let url = proxy.url("/api/meta/index.json");
    get(&url).await;
    committed(&proxy, "meta").await;
    // Time, not an event: the committed entry's mutable_ttl runs out.
    tokio::time::sleep(EXPIRE).await;
    upstream.put("/index.json", "version two", &[("etag", "\"e2\"")]);
    assert_eq!(get(&url).await, ("EXPIRED".into(), "version two".into()));
    let seen = upstream.requests();
    assert_eq!(seen[1].headers["if-none-match"], "\"e1\"");
    // The new body is committed, and the replaced blob deleted, just after
    // the client has the last byte: the fill has finished once it no longer
    // counts as in flight.
    eventually("the replacing fill to finish", PATIENCE, || async {
        fills_in_flight(&proxy.url("/metrics")).await == 0
    })
    .await;
    assert_eq!(get(&url).await, ("HIT".into(), "version two".into()));
    assert_eq!(proxy.blob_files().len(), 1, "the replaced blob was deleted");
}

#[tokio::test]
async fn without_check_mutable_updates_user_patterns_are_fetched_again() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(META, &upstream.url()).await;
    upstream.put("/index.json", "v1", &[("etag", "\"e1\"")]);
    let url = proxy.url("/api/refetch/index.json");
    get(&url).await;
    committed(&proxy, "refetch").await;
    // Time, not an event: the committed entry's mutable_ttl runs out.
    tokio::time::sleep(EXPIRE).await;
    assert_eq!(get(&url).await, ("EXPIRED".into(), "v1".into()));
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].headers.get("if-none-match").is_none(), "an unconditional re-fetch");
}

#[tokio::test]
async fn built_in_patterns_always_revalidate_with_last_modified_too() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(META, &upstream.url()).await;
    let modified = "Wed, 21 Oct 2015 07:28:00 GMT";
    upstream.put("/el9/repodata/repomd.xml", "<repomd/>", &[("last-modified", modified)]);
    let url = proxy.url("/api/repo/el9/repodata/repomd.xml");
    get(&url).await;
    committed(&proxy, "repo").await;
    // Time, not an event: the committed entry's mutable_ttl runs out.
    tokio::time::sleep(EXPIRE).await;
    assert_eq!(get(&url).await, ("REVALIDATED".into(), "<repomd/>".into()));
    let seen = upstream.requests();
    assert_eq!(seen[1].headers["if-modified-since"], modified);
}

#[tokio::test]
async fn mutable_ttl_zero_checks_upstream_every_time_and_serves_from_cache() {
    let upstream = Upstream::start().await;
    let gate = Gate::start(upstream.addr).await;
    let proxy = Proxy::start(META, &gate.url()).await;
    upstream.put("/index.json", "v1", &[("etag", "\"e1\"")]);
    let url = proxy.url("/api/always/index.json");
    assert_eq!(get(&url).await.0, "MISS");
    committed(&proxy, "always").await;
    // Back to back: a zero lifetime is over at once, so each request asks.
    for _ in 0..3 {
        assert_eq!(get(&url).await, ("REVALIDATED".into(), "v1".into()));
    }
    assert_eq!(upstream.count("GET", "/index.json"), 4);
    gate.close();
    assert_eq!(get(&url).await, ("STALE".into(), "v1".into()));
    assert_eq!(get(&url).await, ("STALE".into(), "v1".into()), "ttl 0: still checked every time");
}

// ---- stale on error --------------------------------------------------------

const SHORT: &str = r#"
remotes:
  files:
    base_url: "{upstream}"
    mutable_patterns: ['\.yaml$']
    cache: { mutable_ttl: 1 }
"#;

async fn warm_then_expire(proxy: &Proxy, url: &str) {
    assert_eq!(get(url).await, ("MISS".into(), "entries: v1".into()));
    committed(proxy, "files").await;
    // Time, not an event: the committed entry's mutable_ttl runs out.
    tokio::time::sleep(EXPIRE).await;
}

#[tokio::test]
async fn serves_stale_copy_when_upstream_refuses_connection() {
    let upstream = Upstream::start().await;
    let gate = Gate::start(upstream.addr).await;
    let proxy = Proxy::start(SHORT, &gate.url()).await;
    upstream.put("/index.yaml", "entries: v1", &[]);
    let url = proxy.url("/api/files/index.yaml");
    warm_then_expire(&proxy, &url).await;
    gate.close();
    let res = client().get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-cache-status"), "STALE");
    assert_eq!(header(&res, "x-artifact-source"), "cache");
    assert_eq!(res.text().await.unwrap(), "entries: v1");
    // Its lifetime was refreshed: the outage is not retried on every request.
    assert_eq!(get(&url).await, ("HIT".into(), "entries: v1".into()));

    // With nothing cached, a refused connection is a 502.
    let res = client().get(proxy.url("/api/files/other.yaml")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);

    gate.open().await;
    // Time, not an event: the lifetime the stale answer refreshed (the HIT
    // above shows it was) runs out.
    tokio::time::sleep(EXPIRE).await;
    upstream.put("/index.yaml", "entries: v2", &[]);
    assert_eq!(get(&url).await, ("EXPIRED".into(), "entries: v2".into()), "back to normal");
}

#[tokio::test]
async fn serves_stale_copy_when_upstream_hangs() {
    let upstream = Upstream::start().await;
    let gate = Gate::start(upstream.addr).await;
    let proxy = Proxy::start_with(SHORT, &gate.url(), &[("UPSTREAM_READ_TIMEOUT", "0.5")]).await;
    upstream.put("/index.yaml", "entries: v1", &[]);
    let url = proxy.url("/api/files/index.yaml");
    warm_then_expire(&proxy, &url).await;
    gate.hang().await;
    assert_eq!(get(&url).await, ("STALE".into(), "entries: v1".into()));
    let res = client().get(proxy.url("/api/files/cold.yaml")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT, "with nothing cached, a timeout is a 504");
}

#[tokio::test]
async fn serves_stale_copy_on_503_and_429_but_not_on_404() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(SHORT, &upstream.url()).await;
    upstream.put("/index.yaml", "entries: v1", &[]);
    let url = proxy.url("/api/files/index.yaml");
    warm_then_expire(&proxy, &url).await;

    upstream.fail("/index.yaml", 503);
    assert_eq!(get(&url).await, ("STALE".into(), "entries: v1".into()));
    // Time, not an event: the lifetime refreshed by the stale answer (in the
    // index before the answer went out) runs out.
    tokio::time::sleep(EXPIRE).await;
    upstream.fail("/index.yaml", 429);
    assert_eq!(get(&url).await, ("STALE".into(), "entries: v1".into()));
    // Time, not an event, again.
    tokio::time::sleep(EXPIRE).await;

    upstream.heal("/index.yaml");
    upstream.remove("/index.yaml");
    let res = client().get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND, "404 is an answer, not an outage");
    assert_eq!(upstream.count("GET", "/index.yaml"), 4);

    // With nothing cached, upstream's 5xx and 429 pass through with Retry-After.
    upstream.fail("/cold.yaml", 503);
    let res = client().get(proxy.url("/api/files/cold.yaml")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&res, "retry-after"), "7");
    upstream.fail("/cold.yaml", 429);
    let res = client().get(proxy.url("/api/files/cold.yaml")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let json: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(json["error"], "upstream answered 429 Too Many Requests");
}

// ---- negative cache --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_requests_for_a_missing_file_reaches_upstream_once_per_window() {
    let upstream = Upstream::start().await;
    let config = "remotes:\n  files:\n    base_url: \"{upstream}\"\n    cache: { negative_ttl: 2 }\n";
    let proxy = Proxy::start(config, &upstream.url()).await;
    let url = proxy.url("/api/files/missing/tool.tar.gz");
    // One client, made before the clock starts: making one per request costs
    // more CPU than the storm itself, and a busy machine would stretch the
    // storm past the window.
    let http = client();
    let started = Instant::now();
    assert_eq!(http.get(&url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let clients: Vec<_> = (0..49)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { http.get(&url).send().await.unwrap().status() })
        })
        .collect();
    for c in clients {
        assert_eq!(c.await.unwrap(), StatusCode::NOT_FOUND);
    }
    assert!(started.elapsed() < Duration::from_secs(2), "the storm fit in the window");
    assert_eq!(upstream.count("GET", "/missing/tool.tar.gz"), 1);

    // A publish becomes visible once the window has passed.
    upstream.put("/missing/tool.tar.gz", "published", &[]);
    // Time, not an event: the 2-second negative_ttl window runs out.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(get(&url).await, ("MISS".into(), "published".into()));
    assert_eq!(upstream.count("GET", "/missing/tool.tar.gz"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_slows_neither_the_download_nor_other_clients() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(GENERIC, &upstream.url()).await;
    let path = "/slow/64/10/shared-big.bin";
    let url = proxy.url(&format!("/api/files{path}"));
    let len = 64 * 64 * 1024;

    // This client takes its headers and one chunk, then stops reading.
    let mut slow = client().get(&url).send().await.unwrap();
    slow.chunk().await.unwrap().unwrap();

    let fast = client().get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(fast.len(), len);
    eventually("upstream to finish", PATIENCE, || async { upstream.finished(path) == 1 }).await;

    // The stalled client still gets every byte when it reads again.
    let mut rest = 0;
    while let Some(c) = slow.chunk().await.unwrap() {
        rest += c.len();
    }
    assert!(rest > 0 && rest < len);
    assert_eq!(sha256(&fast), large_sha256(len as u64));
    assert_eq!(upstream.count("GET", path), 1);
}
