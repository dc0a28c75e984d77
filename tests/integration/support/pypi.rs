//! PyPI's side of the tests: the venv with pip, uv and pypiserver, wheels,
//! a pypiserver, and a static PEP 691 index.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

/// The venv with pip, uv and pypiserver the test command made.
pub fn venv() -> PathBuf {
    let dir = std::env::var("ARTIFACTAPI_TEST_VENV").unwrap_or_else(|_| {
        format!("{}/.cache/artifactapi/test-venv", std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
    });
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("bin/pypi-server").exists() && dir.join("bin/uv").exists(),
        "pypiserver and uv are not installed in {}: the README's test command (./test.sh) installs them",
        dir.display()
    );
    dir
}

/// Builds a wheel of `name` `version` requiring `requires` into `dir`.
pub fn make_wheel(dir: &Path, name: &str, version: &str, requires: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/make_wheel.py");
    let status =
        Command::new("python3").arg(script).arg(dir).args([name, version]).args(requires).status().unwrap();
    assert!(status.success());
}

/// pypiserver on a free port, serving a directory of packages.
pub struct PypiServer {
    child: Child,
    pub url: String,
}

impl PypiServer {
    pub fn start(venv: &Path, packages: &Path) -> Self {
        let (child, port) = super::start_on_free_port(
            |port| {
                Command::new(venv.join("bin/pypi-server"))
                    .args(["run", "-i", "127.0.0.1", "-p", &port.to_string(), "-a", ".", "-P", "."])
                    .args(["--disable-fallback", "--server", "paste", "--hash-algo", "sha256"])
                    .arg(packages)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            },
            |port| format!("http://127.0.0.1:{port}/simple/"),
        );
        Self { child, url: format!("http://127.0.0.1:{port}") }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PypiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client command with no configuration, cache or proxy from this machine.
pub fn clean(cmd: &mut Command, home: &Path) {
    cmd.env("HOME", home)
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("PIP_FIND_LINKS", "")
        .env("PIP_NO_INDEX", "")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("UV_NO_CONFIG", "1")
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("NO_PROXY", "*")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy");
}

pub async fn run(mut cmd: Command) -> (bool, String) {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// pip installs `alpha` from `index` into `target`.
pub async fn pip_install(venv: &Path, index: &str, target: &Path, home: &Path) -> (bool, String) {
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args(["-m", "pip", "install", "--no-cache-dir", "--index-url", index, "--target"])
        .arg(target)
        .arg("alpha");
    clean(&mut cmd, home);
    run(cmd).await
}

/// uv installs `alpha` from `index` into `target`.
pub async fn uv_install(venv: &Path, index: &str, target: &Path, home: &Path) -> (bool, String) {
    let mut cmd = Command::new(venv.join("bin/uv"));
    cmd.args(["pip", "install", "--no-cache", "--python"])
        .arg(venv.join("bin/python"))
        .args(["--index-url", index, "--target"])
        .arg(target)
        .arg("alpha");
    clean(&mut cmd, home);
    run(cmd).await
}

/// Writes a static simple index: for each wheel, an HTML page and a PEP 691
/// JSON page with relative links, sha256 hashes and PEP 658 core metadata.
pub fn static_index(www: &Path, wheels: &[(&str, &str)]) {
    for (name, version) in wheels {
        let file = format!("{name}-{version}-py3-none-any.whl");
        let wheel = std::fs::read(www.join("packages").join(&file)).unwrap();
        let metadata = std::fs::read(www.join("packages").join(format!("{file}.metadata"))).unwrap();
        let (sha, meta_sha) = (super::sha256(&wheel), super::sha256(&metadata));
        let dir = www.join("simple").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("index.html"),
            format!(
                "<!DOCTYPE html><html><body><a href=\"../../packages/{file}#sha256={sha}\" data-dist-info-metadata=\"sha256={meta_sha}\" data-core-metadata=\"sha256={meta_sha}\">{file}</a></body></html>"
            ),
        )
        .unwrap();
        let json = serde_json::json!({
            "meta": {"api-version": "1.1"},
            "name": name,
            "versions": [version],
            "files": [{
                "filename": file,
                "url": format!("../../packages/{file}"),
                "hashes": {"sha256": sha},
                "core-metadata": {"sha256": meta_sha},
                "dist-info-metadata": {"sha256": meta_sha},
            }],
        });
        std::fs::write(dir.join("index.v1_json"), json.to_string()).unwrap();
    }
}

/// nginx serving `root/www` as a static PEP 691 index: JSON pages for
/// clients that accept them, HTML otherwise.
pub fn serve_static_index(root: &Path) -> (super::nginx::Kill, u16) {
    let server = r#"
        location /simple/ {
            index $simple_index;
            add_header Vary Accept;
            types { application/vnd.pypi.simple.v1+json v1_json; text/html html; }
        }
        location /packages/ { types { application/octet-stream whl; text/plain metadata; } }
    "#;
    std::fs::write(
        root.join("map.conf"),
        "map $http_accept $simple_index { default index.html; \"~application/vnd\\.pypi\\.simple\\.v1\\+json\" index.v1_json; }",
    )
    .unwrap();
    super::nginx::start_with(root, server, &format!("include {}/map.conf;", root.display()))
}
