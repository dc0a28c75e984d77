//! npm through the proxy with the real client: packages (one scoped, with a
//! dependency) from a verdaccio upstream, a fresh npm cache, lockfile
//! `resolved` URLs pointing at the proxy, and a second install with verdaccio
//! stopped.

use std::time::Duration;

use crate::support::{
    client, eventually, fills_in_flight,
    npm::{npm, package, run, Verdaccio},
    Proxy, PATIENCE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_installs_scoped_packages_through_the_proxy_and_again_with_the_upstream_down() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let mut upstream = Verdaccio::start(root);

    // Publish fixtures straight to verdaccio.
    let sources = root.join("sources");
    let shout = package(&sources, "shout", "1.0.0", "");
    let greet = package(&sources, "@acme/greet", "1.2.0", r#""shout":"^1.0.0""#);
    let publisher = root.join("publisher");
    std::fs::create_dir_all(&publisher).unwrap();
    for dir in [&shout, &greet] {
        let cmd = npm(
            &publisher,
            &format!("{}/", upstream.url),
            &["publish", "--ignore-scripts", "--provenance=false"],
            dir,
        );
        let (ok, log) = run(cmd).await;
        assert!(ok, "npm publish to verdaccio failed:\n{log}");
    }

    let config = r#"
remotes:
  npm:
    base_url: "{upstream}"
    package: npm
    npm_files_url: "{upstream}"
    npm_files_remote: npm
    immutable_patterns: ['\.tgz$']
    mutable_patterns: ['^(?!.*\.tgz$).*']
    cache: { mutable_ttl: 1 }
"#;
    let proxy = Proxy::start(config, &upstream.url).await;
    let registry = proxy.url("/api/v1/remote/npm/");

    // Every encoding of a scoped name is one entry; tarball URLs come back here.
    let first = client().get(proxy.url("/api/npm/@acme%2fgreet")).send().await.unwrap();
    assert_eq!(first.headers()["x-cache-status"], "MISS");
    let doc: serde_json::Value = serde_json::from_slice(&first.bytes().await.unwrap()).unwrap();
    let tarball = doc["versions"]["1.2.0"]["dist"]["tarball"].as_str().unwrap().to_owned();
    assert!(tarball.starts_with(&proxy.url("/api/v1/remote/npm/@acme/greet/-/greet-1.2.0.tgz")), "{tarball}");
    for encoding in ["/api/npm/@acme%2Fgreet", "/api/npm/@acme/greet"] {
        let res = client().get(proxy.url(encoding)).send().await.unwrap();
        assert_eq!(res.headers()["x-cache-status"], "HIT", "{encoding}");
    }

    let project = root.join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("package.json"),
        r#"{"name":"app","version":"0.0.0","private":true,"dependencies":{"@acme/greet":"^1.2.0"}}"#,
    )
    .unwrap();
    let mut cmd = npm(root, &registry, &["install"], &project);
    cmd.arg("--cache").arg(root.join("cache-1"));
    let (ok, log) = run(cmd).await;
    assert!(ok, "npm install through the proxy failed:\n{log}");
    assert!(project.join("node_modules/@acme/greet/index.js").exists());
    assert!(project.join("node_modules/shout/index.js").exists(), "the dependency came too");
    let lock = std::fs::read_to_string(project.join("package-lock.json")).unwrap();
    let lock: serde_json::Value = serde_json::from_str(&lock).unwrap();
    for name in ["node_modules/@acme/greet", "node_modules/shout"] {
        let resolved = lock["packages"][name]["resolved"].as_str().unwrap_or_default();
        assert!(resolved.starts_with(&registry), "{name} resolved to {resolved}");
    }

    // Warm: with verdaccio gone and the metadata expired, a clean install
    // with a fresh npm cache works from the proxy's cache.
    upstream.stop();
    // What npm fetched is committed just after it had the bytes: wait for
    // every fill to have finished, then (time, not an event) for the
    // metadata's mutable_ttl to run out.
    eventually("every fill to finish", PATIENCE, || async {
        fills_in_flight(&proxy.url("/metrics")).await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    std::fs::remove_dir_all(project.join("node_modules")).unwrap();
    let mut cmd = npm(root, &registry, &["ci"], &project);
    cmd.arg("--cache").arg(root.join("cache-2"));
    let (ok, log) = run(cmd).await;
    assert!(ok, "npm ci with the upstream down failed:\n{log}");
    assert!(project.join("node_modules/shout/index.js").exists());
    let mut cmd = npm(root, &registry, &["install"], &project);
    cmd.arg("--cache").arg(root.join("cache-3"));
    let (ok, log) = run(cmd).await;
    assert!(ok, "npm install with the upstream down failed:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetching_an_unlisted_version_refreshes_the_cached_packument() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let upstream = Verdaccio::start(root);
    let sources = root.join("sources");
    let publisher = root.join("publisher");
    std::fs::create_dir_all(&publisher).unwrap();
    let publish = |version: &str| {
        let dir = package(&sources.join(version), "@acme/tool", version, "");
        npm(
            &publisher,
            &format!("{}/", upstream.url),
            &["publish", "--ignore-scripts", "--provenance=false"],
            &dir,
        )
    };
    let (ok, log) = run(publish("1.0.0")).await;
    assert!(ok, "{log}");

    // Metadata cached for an hour.
    let config = "remotes:\n  npm:\n    base_url: \"{upstream}\"\n    package: npm\n    npm_files_url: \"{upstream}\"\n    npm_files_remote: npm\n    immutable_patterns: ['\\.tgz$']\n    mutable_patterns: ['^(?!.*\\.tgz$).*']\n";
    let proxy = Proxy::start(config, &upstream.url).await;
    let versions = |doc: serde_json::Value| -> Vec<String> {
        let mut v: Vec<String> = doc["versions"].as_object().unwrap().keys().cloned().collect();
        v.sort();
        v
    };
    let packument = || async {
        let res = client().get(proxy.url("/api/npm/@acme%2ftool")).send().await.unwrap();
        let status = res.headers()["x-cache-status"].to_str().unwrap().to_owned();
        (status, serde_json::from_slice::<serde_json::Value>(&res.bytes().await.unwrap()).unwrap())
    };
    let (status, doc) = packument().await;
    assert_eq!((status.as_str(), versions(doc)), ("MISS", vec!["1.0.0".to_owned()]));

    // A new version is published; the cached packument does not know it yet.
    let (ok, log) = run(publish("1.1.0")).await;
    assert!(ok, "{log}");
    let (status, doc) = packument().await;
    assert_eq!((status.as_str(), versions(doc)), ("HIT", vec!["1.0.0".to_owned()]));
    eventually("the packument to be committed", PATIENCE, || async {
        !expiries(&proxy, "npm", PACKUMENT).await.is_empty()
    })
    .await;
    let fresh_until = expiries(&proxy, "npm", PACKUMENT).await;

    // A client with a lockfile made elsewhere asks for the new tarball...
    let res = client().get(proxy.url("/api/npm/@acme/tool/-/tool-1.1.0.tgz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap();
    // ...which marks the cached packument expired (before its answer went out)...
    eventually("the cached packument to be marked expired", PATIENCE, || async {
        let now = expiries(&proxy, "npm", PACKUMENT).await;
        !now.is_empty() && now.iter().all(|e| fresh_until.iter().all(|before| e < before))
    })
    .await;
    // ...and from then on the packument lists it.
    let (status, doc) = packument().await;
    assert_ne!(status, "HIT");
    assert_eq!(versions(doc), vec!["1.0.0".to_owned(), "1.1.0".to_owned()]);
}

/// The cached packument of `@acme/tool`, as the index lists it.
const PACKUMENT: &str = "@acme/tool";

/// When each listed entry of `remote` at `path` expires (RFC 3339, UTC, to
/// the millisecond: they compare as strings).
async fn expiries(proxy: &Proxy, remote: &str, path: &str) -> Vec<String> {
    let listed = proxy.listing(remote).await.into_iter().filter(|(p, _)| p == path);
    listed.map(|(_, expires)| expires.expect("metadata expires")).collect()
}
