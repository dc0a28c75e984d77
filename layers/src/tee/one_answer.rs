//! One entry, one answer (issue 39): a header the format decides from the
//! whole body (the RubyGems MD5 `ETag`) is decided once, at commit, and the
//! same head answers every path an entry is served by; and eviction takes
//! the entry read least recently however long a commit takes.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use md5::{Digest, Md5};
use tower::{service_fn, util::BoxCloneService, ServiceBuilder, ServiceExt};

use crate::{
    body,
    error::BoxError,
    format::BUILTIN,
    path::ArtifactPath,
    store::{
        evict,
        hot::HotIndex,
        memory::{MemoryBlobs, MemoryIndex},
        now_ms, BlobList, BlobStore, BlobStream, Budget, Index, Store, StoreError,
    },
    CacheLookupLayer, CacheStatus, Classifier, Package, PatternGuardLayer, Remote, RemoteResolveLayer,
    Remotes, RevalidateLayer, S3TeeLayer,
};

/// An answer as the walk notes it: which path, the cache status, the `ETag`.
type Seen = (&'static str, String, Option<String>);

type Svc = BoxCloneService<Request<()>, Response<body::ArtifactBody>, BoxError>;

/// What upstream was asked: method, path, and the `If-None-Match` sent.
type Asked = Arc<Mutex<Vec<(Method, String, Option<String>)>>>;

/// A static upstream (nginx-like): every file has the same bytes and
/// upstream's own `ETag`; a request with that `ETag` gets 304, which carries
/// it again.
fn upstream(bytes: &'static str, asked: Asked) -> Svc {
    BoxCloneService::new(service_fn(move |req: Request<()>| {
        let inm = req.headers().get(header::IF_NONE_MATCH).map(|v| v.to_str().unwrap().to_owned());
        // The path under the remote, as an upstream service reads it.
        let path =
            req.extensions().get::<ArtifactPath>().map(|p| format!("/{}", p.display())).unwrap_or_default();
        asked.lock().unwrap().push((req.method().clone(), path, inm.clone()));
        async move {
            let res = Response::builder()
                .header(header::ETAG, "\"upstream-1\"")
                .header(header::LAST_MODIFIED, "Mon, 07 Dec 2026 10:00:00 GMT");
            let res = match inm.as_deref() == Some("\"upstream-1\"") {
                true => res.status(StatusCode::NOT_MODIFIED).body(body::empty()),
                false => res.header(header::CONTENT_LENGTH, bytes.len()).body(body::full(bytes)),
            };
            Ok::<_, BoxError>(res.unwrap())
        }
    }))
}

struct Stack {
    svc: Svc,
    tee: S3TeeLayer,
    store: Store,
    asked: Asked,
    _spool: tempfile::TempDir,
}

/// The cache's stack for one remote of `package`, on a memory store with
/// a memory copy of hot entries in front; finished fills linger for
/// `linger`.
fn stack(package: Package, bytes: &'static str, linger: Duration) -> Stack {
    stack_on(package, bytes, linger, Arc::new(MemoryBlobs::new()))
}

/// [`stack`] on `blobs`.
fn stack_on(package: Package, bytes: &'static str, linger: Duration, blobs: Arc<dyn BlobStore>) -> Stack {
    let mut remote = Remote::proxy("r", "http://127.0.0.1:9".parse().unwrap());
    remote.package = package;
    remote.classifier = Classifier::new(None, vec![], package);
    remote.ttl.mutable = Duration::from_secs(3600);
    let index: Arc<dyn Index> = Arc::new(HotIndex::new(Arc::new(MemoryIndex::new()), 64));
    let store = Store::new(index, blobs);
    let spool = tempfile::tempdir().unwrap();
    let tee = S3TeeLayer::new(store.clone(), spool.path()).linger(linger);
    let asked = Asked::default();
    let svc = ServiceBuilder::new()
        .layer(RemoteResolveLayer::new(Arc::new(Remotes::new([remote]))))
        .layer(PatternGuardLayer::new())
        .layer(CacheLookupLayer::new(store.clone()))
        .layer(RevalidateLayer::new(store.clone()))
        .layer(tee.clone())
        .service(upstream(bytes, asked.clone()));
    Stack { svc: BoxCloneService::new(svc), tee, store, asked, _spool: spool }
}

impl Stack {
    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> (Response<()>, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(format!("/r/{path}"));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = self.svc.clone().oneshot(req.body(()).unwrap()).await.unwrap();
        let (mut parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes().to_vec();
        // The status the extension tells, as a header to read alongside.
        if let Some(status) = parts.extensions.get::<CacheStatus>() {
            parts.headers.insert("x-test-status", format!("{status:?}").parse().unwrap());
        }
        (Response::from_parts(parts, ()), bytes)
    }

    async fn committed(&self, path: &str) {
        let key = ArtifactPath::parse(path, None).unwrap().cache_key("r");
        for _ in 0..2000 {
            if self.store.index.get(&key).await.unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{path} was never committed");
    }

    /// A GET, a HEAD and a `Range` of `path`, noted in `seen` under `names`
    /// with the cache status and `ETag` of each answer.
    async fn get_head_and_range(&self, path: &str, names: [&'static str; 3], seen: &mut Vec<Seen>) {
        let asks = [(Method::GET, None), (Method::HEAD, None), (Method::GET, Some("bytes=4-"))];
        for (name, (method, range)) in names.into_iter().zip(asks) {
            let headers: Vec<_> = range.map(|r| ("range", r)).into_iter().collect();
            let (res, _) = self.send(method, path, &headers).await;
            seen.push((name, status_of(&res).to_owned(), etag_of(&res).map(str::to_owned)));
        }
    }

    fn upstream_gets(&self, path: &str) -> usize {
        self.asked.lock().unwrap().iter().filter(|(m, p, _)| m == Method::GET && p == path).count()
    }
}

fn etag_of(res: &Response<()>) -> Option<&str> {
    res.headers().get(header::ETAG).map(|v| v.to_str().unwrap())
}

fn status_of(res: &Response<()>) -> &str {
    res.headers().get("x-test-status").map(|v| v.to_str().unwrap()).unwrap_or("none")
}

/// Paths of every kind the built-in formats serve: the walk below runs for
/// each that a format decides a header of.
const PATHS: &[&str] = &[
    "versions",
    "names",
    "info/my-gem",
    "gems/my-gem-1.0.0.gem",
    "quick/Marshal.4.8/my-gem-1.0.0.gemspec.rz",
    "simple/pkg/",
    "pkg",
    "pkg/-/pkg-1.0.0.tgz",
    "dists/stable/Release",
    "index.yaml",
    "config.json",
    "my/mod/@v/list",
    "v1.0/tool.tgz",
];

/// Every path an entry is answered by gives the same head: the miss, the
/// finished fill (GET, HEAD, Range), the store with its memory copy (GET,
/// HEAD, Range, a client's `If-None-Match`), the revalidated entry (twice),
/// and a HEAD that misses. Upstream's own `ETag` stays the validator sent
/// when revalidating.
#[tokio::test]
async fn a_header_the_format_decides_is_the_same_on_every_path() {
    const BYTES: &str = "---\n1.0.0 |checksum:abc\n1.1.0 |checksum:def\n";
    let md5 = format!("\"{}\"", hex::encode(Md5::digest(BYTES)));
    let mut walked = 0;
    for format in BUILTIN.iter().copied() {
        for &path in PATHS {
            let artifact = ArtifactPath::parse(path, None).unwrap();
            if !format.freshness().is_some_and(|f| f.etag_is_md5_of_body(&artifact)) {
                continue;
            }
            walked += 1;
            let what = format!("{} {path}", format.name());
            let stack = stack(Package::new(format), BYTES, Duration::from_secs(3600));
            let mut seen = Vec::new();
            // The miss, then the finished fill (it lingers an hour here).
            let (res, got) = stack.send(Method::GET, path, &[]).await;
            assert_eq!(got, BYTES.as_bytes(), "{what}");
            seen.push(("miss", status_of(&res).to_owned(), etag_of(&res).map(str::to_owned)));
            stack.get_head_and_range(path, ["fill", "fill HEAD", "fill range"], &mut seen).await;
            assert_eq!(stack.upstream_gets(&format!("/{path}")), 1, "{what}: the fill answered");
            // The store, and its memory copy.
            stack.committed(path).await;
            stack.tee.forget_all(None);
            stack.get_head_and_range(path, ["store", "store HEAD", "store range"], &mut seen).await;
            let (res, _) = stack.send(Method::GET, path, &[("if-none-match", md5.as_str())]).await;
            assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{what}: the client's copy is current");
            assert_eq!(stack.upstream_gets(&format!("/{path}")), 1, "{what}: the store answered");
            // Out of date: upstream answers 304, twice.
            for round in ["revalidated", "revalidated again"] {
                stack.store.index.flush(None, false, now_ms()).await.unwrap();
                let (res, got) = stack.send(Method::GET, path, &[]).await;
                assert_eq!(got, BYTES.as_bytes(), "{what}");
                seen.push((round, status_of(&res).to_owned(), etag_of(&res).map(str::to_owned)));
            }
            let asked = stack.asked.lock().unwrap().clone();
            let validators: Vec<_> = asked.iter().skip(1).map(|(_, _, inm)| inm.as_deref()).collect();
            assert_eq!(
                validators,
                [Some("\"upstream-1\""); 2],
                "{what}: upstream's own ETag is the validator, after a 304 too"
            );
            // A HEAD that misses (a cache of its own) is answered from a
            // GET's fill.
            let cold = self::stack(Package::new(format), BYTES, Duration::from_secs(3600));
            let (res, _) = cold.send(Method::HEAD, path, &[]).await;
            seen.push(("HEAD miss", status_of(&res).to_owned(), etag_of(&res).map(str::to_owned)));
            assert_eq!(cold.upstream_gets(&format!("/{path}")), 1, "{what}: a GET filled the cache");
            let statuses: Vec<_> = seen.iter().map(|(name, status, _)| format!("{name}: {status}")).collect();
            let expected = seen.iter().map(|(name, status, _)| (*name, status.clone(), Some(md5.clone())));
            assert_eq!(seen.clone(), expected.collect::<Vec<_>>(), "{what}: {statuses:?}");
            for (name, status) in [("fill", "Hit"), ("store", "Hit"), ("revalidated", "Revalidated")] {
                assert!(seen.iter().any(|s| s.0 == name && s.1 == status), "{what}: {name} was {statuses:?}");
            }
        }
    }
    assert!(walked >= 3, "the walk ran for the formats that decide a header ({walked} paths)");
}

/// A blob store whose writes wait while the gate is shut: a commit held
/// after its clients have the whole body, as a slow disk holds it.
struct Gated {
    inner: MemoryBlobs,
    open: tokio::sync::watch::Sender<bool>,
}

#[async_trait::async_trait]
impl BlobStore for Gated {
    async fn put_file(&self, key: &str, file: &std::path::Path, size: u64) -> Result<(), StoreError> {
        self.open.subscribe().wait_for(|open| *open).await.expect("the gate lives");
        self.inner.put_file(key, file, size).await
    }
    async fn open(&self, key: &str, range: Option<std::ops::Range<u64>>) -> Result<BlobStream, StoreError> {
        self.inner.open(key, range).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    async fn list(&self) -> Result<BlobList, StoreError> {
        self.inner.list().await
    }
    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.exists(key).await
    }
    async fn clean_up(&self, age: Duration) -> Result<u64, StoreError> {
        self.inner.clean_up(age).await
    }
}

/// Waits until the clock has moved on by a millisecond (access times are
/// in milliseconds): what happens next happens later.
async fn tick() {
    let now = now_ms();
    while now_ms() <= now {
        tokio::task::yield_now().await;
    }
}

/// Least recently used, whatever the disk's pace: an entry's last use is
/// when its clients had the whole body, not when its row is written, and a
/// read answered from a finished fill (its row not written yet) is a read.
/// The commit of `b` is held while `a` (and then `b`) is read; with room for
/// one entry, eviction takes the one read least recently.
#[tokio::test]
async fn eviction_takes_the_entry_read_least_recently_while_a_commit_lags() {
    for read_b_from_its_fill in [false, true] {
        let (open, _) = tokio::sync::watch::channel(true);
        let blobs = Arc::new(Gated { inner: MemoryBlobs::new(), open });
        let stack = stack_on(Package::GENERIC, "0123456789", Duration::from_secs(3600), blobs.clone());
        stack.send(Method::GET, "v1/a.tgz", &[]).await;
        stack.committed("v1/a.tgz").await;
        tick().await;
        blobs.open.send_replace(false);
        let (b, _) = stack.send(Method::GET, "v1/b.tgz", &[]).await;
        assert_eq!(status_of(&b), "Miss");
        tick().await;
        let (a, _) = stack.send(Method::GET, "v1/a.tgz", &[]).await;
        assert_eq!(status_of(&a), "Hit");
        tick().await;
        if read_b_from_its_fill {
            let (again, _) = stack.send(Method::GET, "v1/b.tgz", &[]).await;
            assert_eq!(status_of(&again), "Hit", "from the finished fill: its row is not written");
            tick().await;
        }
        blobs.open.send_replace(true);
        stack.committed("v1/b.tgz").await;
        assert_eq!(stack.upstream_gets("/v1/a.tgz") + stack.upstream_gets("/v1/b.tgz"), 2);
        // Room for one of the two.
        let done = evict(&stack.store, &Budget { total: Some(10), per_remote: vec![] }).await.unwrap();
        assert_eq!(done.entries, 1);
        let left: Vec<_> =
            stack.store.index.list("r", None, 10).await.unwrap().into_iter().map(|e| e.path).collect();
        let expected = if read_b_from_its_fill { "v1/b.tgz" } else { "v1/a.tgz" };
        assert_eq!(
            left,
            [expected],
            "the entry read last stays (b read from its fill: {read_b_from_its_fill})"
        );
    }
}
