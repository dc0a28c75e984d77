//! The SQLite index on its own: concurrent writers, pages, flushes, reopening.
//! The conformance suite every index passes is `tests/integration/backends.rs`.

use artifactapi_layers::store::{Entry, EntryClass, Index, Refresh, Revalidated};

use super::SqliteIndex;

fn sample(key: &str, blob: &str) -> Entry {
    Entry {
        key: key.into(),
        remote: "r".into(),
        path: "a/b.tgz".into(),
        blob: blob.into(),
        size: 3,
        class: EntryClass::Mutable,
        headers: vec![("etag".into(), "\"x\"".into())],
        cached_at_ms: 1,
        expires_at_ms: Some(2),
        policy: Some("{}".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let index = SqliteIndex::open(&dir.path().join("index.db")).await.unwrap();
    let writers: Vec<_> = (0..40)
        .map(|i| {
            let index = index.clone();
            tokio::spawn(async move {
                index.put(sample(&format!("k{}", i % 10), &format!("b{i}"))).await.map(|_| ())
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap().expect("a concurrent put succeeds");
    }
    for i in 0..10 {
        assert!(index.get(&format!("k{i}")).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn lists_by_path_in_pages_and_flushes_without_touching_local_entries() {
    let dir = tempfile::tempdir().unwrap();
    let index = SqliteIndex::open(&dir.path().join("index.db")).await.unwrap();
    for (i, class) in [EntryClass::Mutable, EntryClass::Immutable, EntryClass::Local].iter().enumerate() {
        for j in 0..3 {
            let mut e = sample(&format!("k{i}{j}"), "b");
            e.path = format!("p{i}{j}");
            e.class = *class;
            index.put(e).await.unwrap();
        }
    }
    let mut other = sample("other", "b");
    other.remote = "elsewhere".into();
    index.put(other).await.unwrap();

    let page = index.list("r", None, 4).await.unwrap();
    let paths: Vec<_> = page.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["p00", "p01", "p02", "p10"]);
    let page = index.list("r", Some("p10"), 100).await.unwrap();
    assert_eq!(page.len(), 5);

    let flushed = index.flush(Some("r"), false, 5).await.unwrap();
    assert_eq!((flushed.expired, flushed.removed.len()), (3, 0));
    assert_eq!(index.get("k00").await.unwrap().unwrap().expires_at_ms, Some(5));
    let flushed = index.flush(None, true, 6).await.unwrap();
    assert_eq!(flushed.removed.len(), 3);
    assert_eq!(flushed.expired, 4, "every remote's mutable entries");
    assert!(index.get("k10").await.unwrap().is_none());
    assert!(index.get("k20").await.unwrap().is_some(), "local entries survive a flush");
    assert!(index.get("other").await.unwrap().is_some());
}

#[tokio::test]
async fn put_get_replace_remove_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    let index = SqliteIndex::open(&db).await.unwrap();
    assert_eq!(index.get("k").await.unwrap(), None);
    assert_eq!(index.put(sample("k", "b1")).await.unwrap(), None);
    assert_eq!(index.get("k").await.unwrap(), Some(sample("k", "b1")));
    let replaced = index.put(sample("k", "b2")).await.unwrap();
    assert_eq!(replaced.map(|e| e.blob), Some("b1".into()));
    drop(index);
    let index = SqliteIndex::open(&db).await.unwrap();
    assert_eq!(index.get("k").await.unwrap().map(|e| e.blob), Some("b2".into()));
    let refresh = Refresh {
        expires_at_ms: Some(99),
        revalidated: Some(Revalidated { headers: vec![("etag".into(), "\"y\"".into())], policy: None }),
    };
    assert!(!index.refresh("k", "b1", &refresh).await.unwrap(), "a replaced entry is not refreshed");
    assert!(index.refresh("k", "b2", &refresh).await.unwrap());
    let got = index.get("k").await.unwrap().unwrap();
    assert_eq!(got.expires_at_ms, Some(99));
    assert_eq!(got.header("etag"), Some("\"y\""));
    assert_eq!(got.policy, None);
    assert_eq!(index.remove("k").await.unwrap().map(|e| e.blob), Some("b2".into()));
    assert_eq!(index.remove("k").await.unwrap(), None);
}
