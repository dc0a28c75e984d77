//! Helm chart repositories at the protocol level (no helm client can be
//! installed here): the requests helm makes, in order. `index.yaml` with
//! relative, same-host, files-remote and foreign chart URLs; each chart
//! fetched by the URL read from the rewritten index, digest intact, the
//! second fetch a hit; a chart whose digest disagrees refused. And a chart
//! kept in an OCI registry, through the registry mirror.

use crate::support;

use crate::support::{client, committed, sha256, Proxy, Upstream};

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

/// Writes an OCI layout holding a Helm chart as OCI artifact (Helm's
/// config and chart media types) tagged `tag`; answers the manifest's
/// digest.
fn chart_layout(dir: &std::path::Path, tag: &str, chart: &[u8]) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = sha256(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let config = br#"{"apiVersion":"v2","name":"mychart","version":"1.0.0"}"#;
    let (config_digest, config_size) = put(config);
    let (chart_digest, chart_size) = put(chart);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": chart_digest, "size": chart_size}],
    })
    .to_string();
    let (manifest_digest, manifest_size) = put(manifest.as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    manifest_digest
}

/// A chart kept in an OCI registry needs no Helm remote: the registry
/// mirror serves it by tag and by digest, bytes intact (skopeo copies it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oci_chart_comes_through_the_registry_mirror() {
    use support::registry::{skopeo, Registry};
    let work = tempfile::tempdir().unwrap();
    let chart: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let digest = chart_layout(&work.path().join("layout"), "1.0.0", &chart);
    let registry = Registry::start();
    registry.push(&work.path().join("layout"), "1.0.0", "charts/mychart:1.0.0", false);
    let yaml = "remotes:\n  reg:\n    base_url: \"{upstream}\"\n    package: docker\n";
    let proxy = Proxy::start(yaml, &format!("http://127.0.0.1:{}", registry.port)).await;
    let accept = "application/vnd.oci.image.manifest.v1+json";
    let base = proxy.url("/v2/reg/charts/mychart");
    let by_tag =
        client().get(format!("{base}/manifests/1.0.0")).header("accept", accept).send().await.unwrap();
    assert_eq!(by_tag.status(), 200);
    assert_eq!(by_tag.headers()["docker-content-digest"], digest.as_str());
    let manifest: serde_json::Value = serde_json::from_slice(&by_tag.bytes().await.unwrap()).unwrap();
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.cncf.helm.config.v1+json");
    let by_digest =
        client().get(format!("{base}/manifests/{digest}")).header("accept", accept).send().await.unwrap();
    assert_eq!(format!("sha256:{}", sha256(&by_digest.bytes().await.unwrap())), digest);
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let blob = client().get(format!("{base}/blobs/{layer}")).send().await.unwrap().bytes().await.unwrap();
    assert!(blob.as_ref() == chart.as_slice(), "the chart's bytes intact");
    // skopeo, as a client would pull it through the mirror.
    let copied = work.path().join("copied");
    let (ok, err) = skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{}/reg/charts/mychart:1.0.0", proxy.addr),
        &format!("oci:{}:1.0.0", copied.display()),
    ]);
    assert!(ok, "skopeo copy of the chart through the mirror: {err}");
    let hex = layer.trim_start_matches("sha256:");
    assert!(std::fs::read(copied.join("blobs/sha256").join(hex)).unwrap() == chart);
}
