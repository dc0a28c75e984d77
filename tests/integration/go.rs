//! Go modules through the proxy, proven with the go command (go 1.19 from
//! Debian's `golang-go`): a static `GOPROXY` tree the test writes, served by
//! nginx, with a module depending on another, one with upper case in its
//! path and one `+incompatible` version. The build works cold, then warm
//! with a fresh module cache (no version file asked of upstream again), then
//! with nginx stopped; a version published after `@v/list` was cached shows
//! once `mutable_ttl` has passed; our `h1:` hashes match the go command's.
//! The client runs with `GOSUMDB=off`: the public checksum database is out
//! of reach here, and a stand-in one cannot be signed for the client; the
//! proxy checks each module against the stand-in's records before storing
//! it, and a tampered module is refused (at the HTTP level).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::support::{
    client, committed,
    gomod::{encode, go, publish, zip},
    nginx, Proxy, Upstream,
};
use artifactapi_layers::format::go::h1;

/// Upstream requests for version files (`.info`, `.mod`, `.zip`).
fn version_files(root: &Path) -> usize {
    [".info ", ".mod ", ".zip "].iter().map(|ext| nginx::logged(root, ext)).sum()
}

/// The application: uses a module with upper case in its path (which uses
/// another module) and a `+incompatible` one.
fn app(work: &Path) -> PathBuf {
    let dir = work.join("app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("go.mod"),
        "module example.com/app\n\ngo 1.19\n\nrequire (\n\texample.com/Upper/greet v1.2.0\n\t\
         example.com/inc v2.0.0+incompatible\n)\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("main.go"),
        "package main\n\nimport (\n\t\"example.com/Upper/greet\"\n\t\"example.com/inc\"\n)\n\n\
         func main() { println(greet.Hello(), inc.N()) }\n",
    )
    .unwrap();
    dir
}

/// The module versions the application builds with.
const MODULES: [(&str, &str); 3] = [
    ("example.com/lib", "v1.0.0"),
    ("example.com/Upper/greet", "v1.2.0"),
    ("example.com/inc", "v2.0.0+incompatible"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_command_builds_through_the_proxy_cold_warm_and_with_upstream_down() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let www = root.join("www");
    let lib_mod = "module example.com/lib\n\ngo 1.19\n";
    publish(
        &www,
        "example.com/lib",
        "v1.0.0",
        lib_mod,
        &[("lib.go", "package lib\n\nfunc Word() string { return \"hello\" }\n")],
    );
    publish(
        &www,
        "example.com/Upper/greet",
        "v1.2.0",
        "module example.com/Upper/greet\n\ngo 1.19\n\nrequire example.com/lib v1.0.0\n",
        &[(
            "greet.go",
            "package greet\n\nimport \"example.com/lib\"\n\nfunc Hello() string { return lib.Word() }\n",
        )],
    );
    publish(
        &www,
        "example.com/inc",
        "v2.0.0+incompatible",
        "module example.com/inc\n",
        &[("inc.go", "package inc\n\nfunc N() int { return 2 }\n")],
    );
    let (nginx, port) = nginx::start(root, "");
    // The proxy checks every module against a stand-in checksum database
    // (the client cannot: it has no key for it, hence GOSUMDB=off).
    let db = Upstream::start().await;
    for (module, version) in MODULES {
        let files = www.join(encode(module)).join("@v");
        let zip_sum = h1::zip(&std::fs::read(files.join(format!("{version}.zip"))).unwrap()).unwrap();
        let mod_sum = h1::go_mod(&std::fs::read(files.join(format!("{version}.mod"))).unwrap());
        let record = format!("1\n{module} {version} {zip_sum}\n{module} {version}/go.mod {mod_sum}\n\n");
        db.put(&format!("/lookup/{}@{version}", encode(module)), record, &[]);
    }
    let config = format!(
        "remotes:\n  go:\n    base_url: \"{{upstream}}\"\n    package: go\n    go_sumdb_url: \"{}\"\n    \
         cache: {{ mutable_ttl: 2 }}\n",
        db.url()
    );
    let proxy = Proxy::start(&config, &format!("http://127.0.0.1:{port}/")).await;
    let goproxy = proxy.url("/api/go");
    let dir = app(root);

    // Cold: every version file comes from upstream once.
    let (ok, log) = go(&dir, root, &goproxy, "modcache-cold", &["build", "-o", "app", "."]).await;
    assert!(ok, "go build through the proxy failed:\n{log}");
    let out = Command::new(dir.join("app")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "hello 2");
    let cold = version_files(root);
    assert!(cold >= 6, "the three modules' .mod and .zip came from upstream ({cold} requests)");
    // The case-encoded path goes upstream as the go command sent it (`!`
    // escaped as `%21`).
    assert_eq!(
        nginx::logged(root, "/example.com/%21upper/greet/@v/v1.2.0.zip "),
        1,
        "{}",
        std::fs::read_to_string(root.join("access.log")).unwrap_or_default()
    );

    // Our h1: hashes agree with the go command's for every module.
    for (module, version) in MODULES {
        let at = format!("{module}@{version}");
        let (ok, json) = go(&dir, root, &goproxy, "modcache-cold", &["mod", "download", "-json", &at]).await;
        assert!(ok, "go mod download -json {at}:\n{json}");
        let files = www.join(encode(module)).join("@v");
        let zip_sum = h1::zip(&std::fs::read(files.join(format!("{version}.zip"))).unwrap()).unwrap();
        let mod_sum = h1::go_mod(&std::fs::read(files.join(format!("{version}.mod"))).unwrap());
        assert!(
            json.contains(&format!("\"Sum\": \"{zip_sum}\"")),
            "{at}: ours {zip_sum}, the go command's:\n{json}"
        );
        assert!(json.contains(&format!("\"GoModSum\": \"{mod_sum}\"")), "{at}: ours {mod_sum}:\n{json}");
    }

    assert_eq!(db.total(), 3, "each version's record read once, for its .mod and .zip");

    // Warm, with a fresh module cache: nothing asked of upstream again.
    let (ok, log) = go(&dir, root, &goproxy, "modcache-warm", &["build", "-o", "app", "."]).await;
    assert!(ok, "warm go build failed:\n{log}");
    assert_eq!(version_files(root), cold, "a warm build asks upstream for no version file");

    // A version published after `@v/list` was cached shows once it expires.
    let list_url = format!("{goproxy}/example.com/lib/@v/list");
    assert_eq!(client().get(&list_url).send().await.unwrap().text().await.unwrap(), "v1.0.0\n");
    committed(&proxy).await;
    publish(
        &www,
        "example.com/lib",
        "v1.1.0",
        lib_mod,
        &[("lib.go", "package lib\n\nfunc Word() string { return \"hi\" }\n")],
    );
    assert_eq!(client().get(&list_url).send().await.unwrap().text().await.unwrap(), "v1.0.0\n", "cached");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (ok, log) =
        go(&dir, root, &goproxy, "modcache-warm", &["list", "-m", "-versions", "example.com/lib"]).await;
    assert!(ok && log.trim() == "example.com/lib v1.0.0 v1.1.0", "go list after mutable_ttl:\n{log}");

    // An unknown version is upstream's 404, passed on (the go command moves
    // on to the next proxy in GOPROXY only on a 404 or 410).
    let res = client().get(format!("{goproxy}/example.com/lib/@v/v9.9.9.info")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let (ok, log) =
        go(&dir, root, &goproxy, "modcache-warm", &["mod", "download", "example.com/lib@v9.9.9"]).await;
    assert!(!ok && log.contains("v9.9.9"), "an unknown version fails plainly:\n{log}");

    // Upstream down: a fresh module cache still builds from the proxy.
    drop(nginx);
    let (ok, log) = go(&dir, root, &goproxy, "modcache-down", &["build", "-o", "app", "."]).await;
    assert!(ok, "go build with upstream down failed:\n{log}");
}

/// The checksum database at the HTTP level, against a stand-in database the
/// test serves: passed through only by a remote that names it, without the
/// remote's credentials; lookups and tiles cached, `latest` refreshed.
#[tokio::test]
async fn a_checksum_database_is_passed_through_only_when_configured() {
    let upstream = Upstream::start().await;
    let db = Upstream::start().await;
    let record = "7\nexample.com/lib v1.0.0 h1:AAAA=\nexample.com/lib v1.0.0/go.mod h1:BBBB=\n\n\
                  go.sum database tree\n8\nROOT=\n\n\u{2014} 127.0.0.1 SIG=\n";
    db.put("/lookup/example.com/lib@v1.0.0", record, &[]);
    db.put("/tile/8/0/000", "a tile", &[]);
    db.put("/latest", "tree 8", &[]);
    // An upstream proxy that would say yes: never asked.
    upstream.put("/sumdb/sum.golang.org/supported", "", &[]);
    let yaml = format!(
        "remotes:\n  plain:\n    base_url: \"{{upstream}}\"\n    package: go\n  go:\n    base_url: \"{{upstream}}\"\n    \
         package: go\n    go_sumdb_url: \"{}\"\n    username: robot\n    password: secret\n    cache: {{ mutable_ttl: 1 }}\n",
        db.url()
    );
    let proxy = Proxy::start(&yaml, &upstream.url()).await;
    let get = |path: &str| {
        let url = proxy.url(path);
        async move {
            let res = client().get(url).send().await.unwrap();
            let status = res.status().as_u16();
            let cache = res.headers().get("x-cache-status").map(|v| v.to_str().unwrap().to_owned());
            (status, cache, res.text().await.unwrap())
        }
    };

    // Without go_sumdb_url: not supported, so the go command asks its database itself.
    assert_eq!(get("/api/plain/sumdb/sum.golang.org/supported").await.0, 404);
    assert_eq!(get("/api/plain/sumdb/sum.golang.org/lookup/example.com/lib@v1.0.0").await.0, 404);
    assert_eq!(upstream.total(), 0);

    // With it: supported, answered here.
    assert_eq!(get("/api/go/sumdb/127.0.0.1/supported").await.0, 200);
    assert_eq!(db.total(), 0);
    // Lookups and tiles come from the database once, then from the cache.
    let lookup = "/api/go/sumdb/127.0.0.1/lookup/example.com/lib@v1.0.0";
    assert_eq!(get(lookup).await, (200, Some("MISS".into()), record.into()));
    assert_eq!(get(lookup).await, (200, Some("HIT".into()), record.into()));
    assert_eq!(db.count("GET", "/lookup/example.com/lib@v1.0.0"), 1);
    assert_eq!(get("/api/go/sumdb/127.0.0.1/tile/8/0/000").await.2, "a tile");
    assert_eq!(get("/api/go/sumdb/127.0.0.1/tile/8/0/000").await.1.as_deref(), Some("HIT"));
    // The signed tree head moves.
    assert_eq!(get("/api/go/sumdb/127.0.0.1/latest").await.2, "tree 8");
    committed(&proxy).await;
    db.put("/latest", "tree 9", &[]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get("/api/go/sumdb/127.0.0.1/latest").await.2, "tree 9");
    // Another database's name is not this remote's to answer.
    assert_eq!(get("/api/go/sumdb/sum.golang.org/lookup/example.com/lib@v1.0.0").await.0, 404);
    assert_eq!(db.count("GET", "/latest"), 2);
    assert_eq!(db.total(), 4, "{:?}", db.requests().iter().map(|s| s.path.clone()).collect::<Vec<_>>());
    assert!(
        db.requests().iter().all(|s| s.headers.get("authorization").is_none()),
        "no credentials to the database"
    );
    assert_eq!(upstream.total(), 0, "the proxy upstream is never asked for the database");
}

/// A zip of `module@version` with `files` and its `go.mod`, with the `h1:`
/// lines the checksum database would record for it.
fn module(module: &str, version: &str, go_mod: &str, files: &[(&str, String)]) -> (Vec<u8>, String) {
    let mut entries: Vec<(String, &str)> =
        files.iter().map(|(name, body)| (format!("{module}@{version}/{name}"), body.as_str())).collect();
    entries.push((format!("{module}@{version}/go.mod"), go_mod));
    let zip = zip(&entries);
    let lines = format!(
        "{module} {version} {}\n{module} {version}/go.mod {}\n",
        h1::zip(&zip).unwrap(),
        h1::go_mod(go_mod.as_bytes())
    );
    (zip, lines)
}

/// With a checksum database, a `.zip` and a `.mod` are stored only when
/// their `h1:` is the one the database's lookup record gives (the record
/// read through the cache, once); a tampered one fails its transfer and is
/// not cached; a version the database does not know is served unchecked; a
/// database that cannot be read refuses the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_files_are_checked_against_the_checksum_database_before_they_are_stored() {
    let upstream = Upstream::start().await;
    let db = Upstream::start().await;
    let record = |seq: u32, lines: &str| {
        format!("{seq}\n{lines}\ngo.sum database tree\n9\nROOT=\n\n\u{2014} db SIG=\n")
    };
    // A good module, with a file of several megabytes (many inflate and
    // read buffers) beside its source.
    let big: String = (0..200_000).map(|i| format!("{i:07}\n")).collect();
    let good_mod = "module example.com/Good\n\ngo 1.19\n";
    let (good_zip, lines) = module(
        "example.com/Good",
        "v1.0.0",
        good_mod,
        &[("a.go", "package good\n".into()), ("big.txt", big)],
    );
    upstream.put("/example.com/!good/@v/v1.0.0.zip", good_zip.clone(), &[]);
    upstream.put("/example.com/!good/@v/v1.0.0.mod", good_mod, &[]);
    db.put("/lookup/example.com/!good@v1.0.0", record(1, &lines), &[]);
    // A poisoned upstream: other bytes than the database vouches for.
    let evil_mod = "module example.com/evil\n\ngo 1.19\n";
    let (_, lines) = module("example.com/evil", "v1.0.0", evil_mod, &[("a.go", "package evil\n".into())]);
    db.put("/lookup/example.com/evil@v1.0.0", record(2, &lines), &[]);
    let (planted, _) =
        module("example.com/evil", "v1.0.0", evil_mod, &[("a.go", "package evil // planted\n".into())]);
    upstream.put("/example.com/evil/@v/v1.0.0.zip", planted, &[]);
    upstream.put(
        "/example.com/evil/@v/v1.0.0.mod",
        "module example.com/evil\n\nrequire example.com/x v1\n",
        &[],
    );
    // A private module: the database has no record of it.
    upstream.put("/corp.example/private/@v/v0.1.0.mod", "module corp.example/private\n", &[]);
    // A record whose lines are for another version.
    let (_, other) = module("example.com/odd", "v9.0.0", "module example.com/odd\n", &[]);
    db.put("/lookup/example.com/odd@v1.0.0", record(3, &other), &[]);
    upstream.put("/example.com/odd/@v/v1.0.0.mod", "module example.com/odd\n", &[]);
    // A database answering with an error.
    db.fail("/lookup/example.com/down@v1.0.0", 503);
    upstream.put("/example.com/down/@v/v1.0.0.mod", "module example.com/down\n", &[]);

    let yaml = format!(
        "remotes:\n  go:\n    base_url: \"{{upstream}}\"\n    package: go\n    go_sumdb_url: \"{}\"\n",
        db.url()
    );
    let proxy = Proxy::start(&yaml, &upstream.url()).await;
    let get = |path: &str| {
        let url = proxy.url(&format!("/api/go/{path}"));
        async move {
            // A check that fails before the head is flushed closes the
            // connection with no answer: status 0 here.
            let res = match client().get(url).send().await {
                Ok(res) => res,
                Err(e) => return (0, None, Err(e.to_string())),
            };
            let status = res.status().as_u16();
            let cache = res.headers().get("x-cache-status").map(|v| v.to_str().unwrap().to_owned());
            (status, cache, res.bytes().await.map_err(|e| e.to_string()))
        }
    };

    // Vouched for: stored, and the record read once for both files.
    for round in ["MISS", "HIT"] {
        let (status, cache, body) = get("example.com/!good/@v/v1.0.0.zip").await;
        assert_eq!((status, cache.as_deref()), (200, Some(round)));
        assert!(body.unwrap() == good_zip, "the zip's bytes, {round}");
        let (status, cache, body) = get("example.com/!good/@v/v1.0.0.mod").await;
        assert_eq!(
            (status, cache.as_deref(), body.unwrap().as_ref()),
            (200, Some(round), good_mod.as_bytes())
        );
        committed(&proxy).await;
    }
    assert_eq!(db.count("GET", "/lookup/example.com/!good@v1.0.0"), 1);
    assert_eq!(upstream.count("GET", "/example.com/!good/@v/v1.0.0.zip"), 1);

    // Tampered: the transfer fails before its last byte, and nothing is
    // cached, so the next try asks upstream again (and fails again).
    for file in ["example.com/evil/@v/v1.0.0.zip", "example.com/evil/@v/v1.0.0.mod"] {
        for _ in 0..2 {
            let (status, _, body) = get(file).await;
            assert!(status != 200 || body.is_err(), "{file} was served whole: {status}");
            committed(&proxy).await;
        }
        assert_eq!(upstream.count("GET", &format!("/{file}")), 2, "{file} was not cached");
    }
    assert_eq!(db.count("GET", "/lookup/example.com/evil@v1.0.0"), 1, "the record itself is cached");

    // Unknown to the database: served unchecked, and cached.
    assert_eq!(get("corp.example/private/@v/v0.1.0.mod").await.0, 200);
    committed(&proxy).await;
    assert_eq!(get("corp.example/private/@v/v0.1.0.mod").await.1.as_deref(), Some("HIT"));

    // A record that does not vouch for the file, or a database that fails:
    // refused before upstream is asked for the file.
    for (file, why) in
        [("example.com/odd/@v/v1.0.0.mod", "has no line"), ("example.com/down/@v/v1.0.0.mod", "503")]
    {
        let (status, _, body) = get(file).await;
        assert_eq!(status, 502, "{file}");
        let body = String::from_utf8_lossy(&body.unwrap()).into_owned();
        assert!(body.contains(why), "{file}: {body}");
        assert_eq!(upstream.count("GET", &format!("/{file}")), 0, "{file}");
    }
    assert_eq!(proxy.cached_count("go").await, 6, "{:?}", proxy.listing("go").await);
}
