//! `artifactapi warm`: pre-fetches a list of paths through a running
//! instance, so that the first build after a release finds them cached.
//!
//! Paths (one a line; blank lines and `#` comments skipped) go to
//! `POST /cache-artifact` in batches; the instance fetches each through its
//! normal stack (patterns, single flight, verification). A progress bar is
//! drawn on a terminal; the summary says how many were cached and why the
//! others failed, and the exit status is non-zero when any failed.

use std::{io::BufRead, process::ExitCode, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

/// How many paths go in one request.
const BATCH: usize = 16;

/// What to warm, and where.
pub struct Warm {
    /// The instance's base URL.
    pub url: String,
    /// The remote the paths belong to.
    pub remote: String,
    /// The admin token, when the instance has one.
    pub token: Option<String>,
    /// Where the paths come from: a file, or `-` for standard input.
    pub input: String,
}

fn read_paths(input: &str) -> std::io::Result<Vec<String>> {
    let reader: Box<dyn BufRead> = if input == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(input)?))
    };
    let mut paths = Vec::new();
    for line in reader.lines() {
        let line = line?;
        let line = line.trim();
        if !line.is_empty() && !line.starts_with('#') {
            paths.push(line.trim_start_matches('/').to_owned());
        }
    }
    Ok(paths)
}

impl Warm {
    /// Runs the warm-up; answers the process's exit status.
    pub async fn run(self) -> ExitCode {
        let paths = match read_paths(&self.input) {
            Ok(paths) => paths,
            Err(e) => {
                eprintln!("artifactapi warm: cannot read {}: {e}", self.input);
                return ExitCode::from(2);
            }
        };
        let client = match reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("artifactapi warm: {e}");
                return ExitCode::from(2);
            }
        };
        let endpoint = format!("{}/cache-artifact", self.url.trim_end_matches('/'));
        let progress = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let bar = ProgressBar::new(paths.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            Some(bar)
        } else {
            None
        };
        let mut cached = 0usize;
        let mut failed: Vec<(String, String)> = Vec::new();
        for batch in paths.chunks(BATCH) {
            let body = json!({ "remote": self.remote, "paths": batch }).to_string();
            let mut request =
                client.post(&endpoint).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let results = match request.send().await {
                Ok(res) if res.status().is_success() => match json_of(res).await {
                    Ok(body) => body["results"].as_array().cloned().unwrap_or_default(),
                    Err(e) => batch
                        .iter()
                        .map(|p| json!({"path": p, "status": "error", "error": e.to_string()}))
                        .collect(),
                },
                Ok(res) => {
                    let status = res.status();
                    let detail = json_of(res)
                        .await
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    let reason = format!("{}: {detail}", status.as_u16());
                    if matches!(status.as_u16(), 401 | 403 | 404) {
                        // The same for every batch: say it once and stop.
                        eprintln!("artifactapi warm: {endpoint} refused: {reason}");
                        return ExitCode::from(2);
                    }
                    batch.iter().map(|p| json!({"path": p, "status": "error", "error": reason})).collect()
                }
                Err(e) => {
                    eprintln!("artifactapi warm: cannot reach {endpoint}: {e}");
                    return ExitCode::from(2);
                }
            };
            for result in results {
                let path = result["path"].as_str().unwrap_or_default().to_owned();
                if result["status"] == "cached" {
                    cached += 1;
                } else {
                    let reason = result["error"].as_str().unwrap_or("unknown error").to_owned();
                    failed.push((path.clone(), reason));
                }
                if let Some(bar) = &progress {
                    bar.set_message(path);
                    bar.inc(1);
                }
            }
        }
        if let Some(bar) = &progress {
            bar.finish_and_clear();
        }
        for (path, reason) in &failed {
            println!("failed {path}: {reason}");
        }
        println!("warmed {} paths of {}: {cached} cached, {} failed", paths.len(), self.remote, failed.len());
        if failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

async fn json_of(res: reqwest::Response) -> Result<Value, String> {
    let bytes = res.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}
