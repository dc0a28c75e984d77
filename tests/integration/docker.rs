//! The Docker Registry v2 mirror, with a real upstream registry
//! (distribution's `docker-registry`) behind a counting front, and real
//! clients: skopeo and containerd.

use crate::support;

use std::{path::Path, time::Duration};

use crate::support::{
    client, committed,
    registry::{make_image, skopeo, Containerd, Front, Registry},
    sha256, Proxy,
};
use serde_json::Value;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

fn config(extra: &str) -> String {
    format!("remotes:\n  reg:\n    base_url: \"{{upstream}}\"\n    package: docker\n{extra}")
}

/// A registry holding `library/app:v1` (OCI), `library/app:v2s2` (Docker
/// schema 2), `library/multi:v1` (an OCI index of two platforms) and
/// `library/multi:v2s2` (a Docker manifest list).
struct World {
    registry: Registry,
    front: Front,
    _images: tempfile::TempDir,
}

async fn world(credentials: Option<(&str, &str)>) -> World {
    let images = tempfile::tempdir().unwrap();
    let registry = Registry::start();
    let single = images.path().join("single");
    let multi = images.path().join("multi");
    make_image(&single, "v1", "linux/amd64", 2, 96 * 1024, "app");
    make_image(&multi, "v1", "linux/amd64,linux/arm64", 2, 64 * 1024, "multi");
    registry.push(&single, "v1", "library/app:v1", false);
    registry.push(&single, "v1", "library/app:v2s2", true);
    registry.push(&multi, "v1", "library/multi:v1", false);
    registry.push(&multi, "v1", "library/multi:v2s2", true);
    let front = Front::start(registry.port, credentials).await;
    World { registry, front, _images: images }
}

fn host(proxy: &Proxy) -> String {
    proxy.addr.to_string()
}

/// The raw manifest skopeo sees for `image` (`host/name:tag`), and its digest.
fn raw_manifest(image: &str) -> (String, String) {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{image}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8(out.stdout.clone()).unwrap(), format!("sha256:{}", sha256(&out.stdout)))
}

fn copy(image: &str, dest: &Path) {
    let _ = std::fs::remove_dir_all(dest);
    let (ok, err) = skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--multi-arch",
        "all",
        &format!("docker://{image}"),
        &format!("oci:{}:x", dest.display()),
    ]);
    assert!(ok, "skopeo copy {image}: {err}");
}

async fn get(url: &str, accept: &str) -> reqwest::Response {
    client().get(url).header("accept", accept).send().await.unwrap()
}

async fn json(res: reqwest::Response) -> Value {
    serde_json::from_slice(&res.bytes().await.unwrap()).unwrap()
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

async fn error_code(res: reqwest::Response) -> String {
    let json: Value = json(res).await;
    json["errors"][0]["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_through_the_mirror_once_and_then_without_upstream() {
    let mut w = world(None).await;
    let proxy = Proxy::start(&config("    cache:\n      mutable_ttl: 1\n"), &w.front.url()).await;
    let work = tempfile::tempdir().unwrap();
    let upstream = format!("127.0.0.1:{}", w.registry.port);
    let images = ["library/app:v1", "library/app:v2s2", "library/multi:v1", "library/multi:v2s2"];

    for image in images {
        let (direct, direct_digest) = raw_manifest(&format!("{upstream}/{image}"));
        let (mirrored, mirrored_digest) = raw_manifest(&format!("{}/reg/{image}", host(&proxy)));
        assert_eq!(mirrored, direct, "{image}: the mirror answers upstream's manifest, byte for byte");
        assert_eq!(mirrored_digest, direct_digest);
        copy(&format!("{}/reg/{image}", host(&proxy)), &work.path().join("first"));
    }
    // The media types are upstream's: OCI, Docker schema 2, OCI index.
    let base = proxy.url("/v2/reg/library");
    let res = get(&format!("{base}/app/manifests/v1"), ACCEPT_ALL).await;
    assert_eq!(header(&res, "content-type"), OCI_MANIFEST);
    let res = get(&format!("{base}/app/manifests/v2s2"), ACCEPT_ALL).await;
    assert_eq!(header(&res, "content-type"), DOCKER_MANIFEST);
    let res = get(&format!("{base}/multi/manifests/v2s2"), ACCEPT_ALL).await;
    assert_eq!(header(&res, "content-type"), DOCKER_LIST);
    let res = get(&format!("{base}/multi/manifests/v1"), ACCEPT_ALL).await;
    assert_eq!(header(&res, "content-type"), OCI_INDEX);
    let index_digest = header(&res, "docker-content-digest");
    let body = res.bytes().await.unwrap();
    assert_eq!(format!("sha256:{}", sha256(&body)), index_digest);
    assert_eq!(
        header(&get(&format!("{base}/multi/manifests/v1"), ACCEPT_ALL).await, "x-cache-status"),
        "HIT"
    );

    let blob_gets = w.front.count("GET", "/blobs/");
    let manifest_gets = w.front.count("GET", "/manifests/");
    assert!(blob_gets >= 8, "config and layers were fetched: {blob_gets}");
    for image in images {
        copy(&format!("{}/reg/{image}", host(&proxy)), &work.path().join("second"));
    }
    assert_eq!(w.front.count("GET", "/blobs/"), blob_gets, "a second copy fetches no blob upstream");
    assert_eq!(w.front.count("GET", "/manifests/"), manifest_gets, "nor any manifest within mutable_ttl");

    // Upstream stopped, tags expired: by tag (stale) and by digest (fresh).
    w.registry.stop();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for image in images {
        copy(&format!("{}/reg/{image}", host(&proxy)), &work.path().join("offline"));
    }
    let res = get(&format!("{base}/multi/manifests/v1"), ACCEPT_ALL).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-cache-status"), "STALE");
    copy(&format!("{}/reg/library/multi@{index_digest}", host(&proxy)), &work.path().join("by-digest"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_are_cached_per_accepted_media_types_and_by_digest() {
    let w = world(None).await;
    let proxy = Proxy::start(&config(""), &w.front.url()).await;
    let tag = proxy.url("/v2/reg/library/multi/manifests/v1");

    // A client that does not accept an OCI index is told it is unknown, as
    // upstream tells it; one that does gets the index. Each is cached apart.
    let res = get(&tag, DOCKER_MANIFEST).await;
    assert_eq!(res.status(), 404);
    assert_eq!(error_code(res).await, "MANIFEST_UNKNOWN");
    let res = get(&tag, &format!("{OCI_INDEX}, {OCI_MANIFEST}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-cache-status"), "MISS");
    let digest = header(&res, "docker-content-digest");
    let index: Value = json(res).await;
    // The same types in another order and form are the same variant.
    let res = get(&tag, &format!("{OCI_MANIFEST};q=0.9, {OCI_INDEX}, */*")).await;
    assert_eq!(header(&res, "x-cache-status"), "HIT");
    assert_eq!(w.front.count("GET", "/manifests/v1"), 2);

    // Fetched by tag, stored by digest: a pull by digest is a hit.
    let by_digest = proxy.url(&format!("/v2/reg/library/multi/manifests/{digest}"));
    let res = get(&by_digest, &format!("{OCI_INDEX}, {OCI_MANIFEST}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-cache-status"), "HIT");
    assert_eq!(w.front.count("GET", &format!("/manifests/{digest}")), 0);

    // Only the child a client asks for is fetched.
    let child = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let res = get(&proxy.url(&format!("/v2/reg/library/multi/manifests/{child}")), ACCEPT_ALL).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), OCI_MANIFEST);
    assert_eq!(w.front.count("GET", "/manifests/sha256:"), 1);

    // HEAD answers from a full fetch: the next GET is a hit; the length is exact.
    let app = proxy.url("/v2/reg/library/app/manifests/v2s2");
    let res = client().head(&app).header("accept", ACCEPT_ALL).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), DOCKER_MANIFEST);
    let length: usize = header(&res, "content-length").parse().unwrap();
    let res = get(&app, ACCEPT_ALL).await;
    assert_eq!(header(&res, "x-cache-status"), "HIT");
    assert_eq!(res.bytes().await.unwrap().len(), length);
    assert_eq!(w.front.count("HEAD", "/manifests/"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_tag_is_checked_with_a_head_and_fetched_again_only_when_it_moved() {
    let w = world(None).await;
    let proxy = Proxy::start(&config("    cache:\n      mutable_ttl: 1\n"), &w.front.url()).await;
    let tag = proxy.url("/v2/reg/library/app/manifests/v1");
    let first = get(&tag, ACCEPT_ALL).await;
    let first_digest = header(&first, "docker-content-digest");
    // The tag's lifetime counts from its commit, which may come after the
    // client has the last byte.
    committed(&proxy).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let res = get(&tag, ACCEPT_ALL).await;
    assert_eq!(header(&res, "x-cache-status"), "REVALIDATED");
    assert_eq!(header(&res, "docker-content-digest"), first_digest);
    assert_eq!(w.front.count("HEAD", "/manifests/v1"), 1);
    assert_eq!(w.front.count("GET", "/manifests/v1"), 1, "an unchanged tag costs no GET");

    // The tag moves upstream.
    let images = tempfile::tempdir().unwrap();
    make_image(images.path(), "v1", "linux/amd64", 1, 4096, "moved");
    w.registry.push(images.path(), "v1", "library/app:v1", false);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let res = get(&tag, ACCEPT_ALL).await;
    assert_eq!(res.status(), 200);
    let moved = header(&res, "docker-content-digest");
    assert_ne!(moved, first_digest);
    assert_eq!(format!("sha256:{}", sha256(&res.bytes().await.unwrap())), moved);
    assert_eq!(w.front.count("HEAD", "/manifests/v1"), 2);
    assert_eq!(w.front.count("GET", "/manifests/v1"), 2);

    // Rate limited: the cached tag is served stale, the 429 is not passed on.
    committed(&proxy).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    w.front.fail_with(429);
    let res = get(&tag, ACCEPT_ALL).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-cache-status"), "STALE");
    assert_eq!(header(&res, "docker-content-digest"), moved);
    // Nothing cached for a tag never seen: the 429 is the answer, in the registry format.
    let res = get(&proxy.url("/v2/reg/library/app/manifests/v2s2"), ACCEPT_ALL).await;
    assert_eq!(res.status(), 429);
    assert_eq!(header(&res, "retry-after"), "7");
    assert_eq!(error_code(res).await, "TOOMANYREQUESTS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_through_the_ns_route() {
    let w = world(None).await;
    let yaml = config("    registry_hosts: ['docker.io']\n");
    let proxy = Proxy::start(&yaml, &w.front.url()).await;
    let containerd = Containerd::start();
    let hosts = containerd.hosts_dir("docker.io", &format!("http://{}", host(&proxy)));
    let pull = |image: &str| {
        containerd.ctr(&[
            "image",
            "pull",
            "--snapshotter",
            "native",
            "--hosts-dir",
            hosts.to_str().unwrap(),
            image,
        ])
    };
    let (ok, out) = pull("docker.io/library/multi:v1");
    assert!(ok, "ctr pull through the mirror: {out}");
    let manifests = w.front.count("GET", "/manifests/");
    let blobs = w.front.count("GET", "/blobs/");
    assert!(manifests >= 2 && blobs >= 3, "fetched through the proxy: {manifests} manifests, {blobs} blobs");
    assert_eq!(w.front.count("HEAD", "/manifests/"), 0, "containerd's HEAD is answered from a GET");
    let (ok, out) = containerd.ctr(&["image", "ls", "-q"]);
    assert!(ok && out.contains("docker.io/library/multi:v1"), "{out}");

    // Again, from a clean containerd content store: nothing more upstream.
    let (ok, out) = containerd.ctr(&["image", "rm", "--sync", "docker.io/library/multi:v1"]);
    assert!(ok, "{out}");
    let (ok, out) = pull("docker.io/library/multi:v1");
    assert!(ok, "{out}");
    assert_eq!(w.front.count("GET", "/blobs/"), blobs);
    assert_eq!(w.front.count("GET", "/manifests/"), manifests);

    // A registry host no remote serves is a registry error, not a fallback.
    let res = get(&proxy.url("/v2/library/multi/manifests/v1?ns=quay.io"), ACCEPT_ALL).await;
    assert_eq!(res.status(), 404);
    assert_eq!(error_code(res).await, "NAME_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_auth_registry_is_answered_with_cached_tokens() {
    let w = world(Some(("puller", "s3cret-pw"))).await;
    let yaml = config("    username: puller\n    password: s3cret-pw\n");
    let proxy = Proxy::start(&yaml, &w.front.url()).await;
    let work = tempfile::tempdir().unwrap();
    copy(&format!("{}/reg/library/app:v1", host(&proxy)), &work.path().join("a"));
    assert_eq!(w.front.token_requests(), 1, "one token for the repository, reused for every blob");
    assert!(w.front.count("GET", "/blobs/") >= 3);
    copy(&format!("{}/reg/library/multi:v1", host(&proxy)), &work.path().join("b"));
    assert_eq!(w.front.token_requests(), 2, "another repository, another token");

    // Without credentials the token server refuses: the client is told why.
    let anonymous = Proxy::start(&config(""), &w.front.url()).await;
    let res = get(&anonymous.url("/v2/reg/library/app/manifests/v1"), ACCEPT_ALL).await;
    assert_eq!(res.status(), 403);
    let text = res.text().await.unwrap();
    assert!(text.contains("DENIED") && !text.contains("s3cret"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_fetch_each_blob_once() {
    let w = world(None).await;
    let proxy = Proxy::start(&config(""), &w.front.url()).await;
    let res = get(&proxy.url("/v2/reg/library/app/manifests/v1"), ACCEPT_ALL).await;
    let manifest: Value = json(res).await;
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_owned()];
    for layer in manifest["layers"].as_array().unwrap() {
        digests.push(layer["digest"].as_str().unwrap().to_owned());
    }
    let mut pulls = Vec::new();
    for _ in 0..8 {
        for digest in &digests {
            let url = proxy.url(&format!("/v2/reg/library/app/blobs/{digest}"));
            let digest = digest.clone();
            pulls.push(tokio::spawn(async move {
                let res = client().get(&url).send().await.unwrap();
                assert_eq!(res.status(), 200);
                let bytes = res.bytes().await.unwrap();
                assert_eq!(format!("sha256:{}", sha256(&bytes)), digest);
            }));
        }
    }
    for pull in pulls {
        pull.await.unwrap();
    }
    for digest in &digests {
        assert_eq!(w.front.count("GET", &format!("/blobs/{digest}")), 1, "{digest}");
    }

    // Three skopeo copies of a multi-platform image at once.
    let work = tempfile::tempdir().unwrap();
    let copies: Vec<_> = (0..3)
        .map(|i| {
            let image = format!("{}/reg/library/multi:v1", host(&proxy));
            let dest = work.path().join(format!("copy-{i}"));
            std::thread::spawn(move || copy(&image, &dest))
        })
        .collect();
    for c in copies {
        c.join().unwrap();
    }
    let mut blobs = w.front.paths("GET", "/library/multi/blobs/");
    let fetched = blobs.len();
    blobs.sort();
    blobs.dedup();
    assert!(fetched >= 6, "{blobs:?}");
    assert_eq!(fetched, blobs.len(), "one upstream request per blob");

    // A Range of a cached blob, and HEAD with the exact length.
    let url = proxy.url(&format!("/v2/reg/library/app/blobs/{}", digests[1]));
    let res = client().get(&url).header("range", "bytes=0-9").send().await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap().len(), 10);
    let res = client().head(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "docker-content-digest"), digests[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_blob_is_refused_and_never_cached() {
    let w = world(None).await;
    let proxy = Proxy::start(&config(""), &w.front.url()).await;
    let res = get(&proxy.url("/v2/reg/library/app/manifests/v1"), ACCEPT_ALL).await;
    let manifest: Value = json(res).await;
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let url = proxy.url(&format!("/v2/reg/library/app/blobs/{layer}"));

    w.front.corrupt(&layer);
    // The transfer starts as upstream's 200 and breaks off; when the check
    // fails before the server has flushed the head, the connection closes
    // with no answer at all, or the client hears a 502. Never a whole 200.
    let outcome = match client().get(&url).send().await {
        Ok(res) if res.status() == 200 => res.bytes().await.map(|b| b.len()).map_err(|e| e.to_string()),
        Ok(res) if res.status() == 502 => Err("502".into()),
        Ok(res) => panic!("a corrupted blob answered {}", res.status()),
        Err(e) => Err(e.to_string()),
    };
    assert!(outcome.is_err(), "the body breaks off instead of ending as a complete 200");
    // A client that waits for the whole body (Range) is told plainly.
    let res = client().get(&url).header("range", "bytes=0-0").send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(error_code(res).await, "UNAVAILABLE");

    w.front.heal();
    let res = client().get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-cache-status"), "MISS", "the corrupt bytes were not cached");
    assert_eq!(format!("sha256:{}", sha256(&res.bytes().await.unwrap())), layer);
    assert_eq!(w.front.count("GET", &format!("/blobs/{layer}")), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_errors_and_push_answer_in_the_registry_format() {
    let w = world(None).await;
    let yaml = config("    immutable_patterns: ['^library/app/']\n");
    let proxy = Proxy::start(&yaml, &w.front.url()).await;

    let res = client().get(proxy.url("/v2/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "docker-distribution-api-version"), "registry/2.0");

    // A denied image is denied whole, tags included, without asking upstream.
    for path in ["library/multi/manifests/v1", "library/multi/tags/list"] {
        let res = get(&proxy.url(&format!("/v2/reg/{path}")), ACCEPT_ALL).await;
        assert_eq!(res.status(), 403, "{path}");
        let json: Value = json(res).await;
        assert_eq!(json["errors"][0]["code"], "DENIED");
        assert!(json["errors"][0]["message"].is_string() && json["errors"][0]["detail"].is_object());
    }
    assert_eq!(w.front.total(), 0);
    let res = get(&proxy.url("/v2/reg/library/app/manifests/v1"), ACCEPT_ALL).await;
    assert_eq!(res.status(), 200);

    let missing = format!("sha256:{}", "0".repeat(64));
    let cases = [
        ("GET", "/v2/reg/library/app/manifests/nope".to_owned(), 404, "MANIFEST_UNKNOWN"),
        ("GET", format!("/v2/reg/library/app/blobs/{missing}"), 404, "BLOB_UNKNOWN"),
        ("GET", "/v2/reg/library/app/blobs/sha256:xyz".to_owned(), 400, "DIGEST_INVALID"),
        ("GET", "/v2/reg/Library/App/manifests/v1".to_owned(), 400, "NAME_INVALID"),
        ("GET", "/v2/nosuch/app/manifests/v1".to_owned(), 404, "NAME_UNKNOWN"),
        ("PUT", "/v2/reg/library/app/manifests/v1".to_owned(), 405, "UNSUPPORTED"),
        ("DELETE", format!("/v2/reg/library/app/blobs/{missing}"), 405, "UNSUPPORTED"),
        ("POST", "/v2/reg/library/app/blobs/uploads/".to_owned(), 405, "UNSUPPORTED"),
    ];
    for (method, path, status, code) in cases {
        let res = client().request(method.parse().unwrap(), proxy.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), status, "{method} {path}");
        assert_eq!(header(&res, "content-type"), "application/json");
        assert_eq!(error_code(res).await, code, "{method} {path}");
    }
    // Purging a tag: every media-type variant goes, and the next pull asks upstream.
    let before = w.front.count("GET", "/library/app/manifests/v1");
    let res = client().delete(proxy.url("/cache/reg/library/app/manifests/v1")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = get(&proxy.url("/v2/reg/library/app/manifests/v1"), ACCEPT_ALL).await;
    assert_eq!(header(&res, "x-cache-status"), "MISS");
    assert_eq!(w.front.count("GET", "/library/app/manifests/v1"), before + 1);

    // The generic artifact routes point a docker remote's users at /v2/.
    let res = client().get(proxy.url("/api/reg/library/app/manifests/v1")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("/v2/reg/"));
    let res = client().get(proxy.url("/v2/reg/library/app/tags/list")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let tags: Value = json(res).await;
    assert_eq!(tags["name"], "library/app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_layer_through_two_remotes_is_stored_once() {
    let w = world(None).await;
    let yaml = "remotes:\n  one:\n    base_url: \"{upstream}\"\n    package: docker\n  two:\n    base_url: \"{upstream}\"\n    package: docker\n";
    let proxy = Proxy::start(yaml, &w.front.url()).await;
    let res = get(&proxy.url("/v2/one/library/app/manifests/v1"), ACCEPT_ALL).await;
    let manifest: Value = json(res).await;
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    for remote in ["one", "two"] {
        let res =
            client().get(proxy.url(&format!("/v2/{remote}/library/app/blobs/{layer}"))).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(format!("sha256:{}", sha256(&res.bytes().await.unwrap())), layer);
    }
    let hex = layer.trim_start_matches("sha256:");
    let copies = proxy.blob_files().iter().filter(|(p, _)| p.to_string_lossy().contains(hex)).count();
    assert_eq!(copies, 1, "one stored copy: {:?}", proxy.blob_files());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basic_auth_registry_gets_the_credentials_once_it_asks() {
    let images = tempfile::tempdir().unwrap();
    let registry = Registry::start();
    make_image(images.path(), "v1", "linux/amd64", 2, 4096, "basic");
    registry.push(images.path(), "v1", "team/tool:v1", false);
    let front = Front::start_basic(registry.port, "ci", "basic-pw").await;
    let yaml = config("    username: ci\n    password: basic-pw\n");
    let proxy = Proxy::start(&yaml, &front.url()).await;
    let work = tempfile::tempdir().unwrap();
    copy(&format!("{}/reg/team/tool:v1", host(&proxy)), &work.path().join("a"));
    assert!(front.count("GET", "/blobs/") >= 3);
    assert_eq!(front.unauthorized(), 1, "after the first challenge every request carries the credentials");
    assert_eq!(front.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_registry_tokens_through_redis() {
    let w = world(Some(("puller", "s3cret-pw"))).await;
    let yaml = config("    username: puller\n    password: s3cret-pw\n");
    let prefix = format!("artifactapi-test:tokens-{}:", support::backends::unique());
    let env = [("REDIS_URL", "redis://127.0.0.1:6379"), ("REDIS_PREFIX", prefix.as_str())];
    // Two replicas with stores of their own: the second must fetch upstream too.
    let a = Proxy::start_with(&yaml, &w.front.url(), &env).await;
    let b = Proxy::start_with(&yaml, &w.front.url(), &env).await;
    let res = get(&a.url("/v2/reg/library/app/manifests/v1"), ACCEPT_ALL).await;
    assert_eq!(res.status(), 200);
    assert_eq!(w.front.token_requests(), 1);
    let res = get(&b.url("/v2/reg/library/app/manifests/v1"), ACCEPT_ALL).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-cache-status"), "MISS", "the second replica asked upstream itself");
    assert_eq!(w.front.count("GET", "/manifests/v1"), 3, "a's 401 and retry, b's first try");
    assert_eq!(w.front.token_requests(), 1, "with the token the first replica shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_s3_postgresql_and_redis_mirror_as_one() {
    use support::backends::{unique, Garage, PgDatabase};
    let w = world(None).await;
    let garage = Garage::start();
    let db = PgDatabase::create();
    let mut env = garage.env(&format!("docker-{}", unique()));
    env.push(("DATABASE_URL".into(), db.url()));
    env.push(("REDIS_URL".into(), "redis://127.0.0.1:6379".into()));
    env.push(("REDIS_PREFIX".into(), format!("artifactapi-test:docker-{}:", unique())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let a = Proxy::start_with(&config(""), &w.front.url(), &env).await;
    let b = Proxy::start_with(&config(""), &w.front.url(), &env).await;
    let work = tempfile::tempdir().unwrap();

    copy(&format!("{}/reg/library/multi:v1", host(&a)), &work.path().join("a"));
    let (blobs, manifests) = (w.front.count("GET", "/blobs/"), w.front.count("GET", "/manifests/"));
    assert!(blobs >= 6, "{blobs}");
    copy(&format!("{}/reg/library/multi:v1", host(&b)), &work.path().join("b"));
    assert_eq!(
        w.front.count("GET", "/blobs/"),
        blobs,
        "the second replica finds every blob in the shared store"
    );
    assert_eq!(w.front.count("GET", "/manifests/"), manifests);
    // What one replica fetched, the other answers from the shared store.
    let res = get(&a.url("/v2/reg/library/app/manifests/v1"), ACCEPT_ALL).await;
    assert_eq!(header(&res, "x-cache-status"), "MISS");
    let res = get(&b.url("/v2/reg/library/app/manifests/v1"), ACCEPT_ALL).await;
    assert_eq!(header(&res, "x-cache-status"), "HIT");
}
