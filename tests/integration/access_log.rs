//! Access logs (`ACCESS_LOG`): a line for a miss, a hit and an error, as JSON
//! and in nginx's combined format; `X-Forwarded-For` believed only from
//! `TRUSTED_PROXIES`, read from the right, `ip:port` and `[v6]:port`
//! entries included; the policy's audit line names the same client.

use crate::support::{client, eventually, Binary, Upstream, PATIENCE};
use serde_json::Value;

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

/// A client whose connections come from `local`: every 127.0.0.0/8 address
/// is this machine's, so one proxy sees a trusted and an untrusted peer.
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(local.parse::<std::net::IpAddr>().ok())
        .build()
        .unwrap()
}

/// Each case: the peer it comes from, its `X-Forwarded-For` lines and the
/// client it names, with `TRUSTED_PROXIES=127.0.0.1, 10.0.0.0/8`.
const CASES: [(&str, &str, &[&str], &str); 6] = [
    ("port", "127.0.0.1", &["spoofed, 203.0.113.7:4711"], "203.0.113.7"),
    ("v6-port", "127.0.0.1", &["spoofed, [2001:db8::7]:443"], "2001:db8::7"),
    // Two trusted hops on the right, over two header lines.
    ("chain", "127.0.0.1", &["198.51.100.66, 203.0.113.9:5000", "10.1.2.3, 10.0.0.5:8080"], "203.0.113.9"),
    // What cannot be read stops the walk at the trusted hop that wrote it.
    ("unreadable", "127.0.0.1", &["203.0.113.7, unknown"], "127.0.0.1"),
    // A peer that is not trusted is the client, whatever it forwards.
    ("untrusted", "127.0.0.2", &["203.0.113.7"], "127.0.0.2"),
    ("untrusted-port", "127.0.0.2", &["198.51.100.66, 203.0.113.7:4711"], "127.0.0.2"),
];

const TRUSTED: (&str, &str) = ("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8");

async fn send_cases(proxy: &Binary, path_of: impl Fn(&str) -> String) {
    for (case, from, forwarded, _) in CASES {
        let mut req = client_from(from).get(proxy.url(&path_of(case)));
        for line in forwarded {
            req = req.header("x-forwarded-for", *line);
        }
        req.send().await.unwrap().bytes().await.unwrap();
    }
}

fn json_lines(path: &std::path::Path) -> Vec<Value> {
    lines(path).iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_is_the_right_most_forwarded_address_not_a_trusted_proxy_with_ports_read() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let env = [
        ("ACCESS_LOG".to_owned(), log.display().to_string()),
        ("LOG_FORMAT".to_owned(), "json".to_owned()),
        (TRUSTED.0.to_owned(), TRUSTED.1.to_owned()),
    ];
    let proxy = Binary::start(CONFIG, &upstream.url(), &env);
    send_cases(&proxy, |case| format!("/api/files/case/{case}.tgz")).await;
    eventually("a line per case", PATIENCE, || async {
        lines(&log).iter().filter(|l| l.contains("/case/")).count() == CASES.len()
    })
    .await;
    let logged = json_lines(&log);
    for (case, from, forwarded, client) in CASES {
        let path = format!("/api/files/case/{case}.tgz");
        let line = logged.iter().find(|l| l["path"] == path.as_str()).unwrap();
        assert_eq!(line["client"], client, "{case}: from {from} with {forwarded:?}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_line_names_the_client_the_access_log_names_not_a_forged_first_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (log, audit) = (dir.path().join("access.log"), dir.path().join("audit.jsonl"));
    let env = [
        ("ACCESS_LOG".to_owned(), log.display().to_string()),
        ("LOG_FORMAT".to_owned(), "json".to_owned()),
        ("AUDIT_LOG".to_owned(), audit.display().to_string()),
        (TRUSTED.0.to_owned(), TRUSTED.1.to_owned()),
    ];
    // A denied name is refused without asking upstream for the file.
    let upstream = Upstream::start().await;
    let config = "remotes:\n  npm:\n    base_url: \"{upstream}\"\n    package: npm\n    \
                  policy: { deny: [\"bad\"] }\n  grouped:\n    type: group\n    package: npm\n    \
                  members: [npm]\n";
    let proxy = Binary::start(config, &upstream.url(), &env);
    send_cases(&proxy, |_| "/api/npm/bad/-/bad-1.0.0.tgz".into()).await;
    // Through a group, the member's policy audits the group's client.
    send_cases(&proxy, |_| "/api/grouped/bad/-/bad-1.0.0.tgz".into()).await;
    let expected: Vec<&str> = CASES.iter().chain(CASES.iter()).map(|c| c.3).collect();
    eventually("an audit line per request", PATIENCE, || async { lines(&audit).len() >= expected.len() })
        .await;
    let audited = json_lines(&audit);
    let clients: Vec<&str> = audited.iter().map(|l| l["client"].as_str().unwrap()).collect();
    assert_eq!(clients, expected, "{audited:#?}");
    assert!(audited.iter().all(|l| l["remote"] == "npm" && l["action"] == "refused"), "{audited:#?}");
    eventually("an access line per request", PATIENCE, || async {
        lines(&log).iter().filter(|l| l.contains("/bad/-/")).count() == expected.len()
    })
    .await;
    // The access log's lines of two workers may interleave out of order.
    let mut logged: Vec<String> = json_lines(&log)
        .iter()
        .filter(|l| l["path"].as_str().unwrap().contains("/bad/-/"))
        .map(|l| l["client"].as_str().unwrap().to_owned())
        .collect();
    let mut expected = expected;
    logged.sort();
    expected.sort();
    assert_eq!(logged, expected, "the access log and the audit agree");
}
