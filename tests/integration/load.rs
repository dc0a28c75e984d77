//! Load and soak: the built binary under 200 concurrent keep-alive clients on
//! loopback, with the counting upstream as origin, for a bounded time.
//!
//! The mix: hits on pre-warmed artifacts (4 KiB and 1 MiB), `HEAD`s and
//! `Range`s on them, and misses on new keys, each first asked for by a group
//! of eight clients at the same instant (seven GETs and one Range), so single
//! flight works under load, and purged once they were served (the index does
//! not grow: a soak measures leaks, not a cache filling up). Every answer is
//! checked: status, headers and every byte against the known content. Asserted: no failed request, exactly
//! one upstream GET per distinct key (and no other upstream request), no
//! failed fill, resident memory flat (the end within 64 MiB of the start and
//! under 256 MiB) and no leaked file descriptor (once the clients are gone,
//! no client connection is left and the count returns to within 8 of the
//! count before the load). No speed is asserted: the machine is shared and
//! small. Baselines are taken after a few seconds of the same load, when
//! connection pools and allocator arenas have their working size.
//!
//! `load` runs for `LOAD_SECONDS` (default 40) with every test run;
//! `soak` is the same for `LOAD_SECONDS` (default 1800) and is ignored:
//! `cargo nextest run -E 'test(=load::soak)' --run-ignored only` (`.config/nextest.toml`
//! lets it run past the usual termination and runs nothing beside either).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::support::{Binary, Upstream};
use bytes::Bytes;
use tokio::sync::Barrier;

const CONFIG: &str = "remotes:\n  files:\n    base_url: \"{upstream}\"\n";

/// Concurrent clients, each with its own keep-alive connection.
const CLIENTS: usize = 200;
/// Clients that ask for a new key together.
const GROUP: usize = 8;
/// Groups of miss clients; the other clients only hit.
const GROUPS: usize = 5;
/// Hits a miss client makes between two new keys.
const HITS_BETWEEN_MISSES: usize = 4;
const SMALL: usize = 4 * 1024;
const MEDIUM: usize = 1024 * 1024;
const WARM_SMALL: usize = 32;
const WARM_MEDIUM: usize = 4;
/// Sizes of the new keys, by round.
const MISS_SIZES: [usize; 4] = [2 * 1024, 64 * 1024, 4 * 1024, MEDIUM];
/// Generous: the machine is shared; a request this slow is a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);
/// The first seconds of load, before anything is measured: connection pools
/// (SQLite, upstream) and allocator arenas reach their working size.
const PRIME_SECONDS: u64 = 4;
const RSS_GROWTH_KIB: u64 = 64 * 1024;
const RSS_CAP_KIB: u64 = 256 * 1024;
const FD_TOLERANCE: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load() {
    run(40).await;
}

/// The long run; see the module documentation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 30-minute soak: cargo nextest run -E 'test(=load::soak)' --run-ignored only"]
async fn soak() {
    run(1800).await;
}

/// Deterministic content for a key: 8 bytes per step of splitmix64.
fn content(key: &str, len: usize) -> Bytes {
    let mut state =
        key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

/// A small xorshift: the clients' choices, cheap and reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// A pre-warmed artifact.
struct Warm {
    url: String,
    body: Bytes,
}

#[derive(Default)]
struct Stats {
    get: AtomicU64,
    head: AtomicU64,
    range: AtomicU64,
    miss_get: AtomicU64,
    miss_range: AtomicU64,
    purge: AtomicU64,
    failures: AtomicU64,
    examples: Mutex<Vec<String>>,
}

impl Stats {
    fn requests(&self) -> u64 {
        [&self.get, &self.head, &self.range, &self.miss_get, &self.miss_range, &self.purge]
            .iter()
            .map(|c| c.load(Relaxed))
            .sum()
    }

    fn record(&self, counter: &AtomicU64, outcome: Result<(), String>) {
        counter.fetch_add(1, Relaxed);
        if let Err(e) = outcome {
            self.failures.fetch_add(1, Relaxed);
            let mut examples = self.examples.lock().unwrap();
            if examples.len() < 20 {
                examples.push(e);
            }
        }
    }
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Reads the body chunk by chunk and compares it with `expected` as it comes
/// (no copy of the body: the clients share two cores with the proxy).
async fn compare(mut res: reqwest::Response, expected: &[u8], what: &str) -> Result<(), String> {
    let mut offset = 0;
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => {
                let end = offset + chunk.len();
                if end > expected.len() {
                    return Err(format!("{what}: body longer than {} bytes", expected.len()));
                }
                if chunk[..] != expected[offset..end] {
                    return Err(format!("{what}: bytes differ in {offset}..{end}"));
                }
                offset = end;
            }
            Ok(None) => break,
            Err(e) => return Err(format!("{what}: transfer failed after {offset} bytes: {e}")),
        }
    }
    if offset != expected.len() {
        return Err(format!("{what}: {offset} bytes, expected {}", expected.len()));
    }
    Ok(())
}

/// A whole GET: 200, one of `cache` statuses, the exact bytes.
async fn get(client: &reqwest::Client, url: &str, body: &[u8], cache: &[&str]) -> Result<(), String> {
    let res = client.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = header(&res, "x-cache-status").to_owned();
    if res.status() != 200 || !cache.contains(&status.as_str()) {
        return Err(format!("GET {url}: {} {status}, expected 200 {cache:?}", res.status()));
    }
    if header(&res, "content-length") != body.len().to_string() {
        return Err(format!("GET {url}: Content-Length {:?}", header(&res, "content-length")));
    }
    compare(res, body, &format!("GET {url}")).await
}

/// A HEAD on a hit: 200, HIT, the length, no body.
async fn head(client: &reqwest::Client, url: &str, len: usize) -> Result<(), String> {
    let res = client.head(url).send().await.map_err(|e| format!("HEAD {url}: {e}"))?;
    if res.status() != 200 || header(&res, "x-cache-status") != "HIT" {
        return Err(format!("HEAD {url}: {} {}", res.status(), header(&res, "x-cache-status")));
    }
    if header(&res, "content-length") != len.to_string() {
        return Err(format!("HEAD {url}: Content-Length {:?}", header(&res, "content-length")));
    }
    compare(res, &[], &format!("HEAD {url}")).await
}

/// A purge of one cached entry: 200, one entry removed.
async fn purge(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let res = client.delete(url).send().await.map_err(|e| format!("DELETE {url}: {e}"))?;
    let status = res.status();
    let body = res.text().await.map_err(|e| format!("DELETE {url}: {e}"))?;
    if status != 200 || !body.contains("\"removed\":1") {
        return Err(format!("DELETE {url}: {status} {body}"));
    }
    Ok(())
}

/// A random range of `body`: `s-e`, `s-` near the end, or a suffix `-n`.
fn pick_range(rng: &mut Rng, len: usize) -> (String, usize, usize) {
    match rng.below(3) {
        0 => {
            let start = rng.below(len);
            let end = start + rng.below((len - start).min(64 * 1024));
            (format!("bytes={start}-{end}"), start, end)
        }
        1 => {
            let start = len - 1 - rng.below(len.min(8192));
            (format!("bytes={start}-"), start, len - 1)
        }
        _ => {
            let n = 1 + rng.below(len.min(8192));
            (format!("bytes=-{n}"), len - n, len - 1)
        }
    }
}

/// A Range GET: 206, the right `Content-Range`, the exact bytes.
async fn range(client: &reqwest::Client, url: &str, body: &[u8], rng: &mut Rng) -> Result<(), String> {
    let (spec, start, end) = pick_range(rng, body.len());
    let what = format!("GET {url} Range {spec}");
    let res = client.get(url).header("range", &spec).send().await.map_err(|e| format!("{what}: {e}"))?;
    if res.status() != 206 {
        return Err(format!("{what}: {} {}", res.status(), header(&res, "x-cache-status")));
    }
    let expected_range = format!("bytes {start}-{end}/{}", body.len());
    if header(&res, "content-range") != expected_range {
        return Err(format!(
            "{what}: Content-Range {:?}, expected {expected_range}",
            header(&res, "content-range")
        ));
    }
    compare(res, &body[start..=end], &what).await
}

/// One request on a pre-warmed artifact: GET, HEAD or Range.
async fn hit(client: &reqwest::Client, warm: &[Warm], rng: &mut Rng, stats: &Stats) {
    let w = if rng.below(100) < 85 {
        &warm[rng.below(WARM_SMALL)]
    } else {
        &warm[WARM_SMALL + rng.below(WARM_MEDIUM)]
    };
    match rng.below(100) {
        0..55 => stats.record(&stats.get, get(client, &w.url, &w.body, &["HIT"]).await),
        55..75 => stats.record(&stats.head, head(client, &w.url, w.body.len()).await),
        _ => stats.record(&stats.range, range(client, &w.url, &w.body, rng).await),
    }
}

fn new_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(REQUEST_TIMEOUT).pool_max_idle_per_host(1).build().unwrap()
}

/// What every client of one phase shares.
struct Phase {
    name: &'static str,
    base: String,
    upstream: Arc<Upstream>,
    warm: Arc<Vec<Warm>>,
    stats: Stats,
    stop: AtomicBool,
    /// Every key asked for for the first time in this phase.
    keys: Mutex<Vec<String>>,
}

/// Eight clients asking for the same new keys, round after round.
struct Group {
    index: usize,
    barrier: Barrier,
    go: AtomicBool,
    current: Mutex<Option<(String, Bytes)>>,
}

async fn hit_client(phase: Arc<Phase>, seed: u64) {
    let client = new_client();
    let mut rng = Rng::new(seed);
    while !phase.stop.load(Relaxed) {
        hit(&client, &phase.warm, &mut rng, &phase.stats).await;
    }
}

async fn miss_client(phase: Arc<Phase>, group: Arc<Group>, member: usize, seed: u64) {
    let client = new_client();
    let mut rng = Rng::new(seed);
    let mut round = 0;
    loop {
        // Everyone finished the previous round: the leader retires its key
        // (it is never asked for again) upstream and purges it from the
        // cache, so that a soak measures leaks, not a growing index; then it
        // decides on this round.
        if group.barrier.wait().await.is_leader() {
            let previous = group.current.lock().unwrap().take();
            if let Some((path, _)) = previous {
                phase.upstream.remove(&path);
                let stats = &phase.stats;
                stats
                    .record(&stats.purge, purge(&client, &format!("{}/cache/files{path}", phase.base)).await);
            }
            let go = !phase.stop.load(Relaxed);
            if go {
                let len = MISS_SIZES[(round + group.index) % MISS_SIZES.len()];
                let path = format!("/miss/{}/g{}/r{round}-{len}.bin", phase.name, group.index);
                let body = content(&path, len);
                phase.upstream.put(&path, body.clone(), &[]);
                phase.keys.lock().unwrap().push(path.clone());
                *group.current.lock().unwrap() = Some((path, body));
            }
            group.go.store(go, Relaxed);
        }
        group.barrier.wait().await;
        if !group.go.load(Relaxed) {
            return;
        }
        let (path, body) = group.current.lock().unwrap().clone().expect("a key for this round");
        let url = format!("{}/api/files{path}", phase.base);
        // All at once: one fill, joined by the others (or, when it was
        // quicker than them, a hit on what it committed).
        let stats = &phase.stats;
        if member == round % GROUP {
            stats.record(&stats.miss_range, range(&client, &url, &body, &mut rng).await);
        } else {
            stats.record(&stats.miss_get, get(&client, &url, &body, &["MISS", "HIT"]).await);
        }
        for _ in 0..HITS_BETWEEN_MISSES {
            hit(&client, &phase.warm, &mut rng, stats).await;
        }
        round += 1;
    }
}

/// Runs the mix for `seconds` with [`CLIENTS`] clients; answers once every
/// client is done and dropped.
async fn run_phase(phase: Arc<Phase>, seconds: u64, sample: impl Fn()) {
    let mut tasks = Vec::new();
    for g in 0..GROUPS {
        let group = Arc::new(Group {
            index: g,
            barrier: Barrier::new(GROUP),
            go: AtomicBool::new(false),
            current: Mutex::new(None),
        });
        for member in 0..GROUP {
            let seed = (g * GROUP + member) as u64;
            tasks.push(tokio::spawn(miss_client(phase.clone(), group.clone(), member, seed)));
        }
    }
    for i in GROUPS * GROUP..CLIENTS {
        tasks.push(tokio::spawn(hit_client(phase.clone(), i as u64)));
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500).min(deadline - Instant::now())).await;
        sample();
    }
    phase.stop.store(true, Relaxed);
    for task in tasks {
        task.await.expect("a client panicked");
    }
}

/// The proxy's open descriptors, by kind: `client` (a connection accepted
/// on its port), `upstream` (a connection to the origin), `listener`, `tcp`,
/// `socket` (not TCP), `pipe`, `anon_inode`, `file`.
struct Fds {
    total: usize,
    kinds: BTreeMap<&'static str, usize>,
    targets: Vec<String>,
}

impl Fds {
    fn of(proxy: &Binary, upstream_port: u16) -> Self {
        let proxy_port: u16 = proxy.base.rsplit(':').next().unwrap().parse().unwrap();
        // Every TCP socket of the network namespace, by inode: its local and
        // remote port.
        let mut tcp: HashMap<String, (u16, u16)> = HashMap::new();
        for table in ["tcp", "tcp6"] {
            let text =
                std::fs::read_to_string(format!("/proc/{}/net/{table}", proxy.pid())).unwrap_or_default();
            for line in text.lines().skip(1) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                let port = |addr: &str| {
                    addr.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()).unwrap_or(0)
                };
                if cols.len() > 9 {
                    tcp.insert(cols[9].to_owned(), (port(cols[1]), port(cols[2])));
                }
            }
        }
        let targets = proxy.fd_targets();
        let mut kinds = BTreeMap::new();
        for target in &targets {
            let kind = match target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                Some(inode) => match tcp.get(inode) {
                    Some(&(local, 0)) if local == proxy_port => "listener",
                    Some(&(local, _)) if local == proxy_port => "client",
                    Some(&(_, remote)) if remote == upstream_port => "upstream",
                    Some(_) => "tcp",
                    None => "socket",
                },
                None if target.starts_with("pipe:") => "pipe",
                None if target.starts_with("anon_inode:") => "anon_inode",
                None => "file",
            };
            *kinds.entry(kind).or_default() += 1;
        }
        Self { total: targets.len(), kinds, targets }
    }

    fn get(&self, kind: &str) -> usize {
        self.kinds.get(kind).copied().unwrap_or(0)
    }

    /// What is open here and was not in `before` (a leak shows what leaks).
    fn new_since(&self, before: &Fds) -> Vec<String> {
        let mut new = self.targets.clone();
        for target in &before.targets {
            if let Some(i) = new.iter().position(|t| t == target) {
                new.swap_remove(i);
            }
        }
        new
    }
}

impl std::fmt::Display for Fds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<String> = self.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        write!(f, "{} ({})", self.total, kinds.join(", "))
    }
}

/// Polls the proxy's descriptors until no client connection is left and the
/// count is unchanged for a second, for at most `limit`.
async fn settled_fds(proxy: &Binary, upstream_port: u16, limit: Duration) -> Fds {
    let deadline = Instant::now() + limit;
    let mut last = Fds::of(proxy, upstream_port);
    let mut since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = Fds::of(proxy, upstream_port);
        if now.total != last.total || now.get("client") > 0 {
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_secs(1) {
            return now;
        }
        last = now;
    }
    last
}

/// One value of `/metrics` (a series without labels).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

async fn run(default_seconds: u64) {
    let seconds: u64 = match std::env::var("LOAD_SECONDS") {
        Ok(v) => v.parse().expect("LOAD_SECONDS is a whole number of seconds"),
        Err(_) => default_seconds,
    };
    let upstream = Arc::new(Upstream::start().await);
    let proxy = Binary::start(
        CONFIG,
        &upstream.url(),
        &[
            // One line per fill or purge would drown the report.
            ("RUST_LOG".into(), "info,artifactapi_layers=warn,artifactapi::manage=warn".into()),
        ],
    );
    let base = proxy.base.clone();
    let client = new_client();

    // Pre-warmed artifacts, fetched all at once.
    let mut warm = Vec::new();
    let mut keys = Vec::new();
    for (i, len) in (0..WARM_SMALL).map(|i| (i, SMALL)).chain((0..WARM_MEDIUM).map(|i| (i, MEDIUM))) {
        let path = format!("/warm/{len}/{i}.bin");
        let body = content(&path, len);
        upstream.put(&path, body.clone(), &[]);
        warm.push(Warm { url: format!("{base}/api/files{path}"), body });
        keys.push(path);
    }
    let fills = warm.iter().map(|w| get(&client, &w.url, &w.body, &["MISS"]));
    for outcome in futures_util::future::join_all(fills).await {
        outcome.unwrap();
    }
    for w in &warm {
        get(&client, &w.url, &w.body, &["HIT"]).await.unwrap();
    }
    drop(client);
    let warm = Arc::new(warm);

    let new_phase = |name| {
        Arc::new(Phase {
            name,
            base: base.clone(),
            upstream: upstream.clone(),
            warm: warm.clone(),
            stats: Stats::default(),
            stop: AtomicBool::new(false),
            keys: Mutex::new(Vec::new()),
        })
    };

    // Priming: the same load, briefly, so that pools and arenas are at their
    // working size before the baseline is taken.
    let prime = new_phase("prime");
    run_phase(prime.clone(), PRIME_SECONDS, || {}).await;
    let mut failures = prime.stats.examples.lock().unwrap().clone();
    keys.extend(prime.keys.lock().unwrap().iter().cloned());

    let upstream_port = upstream.addr.port();
    let fds_before = settled_fds(&proxy, upstream_port, Duration::from_secs(15)).await;
    let rss_start = proxy.rss_kib();

    let load = new_phase("load");
    let peaks = Mutex::new((rss_start, fds_before.total));
    let started = Instant::now();
    // RSS at ten points of the run: a leak climbs, a working set levels off.
    let timeline = Mutex::new(vec![(0, rss_start)]);
    run_phase(load.clone(), seconds, || {
        let (rss, fds) = (proxy.rss_kib(), proxy.open_fds());
        let mut peaks = peaks.lock().unwrap();
        peaks.0 = peaks.0.max(rss);
        peaks.1 = peaks.1.max(fds);
        let mut timeline = timeline.lock().unwrap();
        let at = started.elapsed().as_secs();
        if at >= timeline.last().unwrap().0 + seconds.div_ceil(10) {
            timeline.push((at, rss));
        }
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let (rss_peak, fds_peak) = *peaks.lock().unwrap();
    failures.extend(load.stats.examples.lock().unwrap().iter().cloned());
    let load_keys = load.keys.lock().unwrap().len();
    keys.extend(load.keys.lock().unwrap().iter().cloned());

    // The clients are gone: every connection and every file they caused
    // must be closed again. A finished fill stays joinable (its blob open)
    // for two seconds, so the count is taken after three, or later, once no
    // client connection is left and it is back to where it was (at most 20).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deadline = Instant::now() + Duration::from_secs(17);
    let mut fds_after = Fds::of(&proxy, upstream_port);
    while (fds_after.get("client") > 0 || fds_after.total > fds_before.total) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        fds_after = Fds::of(&proxy, upstream_port);
    }
    let rss_end = proxy.rss_kib();

    let metrics = new_client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let mut gets: HashMap<String, usize> = HashMap::new();
    let mut others = Vec::new();
    for seen in upstream.requests() {
        if seen.method == "GET" {
            *gets.entry(seen.path).or_default() += 1;
        } else {
            others.push(format!("{} {}", seen.method, seen.path));
        }
    }
    let stats = &load.stats;
    let requests = stats.requests();
    let failed = stats.failures.load(Relaxed) + prime.stats.failures.load(Relaxed);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "load: {seconds} s, {CLIENTS} clients: {requests} requests (GET hit {}, HEAD {}, Range {}, miss GET {}, \
         miss Range {}, purge {}), {failed} failed, {:.0} req/s; RSS start {:.1} MiB, peak {:.1} MiB, end {:.1} MiB; \
         fds before {}, peak {fds_peak}, after {}; upstream {} requests for {} distinct keys \
         ({load_keys} new under load); fills {}, coalesced {}",
        stats.get.load(Relaxed),
        stats.head.load(Relaxed),
        stats.range.load(Relaxed),
        stats.miss_get.load(Relaxed),
        stats.miss_range.load(Relaxed),
        stats.purge.load(Relaxed),
        requests as f64 / elapsed,
        mib(rss_start),
        mib(rss_peak),
        mib(rss_end),
        fds_before.total,
        fds_after.total,
        upstream.total(),
        keys.len(),
        metric(&metrics, "artifactapi_fills_total"),
        metric(&metrics, "artifactapi_coalesced_requests_total"),
    );
    let timeline = timeline
        .lock()
        .unwrap()
        .iter()
        .map(|(at, rss)| format!("{at} s {:.1}", mib(*rss)))
        .collect::<Vec<_>>();
    println!("RSS (MiB) over the load: {}", timeline.join(", "));
    println!("fds before the load: {fds_before}; after: {fds_after}");

    assert!(failed == 0, "{failed} requests failed, for example:\n{}", failures.join("\n"));
    assert!(load_keys > 0 && stats.miss_range.load(Relaxed) > 0, "the load asked for new keys");
    assert!(stats.purge.load(Relaxed) > 0, "and purged them");
    assert!(stats.head.load(Relaxed) > 0 && stats.range.load(Relaxed) > 0, "the mix has HEADs and Ranges");

    // One upstream GET per distinct key, and nothing else.
    let not_once: Vec<String> = keys
        .iter()
        .filter(|k| gets.get(*k) != Some(&1))
        .map(|k| format!("{k}: {}", gets.get(k).copied().unwrap_or(0)))
        .collect();
    assert!(not_once.is_empty(), "keys not fetched exactly once: {not_once:?}");
    assert_eq!(gets.len(), keys.len(), "upstream saw only the keys asked for");
    assert!(others.is_empty(), "upstream saw only GETs: {others:?}");
    assert!(
        metric(&metrics, "artifactapi_coalesced_requests_total") > 0.0,
        "requests joined fills in flight: single flight was exercised"
    );
    assert_eq!(metric(&metrics, "artifactapi_fills_total"), keys.len() as f64, "one fill per key");
    assert_eq!(metric(&metrics, "artifactapi_fill_failures_total"), 0.0);
    assert_eq!(metric(&metrics, "artifactapi_store_failures_total"), 0.0);
    assert_eq!(metric(&metrics, "artifactapi_fills_in_flight"), 0.0);
    assert_eq!(metric(&metrics, "artifactapi_transfers_in_flight"), 0.0);

    assert!(
        rss_end <= rss_start + RSS_GROWTH_KIB && rss_end < RSS_CAP_KIB,
        "resident memory grew from {rss_start} KiB to {rss_end} KiB (peak {rss_peak} KiB)"
    );
    assert_eq!(fds_after.get("client"), 0, "every client connection is closed: {fds_after}");
    assert!(
        fds_after.total <= fds_before.total + FD_TOLERANCE,
        "file descriptors: {fds_before} before the load, {fds_after} after it; new: {:?}",
        fds_after.new_since(&fds_before)
    );
}
