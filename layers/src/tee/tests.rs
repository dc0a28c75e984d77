use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::stream;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::{service_fn, Layer, Service, ServiceExt};

use super::S3TeeLayer;
use crate::{
    body::{self, ArtifactBody},
    error::{find_cause, BoxError, UpstreamStatus},
    extensions::{CacheStatus, Classification},
    path::ArtifactPath,
    pattern::Class,
    remote::Remote,
    remote_resolve::ResolvedRemote,
    store::{
        memory::{MemoryBlobs, MemoryIndex},
        EntryClass, Index, Store,
    },
};

struct Fixture {
    index: Arc<MemoryIndex>,
    blobs: Arc<MemoryBlobs>,
    store: Store,
    spool: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let index = Arc::new(MemoryIndex::new());
        let blobs = Arc::new(MemoryBlobs::new());
        Self {
            store: Store::new(index.clone(), blobs.clone()),
            index,
            blobs,
            spool: tempfile::tempdir().unwrap(),
        }
    }

    fn layer(&self) -> S3TeeLayer {
        S3TeeLayer::new(self.store.clone(), self.spool.path())
    }

    fn spool_files(&self) -> usize {
        std::fs::read_dir(self.spool.path()).map(|d| d.count()).unwrap_or(0)
    }

    /// Waits for the background commit of a fill.
    /// Whether `key` still has no row after a second (a failed fill never
    /// gets one; a second is what a wrong commit would need here).
    async fn stays_uncommitted(&self, key: &str) -> bool {
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.index.get(key).await.unwrap().is_none()
    }

    /// Whether `key` gets its row, waiting up to 20 s: a commit on a busy
    /// machine (the whole suite on two cores) can take well over a second.
    async fn committed(&self, key: &str) -> bool {
        for _ in 0..2000 {
            if self.index.get(key).await.unwrap().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

fn request(path: &str) -> Request<()> {
    let mut req = Request::get("/").body(()).unwrap();
    req.extensions_mut()
        .insert(ResolvedRemote(Arc::new(Remote::proxy("r", "http://127.0.0.1:9".parse().unwrap()))));
    req.extensions_mut().insert(ArtifactPath::parse(path, None).unwrap());
    req.extensions_mut().insert(Classification(Class::Immutable));
    req
}

fn key(path: &str) -> String {
    ArtifactPath::parse(path, None).unwrap().cache_key("r")
}

#[tokio::test]
async fn a_miss_is_streamed_to_the_client_and_committed() {
    let f = Fixture::new();
    let upstream = service_fn(|_req: Request<()>| async {
        let mut res = Response::new(body::full("payload"));
        res.headers_mut().insert(header::ETAG, "\"e1\"".parse().unwrap());
        Ok::<_, BoxError>(res)
    });
    let res = f.layer().layer(upstream).oneshot(request("a/b.tgz")).await.unwrap();
    assert_eq!(res.extensions().get::<CacheStatus>(), Some(&CacheStatus::Miss));
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "payload");
    assert!(f.committed(&key("a/b.tgz")).await);
    let entry = f.index.get(&key("a/b.tgz")).await.unwrap().unwrap();
    assert_eq!(entry.size, 7);
    assert_eq!(entry.class, EntryClass::Immutable);
    assert_eq!(entry.expires_at_ms, None);
    assert_eq!(entry.header("etag"), Some("\"e1\""));
    assert_eq!(f.blobs.get(&entry.blob).unwrap(), "payload");
    assert_eq!(f.spool_files(), 0, "the spool became the blob");
}

#[tokio::test]
async fn a_body_that_breaks_off_fails_the_client_and_stores_nothing() {
    let f = Fixture::new();
    let upstream = service_fn(|_req: Request<()>| async {
        let chunks = stream::unfold(0, |step| async move {
            match step {
                0 => Some((Ok::<_, BoxError>(Bytes::from_static(b"first half")), 1)),
                1 => {
                    // Late enough that the client already has the head.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Some((Err("connection reset".into()), 2))
                }
                _ => None,
            }
        });
        Ok::<_, BoxError>(Response::new(body::from_stream(chunks)))
    });
    let res = f.layer().layer(upstream).oneshot(request("x.bin")).await.unwrap();
    assert!(res.into_body().collect().await.is_err());
    assert!(f.stays_uncommitted(&key("x.bin")).await);
    assert!(f.blobs.is_empty());
    assert_eq!(f.spool_files(), 0, "the spool file is removed");
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_not_stored() {
    let f = Fixture::new();
    let upstream = service_fn(|_req: Request<()>| async {
        let mut res = Response::new(body::full("12345"));
        res.headers_mut().insert(header::CONTENT_LENGTH, "10".parse().unwrap());
        Ok::<_, BoxError>(res)
    });
    // Depending on timing the client sees the failure before the head (an
    // error answer) or while streaming (a failed body); never a short 200.
    match f.layer().layer(upstream).oneshot(request("short.bin")).await {
        Ok(res) => {
            assert_eq!(res.headers()[header::CONTENT_LENGTH], "10");
            assert!(res.into_body().collect().await.is_err());
        }
        Err(e) => assert!(e.to_string().contains("5 of the 10 bytes"), "{e}"),
    }
    assert!(f.stays_uncommitted(&key("short.bin")).await);
}

#[tokio::test]
async fn other_statuses_are_errors_and_never_stored() {
    let f = Fixture::new();
    let upstream = service_fn(|_req: Request<()>| async {
        let mut res = Response::new(body::full("nope"));
        *res.status_mut() = StatusCode::NOT_FOUND;
        Ok::<_, BoxError>(res)
    });
    let err = f.layer().layer(upstream).oneshot(request("gone.bin")).await.unwrap_err();
    let status = find_cause::<UpstreamStatus>(&*err).expect("an upstream status error");
    assert_eq!(status.upstream(), StatusCode::NOT_FOUND);
    assert!(f.index.is_empty());
}

#[tokio::test]
async fn concurrent_misses_share_one_upstream_call_and_all_get_the_bytes() {
    let f = Fixture::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let (release, gate) = tokio::sync::watch::channel(false);
    let seen = calls.clone();
    let upstream = service_fn(move |_req: Request<()>| {
        seen.fetch_add(1, Ordering::SeqCst);
        let gate = gate.clone();
        async move {
            // The body arrives in two parts; the second only when released.
            let chunks = stream::unfold(0, move |step| {
                let mut gate = gate.clone();
                async move {
                    match step {
                        0 => Some((Ok::<_, BoxError>(Bytes::from_static(b"part one, ")), 1)),
                        1 => {
                            let _ = gate.wait_for(|open| *open).await;
                            Some((Ok(Bytes::from_static(b"part two")), 2))
                        }
                        _ => None,
                    }
                }
            });
            Ok::<_, BoxError>(Response::new(body::from_stream(chunks)))
        }
    });
    let svc = f.layer().layer(upstream);
    let mut clients = Vec::new();
    for _ in 0..10 {
        let mut svc = svc.clone();
        clients.push(tokio::spawn(async move {
            let res: Response<ArtifactBody> =
                svc.ready().await.unwrap().call(request("same.bin")).await.unwrap();
            res.into_body().collect().await.unwrap().to_bytes()
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.send(true).unwrap();
    for client in clients {
        assert_eq!(client.await.unwrap(), "part one, part two");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(f.committed(&key("same.bin")).await);
}

#[tokio::test]
async fn the_fill_completes_when_its_first_client_goes_away() {
    let f = Fixture::new();
    let upstream = service_fn(|_req: Request<()>| async {
        let chunks = stream::unfold(0, |step| async move {
            if step == 3 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            Some((Ok::<_, BoxError>(Bytes::from(vec![b'a' + step as u8; 1000])), step + 1))
        });
        Ok::<_, BoxError>(Response::new(body::from_stream(chunks)))
    });
    let res = f.layer().layer(upstream).oneshot(request("left.bin")).await.unwrap();
    drop(res);
    assert!(f.committed(&key("left.bin")).await, "the fill finished without its client");
    let entry = f.index.get(&key("left.bin")).await.unwrap().unwrap();
    assert_eq!(entry.size, 3000);
}

#[tokio::test]
async fn without_a_classification_the_request_passes_through_uncached() {
    let f = Fixture::new();
    let upstream =
        service_fn(|_req: Request<()>| async { Ok::<_, BoxError>(Response::new(body::full("x"))) });
    let res = f.layer().layer(upstream).oneshot(Request::get("/").body(()).unwrap()).await.unwrap();
    assert!(res.extensions().get::<CacheStatus>().is_none());
    assert!(f.index.is_empty());
}

#[tokio::test]
async fn metadata_declared_out_of_date_while_its_fill_runs_commits_expired() {
    let f = Fixture::new();
    let upstream = service_fn(|_req: Request<()>| async {
        let chunks = stream::unfold(0, |step| async move {
            match step {
                0 => Some((Ok::<_, BoxError>(Bytes::from_static(b"{\"old\":")), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Some((Ok(Bytes::from_static(b"true}")), 2))
                }
                _ => None,
            }
        });
        Ok::<_, BoxError>(Response::new(body::from_stream(chunks)))
    });
    let mut req = request("pkg/index.json");
    req.extensions_mut().insert(Classification(Class::Mutable { builtin: false }));
    let res = f.layer().layer(upstream).oneshot(req).await.unwrap();
    // A file the document lists is fetched for the first time meanwhile.
    f.store.marks.mark(&key("pkg/index.json"));
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "{\"old\":true}");
    assert!(f.committed(&key("pkg/index.json")).await);
    let entry = f.index.get(&key("pkg/index.json")).await.unwrap().unwrap();
    assert!(!entry.is_fresh(crate::store::now_ms()), "stored, but already expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_up_and_one_that_lags_both_get_every_byte() {
    // 24 MiB in 64 KiB frames: far past the fill's memory window, so the
    // fast client is served from memory (ahead of the spool write) and the
    // slow one reads most of it back from the spool.
    const FRAMES: usize = 384;
    const FRAME: usize = 64 * 1024;
    let f = Fixture::new();
    let upstream = service_fn(|_req: Request<()>| async {
        let chunks = stream::iter((0..FRAMES).map(|i| {
            let frame: Vec<u8> = (0..FRAME).map(|j| ((i * 7 + j) % 251) as u8).collect();
            Ok::<_, BoxError>(Bytes::from(frame))
        }));
        Ok::<_, BoxError>(Response::new(body::from_stream(chunks)))
    });
    let expected: Vec<u8> =
        (0..FRAMES).flat_map(|i| (0..FRAME).map(move |j| ((i * 7 + j) % 251) as u8)).collect();
    let svc = f.layer().layer(upstream);
    let fast = svc.clone().oneshot(request("big.bin"));
    let slow = svc.oneshot(request("big.bin"));
    let (fast, slow) = tokio::join!(fast, slow);
    let fast = tokio::spawn(async move { fast.unwrap().into_body().collect().await.unwrap().to_bytes() });
    let slow = tokio::spawn(async move {
        let mut body = slow.unwrap().into_body();
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            got.extend_from_slice(frame.unwrap().data_ref().unwrap());
            if got.len() < 8 << 20 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        got
    });
    assert!(fast.await.unwrap() == expected[..], "the fast client got every byte in order");
    assert!(slow.await.unwrap() == expected, "the slow client got every byte in order");
    assert!(f.committed(&key("big.bin")).await);
    let entry = f.index.get(&key("big.bin")).await.unwrap().unwrap();
    assert!(f.blobs.get(&entry.blob).unwrap() == expected[..], "the stored blob is the body");
}

/// A Go module zip is checked against the `h1:` its checksum database
/// promised: with the go command's own answer for the fixture it is served
/// and stored; with any other `h1:` the request fails, naming the mismatch,
/// and nothing is stored.
#[tokio::test]
async fn a_go_zip_is_served_and_stored_only_when_its_h1_is_the_one_promised() {
    use crate::{
        digest::{Expected, ExpectedDigests},
        format::go::h1::{self, fixture},
    };
    let path = "example.com/h1fixture/@v/v1.0.0.zip";
    let upstream = || {
        service_fn(|_req: Request<()>| async {
            Ok::<_, BoxError>(Response::new(body::full(Bytes::from_static(fixture::ZIP))))
        })
    };
    let promising = |f: &Fixture, h1: &str| {
        let digests = Arc::new(ExpectedDigests::new(16));
        digests.expect(key(path), Expected::go_h1(h1, true).unwrap());
        f.layer().verify_with(digests)
    };

    // Another module's hash: a well-formed `h1:`, not this zip's.
    let wrong = h1::go_mod(b"module example.com/other\n");
    let f = Fixture::new();
    match promising(&f, &wrong).layer(upstream()).oneshot(request(path)).await {
        Ok(res) => panic!("answered {} for a zip the checksum database does not vouch for", res.status()),
        Err(e) => {
            let e = e.to_string();
            let said = format!("the checksum database promised {wrong}, upstream sent {}", fixture::H1);
            assert!(e.contains("digest mismatch") && e.contains(&said), "{e}");
        }
    }
    assert!(f.index.get(&key(path)).await.unwrap().is_none(), "the failed check stored nothing");

    let f = Fixture::new();
    let res = promising(&f, fixture::H1).layer(upstream()).oneshot(request(path)).await.unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), fixture::ZIP);
    assert!(f.committed(&key(path)).await);
}

#[tokio::test]
async fn a_mark_made_while_the_row_is_on_its_way_still_expires_the_entry() {
    // The marker (a file of the document fetched for the first time) marks
    // the key and then reads the index: a row still on its way is not there
    // to expire, and the fill had decided its expiry before the mark.
    let f = Fixture::new();
    let marks = f.store.marks.clone();
    let marked = key("pkg/index.json");
    f.index.before_put(move |entry| {
        if entry.key == marked {
            marks.mark(&entry.key);
        }
    });
    let upstream = service_fn(|_req: Request<()>| async {
        Ok::<_, BoxError>(Response::new(body::full(Bytes::from_static(b"{\"new\":true}"))))
    });
    let mut req = request("pkg/index.json");
    req.extensions_mut().insert(Classification(Class::Mutable { builtin: false }));
    let res = f.layer().layer(upstream).oneshot(req).await.unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "{\"new\":true}");
    assert!(f.committed(&key("pkg/index.json")).await);
    let mut entry = f.index.get(&key("pkg/index.json")).await.unwrap().unwrap();
    for _ in 0..2000 {
        if !entry.is_fresh(crate::store::now_ms()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        entry = f.index.get(&key("pkg/index.json")).await.unwrap().unwrap();
    }
    assert!(!entry.is_fresh(crate::store::now_ms()), "stored, then expired by the mark it missed");
}
