//! A Terraform / OpenTofu provider network mirror at the protocol level (no
//! terraform or tofu binary can be installed here): the requests `init`
//! makes, in order, against a provider registry the test serves (discovery,
//! versions and download answers) with the archives on a second server.

use crate::support::{client, committed, sha256, Proxy, Upstream};

async fn json(url: &str) -> (u16, serde_json::Value) {
    let res = client().get(url).send().await.unwrap();
    let status = res.status().as_u16();
    (status, serde_json::from_slice(&res.bytes().await.unwrap()).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_serves_index_version_documents_and_checked_archives() {
    let registry = Upstream::start().await;
    let files = Upstream::start().await;
    let platforms = [("linux", "amd64"), ("darwin", "arm64")];
    let archive = |os: &str, arch: &str| format!("provider for {os} {arch}").into_bytes();
    registry.put(
        "/registry/v1/providers/acme/widget/versions",
        serde_json::json!({"versions": [
            {"version": "1.0.0", "protocols": ["5.0"], "platforms": [{"os": "linux", "arch": "amd64"}, {"os": "darwin", "arch": "arm64"}]},
            {"version": "1.1.0", "protocols": ["5.0"], "platforms": [{"os": "linux", "arch": "amd64"}]}
        ]})
        .to_string(),
        &[("content-type", "application/json")],
    );
    for (version, os, arch, bytes) in [
        ("1.0.0", "linux", "amd64", archive("linux", "amd64")),
        ("1.0.0", "darwin", "arm64", archive("darwin", "arm64")),
        // 1.1.0's answer promises other bytes than the archive has.
        ("1.1.0", "linux", "amd64", b"the real 1.1.0".to_vec()),
    ] {
        let file = format!("terraform-provider-widget_{version}_{os}_{arch}.zip");
        let answer = serde_json::json!({"protocols": ["5.0"], "os": os, "arch": arch, "filename": file,
            "download_url": format!("{}/releases/{file}", files.url()), "shasum": sha256(&bytes)});
        registry.put(
            &format!("/registry/v1/providers/acme/widget/{version}/download/{os}/{arch}"),
            answer.to_string(),
            &[],
        );
        let served = if version == "1.1.0" { b"a planted provider".to_vec() } else { bytes };
        files.put(&format!("/releases/{file}"), served, &[]);
    }
    // The registry's discovery: the protocol under a path of its own.
    registry.put("/.well-known/terraform.json", r#"{"providers.v1": "/registry/v1/providers/"}"#, &[]);
    let yaml = "remotes:\n  tf:\n    base_url: \"{upstream}/\"\n    package: terraform\n    \
                registry_hosts: [registry.terraform.io]\n    username: robot\n    password: secret\n";
    let proxy = Proxy::start(yaml, &registry.url()).await;
    let mirror = proxy.url("/api/tf/registry.terraform.io/acme/widget");

    // What init asks: the versions, one version's archives, an archive.
    let (status, index) = json(&format!("{mirror}/index.json")).await;
    assert_eq!((status, index), (200, serde_json::json!({"versions": {"1.0.0": {}, "1.1.0": {}}})));
    let (status, version) = json(&format!("{mirror}/1.0.0.json")).await;
    assert_eq!(status, 200, "{version}");
    for (os, arch) in platforms {
        let entry = &version["archives"][format!("{os}_{arch}")];
        assert_eq!(
            entry["hashes"],
            serde_json::json!([format!("zh:{}", sha256(&archive(os, arch)))]),
            "{version}"
        );
        // The archive by its relative URL, cold then warm.
        let url = format!("{mirror}/{}", entry["url"].as_str().unwrap());
        for cache in ["MISS", "HIT"] {
            let res = client().get(&url).send().await.unwrap();
            assert_eq!(res.headers()["x-cache-status"], cache, "{url}");
            assert!(res.bytes().await.unwrap().as_ref() == archive(os, arch).as_slice());
            committed(&proxy).await;
        }
    }
    assert_eq!(files.count("GET", "/releases/terraform-provider-widget_1.0.0_linux_amd64.zip"), 1);
    assert!(
        files.requests().iter().all(|s| !s.headers.contains_key("authorization")),
        "the archive host gets no credentials"
    );
    assert!(registry.requests().iter().all(|s| s.headers.contains_key("authorization")));
    // The protocol is where the discovery says, asked once per document.
    assert!(registry
        .requests()
        .iter()
        .all(|s| s.path.starts_with("/registry/") || s.path.starts_with("/.well-known/")));
    assert_eq!(
        registry.count("GET", "/registry/v1/providers/acme/widget/versions"),
        2,
        "index.json, 1.0.0.json"
    );

    // A shasum mismatch: refused and not cached. A client that streams the
    // archive sees its transfer break off; one that asks for a range waits
    // for the check and is told why.
    let (_, newer) = json(&format!("{mirror}/1.1.0.json")).await;
    let url = format!("{mirror}/{}", newer["archives"]["linux_amd64"]["url"].as_str().unwrap());
    let archive = "/releases/terraform-provider-widget_1.1.0_linux_amd64.zip";
    let mismatch = format!(
        "digest mismatch: the metadata promised Sha256 {}, upstream sent Sha256 {}",
        sha256(b"the real 1.1.0"),
        sha256(b"a planted provider")
    );
    match client().get(&url).send().await {
        Ok(res) if res.status() == 200 => {
            assert!(
                res.bytes().await.is_err(),
                "an archive that does not match its shasum is never served whole"
            )
        }
        Ok(res) => {
            let (status, body) = (res.status(), res.text().await.unwrap());
            assert!(status == 502 && body.contains(&mismatch), "{status} {body}");
        }
        // The check failed before the answer's head went out: the
        // connection closes without one.
        Err(e) => assert!(!e.is_connect(), "{e}"),
    }
    committed(&proxy).await;
    assert_eq!(files.count("GET", archive), 1);
    let res = client().get(&url).header("range", "bytes=0-").send().await.unwrap();
    let (status, body) = (res.status(), res.text().await.unwrap());
    assert_eq!(status, 502, "{body}");
    assert!(body.contains(&mismatch), "the refusal names the shasum the archive broke: {body}");
    committed(&proxy).await;
    assert_eq!(files.count("GET", archive), 2, "and never cached");

    // A version the registry does not list.
    let res = client().get(format!("{mirror}/9.9.9.json")).send().await.unwrap();
    let (status, body) = (res.status(), res.text().await.unwrap());
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("no version 9.9.9"), "the refusal names the version: {body}");

    // The registry down: the mirror answers from the cache.
    for path in [
        "/registry/v1/providers/acme/widget/versions",
        "/registry/v1/providers/acme/widget/1.0.0/download/linux/amd64",
        "/.well-known/terraform.json",
    ] {
        registry.fail(path, 503);
    }
    files.fail("/releases/terraform-provider-widget_1.0.0_linux_amd64.zip", 503);
    assert_eq!(json(&format!("{mirror}/index.json")).await.0, 200);
    assert_eq!(json(&format!("{mirror}/1.0.0.json")).await.0, 200);
    let zip = format!("{mirror}/1.0.0/linux_amd64/terraform-provider-widget_1.0.0_linux_amd64.zip");
    assert_eq!(client().get(&zip).send().await.unwrap().status(), 200);

    // A hostname this remote does not mirror.
    assert_eq!(json(&proxy.url("/api/tf/other.example/acme/widget/index.json")).await.0, 404);
}
