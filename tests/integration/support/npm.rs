//! npm's side of the tests: a verdaccio registry, and npm itself with no
//! configuration from this machine.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

fn verdaccio_dir() -> PathBuf {
    let dir = std::env::var("ARTIFACTAPI_TEST_VERDACCIO").unwrap_or_else(|_| {
        format!("{}/.cache/artifactapi/verdaccio", std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
    });
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("node_modules/.bin/verdaccio").exists(),
        "verdaccio is not installed in {}: the README's test command (./test.sh) installs it",
        dir.display()
    );
    dir
}

/// A verdaccio registry on a free port, storing under a directory of its own.
pub struct Verdaccio {
    child: Child,
    pub url: String,
}

impl Verdaccio {
    pub fn start(root: &Path) -> Self {
        let bin = verdaccio_dir().join("node_modules/.bin/verdaccio");
        let config = root.join("verdaccio.yaml");
        std::fs::write(
            &config,
            format!(
                "storage: {storage}\nauth:\n  htpasswd:\n    file: {root}/htpasswd\nuplinks: {{}}\n\
                 packages:\n  '@*/*':\n    access: $all\n    publish: $all\n  '**':\n    access: $all\n    publish: $all\n\
                 middlewares:\n  audit:\n    enabled: false\nweb:\n  enable: false\nlog: {{ type: stdout, format: pretty, level: warn }}\n",
                storage = root.join("storage").display(),
                root = root.display()
            ),
        )
        .unwrap();
        let (child, port) = super::start_on_free_port(
            |port| {
                Command::new(&bin)
                    .arg("--config")
                    .arg(&config)
                    .arg("--listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            },
            |port| format!("http://127.0.0.1:{port}/-/ping"),
        );
        Self { child, url: format!("http://127.0.0.1:{port}") }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Verdaccio {
    fn drop(&mut self) {
        self.stop();
    }
}

/// npm with no configuration from this machine: its own user and global
/// config, its own cache, lockfiles with `resolved` URLs.
pub fn npm(root: &Path, registry: &str, args: &[&str], cwd: &Path) -> Command {
    let userconfig = root.join("npmrc");
    let host = registry.trim_start_matches("http://").trim_end_matches('/');
    std::fs::write(&userconfig, format!("registry={registry}\n//{host}/:_authToken=test-token\n")).unwrap();
    std::fs::write(root.join("global-npmrc"), "").unwrap();
    let mut cmd = Command::new("npm");
    cmd.args(args)
        .arg("--userconfig")
        .arg(&userconfig)
        .arg("--globalconfig")
        .arg(root.join("global-npmrc"))
        .args(["--registry", registry, "--no-audit", "--no-fund", "--omit-lockfile-registry-resolved=false"])
        .current_dir(cwd)
        .env("NO_PROXY", "*")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("npm_config_registry");
    cmd
}

pub async fn run(mut cmd: Command) -> (bool, String) {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A package directory for `npm publish`: `name`@`version` with `deps` (JSON members).
pub fn package(dir: &Path, name: &str, version: &str, deps: &str) -> PathBuf {
    let path = dir.join(name.replace('/', "__"));
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(
        path.join("package.json"),
        format!(r#"{{"name":"{name}","version":"{version}","main":"index.js","dependencies":{{{deps}}}}}"#),
    )
    .unwrap();
    std::fs::write(path.join("index.js"), format!("module.exports = {name:?};\n")).unwrap();
    path
}
