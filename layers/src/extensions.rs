//! The typed request and response extensions through which layers talk.

use std::{borrow::Cow, sync::Arc};

use http::HeaderValue;

use crate::{path::ArtifactPath, pattern::Class, store::Entry};

/// How a path was classified by the pattern guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification(pub Class);

/// The cache key of the request, set by the cache lookup for the layers below it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(pub Arc<str>);

/// An expired entry found by the cache lookup; the layers below may revalidate
/// it or serve it when upstream fails.
#[derive(Debug, Clone)]
pub struct StaleEntry(pub Arc<Entry>);

/// The content variant a request negotiated (for example PEP 691 JSON versus
/// HTML for a PyPI page, or the set of manifest media types a registry client
/// accepts), set by the layer that negotiates it. Each variant is cached
/// apart: the cache lookup adds it to the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant(pub Cow<'static, str>);

/// On an upstream response: how the tee stores the body besides under the
/// request's own key. Set by a package format that knows its bytes by digest
/// (Docker blobs and manifests).
#[derive(Debug, Clone, Default)]
pub struct StoreAs {
    /// A content address (see [`crate::store::content_address`]): the body is
    /// stored once under it, shared by every entry with the same bytes in any
    /// remote, instead of under a key of its own.
    pub content_address: Option<String>,
    /// More cache keys the same bytes answer, stored as immutable entries (a
    /// manifest fetched by tag, under its digest). The body's digest was
    /// checked before these are written.
    pub aliases: Vec<(Arc<str>, ArtifactPath)>,
}

/// Validators for a conditional upstream request (`If-None-Match`,
/// `If-Modified-Since`), set by the revalidation layer for the fill below it.
#[derive(Debug, Clone)]
pub struct Conditional(pub http::HeaderMap);

/// On a response: upstream answered 304 to the conditional request; these
/// are the headers of that answer.
#[derive(Debug, Clone)]
pub struct NotModified(pub Arc<http::HeaderMap>);

/// Where an answer came from, as told in `X-Cache-Status` (nginx's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from a fresh cache entry.
    Hit,
    /// Not cached: fetched from upstream.
    Miss,
    /// Cached but expired: fetched again from upstream.
    Expired,
    /// Expired, upstream failed, the old copy was served.
    Stale,
    /// Expired, upstream confirmed the copy is current.
    Revalidated,
    /// Stored in a local repository: not a cache at all.
    Local,
}

impl CacheStatus {
    /// The header value for `X-Cache-Status`.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Stale => "STALE",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Local => "LOCAL",
        })
    }

    /// The value of the seed's `X-Artifact-Source` header for this status.
    pub fn source(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            CacheStatus::Miss | CacheStatus::Expired => "remote",
            CacheStatus::Local => "local",
            _ => "cache",
        })
    }
}

/// Header names this crate sets on answers.
pub mod headers {
    use http::HeaderName;

    /// `X-Artifact-Source: cache|remote|local` (the seed's header).
    pub const X_ARTIFACT_SOURCE: HeaderName = HeaderName::from_static("x-artifact-source");
    /// `X-Cache-Status: HIT|MISS|EXPIRED|STALE|REVALIDATED`.
    pub const X_CACHE_STATUS: HeaderName = HeaderName::from_static("x-cache-status");
}

/// Where upstream serves the requested file, when the format says it is not
/// the path under `base_url` (see
/// [`Relocation::locate`](crate::format::Relocation::locate)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl(pub url::Url);
