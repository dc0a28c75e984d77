//! RubyGems through the proxy, proven with gem and bundler (Debian's ruby):
//! a static gem server the test builds (`gem build` of local gems, one
//! depending on another, one with a `-` in its name; `gem generate_index`;
//! compact index files the test writes), served by nginx. `gem install`
//! cold, warm with a fresh `GEM_HOME` (no `.gem` asked of upstream again)
//! and with nginx stopped; `bundle install`, then again after a new version
//! is appended upstream; a tampered `.gem` refused, also after a restart.

use crate::support;

use std::{path::Path, process::Command};

use crate::support::{client, committed, nginx, sha256, Binary, Proxy, Upstream};
use md5::{Digest, Md5};

/// Builds `name`-`version` (depending on `deps`) into `www/gems`.
fn build_gem(root: &Path, name: &str, version: &str, deps: &[&str]) -> Vec<u8> {
    let src = root.join("src").join(format!("{name}-{version}"));
    std::fs::create_dir_all(src.join("lib")).unwrap();
    std::fs::write(
        src.join("lib").join(format!("{name}.rb")),
        format!("module Built; VERSION = {version:?}; end\n"),
    )
    .unwrap();
    let deps: String = deps.iter().map(|d| format!("  s.add_dependency {d:?}\n")).collect();
    std::fs::write(
        src.join("g.gemspec"),
        format!(
            "Gem::Specification.new do |s|\n  s.name = {name:?}\n  s.version = {version:?}\n  s.summary = \"test\"\n  \
             s.authors = [\"t\"]\n  s.license = \"MIT\"\n  s.files = [\"lib/{name}.rb\"]\n{deps}end\n"
        ),
    )
    .unwrap();
    let out = Command::new("gem").arg("build").arg("g.gemspec").current_dir(&src).output().expect("gem runs");
    assert!(out.status.success(), "gem build: {}", String::from_utf8_lossy(&out.stderr));
    let file = format!("{name}-{version}.gem");
    let bytes = std::fs::read(src.join(&file)).unwrap();
    std::fs::create_dir_all(root.join("www/gems")).unwrap();
    std::fs::write(root.join("www/gems").join(file), &bytes).unwrap();
    bytes
}

/// The gem server's indexes: `gem generate_index`, and the compact index
/// (`names`, `versions`, `info/*`) for `gems` (name, version, deps, bytes).
fn index(root: &Path, gems: &[(&str, &str, &str, Vec<u8>)]) {
    let www = root.join("www");
    let out = Command::new("gem").args(["generate_index", "--directory"]).arg(&www).output().unwrap();
    assert!(out.status.success(), "gem generate_index: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::create_dir_all(www.join("info")).unwrap();
    let mut names: Vec<&str> = gems.iter().map(|g| g.0).collect();
    names.sort();
    names.dedup();
    std::fs::write(www.join("names"), format!("---\n{}\n", names.join("\n"))).unwrap();
    let mut versions = String::from("created_at: 2024-01-01T00:00:00Z\n---\n");
    for name in names {
        let mut info = String::from("---\n");
        let mut listed = Vec::new();
        for (_, version, deps, bytes) in gems.iter().filter(|g| g.0 == name) {
            info.push_str(&format!("{version} {deps}|checksum:{}\n", sha256(bytes)));
            listed.push(*version);
        }
        std::fs::write(www.join("info").join(name), &info).unwrap();
        versions.push_str(&format!(
            "{name} {} {}\n",
            listed.join(","),
            hex::encode(Md5::digest(info.as_bytes()))
        ));
    }
    std::fs::write(www.join("versions"), versions).unwrap();
}

/// Runs `program` with `args` in `dir`, with its own `HOME` and gem paths.
async fn ruby_tool(root: &Path, dir: &Path, home: &str, program: &str, args: &[&str]) -> (bool, String) {
    let home = root.join(home);
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env("HOME", &home)
        .env("GEM_HOME", home.join("gems"))
        .env("GEM_PATH", home.join("gems"))
        .env("GEM_SPEC_CACHE", home.join("specs"))
        .env("BUNDLE_USER_HOME", home.join("bundle"))
        .env("BUNDLE_PATH", home.join("bundle-path"))
        .env("BUNDLE_APP_CONFIG", home.join("bundle-config"))
        .env_remove("http_proxy")
        .env_remove("https_proxy");
    let out = tokio::task::spawn_blocking(move || {
        cmd.output().expect("ruby tools run (the test command installs them)")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

async fn gem_install(root: &Path, source: &str, home: &str) -> (bool, String) {
    let args = ["install", "my-gem", "--clear-sources", "--source", source, "--no-document"];
    ruby_tool(root, root, home, "gem", &args).await
}

/// GETs a compact index file (with `range`), and checks that its `ETag` is
/// the quoted MD5 of the whole file; answers the `X-Cache-Status`.
async fn compact_index_answer(url: &str, range: Option<&str>) -> (String, String) {
    let whole = match range {
        Some(_) => Some(client().get(url).send().await.unwrap().bytes().await.unwrap()),
        None => None,
    };
    let mut req = client().get(url);
    if let Some(range) = range {
        req = req.header("range", range);
    }
    let res = req.send().await.unwrap();
    let expected_status = if range.is_some() { 206 } else { 200 };
    assert_eq!(res.status().as_u16(), expected_status, "{url}");
    let cache = res.headers()["x-cache-status"].to_str().unwrap().to_owned();
    let etag = res.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
    let body = res.bytes().await.unwrap();
    let whole = whole.unwrap_or(body);
    let md5 = format!("\"{}\"", hex::encode(Md5::digest(&whole)));
    assert_eq!(etag.as_deref(), Some(md5.as_str()), "{url} answered {cache}");
    (cache, md5)
}

fn gem_requests(root: &Path) -> usize {
    nginx::logged(root, ".gem ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gem_and_bundler_install_through_the_proxy_cold_warm_after_a_release_and_with_upstream_down() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let base = build_gem(root, "base", "1.0.0", &[]);
    let mine = build_gem(root, "my-gem", "1.0.0", &["base"]);
    let mut gems = vec![("base", "1.0.0", "", base), ("my-gem", "1.0.0", "base:>= 0", mine)];
    index(root, &gems);
    let (nginx, port) = nginx::start(root, "");
    let yaml =
        "remotes:\n  gems: { base_url: \"{upstream}\", package: rubygems, cache: { mutable_ttl: 2 } }\n";
    let proxy = Proxy::start(yaml, &format!("http://127.0.0.1:{port}/")).await;
    let source = proxy.url("/api/gems/");

    // gem: cold, then warm with a fresh GEM_HOME.
    let (ok, log) = gem_install(root, &source, "home-cold").await;
    assert!(ok, "gem install through the proxy:\n{log}");
    assert!(root.join("home-cold/gems/gems/my-gem-1.0.0/lib/my-gem.rb").exists(), "{log}");
    assert!(root.join("home-cold/gems/gems/base-1.0.0").exists(), "the dependency too:\n{log}");
    let cold = gem_requests(root);
    assert_eq!(cold, 2, "each .gem from upstream once");
    committed(&proxy).await;
    let (ok, log) = gem_install(root, &source, "home-warm").await;
    assert!(ok, "warm gem install:\n{log}");
    assert_eq!(gem_requests(root), cold, "a warm install asks upstream for no .gem");

    // bundler, through the compact index.
    let app = root.join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("Gemfile"), format!("source \"{source}\"\ngem \"my-gem\"\n")).unwrap();
    let (ok, log) = ruby_tool(root, &app, "home-bundle", "bundle", &["install"]).await;
    assert!(ok, "bundle install through the proxy:\n{log}");
    let lock = std::fs::read_to_string(app.join("Gemfile.lock")).unwrap();
    assert!(lock.contains("my-gem (1.0.0)"), "{lock}");
    assert!(nginx::logged(root, "GET /info/my-gem ") >= 1, "bundler read the compact index");

    // A new release, appended to `versions` upstream: found once the cached
    // copies have expired (each compact index file is asked for until it
    // is fetched again rather than answered from the cache).
    let newer = build_gem(root, "my-gem", "1.1.0", &["base"]);
    gems.push(("my-gem", "1.1.0", "base:>= 0", newer));
    index(root, &gems);
    for file in ["versions", "info/my-gem"] {
        let url = format!("{source}{file}");
        support::eventually(&format!("{file} fetched again"), support::PATIENCE, || async {
            compact_index_answer(&url, None).await.0 != "HIT"
        })
        .await;
    }
    let (ok, log) = ruby_tool(root, &app, "home-bundle", "bundle", &["update", "my-gem"]).await;
    assert!(ok, "bundle update after a release:\n{log}");
    let lock = std::fs::read_to_string(app.join("Gemfile.lock")).unwrap();
    assert!(lock.contains("my-gem (1.1.0)"), "the new release is found:\n{lock}\n{log}");
    // The compact index answers carry the MD5 of the whole file as ETag
    // whichever path answers (compact_index_answer checks each): the fill,
    // the store, a range of it, and, once expired, the entry upstream
    // (nginx, with an ETag of its own) confirmed with a 304.
    let versions = format!("{source}versions");
    let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
    support::eventually("versions revalidated", support::PATIENCE, || async {
        let status = compact_index_answer(&versions, None).await.0;
        let done = status == "REVALIDATED";
        seen.borrow_mut().insert(status);
        done
    })
    .await;
    let seen = seen.into_inner();
    assert!(seen.contains("HIT"), "answered from the cache before it expired: {seen:?}");
    assert!(nginx::logged(root, "GET /versions ") >= 3, "asked upstream again");
    assert_eq!(compact_index_answer(&versions, Some("bytes=-1")).await.0, "HIT");
    committed(&proxy).await;
    // Upstream down: a fresh GEM_HOME still installs.
    drop(nginx);
    let (ok, log) = gem_install(root, &source, "home-down").await;
    assert!(ok, "gem install with upstream down:\n{log}");
}

/// A `.gem` that does not match its `info` line's checksum is refused and
/// not cached, also right after a restart (the cached `info` is read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_gem_is_refused_also_after_a_restart() {
    let upstream = Upstream::start().await;
    let good = b"a real gem".to_vec();
    upstream.put("/info/my-gem", format!("---\n1.0.0 |checksum:{}\n", sha256(&good)), &[]);
    upstream.put("/gems/my-gem-1.0.0.gem", good.clone(), &[]);
    let yaml = "remotes:\n  gems: { base_url: \"{upstream}\", package: rubygems }\n";
    let mut proxy = Binary::start(yaml, &upstream.url(), &[]);
    assert_eq!(client().get(proxy.url("/api/gems/info/my-gem")).send().await.unwrap().status(), 200);
    let metrics = proxy.url("/metrics");
    support::eventually("the info file is stored", support::PATIENCE, || async {
        support::fills_in_flight(&metrics).await == 0
    })
    .await;
    proxy.restart();
    upstream.put("/gems/my-gem-1.0.0.gem", b"a planted gem".to_vec(), &[]);
    for attempt in 1..=2 {
        let failed = match client().get(proxy.url("/api/gems/gems/my-gem-1.0.0.gem")).send().await {
            Ok(res) if res.status() == 200 => res.bytes().await.is_err(),
            Ok(res) => res.status() == 502,
            Err(_) => true,
        };
        assert!(failed, "a gem that does not match its checksum is never served whole");
        let metrics = proxy.url("/metrics");
        support::eventually("the fill ended", support::PATIENCE, || async {
            support::fills_in_flight(&metrics).await == 0
        })
        .await;
        assert_eq!(upstream.count("GET", "/gems/my-gem-1.0.0.gem"), attempt, "and never cached");
    }
    upstream.put("/gems/my-gem-1.0.0.gem", good.clone(), &[]);
    let res = client().get(proxy.url("/api/gems/gems/my-gem-1.0.0.gem")).send().await.unwrap();
    assert_eq!(res.bytes().await.unwrap().as_ref(), good.as_slice());
    assert_eq!(upstream.count("GET", "/info/my-gem"), 1, "the info file came from upstream once");
}
