//! Faults of the proxy's own backends (issue 10), each on real servers of the
//! test's own: S3 (Garage) stopped while a miss is streamed and uploaded and
//! while a hit is read, a private PostgreSQL restarted, a private Redis
//! restarted while a fill holds its lease, and the proxy itself killed with
//! SIGKILL mid-download and started again on the same `DATA_DIR`. (A test
//! whose fault is S3 keeps its index in a database of its own on the
//! machine's PostgreSQL; no fault ever touches the shared PostgreSQL or Redis.)
//!
//! Nothing here waits for a fixed time and then asserts: every step polls for
//! the condition it needs, with a generous deadline, and bodies are large or
//! slow enough that a transfer is still in progress when its fault hits —
//! which each test checks before it relies on it.

use std::{
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::support::{
    backends::{unique, Garage, PgDatabase, PrivatePostgres, PrivateRedis},
    client, large_sha256,
    tcprelay::TcpRelay,
    Binary, Upstream,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = "remotes:\n  files:\n    base_url: \"{upstream}\"\n";
const MIB: u64 = 1024 * 1024;
/// Longer than anything takes on a loaded machine: reaching it is a hang.
const PATIENCE: Duration = Duration::from_secs(180);

/// What a client got for one GET.
#[derive(Debug)]
struct Got {
    status: u16,
    cache: String,
    /// Bytes received.
    len: u64,
    sha256: String,
    /// Why the body broke off, when it did.
    broken: Option<String>,
}

impl Got {
    /// Whether this is the whole body of `len` bytes with digest `sha256`.
    fn whole(&self, len: u64, sha256: &str) -> bool {
        self.status == 200 && self.broken.is_none() && self.len == len && self.sha256 == sha256
    }
}

/// A GET whose body is read as the test decides: part of it, then the rest.
struct Download {
    res: reqwest::Response,
    status: u16,
    cache: String,
    len: u64,
    hasher: Sha256,
}

impl Download {
    async fn start(url: &str) -> Self {
        let res = tokio::time::timeout(PATIENCE, client().get(url).send())
            .await
            .expect("the proxy answers (no hang)")
            .expect("the proxy answers");
        let status = res.status().as_u16();
        let cache =
            res.headers().get("x-cache-status").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        Self { res, status, cache, len: 0, hasher: Sha256::new() }
    }

    /// Reads the next piece of the body: `Ok(false)` at its end.
    async fn read(&mut self) -> Result<bool, String> {
        match tokio::time::timeout(PATIENCE, self.res.chunk()).await {
            Err(_) => panic!("the body stalled for {PATIENCE:?} after {} bytes: a hang", self.len),
            Ok(Err(e)) => Err(format!("{e:?}")),
            Ok(Ok(None)) => Ok(false),
            Ok(Ok(Some(chunk))) => {
                self.len += chunk.len() as u64;
                self.hasher.update(&chunk);
                Ok(true)
            }
        }
    }

    /// Reads until at least `bytes` arrived.
    async fn read_at_least(&mut self, bytes: u64) {
        while self.len < bytes {
            assert!(self.read().await.expect("the body arrives"), "the body ended at {} bytes", self.len);
        }
    }

    /// Reads the rest.
    async fn finish(mut self) -> Got {
        let broken = loop {
            match self.read().await {
                Ok(true) => {}
                Ok(false) => break None,
                Err(e) => break Some(e),
            }
        };
        Got {
            status: self.status,
            cache: self.cache,
            len: self.len,
            sha256: hex::encode(self.hasher.finalize()),
            broken,
        }
    }
}

async fn fetch(url: &str) -> Got {
    Download::start(url).await.finish().await
}

/// Asserts that `path` is a hit with the whole body of `len` bytes and digest
/// `sha256`, read from the store itself: by a fresh process on the same data
/// and configuration (a finished fill stays joinable for 2 s after its
/// commit, and a request that joins it is answered from its spool).
async fn assert_stored(proxy: &mut Binary, path: &str, len: u64, sha256: &str) {
    proxy.restart();
    let got = fetch(&proxy.url(&format!("/api/files{path}"))).await;
    assert_eq!((got.cache.as_str(), got.whole(len, sha256)), ("HIT", true), "{path}: {got:?}");
}

/// Polls `check` until it holds; fails the test after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many entries `GET /artifacts/files` counts; `None` when it cannot answer.
async fn entries(proxy: &Binary) -> Option<u64> {
    let res = client().get(proxy.url("/artifacts/files")).send().await.ok()?;
    if res.status() != 200 {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&res.bytes().await.ok()?).ok()?;
    json["count"].as_u64()
}

/// The first listed entry's `cached_at`.
async fn cached_at(proxy: &Binary) -> String {
    let res = client().get(proxy.url("/artifacts/files")).send().await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    json["items"][0]["cached_at"].as_str().unwrap().to_owned()
}

async fn status(proxy: &Binary, path: &str) -> u16 {
    let res = tokio::time::timeout(PATIENCE, client().get(proxy.url(path)).send()).await.expect("no hang");
    res.unwrap().status().as_u16()
}

/// The files in `DATA_DIR/tmp` (spool files of fills).
fn spool_files(proxy: &Binary) -> Vec<PathBuf> {
    std::fs::read_dir(proxy.data_dir().join("tmp"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect()
}

/// Every file under `DATA_DIR/blobs`.
fn blob_files(proxy: &Binary) -> Vec<PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&proxy.data_dir().join("blobs"), &mut out);
    out
}

fn logged(proxy: &Binary, text: &str) -> bool {
    tokio::task::block_in_place(|| proxy.wait_for_log(text, PATIENCE))
}

/// Waits until the fill of `path` (as requested, with its leading `/`) has
/// given up storing its body. Store calls retry, so a backend must stay
/// down until then, or a retry may still succeed once it is back.
fn not_stored(proxy: &Binary, path: &str) {
    let line = format!("could not store a complete body; served uncached remote=files path={}", &path[1..]);
    assert!(logged(proxy, &line), "the failed commit of {path} is logged");
}

/// Whether `GET /artifacts/files` lists `path` (as requested).
async fn listed(proxy: &Binary, path: &str) -> bool {
    let Ok(res) = client().get(proxy.url("/artifacts/files")).send().await else { return false };
    let Ok(bytes) = res.bytes().await else { return false };
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    json["items"].as_array().is_some_and(|items| items.iter().any(|i| i["path"] == path[1..]))
}

/// The environment for S3 on `s3_endpoint` (Garage itself or a gate in front
/// of it) and the index in `db`.
fn s3_env(garage: &Garage, s3_endpoint: &str, bucket: &str, db: &PgDatabase) -> Vec<(String, String)> {
    let mut env = garage.env(bucket);
    env.retain(|(k, _)| k != "MINIO_ENDPOINT");
    env.push(("MINIO_ENDPOINT".into(), s3_endpoint.into()));
    env.push(("DATABASE_URL".into(), db.url()));
    env
}

/// Unfinished multipart uploads in `bucket`, asked of Garage directly.
async fn unfinished_uploads(garage: &Garage, bucket: &str) -> usize {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&garage.endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(&garage.access_key, &garage.secret_key, None, None, "test"))
        .force_path_style(true)
        .build();
    let page = aws_sdk_s3::Client::from_conf(conf)
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("Garage lists unfinished uploads");
    page.uploads().len()
}

/// A TCP relay in front of Garage's S3 port that forwards everything until
/// told to hold: then it forwards requests only up to a byte count and
/// stops reading from the proxy there, so that an upload is surely half way
/// when Garage is stopped (answers always flow). When Garage goes, each
/// relayed connection is closed.
struct S3Gate {
    addr: SocketAddr,
    /// Request bytes forwarded to Garage so far, over every connection.
    sent: Arc<AtomicU64>,
    /// Forward requests up to this many bytes in all.
    hold_at: Arc<AtomicU64>,
    /// Set once a request was held.
    holding: Arc<AtomicBool>,
}

impl S3Gate {
    async fn start(endpoint: &str) -> Self {
        let target: SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gate = Self {
            addr: listener.local_addr().unwrap(),
            sent: Arc::default(),
            hold_at: Arc::new(AtomicU64::new(u64::MAX)),
            holding: Arc::default(),
        };
        let (sent, hold_at, holding) = (gate.sent.clone(), gate.hold_at.clone(), gate.holding.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                let (sent, hold_at, holding) = (sent.clone(), hold_at.clone(), holding.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else { return };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = from_client.read(&mut buf).await?;
                            if n == 0 {
                                return to_server.shutdown().await;
                            }
                            let mut at = 0;
                            while at < n {
                                let now = sent.load(Ordering::SeqCst);
                                let limit = hold_at.load(Ordering::SeqCst);
                                if now >= limit {
                                    holding.store(true, Ordering::SeqCst);
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                    continue;
                                }
                                let take = ((limit - now) as usize).min(n - at);
                                to_server.write_all(&buf[at..at + take]).await?;
                                sent.fetch_add(take as u64, Ordering::SeqCst);
                                at += take;
                            }
                        }
                    };
                    let down = tokio::io::copy(&mut from_server, &mut to_client);
                    tokio::pin!(up, down);
                    tokio::select! {
                        _ = &mut down => {}
                        r = &mut up => {
                            let _: std::io::Result<()> = r;
                            let _ = down.await;
                        }
                    }
                });
            }
        });
        gate
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Forwards `bytes` more request bytes, then holds.
    fn hold_after(&self, bytes: u64) {
        self.hold_at.store(self.sent.load(Ordering::SeqCst) + bytes, Ordering::SeqCst);
    }

    fn holding(&self) -> bool {
        self.holding.load(Ordering::SeqCst)
    }

    /// Forwards everything again.
    fn release(&self) {
        self.hold_at.store(u64::MAX, Ordering::SeqCst);
    }
}

/// S3 stopped while a miss is still arriving from upstream (so the upload
/// that follows meets a dead S3): the client still gets the whole body from
/// the spool, nothing is cached or left in the spool, a miss during the
/// outage passes through, and once S3 is back the next request fetches and
/// caches the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stopped_while_a_miss_arrives_serves_it_whole_caches_nothing_and_refetches_after() {
    let upstream = Upstream::start().await;
    let mut garage = Garage::start();
    let db = PgDatabase::create();
    let bucket = format!("faults-{}", unique());
    let mut proxy = Binary::start(CONFIG, &upstream.url(), &s3_env(&garage, &garage.endpoint, &bucket, &db));

    // 32 MiB in 512 pieces, one every 10 ms: at least 5 s on the wire.
    let path = "/slow/512/10/s3-stopped.bin";
    let len = 512 * 64 * 1024;
    let expected = large_sha256(len);
    let url = proxy.url(&format!("/api/files{path}"));
    let mut download = Download::start(&url).await;
    assert_eq!((download.status, download.cache.as_str()), (200, "MISS"));
    download.read_at_least(MIB).await;
    garage.stop();
    assert_eq!(upstream.finished(path), 0, "S3 was stopped while the body was still arriving");

    let got = download.finish().await;
    assert!(got.whole(len, &expected), "the client gets the whole body, from the spool: {got:?}");
    not_stored(&proxy, path);
    eventually("the spool file is removed", || async { spool_files(&proxy).is_empty() }).await;
    assert_eq!(entries(&proxy).await, Some(0), "nothing is cached");
    assert_eq!(status(&proxy, "/ready").await, 503, "not ready while S3 is down");
    assert_eq!(status(&proxy, "/health").await, 200, "alive while S3 is down");

    // A miss while S3 is down passes through, uncached.
    upstream.put("/during/outage.txt", "outage bytes", &[]);
    let res = client().get(proxy.url("/api/files/during/outage.txt")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-cache-status"], "MISS");
    assert_eq!(res.text().await.unwrap(), "outage bytes");
    not_stored(&proxy, "/during/outage.txt");

    garage.restart();
    eventually("ready once S3 is back", || async { status(&proxy, "/ready").await == 200 }).await;
    assert_eq!(entries(&proxy).await, Some(0), "nothing half-written appeared");
    let got = fetch(&url).await;
    assert!(got.whole(len, &expected), "{got:?}");
    assert_eq!(got.cache, "MISS");
    assert_eq!(upstream.count("GET", path), 2, "fetched again");
    eventually("the body is committed", || async { listed(&proxy, path).await }).await;
    assert_eq!(entries(&proxy).await, Some(1));
    assert_stored(&mut proxy, path, len, &expected).await;
    assert_eq!(upstream.count("GET", path), 2);
    assert!(spool_files(&proxy).is_empty(), "{:?}", spool_files(&proxy));
}

/// S3 stopped half way through a fill's multipart upload, while its client
/// is still reading: the client reads the whole body (the spool outlives the
/// failed commit), nothing is cached, the unfinished upload Garage keeps is
/// aborted by the clean-up once S3 is back, and the next request fetches and
/// caches the body.
/// A proxy on S3 (through a gate that can hold an upload) + PostgreSQL, with
/// a clean-up every second that aborts uploads older than 15 s (an upload of
/// these tests' 40 MiB takes well under that).
struct Held {
    upstream: Upstream,
    garage: Garage,
    gate: S3Gate,
    db: PgDatabase,
    bucket: String,
    proxy: Binary,
}

async fn held_upload_setup() -> Held {
    let upstream = Upstream::start().await;
    let garage = Garage::start();
    let gate = S3Gate::start(&garage.endpoint).await;
    let db = PgDatabase::create();
    let bucket = format!("faults-{}", unique());
    let mut env = s3_env(&garage, &gate.url(), &bucket, &db);
    env.push(("CLEANUP_INTERVAL".into(), "1".into()));
    env.push(("CLEANUP_GRACE".into(), "15".into()));
    let proxy = Binary::start(CONFIG, &upstream.url(), &env);
    Held { upstream, garage, gate, db, bucket, proxy }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stopped_mid_upload_leaves_no_entry_no_spool_and_no_unfinished_upload() {
    let Held { upstream, mut garage, gate, db: _db, bucket, mut proxy } = held_upload_setup().await;

    // 40 MiB: three parts of an upload (16 + 16 + 8 MiB); the second is held
    // half way.
    let len = 40 * MIB;
    let path = format!("/large/{len}/mid-upload.bin");
    let expected = large_sha256(len);
    let url = proxy.url(&format!("/api/files{path}"));
    gate.hold_after(24 * MIB);
    let mut download = Download::start(&url).await;
    assert_eq!((download.status, download.cache.as_str()), (200, "MISS"));
    // A slow client: it stops reading here while the fill spools and uploads.
    download.read_at_least(MIB).await;
    eventually("the upload is half way", || async { gate.holding() }).await;
    garage.stop();
    not_stored(&proxy, &path);

    let got = download.finish().await;
    assert!(got.whole(len, &expected), "the slow client still reads the whole body: {got:?}");
    eventually("the spool file is removed", || async { spool_files(&proxy).is_empty() }).await;
    assert_eq!(entries(&proxy).await, Some(0), "nothing is cached");

    // Back, while the gate still keeps the proxy from S3: the upload the
    // proxy could not abort is there...
    garage.restart();
    assert!(unfinished_uploads(&garage, &bucket).await >= 1, "Garage kept the unfinished upload");
    // ...and the clean-up aborts it once the proxy reaches S3 again.
    gate.release();
    eventually("the unfinished upload is aborted", || async {
        unfinished_uploads(&garage, &bucket).await == 0
    })
    .await;
    assert_eq!(entries(&proxy).await, Some(0));

    let got = fetch(&url).await;
    assert!(got.whole(len, &expected), "{got:?}");
    assert_eq!(got.cache, "MISS");
    assert_eq!(upstream.count("GET", &path), 2, "fetched again");
    eventually("the body is committed", || async { entries(&proxy).await == Some(1) }).await;
    assert_stored(&mut proxy, &path, len, &expected).await;
    assert_eq!(upstream.count("GET", &path), 2);
}

/// S3 stopped while a hit is being read from it: the client's transfer
/// breaks off (no hang, no short body that looks complete); a request during
/// the outage is answered from upstream, uncached; the entry is kept and is
/// a hit with the right bytes once S3 is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stopped_during_a_hit_breaks_the_transfer_and_keeps_the_entry() {
    let upstream = Upstream::start().await;
    let mut garage = Garage::start();
    let db = PgDatabase::create();
    let bucket = format!("faults-{}", unique());
    let mut proxy = Binary::start(CONFIG, &upstream.url(), &s3_env(&garage, &garage.endpoint, &bucket, &db));

    // Far more than the socket buffers between S3, the proxy and the client.
    let len = 64 * MIB;
    let path = format!("/large/{len}/hit.bin");
    let expected = large_sha256(len);
    let url = proxy.url(&format!("/api/files{path}"));
    let got = fetch(&url).await;
    assert_eq!((got.cache.as_str(), got.whole(len, &expected)), ("MISS", true), "{got:?}");
    eventually("the body is committed", || async { entries(&proxy).await == Some(1) }).await;
    let stored_at = cached_at(&proxy).await;
    // A finished fill stays joinable for 2 s after its commit, answering from
    // its spool: a fresh process (same data) has nothing but S3 to read from.
    proxy.restart();
    let url = proxy.url(&format!("/api/files{path}"));

    let mut download = Download::start(&url).await;
    assert_eq!((download.status, download.cache.as_str()), (200, "HIT"));
    download.read_at_least(MIB).await;
    garage.stop();
    let got = download.finish().await;
    let broken = got.broken.as_deref().unwrap_or_else(|| panic!("the transfer must break off: {got:?}"));
    assert!(got.len < len, "{got:?}");
    println!("the hit broke off after {} of {len} bytes: {broken}", got.len);

    // During the outage: the entry's bytes cannot be read; upstream answers,
    // and nothing is stored (S3 is down).
    let got = fetch(&url).await;
    assert_eq!((got.cache.as_str(), got.whole(len, &expected)), ("MISS", true), "{got:?}");
    assert_eq!(upstream.count("GET", &path), 2);
    assert!(logged(&proxy, "cannot read a cached blob; fetching from upstream"));
    not_stored(&proxy, &path);

    garage.restart();
    eventually("ready once S3 is back", || async { status(&proxy, "/ready").await == 200 }).await;
    let got = fetch(&url).await;
    assert_eq!((got.cache.as_str(), got.whole(len, &expected)), ("HIT", true), "{got:?}");
    assert_eq!(upstream.count("GET", &path), 2, "a hit again, not fetched again");
    assert_eq!(entries(&proxy).await, Some(1));
    assert_eq!(cached_at(&proxy).await, stored_at, "the entry is the one stored before the outage");
    assert!(spool_files(&proxy).is_empty(), "{:?}", spool_files(&proxy));
}

/// A private PostgreSQL stopped and started again under a running proxy:
/// during the outage hot entries are still hits, misses pass through
/// uncached (small and large), `/ready` says 503 and `/health` 200; nothing
/// is left half-written; after the restart the pool reconnects by itself: a
/// miss is cached, then a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_passes_misses_through_and_recovers_without_a_proxy_restart() {
    let upstream = Upstream::start().await;
    let mut pg = PrivatePostgres::start();
    let mut proxy = Binary::start(CONFIG, &upstream.url(), &[("DATABASE_URL".into(), pg.url())]);
    upstream.put("/rel/hot.tgz", "hot bytes", &[]);
    upstream.put("/rel/cold.tgz", "cold bytes", &[]);
    let get = |path: &'static str| {
        let url = proxy.url(&format!("/api/files{path}"));
        async move {
            let res =
                tokio::time::timeout(PATIENCE, client().get(&url).send()).await.expect("no hang").unwrap();
            let cache = res.headers().get("x-cache-status").map(|v| v.to_str().unwrap().to_owned());
            (res.status().as_u16(), cache.unwrap_or_default(), res.text().await.unwrap())
        }
    };
    assert_eq!(get("/rel/hot.tgz").await, (200, "MISS".into(), "hot bytes".into()));
    assert_eq!(get("/rel/hot.tgz").await, (200, "HIT".into(), "hot bytes".into()));
    // The row lands just after the last byte (the HIT may have joined the
    // finished fill before its commit).
    eventually("the entry is committed", || async { entries(&proxy).await == Some(1) }).await;

    pg.stop();
    assert_eq!(get("/rel/hot.tgz").await, (200, "HIT".into(), "hot bytes".into()), "hot entries still hit");
    assert_eq!(
        get("/rel/cold.tgz").await,
        (200, "MISS".into(), "cold bytes".into()),
        "a miss passes through"
    );
    let len = 32 * MIB;
    let big = format!("/large/{len}/big.bin");
    let expected = large_sha256(len);
    let got = fetch(&proxy.url(&format!("/api/files{big}"))).await;
    assert_eq!((got.cache.as_str(), got.whole(len, &expected)), ("MISS", true), "{got:?}");
    assert_eq!(status(&proxy, "/ready").await, 503, "not ready without the index");
    assert_eq!(status(&proxy, "/health").await, 200, "alive without the index");
    assert_eq!(status(&proxy, "/artifacts/files").await, 503, "the listing says the index is unavailable");
    // The bytes of the misses were written, then removed when their rows could not be.
    not_stored(&proxy, "/rel/cold.tgz");
    not_stored(&proxy, &big);
    assert_eq!(blob_files(&proxy).len(), 1, "no blob without its row");
    eventually("no spool file left", || async { spool_files(&proxy).is_empty() }).await;

    pg.restart();
    eventually("ready again without a proxy restart", || async { status(&proxy, "/ready").await == 200 })
        .await;
    assert_eq!(entries(&proxy).await, Some(1), "only the entry stored before the outage");
    assert_eq!(get("/rel/cold.tgz").await, (200, "MISS".into(), "cold bytes".into()));
    assert_eq!(get("/rel/cold.tgz").await, (200, "HIT".into(), "cold bytes".into()));
    let got = fetch(&proxy.url(&format!("/api/files{big}"))).await;
    assert_eq!((got.cache.as_str(), got.whole(len, &expected)), ("MISS", true), "{got:?}");
    eventually("the large body is committed", || async { listed(&proxy, &big).await }).await;
    assert_eq!(entries(&proxy).await, Some(3));
    assert_eq!(get("/rel/hot.tgz").await.1, "HIT");
    assert_eq!(upstream.count("GET", "/rel/hot.tgz"), 1);
    assert_eq!(upstream.count("GET", "/rel/cold.tgz"), 2);
    assert_eq!(blob_files(&proxy).len(), 3, "one blob per entry");
    assert_stored(&mut proxy, &big, len, &expected).await;
    assert_eq!(upstream.count("GET", &big), 2);
}

/// PostgreSQL cut off (issue 39): a relay in front of it resets every
/// connection and refuses new ones. A refused connection is known at once,
/// so the index circuit opens on it: from the first second no request waits
/// for the pool's 5 s acquire timeout. A miss at the cut, one 1.5 s after
/// it and every later one until the database is back is served from
/// upstream, uncached, in about what it takes with the database up; a hot
/// hit is served from memory; `/ready` says 503 with the circuit's state.
/// Within seconds of the relay's return the circuit closes and a miss is
/// cached again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_cut_opens_the_index_circuit_so_no_request_waits_for_the_pool() {
    let upstream = Upstream::start().await;
    let db = PgDatabase::create();
    let relay = TcpRelay::start("127.0.0.1:5432").await;
    let url = format!("postgres://postgres@127.0.0.1:{}/{}", relay.port, db.name);
    let proxy = Binary::start(CONFIG, &upstream.url(), &[("DATABASE_URL".into(), url)]);
    for name in ["hot", "a", "c", "b0", "b1", "b2", "b3", "b4", "b5", "b6"] {
        upstream.put(&format!("/rel/{name}.tgz"), format!("{name} bytes"), &[]);
    }
    let timed = |path: String| {
        let url = proxy.url(&format!("/api/files{path}"));
        async move {
            let started = Instant::now();
            let res = client().get(&url).send().await.unwrap();
            let cache = res.headers().get("x-cache-status").map(|v| v.to_str().unwrap().to_owned());
            let body = res.text().await.unwrap();
            (started.elapsed(), cache.unwrap_or_default(), body)
        }
    };
    let (miss_up, cache, _) = timed("/rel/a.tgz".into()).await;
    assert_eq!(cache, "MISS");
    timed("/rel/hot.tgz".into()).await;
    eventually("the entries are committed", || async { entries(&proxy).await == Some(2) }).await;
    let (hit_up, cache, _) = timed("/rel/hot.tgz".into()).await;
    assert_eq!(cache, "HIT");

    relay.cut().await;
    let cut = Instant::now();
    // A miss at once, one 1.5 s after the cut, then one every 300 ms.
    let mut misses = Vec::new();
    for (i, at) in [0, 1500, 1800, 2100, 2400, 2700, 3000].into_iter().enumerate() {
        tokio::time::sleep_until((cut + Duration::from_millis(at)).into()).await;
        let name = format!("b{i}");
        let (took, cache, body) = timed(format!("/rel/{name}.tgz")).await;
        assert_eq!((cache.as_str(), body), ("MISS", format!("{name} bytes")), "a miss {at} ms after the cut");
        misses.push((at, took));
    }
    let (hit_cut, cache, body) = timed("/rel/hot.tgz".into()).await;
    assert_eq!((cache.as_str(), body.as_str()), ("HIT", "hot bytes"));
    println!(
        "miss {miss_up:?} and hot hit {hit_up:?} up; cut: misses (ms after the cut, time taken) {misses:?}, \
         hot hit {hit_cut:?}"
    );
    // The pool's acquire timeout is 5 s: none waited for it, nor for a
    // second failure (a miss takes tens of milliseconds here; the bound
    // leaves room for a loaded machine).
    for (at, took) in &misses {
        assert!(*took < Duration::from_secs(1), "a miss {at} ms after the cut took {took:?}");
    }
    assert!(hit_cut < Duration::from_secs(1), "a hot hit took {hit_cut:?} while the database was cut");
    assert!(proxy.wait_for_log("circuit open", Duration::from_secs(10)), "the circuit opened");
    assert_eq!(metric(&proxy, "artifactapi_index_circuit_open").await, 1);
    let res = client().get(proxy.url("/ready")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let ready: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let state = ready["backends"]["index"]["state"].as_str().unwrap_or_default().to_owned();
    assert!(state.contains("circuit open") && state.contains("refused"), "opened on the refusal: {ready}");
    not_stored(&proxy, "/rel/b1.tgz");

    relay.restore().await;
    let back = Instant::now();
    eventually("the circuit to close", || async { status(&proxy, "/ready").await == 200 }).await;
    println!("circuit closed {:?} after the database returned", back.elapsed());
    assert_eq!(timed("/rel/c.tgz".into()).await.1, "MISS");
    eventually("the next miss is cached again", || async { listed(&proxy, "/rel/c.tgz").await }).await;
    assert_eq!(timed("/rel/c.tgz".into()).await.1, "HIT");
    assert_eq!(metric(&proxy, "artifactapi_index_circuit_opened_total").await, 1);
}

async fn metric(proxy: &Binary, name: &str) -> u64 {
    let text = client().get(proxy.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
}

/// How many EXISTS commands Redis has run (the lease checks of a replica
/// waiting for another's fill).
fn redis_exists_calls(redis: &PrivateRedis) -> u64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "INFO", "commandstats"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_exists:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Redis restarted (its data lost) while one replica's fill holds the
/// key's lease and another replica waits for that fill: the waiter does not
/// wait for a lease that is gone — it fetches itself — both clients get the
/// whole body, one entry is cached and is a hit on both, and coordination
/// works again (a cold burst over both replicas is one upstream request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_while_a_fill_holds_its_lease_neither_hangs_nor_corrupts() {
    let upstream = Upstream::start().await;
    let garage = Garage::start();
    let db = PgDatabase::create();
    let mut redis = PrivateRedis::start();
    let mut env = s3_env(&garage, &garage.endpoint, &format!("faults-{}", unique()), &db);
    env.push(("REDIS_URL".into(), redis.url()));
    let a = Binary::start(CONFIG, &upstream.url(), &env);
    let b = Binary::start(CONFIG, &upstream.url(), &env);

    // 12.5 MiB in 200 pieces, one every 50 ms: at least 10 s.
    let path = "/slow/200/50/leased.bin";
    let len = 200 * 64 * 1024;
    let expected = large_sha256(len);
    let first = tokio::spawn(fetch_owned(a.url(&format!("/api/files{path}"))));
    eventually("replica a fetches", || async { upstream.count("GET", path) == 1 }).await;
    let checks = redis_exists_calls(&redis);
    let second = tokio::spawn(fetch_owned(b.url(&format!("/api/files{path}"))));
    eventually("replica b waits for a's lease", || async { redis_exists_calls(&redis) > checks }).await;
    assert_eq!(upstream.count("GET", path), 1, "b waits instead of fetching");

    redis.restart();
    assert_eq!(upstream.finished(path), 0, "Redis restarted while a's fill was still running");
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert!(first.whole(len, &expected), "{first:?}");
    assert!(second.whole(len, &expected), "{second:?}");
    assert_eq!(upstream.count("GET", path), 2, "with the lease gone, b fetched itself (once)");

    // Both fills commit (the later one replaces the other's entry): one
    // entry, a hit with the right bytes for a replica that starts now.
    eventually("both fills are done", || async {
        fills_in_flight(&a).await == Some(0) && fills_in_flight(&b).await == Some(0)
    })
    .await;
    assert_eq!(entries(&a).await, Some(1));
    let c = Binary::start(CONFIG, &upstream.url(), &env);
    let got = fetch(&c.url(&format!("/api/files{path}"))).await;
    assert_eq!((got.cache.as_str(), got.whole(len, &expected)), ("HIT", true), "{got:?}");
    assert_eq!(upstream.count("GET", path), 2);

    // Coordination works again: a cold burst over both replicas, one fetch.
    let burst = "/slow/16/50/after-restart.bin";
    let blen = 16 * 64 * 1024;
    let bsha = large_sha256(blen);
    let clients: Vec<_> = (0..6)
        .map(|i| tokio::spawn(fetch_owned([&a, &b][i % 2].url(&format!("/api/files{burst}")))))
        .collect();
    for c in clients {
        let got = c.await.unwrap();
        assert!(got.whole(blen, &bsha), "{got:?}");
    }
    assert_eq!(upstream.count("GET", burst), 1, "coordination resumed after the restart");
}

/// `artifactapi_fills_in_flight` of `proxy` (fills fetching or committing).
async fn fills_in_flight(proxy: &Binary) -> Option<u64> {
    let text = client().get(proxy.url("/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("artifactapi_fills_in_flight "))
        .and_then(|v| v.trim().parse().ok())
}

async fn fetch_owned(url: String) -> Got {
    fetch(&url).await
}

/// The proxy killed with SIGKILL mid-download on the embedded default (files
/// and SQLite) and started again on the same `DATA_DIR` and configuration:
/// the client's transfer broke off, the killed run's spool file is removed
/// at start-up, no entry or blob exists for the path, and the next request
/// fetches and caches the whole body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_download_on_the_embedded_store_restarts_clean_and_refetches() {
    let upstream = Upstream::start().await;
    let env = [("CLEANUP_INTERVAL", "1"), ("CLEANUP_GRACE", "1")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    let mut proxy = Binary::start(CONFIG, &upstream.url(), &env);

    // 32 MiB in 512 pieces, one every 10 ms: at least 5 s.
    let path = "/slow/512/10/killed.bin";
    let len = 512 * 64 * 1024;
    let expected = large_sha256(len);
    let mut download = Download::start(&proxy.url(&format!("/api/files{path}"))).await;
    assert_eq!((download.status, download.cache.as_str()), (200, "MISS"));
    download.read_at_least(MIB).await;
    proxy.kill();
    assert_eq!(upstream.finished(path), 0, "killed while the body was still arriving");
    let got = download.finish().await;
    assert!(got.broken.is_some() && got.len < len, "the transfer breaks off: {got:?}");
    assert!(!spool_files(&proxy).is_empty(), "the killed run left its spool file");
    assert!(blob_files(&proxy).is_empty(), "{:?}", blob_files(&proxy));

    proxy.restart();
    assert!(spool_files(&proxy).is_empty(), "removed at start-up: {:?}", spool_files(&proxy));
    assert_eq!(entries(&proxy).await, Some(0), "no entry for the interrupted path");
    assert!(blob_files(&proxy).is_empty(), "no partial blob: {:?}", blob_files(&proxy));

    let url = proxy.url(&format!("/api/files{path}"));
    let got = fetch(&url).await;
    assert_eq!((got.cache.as_str(), got.whole(len, &expected)), ("MISS", true), "{got:?}");
    assert_eq!(upstream.count("GET", path), 2, "fetched again");
    eventually("the body is committed", || async { entries(&proxy).await == Some(1) }).await;
    assert_stored(&mut proxy, path, len, &expected).await;
    assert_eq!(upstream.count("GET", path), 2);
    assert_eq!(blob_files(&proxy).len(), 1);
    assert!(spool_files(&proxy).is_empty(), "{:?}", spool_files(&proxy));
}

/// The proxy killed with SIGKILL half way through a fill's upload to S3
/// (index in PostgreSQL) and started again: no entry, the spool file is
/// removed at start-up, the unfinished upload is aborted by the clean-up,
/// and the next request fetches and caches the whole body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_upload_on_s3_and_postgresql_restarts_clean_and_refetches() {
    let Held { upstream, garage, gate, db: _db, bucket, mut proxy } = held_upload_setup().await;

    let len = 40 * MIB;
    let path = format!("/large/{len}/killed-uploading.bin");
    let expected = large_sha256(len);
    gate.hold_after(24 * MIB);
    let got = fetch(&proxy.url(&format!("/api/files{path}"))).await;
    assert_eq!((got.cache.as_str(), got.whole(len, &expected)), ("MISS", true), "{got:?}");
    eventually("the upload is half way", || async { gate.holding() }).await;
    proxy.kill();
    assert!(!spool_files(&proxy).is_empty(), "the killed run left its spool file");
    assert!(unfinished_uploads(&garage, &bucket).await >= 1, "the killed run left an unfinished upload");

    gate.release();
    proxy.restart();
    assert!(spool_files(&proxy).is_empty(), "removed at start-up: {:?}", spool_files(&proxy));
    assert_eq!(entries(&proxy).await, Some(0), "no entry for the interrupted path");
    eventually("the unfinished upload is aborted", || async {
        unfinished_uploads(&garage, &bucket).await == 0
    })
    .await;

    let url = proxy.url(&format!("/api/files{path}"));
    let got = fetch(&url).await;
    assert_eq!((got.cache.as_str(), got.whole(len, &expected)), ("MISS", true), "{got:?}");
    assert_eq!(upstream.count("GET", &path), 2, "fetched again");
    eventually("the body is committed", || async { entries(&proxy).await == Some(1) }).await;
    assert_stored(&mut proxy, &path, len, &expected).await;
    assert_eq!(upstream.count("GET", &path), 2);
}
