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
//! Which paths are documents, their variants and how each is rewritten is the
//! remote's [format](mod@crate::format)'s to say (PyPI simple pages, npm
//! packuments). The variant is negotiated from the client's `Accept`, asked
//! of upstream with one canonical `Accept`, and cached apart. Links to the
//! format's files URL (`pypi_files_url`, `npm_files_url`) go to its files
//! remote; links into the remote's own `base_url` (absolute, root-relative or
//! relative) stay on the remote; others are left alone. The digest a
//! document promises for a file is checked when that file is fetched.
//!
//! The documents that list a file are the formats' to say
//! ([`listed_in`](crate::format::Documents::listed_in)). When a file is fetched
//! for the first time, they are marked expired, so a fresh publish becomes
//! visible without tiny TTLs. When a file that is not cached is asked for
//! and no digest for it is in memory (after a restart, or after the client's
//! own copy of the document was answered 304), its listing is read through
//! this layer and the cache first, so the file is still checked against
//! what the document promises.
//!
//! A file the format says a record vouches for
//! ([`vouched_by`](crate::format::Integrity::vouched_by): Go's checksum
//! database) is checked the same way: when it is not cached and no digest
//! for it is in memory, the record is read through the cache and what it
//! says recorded for the fill to check ([`read`]).

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt};
use url::Url;

mod read;

use read::Once;

use crate::{
    body::{self, read_capped, ArtifactBody},
    budget::DocumentBudget,
    digest::{Expected, ExpectedDigests},
    error::{BoxError, UpstreamError, UpstreamErrorKind},
    extensions::{UpstreamUrl, Variant},
    format::LinkMap,
    group::ViaGroup,
    path::ArtifactPath,
    remote::{Remote, SharedRemotes},
    remote_resolve::ResolvedRemote,
    store::Store,
};

/// Applies [`BodyRewrite`] to a service.
#[derive(Debug, Clone)]
pub struct BodyRewriteLayer {
    public_url: Option<Url>,
    max_bytes: usize,
    budget: DocumentBudget,
    lookups: usize,
    digests: Option<Arc<ExpectedDigests>>,
    store: Option<(Store, SharedRemotes)>,
}

impl BodyRewriteLayer {
    /// Rewrites towards `public_url` (else the request's own host), reading
    /// documents of at most `max_bytes`.
    pub fn new(public_url: Option<Url>, max_bytes: usize) -> Self {
        Self {
            public_url,
            max_bytes,
            budget: DocumentBudget { output_bytes: max_bytes, ..DocumentBudget::default() },
            lookups: DEFAULT_LOOKUPS,
            digests: None,
            store: None,
        }
    }

    /// Transforms documents within `budget` (default: output as large as the
    /// input cap, [`DocumentBudget`]'s nesting and values).
    pub fn within(mut self, budget: DocumentBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Lets the check of one file ask upstream for at most `lookups` other
    /// documents (records answered from the cache are free); past it, the
    /// file is refused rather than served unchecked (default 4).
    pub fn lookups_per_request(mut self, lookups: usize) -> Self {
        self.lookups = lookups;
        self
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
            budget: self.budget,
            lookups: self.lookups,
            digests: self.digests.clone(),
            store: self.store.clone(),
            unknown: Arc::default(),
        }
    }
}

/// Middleware that rewrites package metadata documents.
#[derive(Debug, Clone)]
pub struct BodyRewrite<S> {
    inner: S,
    public_url: Option<Url>,
    max_bytes: usize,
    budget: DocumentBudget,
    lookups: usize,
    digests: Option<Arc<ExpectedDigests>>,
    store: Option<(Store, SharedRemotes)>,
    /// Records upstream did not have, logged once.
    unknown: Arc<Once>,
}

/// How many upstream requests the check of one file may make by default.
const DEFAULT_LOOKUPS: usize = 4;

/// Links into a remote's upstream, mapped onto this proxy.
struct RemoteLinks {
    /// `{public}/api/v1/remote`
    api: String,
    /// `{public}/api/{remote}`
    here: String,
    /// `(upstream prefix, remote name)`, most specific first.
    targets: Vec<(String, String)>,
    /// A member asked through a group with a policy: links to the member
    /// point at `(group, member)` instead, the digest promised under both.
    guarded: Option<(String, String)>,
    digests: Option<Arc<ExpectedDigests>>,
}

impl LinkMap for RemoteLinks {
    fn map(&self, resolved: &Url, expected: Option<Expected>) -> Option<String> {
        let s = resolved.as_str();
        self.targets.iter().find_map(|(prefix, remote)| {
            let rest = s.strip_prefix(prefix.as_str())?.trim_start_matches('/');
            let via = self.guarded.as_ref().filter(|(_, member)| member == remote).map(|(group, _)| group);
            if let (Some(digests), Some(expected)) = (&self.digests, expected.clone()) {
                // The file will be asked for under this cache key (and the
                // group's member asked under its own).
                let target = rest.split('#').next().unwrap_or_default();
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (target, None),
                };
                if let Ok(path) = ArtifactPath::parse(path, query) {
                    if let Some(group) = via {
                        digests.expect(path.cache_key(group), expected.clone());
                    }
                    digests.expect(path.cache_key(remote), expected);
                }
            }
            Some(format!("{}/{}/{rest}", self.api, via.unwrap_or(remote)))
        })
    }

    fn here(&self) -> Option<String> {
        Some(self.here.clone())
    }
}

fn with_slash(s: &str) -> String {
    format!("{}/", s.trim_end_matches('/'))
}

impl<S> BodyRewrite<S> {
    crate::inner_accessors!();

    /// This proxy's external URL, as the request reached it.
    fn public_base<B>(&self, req: &Request<B>) -> String {
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
        base
    }
}

/// `remote`'s links; `via` is the group it was asked through, if any.
fn links(
    remote: &Remote,
    via: Option<&ViaGroup>,
    public: &str,
    digests: Option<Arc<ExpectedDigests>>,
) -> RemoteLinks {
    let mut targets = Vec::new();
    if let Some(files) = &remote.files {
        targets.push((with_slash(&files.url), files.remote.clone()));
    }
    if let Some(base) = remote.base_url() {
        targets.push((with_slash(base.as_str()), remote.name.clone()));
    }
    // The longest prefix wins (a files URL under the base URL, say).
    targets.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    let here = format!("{public}/api/{}", via.map_or(remote.name.as_str(), |v| &v.group));
    let guarded = via.filter(|v| v.guarded).map(|v| (v.group.to_string(), remote.name.clone()));
    RemoteLinks { api: format!("{public}/api/v1/remote"), here, targets, guarded, digests }
}

impl<S, B> Service<Request<B>> for BodyRewrite<S>
where
    S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
    B: Default + Send + 'static,
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
        let document = remote.package.format().document(path);
        let Some(document) = document.filter(|_| matches!(*req.method(), Method::GET | Method::HEAD)) else {
            let (remote, path) = (remote.clone(), path.clone());
            return self.file(inner, req, remote, path);
        };
        let (remote, path) = (remote.clone(), path.clone());
        let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
        let negotiated = document.negotiate(accept);
        req.extensions_mut().insert(Variant(negotiated.variant.into()));
        req.headers_mut().insert(header::ACCEPT, HeaderValue::from_static(negotiated.accept));
        // A rewritten document is answered whole.
        req.headers_mut().remove(header::RANGE);
        let via = req.extensions().get::<ViaGroup>().cloned();
        let map = links(&remote, via.as_ref(), &self.public_base(&req), self.digests.clone());
        let page = remote
            .base_url()
            .and_then(|base| Url::parse(&format!("{}{}", with_slash(base.as_str()), path.raw())).ok());
        let head = req.method() == Method::HEAD;
        let (max, budget) = (self.max_bytes, self.budget);
        let reader = self.clone();
        let located = remote.package.format().relocation().and_then(|r| r.located_by(&path));
        Box::pin(async move {
            let mut req = req;
            if let Some(located) = located {
                // Where upstream keeps this document (a Terraform registry's
                // discovery names its protocol's base).
                let url = reader.clone().locate(inner.clone(), remote.clone(), located, &path, None).await?;
                req.extensions_mut().insert(UpstreamUrl(url));
            }
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
                    return Err(UpstreamError::new(UpstreamErrorKind::Other, message).into());
                }
            };
            let json = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("json"));
            // The documents it is composed with, through the cache.
            let mut needed = Vec::new();
            for other in document.needs(&page, &bytes) {
                let body = match reader.clone().read_through(remote.clone(), &other).await {
                    Ok(res) if res.status() == StatusCode::OK => {
                        read_capped(res.into_body(), max).await.ok().flatten()
                    }
                    _ => None,
                };
                needed.push((other, body));
            }
            // Measured before they are parsed, the output after: a document
            // past its budget is refused whole, never built or truncated.
            let measured = std::iter::once(document.measure(&bytes, &budget))
                .chain(needed.iter().filter_map(|(_, body)| body.as_ref()).map(|body| budget.scan(body)))
                .collect::<Result<(), _>>();
            measured.map_err(UpstreamError::from)?;
            let rewritten = match document.compose(&bytes, json, &page, &map, &needed) {
                Ok(out) => out,
                Err(e) => return Err(UpstreamError::new(UpstreamErrorKind::Other, e).into()),
            };
            budget.check_output(rewritten.len()).map_err(UpstreamError::from)?;
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
