//! End to end: the built `artifactapi` binary, nginx as the upstream, curl as
//! the client. Counts upstream requests in nginx's access log and reports the
//! proxy's peak memory over a transfer far larger than any buffer.

use std::{
    io::Write,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use crate::support::{large_chunk, large_sha256, nginx, sha256, Binary};

fn wait_for(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let ok =
            Command::new("curl").args(["-sf", "-o", "/dev/null", url]).status().is_ok_and(|s| s.success());
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} did not come up");
}

struct Curl {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Curl {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn curl(args: &[&str], url: &str, dir: &Path) -> Curl {
    let out = dir.join("curl.out");
    let hdr = dir.join("curl.hdr");
    let status = Command::new("curl")
        .args(["-sS", "--noproxy", "*", "-o"])
        .arg(&out)
        .arg("-D")
        .arg(&hdr)
        .args(args)
        .arg(url)
        .status()
        .unwrap();
    assert!(status.success(), "curl {args:?} {url} failed: {status}");
    let headers = std::fs::read_to_string(&hdr).unwrap();
    let code = headers.split_whitespace().nth(1).unwrap().parse().unwrap();
    Curl { status: code, headers, body: std::fs::read(&out).unwrap_or_default() }
}

fn access_count(log: &Path, path: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!(" {path} ")))
        .count()
}

#[test]
fn binary_proxies_nginx_to_curl_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let www = root.join("www/releases/v1");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(root.join("nginx-tmp")).unwrap();
    std::fs::write(www.join("tool_linux_amd64.tar.gz"), b"a small release file\n").unwrap();

    // 160 MiB: far more than any buffer, so buffering would show in the RSS.
    let big_len: u64 = 160 * 1024 * 1024;
    let mut big = std::fs::File::create(www.join("big.bin")).unwrap();
    let mut offset = 0;
    while offset < big_len {
        let n = (big_len - offset).min(4 << 20) as usize;
        big.write_all(&large_chunk(offset, n)).unwrap();
        offset += n as u64;
    }
    drop(big);

    let (_nginx, nginx_port) = nginx::start(root, "");

    let config = "remotes:\n  releases:\n    base_url: \"{upstream}\"\n    immutable_patterns:\n      - '^releases/'\n";
    let proxy = Binary::start(config, &format!("http://127.0.0.1:{nginx_port}"), &[]);
    let base = proxy.base.clone();
    wait_for(&format!("{base}/health"));
    let idle_rss = proxy.peak_rss_kib();

    let small = format!("{base}/api/releases/releases/v1/tool_linux_amd64.tar.gz");
    let first = curl(&[], &small, root);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache-status"), Some("MISS"));
    assert!(first.header("etag").is_some(), "nginx's ETag is passed on");
    assert_eq!(first.body, b"a small release file\n");
    let second = curl(&[], &small, root);
    assert_eq!(second.header("x-cache-status"), Some("HIT"));
    assert_eq!(second.header("x-artifact-source"), Some("cache"));
    assert_eq!(second.header("content-type"), Some("application/gzip"));
    assert_eq!(second.body, first.body);
    let head = curl(&["-I"], &small, root);
    assert_eq!(head.header("content-length"), Some("21"));
    let range = curl(&["-r", "2-6"], &small, root);
    assert_eq!(range.status, 206);
    assert_eq!(range.body, b"small");
    assert_eq!(
        access_count(&root.join("access.log"), "/releases/v1/tool_linux_amd64.tar.gz"),
        1,
        "nginx saw exactly one request for the file:\n{}",
        std::fs::read_to_string(root.join("access.log")).unwrap_or_default()
    );

    let big_url = format!("{base}/api/v1/remote/releases/releases/v1/big.bin");
    let expected = large_sha256(big_len);
    for status in ["MISS", "HIT"] {
        let got = curl(&[], &big_url, root);
        assert_eq!(got.status, 200);
        assert_eq!(got.header("x-cache-status"), Some(status));
        assert_eq!(got.body.len() as u64, big_len);
        assert_eq!(sha256(&got.body), expected, "{status}");
    }
    assert_eq!(access_count(&root.join("access.log"), "/releases/v1/big.bin"), 1);

    let peak = proxy.peak_rss_kib();
    println!(
        "artifactapi peak RSS: idle {} MiB, after a {} MiB miss and hit: {} MiB",
        idle_rss / 1024,
        big_len >> 20,
        peak / 1024
    );
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB: memory per transfer must stay bounded");
}
