//! The registry's upstream service: the innermost service of the `/v2/`
//! stack, in front of [`UpstreamFetch`].
//!
//! It answers the registry's authentication challenges (see [`super::auth`]),
//! turns a conditional manifest request into a `HEAD` and a digest
//! comparison (a `HEAD` does not count against Docker Hub's pull limit), and
//! checks every body it knows a digest for — blobs, manifests by digest,
//! manifests by tag against their `Docker-Content-Digest` — while it streams:
//! a mismatch fails the body at its end, so the tee above caches nothing. A
//! checked body is stored under its content address; a manifest fetched by
//! tag is stored under its digest too.

use std::{
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use artifactapi_layers::{
    body::ArtifactBody,
    digest::{Algorithm, Expected, Hasher},
    error::{BoxError, UpstreamErrorKind},
    extensions::{StoreAs, Variant},
    format::docker::{
        door::RegistryCall,
        media,
        reference::{Digest, Reference, Target},
    },
    path::KEY_SEPARATOR,
    remote_resolve::ResolvedRemote,
    store::content_address,
    ArtifactPath, UpstreamError,
};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{header, request::Parts, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::{Service, ServiceExt};

use super::auth::{parse_challenge, Tokens};
use crate::upstream::{UpstreamAuth, UpstreamFetch};

/// `Docker-Content-Digest`.
pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// The upstream service of the `/v2/` stack.
#[derive(Debug, Clone)]
pub struct RegistryUpstream {
    fetch: UpstreamFetch,
    tokens: Arc<Tokens>,
}

impl RegistryUpstream {
    /// Fetches with `fetch`, authorizing with `tokens`.
    pub fn new(fetch: UpstreamFetch, tokens: Arc<Tokens>) -> Self {
        Self { fetch, tokens }
    }
}

impl<B: Send + 'static> Service<Request<B>> for RegistryUpstream {
    type Response = Response<ArtifactBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ArtifactBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        let (parts, _body) = req.into_parts();
        Box::pin(async move {
            let Some(call) = parts.extensions.get::<RegistryCall>().cloned() else {
                return this.fetch.oneshot(Request::from_parts(parts, ())).await;
            };
            this.handle(parts, call).await
        })
    }
}

impl RegistryUpstream {
    async fn handle(&self, parts: Parts, call: RegistryCall) -> Result<Response<ArtifactBody>, BoxError> {
        let if_none_match = parts.headers.get(header::IF_NONE_MATCH).cloned();
        let is_tag = matches!(call.target, Target::Manifest(Reference::Tag(_)));
        if let (true, true, Some(condition)) = (is_tag, parts.method == Method::GET, &if_none_match) {
            // Is the tag still on the digest we hold? Ask with a HEAD.
            let head = self.send(&parts, &call, Method::HEAD).await?;
            if head.status() != StatusCode::OK {
                return Ok(head);
            }
            let current =
                head.headers().get(DOCKER_CONTENT_DIGEST).or_else(|| head.headers().get(header::ETAG));
            if current.is_some_and(|c| same_digest(c, condition)) {
                let mut not_modified = Response::new(artifactapi_layers::body::empty());
                *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
                *not_modified.headers_mut() = head.headers().clone();
                return Ok(not_modified);
            }
            tracing::info!(name = %call.name, target = %call.target.suffix(), "tag moved; fetching its manifest");
        }
        let response = self.send(&parts, &call, parts.method.clone()).await?;
        if response.status() != StatusCode::OK || parts.method != Method::GET {
            return Ok(response);
        }
        self.checked(response, &parts, &call)
    }

    /// Sends the request upstream, answering one authentication challenge.
    async fn send(
        &self,
        parts: &Parts,
        call: &RegistryCall,
        method: Method,
    ) -> Result<Response<ArtifactBody>, BoxError> {
        let Some(ResolvedRemote(remote)) = parts.extensions.get::<ResolvedRemote>() else {
            return Err(Box::new(UpstreamError::new(
                UpstreamErrorKind::Other,
                "registry call without a remote",
            )));
        };
        let mut authorization = self.tokens.authorization(remote, &call.name).await;
        let mut answered = false;
        loop {
            let mut req = Request::new(());
            *req.method_mut() = method.clone();
            *req.uri_mut() = parts.uri.clone();
            *req.headers_mut() = parts.headers.clone();
            // The condition is answered here, by digest; upstream gets none.
            req.headers_mut().remove(header::IF_NONE_MATCH);
            req.headers_mut().remove(header::IF_MODIFIED_SINCE);
            *req.extensions_mut() = parts.extensions.clone();
            req.extensions_mut().insert(UpstreamAuth(authorization.clone()));
            let response = self.fetch.clone().oneshot(req).await?;
            if response.status() != StatusCode::UNAUTHORIZED || answered {
                if response.status() == StatusCode::UNAUTHORIZED {
                    self.tokens.forget(remote, &call.name);
                }
                return Ok(response);
            }
            let challenge = response.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
            let Some(challenge) = challenge.and_then(parse_challenge) else {
                return Ok(response);
            };
            match self.tokens.answer(&self.fetch, remote, &call.name, challenge).await? {
                Some(value) => authorization = Some(value),
                None => return Ok(response),
            }
            answered = true;
        }
    }

    /// A 200 to a GET: checks the body against its digest while it streams,
    /// and tells the tee how to store it.
    fn checked(
        &self,
        response: Response<ArtifactBody>,
        parts: &Parts,
        call: &RegistryCall,
    ) -> Result<Response<ArtifactBody>, BoxError> {
        let (mut head, body) = response.into_parts();
        let announced =
            head.headers.get(DOCKER_CONTENT_DIGEST).and_then(|v| v.to_str().ok()).and_then(Digest::parse);
        let media_type =
            head.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let expected = match &call.target {
            Target::Blob(digest) => Some(digest.clone()),
            Target::Manifest(_) if media::is_schema1(media_type) => None,
            Target::Manifest(Reference::Digest(digest)) => {
                if announced.as_ref().is_some_and(|a| a != digest) {
                    return Err(Box::new(UpstreamError::new(
                        UpstreamErrorKind::Body,
                        format!("upstream answered manifest {} for {digest}", announced.expect("checked")),
                    )));
                }
                Some(digest.clone())
            }
            Target::Manifest(Reference::Tag(_)) => announced,
            Target::Tags | Target::Upload => None,
        };
        let Some(digest) = expected else {
            return Ok(Response::from_parts(head, body));
        };
        let digest_text =
            HeaderValue::from_str(&digest.to_string()).expect("a digest is a valid header value");
        head.headers.insert(DOCKER_CONTENT_DIGEST, digest_text);
        let mut store_as = StoreAs {
            content_address: Some(content_address(digest.algorithm(), digest.hex())),
            ..StoreAs::default()
        };
        if let Target::Manifest(reference) = &call.target {
            if !head.headers.contains_key(header::ETAG) {
                // The validator a later refresh compares digests with.
                let etag = HeaderValue::from_str(&format!("\"{digest}\""))
                    .expect("a digest is a valid header value");
                head.headers.insert(header::ETAG, etag);
            }
            if let (Reference::Tag(_), Some(ResolvedRemote(remote))) =
                (reference, parts.extensions.get::<ResolvedRemote>())
            {
                let path = ArtifactPath::parse(&format!("{}/manifests/{digest}", call.name), None)?;
                let mut key = path.cache_key(&remote.name);
                if let Some(Variant(variant)) = parts.extensions.get::<Variant>() {
                    key.push(KEY_SEPARATOR);
                    key.push_str(variant);
                }
                store_as.aliases.push((key.into(), path));
            }
        }
        head.extensions.insert(store_as);
        Ok(Response::from_parts(head, Verified::new(body, &digest).boxed_unsync()))
    }
}

/// Whether a `Docker-Content-Digest` or `ETag` value names the same digest as
/// an `If-None-Match` condition (quotes and weakness ignored).
fn same_digest(current: &HeaderValue, condition: &HeaderValue) -> bool {
    let bare = |v: &str| v.trim().trim_start_matches("W/").trim_matches('"').to_owned();
    match (current.to_str(), condition.to_str()) {
        (Ok(current), Ok(condition)) => {
            let current = bare(current);
            condition.split(',').any(|c| bare(c) == current)
        }
        _ => false,
    }
}

pin_project_lite::pin_project! {
    /// A body that hashes what passes and fails at its end when the digest
    /// is not the one expected.
    struct Verified {
        #[pin]
        inner: ArtifactBody,
        hasher: Option<Hasher>,
        expected: Vec<u8>,
        digest: String,
    }
}

impl Verified {
    fn new(inner: ArtifactBody, digest: &Digest) -> Self {
        let algorithm = if digest.algorithm() == "sha512" { Algorithm::Sha512 } else { Algorithm::Sha256 };
        let expected = hex::decode(digest.hex()).unwrap_or_default();
        let hasher = Expected { algorithm, digest: expected.clone() }.hasher();
        Self { inner, hasher, expected, digest: digest.to_string() }
    }
}

impl Body for Verified {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let (Some(data), Some(hasher)) = (frame.data_ref(), this.hasher.as_mut()) {
                    hasher.update(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            None => match this.hasher.take() {
                Some(hasher) => {
                    let got = hasher.finish();
                    if got == *this.expected {
                        Poll::Ready(None)
                    } else {
                        Poll::Ready(Some(Err(Box::new(UpstreamError::new(
                            UpstreamErrorKind::Body,
                            format!(
                                "digest mismatch: asked for {}, upstream sent bytes of {}",
                                this.digest,
                                hex::encode(got)
                            ),
                        )))))
                    }
                }
                None => Poll::Ready(None),
            },
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use artifactapi_layers::body;

    #[tokio::test]
    async fn a_body_that_does_not_match_its_digest_fails_at_its_end() {
        let good = Digest::parse(&format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"layer"))
        ))
        .unwrap();
        let bytes = Verified::new(body::full("layer"), &good).collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "layer");
        let err = Verified::new(body::full("tampered"), &good).collect().await.unwrap_err();
        assert!(err.to_string().contains("digest mismatch"), "{err}");
    }

    #[test]
    fn conditions_compare_digests_not_quoting() {
        let d = HeaderValue::from_static("sha256:ab");
        assert!(same_digest(&d, &HeaderValue::from_static("\"sha256:ab\"")));
        assert!(same_digest(
            &HeaderValue::from_static("W/\"sha256:ab\""),
            &HeaderValue::from_static("\"x\", \"sha256:ab\"")
        ));
        assert!(!same_digest(&d, &HeaderValue::from_static("\"sha256:cd\"")));
    }
}
