//! Upstream faults that need their own harness: names that do not resolve
//! (through the client's resolver, so no lookup leaves the machine), and
//! upstreams that break HTTP framing.

use crate::support;

use std::time::Duration;

use crate::support::{client, Proxy, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_is_a_502_and_pinned_names_reach_their_address() {
    let upstream = Upstream::start().await;
    upstream.put("/tool.tgz", "pinned", &[]);
    let yaml = "remotes:\n  broken:\n    base_url: \"http://broken.example.internal:8080\"\n  pinned:\n    base_url: \"http://pinned.example.internal\"\n";
    let resolve = format!("broken.example.internal=,pinned.example.internal={}", upstream.addr);
    let proxy = Proxy::start_with(yaml, &upstream.url(), &[("UPSTREAM_RESOLVE", resolve.as_str())]).await;

    let res = client().get(proxy.url("/api/broken/tool.tgz")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    let text = res.text().await.unwrap();
    assert!(text.contains("does not resolve"), "{text}");
    assert_eq!(proxy.cached_count("broken").await, 0, "nothing cached");

    let res = client().get(proxy.url("/api/pinned/tool.tgz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "pinned");
    assert_eq!(upstream.count("GET", "/tool.tgz"), 1);
}

/// A server that answers every connection with `answer`, then closes it;
/// counts connections.
async fn raw_server(answer: &'static [u8]) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(answer).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_longer_than_announced_is_cut_at_the_announced_length() {
    let (url, _) = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n0123456789").await;
    let proxy = Proxy::start("remotes:\n  raw:\n    base_url: \"{upstream}\"\n", &url).await;
    for expected in ["MISS", "HIT"] {
        let res = client().get(proxy.url("/api/raw/x.bin")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-cache-status"], expected);
        assert_eq!(res.bytes().await.unwrap().as_ref(), b"01234", "HTTP framing decides the body");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_without_an_answer_is_a_502_not_retried_and_not_cached() {
    let (url, connections) = raw_server(b"").await;
    let proxy = Proxy::start("remotes:\n  raw:\n    base_url: \"{upstream}\"\n", &url).await;
    let res = client().get(proxy.url("/api/raw/x.bin")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Only failures to connect are retried (a sent request may have had effects).
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(proxy.cached_count("raw").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_loop_is_a_502_after_a_bounded_number_of_hops() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("remotes:\n  files:\n    base_url: \"{upstream}\"\n", &upstream.url()).await;
    let res = client().get(proxy.url("/api/files/loop/x.bin")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert!(res.text().await.unwrap().contains("redirect"));
    let hops = upstream.count("GET", "/loop/x.bin");
    assert!((2..=11).contains(&hops), "bounded: {hops} requests");
    assert_eq!(proxy.cached_count("files").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_slower_than_the_read_timeout_are_a_504() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                tokio::time::sleep(Duration::from_secs(3)).await;
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
            });
        }
    });
    let yaml = "remotes:\n  slow:\n    base_url: \"{upstream}\"\n";
    let proxy = Proxy::start_with(yaml, &url, &[("UPSTREAM_READ_TIMEOUT", "0.5")]).await;
    let res = client().get(proxy.url("/api/slow/x.bin")).send().await.unwrap();
    assert_eq!(res.status(), 504);
    assert_eq!(proxy.cached_count("slow").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_upstream_is_answered_stale_while_down_and_fresh_while_up() {
    let upstream = Upstream::start().await;
    upstream.put("/index.json", "v1", &[]);
    let yaml = "remotes:\n  files:\n    base_url: \"{upstream}\"\n    mutable_patterns: ['\\.json$']\n    cache:\n      mutable_ttl: 1\n";
    let proxy = Proxy::start(yaml, &upstream.url()).await;
    let get = |url: String| async move {
        let res = client().get(url).send().await.unwrap();
        let cache = res.headers()["x-cache-status"].to_str().unwrap().to_owned();
        (res.status().as_u16(), cache, res.text().await.unwrap())
    };
    let url = proxy.url("/api/files/index.json");
    assert_eq!(get(url.clone()).await, (200, "MISS".into(), "v1".into()));
    for version in ["v2", "v3"] {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        upstream.fail("/index.json", 503);
        let (status, cache, _) = get(url.clone()).await;
        assert_eq!((status, cache.as_str()), (200, "STALE"), "down: the copy we have");
        upstream.heal("/index.json");
        upstream.put("/index.json", version, &[]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (status, _, body) = get(url.clone()).await;
        assert_eq!((status, body.as_str()), (200, version), "up again: the new version");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_tried_three_times_then_a_502() {
    let upstream = Upstream::start().await;
    upstream.put("/tool.tgz", "never", &[]);
    let gate = support::Gate::start(upstream.addr).await;
    gate.close();
    let proxy =
        support::Binary::start("remotes:\n  files:\n    base_url: \"{upstream}\"\n", &gate.url(), &[]);
    let started = std::time::Instant::now();
    let res = client().get(proxy.url("/api/files/tool.tgz")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    let waited = started.elapsed();
    // Two retries, after 100 ms and 300 ms: three attempts in all.
    let log = |text: &'static str, wait: u64| {
        tokio::task::block_in_place(|| proxy.wait_for_log(text, Duration::from_millis(wait)))
    };
    assert!(log("retrying attempt=1", 5000) && log("retrying attempt=2", 5000), "two retries logged");
    assert!(!log("retrying attempt=3", 300), "no third retry");
    assert!(waited >= Duration::from_millis(400), "the retries back off: {waited:?}");
    assert_eq!(upstream.total(), 0);
    assert_eq!(proxy_cached(&proxy).await, 0, "nothing cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_starts_listening_during_the_backoff_is_reached_with_one_request() {
    let upstream = Upstream::start().await;
    upstream.put("/tool.tgz", "late but here", &[]);
    let gate = support::Gate::start(upstream.addr).await;
    gate.close();
    let proxy =
        support::Binary::start("remotes:\n  files:\n    base_url: \"{upstream}\"\n", &gate.url(), &[]);
    let url = proxy.url("/api/files/tool.tgz");
    let request = tokio::spawn(async move {
        let res = client().get(url).send().await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    });
    // The first attempt was refused; the port opens while the proxy waits
    // to try again (a retry comes 100 ms after it, the last one 400 ms).
    let refused =
        tokio::task::block_in_place(|| proxy.wait_for_log("retrying attempt=1", Duration::from_secs(10)));
    assert!(refused, "the first attempt is refused and retried");
    gate.open().await;
    assert_eq!(request.await.unwrap(), (200, "late but here".to_owned()));
    assert_eq!(upstream.count("GET", "/tool.tgz"), 1, "one request reached upstream");
    let res = client().get(proxy.url("/api/files/tool.tgz")).send().await.unwrap();
    assert_eq!(res.headers()["x-cache-status"], "HIT");
    assert_eq!(upstream.count("GET", "/tool.tgz"), 1);
}

async fn proxy_cached(proxy: &support::Binary) -> u64 {
    let res = client().get(proxy.url("/artifacts/files")).send().await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    json["count"].as_u64().unwrap()
}
