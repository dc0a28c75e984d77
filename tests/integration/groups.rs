//! Group remotes with real clients: npm through two verdaccio registries
//! (an internal one and a public stand-in), pip and uv through pypiserver
//! and a static PEP 691 index, the go command through two module proxy
//! trees; and, at the HTTP level, merged documents merged again only when
//! a member's answer changed.

use crate::support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::support::{
    client, committed, eventually,
    gomod::{go, publish},
    nginx,
    npm::{npm, package, run, Verdaccio},
    pypi::{clean, make_wheel, serve_static_index, static_index, venv, PypiServer},
    Proxy, Upstream, PATIENCE,
};

/// Publishes `name`@`version` to `registry`, with an `origin.txt` saying
/// where it was published.
async fn npm_publish(root: &Path, registry: &Verdaccio, name: &str, version: &str, origin: &str) {
    let sources = root.join("sources").join(origin).join(version);
    let dir = package(&sources, name, version, "");
    std::fs::write(dir.join("origin.txt"), origin).unwrap();
    let publisher = root.join("publisher");
    std::fs::create_dir_all(&publisher).unwrap();
    let cmd = npm(
        &publisher,
        &format!("{}/", registry.url),
        &["publish", "--ignore-scripts", "--provenance=false"],
        &dir,
    );
    let (ok, log) = run(cmd).await;
    assert!(ok, "npm publish {name}@{version} to {origin}:\n{log}");
}

/// `npm install` of `dependencies` (JSON members) through `registry` in a
/// fresh project and cache; answers where each installed package came from.
async fn npm_install(
    root: &Path,
    registry: &str,
    tag: &str,
    dependencies: &str,
) -> Vec<(String, String, String)> {
    let project = root.join(format!("project-{tag}"));
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("package.json"),
        format!(r#"{{"name":"app","version":"0.0.0","private":true,"dependencies":{{{dependencies}}}}}"#),
    )
    .unwrap();
    let mut cmd = npm(&project, registry, &["install"], &project);
    cmd.arg("--cache").arg(root.join(format!("cache-{tag}")));
    let (ok, log) = run(cmd).await;
    assert!(ok, "npm install through {registry}:\n{log}");
    let mut installed = Vec::new();
    for name in ["@acme/utils", "acme-utils", "pubdep"] {
        let dir = project.join("node_modules").join(name);
        if let Ok(manifest) = std::fs::read(dir.join("package.json")) {
            let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
            let origin = std::fs::read_to_string(dir.join("origin.txt")).unwrap_or_default();
            installed.push((name.to_owned(), manifest["version"].as_str().unwrap().to_owned(), origin));
        }
    }
    installed
}

fn installed(name: &str, version: &str, origin: &str) -> (String, String, String) {
    (name.to_owned(), version.to_owned(), origin.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_through_groups_first_keeps_internal_names_merge_lets_order_decide() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let (internal_root, public_root) = (root.join("internal"), root.join("public"));
    std::fs::create_dir_all(&internal_root).unwrap();
    std::fs::create_dir_all(&public_root).unwrap();
    let internal = Verdaccio::start(&internal_root);
    let public = Verdaccio::start(&public_root);
    npm_publish(root, &internal, "@acme/utils", "1.0.0", "internal").await;
    npm_publish(root, &internal, "acme-utils", "1.0.0", "internal").await;
    npm_publish(root, &public, "pubdep", "1.0.0", "public").await;
    // An attacker's copy of the internal scope on the public registry.
    npm_publish(root, &public, "@acme/utils", "9.9.9", "public").await;

    let yaml = format!(
        r#"
remotes:
  internal:
    base_url: "{}"
    package: npm
    cache: {{ mutable_ttl: 1 }}
  public:
    base_url: "{}"
    package: npm
    cache: {{ mutable_ttl: 1 }}
  npm-first:
    type: group
    package: npm
    members: [internal, public]
    cache: {{ mutable_ttl: 1 }}
  npm-merge:
    type: group
    package: npm
    resolve: merge
    members: [internal, {{ remote: public, except_names: ['@acme/.*'] }}]
"#,
        internal.url, public.url
    );
    let proxy = Proxy::start(&yaml, "http://unused.invalid").await;
    let first = proxy.url("/api/npm-first/");
    let merge = proxy.url("/api/npm-merge/");
    let wanted = r#""@acme/utils":"*","acme-utils":"*","pubdep":"^1""#;

    // Both kinds resolve through one URL.
    let got = npm_install(root, &first, "first-1", wanted).await;
    assert_eq!(
        got,
        [
            installed("@acme/utils", "1.0.0", "internal"),
            installed("acme-utils", "1.0.0", "internal"),
            installed("pubdep", "1.0.0", "public")
        ]
    );
    // The same version on both: `merge` takes the earlier member's.
    npm_publish(root, &public, "acme-utils", "1.0.0", "public").await;
    // A higher acme-utils published publicly later is never used by `first`.
    npm_publish(root, &public, "acme-utils", "2.0.0", "public").await;
    committed(&proxy).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let got = npm_install(root, &first, "first-2", wanted).await;
    assert_eq!(got[1], installed("acme-utils", "1.0.0", "internal"), "first: internal owns acme-utils");
    let doc = client().get(format!("{first}acme-utils")).send().await.unwrap().text().await.unwrap();
    assert!(!doc.contains("2.0.0"), "the public versions never show: {doc}");

    // merge: the union, member order deciding a version present in both;
    // except_names keeps @acme/... from ever being asked of the public one.
    // (`latest` stays the internal one's: the earliest member wins a tag.)
    let wanted = r#""@acme/utils":"*","acme-utils":"^2.0.0","pubdep":"^1""#;
    let got = npm_install(root, &merge, "merge-1", wanted).await;
    assert_eq!(
        got,
        [
            installed("@acme/utils", "1.0.0", "internal"),
            installed("acme-utils", "2.0.0", "public"),
            installed("pubdep", "1.0.0", "public")
        ]
    );
    let got = npm_install(root, &merge, "merge-2", r#""acme-utils":"1.0.0""#).await;
    assert_eq!(got, [installed("acme-utils", "1.0.0", "internal")], "the earlier member's 1.0.0");
    let doc: serde_json::Value = serde_json::from_slice(
        &client().get(format!("{merge}@acme%2futils")).send().await.unwrap().bytes().await.unwrap(),
    )
    .unwrap();
    assert!(doc["versions"].get("9.9.9").is_none(), "the public @acme/utils is never merged in");
    let tarball = doc["versions"]["1.0.0"]["dist"]["tarball"].as_str().unwrap();
    assert!(tarball.contains("/api/v1/remote/internal/"), "files are fetched through the member: {tarball}");
}

/// Installs `packages` with pip (or uv) from `index` into a fresh target;
/// answers the installed `{name}/__init__.py` texts' versions and what else
/// was installed.
async fn py_install(
    root: &Path,
    tool: &str,
    index: &str,
    packages: &[&str],
    tag: &str,
) -> (bool, String, PathBuf) {
    let venv = venv();
    let target = root.join(format!("target-{tag}"));
    let mut cmd = if tool == "pip" {
        let mut cmd = Command::new(venv.join("bin/python"));
        cmd.args(["-m", "pip", "install", "--no-cache-dir", "--index-url", index, "--target"]);
        cmd
    } else {
        let mut cmd = Command::new(venv.join("bin/uv"));
        cmd.args(["pip", "install", "--no-cache", "--python"]).arg(venv.join("bin/python"));
        cmd.args(["--index-url", index, "--target"]);
        cmd
    };
    cmd.arg(&target).args(packages);
    clean(&mut cmd, &root.join("home"));
    let (ok, log) = support::pypi::run(cmd).await;
    (ok, log, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_and_uv_through_a_merge_group_and_a_first_group() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    // Member A: pypiserver with alpha 1.0 and shared 1.0 (no requirement).
    let packages = root.join("packages");
    std::fs::create_dir_all(&packages).unwrap();
    make_wheel(&packages, "alpha", "1.0", &[]);
    make_wheel(&packages, "shared", "1.0", &[]);
    let pypiserver = PypiServer::start(&venv(), &packages);
    // Member B: a static PEP 691 index with beta 2.0, and another shared
    // 1.0 (same file name, other bytes: it requires beta).
    let www = root.join("www");
    let files = www.join("packages");
    std::fs::create_dir_all(&files).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/make_wheel.py");
    for (name, version, requires) in [("beta", "2.0", vec![]), ("shared", "1.0", vec!["beta"])] {
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg("--metadata").arg(&files).args([name, version]).args(requires);
        assert!(cmd.status().unwrap().success());
    }
    static_index(&www, &[("beta", "2.0"), ("shared", "1.0")]);
    let (_nginx, port) = serve_static_index(root);
    let yaml = format!(
        "remotes:\n  a:\n    base_url: \"{}\"\n    package: pypi\n  b:\n    base_url: \"http://127.0.0.1:{port}/\"\n    package: pypi\n  \
         merged:\n    type: group\n    package: pypi\n    resolve: merge\n    members: [a, b]\n  \
         firsts:\n    type: group\n    package: pypi\n    members: [a, b]\n",
        pypiserver.url
    );
    let proxy = Proxy::start(&yaml, "http://unused.invalid").await;

    for tool in ["pip", "uv"] {
        // merge: the union; shared comes from A (it requires nothing).
        let index = proxy.url("/api/merged/simple/");
        let (ok, log, target) =
            py_install(root, tool, &index, &["alpha", "shared"], &format!("{tool}-merge")).await;
        assert!(ok, "{tool} through the merge group:\n{log}");
        assert!(target.join("alpha").exists() && target.join("shared").exists(), "{log}");
        assert!(
            !target.join("beta").exists(),
            "{tool}: the earlier member's shared 1.0 won (it requires nothing)"
        );
        let (ok, log, target) =
            py_install(root, tool, &index, &["beta"], &format!("{tool}-merge-beta")).await;
        assert!(ok && target.join("beta").exists(), "{tool}: beta from the second member:\n{log}");
        // first: a name only the second member has is still found.
        let index = proxy.url("/api/firsts/simple/");
        let (ok, log, target) =
            py_install(root, tool, &index, &["beta", "alpha"], &format!("{tool}-first")).await;
        assert!(
            ok && target.join("beta").exists() && target.join("alpha").exists(),
            "{tool} through first:\n{log}"
        );
    }
    // The merged page lists both members' files, each through its member.
    let page =
        client().get(proxy.url("/api/merged/simple/shared/")).send().await.unwrap().text().await.unwrap();
    assert_eq!(page.matches("shared-1.0-py3-none-any.whl</a>").count(), 1, "{page}");
    assert!(page.contains("/api/v1/remote/a/"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_command_through_a_first_group_never_asks_the_second_member_about_an_owned_module() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let (internal, public) = (root.join("internal"), root.join("public"));
    let say = |word: &str| format!("package shared\n\nfunc Word() string {{ return \"{word}\" }}\n");
    publish(
        &internal.join("www"),
        "example.com/shared",
        "v1.0.0",
        "module example.com/shared\n",
        &[("s.go", &say("internal"))],
    );
    // The public proxy has its own example.com/shared (same version, other
    // code; and a higher one), and a module of its own.
    publish(
        &public.join("www"),
        "example.com/shared",
        "v1.0.0",
        "module example.com/shared\n",
        &[("s.go", &say("public"))],
    );
    publish(
        &public.join("www"),
        "example.com/shared",
        "v9.0.0",
        "module example.com/shared\n",
        &[("s.go", &say("public"))],
    );
    publish(
        &public.join("www"),
        "example.com/pub",
        "v1.0.0",
        "module example.com/pub\n",
        &[("p.go", "package pub\n\nfunc N() int { return 7 }\n")],
    );
    let (_a, port_a) = nginx::start(&internal, "");
    let (_b, port_b) = nginx::start(&public, "");
    let yaml = format!(
        "remotes:\n  internal: {{ base_url: \"http://127.0.0.1:{port_a}/\", package: go }}\n  \
         public: {{ base_url: \"http://127.0.0.1:{port_b}/\", package: go }}\n  \
         go-all: {{ type: group, package: go, members: [internal, public] }}\n"
    );
    let proxy = Proxy::start(&yaml, "http://unused.invalid").await;
    let app = root.join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("go.mod"),
        "module example.com/app\n\ngo 1.19\n\nrequire (\n\texample.com/shared v1.0.0\n\texample.com/pub v1.0.0\n)\n",
    )
    .unwrap();
    std::fs::write(
        app.join("main.go"),
        "package main\n\nimport (\n\t\"example.com/pub\"\n\t\"example.com/shared\"\n)\n\nfunc main() { println(shared.Word(), pub.N()) }\n",
    )
    .unwrap();
    let goproxy = proxy.url("/api/go-all");
    let (ok, log) = go(&app, root, &goproxy, "modcache", &["build", "-o", "app", "."]).await;
    assert!(ok, "go build through the group:\n{log}");
    let out = Command::new(app.join("app")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "internal 7");
    let (ok, log) =
        go(&app, root, &goproxy, "modcache", &["list", "-m", "-versions", "example.com/shared"]).await;
    assert!(ok && log.trim() == "example.com/shared v1.0.0", "only the owner's versions:\n{log}");
    // Not even for a version only the public proxy has, asked directly.
    let res = client().get(format!("{goproxy}/example.com/shared/@v/v9.0.0.info")).send().await.unwrap();
    assert_eq!(res.status(), 404, "the owner has no v9.0.0");
    assert_eq!(nginx::logged(&public, "/example.com/shared/"), 0, "the public proxy is never asked about it");
    assert!(nginx::logged(&public, "/example.com/pub/@v/v1.0.0.zip ") == 1);
}

/// A merge group's documents are merged once per change of a member's
/// answer; the members' own caches answer in between. A Cargo group's
/// `config.json` sends downloads to the group.
#[tokio::test]
async fn merged_documents_are_merged_again_only_when_a_member_changed() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    a.put("/example.com/m/@v/list", "v1.0.0\nv1.1.0\n", &[("etag", "\"a1\"")]);
    b.put("/example.com/m/@v/list", "v1.1.0\nv2.0.0\n", &[]);
    a.put(
        "/config.json",
        r#"{"dl":"https://files.example/crates"}"#,
        &[("content-type", "application/json")],
    );
    let yaml = format!(
        "remotes:\n  a: {{ base_url: \"{}\", package: go, cache: {{ mutable_ttl: 1 }} }}\n  \
         b: {{ base_url: \"{}\", package: go, cache: {{ mutable_ttl: 1 }} }}\n  \
         all: {{ type: group, package: go, resolve: merge, members: [a, b] }}\n  \
         ca: {{ base_url: \"{}\", package: cargo }}\n  \
         crates: {{ type: group, package: cargo, members: [ca] }}\n",
        a.url(),
        b.url(),
        a.url()
    );
    let proxy = Proxy::start(&yaml, "http://unused.invalid").await;
    let merges = || async {
        let text = client().get(proxy.url("/metrics")).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("artifactapi_group_merges_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap()
    };
    let list = || async {
        let res = client().get(proxy.url("/api/all/example.com/m/@v/list")).send().await.unwrap();
        let etag = res.headers()["etag"].to_str().unwrap().to_owned();
        (res.text().await.unwrap(), etag)
    };
    let (text, etag) = list().await;
    assert_eq!(text, "v1.0.0\nv1.1.0\nv2.0.0\n");
    for _ in 0..3 {
        assert_eq!(list().await, (text.clone(), etag.clone()));
    }
    assert_eq!(merges().await, 1.0, "one merge for four requests");
    assert_eq!((a.total(), b.total()), (1, 1), "each member asked upstream once");
    // A client that has the merged document gets a 304.
    let res = client()
        .get(proxy.url("/api/all/example.com/m/@v/list"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);

    // A member's answer changes: merged again, once (once the copies expire).
    committed(&proxy).await;
    b.put("/example.com/m/@v/list", "v1.1.0\nv2.0.0\nv2.1.0\n", &[]);
    let changed = "v1.0.0\nv1.1.0\nv2.0.0\nv2.1.0\n";
    eventually("b's new version in the merge", PATIENCE, || async { list().await.0 == changed }).await;
    assert_eq!(merges().await, 2.0);
    // Unchanged after revalidation (a's 304 to the ETag of its list, its only
    // document with a validator): the kept merge.
    let revalidations = || a.requests().iter().filter(|s| s.headers.contains_key("if-none-match")).count();
    let before = revalidations();
    eventually("member a's list revalidated", PATIENCE, || async {
        list().await.0 == changed && revalidations() > before
    })
    .await;
    assert_eq!(merges().await, 2.0, "a revalidated, unchanged member does not cause a merge");

    let config =
        client().get(proxy.url("/api/crates/config.json")).send().await.unwrap().text().await.unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["dl"], format!("{}/dl/{{crate}}/{{version}}/download", proxy.url("/api/crates")));
}
