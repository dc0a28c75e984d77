//! apt repositories stay consistent: index files are refreshed together with
//! the release file that lists their hashes, never on their own.

use std::time::Duration;

use crate::support::{client, committed, Proxy, Upstream};

const CONFIG: &str = r#"
remotes:
  apt:
    base_url: "{upstream}"
    immutable_patterns: ['\.deb$', '/by-hash/']
    mutable_patterns: ['InRelease$', 'Release(\.gpg)?$', 'Packages(\.gz|\.xz)?$']
    check_mutable_updates: true
    cache: { mutable_ttl: 2 }
"#;

async fn get(url: &str) -> (String, String) {
    let res = client().get(url).send().await.unwrap();
    assert_eq!(res.status(), 200, "{url}");
    let status = res.headers()["x-cache-status"].to_str().unwrap().to_owned();
    (status, res.text().await.unwrap())
}

#[tokio::test]
async fn index_files_follow_their_release_file() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(CONFIG, &upstream.url()).await;
    let release = "/debian/dists/stable/InRelease";
    let packages = "/debian/dists/stable/main/binary-amd64/Packages";
    upstream.put(release, "release v1 (lists Packages v1)", &[("etag", "\"r1\"")]);
    upstream.put(packages, "packages v1", &[("etag", "\"p1\"")]);
    let release_url = proxy.url(&format!("/api/apt{release}"));
    let packages_url = proxy.url(&format!("/api/apt{packages}"));

    // apt fetches the release file, then the index files it lists.
    assert_eq!(get(&release_url).await.0, "MISS");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(get(&packages_url).await.0, "MISS");

    // Both expire (the index file a second after the release file). The
    // release file is revalidated (unchanged); the index file, fetched with
    // it, is served with it without asking upstream on its own.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(get(&release_url).await.0, "REVALIDATED");
    assert_eq!(get(&packages_url).await, ("HIT".into(), "packages v1".into()));
    assert_eq!(upstream.count("GET", packages), 1);

    // Upstream publishes: a new release file and index. Once the release file
    // is replaced, the index file is fetched again, though its own lifetime
    // has not run out.
    upstream.put(release, "release v2 (lists Packages v2)", &[("etag", "\"r2\"")]);
    upstream.put(packages, "packages v2", &[("etag", "\"p2\"")]);
    assert_eq!(
        get(&packages_url).await,
        ("HIT".into(), "packages v1".into()),
        "still consistent with release v1"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(get(&release_url).await, ("EXPIRED".into(), "release v2 (lists Packages v2)".into()));
    committed(&proxy).await;
    let (status, body) = get(&packages_url).await;
    assert_ne!(status, "HIT");
    assert_eq!(body, "packages v2", "the index file followed its new release file");

    // Another suite: its index file is fetched well after its release file,
    // so it is still fresh when upstream publishes and the release file
    // expires. Replacing the release file expires the index file with it.
    let release = "/debian/dists/testing/InRelease";
    let packages = "/debian/dists/testing/main/binary-amd64/Packages.xz";
    upstream.put(release, "testing release v1", &[("etag", "\"t1\"")]);
    upstream.put(packages, "testing packages v1", &[("etag", "\"q1\"")]);
    let release_url = proxy.url(&format!("/api/apt{release}"));
    let packages_url = proxy.url(&format!("/api/apt{packages}"));
    assert_eq!(get(&release_url).await.0, "MISS");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get(&packages_url).await.0, "MISS");
    upstream.put(release, "testing release v2", &[("etag", "\"t2\"")]);
    upstream.put(packages, "testing packages v2", &[("etag", "\"q2\"")]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get(&release_url).await, ("EXPIRED".into(), "testing release v2".into()));
    committed(&proxy).await;
    assert_eq!(
        get(&packages_url).await.1,
        "testing packages v2",
        "a fresh index file of the old release is not served"
    );

    // Flat repositories ask for "./Packages"; that works too.
    upstream.put("/flat/Packages", "flat packages", &[]);
    let (status, body) = get(&proxy.url("/api/apt/flat/./Packages")).await;
    assert_eq!((status.as_str(), body.as_str()), ("MISS", "flat packages"));
}
