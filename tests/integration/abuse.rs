//! Bad input and write protection: every malformed request, document or
//! configuration gets a clear error and changes nothing; the admin token
//! holds whatever the encoding, method or route alias.

use crate::support::{client, Proxy, Upstream};

const TOKEN: &str = "t0p-s3cret";

const CONFIG: &str = r#"remotes:
  files:
    base_url: "{upstream}"
  internal:
    type: local
  hub:
    base_url: "{upstream}"
    package: docker
  npm:
    base_url: "{upstream}"
    package: npm
  pypi:
    base_url: "{upstream}"
    package: pypi
  picky:
    base_url: "{upstream}"
    immutable_patterns: ['(a*)*\1(?=b)', '\.tgz$']
"#;

async fn setup(env: &[(&str, &str)]) -> (Upstream, Proxy) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start_with(CONFIG, &upstream.url(), env).await;
    (upstream, proxy)
}

fn request(method: &str, path: &str, headers: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_holds_under_every_encoding_method_and_alias() {
    let (upstream, proxy) = setup(&[("ADMIN_TOKEN", TOKEN)]).await;
    upstream.put("/cached.tgz", "cached", &[]);
    upstream.put("/warm.tgz", "warm", &[]);
    // The state every refused request must leave as it is: a local artifact
    // and a cached remote one.
    let res = client()
        .put(proxy.url("/api/internal/keep.bin"))
        .bearer_auth(TOKEN)
        .body("kept")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(client().get(proxy.url("/api/files/cached.tgz")).send().await.unwrap().status(), 200);

    let warm = r#"{"remote":"files","paths":["warm.tgz"]}"#;
    let writes: Vec<(&str, String, &str)> = vec![
        ("PUT", "/api/internal/new.bin".into(), "x"),
        ("PUT", "/api/v1/remote/internal/new.bin".into(), "x"),
        ("PUT", "/api/internal/keep.bin".into(), "overwritten"),
        ("PUT", "/api/internal/%6eew.bin".into(), "x"),
        ("PUT", "/api/internal/./new.bin".into(), "x"),
        ("PUT", "/api/internal/sub/../new.bin".into(), "x"),
        ("PUT", "/api/internal//new.bin".into(), "x"),
        ("PUT", "/api//internal/new.bin".into(), "x"),
        ("PUT", "/api/./internal/new.bin".into(), "x"),
        ("PUT", "/api/%69nternal/new.bin".into(), "x"),
        ("PUT", "/API/internal/new.bin".into(), "x"),
        ("PUT", "/api/internal/new.bin?token=t0p-s3cret".into(), "x"),
        ("POST", "/api/internal/new.bin".into(), "x"),
        ("PATCH", "/api/internal/keep.bin".into(), "x"),
        ("DELETE", "/api/internal/keep.bin".into(), ""),
        ("DELETE", "/api/v1/remote/internal/keep.bin".into(), ""),
        ("DELETE", "/api/internal/%6beep.bin".into(), ""),
        ("DELETE", "/api/internal/./keep.bin".into(), ""),
        ("DELETE", "/api/internal/keep.bin/".into(), ""),
        ("PUT", "/cache/flush".into(), ""),
        ("PUT", "/cache/flush?all=true".into(), ""),
        ("PUT", "/cache/%66lush".into(), ""),
        ("PUT", "/cache//flush".into(), ""),
        ("PUT", "/cache/flush/".into(), ""),
        ("POST", "/cache/flush".into(), ""),
        ("DELETE", "/cache/flush".into(), ""),
        ("DELETE", "/cache/files/cached.tgz".into(), ""),
        ("DELETE", "/cache/files/%63ached.tgz".into(), ""),
        ("DELETE", "/cache/files//cached.tgz".into(), ""),
        ("DELETE", "/cache/files/./cached.tgz".into(), ""),
        ("POST", "/cache-artifact".into(), warm),
        ("POST", "/cache-artifact/".into(), warm),
        ("POST", "/cache-artifact?token=t0p-s3cret".into(), warm),
        ("PUT", "/cache-artifact".into(), warm),
    ];
    let credentials = [
        String::new(),
        "Authorization: Bearer\r\n".into(),
        "Authorization: Bearer \r\n".into(),
        "Authorization: Bearer wrong\r\n".into(),
        format!("Authorization: Bearer {TOKEN}x\r\n"),
        format!("Authorization: Bearer {}\r\n", &TOKEN[..TOKEN.len() - 1]),
        format!("Authorization: Token {TOKEN}\r\n"),
        format!("Authorization: {TOKEN}\r\n"),
        "Authorization: Basic YWRtaW46dDBwLXMzY3JldA==\r\n".into(),
        format!("X-Admin-Token: {TOKEN}\r\nX-HTTP-Method-Override: GET\r\n"),
        format!("Cookie: token={TOKEN}\r\n"),
    ];
    for (method, path, body) in &writes {
        for auth in &credentials {
            let (status, answer) = proxy.raw(&request(method, path, auth, body)).await;
            assert!(
                (400..500).contains(&status),
                "{method} {path} with {auth:?} must be refused, got {status}: {answer}"
            );
            if auth.is_empty() && (status == 401 || status == 403) {
                assert!(answer.contains("\"error\""), "{method} {path}: {answer}");
            }
        }
    }
    // HEAD and OPTIONS are no way around it either.
    for method in ["HEAD", "OPTIONS", "TRACE"] {
        for path in ["/cache/flush", "/cache-artifact", "/cache/files/cached.tgz", "/api/internal/new.bin"] {
            let (status, _) = proxy.raw(&request(method, path, "", "")).await;
            assert!(
                status == 404 || status == 405 || (method == "HEAD" && path.starts_with("/api/")),
                "{method} {path}: {status}"
            );
        }
    }

    // Nothing changed.
    assert_eq!(proxy.cached_count("internal").await, 1, "no upload landed");
    let kept = client().get(proxy.url("/api/internal/keep.bin")).send().await.unwrap();
    assert_eq!(kept.text().await.unwrap(), "kept");
    let cached = client().get(proxy.url("/api/files/cached.tgz")).send().await.unwrap();
    assert_eq!(cached.headers()["x-cache-status"], "HIT", "not flushed, not purged");
    assert_eq!(upstream.count("GET", "/cached.tgz"), 1);
    assert_eq!(upstream.count("GET", "/warm.tgz"), 0, "no refused warm-up fetched anything");

    // The token itself works on the same routes (the refusals were for the
    // right reason).
    let res =
        client().put(proxy.url("/api/internal/new.bin")).bearer_auth(TOKEN).body("new").send().await.unwrap();
    assert!(res.status().is_success());
    let res = client().delete(proxy.url("/cache/files/cached.tgz")).bearer_auth(TOKEN).send().await.unwrap();
    assert!(res.status().is_success());
    assert_eq!(proxy.cached_count("files").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_request_lines_are_refused_and_the_proxy_keeps_serving() {
    let (upstream, proxy) = setup(&[]).await;
    upstream.put("/ok.tgz", "ok", &[]);
    let huge = format!("X-Junk: {}\r\n", "a".repeat(1024 * 1024));
    let (status, _) = proxy.raw(&request("GET", "/api/files/ok.tgz", &huge, "")).await;
    assert!(status == 431 || status == 0, "a 1 MiB header: {status}");
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, _) = proxy.raw(&request("GET", "/api/files/ok.tgz", &many, "")).await;
    assert!(status == 431 || status == 0, "500 headers: {status}");
    let (status, _) = proxy
        .raw(&format!(
            "GET /api/files/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "a/".repeat(40_000)
        ))
        .await;
    assert!(status == 414 || status == 400 || status == 0, "an 80 KiB request line: {status}");
    let (status, _) = proxy.raw("GARBAGE\r\n\r\n").await;
    assert!(status == 400 || status == 0, "not HTTP: {status}");
    let (status, _) = proxy
        .raw("GET /api/files/ok.tgz HTTP/1.1\r\nHost: x\r\nBad Header\r\nConnection: close\r\n\r\n")
        .await;
    assert!(status == 400 || status == 0, "a header without a colon: {status}");
    let (status, _) =
        proxy.raw("GET /api/files/ok.tgz HTTP/1.1\r\nHost: x\r\nX: a\0b\r\nConnection: close\r\n\r\n").await;
    assert!(status == 400 || status == 0, "NUL in a header: {status}");
    assert_eq!(upstream.total(), 0, "none of it went upstream");
    let res = client().get(proxy.url("/api/files/ok.tgz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_digests_and_references_on_v2_are_registry_errors_before_upstream() {
    let (upstream, proxy) = setup(&[]).await;
    let hex = "a".repeat(64);
    let cases = [
        (format!("/v2/hub/library/app/blobs/sha256:{}", &hex[..63]), 400, "DIGEST_INVALID"),
        (format!("/v2/hub/library/app/blobs/sha256:{}", hex.to_uppercase()), 400, "DIGEST_INVALID"),
        (format!("/v2/hub/library/app/blobs/md5:{}", &hex[..32]), 400, "DIGEST_INVALID"),
        (format!("/v2/hub/library/app/blobs/sha256:{hex}%00"), 400, "DIGEST_INVALID"),
        ("/v2/hub/library/app/blobs/latest".to_owned(), 400, "DIGEST_INVALID"),
        (format!("/v2/hub/library/app/manifests/{}", "t".repeat(129)), 400, "TAG_INVALID"),
        ("/v2/hub/library/app/manifests/.hidden".to_owned(), 400, "TAG_INVALID"),
        ("/v2/hub/library/app/manifests/a%0ab".to_owned(), 400, "TAG_INVALID"),
        ("/v2/hub/library/../../etc/manifests/latest".to_owned(), 400, "NAME_INVALID"),
        ("/v2/hub/library/%2e%2e/app/manifests/latest".to_owned(), 400, "NAME_INVALID"),
        ("/v2/hub/Library/app/manifests/latest".to_owned(), 400, "NAME_INVALID"),
        ("/v2/hub/library//app/manifests/latest".to_owned(), 400, "NAME_INVALID"),
        (format!("/v2/hub/{}/manifests/latest", "a/".repeat(200)), 400, "NAME_INVALID"),
    ];
    for (path, status, code) in &cases {
        let (got, body) = proxy.raw_get(path).await;
        assert_eq!(got, *status, "{path}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(json["errors"][0]["code"], *code, "{path}: {body}");
    }
    assert_eq!(upstream.total(), 0, "nothing malformed reached upstream");
    assert_eq!(proxy.cached_count("hub").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_metadata_from_upstream_is_a_502_never_a_half_rewritten_document() {
    let (upstream, proxy) =
        setup(&[("PUBLIC_URL", "https://artifacts.example.com/"), ("METADATA_MAX_BYTES", "65536")]).await;
    let json = [("content-type", "application/json")];
    let pep691 = [("content-type", "application/vnd.pypi.simple.v1+json")];
    upstream.put("/broken", r#"{"name":"broken","versions":{"1.0.0":{"dist":{"tarball":"#, &json);
    upstream.put("/wrongtypes", r#"{"name":"wrongtypes","versions":[1,2,3]}"#, &json);
    upstream.put("/huge", format!(r#"{{"name":"huge","description":"{}"}}"#, "x".repeat(200_000)), &json);
    upstream.put("/simple/broken/", r#"{"meta":{"api-version":"1.0"},"files":[{"url":"#, &pep691);
    upstream.put(
        "/simple/huge/",
        format!("<html>{}</html>", "<a href=\"/f.tgz\">f</a>".repeat(10_000)),
        &[("content-type", "text/html")],
    );
    for path in ["/api/npm/broken", "/api/npm/huge", "/api/pypi/simple/broken/", "/api/pypi/simple/huge/"] {
        let res = client().get(proxy.url(path)).send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        assert_eq!(status, 502, "{path}: {text}");
        let error: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {text}");
    }
    // Valid JSON of an unexpected shape has nothing to rewrite: it passes
    // through as upstream sent it (the client judges it), whole.
    let res = client().get(proxy.url("/api/npm/wrongtypes")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), r#"{"name":"wrongtypes","versions":[1,2,3]}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_that_backtracks_without_end_denies_at_once() {
    let (upstream, proxy) = setup(&[]).await;
    upstream.put(&format!("/{}", "a".repeat(64)), "never", &[]);
    upstream.put("/fine.tgz", "fine", &[]);
    let (status, body) = proxy.raw_get(&format!("/api/picky/{}", "a".repeat(64))).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("could not be evaluated"), "{body}");
    assert_eq!(upstream.total(), 0, "policy fails closed");
    let res = client().get(proxy.url("/api/picky/fine.tgz")).send().await.unwrap();
    assert_eq!(res.status(), 200, "the remote still works");
}

fn check_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("remotes.yaml");
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_artifactapi"))
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn every_malformed_configuration_is_refused_with_what_and_where() {
    let remote = |extra: &str| format!("remotes:\n  a:\n    base_url: https://e.example\n{extra}");
    let cases: Vec<(String, &str)> = vec![
        ("remotes: [".into(), "expected a map"),
        ("remotes:\n  a:\n\tbase_url: x\n".into(), "line 3"),
        ("remotes: 5\n".into(), "expected a map"),
        (String::new(), "missing field `remotes`"),
        ("\u{0}\u{1}binary".into(), "remotes.yaml"),
        ("remotes:\n  a:\n    package: generic\n".into(), "remotes.a.base_url"),
        ("remotes:\n  a:\n    base_url: not a url\n".into(), "remotes.a.base_url"),
        ("remotes:\n  a:\n    base_url: ftp://e.example/\n".into(), "not an http or https URL"),
        ("remotes:\n  a:\n    base_url: https://u:p@e.example/\n".into(), "credentials in the URL"),
        (
            "remotes:\n  a:\n    base_url: https://e.example\n  a:\n    base_url: https://f.example\n".into(),
            "defined twice",
        ),
        ("remotes:\n  a/b:\n    base_url: https://e.example\n".into(), "remotes.a/b"),
        ("remotes:\n  \"\":\n    base_url: https://e.example\n".into(), "a remote name is"),
        (remote("    package: punchcards\n"), "remotes.a.package"),
        (remote("    cache: {mutable_ttl: -5}\n"), "remotes.a.cache.mutable_ttl"),
        (remote("    cache: {mutable_ttl: soon}\n"), "remotes.a.cache.mutable_ttl"),
        (remote("    mutable_ttl: 5\n"), "unknown field `mutable_ttl`"),
        (remote("    immutable_patterns: \"x\"\n"), "immutable_patterns"),
        (remote("    immutable_patterns: ['(']\n"), "remotes.a.immutable_patterns[0]"),
        (remote("    mutable_patterns: ['[ab]{1000}{1000}']\n"), "size limit"),
        (remote("    immutable_patterns: ['\\w{100}{100}']\n"), "size limit"),
        (
            remote("    password: ${ARTIFACTAPI_TEST_UNSET_VARIABLE}\n    username: u\n"),
            "ARTIFACTAPI_TEST_UNSET_VARIABLE",
        ),
        ("remotes:\n  a: &x\n    base_url: https://e.example\n    b: *x\n".into(), "remotes.a"),
    ];
    for (text, expected) in &cases {
        let (ok, out) = check_config(text);
        assert!(!ok, "accepted: {text:?}\n{out}");
        assert!(out.contains(expected), "{text:?}: expected {expected:?} in\n{out}");
        assert!(!out.contains("panicked"), "{text:?}: {out}");
    }
    // Deep nesting is refused before the YAML scanner (quadratic in depth)
    // sees it: 100 000 levels would otherwise take it a minute.
    let deep = format!("remotes: {}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (ok, out) = check_config(&deep);
    assert!(!ok && out.contains("nested more than 64 levels deep"), "{out}");
}
