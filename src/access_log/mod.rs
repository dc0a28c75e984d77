//! Access logs (`ACCESS_LOG=off|stdout|PATH`): one line per request, written
//! when its body has been sent (or with status 499 when the client went away
//! before the answer), by a thread of its own every 50 ms. A request costs
//! what its line needs from the request (reference-counted clones, no
//! copies), one format into bytes without the formatting machinery, and an
//! append to its thread's buffer. Measured in callgrind on a 4 KiB hit:
//! about 3 000 instructions over the 55 000 of the hit without the log; the
//! first versions cost 21 600 (a `from_fn` middleware, a line of owned
//! strings and `format!`, one buffer shared by the workers) and, with a
//! wake-up of the writer per request, a third of the throughput. With
//! `LOG_FORMAT=json` a line is an object with `time`, `client`, `method`,
//! `path`, `status`, `bytes`, `cache`, `source`, `remote`, `duration_ms` and
//! `upstream_ms`; otherwise nginx's combined format followed by the same
//! fields as `key=value`. `client` is decided by the rule every part that
//! names a client shares ([`TrustedProxies::client`]): the peer address;
//! `X-Forwarded-For` is believed only from peers in `TRUSTED_PROXIES`.
//!
//! The artifact layers fill in what only they know (remote, cache result,
//! source, upstream time) through the [`AccessNote`] extension.

mod line;
mod pending;

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Instant,
};

use artifactapi_layers::client::TrustedProxies;
use axum::{extract::ConnectInfo, http::Request, response::Response};
use bytes::Bytes;
use http::{uri::PathAndQuery, HeaderValue, Method, Version};
use http_body::{Frame, SizeHint};
use tower::{Layer, Service};

use pending::Pending;

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
    /// The remote that answered.
    pub remote: Option<Arc<artifactapi_layers::Remote>>,
    /// The cache result (`hit`, `miss`, `error`...).
    pub cache: Option<&'static str>,
    /// Where the body came from (`cache`, `upstream`, `local`).
    pub source: Option<&'static str>,
    /// How long upstream took to answer, when it was asked.
    pub upstream_ms: Option<f64>,
}

/// A request extension the artifact layers write their part of the line
/// into. It also holds what the line needs from the request, so that the
/// response's future and body carry one pointer, not the request's parts.
#[derive(Clone)]
pub struct AccessNote(Arc<Entry>);

struct Entry {
    log: AccessLog,
    started: Started,
    note: Mutex<Note>,
}

impl AccessNote {
    /// Runs `f` on the note.
    pub fn with(&self, f: impl FnOnce(&mut Note)) {
        f(&mut self.0.note.lock().expect("access note lock"));
    }
}

impl std::fmt::Debug for AccessNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AccessNote").field(&self.0.note).finish()
    }
}

/// The access log of a process; as a [`Layer`], the middleware that writes it.
#[derive(Clone, Copy)]
pub struct AccessLog {
    shared: &'static Shared,
}

struct Shared {
    pending: &'static Pending,
    json: bool,
    trusted: TrustedProxies,
}

impl AccessLog {
    /// An access log to `target` (`None` when off), JSON lines with `json`,
    /// believing `X-Forwarded-For` from `trusted` peers. It lives as long as
    /// the process.
    pub fn open(
        target: &AccessLogTarget,
        json: bool,
        trusted: TrustedProxies,
    ) -> std::io::Result<Option<Self>> {
        let out: Box<dyn std::io::Write + Send> = match target {
            AccessLogTarget::Off => return Ok(None),
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => {
                Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)
            }
        };
        let pending = Pending::start(out)?;
        Ok(Some(Self { shared: Box::leak(Box::new(Shared { pending, json, trusted })) }))
    }

    /// Writes what is pending now (at shutdown: the writer thread writes
    /// every 50 ms).
    pub fn flush(&self) {
        self.shared.pending.write();
    }

    /// The client of `req`: the peer, or what a trusted proxy forwarded.
    fn client<B>(&self, req: &Request<B>) -> Client {
        match req.extensions().get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(peer)) => Client::Peer(self.shared.trusted.client(peer.ip(), req.headers())),
            None => Client::Unknown,
        }
    }
}

/// Who asked: `-` when the connection's address is not known.
#[derive(Clone, Copy)]
enum Client {
    Unknown,
    Peer(IpAddr),
}

/// What a line needs from the request, taken before it goes on: clones of
/// the request's reference-counted parts, never copies of their text.
struct Started {
    at: Instant,
    at_ms: i64,
    client: Client,
    method: Method,
    path: Option<PathAndQuery>,
    version: Version,
    referer: Option<HeaderValue>,
    agent: Option<HeaderValue>,
}

impl Started {
    fn of<B>(log: &AccessLog, req: &Request<B>) -> Self {
        let combined = !log.shared.json;
        let header = |name| if combined { req.headers().get(name).cloned() } else { None };
        Self {
            client: log.client(req),
            at: Instant::now(),
            at_ms: artifactapi_layers::store::now_ms(),
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            version: req.version(),
            // Only the combined format writes them.
            referer: header(http::header::REFERER),
            agent: header(http::header::USER_AGENT),
        }
    }
}

impl<S> Layer<S> for AccessLog {
    type Service = Logging<S>;

    fn layer(&self, inner: S) -> Logging<S> {
        Logging { inner, log: *self }
    }
}

/// The middleware (see [`AccessLog`]): notes the request, and writes its
/// line when the body ends. Placed around the whole router, outside its
/// routes: its answer's body is boxed once into the server's body type (a
/// `Router::layer` would wrap every route, and box again). With the log off
/// the server runs the router alone.
#[derive(Clone)]
pub struct Logging<S> {
    inner: S,
    log: AccessLog,
}

impl<S, B, ResBody> Service<Request<B>> for Logging<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response<axum::body::Body>;
    type Error = S::Error;
    type Future = LoggedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let started = Started::of(&self.log, &req);
        let note = AccessNote(Arc::new(Entry { log: self.log, started, note: Mutex::default() }));
        req.extensions_mut().insert(note.clone());
        LoggedFuture { inner: self.inner.call(req), note: Some(note) }
    }
}

pin_project_lite::pin_project! {
    /// The response of a [`Logging`] service, its body wrapped in [`Logged`].
    /// Dropped before the answer (the client went away first), it writes
    /// the line with nginx's 499.
    pub struct LoggedFuture<F> {
        #[pin]
        inner: F,
        note: Option<AccessNote>,
    }

    impl<F> PinnedDrop for LoggedFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(note) = this.project().note.take() {
                line::write(&note.0, CLIENT_CLOSED, 0);
            }
        }
    }
}

/// nginx's status for a request whose client closed the connection before
/// the answer.
const CLIENT_CLOSED: u16 = 499;

impl<F, ResBody, E> Future for LoggedFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Output = Result<Response<axum::body::Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let status = response.status().as_u16();
        let note = this.note.take();
        Poll::Ready(Ok(response.map(|inner| axum::body::Body::new(Logged { inner, note, status, sent: 0 }))))
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its bytes and writes the request's line
    /// when it is dropped: sent whole, or its client gone.
    struct Logged<B> {
        #[pin]
        inner: B,
        note: Option<AccessNote>,
        status: u16,
        sent: u64,
    }

    impl<B> PinnedDrop for Logged<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(note) = this.note.take() {
                line::write(&note.0, *this.status, *this.sent);
            }
        }
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for Logged<B> {
    type Data = Bytes;
    type Error = B::Error;

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
