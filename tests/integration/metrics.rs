//! `GET /metrics`: the counts follow misses, hits, stale serves and
//! coalesced requests, with bounded labels.

use crate::support;

use std::time::Duration;

use crate::support::{client, eventually, Binary, Proxy, Upstream, PATIENCE};

const CONFIG: &str = "remotes:\n  files:\n    base_url: \"{upstream}\"\n    mutable_patterns: ['\\.json$']\n    cache:\n      mutable_ttl: 1\n";

async fn scrape(proxy: &Proxy) -> String {
    let res = client().get(proxy.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    res.text().await.unwrap()
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, sample) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            let wanted = metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            wanted.then(|| sample.parse::<f64>().ok()).flatten()
        })
        .sum()
}

async fn get(proxy: &Proxy, path: &str) -> (u16, String, usize) {
    let res = client().get(proxy.url(path)).send().await.unwrap();
    let status = res.status().as_u16();
    let cache =
        res.headers().get("x-cache-status").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, cache, res.bytes().await.unwrap().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_follow_miss_hit_stale_and_coalesced_requests() {
    let upstream = Upstream::start().await;
    upstream.put("/a.bin", vec![7u8; 5000], &[]);
    upstream.put("/index.json", "{}", &[]);
    let proxy = Proxy::start(CONFIG, &upstream.url()).await;
    let requests = |text: &str, cache: &str| {
        value(text, "artifactapi_requests_total", &[("remote", "files"), ("cache", cache)])
    };

    assert_eq!(get(&proxy, "/api/files/a.bin").await, (200, "MISS".into(), 5000));
    let text = scrape(&proxy).await;
    assert_eq!(requests(&text, "miss"), 1.0);
    assert_eq!(
        value(&text, "artifactapi_served_bytes_total", &[("remote", "files"), ("source", "upstream")]),
        5000.0
    );
    assert_eq!(
        value(&text, "artifactapi_upstream_requests_total", &[("remote", "files"), ("outcome", "2xx")]),
        1.0
    );
    assert_eq!(value(&text, "artifactapi_upstream_latency_seconds_count", &[("remote", "files")]), 1.0);
    assert_eq!(value(&text, "artifactapi_fills_total", &[]), 1.0);

    assert_eq!(get(&proxy, "/api/files/a.bin").await, (200, "HIT".into(), 5000));
    let text = scrape(&proxy).await;
    assert_eq!(requests(&text, "hit"), 1.0);
    assert_eq!(requests(&text, "hit") + requests(&text, "miss"), 2.0);
    assert_eq!(
        value(&text, "artifactapi_served_bytes_total", &[("remote", "files"), ("source", "cache")]),
        5000.0
    );
    assert_eq!(value(&text, "artifactapi_upstream_requests_total", &[("remote", "files")]), 1.0);
    assert_eq!(value(&text, "artifactapi_transfers_in_flight", &[]), 0.0);

    // Expired, upstream failing: stale.
    assert_eq!(get(&proxy, "/api/files/index.json").await.1, "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    upstream.fail("/index.json", 503);
    assert_eq!(get(&proxy, "/api/files/index.json").await.1, "STALE");
    let text = scrape(&proxy).await;
    assert_eq!(requests(&text, "stale"), 1.0);
    assert_eq!(value(&text, "artifactapi_requests_total", &[("class", "mutable"), ("cache", "stale")]), 1.0);
    assert_eq!(
        value(&text, "artifactapi_upstream_requests_total", &[("remote", "files"), ("outcome", "5xx")]),
        1.0
    );

    // Four at once: one fill, three coalesced.
    let url = proxy.url("/api/files/slow/8/50/s.bin");
    let pulls: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { client().get(url).send().await.unwrap().bytes().await.unwrap().len() })
        })
        .collect();
    for pull in pulls {
        assert_eq!(pull.await.unwrap(), 8 * 65536);
    }
    assert_eq!(upstream.count("GET", "/slow/8/50/s.bin"), 1);
    // Clients have every byte a moment before the fill has written its index
    // row; the gauge falls to zero once it has.
    let metrics = proxy.url("/metrics");
    support::eventually("the fill to commit", support::PATIENCE, || async {
        support::fills_in_flight(&metrics).await == 0
    })
    .await;
    let text = scrape(&proxy).await;
    assert_eq!(value(&text, "artifactapi_coalesced_requests_total", &[]), 3.0);
    assert_eq!(value(&text, "artifactapi_fills_total", &[]), 4.0, "a.bin, index.json twice, s.bin");
    assert_eq!(value(&text, "artifactapi_fills_in_flight", &[]), 0.0);

    // Store sizes per remote; no path ever becomes a label.
    assert_eq!(value(&text, "artifactapi_store_entries", &[("remote", "files")]), 3.0);
    assert!(value(&text, "artifactapi_store_bytes", &[("remote", "files")]) >= 5000.0 + 8.0 * 65536.0);
    assert!(!text.contains("a.bin") && !text.contains("s.bin"), "{text}");
    // Unknown remotes collapse into one label.
    assert_eq!(get(&proxy, "/api/nope/x").await.0, 404);
    assert!(!scrape(&proxy).await.contains("nope"));
}

/// Every metric the Grafana dashboard queries is one the binary exports
/// (each family's `# TYPE` line is there before any sample), and the compose
/// file provisions the dashboard and a Prometheus that scrapes the replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_queries_only_metrics_the_binary_exports() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/dashboards/artifactapi.json")).unwrap(),
    )
    .unwrap();
    let mut used = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "prometheus");
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("artifactapi_") {
                let name: String =
                    rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[at + name.len()..];
                used.insert(name);
            }
        }
    }
    for needed in [
        "requests",
        "served_bytes",
        "upstream_latency",
        "upstream_requests",
        "fills",
        "coalesced",
        "store_bytes",
        "store_budget",
        "evicted",
        "policy_decisions",
    ] {
        assert!(used.iter().any(|m| m.contains(needed)), "the dashboard shows {needed}");
    }

    // Families with labels show in /metrics once they have a sample: some
    // traffic first (a miss, a hit, a purge).
    let upstream = Upstream::start().await;
    upstream.put("/rel/a.tgz", "bytes", &[]);
    let proxy = Binary::start("remotes:\n  files:\n    base_url: \"{upstream}\"\n", &upstream.url(), &[]);
    for _ in 0..2 {
        client().get(proxy.url("/api/files/rel/a.tgz")).send().await.unwrap().bytes().await.unwrap();
    }
    eventually("the entry", PATIENCE, || async {
        client()
            .get(proxy.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("artifactapi_store_bytes{")
    })
    .await;
    let before = client().get(proxy.url("/metrics")).send().await.unwrap().text().await.unwrap();
    client().delete(proxy.url("/cache/files/rel/a.tgz")).send().await.unwrap();
    let after = client().get(proxy.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let text = before + &after;
    let exported: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    for name in &used {
        // Only once a policy decided something (tests/integration/policy.rs sees it then).
        if name.starts_with("artifactapi_policy_decisions") {
            continue;
        }
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .fold(name.as_str(), |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
        assert!(exported.contains(&family), "{name} is not in /metrics: {exported:?}");
    }

    let compose = deploy_yaml(&root().join("deploy/compose.yaml"));
    let grafana = &compose[0]["services"]["grafana"];
    for mount in grafana["volumes"].as_sequence().unwrap() {
        let source = mount.as_str().unwrap().split(':').next().unwrap();
        assert!(root().join("deploy").join(source).exists(), "{source}");
    }
    let prometheus = deploy_yaml(&root().join("deploy/prometheus.yml"));
    let targets = &prometheus[0]["scrape_configs"][0]["static_configs"][0]["targets"];
    for replica in ["artifactapi-a", "artifactapi-b"] {
        assert!(compose[0]["services"][replica].is_mapping());
        assert!(
            targets.as_sequence().unwrap().iter().any(|t| t.as_str().unwrap().starts_with(replica)),
            "{replica}"
        );
    }
    let datasource = deploy_yaml(&root().join("deploy/grafana/provisioning/datasources/prometheus.yaml"));
    assert_eq!(datasource[0]["datasources"][0]["uid"], "prometheus");
}

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy_yaml(path: &std::path::Path) -> Vec<serde_yaml_ng::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}
