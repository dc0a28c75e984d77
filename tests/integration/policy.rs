//! Supply-chain policy with real clients: a release-age cooldown for npm
//! (npm install, an exact young version, a tarball, `npm ci` from a lock
//! file), uv and the go command against upstreams whose metadata carries
//! publish times the test sets; `allow` and `mode: report`; a blocklist
//! from an OSV record for npm and PyPI, lifted by a reload; policy on a
//! group's merged answer; the audit log and the metrics.

use crate::support;

use std::{
    path::Path,
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::support::{
    client,
    gomod::{go, publish},
    nginx,
    npm::{npm, package, run},
    pypi::{clean, make_wheel, serve_static_index},
    Binary, Proxy, Upstream,
};
use sha2::{Digest, Sha512};

const DAY: u64 = 86_400;

/// RFC 3339 of `secs` seconds ago.
fn ago(secs: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    artifactapi_layers::policy::time::format_rfc3339(((now - secs) * 1000) as i64)
}

/// `npm pack` of `name`@`version`: the tarball's bytes.
async fn npm_pack(root: &Path, name: &str, version: &str) -> Vec<u8> {
    let dir = package(&root.join("sources").join(version), name, version, "");
    let mut cmd = npm(root, "http://127.0.0.1:9/", &["pack", "--pack-destination"], &dir);
    cmd.arg(&dir);
    let (ok, log) = run(cmd).await;
    assert!(ok, "npm pack:\n{log}");
    std::fs::read(dir.join(format!("{name}-{version}.tgz"))).unwrap()
}

/// Serves `cool` 1.0.0 (published a year ago) and 1.1.0 (a day ago) from
/// `upstream`, with the packument's `time` saying so.
async fn serve_cool(root: &Path, upstream: &Upstream) {
    let mut versions = serde_json::Map::new();
    let mut time = serde_json::Map::new();
    for (version, published) in [("1.0.0", ago(365 * DAY)), ("1.1.0", ago(DAY))] {
        let tarball = npm_pack(root, "cool", version).await;
        let integrity = format!("sha512-{}", base64_encode(&Sha512::digest(&tarball)));
        let path = format!("/cool/-/cool-{version}.tgz");
        upstream.put(&path, tarball, &[]);
        versions.insert(
            version.into(),
            serde_json::json!({"name": "cool", "version": version,
                "dist": {"tarball": format!("{}{path}", upstream.url()), "integrity": integrity}}),
        );
        time.insert(version.into(), published.into());
    }
    time.insert("modified".into(), ago(DAY).into());
    let packument = serde_json::json!({"name": "cool", "dist-tags": {"latest": "1.1.0"}, "versions": versions, "time": time});
    upstream.put("/cool", packument.to_string(), &[("content-type", "application/json")]);
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The installed version of `name` after `npm install {spec}` through
/// `registry` in a fresh project, or npm's output when it failed.
async fn npm_install(root: &Path, registry: &str, tag: &str, spec: &str) -> Result<String, String> {
    let project = root.join(format!("project-{tag}"));
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("package.json"), r#"{"name":"app","version":"0.0.0","private":true}"#)
        .unwrap();
    let mut cmd = npm(&project, registry, &["install", spec], &project);
    cmd.arg("--cache").arg(root.join(format!("cache-{tag}")));
    let (ok, log) = run(cmd).await;
    if !ok {
        return Err(log);
    }
    let manifest =
        std::fs::read(project.join("node_modules/cool/package.json")).map_err(|e| e.to_string())?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    Ok(manifest["version"].as_str().unwrap().to_owned())
}

/// `npm ci` through `registry` in a fresh project with the `package.json` of
/// `project` and the lock file `lock`: whether it passed, and npm's output.
async fn npm_ci(root: &Path, registry: &str, project: &str, lock: &str) -> (bool, String) {
    let ci = root.join(format!("ci-{project}"));
    std::fs::create_dir_all(&ci).unwrap();
    std::fs::write(ci.join("package-lock.json"), lock).unwrap();
    std::fs::copy(root.join(project).join("package.json"), ci.join("package.json")).unwrap();
    let mut cmd = npm(&ci, registry, &["ci"], &ci);
    cmd.arg("--cache").arg(root.join(format!("cache-ci-{project}")));
    run(cmd).await
}

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn decisions(metrics: &str, remote: &str, action: &str) -> f64 {
    let text = client().get(metrics).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("artifactapi_policy_decisions_total{"))
        .filter(|l| {
            l.contains(&format!("remote=\"{remote}\"")) && l.contains(&format!("action=\"{action}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_cooldown_hides_young_versions_refuses_their_tarballs_and_reports() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let upstream = Upstream::start().await;
    serve_cool(root, &upstream).await;
    let audit = root.join("audit.jsonl");
    let yaml = r#"
remotes:
  npm:
    base_url: "{upstream}"
    package: npm
    policy: { min_release_age: 7d }
  allowing:
    base_url: "{upstream}"
    package: npm
    policy: { min_release_age: 7d, allow: ["cool@1.1.0"] }
  reporting:
    base_url: "{upstream}"
    package: npm
    policy: { min_release_age: 7d, mode: report }
  plain:
    base_url: "{upstream}"
    package: npm
  grouped:
    type: group
    package: npm
    resolve: merge
    members: [plain]
    policy: { min_release_age: 7d }
"#;
    let proxy = Proxy::start_with(yaml, &upstream.url(), &[("AUDIT_LOG", audit.to_str().unwrap())]).await;
    let registry = |remote: &str| proxy.url(&format!("/api/v1/remote/{remote}/"));

    // The newest version is a day old: `latest` moves to 1.0.0.
    assert_eq!(npm_install(root, &registry("npm"), "plain-install", "cool").await.unwrap(), "1.0.0");
    let err = npm_install(root, &registry("npm"), "exact", "cool@1.1.0").await.unwrap_err();
    assert!(err.contains("No matching version found for cool@1.1.0"), "{err}");
    // Its tarball, asked for directly: 403 naming the policy.
    let res = client().get(registry("npm") + "cool/-/cool-1.1.0.tgz").send().await.unwrap();
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!((body["policy"].as_str(), body["remote"].as_str()), (Some("min_release_age"), Some("npm")));
    assert!(body["available_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
    // A policy on a group applies to its merged answer.
    let doc: serde_json::Value = serde_json::from_slice(
        &client().get(registry("grouped") + "cool").send().await.unwrap().bytes().await.unwrap(),
    )
    .unwrap();
    assert!(doc["versions"].get("1.1.0").is_none() && doc["dist-tags"]["latest"] == "1.0.0", "{doc}");

    // Allowed: installs.
    assert_eq!(npm_install(root, &registry("allowing"), "allowed", "cool@1.1.0").await.unwrap(), "1.1.0");
    // Report mode: installs the newest, and says what it would have done.
    assert_eq!(npm_install(root, &registry("reporting"), "report", "cool").await.unwrap(), "1.1.0");

    // npm ci with 1.1.0 pinned in the lock file (made through the reporting
    // remote, pointed at the enforcing one): the 403 stops it.
    let lock = std::fs::read_to_string(root.join("project-report/package-lock.json")).unwrap();
    let lock = lock.replace("/remote/reporting/", "/remote/npm/");
    let (ok, log) = npm_ci(root, &registry("npm"), "project-report", &lock).await;
    assert!(!ok && log.contains("403"), "npm ci of a pinned young version:\n{log}");

    let lines = audit_lines(&audit);
    let has = |remote: &str, action: &str| {
        lines.iter().any(|l| l["remote"] == remote && l["action"] == action && l["package"] == "cool")
    };
    for (remote, action) in [
        ("npm", "hidden"),
        ("npm", "refused"),
        ("grouped", "hidden"),
        ("allowing", "allowed"),
        ("reporting", "would-hide"),
    ] {
        assert!(has(remote, action), "no {action} line for {remote}: {lines:#?}");
    }
    let hidden = lines.iter().find(|l| l["remote"] == "npm" && l["action"] == "hidden").unwrap();
    assert_eq!(hidden["versions"], serde_json::json!(["1.1.0"]));
    assert_eq!(hidden["rule"], "min_release_age");
    assert!(decisions(&proxy.url("/metrics"), "npm", "refused").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uv_and_the_go_command_take_the_newest_old_enough_version() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    // A static PEP 691 index: cool 1.0 uploaded a year ago, 2.0 a day ago.
    let files = root.join("www/packages");
    std::fs::create_dir_all(&files).unwrap();
    let page = root.join("www/simple/cool");
    std::fs::create_dir_all(&page).unwrap();
    let mut entries = Vec::new();
    for (version, uploaded) in [("1.0", ago(365 * DAY)), ("2.0", ago(DAY))] {
        make_wheel(&files, "cool", version, &[]);
        let file = format!("cool-{version}-py3-none-any.whl");
        let sha = support::sha256(&std::fs::read(files.join(&file)).unwrap());
        entries.push(serde_json::json!({"filename": file, "url": format!("../../packages/{file}"),
            "hashes": {"sha256": sha}, "upload-time": uploaded}));
    }
    let json = serde_json::json!({"meta": {"api-version": "1.1"}, "name": "cool", "versions": ["1.0", "2.0"], "files": entries});
    std::fs::write(page.join("index.v1_json"), json.to_string()).unwrap();
    std::fs::write(page.join("index.html"), "<html><body></body></html>").unwrap();
    let (_index, port) = serve_static_index(root);
    // A module proxy tree: v1.0.0 of long ago, v1.1.0 of today.
    let goroot = root.join("go");
    let module = "example.com/cool";
    for version in ["v1.0.0", "v1.1.0"] {
        publish(
            &goroot.join("www"),
            module,
            version,
            "module example.com/cool\n",
            &[("c.go", "package cool\n")],
        );
    }
    let info = goroot.join("www/example.com/cool/@v/v1.1.0.info");
    std::fs::write(&info, format!(r#"{{"Version":"v1.1.0","Time":"{}"}}"#, ago(3600))).unwrap();
    std::fs::write(
        goroot.join("www/example.com/cool/@latest"),
        format!(r#"{{"Version":"v1.1.0","Time":"{}"}}"#, ago(3600)),
    )
    .unwrap();
    let (_goproxy, go_port) = nginx::start(&goroot, "");
    let yaml = format!(
        "remotes:\n  py: {{ base_url: \"http://127.0.0.1:{port}/\", package: pypi, policy: {{ min_release_age: 7d }} }}\n  \
         go: {{ base_url: \"http://127.0.0.1:{go_port}/\", package: go, policy: {{ min_release_age: 7d }} }}\n"
    );
    let proxy = Proxy::start(&yaml, "http://unused.invalid").await;

    let venv = support::pypi::venv();
    let target = root.join("target");
    let mut cmd = Command::new(venv.join("bin/uv"));
    cmd.args(["pip", "install", "--no-cache", "--python"]).arg(venv.join("bin/python"));
    cmd.args(["--index-url", &proxy.url("/api/py/simple/"), "--target"]).arg(&target).arg("cool");
    clean(&mut cmd, &root.join("home"));
    let (ok, log) = support::pypi::run(cmd).await;
    assert!(ok, "uv install through the cooldown:\n{log}");
    let installed = std::fs::read_to_string(target.join("cool/__init__.py")).unwrap();
    assert!(installed.contains("'1.0'"), "the day-old 2.0 is not installed: {installed}");
    let res = client().get(proxy.url("/api/py/packages/cool-2.0-py3-none-any.whl")).send().await.unwrap();
    assert_eq!(res.status(), 403);

    let goproxy = proxy.url("/api/go");
    let latest: serde_json::Value = serde_json::from_slice(
        &client().get(format!("{goproxy}/{module}/@latest")).send().await.unwrap().bytes().await.unwrap(),
    )
    .unwrap();
    assert_eq!(latest["Version"], "v1.0.0", "{latest}");
    let list =
        client().get(format!("{goproxy}/{module}/@v/list")).send().await.unwrap().text().await.unwrap();
    assert_eq!(list, "v1.0.0\n");
    // A query string moves nothing out of the policy's sight.
    let list =
        client().get(format!("{goproxy}/{module}/@v/list?x=1")).send().await.unwrap().text().await.unwrap();
    assert_eq!(list, "v1.0.0\n", "a list asked with a query is filtered too");
    for file in ["v1.1.0.zip?x", "v1.1.0.mod?x=1", "v1.1.0.info?"] {
        let res = client().get(format!("{goproxy}/{module}/@v/{file}")).send().await.unwrap();
        assert_eq!(res.status(), 403, "{file}");
    }
    let app = root.join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("go.mod"), "module example.com/app\n\ngo 1.19\n").unwrap();
    let (ok, log) = go(&app, root, &goproxy, "modcache", &["get", &format!("{module}@latest")]).await;
    assert!(ok, "go get @latest:\n{log}");
    let gomod = std::fs::read_to_string(app.join("go.mod")).unwrap();
    assert!(gomod.contains("example.com/cool v1.0.0"), "{gomod}");
}

/// One OSV record denying `cool` below 1.0.1 (npm) and `cool` up to 1.0
/// (PyPI).
fn osv_record() -> serde_json::Value {
    serde_json::json!({
        "id": "GHSA-test-cool",
        "affected": [
            {"package": {"ecosystem": "npm", "name": "cool"},
             "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.0.1"}]}]},
            {"package": {"ecosystem": "PyPI", "name": "Cool"},
             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"last_affected": "1.0"}]}]}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_osv_record_denies_a_range_for_npm_and_pypi_until_a_reload_lifts_it() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let upstream = Upstream::start().await;
    serve_cool(root, &upstream).await;
    let wheels = root.join("wheels");
    std::fs::create_dir_all(&wheels).unwrap();
    make_wheel(&wheels, "cool", "1.0", &[]);
    let wheel = std::fs::read(wheels.join("cool-1.0-py3-none-any.whl")).unwrap();
    upstream.put("/py/packages/cool-1.0-py3-none-any.whl", wheel, &[]);
    upstream.put(
        "/py/simple/cool/",
        "<html><body><a href=\"../../packages/cool-1.0-py3-none-any.whl\">cool-1.0-py3-none-any.whl</a></body></html>",
        &[("content-type", "text/html")],
    );
    let records = root.join("osv");
    std::fs::create_dir_all(&records).unwrap();
    std::fs::write(records.join("GHSA-test-cool.json"), osv_record().to_string()).unwrap();
    let audit = root.join("audit.jsonl");
    let yaml = format!(
        "remotes:\n  npm: {{ base_url: \"{{upstream}}\", package: npm, policy: {{ deny_file: \"{d}\" }} }}\n  \
         py: {{ base_url: \"{{upstream}}/py/\", package: pypi, policy: {{ deny_file: \"{d}\" }} }}\n",
        d = records.display()
    );
    let env = vec![("AUDIT_LOG".to_owned(), audit.display().to_string())];
    let proxy = Binary::start(&yaml, &upstream.url(), &env);
    let get = |path: &str| {
        let url = proxy.url(path);
        async move {
            let res = client().get(url).send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };

    // npm: 1.0.0 is in the denied range, 1.1.0 is not.
    let (status, body) = get("/api/npm/cool/-/cool-1.0.0.tgz").await;
    assert_eq!(status, 403);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((body["policy"].as_str(), body["id"].as_str()), (Some("deny"), Some("GHSA-test-cool")));
    assert_eq!(get("/api/npm/cool/-/cool-1.1.0.tgz").await.0, 200);
    let doc: serde_json::Value = serde_json::from_str(&get("/api/npm/cool").await.1).unwrap();
    assert!(doc["versions"].get("1.0.0").is_none() && doc["versions"].get("1.1.0").is_some(), "{doc}");
    // PyPI (the record says `Cool`; names compare normalized).
    assert_eq!(get("/api/py/packages/cool-1.0-py3-none-any.whl").await.0, 403);
    let page = get("/api/py/simple/cool/").await.1;
    assert!(!page.contains("cool-1.0-py3-none-any.whl"), "{page}");

    let lines = audit_lines(&audit);
    for (remote, action) in [("npm", "refused"), ("npm", "hidden"), ("py", "refused"), ("py", "hidden")] {
        assert!(
            lines
                .iter()
                .any(|l| l["remote"] == remote && l["action"] == action && l["rule"] == "GHSA-test-cool"),
            "no {action} line for {remote}: {lines:#?}"
        );
    }
    assert_eq!(decisions(&proxy.url("/metrics"), "py", "refused").await, 1.0);

    // The record removed and the configuration reloaded: lifted.
    std::fs::remove_file(records.join("GHSA-test-cool.json")).unwrap();
    proxy.signal("HUP");
    assert!(proxy.wait_for_log("configuration reloaded", Duration::from_secs(10)));
    assert_eq!(get("/api/npm/cool/-/cool-1.0.0.tgz").await.0, 200);
    assert_eq!(get("/api/py/packages/cool-1.0-py3-none-any.whl").await.0, 200);
}

/// Issue 38: no route around the policy. A tarball asked by another route
/// than the packument's link (anything after `/-/`) is judged, audited and
/// checked against the packument's integrity like the link itself; a path
/// the format cannot name is refused; a group with a policy links its files
/// to itself; a member's policy refusal is final for a group, and a merge
/// never brings back a version a member's policy hid. All through npm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_tarball_routes_and_groups_cannot_step_around_the_policy() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let upstream = Upstream::start().await;
    serve_cool(root, &upstream).await;
    // The young tarball by another route (as verdaccio serves scoped ones),
    // and the old one's bytes tampered with under a third.
    // (The very bytes the packument promises: on a proxy that does not
    // judge the route, `npm ci` would install them.)
    let young = std::fs::read(root.join("sources/1.1.0/cool/cool-1.1.0.tgz")).unwrap();
    upstream.put("/cool/-/anything/cool-1.1.0.tgz", young, &[]);
    upstream.put("/cool/-/tampered/cool-1.0.0.tgz", b"not the published tarball".to_vec(), &[]);
    let audit = root.join("audit.jsonl");
    let yaml = r#"
remotes:
  npm:
    base_url: "{upstream}"
    package: npm
    policy: { min_release_age: 7d }
  plain:
    base_url: "{upstream}"
    package: npm
  guarded:
    type: group
    package: npm
    resolve: merge
    members: [plain]
    policy: { min_release_age: 7d }
  mixed:
    type: group
    package: npm
    resolve: merge
    members: [npm, plain]
"#;
    let proxy = Proxy::start_with(yaml, &upstream.url(), &[("AUDIT_LOG", audit.to_str().unwrap())]).await;
    let registry = |remote: &str| proxy.url(&format!("/api/v1/remote/{remote}/"));

    // npm ci with the young version pinned at another route: the 403 stops it.
    assert_eq!(npm_install(root, &registry("plain"), "plain", "cool@1.1.0").await.unwrap(), "1.1.0");
    let lock = std::fs::read_to_string(root.join("project-plain/package-lock.json")).unwrap();
    assert!(lock.contains("/remote/plain/cool/-/cool-1.1.0.tgz"), "{lock}");
    let pinned =
        lock.replace("/remote/plain/cool/-/cool-1.1.0.tgz", "/remote/npm/cool/-/anything/cool-1.1.0.tgz");
    let (ok, log) = npm_ci(root, &registry("npm"), "project-plain", &pinned).await;
    assert!(!ok && log.contains("403"), "npm ci of a young version by another route:\n{log}");
    let res = client().get(registry("npm") + "cool/-/anything/cool-1.1.0.tgz").send().await.unwrap();
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(body["policy"], "min_release_age", "{body}");

    // A tarball whose file name names no version of its package: refused.
    let res = client().get(registry("npm") + "cool/-/other-1.1.0.tgz").send().await.unwrap();
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(body["policy"], "unclassified", "{body}");

    // Another route is checked against the packument's integrity too.
    // (The transfer breaks off: before or after the answer's head.)
    let whole = match client().get(registry("plain") + "cool/-/tampered/cool-1.0.0.tgz").send().await {
        Ok(res) => {
            res.status() == 200 && res.bytes().await.is_ok_and(|b| &b[..] == b"not the published tarball")
        }
        Err(_) => false,
    };
    assert!(!whole, "tampered bytes were served whole");
    support::committed(&proxy).await;
    let listed = proxy.listing("plain").await;
    assert!(listed.iter().all(|(path, _)| !path.contains("tampered")), "{listed:?}");

    // A group with a policy links its files to itself: no member URL in
    // its packument, and the lock file npm writes names the group.
    let doc: serde_json::Value = serde_json::from_slice(
        &client().get(registry("guarded") + "cool").send().await.unwrap().bytes().await.unwrap(),
    )
    .unwrap();
    let tarball = doc["versions"]["1.0.0"]["dist"]["tarball"].as_str().unwrap();
    assert!(tarball.starts_with(&registry("guarded")), "{doc}");
    assert!(doc["versions"].get("1.1.0").is_none(), "{doc}");
    assert_eq!(npm_install(root, &registry("guarded"), "guarded", "cool").await.unwrap(), "1.0.0");
    let lock = std::fs::read_to_string(root.join("project-guarded/package-lock.json")).unwrap();
    assert!(
        lock.contains("/remote/guarded/cool/-/cool-1.0.0.tgz") && !lock.contains("/remote/plain/"),
        "{lock}"
    );
    let res = client().get(registry("guarded") + "cool/-/cool-1.1.0.tgz").send().await.unwrap();
    assert_eq!(res.status(), 403, "the group's link for the hidden version is refused");

    // A member's policy in a merge group: its refusal is final, and the
    // version it hides stays hidden though the next member has it.
    let doc: serde_json::Value = serde_json::from_slice(
        &client().get(registry("mixed") + "cool").send().await.unwrap().bytes().await.unwrap(),
    )
    .unwrap();
    assert!(doc["versions"].get("1.1.0").is_none() && doc["dist-tags"]["latest"] == "1.0.0", "{doc}");
    assert!(doc["time"].get("1.1.0").is_none(), "{doc}");
    assert_eq!(npm_install(root, &registry("mixed"), "mixed", "cool").await.unwrap(), "1.0.0");
    let err = npm_install(root, &registry("mixed"), "mixed-exact", "cool@1.1.0").await.unwrap_err();
    assert!(err.contains("No matching version found for cool@1.1.0"), "{err}");
    let res = client().get(registry("mixed") + "cool/-/cool-1.1.0.tgz").send().await.unwrap();
    assert_eq!(res.status(), 403, "the member's refusal is final");
    // The member without a policy is still a remote of its own.
    let res = client().get(registry("plain") + "cool/-/cool-1.1.0.tgz").send().await.unwrap();
    assert_eq!(res.status(), 200);

    let lines = audit_lines(&audit);
    let unclassified =
        lines.iter().any(|l| l["remote"] == "npm" && l["rule"] == "unclassified" && l["action"] == "refused");
    assert!(unclassified, "{lines:#?}");
    let refused_route = lines.iter().any(|l| {
        l["remote"] == "npm" && l["action"] == "refused" && l["versions"] == serde_json::json!(["1.1.0"])
    });
    assert!(refused_route, "{lines:#?}");
}

/// Issue 38: pip cannot be handed what the policy cannot judge. A young
/// sdist under a suffix pip accepts (`.tgz`) leaves the page under a
/// cooldown, a file whose version cannot be read leaves it too, and a file
/// kept beside its page in a static PEP 503 tree (`simple/{name}/`) is
/// judged as a file: `deny: [bad]` refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_gets_no_young_sdist_of_any_suffix_and_no_file_beside_a_denied_page() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let files = root.join("www/packages");
    std::fs::create_dir_all(&files).unwrap();
    make_wheel(&files, "cool", "1.0", &[]);
    let wheel = "cool-1.0-py3-none-any.whl";
    let sha = support::sha256(&std::fs::read(files.join(wheel)).unwrap());
    // Young files pip would take (an sdist it cannot build here: taking it
    // fails the install) and one of no kind the format knows.
    std::fs::write(files.join("cool-2.0.tgz"), b"a young sdist").unwrap();
    std::fs::write(files.join("cool-3.0.weird"), b"what is this").unwrap();
    let mut entries = vec![serde_json::json!({"filename": wheel, "url": format!("../../packages/{wheel}"),
        "hashes": {"sha256": sha}, "upload-time": ago(365 * DAY)})];
    for file in ["cool-2.0.tgz", "cool-3.0.weird"] {
        let sha = support::sha256(&std::fs::read(files.join(file)).unwrap());
        entries.push(serde_json::json!({"filename": file, "url": format!("../../packages/{file}"),
            "hashes": {"sha256": sha}, "upload-time": ago(3600)}));
    }
    let page = root.join("www/simple/cool");
    std::fs::create_dir_all(&page).unwrap();
    let json = serde_json::json!({"meta": {"api-version": "1.1"}, "name": "cool", "versions": ["1.0", "2.0"], "files": entries});
    std::fs::write(page.join("index.v1_json"), json.to_string()).unwrap();
    std::fs::write(page.join("index.html"), "<html><body></body></html>").unwrap();
    // A static tree with the file beside its page.
    let bad = root.join("www/simple/bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("bad-1.0.tar.gz"), b"a denied sdist").unwrap();
    std::fs::write(
        bad.join("index.html"),
        "<html><body><a href=\"bad-1.0.tar.gz\">bad-1.0.tar.gz</a></body></html>",
    )
    .unwrap();
    let (_index, port) = serve_static_index(root);
    let yaml = format!(
        "remotes:\n  py: {{ base_url: \"http://127.0.0.1:{port}/\", package: pypi, policy: {{ min_release_age: 7d }} }}\n  \
         pydeny: {{ base_url: \"http://127.0.0.1:{port}/\", package: pypi, policy: {{ deny: [bad] }} }}\n"
    );
    let proxy = Proxy::start(&yaml, "http://unused.invalid").await;

    let venv = support::pypi::venv();
    let pip = |args: &[&str], target: &Path| {
        let mut cmd = Command::new(venv.join("bin/python"));
        cmd.args(["-m", "pip", "install", "--no-cache-dir", "--no-build-isolation", "--target"])
            .arg(target)
            .args(args);
        clean(&mut cmd, &root.join("home"));
        cmd
    };
    let target = root.join("target");
    let (ok, log) =
        support::pypi::run(pip(&["--index-url", &proxy.url("/api/py/simple/"), "cool"], &target)).await;
    assert!(ok, "pip install through the cooldown:\n{log}");
    let installed = std::fs::read_to_string(target.join("cool/__init__.py")).unwrap();
    assert!(installed.contains("'1.0'"), "the hour-old 2.0 sdist is not taken: {installed}");
    let res = client()
        .get(proxy.url("/api/py/simple/cool/"))
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .await
        .unwrap();
    let text = res.text().await.unwrap();
    assert!(
        !text.contains("cool-2.0.tgz") && !text.contains("cool-3.0.weird") && text.contains(wheel),
        "{text}"
    );
    assert_eq!(client().get(proxy.url("/api/py/packages/cool-2.0.tgz")).send().await.unwrap().status(), 403);
    let res = client().get(proxy.url("/api/py/packages/cool-3.0.weird")).send().await.unwrap();
    assert_eq!(res.status(), 403, "a file of no kind the format knows is refused under a policy");

    // The file beside a denied project's page: pip asked for it by URL, and
    // a plain GET, are refused.
    let url = proxy.url("/api/pydeny/simple/bad/bad-1.0.tar.gz");
    let (ok, log) = support::pypi::run(pip(&[&url], &root.join("target-bad"))).await;
    assert!(!ok && log.contains("403"), "pip install of a denied file by URL:\n{log}");
    let res = client().get(&url).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(body["policy"], "deny", "{body}");
}
