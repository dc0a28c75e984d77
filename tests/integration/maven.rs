//! Maven repositories through the proxy, proven with mvn (3.8, from
//! Debian): the upstream is a static repository the test assembles from
//! Debian's packaged Maven artifacts (`/usr/share/maven-repo`, linked file
//! by file, with the `.sha1` files it lacks written beside each jar and
//! pom), plus a library the test deploys into it with `mvn deploy`. A
//! project that pins every plugin to the version Debian installed, and
//! takes the library through a version range, builds with the proxy as its
//! only mirror: cold, warm with a fresh local repository (no jar asked of
//! upstream again), and with nginx stopped; a new release of the library
//! is used once `maven-metadata.xml` has expired. At the HTTP level: a jar
//! whose `.sha1` disagrees is refused and not cached, and the metadata's
//! checksums follow the metadata.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::support::{client, committed, eventually, nginx, Proxy, Upstream, PATIENCE};
use sha1::{Digest, Sha1};

/// Debian's Maven repository.
const DEBIAN_REPO: &str = "/usr/share/maven-repo";

/// The plugins a jar's lifecycle uses, at the versions Debian installs.
const PLUGINS: [(&str, &str); 6] = [
    ("maven-resources-plugin", "3.3.0"),
    ("maven-compiler-plugin", "3.10.1"),
    ("maven-surefire-plugin", "2.22.3"),
    ("maven-jar-plugin", "3.3.0"),
    ("maven-install-plugin", "3.1.0"),
    ("maven-deploy-plugin", "3.0.0"),
];

fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

/// Writes `{file}.sha1` beside every jar and pom under `dir`.
fn write_checksums(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            write_checksums(&path);
        } else if path.extension().is_some_and(|e| e == "jar" || e == "pom") {
            let sum = sha1_hex(&std::fs::read(&path).unwrap());
            std::fs::write(format!("{}.sha1", path.display()), sum).unwrap();
        }
    }
}

/// A `pom.xml` for `group:artifact:version`, with `dependencies` (XML) and
/// every plugin pinned.
fn pom(artifact: &str, version: &str, dependencies: &str) -> String {
    let plugins: String = PLUGINS
        .iter()
        .map(|(a, v)| format!("<plugin><groupId>org.apache.maven.plugins</groupId><artifactId>{a}</artifactId><version>{v}</version></plugin>"))
        .collect();
    format!(
        r#"<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>com.example</groupId>
  <artifactId>{artifact}</artifactId>
  <version>{version}</version>
  <packaging>jar</packaging>
  <properties>
    <maven.compiler.release>11</maven.compiler.release>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
  </properties>
  <dependencies>{dependencies}</dependencies>
  <build><plugins>{plugins}</plugins></build>
</project>
"#
    )
}

/// Settings with one mirror of everything, at `url`.
fn settings(root: &Path, name: &str, url: &str) -> PathBuf {
    let path = root.join(format!("settings-{name}.xml"));
    let xml = format!(
        "<settings><mirrors><mirror><id>{name}</id><mirrorOf>*</mirrorOf><url>{url}</url></mirror></mirrors></settings>"
    );
    std::fs::write(&path, xml).unwrap();
    path
}

/// Runs mvn in `dir` with `settings` (and no global settings) and `repo`
/// as its local repository.
async fn mvn(root: &Path, dir: &Path, settings: &Path, repo: &str, args: &[&str]) -> (bool, String) {
    let global = root.join("global-settings.xml");
    std::fs::write(&global, "<settings/>").unwrap();
    let mut cmd = Command::new("mvn");
    cmd.current_dir(dir)
        .args(["-B", "--no-transfer-progress", "-s"])
        .arg(settings)
        .arg("-gs")
        .arg(&global)
        .arg(format!("-Dmaven.repo.local={}", root.join(repo).display()))
        .args(args);
    let out = tokio::task::spawn_blocking(move || {
        cmd.output().expect("mvn runs (the test command installs maven)")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Deploys `com.example:greet:{version}` (whose `hello()` says `word`)
/// into the repository at `www/maven`, building it against upstream directly.
async fn deploy_greet(root: &Path, upstream: &Path, version: &str, word: &str) {
    let dir = root.join(format!("greet-{version}"));
    let src = dir.join("src/main/java/com/example/greet");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(dir.join("pom.xml"), pom("greet", version, "")).unwrap();
    std::fs::write(
        src.join("Greet.java"),
        format!("package com.example.greet;\n\npublic class Greet {{ public static String hello() {{ return \"{word}\"; }} }}\n"),
    )
    .unwrap();
    let target = format!("-DaltDeploymentRepository=local::file://{}", root.join("www/maven").display());
    let (ok, log) = mvn(root, &dir, upstream, "repo-publisher", &["deploy", &target]).await;
    assert!(ok, "mvn deploy greet {version}:\n{log}");
}

/// The application: uses `com.example:greet` in `[1.0,2.0)`.
fn app(root: &Path) -> PathBuf {
    let dir = root.join("app");
    let src = dir.join("src/main/java/com/example/app");
    std::fs::create_dir_all(&src).unwrap();
    let dependency = "<dependency><groupId>com.example</groupId><artifactId>greet</artifactId><version>[1.0,2.0)</version></dependency>";
    std::fs::write(dir.join("pom.xml"), pom("app", "0.1.0", dependency)).unwrap();
    std::fs::write(
        src.join("App.java"),
        "package com.example.app;\n\npublic class App { public static void main(String[] a) { System.out.println(com.example.greet.Greet.hello()); } }\n",
    )
    .unwrap();
    dir
}

/// Upstream requests for jars.
fn jars(root: &Path) -> usize {
    nginx::logged(root, ".jar ")
}

/// The version of greet a local repository holds after a build.
fn greet_versions(root: &Path, repo: &str) -> Vec<String> {
    let dir = root.join(repo).join("com/example/greet");
    let mut versions: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.contains('.')).collect()
        })
        .unwrap_or_default();
    versions.retain(|v| root.join(repo).join(format!("com/example/greet/{v}/greet-{v}.jar")).exists());
    versions.sort();
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mvn_builds_through_the_proxy_cold_warm_and_with_upstream_down() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let repo = root.join("www/maven");
    std::fs::create_dir_all(root.join("www")).unwrap();
    let linked = Command::new("cp").arg("-rs").arg(DEBIAN_REPO).arg(&repo).status().unwrap();
    assert!(linked.success(), "cp -rs {DEBIAN_REPO}");
    write_checksums(&repo);
    let (nginx, port) = nginx::start(root, "");
    let upstream = format!("http://127.0.0.1:{port}/maven/");
    let direct = settings(root, "direct", &upstream);
    deploy_greet(root, &direct, "1.0.0", "hello").await;

    let config = "remotes:\n  maven:\n    base_url: \"{upstream}\"\n    package: maven\n    cache: { mutable_ttl: 2 }\n";
    let proxy = Proxy::start(config, &upstream).await;
    let through = settings(root, "artifactapi", &proxy.url("/api/maven/"));
    let dir = app(root);

    // Cold.
    let before = jars(root);
    let (ok, log) = mvn(root, &dir, &through, "repo-cold", &["package"]).await;
    assert!(ok, "cold mvn package through the proxy:\n{log}");
    let cold = jars(root);
    assert!(cold - before >= 10, "the plugins' jars came from upstream ({} requests)", cold - before);
    assert_eq!(greet_versions(root, "repo-cold"), ["1.0.0"]);
    committed(&proxy).await;

    // Warm, with a fresh local repository: no jar asked of upstream again.
    let (ok, log) = mvn(root, &dir, &through, "repo-warm", &["package"]).await;
    assert!(ok, "warm mvn package:\n{log}");
    assert_eq!(jars(root), cold, "a warm build asks upstream for no jar");

    // A new release of the library, taken through the range once the
    // metadata has expired.
    deploy_greet(root, &direct, "1.1.0", "hi").await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let before = nginx::logged(root, "greet-1.1.0.jar ");
    let (ok, log) = mvn(root, &dir, &through, "repo-new", &["package"]).await;
    assert!(ok, "mvn package after a new release:\n{log}");
    assert_eq!(greet_versions(root, "repo-new"), ["1.1.0"], "the range picked the new release");
    assert_eq!(nginx::logged(root, "greet-1.1.0.jar ") - before, 1);
    committed(&proxy).await;

    // Upstream down: a fresh local repository still builds from the proxy.
    drop(nginx);
    let (ok, log) = mvn(root, &dir, &through, "repo-down", &["package"]).await;
    assert!(ok, "mvn package with upstream down:\n{log}");
    assert_eq!(greet_versions(root, "repo-down"), ["1.1.0"]);
}

/// A jar whose `.sha1` disagrees is refused and never cached; one that
/// agrees is stored, and its `.sha1` is then a hit; a jar without checksum
/// files is stored as it is. A new `maven-metadata.xml` expires its
/// checksums with it, however fresh they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_checked_against_their_sha1_and_metadata_checksums_follow_the_metadata() {
    let upstream = Upstream::start().await;
    let jar = b"PK a jar".to_vec();
    upstream.put("/com/example/good/1.0/good-1.0.jar", jar.clone(), &[]);
    upstream.put(
        "/com/example/good/1.0/good-1.0.jar.sha1",
        format!("{}  good-1.0.jar\n", sha1_hex(&jar)),
        &[],
    );
    upstream.put("/com/example/bad/1.0/bad-1.0.jar", b"PK a planted jar".to_vec(), &[]);
    upstream.put("/com/example/bad/1.0/bad-1.0.jar.sha1", sha1_hex(&jar), &[]);
    upstream.put("/com/example/bare/1.0/bare-1.0.jar", jar.clone(), &[]);
    let config = "remotes:\n  maven:\n    base_url: \"{upstream}\"\n    package: maven\n    cache: { mutable_ttl: 3 }\n";
    let proxy = Proxy::start(config, &upstream.url()).await;
    let get = |path: &str| {
        let url = proxy.url(&format!("/api/maven/{path}"));
        async move {
            match client().get(url).send().await {
                Ok(res) => {
                    let status = res.status().as_u16();
                    let cache = res.headers().get("x-cache-status").map(|v| v.to_str().unwrap().to_owned());
                    (status, cache, res.bytes().await.map(|b| b.to_vec()).map_err(|e| e.to_string()))
                }
                Err(e) => (0, None, Err(e.to_string())),
            }
        }
    };

    for attempt in 1..=2 {
        let (status, _, body) = get("com/example/bad/1.0/bad-1.0.jar").await;
        assert!(status != 200 || body.is_err(), "a jar its .sha1 disagrees with is never served whole");
        committed(&proxy).await;
        assert_eq!(upstream.count("GET", "/com/example/bad/1.0/bad-1.0.jar"), attempt, "and never cached");
    }
    let (status, cache, body) = get("com/example/good/1.0/good-1.0.jar").await;
    assert_eq!((status, cache.as_deref(), body.unwrap()), (200, Some("MISS"), jar.clone()));
    let (status, cache, _) = get("com/example/good/1.0/good-1.0.jar.sha1").await;
    assert_eq!((status, cache.as_deref()), (200, Some("HIT")), "the client's own check is a hit");
    assert_eq!(upstream.count("GET", "/com/example/good/1.0/good-1.0.jar.sha1"), 1);
    let (status, _, body) = get("com/example/bare/1.0/bare-1.0.jar").await;
    assert_eq!((status, body.unwrap()), (200, jar.clone()), "no checksum upstream: stored as it is");
    committed(&proxy).await;
    assert_eq!(get("com/example/bare/1.0/bare-1.0.jar").await.1.as_deref(), Some("HIT"));

    // The metadata is read, its checksum later (fresh for longer); then
    // upstream publishes a new revision of both.
    let meta = "com/example/good/maven-metadata.xml";
    let revision = |v: &str| format!("<metadata><versioning><latest>{v}</latest></versioning></metadata>");
    let publish = |v: &str| {
        upstream.put(&format!("/{meta}"), revision(v), &[]);
        upstream.put(&format!("/{meta}.sha1"), sha1_hex(revision(v).as_bytes()), &[]);
    };
    publish("1.0");
    assert_eq!(get(meta).await.2.unwrap(), revision("1.0").into_bytes());
    committed(&proxy).await;
    // On an idle machine the checksum is then still fresh when the metadata
    // expires; what is asserted below holds however late this test runs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    get(&format!("{meta}.sha1")).await.2.unwrap();
    committed(&proxy).await;
    let (_, own_expiry) = times(&proxy, &format!("{meta}.sha1")).await;
    publish("1.1");
    eventually("the metadata's new revision", PATIENCE, || async {
        get(meta).await.2.unwrap() == revision("1.1").into_bytes()
    })
    .await;
    committed(&proxy).await;
    // The new revision expired the checksum when it was stored: not at the
    // checksum's own expiry, which it would keep otherwise.
    let (stored, _) = times(&proxy, meta).await;
    let (_, expiry) = times(&proxy, &format!("{meta}.sha1")).await;
    assert!(
        expiry != own_expiry && expiry <= stored,
        "the checksum expires at {expiry}, its own expiry was {own_expiry}, the new metadata was stored at {stored}"
    );
    let sum = String::from_utf8(get(&format!("{meta}.sha1")).await.2.unwrap()).unwrap();
    assert_eq!(sum, sha1_hex(revision("1.1").as_bytes()), "the checksum is the new metadata's");
    assert_eq!(upstream.count("GET", &format!("/{meta}.sha1")), 2, "asked of upstream again");
}

/// When the entry at `path` of the `maven` remote was stored and when it
/// expires (RFC 3339, UTC, to the millisecond: they compare as strings).
async fn times(proxy: &Proxy, path: &str) -> (String, String) {
    let res = client().get(proxy.url("/artifacts/maven?limit=1000")).send().await.unwrap();
    let listing: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let item = listing["items"].as_array().unwrap().iter().find(|i| i["path"] == path);
    let item = item.unwrap_or_else(|| panic!("{path} is not listed: {listing}"));
    let time = |field: &str| item[field].as_str().unwrap_or_else(|| panic!("no {field}: {item}")).to_owned();
    (time("cached_at"), time("expires_at"))
}
