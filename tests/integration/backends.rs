//! One conformance suite for the storage backends, run against the embedded
//! default (files + SQLite) and the production pair (S3 on Garage +
//! PostgreSQL), on real servers.

use std::{path::Path, sync::Arc};

use crate::support::{
    backends::{unique, Garage, PgDatabase},
    large_chunk, sha256,
};
use artifactapi_layers::{
    store::{BlobStore, Entry, EntryClass, Index, Refresh, StoreError, Usage},
    ArtifactPath,
};
use artifactapi_services::{
    blob::{FsBlobStore, S3BlobStore, S3Config},
    index::{PostgresIndex, SqliteIndex},
};
use futures_util::{StreamExt, TryStreamExt};

async fn read(
    blobs: &dyn BlobStore,
    key: &str,
    range: Option<std::ops::Range<u64>>,
) -> Result<Vec<u8>, StoreError> {
    let chunks: Vec<_> = blobs.open(key, range).await?.try_collect().await.map_err(StoreError::Io)?;
    Ok(chunks.concat())
}

fn spool(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A real cache key (with its separators), so every backend must store them.
fn key(name: &str) -> String {
    ArtifactPath::parse(&format!("keys/{name}"), Some("arch=amd64")).unwrap().cache_key("r")
}

fn entry(name: &str, path: &str, blob: &str, class: EntryClass) -> Entry {
    Entry {
        key: key(name),
        remote: "r".into(),
        path: path.into(),
        blob: blob.into(),
        size: 10,
        class,
        headers: vec![("content-type".into(), "application/gzip".into())],
        cached_at_ms: 1_000,
        expires_at_ms: Some(2_000),
        policy: Some("{}".into()),
    }
}

async fn blob_conformance(blobs: &dyn BlobStore, scratch: &Path) {
    blobs.ping().await.unwrap();
    // put, get, range; the spool file is consumed.
    let small = spool(scratch, "small.part", b"0123456789");
    blobs.put_file("r/aa/1/small.bin", &small, 10).await.unwrap();
    assert!(!small.exists(), "put_file consumes its file");
    assert_eq!(read(blobs, "r/aa/1/small.bin", None).await.unwrap(), b"0123456789");
    assert_eq!(read(blobs, "r/aa/1/small.bin", Some(2..5)).await.unwrap(), b"234");
    assert_eq!(read(blobs, "r/aa/1/small.bin", Some(9..10)).await.unwrap(), b"9");

    // A body of several parts (a multipart upload on S3).
    let len = 40 * 1024 * 1024 + 123;
    let big_bytes = large_chunk(0, len);
    let big = spool(scratch, "big.part", &big_bytes);
    blobs.put_file("r/bb/2/big.bin", &big, len as u64).await.unwrap();
    assert_eq!(sha256(&read(blobs, "r/bb/2/big.bin", None).await.unwrap()), sha256(&big_bytes));
    let tail = read(blobs, "r/bb/2/big.bin", Some(len as u64 - 1000..len as u64)).await.unwrap();
    assert_eq!(tail, &big_bytes[len - 1000..]);

    // Commit only what is complete: a file that is not the announced size is
    // refused, and nothing becomes visible.
    let short = spool(scratch, "short.part", b"abc");
    assert!(blobs.put_file("r/cc/3/short.bin", &short, 4).await.is_err());
    assert!(matches!(blobs.open("r/cc/3/short.bin", None).await, Err(StoreError::NotFound)));

    // Delete; deleting again or a missing blob is fine; reading it is NotFound.
    blobs.delete("r/aa/1/small.bin").await.unwrap();
    blobs.delete("r/aa/1/small.bin").await.unwrap();
    assert!(matches!(blobs.open("r/aa/1/small.bin", None).await, Err(StoreError::NotFound)));
    blobs.delete("r/bb/2/big.bin").await.unwrap();
    listing_conformance(blobs, scratch).await;
}

/// The listing is bytewise by key, whatever the store keeps as directories
/// (a file `o/a.x` sorts before the files under `o/a/`), long enough to span
/// several S3 pages, and it answers whether a blob exists.
async fn listing_conformance(blobs: &dyn BlobStore, scratch: &Path) {
    let mut keys: Vec<String> =
        ["o/a-c/1", "o/a/b", "o/a/c/d", "o/a.x", "o/A", "o/é/1", "o/z", "o/a0"].map(String::from).to_vec();
    keys.extend((0..1_100).map(|i| format!("o/many/{:x}/{i}", i % 7)));
    futures_util::stream::iter(keys.iter().enumerate())
        .for_each_concurrent(16, |(i, key)| async move {
            let file = spool(scratch, &format!("list-{i}.part"), key.as_bytes());
            blobs.put_file(key, &file, key.len() as u64).await.unwrap();
        })
        .await;
    let listed: Vec<String> = blobs.list().await.unwrap().map_ok(|(key, _)| key).try_collect().await.unwrap();
    keys.sort();
    assert_eq!(listed.len(), keys.len());
    assert!(listed == keys, "bytewise order: {:?}", &listed[..8]);
    assert!(blobs.exists("o/a/b").await.unwrap());
    assert!(!blobs.exists("o/a/nope").await.unwrap());
    futures_util::stream::iter(&keys)
        .for_each_concurrent(16, |key| async move { blobs.delete(key).await.unwrap() })
        .await;
    assert!(!blobs.exists("o/a/b").await.unwrap());
}

async fn index_conformance(index: &dyn Index) {
    index.ping().await.unwrap();
    assert_eq!(index.get(&key("k1")).await.unwrap(), None);
    assert_eq!(index.put(entry("k1", "a/one", "b1", EntryClass::Mutable)).await.unwrap(), None);
    assert_eq!(index.get(&key("k1")).await.unwrap(), Some(entry("k1", "a/one", "b1", EntryClass::Mutable)));
    let replaced = index.put(entry("k1", "a/one", "b2", EntryClass::Mutable)).await.unwrap();
    assert_eq!(replaced.map(|e| e.blob), Some("b1".into()), "a replacement answers the old entry");

    let refresh = Refresh { expires_at_ms: Some(9_999), revalidated: None };
    assert!(!index.refresh(&key("k1"), "b1", &refresh).await.unwrap(), "not the current blob");
    assert!(index.refresh(&key("k1"), "b2", &refresh).await.unwrap());
    assert_eq!(index.get(&key("k1")).await.unwrap().unwrap().expires_at_ms, Some(9_999));

    index.put(entry("k2", "a/two", "b3", EntryClass::Immutable)).await.unwrap();
    index.put(entry("k3", "a/three", "b4", EntryClass::Local)).await.unwrap();
    index.put(entry("k4", "a/Zed", "b5", EntryClass::Immutable)).await.unwrap();
    let all: Vec<_> = index.list("r", None, 10).await.unwrap().into_iter().map(|e| e.path).collect();
    assert_eq!(all, ["a/Zed", "a/one", "a/three", "a/two"], "bytewise order, the same on every backend");
    let page: Vec<_> = index.list("r", Some("a/one"), 2).await.unwrap().into_iter().map(|e| e.path).collect();
    assert_eq!(page, ["a/three", "a/two"]);
    assert!(index.list("nope", None, 10).await.unwrap().is_empty());
    let found: Vec<_> = index.find_path("r", "a/two").await.unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(found, [key("k2")]);
    assert!(index.find_path("r", "a/tw").await.unwrap().is_empty(), "exact paths only");
    // Access times: least recently served first, local entries never listed.
    index.touch(&[(key("k2"), 50_000, 1), (key("k4"), 40_000, 1), ("nope".into(), 1, 1)]).await.unwrap();
    index.touch(&[(key("k4"), 30_000, 1)]).await.unwrap();
    let cold: Vec<_> =
        index.coldest(Some("r"), None, 10).await.unwrap().into_iter().map(|c| c.entry.key).collect();
    assert_eq!(cold, [key("k1"), key("k4"), key("k2")], "an earlier time never replaces a later one");
    assert_eq!(index.coldest(None, None, 1).await.unwrap()[0].entry.key, key("k1"));
    index.touch_prefix("r", "a/o", 60_000).await.unwrap();
    let cold = index.coldest(Some("r"), None, 10).await.unwrap();
    let keys: Vec<_> = cold.iter().map(|c| c.entry.key.clone()).collect();
    assert_eq!(keys, [key("k4"), key("k2"), key("k1")]);
    assert_eq!(cold.iter().map(|c| c.last_access_ms).collect::<Vec<_>>(), [40_000, 50_000, 60_000]);
    // A walk goes on after the last entry it has seen.
    let rest = index.coldest(Some("r"), Some(cold[0].cursor()), 10).await.unwrap();
    assert_eq!(rest, cold[1..]);
    assert!(index.coldest(Some("r"), Some(cold[2].cursor()), 10).await.unwrap().is_empty());
    assert!(index.blob_in_use("b5").await.unwrap());
    assert!(!index.blob_in_use("b1").await.unwrap(), "replaced");
    assert!(index.has_prefix("r", "a/t").await.unwrap());
    assert!(!index.has_prefix("r", "a/x").await.unwrap());
    assert!(!index.has_prefix("other", "a/").await.unwrap());
    let rows = index.blob_rows(None, 10).await.unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0].blob, "b2");
    let usage = index.usage().await.unwrap();
    assert_eq!(usage, [Usage { remote: "r".into(), entries: 4, bytes: 40 }], "entries and bytes per remote");

    let flushed = index.flush(Some("r"), true, 5).await.unwrap();
    assert_eq!(flushed.expired, 1);
    let mut removed: Vec<_> = flushed.removed.into_iter().map(|e| e.key).collect();
    removed.sort();
    assert_eq!(removed, [key("k2"), key("k4")]);
    assert_eq!(index.get(&key("k1")).await.unwrap().unwrap().expires_at_ms, Some(5));
    assert!(index.get(&key("k3")).await.unwrap().is_some(), "local entries survive");

    assert_eq!(index.remove_if(&key("k1"), "b1").await.unwrap(), None, "replaced: kept");
    assert!(index.get(&key("k1")).await.unwrap().is_some());
    assert_eq!(index.remove_if(&key("k1"), "b2").await.unwrap().map(|e| e.blob), Some("b2".into()));
    assert_eq!(index.remove_if(&key("k1"), "b2").await.unwrap(), None);
    index.put(entry("k5", "a/five", "b9", EntryClass::Immutable)).await.unwrap();
    assert_eq!(index.remove(&key("k5")).await.unwrap().map(|e| e.blob), Some("b9".into()));
    assert_eq!(index.remove(&key("k5")).await.unwrap(), None);
    prefix_conformance(index).await;
    usage_conformance(index).await;
    blob_order_conformance(index).await;
}

/// Per-remote counts and sums stay right through every way an entry comes
/// and goes (they are kept as rows change, not counted on asking).
async fn usage_conformance(index: &dyn Index) {
    let usage = || async {
        let all = index.usage().await.unwrap();
        all.into_iter()
            .filter(|u| u.remote.starts_with('u'))
            .map(|u| (u.remote, u.entries, u.bytes))
            .collect::<Vec<_>>()
    };
    let sized = |name: &str, remote: &str, size: u64, class: EntryClass| Entry {
        key: format!("{remote}:{name}"),
        remote: remote.into(),
        size,
        ..entry(name, &format!("u/{name}"), &format!("blob-{name}-{size}"), class)
    };
    assert_eq!(usage().await, []);
    index.put(sized("a", "u1", 100, EntryClass::Immutable)).await.unwrap();
    index.put(sized("b", "u1", 30, EntryClass::Mutable)).await.unwrap();
    index.put(sized("c", "u2", 7, EntryClass::Immutable)).await.unwrap();
    assert_eq!(usage().await, [("u1".into(), 2, 130), ("u2".into(), 1, 7)]);
    index.put(sized("b", "u1", 50, EntryClass::Mutable)).await.unwrap();
    index.put(sized("b", "u1", 50, EntryClass::Mutable)).await.unwrap();
    assert_eq!(usage().await, [("u1".into(), 2, 150), ("u2".into(), 1, 7)], "a replacement counts once");
    index.touch(&[("u1:a".into(), 9_000_000, 1)]).await.unwrap();
    let refresh = Refresh { expires_at_ms: Some(1), revalidated: None };
    index.refresh("u1:b", "blob-b-50", &refresh).await.unwrap();
    index.expire_under("u1", "u/", "", 2).await.unwrap();
    assert_eq!(usage().await, [("u1".into(), 2, 150), ("u2".into(), 1, 7)], "times change no counter");
    index.remove_if("u1:b", "blob-b-50").await.unwrap();
    assert_eq!(usage().await, [("u1".into(), 1, 100), ("u2".into(), 1, 7)]);
    index.flush(Some("u1"), true, 3).await.unwrap();
    assert_eq!(usage().await, [("u2".into(), 1, 7)], "a remote with nothing left is not listed");
    index.remove("u2:c").await.unwrap();
    assert_eq!(usage().await, []);
}

/// Rows in blob order, ties by key, a page at a time from where the last
/// ended: the order of the blob stores' listings (bytewise), on every backend.
async fn blob_order_conformance(index: &dyn Index) {
    let blobs = ["o/a/b", "o/A", "o/a-c/1", "o/é/1", "o/a.x", "o/a/b", "o/z", "o/a/b"];
    let mut expected = Vec::new();
    for (i, blob) in blobs.iter().enumerate() {
        let name = format!("bo{i}");
        index
            .put(Entry { cached_at_ms: i as i64, ..entry(&name, &name, blob, EntryClass::Immutable) })
            .await
            .unwrap();
        expected.push((blob.to_string(), key(&name), i as i64));
    }
    expected.sort();
    let mut seen = Vec::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let page = index.blob_rows(after.as_ref().map(|(b, k)| (b.as_str(), k.as_str())), 3).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.blob.clone(), last.key.clone()));
        seen.extend(
            page.into_iter().filter(|r| r.blob.starts_with("o/")).map(|r| (r.blob, r.key, r.cached_at_ms)),
        );
    }
    assert_eq!(seen, expected);
    for i in 0..blobs.len() {
        index.remove(&key(&format!("bo{i}"))).await.unwrap();
    }
}

/// Paths under a prefix (read as a range of the path index): exactly the
/// paths that start with it, bytewise, whatever their characters.
async fn prefix_conformance(index: &dyn Index) {
    for (name, path) in [
        ("p1", "d/é/x"),
        ("p2", "d/é"),
        ("p3", "d/ê/x"),
        ("p4", "d/e/x"),
        ("p5", "d/\u{10FFFF}/x"),
        ("p6", "e/Release"),
        ("p7", "d/InRelease"),
    ] {
        index.put(entry(name, path, &format!("blob-{name}"), EntryClass::Mutable)).await.unwrap();
    }
    assert!(index.has_prefix("r", "d/é/").await.unwrap());
    assert!(!index.has_prefix("r", "d/ë").await.unwrap());
    assert!(index.has_prefix("r", "d/\u{10FFFF}").await.unwrap());
    assert!(index.has_prefix("r", "").await.unwrap());
    // Entries stored at 1 000, all expiring at 2 000: expire those under d/é.
    assert_eq!(
        index.expire_under("r", "d/é", &key("p2"), 1_500).await.unwrap(),
        1,
        "d/é/x, not the kept d/é"
    );
    let expiry =
        |name: &'static str| async move { index.get(&key(name)).await.unwrap().unwrap().expires_at_ms };
    assert_eq!(expiry("p1").await, Some(1_500));
    for name in ["p2", "p3", "p4", "p5", "p6", "p7"] {
        assert_eq!(expiry(name).await, Some(2_000), "{name}");
    }
    // The root: every mutable entry of the remote but the kept one.
    let at_root = index.expire_under("r", "", &key("p7"), 1_600).await.unwrap();
    assert!(at_root >= 6, "{at_root}");
    assert_eq!(expiry("p7").await, Some(2_000));
    index.touch_prefix("r", "d/\u{10FFFF}", 90_000).await.unwrap();
    index.touch_prefix("r", "d/é/", 80_000).await.unwrap();
    let cold: Vec<_> =
        index.coldest(Some("r"), None, 100).await.unwrap().into_iter().map(|c| c.entry.key).collect();
    let last_two = &cold[cold.len() - 2..];
    assert_eq!(last_two, [key("p1"), key("p5")], "touched last, in the order of their times");
    // Equal access times: by key, the same on every backend.
    let untouched: Vec<_> = ["p2", "p3", "p4", "p6", "p7"].map(key).into_iter().collect();
    let mut sorted = untouched.clone();
    sorted.sort();
    let order: Vec<_> = cold.iter().filter(|k| untouched.contains(k)).cloned().collect();
    assert_eq!(order, sorted);
    // Walked two at a time, ties on access time included: the same order,
    // every entry once.
    let mut walked = Vec::new();
    let mut after: Option<(i64, String)> = None;
    loop {
        let cursor = after.as_ref().map(|(at, k)| (*at, k.as_str()));
        let page = index.coldest(Some("r"), cursor, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.last_access_ms, last.entry.key.clone()));
        walked.extend(page.into_iter().map(|c| c.entry.key));
    }
    assert_eq!(walked, cold);
    for name in ["p1", "p2", "p3", "p4", "p5", "p6", "p7"] {
        index.remove(&key(name)).await.unwrap();
    }
}

#[tokio::test]
async fn embedded_backends_conform() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = FsBlobStore::new(dir.path().join("blobs")).unwrap();
    blob_conformance(&blobs, dir.path()).await;
    let index = SqliteIndex::open(&dir.path().join("index.db")).await.unwrap();
    index_conformance(&index).await;
}

#[tokio::test]
async fn postgres_index_conforms() {
    let db = PgDatabase::create();
    let index = PostgresIndex::connect(db.url().parse().unwrap()).await.unwrap();
    index_conformance(&index).await;
    // Migrations are idempotent: a second replica starting on the same
    // database finds the schema there.
    let again = PostgresIndex::connect(db.url().parse().unwrap()).await.unwrap();
    assert!(again.get(&key("k3")).await.unwrap().is_some());
}

#[tokio::test]
async fn s3_blobs_conform_on_garage() {
    let garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let config = S3Config {
        endpoint: garage.endpoint.clone(),
        access_key: garage.access_key.clone(),
        secret_key: garage.secret_key.clone(),
        bucket: format!("conformance-{}", unique()),
        region: "us-east-1".into(),
    };
    let blobs: Arc<dyn BlobStore> = Arc::new(S3BlobStore::connect(&config).await.unwrap());
    blob_conformance(&*blobs, dir.path()).await;
    // Connecting again finds the bucket there.
    S3BlobStore::connect(&config).await.unwrap();
}

/// The usage counters start from what an index already holds: a database at
/// the schema before them, with rows, is migrated and counts them.
async fn upgraded_usage(index: &dyn Index) {
    let usage: Vec<_> =
        index.usage().await.unwrap().into_iter().map(|u| (u.remote, u.entries, u.bytes)).collect();
    assert_eq!(usage, [("old".to_owned(), 2, 12), ("older".to_owned(), 1, 5)]);
    let rows = index.blob_rows(None, 10).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.blob.as_str()).collect::<Vec<_>>(), ["B", "a", "é"], "bytewise");
}

const OLD_ROWS: &str = "INSERT INTO entries (key, remote, path, blob, size, class, headers, cached_at_ms, last_access_ms) \
    VALUES ('k1', 'old', 'p1', 'a', 5, 'immutable', '[]', 1, 1), ('k2', 'old', 'p2', 'é', 7, 'immutable', '[]', 1, 1), \
    ('k3', 'older', 'p3', 'B', 5, 'mutable', '[]', 1, 1)";

/// The migrations of `migrator` before `version`.
fn up_to(mut migrator: sqlx::migrate::Migrator, version: i64) -> sqlx::migrate::Migrator {
    migrator.migrations = migrator.migrations.iter().filter(|m| m.version < version).cloned().collect();
    migrator
}

#[tokio::test]
async fn an_embedded_index_from_before_the_counters_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    up_to(sqlx::migrate!("services/migrations/sqlite"), 5).run(&pool).await.unwrap();
    sqlx::query(OLD_ROWS).execute(&pool).await.unwrap();
    pool.close().await;
    upgraded_usage(&SqliteIndex::open(&path).await.unwrap()).await;
}

#[tokio::test]
async fn a_postgres_index_from_before_the_counters_is_counted() {
    let db = PgDatabase::create();
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    up_to(sqlx::migrate!("services/migrations/postgres"), 4).run(&pool).await.unwrap();
    sqlx::query(OLD_ROWS).execute(&pool).await.unwrap();
    pool.close().await;
    upgraded_usage(&PostgresIndex::connect(db.url().parse().unwrap()).await.unwrap()).await;
}
