//! Helm chart repositories at the protocol level (no helm client can be
//! installed here): the requests helm makes, in order. `index.yaml` with
//! relative, same-host, files-remote and foreign chart URLs; each chart
//! fetched by the URL read from the rewritten index, digest intact, the
//! second fetch a hit; a chart whose digest disagrees refused.

mod support;

use support::{client, committed, sha256, Proxy, Upstream};

#[tokio::test]
async fn the_index_sends_charts_through_the_proxy_and_their_digests_are_checked() {
    let upstream = Upstream::start().await;
    let releases = Upstream::start().await;
    let charts = [("a", b"chart a".to_vec()), ("b", b"chart b".to_vec()), ("c", b"chart c".to_vec())];
    upstream.put("/charts/a-1.0.0.tgz", charts[0].1.clone(), &[]);
    upstream.put("/charts/b-1.0.0.tgz", charts[1].1.clone(), &[]);
    releases.put("/download/c-1.0.0.tgz", charts[2].1.clone(), &[]);
    upstream.put("/charts/bad-1.0.0.tgz", b"not what the index says".to_vec(), &[]);
    let entry = |name: &str, url: String, digest: String| {
        format!("  {name}:\n  - apiVersion: v2\n    name: {name}\n    version: 1.0.0\n    digest: {digest}\n    urls:\n    - {url}\n")
    };
    let index = format!(
        "apiVersion: v1\nentries:\n{}{}{}{}{}generated: \"2024-01-02T03:04:05Z\"\n",
        entry("a", "charts/a-1.0.0.tgz".into(), sha256(&charts[0].1)),
        entry("b", format!("{}/charts/b-1.0.0.tgz", upstream.url()), sha256(&charts[1].1)),
        entry("c", format!("{}/download/c-1.0.0.tgz", releases.url()), sha256(&charts[2].1)),
        entry("d", "https://elsewhere.example/d-1.0.0.tgz".into(), "cd".repeat(32)),
        entry("bad", "charts/bad-1.0.0.tgz".into(), sha256(b"the real chart")),
    );
    upstream.put("/index.yaml", index, &[("content-type", "application/x-yaml")]);
    let yaml = format!(
        "remotes:\n  helm: {{ base_url: \"{{upstream}}/\", package: helm, helm_files_remote: releases }}\n  \
         releases: {{ base_url: \"{}/\" }}\n",
        releases.url()
    );
    let proxy = Proxy::start(&yaml, &upstream.url()).await;

    let text = client().get(proxy.url("/api/helm/index.yaml")).send().await.unwrap().text().await.unwrap();
    let rewritten: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let url = |name: &str| rewritten["entries"][name][0]["urls"][0].as_str().unwrap().to_owned();
    assert_eq!(url("a"), proxy.url("/api/v1/remote/helm/charts/a-1.0.0.tgz"));
    assert_eq!(url("b"), proxy.url("/api/v1/remote/helm/charts/b-1.0.0.tgz"));
    assert_eq!(url("c"), proxy.url("/api/v1/remote/releases/download/c-1.0.0.tgz"));
    assert_eq!(url("d"), "https://elsewhere.example/d-1.0.0.tgz", "another host is left as it is");
    assert_eq!(rewritten["generated"], "2024-01-02T03:04:05Z");

    for (name, bytes) in &charts {
        for cache in ["MISS", "HIT"] {
            let res = client().get(url(name)).send().await.unwrap();
            assert_eq!(res.headers()["x-cache-status"], cache, "{name}");
            assert_eq!(res.bytes().await.unwrap().as_ref(), bytes.as_slice(), "{name}");
            committed(&proxy).await;
        }
    }
    for attempt in 1..=2 {
        let failed = match client().get(url("bad")).send().await {
            Ok(res) if res.status() == 200 => res.bytes().await.is_err(),
            Ok(res) => res.status() == 502,
            Err(_) => true,
        };
        assert!(failed, "a chart that does not match its digest is never served whole");
        committed(&proxy).await;
        assert_eq!(upstream.count("GET", "/charts/bad-1.0.0.tgz"), attempt, "and never cached");
    }
    assert_eq!(upstream.count("GET", "/index.yaml"), 1);
}
