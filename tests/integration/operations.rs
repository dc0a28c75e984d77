//! Running the binary: configuration reload (SIGHUP and file changes) and
//! graceful shutdown (SIGTERM with transfers in flight).

use std::time::Duration;

use crate::support::{client, eventually, large_sha256, sha256, Binary, Upstream, PATIENCE};

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
    // In flight once upstream has been asked (it takes 1.6 s to send).
    eventually("the download to reach upstream", PATIENCE, || async {
        upstream.count("GET", "/slow/16/100/s.bin") == 1
    })
    .await;

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
    // In flight once upstream has been asked (it takes 2 s to send).
    eventually("the download to reach upstream", PATIENCE, || async {
        upstream.count("GET", "/slow/20/100/done.bin") == 1
    })
    .await;
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
    // In flight once upstream has been asked (it takes 10 s to send).
    eventually("the download to reach upstream", PATIENCE, || async {
        upstream.count("GET", "/slow/100/100/cut.bin") == 1
    })
    .await;
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

fn warm(proxy: &Binary, args: &[&str], stdin: Option<&str>) -> (i32, String) {
    use std::io::Write;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_artifactapi"));
    command.args(["warm", "--url", &proxy.base]).args(args).env_remove("ADMIN_TOKEN");
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_prefetches_a_list_and_reports_what_failed() {
    let upstream = Upstream::start().await;
    for name in ["a", "b", "c"] {
        upstream.put(&format!("/tools/{name}.tgz"), name.repeat(100), &[]);
    }
    let proxy = Binary::start(TWO, &upstream.url(), &env(&[("ADMIN_TOKEN", "warm-secret")]));
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("paths.txt");
    std::fs::write(&list, "# release 1.0\ntools/a.tgz\n\n/tools/b.tgz\ntools/missing.tgz\n").unwrap();

    let file = list.to_str().unwrap();
    let (code, text) = tokio::task::block_in_place(|| warm(&proxy, &["--remote", "first", file], None));
    assert_eq!(code, 2, "without the token the instance refuses: {text}");
    assert!(text.contains("401"), "{text}");

    let args = ["--remote", "first", "--token", "warm-secret", file];
    let (code, text) = tokio::task::block_in_place(|| warm(&proxy, &args, None));
    assert_eq!(code, 1, "one path failed: {text}");
    assert!(text.contains("3 paths of first: 2 cached, 1 failed"), "{text}");
    assert!(text.contains("failed tools/missing.tgz: 404"), "{text}");
    assert_eq!(upstream.count("GET", "/tools/a.tgz"), 1);
    let res = client().get(proxy.url("/api/first/tools/b.tgz")).send().await.unwrap();
    assert_eq!(res.headers()["x-cache-status"], "HIT");

    // From standard input; everything cached: exit 0, nothing fetched again.
    let args = ["--remote", "first", "--token", "warm-secret", "-"];
    let (code, text) =
        tokio::task::block_in_place(|| warm(&proxy, &args, Some("tools/a.tgz\ntools/c.tgz\n")));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("2 cached, 0 failed"), "{text}");
    assert_eq!(upstream.count("GET", "/tools/a.tgz"), 1);
    assert_eq!(upstream.count("GET", "/tools/c.tgz"), 1);
}

#[test]
fn every_command_has_help() {
    for args in [&["--help"][..], &["serve", "--help"], &["check-config", "--help"], &["warm", "--help"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_artifactapi")).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("Usage"), "{args:?}: {text}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_artifactapi"))
        .args(["warm", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--url", "--remote", "--token"] {
        assert!(text.contains(flag), "{text}");
    }
}
