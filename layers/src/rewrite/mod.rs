//! Rewrites package metadata so that the files it names are fetched through
//! this proxy too.
//!
//! It sits above the cache lookup: what is stored is upstream's raw bytes,
//! and the rewriting applies to hits and misses alike, with the proxy's
//! external URL of the moment (the configured public URL, else
//! `X-Forwarded-Proto` / `X-Forwarded-Host` / `Host`). A rewritten answer gets
//! its new `Content-Length`, a weak `ETag` (the bytes differ from upstream's)
//! and `Vary: Accept`; a document over the size cap is an error, never a
//! truncation.
//!
//! PyPI (`package: pypi`): `simple/` pages in both PEP 503 HTML and PEP 691
//! JSON. The variant is negotiated from the client's `Accept`, asked of
//! upstream with one canonical `Accept`, and cached apart. Links to
//! `pypi_files_url` go to `pypi_files_remote`; links into the remote's own
//! `base_url` (absolute, root-relative or relative, as pypiserver writes them)
//! stay on the remote; others are left alone. Hash fragments and the
//! `data-*` attributes (requires-python, yanked, PEP 658/714 metadata) are
//! kept byte for byte, and the SHA-256 a page promises for a file is checked
//! when that file is fetched.
//!
//! npm (`package: npm`): every path but a tarball is a packument; full and
//! abbreviated (`application/vnd.npm.install-v1+json`) forms are negotiated and
//! cached apart; `versions.*.dist.tarball` links to `npm_files_url` go to
//! `npm_files_remote` (links into the remote's own `base_url` stay on it), and
//! each `dist.integrity` is checked when the tarball is fetched.

mod npm;
mod pypi;

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt};
use url::Url;

use crate::{
    body::{self, ArtifactBody},
    digest::{Expected, ExpectedDigests},
    error::{json_error, BoxError},
    extensions::headers::X_CACHE_STATUS,
    extensions::Variant,
    path::ArtifactPath,
    path::KEY_SEPARATOR,
    remote::{Package, Remote, Remotes, SharedRemotes},
    remote_resolve::ResolvedRemote,
    store::{now_ms, Refresh, Store},
};

/// Applies [`BodyRewrite`] to a service.
#[derive(Debug, Clone)]
pub struct BodyRewriteLayer {
    public_url: Option<Url>,
    max_bytes: usize,
    digests: Option<Arc<ExpectedDigests>>,
    store: Option<(Store, SharedRemotes)>,
}

impl BodyRewriteLayer {
    /// Rewrites towards `public_url` (else the request's own host), reading
    /// documents of at most `max_bytes`.
    pub fn new(public_url: Option<Url>, max_bytes: usize) -> Self {
        Self { public_url, max_bytes, digests: None, store: None }
    }

    /// When a file is fetched from upstream for the first time, the cached
    /// metadata of its package (which may predate the file's publication)
    /// is marked expired, so that the next metadata request asks upstream
    /// (conditionally): a fresh publish becomes visible without tiny TTLs.
    ///
    /// `remotes` tells which PyPI remotes list the files of a separate files
    /// remote (`pypi_files_remote`).
    pub fn refresh_metadata_in(mut self, store: Store, remotes: impl Into<SharedRemotes>) -> Self {
        self.store = Some((store, remotes.into()));
        self
    }

    /// Records the digests the documents promise for their files, for the
    /// fill to check (see [`S3TeeLayer::verify_with`](crate::S3TeeLayer::verify_with)).
    pub fn verify_with(mut self, digests: Arc<ExpectedDigests>) -> Self {
        self.digests = Some(digests);
        self
    }
}

impl<S> Layer<S> for BodyRewriteLayer {
    type Service = BodyRewrite<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyRewrite {
            inner,
            public_url: self.public_url.clone(),
            max_bytes: self.max_bytes,
            digests: self.digests.clone(),
            store: self.store.clone(),
        }
    }
}

/// Middleware that rewrites package metadata documents.
#[derive(Debug, Clone)]
pub struct BodyRewrite<S> {
    inner: S,
    public_url: Option<Url>,
    max_bytes: usize,
    digests: Option<Arc<ExpectedDigests>>,
    store: Option<(Store, SharedRemotes)>,
}

/// Links into a remote's upstream, mapped onto this proxy.
struct RemoteLinks {
    /// `{public}/api/v1/remote`
    api: String,
    /// `(upstream prefix, remote name)`, most specific first.
    targets: Vec<(String, String)>,
    digests: Option<Arc<ExpectedDigests>>,
}

impl pypi::LinkMap for RemoteLinks {
    fn map(&self, resolved: &Url, expected: Option<Expected>) -> Option<String> {
        let s = resolved.as_str();
        self.targets.iter().find_map(|(prefix, remote)| {
            let rest = s.strip_prefix(prefix.as_str())?.trim_start_matches('/');
            if let (Some(digests), Some(expected)) = (&self.digests, expected.clone()) {
                // The file will be asked for under this cache key.
                let target = rest.split('#').next().unwrap_or_default();
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (target, None),
                };
                if let Ok(path) = ArtifactPath::parse(path, query) {
                    digests.expect(path.cache_key(remote), expected);
                }
            }
            Some(format!("{}/{remote}/{rest}", self.api))
        })
    }
}

fn with_slash(s: &str) -> String {
    format!("{}/", s.trim_end_matches('/'))
}

impl<S> BodyRewrite<S> {
    crate::inner_accessors!();

    fn public_api<B>(&self, req: &Request<B>) -> String {
        let base = match &self.public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => {
                let first = |name: &str| {
                    req.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.split(',').next())
                        .map(|v| v.trim().to_owned())
                        .filter(|v| !v.is_empty())
                };
                let scheme = first("x-forwarded-proto").unwrap_or_else(|| "http".into());
                let host = first("x-forwarded-host")
                    .or_else(|| first("host"))
                    .or_else(|| req.uri().authority().map(|a| a.to_string()))
                    .unwrap_or_else(|| "localhost".into());
                format!("{scheme}://{host}")
            }
        };
        format!("{base}/api/v1/remote")
    }
}

fn links(remote: &Remote, api: String, digests: Option<Arc<ExpectedDigests>>) -> RemoteLinks {
    let mut targets = Vec::new();
    if let Some(files) = &remote.files {
        targets.push((with_slash(&files.url), files.remote.clone()));
    }
    if let Some(base) = remote.base_url() {
        targets.push((with_slash(base.as_str()), remote.name.clone()));
    }
    // The longest prefix wins (a files URL under the base URL, say).
    targets.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    RemoteLinks { api, targets, digests }
}

/// The kinds of document this layer rewrites.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    /// A PyPI simple page.
    Pypi,
    /// An npm packument (any npm path but a tarball).
    Npm,
}

/// Which document, if any, this request is for.
fn format(remote: &Remote, path: &ArtifactPath) -> Option<Format> {
    let p = path.decoded();
    match remote.package {
        Package::Pypi if p == "simple" || p.starts_with("simple/") => Some(Format::Pypi),
        Package::Npm if !p.ends_with(".tgz") => Some(Format::Npm),
        _ => None,
    }
}

impl<S, B> Service<Request<B>> for BodyRewrite<S>
where
    S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<ArtifactBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ArtifactBody>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let inner = crate::take_ready(&mut self.inner);
        let (Some(ResolvedRemote(remote)), Some(path)) =
            (req.extensions().get::<ResolvedRemote>(), req.extensions().get::<ArtifactPath>())
        else {
            return Box::pin(inner.oneshot(req));
        };
        let Some(format) =
            format(remote, path).filter(|_| matches!(*req.method(), Method::GET | Method::HEAD))
        else {
            let keys = self.store.as_ref().map(|(_, remotes)| metadata_keys(remote, path, &remotes.load()));
            if let (Some((store, _)), Some(keys), true) =
                (self.store.clone(), keys.filter(|k| !k.is_empty()), req.method() == Method::GET)
            {
                return Box::pin(async move {
                    let res = inner.oneshot(req).await?;
                    let fetched = res.headers().get(X_CACHE_STATUS).is_some_and(|v| v == "MISS");
                    if fetched && res.status() == StatusCode::OK {
                        // Before the client hears of the file: its next look
                        // at the metadata must list it. Once per new file.
                        expire_metadata(store, keys).await;
                    }
                    Ok(res)
                });
            }
            return Box::pin(inner.oneshot(req));
        };
        let (remote, path) = (remote.clone(), path.clone());
        let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
        let (variant, canonical) = match format {
            Format::Pypi => {
                let v = pypi::negotiate(accept);
                (v, pypi::accept_for(v))
            }
            Format::Npm => {
                let v = npm::negotiate(accept);
                (v, npm::accept_for(v))
            }
        };
        req.extensions_mut().insert(Variant(variant.into()));
        req.headers_mut().insert(header::ACCEPT, HeaderValue::from_static(canonical));
        // A rewritten document is answered whole.
        req.headers_mut().remove(header::RANGE);
        let map = links(&remote, self.public_api(&req), self.digests.clone());
        let page = remote
            .base_url()
            .and_then(|base| Url::parse(&format!("{}{}", with_slash(base.as_str()), path.raw())).ok());
        let head = req.method() == Method::HEAD;
        let max = self.max_bytes;
        Box::pin(async move {
            let mut res = inner.oneshot(req).await?;
            res.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept"));
            let encoded = res.headers().get(header::CONTENT_ENCODING).is_some_and(|v| v != "identity");
            let (Some(page), StatusCode::OK, false) = (page, res.status(), encoded) else {
                return Ok(res);
            };
            if head {
                // The length of the rewritten document is not known here.
                res.headers_mut().remove(header::CONTENT_LENGTH);
                return Ok(res);
            }
            let (mut parts, body) = res.into_parts();
            let bytes = match read_capped(body, max).await? {
                Some(bytes) => bytes,
                None => {
                    let message = format!("metadata document larger than {max} bytes (METADATA_MAX_BYTES)");
                    return Ok(json_error(StatusCode::BAD_GATEWAY, &message, &remote.name, path.decoded()));
                }
            };
            let json = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("json"));
            let rewritten = match (format, json) {
                (Format::Pypi, true) => pypi::rewrite_json(&bytes, &page, &map),
                (Format::Pypi, false) => Ok(match std::str::from_utf8(&bytes) {
                    Ok(text) => pypi::rewrite_html(text, &page, &map).into_bytes(),
                    Err(_) => bytes.to_vec(),
                }),
                (Format::Npm, true) => npm::rewrite_packument(&bytes, &page, &map),
                // Not a packument (an npm path that answers something else).
                (Format::Npm, false) => Ok(bytes.to_vec()),
            };
            let rewritten = match rewritten {
                Ok(out) => out,
                Err(e) => return Ok(json_error(StatusCode::BAD_GATEWAY, &e, &remote.name, path.decoded())),
            };
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
            if let Some(etag) = parts.headers.get(header::ETAG).and_then(|v| v.to_str().ok()) {
                if !etag.starts_with("W/") {
                    if let Ok(weak) = HeaderValue::from_str(&format!("W/{etag}")) {
                        parts.headers.insert(header::ETAG, weak);
                    }
                }
            }
            parts.headers.remove(header::CONTENT_RANGE);
            parts.headers.remove(header::CONTENT_DISPOSITION);
            Ok(Response::from_parts(parts, body::full(rewritten)))
        })
    }
}

/// The cache keys of the metadata that lists the file at `path`: an npm
/// tarball's packument; a PyPI file's simple page, on this remote (an index
/// that serves its own files, like pypiserver) and on every PyPI remote whose
/// `pypi_files_remote` this remote is.
fn metadata_keys(remote: &Remote, path: &ArtifactPath, remotes: &Remotes) -> Vec<String> {
    let decoded = path.decoded();
    let keys = |on: &str, document: &str, variants: [&str; 2]| -> Vec<String> {
        let Ok(document) = ArtifactPath::parse(document, None) else { return Vec::new() };
        let base = document.cache_key(on);
        variants.iter().map(|v| format!("{base}{KEY_SEPARATOR}{v}")).collect()
    };
    if remote.package == Package::Npm {
        return match decoded.split_once("/-/").filter(|_| decoded.ends_with(".tgz")) {
            Some((package, _)) => keys(&remote.name, package, [npm::FULL, npm::ABBREVIATED]),
            None => Vec::new(),
        };
    }
    let Some(project) = pypi::project_of(path.file_name()).filter(|_| !decoded.starts_with("simple")) else {
        return Vec::new();
    };
    let page = format!("simple/{project}/");
    remotes
        .iter()
        .filter(|r| r.package == Package::Pypi)
        .filter(|r| r.name == remote.name || r.files.as_ref().is_some_and(|f| f.remote == remote.name))
        .flat_map(|r| keys(&r.name, &page, [pypi::JSON, pypi::HTML]))
        .collect()
}

async fn expire_metadata(store: Store, keys: Vec<String>) {
    for key in keys {
        // A fill of it still in flight commits it already expired.
        store.marks.mark(&key);
        if let Ok(Some(entry)) = store.index.get(&key).await {
            if entry.is_fresh(now_ms()) {
                let refresh = Refresh { expires_at_ms: Some(now_ms() - 1), revalidated: None };
                let _ = store.index.refresh(&key, &entry.blob, &refresh).await;
            }
        }
    }
}

/// The whole body, or `None` when it is longer than `max`.
async fn read_capped(mut body: ArtifactBody, max: usize) -> Result<Option<Bytes>, BoxError> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if out.len() + data.len() > max {
                return Ok(None);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Some(out.freeze()))
}
