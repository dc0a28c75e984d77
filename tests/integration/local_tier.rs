//! The local disk tier in front of S3 (`CACHE_LOCAL_DIR`): replicas on
//! Garage, PostgreSQL and Redis, every object read counted at a relay in
//! front of Garage.

use std::{path::Path, time::Duration};

use crate::support::{
    backends::{unique, Garage, PgDatabase},
    client, eventually,
    s3relay::S3Relay,
    sha256, Binary, Upstream, PATIENCE,
};

const CONFIG: &str = "remotes:\n  files:\n    base_url: \"{upstream}\"\n";

/// 4 MiB of bytes that differ for each `seed`.
fn body(seed: u8) -> Vec<u8> {
    (0..4u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed).collect()
}

struct Replicas {
    _garage: Garage,
    _db: PgDatabase,
    relay: S3Relay,
    env: Vec<(String, String)>,
    dirs: tempfile::TempDir,
}

impl Replicas {
    /// Garage behind a relay, a database, Redis when `redis`.
    async fn new(redis: bool, budget: &str) -> Self {
        let garage = Garage::start();
        let db = PgDatabase::create();
        let relay = S3Relay::start(&garage.endpoint).await;
        let mut env = garage.env(&format!("local-{}", unique()));
        env.retain(|(k, _)| k != "MINIO_ENDPOINT");
        env.push(("MINIO_ENDPOINT".into(), relay.url()));
        env.push(("DATABASE_URL".into(), db.url()));
        env.push(("CACHE_LOCAL_BYTES".into(), budget.into()));
        // Every read below the memory copies of small blobs.
        env.push(("CACHE_MEMORY_BYTES".into(), "0".into()));
        if redis {
            env.push(("REDIS_URL".into(), "redis://127.0.0.1:6379".into()));
            env.push(("REDIS_PREFIX".into(), format!("artifactapi-test:{}:", unique())));
        }
        Self { _garage: garage, _db: db, relay, env, dirs: tempfile::tempdir().unwrap() }
    }

    fn start(&self, name: &str, upstream: &Upstream) -> Binary {
        let mut env = self.env.clone();
        env.push(("CACHE_LOCAL_DIR".into(), self.local_dir(name).display().to_string()));
        Binary::start(CONFIG, &upstream.url(), &env)
    }

    fn local_dir(&self, name: &str) -> std::path::PathBuf {
        self.dirs.path().join(name)
    }
}

async fn get(replica: &Binary, path: &str) -> (String, Vec<u8>) {
    let res = client().get(replica.url(&format!("/api/files{path}"))).send().await.unwrap();
    assert_eq!(res.status(), 200, "{path}");
    let status =
        res.headers().get("x-cache-status").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, res.bytes().await.unwrap().to_vec())
}

async fn metric(replica: &Binary, name: &str) -> u64 {
    let text = client().get(replica.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
}

async fn committed(replica: &Binary, entries: u64) {
    eventually("the entries to be committed", PATIENCE, || async {
        let res = client().get(replica.url("/artifacts/files")).send().await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        json["count"].as_u64() == Some(entries)
    })
    .await;
}

/// The copies under a local directory: path and length.
fn copies(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.join("blobs")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                found.push((entry.path(), meta.len()));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_read_the_local_copy_with_no_s3_get_and_each_replica_reads_a_blob_once() {
    let upstream = Upstream::start().await;
    let replicas = Replicas::new(true, "64M").await;
    let a = replicas.start("a", &upstream);
    let b = replicas.start("b", &upstream);
    let v1 = body(1);
    upstream.put("/rel/tool.tar.gz", v1.clone(), &[]);

    assert_eq!(get(&a, "/rel/tool.tar.gz").await, ("MISS".into(), v1.clone()));
    committed(&a, 1).await;
    // The fill's spool became A's copy: A never reads the object.
    let before = replicas.relay.object_gets();
    for _ in 0..3 {
        assert_eq!(get(&a, "/rel/tool.tar.gz").await, ("HIT".into(), v1.clone()));
    }
    assert_eq!(replicas.relay.object_gets(), before, "hits on A read no object");
    assert_eq!(metric(&a, "artifactapi_local_kept_total").await, 1);
    assert!(metric(&a, "artifactapi_local_hits_total").await >= 3);

    // B has no copy: ten concurrent first hits make one object read.
    let readers: Vec<_> = (0..10)
        .map(|_| {
            let url = b.url("/api/files/rel/tool.tar.gz");
            tokio::spawn(async move { client().get(url).send().await.unwrap().bytes().await.unwrap() })
        })
        .collect();
    for reader in readers {
        assert_eq!(sha256(&reader.await.unwrap()), sha256(&v1));
    }
    assert_eq!(replicas.relay.object_gets(), before + 1, "one object read for ten hits on B");
    eventually("B's copy", PATIENCE, || async { copies(&replicas.local_dir("b")).len() == 1 }).await;
    for _ in 0..3 {
        assert_eq!(get(&b, "/rel/tool.tar.gz").await, ("HIT".into(), v1.clone()));
    }
    assert_eq!(replicas.relay.object_gets(), before + 1, "then none");
    assert_eq!(metric(&b, "artifactapi_local_fills_total").await, 1);
    assert_eq!(metric(&b, "artifactapi_local_copies").await, 1);
    assert_eq!(upstream.count("GET", "/rel/tool.tar.gz"), 1);

    // The copies outlive the process.
    let mut b = b;
    b.restart();
    assert_eq!(get(&b, "/rel/tool.tar.gz").await, ("HIT".into(), v1));
    assert_eq!(replicas.relay.object_gets(), before + 1, "read from the copy kept across a restart");
}

/// A and B both hold copies of v1; A purges it and fetches v2 at the same
/// path. B must serve v2, never its old copy.
async fn purge_and_new_version(redis: bool) {
    let upstream = Upstream::start().await;
    let replicas = Replicas::new(redis, "64M").await;
    let a = replicas.start("a", &upstream);
    let b = replicas.start("b", &upstream);
    let (v1, v2, v3) = (body(1), body(2), body(3));
    upstream.put("/rel/app.tar.gz", v1.clone(), &[]);
    assert_eq!(get(&a, "/rel/app.tar.gz").await.1, v1);
    committed(&a, 1).await;
    assert_eq!(get(&b, "/rel/app.tar.gz").await, ("HIT".into(), v1.clone()));
    eventually("B's copy", PATIENCE, || async { copies(&replicas.local_dir("b")).len() == 1 }).await;
    assert_eq!(get(&b, "/rel/app.tar.gz").await, ("HIT".into(), v1.clone()), "from B's copy");

    // A purge on A, nothing refetched yet: B fetches upstream's new bytes.
    let res = client().delete(a.url("/cache/files/rel/app.tar.gz")).send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    upstream.put("/rel/app.tar.gz", v2.clone(), &[]);
    let (_, got) = get(&b, "/rel/app.tar.gz").await;
    assert!(got == v2, "B served its old copy after a purge on A");
    committed(&b, 1).await;
    assert_eq!(get(&a, "/rel/app.tar.gz").await.1, v2);
    eventually("A's copy of v2", PATIENCE, || async { copies(&replicas.local_dir("a")).len() == 1 }).await;

    // A new version of the same path, fetched through A while B holds v2.
    assert_eq!(get(&b, "/rel/app.tar.gz").await, ("HIT".into(), v2.clone()));
    let res = client().delete(a.url("/cache/files/rel/app.tar.gz")).send().await.unwrap();
    assert!(res.status().is_success());
    upstream.put("/rel/app.tar.gz", v3.clone(), &[]);
    assert_eq!(get(&a, "/rel/app.tar.gz").await.1, v3);
    committed(&a, 1).await;
    // Past the tee's linger, only the index speaks.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, got) = get(&b, "/rel/app.tar.gz").await;
    assert!(got == v3, "B served an old copy after A replaced the entry");
    assert_eq!(upstream.count("GET", "/rel/app.tar.gz"), 3, "v1, v2 and v3 fetched once each");
    if redis {
        // Told of the deletes, B freed its old copies.
        eventually("B's old copies to go", PATIENCE, || async {
            copies(&replicas.local_dir("b")).iter().all(|(_, len)| *len == v3.len() as u64)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_or_a_new_version_on_one_replica_is_never_served_from_another_replicas_copy() {
    purge_and_new_version(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_too_a_purged_blob_is_never_served_from_an_old_copy() {
    purge_and_new_version(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_copy_falls_back_to_s3_and_is_repaired() {
    let upstream = Upstream::start().await;
    let replicas = Replicas::new(true, "64M").await;
    let a = replicas.start("a", &upstream);
    let v1 = body(7);
    upstream.put("/rel/pkg.rpm", v1.clone(), &[]);
    get(&a, "/rel/pkg.rpm").await;
    committed(&a, 1).await;
    let [(file, len)] = &copies(&replicas.local_dir("a"))[..] else { panic!("one copy") };
    assert_eq!(*len, v1.len() as u64);
    std::fs::OpenOptions::new().write(true).open(file).unwrap().set_len(1000).unwrap();

    let before = replicas.relay.object_gets();
    assert_eq!(get(&a, "/rel/pkg.rpm").await, ("HIT".into(), v1.clone()));
    assert_eq!(replicas.relay.object_gets(), before + 1, "read from S3 instead");
    eventually("the copy to be whole again", PATIENCE, || async {
        copies(&replicas.local_dir("a")).iter().any(|(_, len)| *len == v1.len() as u64)
    })
    .await;
    assert_eq!(metric(&a, "artifactapi_local_repairs_total").await, 1);
    assert_eq!(get(&a, "/rel/pkg.rpm").await.1, v1);
    assert_eq!(replicas.relay.object_gets(), before + 1, "and read from the repaired copy");
    assert_eq!(upstream.count("GET", "/rel/pkg.rpm"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_budget_holds() {
    let upstream = Upstream::start().await;
    // Room for two 4 MiB copies, not three.
    let replicas = Replicas::new(true, "10M").await;
    let a = replicas.start("a", &upstream);
    let budget = 10u64 << 20;
    for i in 0..5u8 {
        upstream.put(&format!("/rel/{i}.bin"), body(i), &[]);
        get(&a, &format!("/rel/{i}.bin")).await;
        committed(&a, u64::from(i) + 1).await;
        let held: u64 = copies(&replicas.local_dir("a")).iter().map(|(_, len)| len).sum();
        assert!(held <= budget, "{held} bytes of copies, budget {budget}");
        assert!(metric(&a, "artifactapi_local_bytes").await <= budget);
    }
    eventually("evicted copies to be deleted", PATIENCE, || async {
        copies(&replicas.local_dir("a")).len() == 2
    })
    .await;
    assert_eq!(metric(&a, "artifactapi_local_evictions_total").await, 3);
    // The newest is local, the oldest is read from S3 again.
    let before = replicas.relay.object_gets();
    assert_eq!(get(&a, "/rel/4.bin").await.1, body(4));
    assert_eq!(replicas.relay.object_gets(), before);
    assert_eq!(get(&a, "/rel/0.bin").await.1, body(0));
    assert_eq!(replicas.relay.object_gets(), before + 1);
}
