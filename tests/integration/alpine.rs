//! An Alpine repository through the proxy: `APKINDEX.tar.gz` is mutable
//! (revalidated, replaced when it changes), `.apk` files immutable, bytes
//! intact. (No apk client can be installed here: curl-level checks.)

use std::time::Duration;

use crate::support::{client, committed, large_chunk, nginx, sha256, Proxy};

async fn get(url: &str) -> (String, Vec<u8>) {
    let res = client().get(url).send().await.unwrap();
    assert_eq!(res.status(), 200, "{url}");
    let status = res.headers()["x-cache-status"].to_str().unwrap().to_owned();
    (status, res.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn apkindex_is_mutable_and_packages_are_immutable_with_their_bytes_intact() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let arch = root.join("www/alpine/v3.20/main/x86_64");
    std::fs::create_dir_all(&arch).unwrap();
    let index_v1 = large_chunk(0, 70_000);
    let apk = large_chunk(1_000_000, 300_000);
    std::fs::write(arch.join("APKINDEX.tar.gz"), &index_v1).unwrap();
    std::fs::write(arch.join("hello-1.0-r0.apk"), &apk).unwrap();
    let (_nginx, port) = nginx::start(root, "");
    let config = "remotes:\n  alpine:\n    base_url: \"{upstream}\"\n    package: alpine\n    immutable_patterns: ['.*/x86_64/.*\\.apk$']\n    cache: { mutable_ttl: 1 }\n";
    let proxy = Proxy::start(config, &format!("http://127.0.0.1:{port}")).await;
    let index_url = proxy.url("/api/v1/remote/alpine/alpine/v3.20/main/x86_64/APKINDEX.tar.gz");
    let apk_url = proxy.url("/api/v1/remote/alpine/alpine/v3.20/main/x86_64/hello-1.0-r0.apk");

    let (status, body) = get(&index_url).await;
    assert_eq!((status.as_str(), sha256(&body)), ("MISS", sha256(&index_v1)));
    let (status, body) = get(&apk_url).await;
    assert_eq!((status.as_str(), sha256(&body)), ("MISS", sha256(&apk)));
    let res = client().get(&apk_url).send().await.unwrap();
    assert_eq!(res.headers()["content-type"], "application/vnd.android.package-archive");

    // Expired: the index is revalidated (304: same bytes), the package is a
    // hit. (Lifetimes count from the commit, which may follow the last byte.)
    committed(&proxy).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = get(&index_url).await;
    assert_eq!((status.as_str(), sha256(&body)), ("REVALIDATED", sha256(&index_v1)));
    assert_eq!(get(&apk_url).await.0, "HIT");

    // A new index upstream replaces the cached one once it expires.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let index_v2 = large_chunk(5_000_000, 71_000);
    std::fs::write(arch.join("APKINDEX.tar.gz"), &index_v2).unwrap();
    let (status, body) = get(&index_url).await;
    assert_eq!((status.as_str(), sha256(&body)), ("EXPIRED", sha256(&index_v2)));
    assert_eq!(nginx::logged(root, "hello-1.0-r0.apk"), 1, "the package was fetched once");
    assert_eq!(nginx::logged(root, "APKINDEX.tar.gz"), 3);
}
