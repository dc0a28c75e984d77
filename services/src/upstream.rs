//! The upstream client: the innermost service of the stack.
//!
//! It sends the request's artifact path (as the client encoded it) and query
//! to the resolved remote's `base_url`, and answers upstream's response with
//! the body streaming, untouched: no `Accept-Encoding` is sent on the client's
//! behalf and nothing is decompressed, so what is stored is exactly what
//! upstream sent, with its `Content-Encoding`.
//!
//! A little over 400 lines: the service, the exchange it prepares and the
//! hop-by-hop sending (with its redirects and one client per origin) are
//! the one path every upstream byte takes.
//!
//! Every URL passes one egress gate before a byte is sent to it
//! ([`crate::egress`]): the remote's base, a URL a document located (a Cargo
//! download, a Terraform provider's `download_url`), a checksum database, a
//! token realm, and each redirect hop. Redirects are followed here, not by
//! reqwest, at most ten, so that each hop is judged on its own and gets its
//! own client: a remote's credentials, TLS identity and private CA go to its
//! own origin only. Connection failures of idempotent requests are retried
//! twice with backoff. Proxies come from `HTTPS_PROXY`/`NO_PROXY`.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use artifactapi_layers::{
    body::{self, ArtifactBody},
    error::{BoxError, UpstreamError, UpstreamErrorKind},
    path::ArtifactPath,
    remote::{Remote, UpstreamTls},
    remote_resolve::ResolvedRemote,
    UpstreamUrl,
};
use futures_util::{future::BoxFuture, TryStreamExt};
use http::{header, Method, Request, Response, StatusCode};
use reqwest_middleware::{Middleware, Next};
use tower::Service;
use url::Url;

use crate::{
    egress::{Egress, PrivateNetworks},
    upstream_client::Clients,
};

/// Request headers passed on to upstream; everything else stays here.
const FORWARDED: [header::HeaderName; 5] =
    [header::ACCEPT, header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::RANGE, header::USER_AGENT];

/// A request extension: the `Authorization` to send upstream instead of the
/// remote's Basic credentials (a registry token), or none at all (`None`).
#[derive(Clone)]
pub struct UpstreamAuth(pub Option<http::HeaderValue>);

impl std::fmt::Debug for UpstreamAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "UpstreamAuth(***)" } else { "UpstreamAuth(none)" })
    }
}

/// How the upstream client behaves.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Limit for establishing a connection (`UPSTREAM_CONNECT_TIMEOUT`).
    pub connect_timeout: Duration,
    /// Limit for any single read, headers or body (`UPSTREAM_READ_TIMEOUT`).
    pub read_timeout: Duration,
    /// Retries of an idempotent request whose connection failed.
    pub connect_retries: u32,
    /// Host names resolved here instead of by DNS (`UPSTREAM_RESOLVE`):
    /// addresses, or none (the name does not resolve, and nothing is asked).
    pub resolve: Vec<(String, Vec<std::net::SocketAddr>)>,
    /// Networks upstream may not send a public remote's requests into
    /// (`UPSTREAM_PRIVATE_NETWORKS`).
    pub private_networks: PrivateNetworks,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            connect_retries: 2,
            resolve: Vec::new(),
            private_networks: PrivateNetworks::default(),
        }
    }
}

/// The service that fetches from upstream.
#[derive(Clone, Debug)]
pub struct UpstreamFetch {
    clients: Arc<Clients>,
    egress: Arc<Egress>,
}

impl UpstreamFetch {
    /// A client configured by `config`.
    pub fn new(config: &UpstreamConfig) -> Result<Self, String> {
        let egress = Egress::new(config.private_networks.clone(), config.resolve.clone());
        Ok(Self { clients: Arc::new(Clients::new(config, egress.clone())?), egress })
    }

    /// Whether a request for the remote at `origin` may be sent to `target`
    /// (a registry's token realm): never into a private network unless the
    /// remote is in one.
    pub fn allows(&self, origin: &Url, target: &Url) -> bool {
        self.egress.allows(origin, target)
    }

    /// Fetches a small document (at most `limit` bytes) from `url`, with
    /// Basic `credentials` if given, for the remote at `origin` (with its
    /// `tls`): a registry's token endpoint. The credentials and the TLS
    /// identity go to `url`'s own origin only; the same timeouts and the
    /// same egress gate (at every hop) as every upstream request apply.
    pub async fn fetch_small(
        &self,
        origin: &Url,
        url: Url,
        credentials: Option<&artifactapi_layers::Credentials>,
        tls: Option<&UpstreamTls>,
        limit: usize,
    ) -> Result<(http::StatusCode, bytes::Bytes), UpstreamError> {
        let error = |e: BoxError| match e.downcast::<UpstreamError>() {
            Ok(e) => *e,
            Err(e) => UpstreamError::new(UpstreamErrorKind::Other, e.to_string()),
        };
        let exchange = Exchange {
            origin: origin.clone(),
            own: Some(url.clone()),
            tls,
            auth: credentials.map(|c| Auth::Basic(c.clone())),
            method: Method::GET,
            url,
            headers: Vec::new(),
        };
        let response = self.send(exchange).await.map_err(error)?;
        let status = response.status();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) =
            stream.try_next().await.map_err(|e| error(classify(reqwest_middleware::Error::Reqwest(e))))?
        {
            if body.len() + chunk.len() > limit {
                return Err(UpstreamError::new(
                    UpstreamErrorKind::Body,
                    format!("the answer is larger than {limit} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body.into()))
    }

    /// Sends `exchange`, following redirects here (at most ten) so that
    /// every hop passes the egress gate before a byte is sent to it and
    /// gets a client of its own: the remote's TLS identity and private CA,
    /// like its credentials, go only to the exchange's own origin.
    async fn send(&self, exchange: Exchange<'_>) -> Result<reqwest::Response, BoxError> {
        let Exchange { origin, own, tls, auth, method, mut url, headers } = exchange;
        for hop in 0..=MAX_REDIRECTS {
            if let Err(why) = self.egress.check(&origin, &url) {
                let what = if hop == 0 { "request" } else { "redirect" };
                let message = format!("{what} {why}");
                return Err(Box::new(UpstreamError::new(UpstreamErrorKind::Redirect, message)));
            }
            let at_home = own.as_ref().is_some_and(|own| own.origin() == url.origin());
            let client = self.clients.get(if at_home { tls } else { None })?;
            let mut builder = client.request(method.clone(), url.clone());
            for (name, value) in &headers {
                builder = builder.header(name, value.clone());
            }
            match (&auth, at_home) {
                (Some(Auth::Header(value)), true) => {
                    builder = builder.header(header::AUTHORIZATION, value.clone())
                }
                (Some(Auth::Basic(c)), true) => builder = builder.basic_auth(&c.username, Some(&c.password)),
                _ => {}
            }
            let response = Egress::scope(origin.clone(), builder.send()).await.map_err(classify)?;
            let status = response.status();
            let location = match status {
                StatusCode::MOVED_PERMANENTLY
                | StatusCode::FOUND
                | StatusCode::SEE_OTHER
                | StatusCode::TEMPORARY_REDIRECT
                | StatusCode::PERMANENT_REDIRECT => response.headers().get(header::LOCATION),
                _ => None,
            };
            let Some(location) = location else { return Ok(response) };
            url = location.to_str().ok().and_then(|l| url.join(l).ok()).ok_or_else(|| -> BoxError {
                let message = "a redirect whose Location is not a URL";
                Box::new(UpstreamError::new(UpstreamErrorKind::Redirect, message))
            })?;
        }
        let message = format!("more than {MAX_REDIRECTS} redirects");
        Err(Box::new(UpstreamError::new(UpstreamErrorKind::Redirect, message)))
    }
}

/// How many redirects one request follows.
const MAX_REDIRECTS: usize = 10;

/// The credentials an exchange carries to its own origin.
enum Auth {
    /// A ready `Authorization` value (a registry token).
    Header(http::HeaderValue),
    /// The remote's Basic credentials.
    Basic(artifactapi_layers::Credentials),
}

/// One request upstream, before it is sent.
struct Exchange<'a> {
    /// The remote's base URL: what the egress rules judge every hop against.
    origin: Url,
    /// The origin the remote's TLS and credentials go to; `None`: nowhere
    /// (a checksum database the remote passes through).
    own: Option<Url>,
    tls: Option<&'a UpstreamTls>,
    auth: Option<Auth>,
    method: Method,
    url: Url,
    headers: Vec<(header::HeaderName, http::HeaderValue)>,
}

/// The upstream URL of `path` on `base`: string concatenation, never URL
/// joining (which would let `//host` or `..` escape), then a check that
/// scheme, host and port are still the remote's.
pub fn upstream_url(base: &Url, path: &ArtifactPath) -> Result<Url, UpstreamError> {
    let mut s = base.as_str().trim_end_matches('/').to_owned();
    s.push('/');
    s.push_str(path.raw());
    if let Some(q) = path.query() {
        s.push('?');
        s.push_str(q);
    }
    let url = Url::parse(&s)
        .map_err(|e| UpstreamError::new(UpstreamErrorKind::Other, format!("bad upstream URL: {e}")))?;
    if url.scheme() != base.scheme()
        || url.host() != base.host()
        || url.port_or_known_default() != base.port_or_known_default()
    {
        return Err(UpstreamError::new(UpstreamErrorKind::Other, "the path would leave the remote's host"));
    }
    Ok(url)
}

impl<B> Service<Request<B>> for UpstreamFetch {
    type Response = Response<ArtifactBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ArtifactBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let prepared = prepare(&req);
        let this = self.clone();
        Box::pin(async move {
            let (exchange, remote) = prepared?;
            let exchange = Exchange { tls: remote.tls.as_deref(), ..exchange };
            let response = this.send(exchange).await?;
            let mut answer = Response::new(body::empty());
            *answer.status_mut() = response.status();
            *answer.headers_mut() = response.headers().clone();
            *answer.body_mut() = body::from_stream(
                response.bytes_stream().map_err(|e| classify(reqwest_middleware::Error::Reqwest(e))),
            );
            Ok(answer)
        })
    }
}

/// The exchange a resolved request makes, and its remote (whose TLS the
/// exchange borrows).
fn prepare<B>(req: &Request<B>) -> Result<(Exchange<'static>, Arc<Remote>), BoxError> {
    let (Some(ResolvedRemote(remote)), Some(path)) =
        (req.extensions().get::<ResolvedRemote>(), req.extensions().get::<ArtifactPath>())
    else {
        return Err(Box::new(UpstreamError::new(
            UpstreamErrorKind::Other,
            "request reached upstream without a resolved remote",
        )));
    };
    let Some(base) = remote.base_url() else {
        return Err(Box::new(UpstreamError::new(
            UpstreamErrorKind::Other,
            format!("remote {} is a local repository and has no upstream", remote.name),
        )));
    };
    let routes = remote.package.format().routes();
    let (url, own) = if let Some(UpstreamUrl(url)) = req.extensions().get::<UpstreamUrl>() {
        // Where the format located the file (a Cargo download, from the
        // registry's `dl` template): judged by the gate like any URL, the
        // remote's credentials and TLS only on its own origin.
        (url.clone(), Some(base.clone()))
    } else {
        match routes.and_then(|r| r.fetched_elsewhere(remote, path)) {
            // Another upstream the format passes through (a Go checksum
            // database) gets neither the remote's credentials nor its TLS.
            Some((other, there)) => (upstream_url(other, &there)?, None),
            None => {
                let own = routes.and_then(|r| r.upstream_path(path));
                (upstream_url(base, own.as_ref().unwrap_or(path))?, Some(base.clone()))
            }
        }
    };
    let method = if req.method() == Method::HEAD { Method::HEAD } else { Method::GET };
    let mut headers = Vec::new();
    for name in FORWARDED {
        for value in req.headers().get_all(&name) {
            headers.push((name.clone(), value.clone()));
        }
    }
    let auth = match (req.extensions().get::<UpstreamAuth>(), &remote.credentials) {
        (Some(UpstreamAuth(Some(value))), _) => Some(Auth::Header(value.clone())),
        (Some(UpstreamAuth(None)), _) | (None, None) => None,
        (None, Some(creds)) => Some(Auth::Basic(creds.clone())),
    };
    let exchange = Exchange { origin: base.clone(), own, tls: None, auth, method, url, headers };
    Ok((exchange, remote.clone()))
}

fn classify(e: reqwest_middleware::Error) -> BoxError {
    let (kind, message) = match e {
        reqwest_middleware::Error::Reqwest(e) => {
            let kind = if e.is_timeout() {
                UpstreamErrorKind::Timeout
            } else if e.is_connect() {
                UpstreamErrorKind::Connect
            } else if e.is_redirect() {
                UpstreamErrorKind::Redirect
            } else if e.is_body() || e.is_decode() {
                UpstreamErrorKind::Body
            } else {
                UpstreamErrorKind::Other
            };
            (kind, chain(&e.without_url()))
        }
        reqwest_middleware::Error::Middleware(e) => (UpstreamErrorKind::Other, e.to_string()),
    };
    Box::new(UpstreamError::new(kind, message))
}

pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// Retries idempotent requests whose connection could not be made.
pub(crate) struct RetryConnect {
    pub(crate) retries: u32,
}

#[async_trait::async_trait]
impl Middleware for RetryConnect {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let idempotent = matches!(*req.method(), Method::GET | Method::HEAD);
        let mut attempt = 0;
        let mut req = req;
        loop {
            let again = if idempotent { req.try_clone() } else { None };
            let result = next.clone().run(req, extensions).await;
            match (result, again) {
                (Err(reqwest_middleware::Error::Reqwest(e)), Some(again))
                    if e.is_connect() && !e.is_timeout() && attempt < self.retries =>
                {
                    attempt += 1;
                    tracing::warn!(attempt, error = %e.without_url(), "upstream connection failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * 3u64.pow(attempt - 1))).await;
                    req = again;
                }
                (result, _) => return result,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_urls_by_concatenation_and_keeps_the_host() {
        let base: Url = "https://mirror.example.com/almalinux/".parse().unwrap();
        let path = ArtifactPath::parse("9/BaseOS/x86_64/os/repodata/repomd.xml", Some("a=1")).unwrap();
        assert_eq!(
            upstream_url(&base, &path).unwrap().as_str(),
            "https://mirror.example.com/almalinux/9/BaseOS/x86_64/os/repodata/repomd.xml?a=1"
        );
        let scoped = ArtifactPath::parse("@scope%2Fname", None).unwrap();
        assert_eq!(
            upstream_url(&base, &scoped).unwrap().as_str(),
            "https://mirror.example.com/almalinux/@scope%2Fname"
        );
        let at = ArtifactPath::parse("@evil.example/x", None).unwrap();
        assert_eq!(upstream_url(&base, &at).unwrap().host_str(), Some("mirror.example.com"));
    }
}
