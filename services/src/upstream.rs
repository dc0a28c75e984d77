//! The upstream client: the innermost service of the stack.
//!
//! It sends the request's artifact path (as the client encoded it) and query
//! to the resolved remote's `base_url`, and answers upstream's response with
//! the body streaming, untouched: no `Accept-Encoding` is sent on the client's
//! behalf and nothing is decompressed, so what is stored is exactly what
//! upstream sent, with its `Content-Encoding`.
//!
//! Redirects are followed (release files and blobs live on CDNs), at most ten,
//! and never from a public remote into a private network ([`crate::egress`]:
//! by the address in the URL, and by what a name resolves to). A remote's
//! credentials go to its own host only: reqwest drops `Authorization` when a
//! redirect leaves the origin. Connection failures of idempotent requests are
//! retried twice with backoff. Proxies come from `HTTPS_PROXY`/`NO_PROXY`.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use artifactapi_layers::{
    body::{self, ArtifactBody},
    error::{BoxError, UpstreamError, UpstreamErrorKind},
    path::ArtifactPath,
    remote::UpstreamTls,
    remote_resolve::ResolvedRemote,
    UpstreamUrl,
};
use futures_util::{future::BoxFuture, TryStreamExt};
use http::{header, Method, Request, Response};
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
    /// `tls`): a registry's token endpoint. The same timeouts, redirect and
    /// egress rules as every upstream request apply.
    pub async fn fetch_small(
        &self,
        origin: &Url,
        url: Url,
        credentials: Option<&artifactapi_layers::Credentials>,
        tls: Option<&UpstreamTls>,
        limit: usize,
    ) -> Result<(http::StatusCode, bytes::Bytes), UpstreamError> {
        let mut builder = self.clients.get(tls)?.get(url);
        if let Some(c) = credentials {
            builder = builder.basic_auth(&c.username, Some(&c.password));
        }
        let error = |e: BoxError| match e.downcast::<UpstreamError>() {
            Ok(e) => *e,
            Err(e) => UpstreamError::new(UpstreamErrorKind::Other, e.to_string()),
        };
        let response = Egress::scope(origin.clone(), builder.send()).await.map_err(|e| error(classify(e)))?;
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
}

pub(crate) fn redirect_policy(egress: Arc<Egress>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > 10 {
            return attempt.error("more than 10 redirects");
        }
        if let Some(origin) = attempt.previous().first() {
            if !egress.allows(origin, attempt.url()) {
                return attempt.error("redirect into a private network refused (the remote is outside)");
            }
        }
        attempt.follow()
    })
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
        let prepared = prepare(&self.clients, &req);
        Box::pin(async move {
            let (builder, origin) = prepared?;
            let response = Egress::scope(origin, builder.send()).await.map_err(classify)?;
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

fn prepare<B>(
    clients: &Clients,
    req: &Request<B>,
) -> Result<(reqwest_middleware::RequestBuilder, Url), BoxError> {
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
    // A path the format fetches from another upstream (a Go checksum
    // database) gets neither the remote's base URL nor its credentials.
    let format = remote.package.format();
    let (url, origin, elsewhere) = if let Some(UpstreamUrl(url)) = req.extensions().get::<UpstreamUrl>() {
        // Where the format located the file (a Cargo download, from the
        // registry's `dl` template): the remote's credentials only go to
        // its own origin, and the egress rules judge it as a redirect
        // from the remote's base URL.
        (url.clone(), base, url.origin() != base.origin())
    } else {
        let (from, own, elsewhere) = match format.fetched_elsewhere(remote, path) {
            Some((other, there)) => (other, Some(there), true),
            None => (base, format.upstream_path(path), false),
        };
        (upstream_url(from, own.as_ref().unwrap_or(path))?, from, elsewhere)
    };
    let method = if req.method() == Method::HEAD { Method::HEAD } else { Method::GET };
    // The remote's TLS, like its credentials, is for its own origin only.
    let client = clients.get(if elsewhere { None } else { remote.tls.as_deref() })?;
    let mut builder = client.request(method, url);
    for name in FORWARDED {
        for value in req.headers().get_all(&name) {
            builder = builder.header(&name, value.clone());
        }
    }
    match (req.extensions().get::<UpstreamAuth>(), &remote.credentials) {
        (Some(UpstreamAuth(Some(value))), _) => {
            builder = builder.header(header::AUTHORIZATION, value.clone())
        }
        (Some(UpstreamAuth(None)), _) | (None, None) => {}
        (None, Some(_)) if elsewhere => {}
        (None, Some(creds)) => builder = builder.basic_auth(&creds.username, Some(&creds.password)),
    }
    Ok((builder, origin.clone()))
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
