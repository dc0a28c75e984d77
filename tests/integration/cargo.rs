//! Cargo sparse registries through the proxy, proven with cargo (the
//! toolchain's): a static sparse registry the test writes (crates made by
//! `cargo package`, index lines with their checksums), served by nginx with
//! its downloads under another path than its index. A project builds
//! through source replacement cold, warm with a fresh `CARGO_HOME` (no
//! download asked of upstream again), with a yanked version in its lock
//! file, and with nginx stopped; a version published after the index was
//! cached is found once `mutable_ttl` has passed; cargo's conditional index
//! requests are answered 304. At the HTTP level: a tampered download is
//! refused and not cached, also right after a restart, and credentials go
//! only to the remote's own origin.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::support::{
    client, committed, eventually, fills_in_flight, nginx, sha256, Binary, Proxy, Upstream, PATIENCE,
};

/// Runs cargo in `dir` with `home` as its `CARGO_HOME` (and none of the
/// test runner's own cargo settings).
async fn cargo(dir: &Path, home: &Path, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(dir);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("CARGO")) {
        cmd.env_remove(key);
    }
    cmd.env("CARGO_HOME", home).env("CARGO_TERM_COLOR", "never").env("CARGO_NET_RETRY", "0");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("cargo runs")).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A `CARGO_HOME` under `root` whose crates registry is replaced by the
/// sparse registry at `index`.
fn cargo_home(root: &Path, name: &str, index: &str) -> PathBuf {
    let home = root.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let config = format!(
        "[source.crates-io]\nreplace-with = \"mirror\"\n\n[source.mirror]\nregistry = \"sparse+{index}\"\n"
    );
    std::fs::write(home.join("config.toml"), config).unwrap();
    home
}

/// Where the index keeps a crate's file.
fn index_file(name: &str) -> String {
    match name.len() {
        1 => format!("1/{name}"),
        2 => format!("2/{name}"),
        3 => format!("3/{}/{name}", &name[..1]),
        _ => format!("{}/{}/{name}", &name[..2], &name[2..4]),
    }
}

/// The static registry under `root/www`: `index/` and `crates/`.
struct Registry {
    root: PathBuf,
}

impl Registry {
    fn www(&self) -> PathBuf {
        self.root.join("www")
    }

    /// Packages the crate `name` `version` (with `deps`, `(name, req)`)
    /// with `cargo package` (resolving through `home`), puts the `.crate`
    /// under `crates/` and its line in the index.
    async fn publish(&self, home: &Path, name: &str, version: &str, deps: &[(&str, &str)], lib: &str) {
        let src = self.root.join("src").join(format!("{name}-{version}"));
        std::fs::create_dir_all(src.join("src")).unwrap();
        let dependencies: String = deps.iter().map(|(d, req)| format!("{d} = \"{req}\"\n")).collect();
        std::fs::write(
            src.join("Cargo.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"{version}\"\nedition = \"2021\"\n\
                 description = \"a test crate\"\nlicense = \"MIT\"\n\n[dependencies]\n{dependencies}"
            ),
        )
        .unwrap();
        std::fs::write(src.join("src/lib.rs"), lib).unwrap();
        let (ok, log) = cargo(&src, home, &["package", "--no-verify", "--allow-dirty"]).await;
        assert!(ok, "cargo package {name} {version}:\n{log}");
        let packed = std::fs::read(src.join(format!("target/package/{name}-{version}.crate"))).unwrap();
        let dir = self.www().join("crates").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}-{version}.crate")), &packed).unwrap();
        let deps: Vec<serde_json::Value> = deps
            .iter()
            .map(|(d, req)| {
                serde_json::json!({"name": d, "req": req, "features": [], "optional": false,
                    "default_features": true, "target": null, "kind": "normal"})
            })
            .collect();
        let line = serde_json::json!({"name": name, "vers": version, "deps": deps, "cksum": sha256(&packed),
            "features": {}, "yanked": false});
        self.append(name, &line.to_string());
    }

    fn append(&self, name: &str, line: &str) {
        let path = self.www().join("index").join(index_file(name));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        text.push_str(line);
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }

    /// Marks `name` `version` yanked in the index.
    fn yank(&self, name: &str, version: &str) {
        let path = self.www().join("index").join(index_file(name));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                if v["vers"] == version {
                    v["yanked"] = true.into();
                }
                v.to_string()
            })
            .collect();
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }
}

/// Sum of `artifactapi_requests_total` for `remote` with `status` (a
/// status class: `3xx` for the 304s).
async fn answered(proxy: &Proxy, remote: &str, status: &str) -> f64 {
    let text = client().get(proxy.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("artifactapi_requests_total{"))
        .filter(|l| {
            l.contains(&format!("remote=\"{remote}\"")) && l.contains(&format!("status=\"{status}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The application: uses `mid` (which uses `leaf`).
fn app(root: &Path) -> PathBuf {
    let dir = root.join("app");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nmid = \"1\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/main.rs"), "fn main() { println!(\"{}\", mid::greet()); }\n").unwrap();
    dir
}

/// Upstream requests for downloads.
fn downloads(root: &Path) -> usize {
    nginx::logged(root, ".crate ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cargo_builds_through_the_proxy_cold_warm_yanked_and_with_upstream_down() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let registry = Registry { root: root.to_owned() };
    std::fs::create_dir_all(registry.www().join("index")).unwrap();
    let (nginx, port) = nginx::start(root, "");
    let upstream = format!("http://127.0.0.1:{port}");
    let config =
        format!(r#"{{"dl":"{upstream}/crates/{{crate}}/{{crate}}-{{version}}.crate","api":"{upstream}"}}"#);
    std::fs::write(registry.www().join("index/config.json"), config).unwrap();
    // Crates are packaged against upstream directly.
    let packer = cargo_home(root, "home-packer", &format!("{upstream}/index/"));
    let leaf = "pub fn word() -> &'static str { \"hello\" }\n";
    registry.publish(&packer, "leaf", "1.0.0", &[], leaf).await;
    let mid = "pub fn greet() -> String { format!(\"{} world\", leaf::word()) }\n";
    registry.publish(&packer, "mid", "1.0.0", &[("leaf", "1")], mid).await;

    let yaml = "remotes:\n  crates:\n    base_url: \"{upstream}/index/\"\n    package: cargo\n    cache: { mutable_ttl: 2 }\n";
    let proxy = Proxy::start(yaml, &upstream).await;
    let index = proxy.url("/api/crates/");
    let dir = app(root);
    let before = downloads(root);

    // Cold.
    let home = cargo_home(root, "home-cold", &index);
    let (ok, log) = cargo(&dir, &home, &["run", "-q"]).await;
    assert!(ok && log.contains("hello world"), "cold cargo run through the proxy:\n{log}");
    assert_eq!(downloads(root) - before, 2, "leaf and mid downloaded from upstream once each");
    // The downloads came through the proxy's own URL shape.
    let config = client().get(format!("{index}config.json")).send().await.unwrap().bytes().await.unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["dl"], format!("{}/dl/{{crate}}/{{version}}/download", proxy.url("/api/crates")));
    assert!(config.get("api").is_none(), "no API: cargo publish is refused by cargo itself");
    committed(&proxy).await;

    // leaf 1.0.0 is yanked and 1.1.0 published: the lock file keeps 1.0.0.
    registry.yank("leaf", "1.0.0");
    let leaf11 = "pub fn word() -> &'static str { \"hi\" }\n";
    registry.publish(&packer, "leaf", "1.1.0", &[], leaf11).await;
    // Asked until the cached index file has expired and is fetched again.
    let leaf_index = format!("{index}{}", index_file("leaf"));
    eventually("leaf's index file fetched again", PATIENCE, || async {
        let text = client().get(&leaf_index).send().await.unwrap().text().await.unwrap();
        text.contains("\"1.1.0\"")
    })
    .await;

    // Warm, with a fresh CARGO_HOME: no download asked of upstream again,
    // the yanked version included.
    let cold = downloads(root);
    let home = cargo_home(root, "home-warm", &index);
    let (ok, log) = cargo(&dir, &home, &["run", "-q"]).await;
    assert!(ok && log.contains("hello world"), "warm cargo run with the yanked leaf 1.0.0 locked:\n{log}");
    assert_eq!(downloads(root), cold, "a warm build asks upstream for no download");

    // cargo revalidates its index files: the proxy answers 304.
    let not_modified = answered(&proxy, "crates", "3xx").await;
    let (ok, log) = cargo(&dir, &home, &["update", "--dry-run"]).await;
    assert!(ok, "cargo update:\n{log}");
    assert!(
        answered(&proxy, "crates", "3xx").await >= not_modified + 2.0,
        "cargo's conditional index requests get 304s ({not_modified} before)"
    );
    // The version published after the index was cached is found.
    assert!(log.contains("leaf v1.0.0 -> v1.1.0"), "cargo update sees leaf 1.1.0:\n{log}");
    let (ok, log) = cargo(&dir, &home, &["run", "-q"]).await;
    assert!(ok && log.contains("hello world"), "{log}");
    let (ok, log) = cargo(&dir, &home, &["update", "-p", "leaf"]).await;
    assert!(ok, "{log}");
    let (ok, log) = cargo(&dir, &home, &["run", "-q"]).await;
    assert!(ok && log.contains("hi world"), "built with leaf 1.1.0:\n{log}");
    assert_eq!(downloads(root), cold + 1, "leaf 1.1.0 downloaded once");
    committed(&proxy).await;

    // Upstream down: a fresh CARGO_HOME still builds from the proxy.
    drop(nginx);
    let home = cargo_home(root, "home-down", &index);
    let (ok, log) = cargo(&dir, &home, &["run", "-q"]).await;
    assert!(ok && log.contains("hi world"), "cargo run with upstream down:\n{log}");
}

/// One crate's index line and `.crate` bytes, at the HTTP level.
fn line(name: &str, version: &str, packed: &[u8], yanked: bool) -> String {
    serde_json::json!({"name": name, "vers": version, "deps": [], "cksum": sha256(packed),
        "features": {}, "yanked": yanked})
    .to_string()
}

/// A tampered download is refused and never cached, also right after a
/// restart (no promise in memory: the cached index file is read); a
/// yanked version downloads; the remote's credentials go to its own origin
/// and not to a download host elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_checked_against_the_index_also_after_a_restart() {
    let index = Upstream::start().await;
    let files = Upstream::start().await;
    let (good, old) = (b"the real crate".to_vec(), b"an old yanked crate".to_vec());
    let lines = format!("{}\n{}\n", line("ev", "0.1.0", &old, true), line("ev", "1.0.0", &good, false));
    index.put("/2/ev", lines, &[]);
    let config =
        format!(r#"{{"dl":"{}/files/{{prefix}}/{{crate}}-{{version}}.crate","api":"x"}}"#, files.url());
    index.put("/config.json", config, &[("content-type", "application/json")]);
    files.put("/files/2/ev-1.0.0.crate", good.clone(), &[]);
    files.put("/files/2/ev-0.1.0.crate", old.clone(), &[]);
    // Another remote, whose downloads are on its own origin.
    index.put("/own/config.json", format!(r#"{{"dl":"{}/own/dl"}}"#, index.url()), &[]);
    index.put("/own/2/ev", line("ev", "1.0.0", &good, false) + "\n", &[]);
    index.put("/own/dl/ev/1.0.0/download", good.clone(), &[]);
    let yaml = "remotes:\n  crates:\n    base_url: \"{upstream}/\"\n    package: cargo\n    username: robot\n    \
                password: secret\n  own:\n    base_url: \"{upstream}/own/\"\n    package: cargo\n    username: robot\n    \
                password: secret\n";
    let mut proxy = Binary::start(yaml, &index.url(), &[]);

    // cargo reads the index file first; then the process dies.
    let res = client().get(proxy.url("/api/crates/2/ev")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let metrics = proxy.url("/metrics");
    eventually("the index file is stored", PATIENCE, || async { fills_in_flight(&metrics).await == 0 }).await;
    proxy.restart();
    files.put("/files/2/ev-1.0.0.crate", b"a planted crate".to_vec(), &[]);
    let download = "/api/crates/dl/ev/1.0.0/download";
    for attempt in 1..=2 {
        let failed = match client().get(proxy.url(download)).send().await {
            Ok(res) if res.status() == 200 => res.bytes().await.is_err(),
            Ok(res) => res.status() == 502,
            Err(_) => true,
        };
        assert!(failed, "a download that does not match its cksum is never served whole");
        // The failed fill is done with only after its client heard of the
        // failure; a request before that would join it.
        let metrics = proxy.url("/metrics");
        eventually("the failed fill to finish", PATIENCE, || async { fills_in_flight(&metrics).await == 0 })
            .await;
        assert_eq!(files.count("GET", "/files/2/ev-1.0.0.crate"), attempt, "and never cached");
    }
    files.put("/files/2/ev-1.0.0.crate", good.clone(), &[]);
    for cache in ["MISS", "HIT"] {
        let res = client().get(proxy.url(download)).send().await.unwrap();
        assert_eq!((res.status().as_u16(), res.headers()["x-cache-status"].to_str().unwrap()), (200, cache));
        assert_eq!(res.bytes().await.unwrap().as_ref(), good.as_slice());
    }
    // A yanked version still downloads (lock files name them).
    let res = client().get(proxy.url("/api/crates/dl/ev/0.1.0/download")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), old.as_slice());
    assert_eq!(index.count("GET", "/2/ev"), 1, "the index file came from upstream once in all");
    // Credentials: to the index, not to a download host on another origin.
    assert!(index.requests().iter().all(|s| s.headers.contains_key("authorization")));
    assert!(
        files.requests().iter().all(|s| !s.headers.contains_key("authorization")),
        "none to the files host"
    );
    // A download on the remote's own origin gets them; without markers,
    // `/{crate}/{version}/download` is appended to `dl`.
    let res = client().get(proxy.url("/api/own/dl/ev/1.0.0/download")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let own = index.requests().into_iter().find(|s| s.path == "/own/dl/ev/1.0.0/download").unwrap();
    assert!(own.headers.contains_key("authorization"));
    // A version the index does not list is refused before any download.
    let res = client().get(proxy.url("/api/crates/dl/ev/9.9.9/download")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert!(res.text().await.unwrap().contains("no version 9.9.9"));
}
