//! A budget on every document, against the real binary: a small upstream
//! document that describes a huge one (YAML aliases, a zip whose entries
//! share one stream) is refused with a 502 naming the limit, caches nothing
//! and keeps the process small; a check nobody waits for any more stops;
//! merged group documents are kept within a byte budget, without the query;
//! one file's check asks upstream at most four times.

use crate::support;

use std::time::{Duration, Instant};

use crate::support::{client, Binary, Upstream};
use artifactapi_layers::format::go::h1;

/// Peak resident memory the process may reach in these tests.
const MAX_RSS_KIB: u64 = 256 * 1024;

/// The process's CPU time so far (user and system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name, in parentheses, may hold spaces: fields count from
    // after it (utime and stime are the 14th and 15th of the whole line).
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// How many clock ticks the process spends in `window`, from now.
async fn ticks_during(pid: u32, window: Duration) -> u64 {
    let before = cpu_ticks(pid);
    tokio::time::sleep(window).await;
    cpu_ticks(pid) - before
}

async fn get(binary: &Binary, path: &str) -> (u16, String) {
    let res = client().get(binary.url(path)).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap_or_default())
}

/// The paths `GET /artifacts/{remote}` lists, once no fill runs.
async fn cached(binary: &Binary, remote: &str) -> Vec<String> {
    let metrics = binary.url("/metrics");
    support::eventually("every fill has finished", support::PATIENCE, || async {
        support::fills_in_flight(&metrics).await == 0
    })
    .await;
    let (_, body) = get(binary, &format!("/artifacts/{remote}?limit=1000")).await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let items = json["items"].as_array().cloned().unwrap_or_default();
    items.iter().filter_map(|item| item["path"].as_str().map(str::to_owned)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helm_index_of_yaml_aliases_is_a_502_naming_the_limit_and_the_process_stays_small() {
    let upstream = Upstream::start().await;
    // 12 KB of YAML: a thousand strings, seventy aliases of them, seventy
    // aliases of those: 4.9 million strings once expanded. serde_yaml_ng's
    // own repetition guard allows it (few jumps for the events there are).
    let leaves: Vec<String> = (0..1_000).map(|i| format!("c{i:05}")).collect();
    let mut index = format!("apiVersion: v1\nentries:\n  leaf: &leaf [{}]\n", leaves.join(", "));
    index.push_str(&format!("  mid: &mid [{}]\n", vec!["*leaf"; 70].join(", ")));
    index.push_str(&format!("  top: [{}]\n", vec!["*mid"; 70].join(", ")));
    assert!(index.len() < 16_000, "{} bytes", index.len());
    upstream.put("/index.yaml", index, &[("content-type", "application/x-yaml")]);
    let yaml = "remotes:\n  charts:\n    base_url: \"{upstream}\"\n    package: helm\n";
    let binary = Binary::start(yaml, &upstream.url(), &[]);

    for _ in 0..2 {
        let (status, body) = get(&binary, "/api/charts/index.yaml").await;
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("METADATA_MAX_"), "the limit is named: {body}");
    }
    assert_eq!(upstream.count("GET", "/index.yaml"), 2, "not cached: each request asks again");
    assert_eq!(cached(&binary, "charts").await, Vec::<String>::new(), "nothing cached");
    let peak = binary.peak_rss_kib();
    assert!(peak < MAX_RSS_KIB, "peak RSS {peak} KiB");
    println!("helm aliases: peak RSS {peak} KiB");
}

/// Bits, least significant first, as deflate packs them.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    used: u32,
}

impl Bits {
    fn put(&mut self, value: u32, bits: u32) {
        for i in 0..bits {
            if self.used % 8 == 0 {
                self.out.push(0);
            }
            *self.out.last_mut().unwrap() |= (((value >> i) & 1) as u8) << (self.used % 8);
            self.used += 1;
        }
    }

    /// A Huffman code, most significant bit first.
    fn code(&mut self, code: u32, bits: u32) {
        for i in (0..bits).rev() {
            self.put((code >> i) & 1, 1);
        }
    }
}

/// A raw deflate stream of `len` zeros, written directly: a literal zero,
/// then copies of 258 bytes from one back (13 bits each, in one block of
/// fixed codes), so hundreds of MiB cost a test nothing to build.
fn zeros_deflated(len: u64) -> Vec<u8> {
    let mut bits = Bits::default();
    bits.put(1, 1); // the last block
    bits.put(1, 2); // fixed codes
    let literal_zero = |bits: &mut Bits| bits.code(0b0011_0000, 8);
    literal_zero(&mut bits);
    let mut left = len - 1;
    while left >= 258 {
        bits.code(0b1100_0101, 8); // length 258
        bits.code(0, 5); // distance 1
        left -= 258;
    }
    for _ in 0..left {
        literal_zero(&mut bits);
    }
    bits.code(0, 7); // end of block
    bits.out
}

/// A zip of entries `(name, deflated bytes, inflated size)`; with `shared`,
/// only the first is stored and every directory entry points at it.
fn zip(entries: &[(String, &[u8], u32)], shared: bool) -> Vec<u8> {
    let header = |sig: u32, name: &str, packed: usize, size: u32| {
        let mut h = sig.to_le_bytes().to_vec();
        h.extend_from_slice(&20u16.to_le_bytes());
        h.extend_from_slice(&[0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // flags, deflate, time, date, crc
        h.extend_from_slice(&(packed as u32).to_le_bytes());
        h.extend_from_slice(&size.to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h
    };
    let (mut out, mut offsets) = (Vec::new(), Vec::new());
    for (i, (name, packed, size)) in entries.iter().enumerate() {
        if shared && i > 0 {
            offsets.push(0u32);
            continue;
        }
        offsets.push(out.len() as u32);
        out.extend(header(0x0403_4b50, name, packed.len(), *size));
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(packed);
    }
    let at = out.len() as u32;
    for ((name, packed, size), offset) in entries.iter().zip(&offsets) {
        out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend(&header(0, name, packed.len(), *size)[4..]);
        out.extend_from_slice(&[0; 10]);
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    let size = out.len() as u32 - at;
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

#[test]
fn the_hand_written_deflate_stream_inflates_to_zeros() {
    for len in [1, 257, 258, 259, 10_000] {
        let inflated = miniz_oxide::inflate::decompress_to_vec(&zeros_deflated(len)).unwrap();
        assert_eq!(inflated, vec![0; len as usize], "{len}");
    }
}

/// Asks for `path` and leaves after `after`, whatever it has received by
/// then (nothing, or a head and part of the body).
async fn leave_after(binary: &Binary, path: &str, after: Duration) {
    let request = async {
        let mut res = client().get(binary.url(path)).send().await?;
        while res.chunk().await?.is_some() {}
        Ok::<_, reqwest::Error>(())
    };
    let _ = tokio::time::timeout(after, request).await;
}

/// Module zips checked against a stand-in checksum database: a zip of a
/// thousand entries sharing one 16 MiB stream (16 GiB to inflate) is a 502
/// naming the limit, and cached nowhere; when the client leaves early,
/// whether from that zip or from a well-formed one that takes long to
/// check, the process stops working on it within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_zip_bomb_is_refused_and_a_check_nobody_waits_for_stops() {
    let upstream = Upstream::start().await;
    let db = Upstream::start().await;
    let record = |module: &str| {
        // Any well-formed h1: the files never get as far as comparing it.
        let h1 = h1::go_mod(b"unrelated");
        format!("1\n{module} v1.0.0 {h1}\n{module} v1.0.0/go.mod {h1}\n\ngo.sum database tree\n9\nROOT=\n\n")
    };
    let stream = zeros_deflated(16 << 20);
    let entries: Vec<(String, &[u8], u32)> =
        (0..1_000).map(|i| (format!("example.com/bomb@v1.0.0/f{i:04}"), &stream[..], 16 << 20)).collect();
    let bomb = zip(&entries, true);
    assert!(bomb.len() < 512 << 10, "{} bytes", bomb.len());
    upstream.put("/example.com/bomb/@v/v1.0.0.zip", bomb, &[]);
    db.put("/lookup/example.com/bomb@v1.0.0", record("example.com/bomb"), &[]);
    // Well-formed and within the limits (400 MiB inflated), only slow.
    let big = zeros_deflated(200 << 20);
    let entries: Vec<(String, &[u8], u32)> =
        (0..2).map(|i| (format!("example.com/big@v1.0.0/f{i}"), &big[..], 200 << 20)).collect();
    upstream.put("/example.com/big/@v/v1.0.0.zip", zip(&entries, false), &[]);
    db.put("/lookup/example.com/big@v1.0.0", record("example.com/big"), &[]);
    let yaml = format!(
        "remotes:\n  go:\n    base_url: \"{{upstream}}\"\n    package: go\n    go_sumdb_url: \"{}\"\n",
        db.url()
    );
    let binary = Binary::start(&yaml, &upstream.url(), &[]);
    let pid = binary.pid();

    // The client leaves early: within 2 s nothing works on it any more.
    for (path, wait) in [
        ("/api/go/example.com/bomb/@v/v1.0.0.zip", Duration::from_millis(300)),
        ("/api/go/example.com/big/@v/v1.0.0.zip", Duration::from_millis(1_500)),
    ] {
        leave_after(&binary, path, wait).await;
        let left = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let busy = ticks_during(pid, Duration::from_secs(1)).await;
        println!("{path}: {busy} ticks in the third second after the client left ({:?})", left.elapsed());
        assert!(busy <= 10, "{path}: still {busy} ticks of CPU a second, 2 s after the client left");
    }
    let zips = |paths: Vec<String>| paths.into_iter().filter(|p| p.ends_with(".zip")).collect::<Vec<_>>();
    assert_eq!(zips(cached(&binary, "go").await), Vec::<String>::new(), "no zip cached");

    // A client that waits: a 502 naming the limit, and still nothing cached.
    let (status, body) = get(&binary, "/api/go/example.com/bomb/@v/v1.0.0.zip").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("INTEGRITY_MAX_INFLATED_BYTES"), "the limit is named: {body}");
    assert_eq!(zips(cached(&binary, "go").await), Vec::<String>::new(), "no zip cached");
    let peak = binary.peak_rss_kib();
    println!("go zips: peak RSS {peak} KiB, {} CPU ticks in all", cpu_ticks(pid));
    assert!(peak < MAX_RSS_KIB, "peak RSS {peak} KiB");
}

/// Sixty requests for a merged packument, each with its own query string:
/// the members are asked without it (once each, then from their caches),
/// and the process keeps one merged document, not sixty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_documents_ignore_the_query_and_stay_within_their_budget() {
    let upstream = Upstream::start().await;
    let packument = |member: &str, major: u32| {
        let versions: serde_json::Map<String, serde_json::Value> = (0..2_000)
            .map(|i| {
                let version = format!("{major}.0.{i}");
                let value = serde_json::json!({
                    "name": "pkg",
                    "version": version,
                    "description": "d".repeat(1_000),
                    "dist": { "tarball": format!("{}/{member}/pkg/-/pkg-{version}.tgz", upstream.url()) },
                });
                (version, value)
            })
            .collect();
        let latest = format!("{major}.0.1999");
        serde_json::to_vec(
            &serde_json::json!({"name": "pkg", "dist-tags": {"latest": latest}, "versions": versions}),
        )
        .unwrap()
    };
    let json = [("content-type", "application/json")];
    upstream.put("/a/pkg", packument("a", 1), &json);
    upstream.put("/b/pkg", packument("b", 2), &json);
    let yaml = "remotes:\n  a:\n    base_url: \"{upstream}/a\"\n    package: npm\n  \
                b:\n    base_url: \"{upstream}/b\"\n    package: npm\n  \
                all:\n    type: group\n    package: npm\n    resolve: merge\n    members: [a, b]\n";
    let binary = Binary::start(yaml, &upstream.url(), &[]);

    let mut merged_len = 0;
    for i in 0..60 {
        let (status, body) = get(&binary, &format!("/api/all/pkg?nocache={i}")).await;
        assert_eq!(status, 200, "{body}");
        merged_len = body.len();
    }
    assert!(merged_len > 4_000_000, "both members' versions are merged: {merged_len} bytes");
    for member in ["/a/pkg", "/b/pkg"] {
        let asked: Vec<_> = upstream.requests().into_iter().filter(|s| s.path == member).collect();
        assert_eq!(asked.len(), 1, "{member} asked once, then answered from its cache");
        assert!(asked.iter().all(|s| s.query.is_none()), "{member} asked without the query: {asked:?}");
    }
    let peak = binary.peak_rss_kib();
    println!("merged group: peak RSS {peak} KiB");
    assert!(peak < MAX_RSS_KIB, "peak RSS {peak} KiB");
}

/// A gem whose name could be read a thousand ways (`a-1-1-…-1.gem`): its
/// check asks upstream at most four times, then refuses the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gem_name_with_a_thousand_readings_makes_at_most_four_upstream_requests() {
    let upstream = Upstream::start().await;
    let yaml = "remotes:\n  gems:\n    base_url: \"{upstream}\"\n    package: rubygems\n";
    let binary = Binary::start(yaml, &upstream.url(), &[]);
    let name = format!("a{}", "-1".repeat(999));
    let (status, body) = get(&binary, &format!("/api/gems/gems/{name}.gem")).await;
    let seen = upstream.total();
    println!("rubygems: {seen} upstream requests, answered {status}");
    assert!(seen <= 4, "{seen} upstream requests for one gem");
    assert_eq!(status, 502, "refused, not served unchecked: {body}");
    assert!(body.contains("LOOKUP_MAX_REQUESTS"), "the limit is named: {body}");
}
