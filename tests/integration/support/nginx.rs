//! nginx as an upstream for tests.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A child process that is killed when dropped. (nginx runs without a master
/// process, so that killing it leaves no orphaned worker behind.)
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn nginx() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("nginx is not installed: the README's test command (./test.sh) installs it");
}

/// Starts nginx on a free port. A port found free can be taken by another
/// test before nginx binds it, so nginx proves it is the one answering by
/// serving a file with a value only this test knows; otherwise, another port.
/// The access log starts empty once nginx is ready. `server_extra` goes
/// into the `server` block; files are served from `root/www`.
pub fn start(root: &Path, server_extra: &str) -> (Kill, u16) {
    start_with(root, server_extra, "")
}

/// Like [`start`], with `http_extra` in the `http` block.
pub fn start_with(root: &Path, server_extra: &str, http_extra: &str) -> (Kill, u16) {
    start_listening(root, server_extra, http_extra, "", &[])
}

/// nginx over TLS (`server_extra` names the certificates); `curl` proves it
/// answers with `curl_args` (a CA, a client certificate).
pub fn start_tls(root: &Path, server_extra: &str, curl_args: &[&str]) -> (Kill, u16) {
    start_listening(root, server_extra, "", " ssl", curl_args)
}

fn start_listening(
    root: &Path,
    server_extra: &str,
    http_extra: &str,
    listen_extra: &str,
    curl_args: &[&str],
) -> (Kill, u16) {
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::create_dir_all(root.join("nginx-tmp")).unwrap();
    for _ in 0..10 {
        let port = free_port();
        let nonce = format!("{port}-{}-{:?}", std::process::id(), Instant::now());
        std::fs::write(root.join("www/ready.txt"), &nonce).unwrap();
        let conf = format!(
            "daemon off; master_process off; pid {r}/nginx.pid; error_log {r}/nginx-error.log;
             user root;
             events {{ worker_connections 64; }}
             http {{
               default_type application/octet-stream;
               {http_extra}
               log_format counted '$remote_addr:$remote_port conn=$connection/$connection_requests \"$request\" $status $body_bytes_sent \"$http_user_agent\" $msec';
               access_log {r}/access.log counted;
               client_body_temp_path {r}/nginx-tmp/body; proxy_temp_path {r}/nginx-tmp/proxy;
               fastcgi_temp_path {r}/nginx-tmp/fcgi; uwsgi_temp_path {r}/nginx-tmp/uwsgi; scgi_temp_path {r}/nginx-tmp/scgi;
               server {{ listen 127.0.0.1:{port}{listen_extra}; root {r}/www; {server_extra} }}
             }}",
            r = root.display()
        );
        std::fs::write(root.join("nginx.conf"), conf).unwrap();
        let nginx = Kill(
            Command::new(nginx())
                .arg("-p")
                .arg(root)
                .arg("-c")
                .arg(root.join("nginx.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let scheme = if listen_extra.contains("ssl") { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}/ready.txt");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let out = Command::new("curl")
                .args(["-s", "--noproxy", "*"])
                .args(curl_args)
                .arg(&url)
                .output()
                .unwrap();
            if out.stdout == nonce.as_bytes() {
                // Start counting from here: nginx logs a request after
                // answering it, so wait for the readiness line, then reopen.
                let log = root.join("access.log");
                while !std::fs::read_to_string(&log).unwrap_or_default().contains("/ready.txt") {
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::fs::remove_file(&log).unwrap();
                let _ = Command::new("kill").arg("-USR1").arg(nginx.0.id().to_string()).status();
                while !log.exists() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return (nginx, port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("nginx did not start on any port");
}

/// How many requests nginx (started with `root`) logged whose line contains
/// `needle`: what upstream was asked.
pub fn logged(root: &Path, needle: &str) -> usize {
    std::fs::read_to_string(root.join("access.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}
