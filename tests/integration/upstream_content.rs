//! Upstream's content never runs on this proxy's origin, where `/ui/` lives:
//! every artifact answer (a miss, a hit, an upstream error passed on, a
//! local repository's file) says `Content-Security-Policy: sandbox` and
//! `X-Content-Type-Options: nosniff`, HTML pages of a directory listing or
//! marked `inline` included.

use crate::support::{client, committed, Proxy, Upstream};

const PAGE: &str =
    "<html><body><script>fetch('/config').then(r => r.text()).then(alert)</script></body></html>";

const CONFIG: &str = "remotes:\n  files:\n    base_url: \"{upstream}\"\n  uploads:\n    type: local\n";

fn assert_sandboxed(res: &reqwest::Response, what: &str) {
    let headers = res.headers();
    let all = |name| headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(all("content-security-policy"), ["sandbox"], "{what}: {headers:?}");
    assert_eq!(all("x-content-type-options"), ["nosniff"], "{what}: {headers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_html_is_sandboxed_and_unsniffable_on_the_miss_and_the_hit() {
    let upstream = Upstream::start().await;
    upstream.put("/site/dir/", PAGE, &[("content-type", "text/html; charset=utf-8")]);
    upstream.put(
        "/site/report.html",
        PAGE,
        &[("content-type", "text/html"), ("content-disposition", "inline; filename=\"report.html\"")],
    );
    let proxy = Proxy::start(CONFIG, &upstream.url()).await;
    for (path, upstream_path) in [
        ("/api/files/site/dir/", "/site/dir/"),
        ("/api/v1/remote/files/site/report.html", "/site/report.html"),
    ] {
        for cache in ["MISS", "HIT"] {
            let res = client().get(proxy.url(path)).send().await.unwrap();
            assert_eq!(res.status(), 200, "{path}");
            assert_eq!(res.headers()["x-cache-status"], cache, "{path}");
            assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{path}");
            assert_sandboxed(&res, &format!("{path} ({cache})"));
            assert_eq!(res.text().await.unwrap(), PAGE, "the page itself is served as it is");
            committed(&proxy).await;
        }
        assert_eq!(upstream.count("GET", upstream_path), 1, "{path}: one fetch, then hits");
    }
    let inline = client().get(proxy.url("/api/files/site/report.html")).send().await.unwrap();
    assert!(inline.headers()["content-disposition"].to_str().unwrap().starts_with("inline"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_refusals_and_local_files_are_sandboxed_too() {
    let upstream = Upstream::start().await;
    upstream.fail("/site/broken.html", 503);
    let proxy = Proxy::start(CONFIG, &upstream.url()).await;

    let passed_on = client().get(proxy.url("/api/files/site/broken.html")).send().await.unwrap();
    assert_eq!(passed_on.status(), 503);
    assert_sandboxed(&passed_on, "an upstream 503 passed on");
    let unknown = client().get(proxy.url("/v2/nothing/here/manifests/latest")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_sandboxed(&unknown, "a registry route's error");

    let put = client()
        .put(proxy.url("/api/uploads/docs/index.html"))
        .header("content-type", "text/html")
        .body(PAGE)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let local = client().get(proxy.url("/api/uploads/docs/index.html")).send().await.unwrap();
    assert_eq!(local.status(), 200);
    assert_sandboxed(&local, "a local repository's HTML file");
    assert_eq!(local.text().await.unwrap(), PAGE);
}
