//! Running the binary: configuration reload (SIGHUP and file changes) and
//! graceful shutdown (SIGTERM with transfers in flight).

mod support;

use std::time::Duration;

use support::{client, large_sha256, sha256, Binary, Upstream};

const TWO: &str = "remotes:\n  first:\n    base_url: \"{upstream}\"\n";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn status(url: &str) -> u16 {
    client().get(url).send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_puts_a_valid_file_in_force_and_keeps_the_old_one_over_an_invalid_file() {
    let upstream = Upstream::start().await;
    upstream.put("/a.txt", "a", &[]);
    let proxy = Binary::start(TWO, &upstream.url(), &env(&[("CONFIG_WATCH_INTERVAL", "0")]));
    assert_eq!(status(&proxy.url("/api/first/a.txt")).await, 200);
    assert_eq!(status(&proxy.url("/api/second/a.txt")).await, 404);

    // A download in flight when the configuration changes finishes whole.
    let slow = proxy.url("/api/first/slow/16/100/s.bin");
    let download = tokio::spawn(async move { client().get(slow).send().await.unwrap().bytes().await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let valid = format!(
        "remotes:\n  second:\n    base_url: \"{}\"\n    immutable_patterns: ['\\.txt$']\n",
        upstream.url()
    );
    std::fs::write(proxy.config_path(), valid).unwrap();
    proxy.signal("HUP");
    assert!(proxy.wait_for_log("configuration reloaded", Duration::from_secs(10)));
    assert_eq!(status(&proxy.url("/api/second/a.txt")).await, 200);
    assert_eq!(status(&proxy.url("/api/second/a.bin")).await, 403, "the new patterns apply");
    assert_eq!(status(&proxy.url("/api/first/a.txt")).await, 404, "the removed remote is gone");
    let config: serde_json::Value = serde_json::from_slice(
        &client().get(proxy.url("/config")).send().await.unwrap().bytes().await.unwrap(),
    )
    .unwrap();
    assert!(config["remotes"]["second"].is_object(), "{config}");

    let bytes = download.await.unwrap().expect("the transfer in flight is not dropped");
    assert_eq!(sha256(&bytes), large_sha256(16 * 65536));

    // An invalid file: logged, and the configuration in force stays.
    std::fs::write(proxy.config_path(), "remotes:\n  broken:\n    imutable_patterns: ['x']\n").unwrap();
    proxy.signal("HUP");
    assert!(proxy.wait_for_log("configuration not reloaded", Duration::from_secs(10)));
    assert_eq!(status(&proxy.url("/api/second/a.txt")).await, 200);
    assert_eq!(status(&proxy.url("/api/broken/a.txt")).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_picked_up_without_a_signal() {
    let upstream = Upstream::start().await;
    upstream.put("/a.txt", "a", &[]);
    let proxy = Binary::start(TWO, &upstream.url(), &env(&[("CONFIG_WATCH_INTERVAL", "0.2")]));
    let changed = format!("remotes:\n  renamed:\n    base_url: \"{}\"\n", upstream.url());
    std::fs::write(proxy.config_path(), changed).unwrap();
    assert!(proxy.wait_for_log("configuration reloaded", Duration::from_secs(10)));
    assert_eq!(status(&proxy.url("/api/renamed/a.txt")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_download_finish_and_then_exits() {
    let upstream = Upstream::start().await;
    let mut proxy = Binary::start(TWO, &upstream.url(), &env(&[("SHUTDOWN_TIMEOUT", "20")]));
    let slow = proxy.url("/api/first/slow/20/100/done.bin");
    let download = tokio::spawn(async move { client().get(slow).send().await.unwrap().bytes().await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.signal("TERM");
    assert!(proxy.wait_for_log("shutting down", Duration::from_secs(5)));
    // No new connections once draining.
    assert!(client().get(proxy.url("/health")).send().await.is_err());
    let bytes = download.await.unwrap().expect("the download in flight completes");
    assert_eq!(sha256(&bytes), large_sha256(20 * 65536));
    let exit = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(10)));
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_deadline_cuts_the_transfer_and_caches_nothing() {
    let upstream = Upstream::start().await;
    let mut proxy = Binary::start(TWO, &upstream.url(), &env(&[("SHUTDOWN_TIMEOUT", "0.5")]));
    let slow = proxy.url("/api/first/slow/100/100/cut.bin");
    let download = tokio::spawn(async move { client().get(slow).send().await.unwrap().bytes().await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.signal("TERM");
    let exit = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(10)));
    assert!(exit.is_some_and(|s| s.success()), "it exits at the deadline: {exit:?}");
    assert!(download.await.unwrap().is_err(), "the client sees the transfer cut, not a short 200");
    let mut committed = Vec::new();
    for entry in walk(&proxy.data_dir().join("blobs")) {
        committed.push(entry);
    }
    assert!(committed.is_empty(), "nothing partial was stored: {committed:?}");
    assert_eq!(upstream.finished("/slow/100/100/cut.bin"), 0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}
