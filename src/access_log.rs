//! Access logs (`ACCESS_LOG=off|stdout|PATH`): one line per request, written
//! when its body has been sent (or the client went away), by a thread of
//! its own every 50 ms, so a request costs a format and an append under a
//! short lock (a wake-up of the writer per request cost a third of the small
//! hits' throughput on two cores). With
//! `LOG_FORMAT=json` a line is an object with `time`, `client`, `method`,
//! `path`, `status`, `bytes`, `cache`, `source`, `remote`, `duration_ms` and
//! `upstream_ms`; otherwise nginx's combined format followed by the same
//! fields as `key=value`. `client` is the peer address; `X-Forwarded-For`
//! is believed only from peers in `TRUSTED_PROXIES`.
//!
//! The artifact layers fill in what only they know (remote, cache result,
//! source, upstream time) through the [`AccessNote`] extension.

use std::{
    io::Write,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Instant,
};

use axum::{body::Body, extract::ConnectInfo, http::Request, response::Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use ipnet::IpNet;

/// Where access lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// No access log (the default).
    Off,
    /// Standard output, beside the process's own log.
    Stdout,
    /// Appended to a file.
    File(std::path::PathBuf),
}

impl AccessLogTarget {
    /// Reads `ACCESS_LOG`.
    pub fn parse(text: Option<&str>) -> Self {
        match text.map(str::trim) {
            None | Some("") | Some("off") => Self::Off,
            Some("stdout") => Self::Stdout,
            Some(path) => Self::File(path.into()),
        }
    }
}

/// What the artifact layers learn about a request, for its access line.
#[derive(Debug, Default)]
pub struct Note {
    /// The remote's name.
    pub remote: Option<String>,
    /// The cache result (`hit`, `miss`, `error`...).
    pub cache: Option<&'static str>,
    /// Where the body came from (`cache`, `upstream`, `local`).
    pub source: Option<&'static str>,
    /// How long upstream took to answer, when it was asked.
    pub upstream_ms: Option<f64>,
}

/// A request extension the artifact layers write their part of the line into.
#[derive(Debug, Clone, Default)]
pub struct AccessNote(pub Arc<Mutex<Note>>);

impl AccessNote {
    /// Runs `f` on the note.
    pub fn with(&self, f: impl FnOnce(&mut Note)) {
        f(&mut self.0.lock().expect("access note lock"));
    }
}

/// Lines waiting for the writer: appended by requests under a short lock,
/// taken whole by the writer thread every [`WRITE_EVERY`] (no wake-up per
/// request).
#[derive(Default)]
struct Pending {
    lines: Mutex<String>,
}

/// How often the writer thread writes what is pending.
const WRITE_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Past this much pending text, lines are dropped: a slow disk never slows
/// requests or grows memory without bound.
const MAX_PENDING: usize = 8 << 20;

/// The access log of a process.
#[derive(Clone)]
pub struct AccessLog {
    pending: Arc<Pending>,
    json: bool,
    trusted: Arc<Vec<IpNet>>,
}

impl AccessLog {
    /// An access log to `target` (`None` when off), JSON lines with `json`,
    /// believing `X-Forwarded-For` from `trusted` peers.
    pub fn open(target: &AccessLogTarget, json: bool, trusted: Vec<IpNet>) -> std::io::Result<Option<Self>> {
        let mut out: Box<dyn Write + Send> = match target {
            AccessLogTarget::Off => return Ok(None),
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => {
                Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)
            }
        };
        let pending = Arc::new(Pending::default());
        let writer = Arc::downgrade(&pending);
        std::thread::Builder::new().name("access-log".into()).spawn(move || loop {
            std::thread::sleep(WRITE_EVERY);
            let Some(pending) = writer.upgrade() else { return };
            let batch = std::mem::take(&mut *pending.lines.lock().expect("access log lock"));
            drop(pending);
            if !batch.is_empty() {
                let _ = out.write_all(batch.as_bytes());
                let _ = out.flush();
            }
        })?;
        Ok(Some(Self { pending, json, trusted: Arc::new(trusted) }))
    }

    fn push(&self, line: &str) {
        let mut lines = self.pending.lines.lock().expect("access log lock");
        if lines.len() + line.len() <= MAX_PENDING {
            lines.push_str(line);
        }
    }

    /// The client of `req`: the peer, or what a trusted proxy forwarded.
    fn client(&self, req: &Request<Body>) -> String {
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let Some(peer) = peer else { return "-".into() };
        if !self.trusted.iter().any(|net| net.contains(&peer)) {
            return peer.to_string();
        }
        // From the right: the first address not one of our trusted proxies.
        let forwarded: Vec<IpAddr> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        forwarded
            .iter()
            .rev()
            .find(|a| !self.trusted.iter().any(|net| net.contains(*a)))
            .or(forwarded.first())
            .map_or(peer.to_string(), ToString::to_string)
    }
}

/// What a line needs from the request, taken before it goes on.
struct Started {
    log: AccessLog,
    at: Instant,
    at_ms: i64,
    client: String,
    method: String,
    path: String,
    version: &'static str,
    referer: String,
    agent: String,
    note: AccessNote,
}

/// The middleware: notes the request, and writes its line when the body ends.
pub async fn layer(
    axum::extract::State(log): axum::extract::State<AccessLog>,
    mut req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let note = AccessNote::default();
    req.extensions_mut().insert(note.clone());
    let started = started(log, note, &req);
    let response = next.run(req).await;
    let status = response.status().as_u16();
    response.map(|body| Body::new(Logged { inner: body, started: Some(started), status, sent: 0 }))
}

/// What the line needs from `req` (taken before the request goes on).
fn started(log: AccessLog, note: AccessNote, req: &Request<Body>) -> Started {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    Started {
        client: log.client(req),
        at: Instant::now(),
        at_ms: artifactapi_layers::store::now_ms(),
        method: req.method().to_string(),
        path: req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        version: match req.version() {
            axum::http::Version::HTTP_2 => "HTTP/2.0",
            axum::http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
        referer: header("referer"),
        agent: header("user-agent"),
        log,
        note,
    }
}

pin_project_lite::pin_project! {
    struct Logged {
        #[pin]
        inner: Body,
        started: Option<Started>,
        status: u16,
        sent: u64,
    }

    impl PinnedDrop for Logged {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(started) = this.started.take() {
                write_line(started, *this.status, *this.sent);
            }
        }
    }
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                *this.sent += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn write_line(started: Started, status: u16, bytes: u64) {
    let duration_ms = started.at.elapsed().as_secs_f64() * 1000.0;
    let note = std::mem::take(&mut *started.note.0.lock().expect("access note lock"));
    let line = if started.log.json {
        let mut line = serde_json::json!({
            "time": crate::manage::rfc3339(started.at_ms),
            "client": started.client,
            "method": started.method,
            "path": started.path,
            "status": status,
            "bytes": bytes,
            "cache": note.cache,
            "source": note.source,
            "remote": note.remote,
            "duration_ms": (duration_ms * 1000.0).round() / 1000.0,
            "upstream_ms": note.upstream_ms.map(|ms| (ms * 1000.0).round() / 1000.0),
        })
        .to_string();
        line.push('\n');
        line
    } else {
        let dash = |v: Option<&str>| v.map_or_else(|| "-".to_owned(), quote_free);
        format!(
            "{client} - - [{time}] \"{method} {path} {version}\" {status} {bytes} \"{referer}\" \"{agent}\" \
             cache={cache} source={source} remote={remote} duration_ms={duration_ms:.3} upstream_ms={upstream}\n",
            client = started.client,
            time = combined_time(started.at_ms),
            method = escape(&started.method),
            path = escape(&started.path),
            version = started.version,
            referer = escape(&started.referer),
            agent = escape(&started.agent),
            cache = note.cache.unwrap_or("-"),
            source = note.source.unwrap_or("-"),
            remote = dash(note.remote.as_deref()),
            upstream = note.upstream_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.3}")),
        )
    };
    started.log.push(&line);
}

/// As nginx writes a quoted field: `"` and `\` escaped, bytes outside
/// printable ASCII as `\xHH`.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02X}")),
        }
    }
    out
}

/// A `key=value` value: no spaces or quotes to break the line apart.
fn quote_free(text: &str) -> String {
    escape(text).replace(' ', "\\x20")
}

/// `04/Dec/2026:13:20:00 +0000` from milliseconds since the epoch.
fn combined_time(ms: i64) -> String {
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    // `2026-12-04T13:20:00.123Z`
    let iso = crate::manage::rfc3339(ms);
    let month = iso[5..7].parse::<usize>().unwrap_or(1).clamp(1, 12);
    format!("{}/{}/{}:{} +0000", &iso[8..10], MONTHS[month - 1], &iso[0..4], &iso[11..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_fields_are_escaped_and_dated_as_nginx_does() {
        assert_eq!(combined_time(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(escape("a \"b\"\n\\"), "a \\\"b\\\"\\x0A\\\\");
        assert_eq!(AccessLogTarget::parse(Some("off")), AccessLogTarget::Off);
        assert_eq!(AccessLogTarget::parse(None), AccessLogTarget::Off);
        assert_eq!(AccessLogTarget::parse(Some("stdout")), AccessLogTarget::Stdout);
        assert_eq!(
            AccessLogTarget::parse(Some("/var/log/a.log")),
            AccessLogTarget::File("/var/log/a.log".into())
        );
    }
}
