//! The operator's page (`/ui/`) in a real browser, and the per-entry
//! statistics it shows.

use std::time::Duration;

use crate::support::{browser::Browser, client, eventually, Binary, Upstream, PATIENCE};
use serde_json::Value;

const CONFIG: &str =
    "remotes:\n  files:\n    base_url: \"{upstream}\"\n    description: files <b>for</b> CI\n";
/// A path whose name is markup: it must show as text. Were it run, it
/// would leave a mark the test reads (an `alert()` would be dismissed by
/// WebDriver's next command before anything could read it).
const MARKUP: &str = "/rel/%3Cscript%3Ewindow.injected=1%3C/script%3E.txt";

async fn get(proxy: &Binary, path: &str) -> String {
    let res = client().get(proxy.url(&format!("/api/files{path}"))).send().await.unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.headers().get("x-cache-status").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

async fn listing(proxy: &Binary, query: &str) -> Value {
    let res = client().get(proxy.url(&format!("/artifacts/files{query}"))).send().await.unwrap();
    serde_json::from_slice(&res.bytes().await.unwrap()).unwrap()
}

fn item<'a>(listing: &'a Value, path: &str) -> Option<&'a Value> {
    listing["items"].as_array()?.iter().find(|i| i["path"] == path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_page_lists_searches_opens_and_purges_with_the_token() {
    let upstream = Upstream::start().await;
    for path in ["/rel/tool-1.0.tar.gz", "/rel/tool-2.0.tar.gz", "/docs/readme.txt", MARKUP] {
        upstream.put(path, format!("bytes of {path}"), &[("content-type", "application/gzip")]);
    }
    let env = [
        ("ADMIN_TOKEN".to_owned(), "page-token".to_owned()),
        ("CACHE_EVICT_INTERVAL".to_owned(), "1".to_owned()),
    ];
    let proxy = Binary::start(CONFIG, &upstream.url(), &env);
    for path in ["/rel/tool-1.0.tar.gz", "/rel/tool-2.0.tar.gz", "/docs/readme.txt", MARKUP] {
        get(&proxy, path).await;
    }
    eventually("four entries", PATIENCE, || async { listing(&proxy, "").await["count"] == 4 }).await;
    for _ in 0..3 {
        assert_eq!(get(&proxy, "/rel/tool-1.0.tar.gz").await, "HIT");
    }
    eventually("the hits counted", PATIENCE, || async {
        item(&listing(&proxy, "").await, "rel/tool-1.0.tar.gz").is_some_and(|i| i["served_count"] == 3)
    })
    .await;

    let browser = Browser::start().await;
    browser.go(&proxy.url("/ui/")).await;
    let overview = browser.text("#remotes").await;
    assert!(overview.contains("files") && overview.contains("generic"), "{overview}");
    browser.screenshot("overview").await;
    browser.click("a[href='/ui/remotes/files']").await;
    let entries = browser.text("#entries").await;
    assert!(
        entries.contains("rel/<script>window.injected=1</script>.txt"),
        "the markup path shows as text: {entries}"
    );
    let injected = browser.script("return window.injected === undefined ? null : window.injected;").await;
    assert_eq!(injected, Value::Null, "no script from a cached path ran");
    browser.screenshot("remote").await;

    browser.type_into("input[name=prefix]", "rel/tool").await;
    browser.click("button[type=submit]").await;
    eventually("the search to apply", PATIENCE, || async {
        browser.url().await.contains("prefix=rel%2Ftool")
    })
    .await;
    let found = browser.text("#entries").await;
    assert!(found.contains("rel/tool-1.0.tar.gz") && found.contains("rel/tool-2.0.tar.gz"), "{found}");
    assert!(!found.contains("docs/readme.txt"), "{found}");

    browser.click("a[href$='tool-1.0.tar.gz']").await;
    assert_eq!(browser.text("#path").await, "rel/tool-1.0.tar.gz");
    let shown = browser.text("table.entry").await;
    assert!(shown.contains("3 times") && shown.contains("application/gzip"), "{shown}");
    browser.screenshot("entry").await;
    browser.click("#purge").await;
    browser.answer_prompt("page-token").await;
    eventually("the purge to answer", PATIENCE, || async { browser.text("#purged").await == "purged" }).await;
    browser.screenshot("purged").await;

    let after = listing(&proxy, "?prefix=rel/").await;
    assert!(item(&after, "rel/tool-1.0.tar.gz").is_none(), "purged: {after}");
    assert!(item(&after, "rel/tool-2.0.tar.gz").is_some());
    assert_eq!(get(&proxy, "/rel/tool-1.0.tar.gz").await, "MISS", "fetched again after the purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_button_without_the_right_token_purges_nothing() {
    let upstream = Upstream::start().await;
    upstream.put("/rel/keep.tgz", "keep me", &[]);
    let env = [("ADMIN_TOKEN".to_owned(), "page-token".to_owned())];
    let proxy = Binary::start(CONFIG, &upstream.url(), &env);
    get(&proxy, "/rel/keep.tgz").await;
    eventually("the entry", PATIENCE, || async { listing(&proxy, "").await["count"] == 1 }).await;
    let browser = Browser::start().await;
    browser.go(&proxy.url("/ui/entries/files/rel/keep.tgz")).await;
    browser.click("#purge").await;
    browser.answer_prompt("wrong-token").await;
    eventually("the refusal", PATIENCE, || async {
        browser.text("#purged").await.starts_with("not purged: 40")
    })
    .await;
    assert_eq!(listing(&proxy, "").await["count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_served_land_within_an_interval_and_survive_a_restart() {
    let upstream = Upstream::start().await;
    upstream.put("/rel/popular.tgz", "popular", &[]);
    upstream.put("/rel/quiet.tgz", "quiet", &[]);
    let env = [("CACHE_EVICT_INTERVAL".to_owned(), "1".to_owned())];
    let mut proxy = Binary::start(CONFIG, &upstream.url(), &env);
    get(&proxy, "/rel/popular.tgz").await;
    get(&proxy, "/rel/quiet.tgz").await;
    eventually("both entries", PATIENCE, || async { listing(&proxy, "").await["count"] == 2 }).await;
    for _ in 0..40 {
        assert_eq!(get(&proxy, "/rel/popular.tgz").await, "HIT");
    }
    let hits_done = std::time::Instant::now();
    eventually("40 hits counted", Duration::from_secs(5), || async {
        item(&listing(&proxy, "").await, "rel/popular.tgz").is_some_and(|i| i["served_count"] == 40)
    })
    .await;
    println!("counted {:?} after the last hit (interval 1 s)", hits_done.elapsed());
    let page = listing(&proxy, "").await;
    let popular = item(&page, "rel/popular.tgz").unwrap();
    let (served, cached) =
        (popular["last_served_at"].as_str().unwrap(), popular["cached_at"].as_str().unwrap());
    assert_eq!(served.len(), cached.len(), "the same time format: {served} / {cached}");
    assert!(served >= cached);
    let quiet = item(&page, "rel/quiet.tgz").unwrap();
    assert_eq!((quiet["served_count"].as_u64(), quiet["last_served_at"].is_null()), (Some(0), true));

    proxy.restart();
    let page = listing(&proxy, "").await;
    assert_eq!(item(&page, "rel/popular.tgz").unwrap()["served_count"], 40, "kept across a restart");
    assert_eq!(get(&proxy, "/rel/popular.tgz").await, "HIT");
    eventually("one more", Duration::from_secs(5), || async {
        item(&listing(&proxy, "").await, "rel/popular.tgz").is_some_and(|i| i["served_count"] == 41)
    })
    .await;
}
