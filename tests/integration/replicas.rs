//! Several replicas acting as one cache: blobs in S3 (Garage), the index in
//! PostgreSQL, coordination through Redis — every one a real server.

use std::time::Duration;

use crate::support::{
    backends::{unique, Garage, PgDatabase, PrivateRedis},
    client, eventually, large_sha256, sha256, Binary, Upstream, PATIENCE,
};

const CONFIG: &str = "remotes:\n  files:\n    base_url: \"{upstream}\"\n    mutable_patterns: ['\\.json$']\n";

fn shared_env(garage: &Garage, db: &PgDatabase, redis_url: &str, prefix: &str) -> Vec<(String, String)> {
    let mut env = garage.env(&format!("replicas-{}", unique()));
    env.push(("DATABASE_URL".into(), db.url()));
    env.push(("REDIS_URL".into(), redis_url.into()));
    env.push(("REDIS_PREFIX".into(), format!("artifactapi-test:{prefix}:")));
    env
}

async fn get(url: &str) -> (String, Vec<u8>) {
    let res = client().get(url).send().await.unwrap();
    assert_eq!(res.status(), 200, "{url}");
    let status =
        res.headers().get("x-cache-status").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, res.bytes().await.unwrap().to_vec())
}

/// 20 concurrent cold requests, alternating between the replicas: answers
/// how many requests upstream saw, after checking every body.
async fn burst(replicas: &[&Binary], upstream: &Upstream, path: &str, len: u64) -> usize {
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let url = replicas[i % replicas.len()].url(&format!("/api/files{path}"));
            tokio::spawn(async move { get(&url).await.1 })
        })
        .collect();
    let expected = large_sha256(len);
    for c in clients {
        let body = c.await.unwrap();
        assert_eq!(body.len() as u64, len);
        assert_eq!(sha256(&body), expected);
    }
    upstream.count("GET", path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_cache_and_one_upstream_fetch_per_key() {
    let upstream = Upstream::start().await;
    let garage = Garage::start();
    let db = PgDatabase::create();
    let env = shared_env(&garage, &db, "redis://127.0.0.1:6379", &unique());
    let a = Binary::start(CONFIG, &upstream.url(), &env);
    let b = Binary::start(CONFIG, &upstream.url(), &env);

    // Fetched through one, a hit on the other.
    upstream.put("/rel/tool.tar.gz", "shared bytes", &[]);
    assert_eq!(get(&a.url("/api/files/rel/tool.tar.gz")).await, ("MISS".into(), b"shared bytes".to_vec()));
    assert_eq!(get(&b.url("/api/files/rel/tool.tar.gz")).await, ("HIT".into(), b"shared bytes".to_vec()));
    assert_eq!(upstream.count("GET", "/rel/tool.tar.gz"), 1);

    // A hot copy on one replica is dropped when another changes the entry.
    upstream.put("/meta/index.json", "v1", &[]);
    assert_eq!(get(&a.url("/api/files/meta/index.json")).await.0, "MISS");
    assert_eq!(get(&b.url("/api/files/meta/index.json")).await.0, "HIT");
    let flushed = client().put(a.url("/cache/flush?remote=files")).send().await.unwrap();
    assert_eq!(flushed.status(), 200);
    upstream.put("/meta/index.json", "v2", &[]);
    // Until a's message reaches b over pub/sub, b answers from its hot copy
    // (a HIT, upstream not asked); the first answer that is not is the one
    // that counts.
    let answer =
        until_not_hit(&b.url("/api/files/meta/index.json"), "replica b to see replica a's flush").await;
    assert_eq!(answer, ("EXPIRED".into(), b"v2".to_vec()), "replica b saw replica a's flush");

    // A purge through one replica: the other's next request is a fresh miss too.
    upstream.put("/rel/poisoned.tgz", "bad bytes", &[]);
    assert_eq!(get(&a.url("/api/files/rel/poisoned.tgz")).await.0, "MISS");
    assert_eq!(get(&b.url("/api/files/rel/poisoned.tgz")).await.0, "HIT");
    let purged = client().delete(a.url("/cache/files/rel/poisoned.tgz")).send().await.unwrap();
    assert_eq!(purged.status(), 200);
    upstream.put("/rel/poisoned.tgz", "good bytes", &[]);
    let answer =
        until_not_hit(&b.url("/api/files/rel/poisoned.tgz"), "replica b to see replica a's purge").await;
    assert_eq!(answer, ("MISS".into(), b"good bytes".to_vec()));
    assert_eq!(get(&a.url("/api/files/rel/poisoned.tgz")).await, ("HIT".into(), b"good bytes".to_vec()));

    // A cold burst split across both replicas: one upstream request.
    let path = "/slow/24/40/burst.bin";
    assert_eq!(burst(&[&a, &b], &upstream, path, 24 * 64 * 1024).await, 1);

    // Both report their backends.
    let health: serde_json::Value =
        serde_json::from_slice(&client().get(b.url("/health")).send().await.unwrap().bytes().await.unwrap())
            .unwrap();
    assert_eq!(health["backends"]["index"]["kind"], "postgres");
    assert_eq!(health["backends"]["blobs"]["kind"], "s3");
    assert_eq!(health["backends"]["coordination"]["kind"], "redis");
    assert_eq!(health["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_cold_miss_through_s3_keeps_memory_bounded() {
    let upstream = Upstream::start().await;
    let garage = Garage::start();
    let db = PgDatabase::create();
    let proxy = Binary::start(
        CONFIG,
        &upstream.url(),
        &shared_env(&garage, &db, "redis://127.0.0.1:6379", &unique()),
    );
    let len: u64 = 200 * 1024 * 1024;
    let url = proxy.url(&format!("/api/files/large/{len}/big.bin"));
    let expected = large_sha256(len);
    for status in ["MISS", "HIT"] {
        let mut res = client().get(&url).send().await.unwrap();
        assert_eq!(res.headers()["x-cache-status"], status);
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let mut got = 0u64;
        while let Some(chunk) = res.chunk().await.unwrap() {
            sha2::Digest::update(&mut hasher, &chunk);
            got += chunk.len() as u64;
        }
        assert_eq!(got, len);
        assert_eq!(hex::encode(sha2::Digest::finalize(hasher)), expected, "{status}");
        if status == "MISS" {
            // The upload to S3, and then the commit, finish after the client
            // has its bytes.
            eventually("the 200 MiB entry to be committed", Duration::from_secs(60), || async {
                listing(&proxy).await == 1
            })
            .await;
        }
    }
    let peak = proxy.peak_rss_kib();
    println!(
        "peak RSS of artifactapi over a 200 MiB miss and hit through S3 + PostgreSQL: {} MiB",
        peak / 1024
    );
    assert!(peak < 96 * 1024, "peak RSS {peak} KiB: memory per transfer must stay bounded");
    assert_eq!(upstream.total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_keep_succeeding_without_redis_and_coordination_resumes_when_it_returns() {
    let upstream = Upstream::start().await;
    let garage = Garage::start();
    let db = PgDatabase::create();
    let mut redis = PrivateRedis::start();
    let env = shared_env(&garage, &db, &redis.url(), "private");
    let a = Binary::start(CONFIG, &upstream.url(), &env);
    let b = Binary::start(CONFIG, &upstream.url(), &env);
    assert_eq!(burst(&[&a, &b], &upstream, "/slow/8/20/before.bin", 8 * 64 * 1024).await, 1);

    redis.stop();
    for (i, replica) in [&a, &b, &a, &b].iter().enumerate() {
        upstream.put(&format!("/down/{i}.tgz"), format!("file {i}"), &[]);
        let (_, body) = get(&replica.url(&format!("/api/files/down/{i}.tgz"))).await;
        assert_eq!(body, format!("file {i}").into_bytes(), "requests succeed while Redis is down");
    }
    // Already cached entries stay hits on the other replica.
    assert_eq!(get(&b.url("/api/files/down/0.tgz")).await.0, "HIT");
    let health: serde_json::Value =
        serde_json::from_slice(&client().get(a.url("/health")).send().await.unwrap().bytes().await.unwrap())
            .unwrap();
    assert!(health["backends"]["coordination"]["state"].as_str().unwrap().starts_with("error"), "{health}");
    assert_eq!(
        client().get(a.url("/ready")).send().await.unwrap().status(),
        200,
        "Redis is not needed to serve"
    );

    redis.restart();
    // Each replica reconnects on its next call (its pool drops the broken
    // connections): wait until both reach Redis again.
    for replica in [&a, &b] {
        eventually("the replica to reach Redis again", PATIENCE, || async {
            let health: serde_json::Value = serde_json::from_slice(
                &client().get(replica.url("/health")).send().await.unwrap().bytes().await.unwrap(),
            )
            .unwrap();
            health["backends"]["coordination"]["state"] == "ok"
        })
        .await;
    }
    assert_eq!(
        burst(&[&a, &b], &upstream, "/slow/8/20/after.bin", 8 * 64 * 1024).await,
        1,
        "coordination resumed"
    );
}

#[test]
fn an_unreachable_s3_or_postgresql_stops_start_up_but_redis_only_warns() {
    let closed = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("remotes.yaml"), "remotes:\n  files:\n    base_url: http://127.0.0.1:9\n")
        .unwrap();
    let run = |env: &[(&str, String)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_artifactapi"));
        cmd.env("CONFIG_PATH", dir.path().join("remotes.yaml"))
            .env("DATA_DIR", dir.path().join("data"))
            .env("LISTEN_ADDR", "127.0.0.1:0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    };
    let s3 = [
        ("MINIO_ENDPOINT", format!("127.0.0.1:{}", closed())),
        ("MINIO_ACCESS_KEY", "ak".into()),
        ("MINIO_SECRET_KEY", "sk".into()),
        ("MINIO_BUCKET", "b".into()),
    ];
    let out = run(&s3).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cannot use S3"), "{text}");

    let pg = [("DATABASE_URL", format!("postgres://postgres@127.0.0.1:{}/x", closed()))];
    let out = run(&pg).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot use PostgreSQL"));

    let out = run(&[("MINIO_ENDPOINT", "127.0.0.1:1".into())]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("MINIO_ACCESS_KEY"),
        "a missing companion is named"
    );

    // Redis down: the process starts and serves.
    let mut child = run(&[("REDIS_URL", format!("redis://127.0.0.1:{}", closed()))])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.contains("listening") {
            break;
        }
        line.clear();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("Redis is not reachable"), "{seen}");
    assert!(seen.contains("listening"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_an_old_copy_of_a_replaced_entry_serves_the_new_one_and_drops_nothing() {
    // No Redis: nothing tells replica A that B replaced the entry, so A's
    // in-memory copy still names the purged blob.
    let upstream = Upstream::start().await;
    let garage = Garage::start();
    let db = PgDatabase::create();
    let mut env = garage.env(&format!("replicas-{}", unique()));
    env.push(("DATABASE_URL".into(), db.url()));
    let a = Binary::start(CONFIG, &upstream.url(), &env);
    let b = Binary::start(CONFIG, &upstream.url(), &env);
    upstream.put("/rel/v1.tar.gz", "first bytes", &[]);
    assert_eq!(get(&a.url("/api/files/rel/v1.tar.gz")).await.0, "MISS");
    // The row is committed just after the client's last byte.
    eventually("the entry to be committed", PATIENCE, || async { listing(&b).await == 1 }).await;
    assert_eq!(get(&a.url("/api/files/rel/v1.tar.gz")).await.0, "HIT", "A holds its copy in memory");

    let res = client().delete(b.url("/cache/files/rel/v1.tar.gz")).send().await.unwrap();
    let status = res.status();
    assert!(status.is_success(), "{status}: {}", res.text().await.unwrap());
    upstream.put("/rel/v1.tar.gz", "second bytes", &[]);
    assert_eq!(get(&b.url("/api/files/rel/v1.tar.gz")).await, ("MISS".into(), b"second bytes".to_vec()));
    assert_eq!(upstream.count("GET", "/rel/v1.tar.gz"), 2);
    eventually("B's entry to be committed", PATIENCE, || async { listing(&b).await == 1 }).await;
    // Time, not an event: A's own finished fill stays joinable for two
    // seconds after its commit (the tee's linger); past that, only the index
    // speaks.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // A finds its blob gone: it serves B's entry instead of deleting it.
    assert_eq!(get(&a.url("/api/files/rel/v1.tar.gz")).await, ("HIT".into(), b"second bytes".to_vec()));
    assert_eq!(upstream.count("GET", "/rel/v1.tar.gz"), 2, "no third fetch");
    assert_eq!(get(&b.url("/api/files/rel/v1.tar.gz")).await.0, "HIT", "B's entry is still there");
}

async fn listing(replica: &Binary) -> u64 {
    let res = client().get(replica.url("/artifacts/files")).send().await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    json["count"].as_u64().unwrap_or(0)
}

/// GETs `url` until the answer is not a `HIT`, and answers it: for a replica
/// that serves its hot copy until another replica's invalidation reaches it
/// (a hit asks upstream nothing and changes nothing).
async fn until_not_hit(url: &str, what: &str) -> (String, Vec<u8>) {
    let answer = std::sync::Mutex::new(None);
    eventually(what, PATIENCE, || async {
        let (status, body) = get(url).await;
        let done = status != "HIT";
        *answer.lock().unwrap() = Some((status, body));
        done
    })
    .await;
    answer.into_inner().unwrap().unwrap()
}
