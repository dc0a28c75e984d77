//! Access logs (`ACCESS_LOG`): a line for a miss, a hit and an error, as JSON
//! and in nginx's combined format; `X-Forwarded-For` believed only from
//! `TRUSTED_PROXIES`.

mod support;

use serde_json::Value;
use support::{client, eventually, Binary, Upstream, PATIENCE};

const CONFIG: &str =
    "remotes:\n  files:\n    base_url: \"{upstream}\"\n  down:\n    base_url: \"http://127.0.0.1:9\"\n";

async fn get(proxy: &Binary, path: &str, forwarded_for: &str) -> (u16, usize) {
    let res = client()
        .get(proxy.url(&format!("/api{path}")))
        .header("x-forwarded-for", forwarded_for)
        .header("user-agent", "access-test/1.0 \"quoted\"")
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.bytes().await.unwrap().len())
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

async fn three_requests(proxy: &Binary, log: &std::path::Path) -> usize {
    let (status, len) = get(proxy, "/files/rel/a.tgz", "198.51.100.7").await;
    assert_eq!(status, 200);
    eventually("the entry", PATIENCE, || async {
        let res = client().get(proxy.url("/artifacts/files")).send().await.unwrap();
        serde_json::from_slice::<Value>(&res.bytes().await.unwrap()).unwrap()["count"] == 1
    })
    .await;
    assert_eq!(get(proxy, "/files/rel/a.tgz", "198.51.100.7").await.0, 200);
    // Nothing listens where `down` points: the proxy answers 502.
    assert_eq!(get(proxy, "/down/rel/broken.tgz", "198.51.100.7").await.0, 502);
    eventually("the three artifact lines", PATIENCE, || async {
        lines(log).iter().filter(|l| l.contains("/rel/")).count() == 3
    })
    .await;
    len
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_for_a_miss_a_hit_and_an_error_with_forwarded_for_from_an_untrusted_peer_ignored() {
    let upstream = Upstream::start().await;
    upstream.put("/rel/a.tgz", "some bytes of a", &[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let env =
        [("ACCESS_LOG".to_owned(), log.display().to_string()), ("LOG_FORMAT".to_owned(), "json".to_owned())];
    let proxy = Binary::start(CONFIG, &upstream.url(), &env);
    let len = three_requests(&proxy, &log).await;
    let parsed: Vec<Value> = lines(&log)
        .iter()
        .filter(|l| l.contains("/rel/"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let (miss, hit, error) = (&parsed[0], &parsed[1], &parsed[2]);
    for line in &parsed {
        assert_eq!(line["client"], "127.0.0.1", "X-Forwarded-For from an untrusted peer is ignored: {line}");
        assert_eq!(line["method"], "GET");
        assert!(line["duration_ms"].as_f64().is_some(), "{line}");
        let time = line["time"].as_str().unwrap();
        assert!(time.ends_with('Z') && time.len() == 24, "{time}");
    }
    assert_eq!(miss["path"], "/api/files/rel/a.tgz");
    let remotes = [&miss["remote"], &hit["remote"], &error["remote"]];
    assert_eq!(remotes, ["files", "files", "down"]);
    assert_eq!((miss["status"].as_u64(), miss["bytes"].as_u64()), (Some(200), Some(len as u64)));
    assert_eq!((miss["cache"].as_str(), miss["source"].as_str()), (Some("miss"), Some("upstream")));
    assert!(miss["upstream_ms"].as_f64().is_some(), "{miss}");
    assert_eq!((hit["cache"].as_str(), hit["source"].as_str()), (Some("hit"), Some("cache")));
    assert!(hit["upstream_ms"].is_null(), "a hit asks upstream nothing: {hit}");
    assert_eq!((error["status"].as_u64(), error["cache"].as_str()), (Some(502), Some("error")));
    assert!(error["upstream_ms"].as_f64().is_some(), "{error}");
    // Requests outside the artifact routes have their line too.
    client().get(proxy.url("/health")).send().await.unwrap().bytes().await.unwrap();
    eventually("the /health line", PATIENCE, || async {
        lines(&log).iter().any(|l| l.contains("\"path\":\"/health\""))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_lines_with_key_values_and_forwarded_for_from_a_trusted_proxy() {
    let upstream = Upstream::start().await;
    upstream.put("/rel/a.tgz", "some bytes of a", &[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let env = [
        ("ACCESS_LOG".to_owned(), log.display().to_string()),
        ("TRUSTED_PROXIES".to_owned(), "127.0.0.0/8, ::1".to_owned()),
    ];
    let proxy = Binary::start(CONFIG, &upstream.url(), &env);
    let len = three_requests(&proxy, &log).await;
    let artifact: Vec<String> = lines(&log).into_iter().filter(|l| l.contains("/rel/")).collect();
    let shape = |line: &str, status: u16, bytes: Option<usize>, tail: &str| {
        assert!(line.starts_with("198.51.100.7 - - ["), "the trusted proxy's client: {line}");
        let path = if status == 502 { "down/rel/broken.tgz" } else { "files/rel/a.tgz" };
        let request = format!("] \"GET /api/{path} HTTP/1.1\" {status} ");
        assert!(line.contains(&request), "{line}");
        if let Some(bytes) = bytes {
            assert!(
                line.contains(&format!(" {status} {bytes} \"-\" \"access-test/1.0 \\\"quoted\\\"\" ")),
                "{line}"
            );
        }
        assert!(line.contains(tail), "{line}");
        assert!(line.contains(" duration_ms="), "{line}");
    };
    shape(&artifact[0], 200, Some(len), "cache=miss source=upstream remote=files");
    shape(&artifact[1], 200, Some(len), "cache=hit source=cache remote=files");
    assert!(artifact[1].ends_with("upstream_ms=-"), "{}", artifact[1]);
    shape(&artifact[2], 502, None, "cache=error source=- remote=down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_before_the_answer_gets_a_499_line() {
    // An upstream that takes the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = "remotes:\n  silent:\n    base_url: \"{upstream}\"\n";
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let env = [("ACCESS_LOG".to_owned(), log.display().to_string())];
    let proxy = Binary::start(config, &format!("http://{}", silent.local_addr().unwrap()), &env);
    let gave_up = client()
        .get(proxy.url("/api/silent/rel/slow.tgz"))
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.is_err(), "the upstream never answers");
    eventually("the 499 line", PATIENCE, || async {
        lines(&log).iter().any(|l| l.contains("\"GET /api/silent/rel/slow.tgz HTTP/1.1\" 499 0 "))
    })
    .await;
    drop(silent);
}
