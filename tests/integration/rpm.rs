//! An RPM repository through the proxy with dnf: `makecache` and `install`
//! from a createrepo_c repository served by nginx; `repomd.xml` expires by
//! `mutable_ttl` while packages stay cached; installs work with the upstream
//! down.

use std::{path::Path, process::Command, time::Duration};

use crate::support::{nginx, Proxy};

fn build_rpm(root: &Path) -> std::path::PathBuf {
    let spec = root.join("hello.spec");
    std::fs::write(
        &spec,
        "Name: hello-artifact\nVersion: 1.0\nRelease: 1\nSummary: a test package\nLicense: MIT\nBuildArch: noarch\n\
         %description\nA test package.\n%install\nmkdir -p %{buildroot}/usr/share/hello-artifact\n\
         echo hello > %{buildroot}/usr/share/hello-artifact/hello.txt\n%files\n/usr/share/hello-artifact/hello.txt\n",
    )
    .unwrap();
    let out = Command::new("rpmbuild")
        .arg("-bb")
        .arg("--define")
        .arg(format!("_topdir {}", root.join("rpmbuild").display()))
        .arg(&spec)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("rpmbuild runs (the test command installs rpm)");
    assert!(out.status.success(), "rpmbuild: {}", String::from_utf8_lossy(&out.stderr));
    root.join("rpmbuild/RPMS/noarch/hello-artifact-1.0-1.noarch.rpm")
}

async fn dnf(root: &Path, installroot: &str, repo: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("dnf");
    cmd.args([
        "-y",
        "--setopt=reposdir=/dev/null",
        "--releasever=1",
        "--nogpgcheck",
        "--setopt=install_weak_deps=False",
    ])
    .arg(format!("--repofrompath=t,{repo}"))
    .arg("--repo=t")
    .arg(format!("--installroot={}", root.join(installroot).display()))
    .args(args)
    .env("NO_PROXY", "*")
    .env_remove("HTTP_PROXY")
    .env_remove("http_proxy");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnf_installs_through_the_proxy_and_repomd_expires_while_packages_stay_cached() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let rpm = build_rpm(root);
    let repo = root.join("www/el/noarch");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::copy(&rpm, repo.join("hello-artifact-1.0-1.noarch.rpm")).unwrap();
    let status = Command::new("createrepo_c").arg("-q").arg(root.join("www/el")).status().unwrap();
    assert!(status.success());

    let (nginx, port) = nginx::start(root, "");
    let config = "remotes:\n  rpm:\n    base_url: \"{upstream}\"\n    package: rpm\n    immutable_patterns: ['\\.rpm$']\n    cache: { mutable_ttl: 2 }\n";
    let proxy = Proxy::start(config, &format!("http://127.0.0.1:{port}/el")).await;
    let repo_url = proxy.url("/api/v1/remote/rpm/");

    let (ok, log) = dnf(root, "ir1", &repo_url, &["makecache"]).await;
    assert!(ok, "dnf makecache through the proxy failed:\n{log}");
    let (ok, log) = dnf(root, "ir1", &repo_url, &["install", "hello-artifact"]).await;
    assert!(ok, "dnf install through the proxy failed:\n{log}");
    assert!(root.join("ir1/usr/share/hello-artifact/hello.txt").exists());
    assert_eq!(nginx::logged(root, "GET /el/repodata/repomd.xml"), 1);
    assert_eq!(nginx::logged(root, "hello-artifact-1.0-1.noarch.rpm"), 1);

    // After mutable_ttl the repository metadata is checked again; the package is not.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (ok, log) = dnf(root, "ir2", &repo_url, &["install", "hello-artifact"]).await;
    assert!(ok, "a second dnf install failed:\n{log}");
    assert!(root.join("ir2/usr/share/hello-artifact/hello.txt").exists());
    assert_eq!(nginx::logged(root, "GET /el/repodata/repomd.xml"), 2, "repomd.xml expired and was checked");
    assert_eq!(nginx::logged(root, "hello-artifact-1.0-1.noarch.rpm"), 1, "the package stayed cached");

    // With the upstream down (and the metadata expired), dnf still installs.
    drop(nginx);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (ok, log) = dnf(root, "ir3", &repo_url, &["install", "hello-artifact"]).await;
    assert!(ok, "dnf install with the upstream down failed:\n{log}");
    assert!(root.join("ir3/usr/share/hello-artifact/hello.txt").exists());
}
