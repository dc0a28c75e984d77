//! Upstream credentials: read from the environment with `${VAR}`, sent to
//! their own upstream, and never shown in `/config`, answers or logs.

use std::{
    io::Read,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::{client, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_environment_reach_upstream_and_nowhere_else() {
    let upstream = Upstream::start().await;
    upstream.put("/ok.tar.gz", "fine", &[]);
    let secret = "pw-9f3a7c1e-very-secret";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("remotes.yaml"),
        format!(
            "remotes:\n  files:\n    base_url: \"{}\"\n    username: robot\n    password: '${{ARTIFACT_TEST_TOKEN}}'\n",
            upstream.url()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_artifactapi"))
        .env("CONFIG_PATH", dir.path().join("remotes.yaml"))
        .env("DATA_DIR", dir.path().join("data"))
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("ARTIFACT_TEST_TOKEN", secret)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Find the address in the first log lines without blocking the runtime.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        let mut sent = false;
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if !sent {
                let text = String::from_utf8_lossy(&all);
                if let Some(rest) = text.split("addr=").nth(1) {
                    if let Some(addr) = rest.split_whitespace().next() {
                        let _ = tx.send(addr.to_owned());
                        sent = true;
                    }
                }
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let addr =
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)).unwrap()).await.unwrap();
    let base = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while client().get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let res = client().get(format!("{base}/api/files/ok.tar.gz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = upstream.requests();
    let auth = seen[0].headers["authorization"].to_str().unwrap().to_owned();
    assert!(auth.starts_with("Basic "), "the upstream got the credentials");

    let mut answers = String::new();
    for path in ["/api/files/missing.tar.gz", "/api/files/status/503/x.tgz", "/config", "/", "/health"] {
        let res = client().get(format!("{base}{path}")).send().await.unwrap();
        answers.push_str(&format!("{:?}", res.headers()));
        answers.push_str(&res.text().await.unwrap());
    }
    assert!(answers.contains("\"password\":\"***\""), "{answers}");

    child.kill().unwrap();
    child.wait().unwrap();
    let logs = reader.join().unwrap();
    let mut err_logs = String::new();
    stderr.read_to_string(&mut err_logs).unwrap();
    let basic = auth.trim_start_matches("Basic ");
    for (what, text) in [("answers", &answers), ("stdout", &logs), ("stderr", &err_logs)] {
        assert!(!text.contains(secret), "{what} show the secret");
        assert!(!text.contains(basic), "{what} show the encoded credentials");
    }
    assert!(logs.contains("fill started"), "the logs were captured: {logs}");
}

#[test]
fn a_missing_environment_variable_stops_start_up_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("remotes.yaml");
    std::fs::write(
        &file,
        "remotes:\n  hub:\n    base_url: https://registry.example.com\n    username: u\n    password: '${NOT_SET_ANYWHERE_42}'\n",
    )
    .unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_artifactapi")).arg("check-config").arg(&file).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("remotes.hub.password: environment variable NOT_SET_ANYWHERE_42 is not set"),
        "{text}"
    );
}
