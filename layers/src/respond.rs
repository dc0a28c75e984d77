//! Answers built from a stored entry: headers, conditional requests, HEAD and
//! Range. Shared by the cache lookup (hits) and the tee (a Range miss served
//! from the finished spool).

use std::{fs::File, sync::Arc};

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

use crate::{
    body::{self, ArtifactBody},
    content_type,
    extensions::CacheStatus,
    path::ArtifactPath,
    range::{self, RangeRequest},
    store::{AccessLog, BlobStore, Entry, Store, StoreError},
    tee::spool,
};

/// Upstream response headers kept with an entry and answered again on hits.
const KEPT_HEADERS: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CONTENT_DISPOSITION,
    HeaderName::from_static("docker-content-digest"),
];

/// The headers to store for an upstream answer: the kept ones, plus a
/// `Content-Type` by extension when upstream sent none or only the generic
/// `application/octet-stream` (as object stores and release CDNs do), and a
/// `Content-Disposition` when upstream sent none.
pub(crate) fn stored_headers(upstream: &HeaderMap, path: &ArtifactPath) -> Vec<(String, String)> {
    let guessed = content_type::guess(path.file_name());
    let generic = |v: &str| v.trim().eq_ignore_ascii_case("application/octet-stream");
    let mut kept: Vec<(String, String)> = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let value = upstream.get(name)?.to_str().ok()?;
            if *name == header::CONTENT_TYPE && generic(value) {
                return None;
            }
            Some((name.as_str().to_owned(), value.to_owned()))
        })
        .collect();
    if !kept.iter().any(|(k, _)| k == header::CONTENT_TYPE.as_str()) {
        kept.push((header::CONTENT_TYPE.as_str().to_owned(), guessed.to_owned()));
    }
    if !upstream.contains_key(header::CONTENT_DISPOSITION) {
        if let Some(disposition) = disposition(path.file_name()) {
            kept.push((header::CONTENT_DISPOSITION.as_str().to_owned(), disposition));
        }
    }
    kept
}

fn disposition(file_name: &str) -> Option<String> {
    if file_name.is_empty() || !file_name.is_ascii() {
        return None;
    }
    let safe: String =
        file_name.chars().map(|c| if c == '"' || c.is_ascii_control() { '_' } else { c }).collect();
    Some(format!("attachment; filename=\"{safe}\""))
}

/// Writes stored headers onto `response`, and its [`CacheStatus`] as a
/// response extension: layers and metrics above read that, and the edge
/// ([`put_cache_headers`](crate::rescue::put_cache_headers)) writes it as
/// `X-Cache-Status` and `X-Artifact-Source`.
pub(crate) fn put_headers<B>(response: &mut Response<B>, stored: &[(String, String)], status: CacheStatus) {
    response.extensions_mut().insert(status);
    let headers = response.headers_mut();
    for (name, value) in stored {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value))
        {
            headers.insert(name, value);
        }
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

/// Answers a stored entry from the blob store.
pub(crate) async fn serve_entry(
    store: &Store,
    entry: &Entry,
    method: &Method,
    headers: &HeaderMap,
    status: CacheStatus,
) -> Result<Response<ArtifactBody>, StoreError> {
    let stored = Stored { headers: &entry.headers, size: entry.size, status };
    store.access.served(&entry.key, &entry.remote, &entry.path);
    let source = Source::Blob(store.blobs.clone(), entry.blob.clone(), store.access.clone());
    stored.answer(method, headers, source).await
}

/// Where the bytes of an answer come from.
pub(crate) enum Source {
    /// A committed blob, marked in the access log as being read while a
    /// body streams it (HEAD and 304 answers open nothing).
    Blob(Arc<dyn BlobStore>, String, Arc<AccessLog>),
    /// A finished spool file of a fill.
    Spool(Arc<File>),
}

impl Source {
    async fn open(&self, range: std::ops::Range<u64>) -> Result<ArtifactBody, StoreError> {
        Ok(match self {
            Source::Blob(store, key, access) => {
                let guard = access.reading(key);
                let stream = store.open(key, Some(range)).await?;
                body::from_stream(futures_util::StreamExt::map(stream, move |chunk| {
                    let _reading = &guard;
                    chunk
                }))
            }
            Source::Spool(file) => body::from_stream(spool::range_stream(file.clone(), range)),
        })
    }
}

/// A complete stored artifact answered to one request.
pub(crate) struct Stored<'a> {
    pub(crate) headers: &'a [(String, String)],
    pub(crate) size: u64,
    pub(crate) status: CacheStatus,
}

impl Stored<'_> {
    fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.as_str() == name.as_str()).map(|(_, v)| v.as_str())
    }

    /// The answer to `method` with the client's `req` headers.
    pub(crate) async fn answer(
        &self,
        method: &Method,
        req: &HeaderMap,
        source: Source,
    ) -> Result<Response<ArtifactBody>, StoreError> {
        let mut response = Response::new(body::empty());
        put_headers(&mut response, self.headers, self.status);
        if self.not_modified(req) {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response.headers_mut().remove(header::CONTENT_DISPOSITION);
            return Ok(response);
        }
        let wanted = if self.if_range_holds(req) {
            range::parse(req.get(header::RANGE).and_then(|v| v.to_str().ok()), self.size)
        } else {
            RangeRequest::Full
        };
        let range = match wanted {
            RangeRequest::Full => 0..self.size,
            RangeRequest::Partial(r) => {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let content_range = format!("bytes {}-{}/{}", r.start, r.end - 1, self.size);
                response.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&content_range).expect("digits are a valid header"),
                );
                r
            }
            RangeRequest::Unsatisfiable => {
                *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                let content_range = format!("bytes */{}", self.size);
                response.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&content_range).expect("digits are a valid header"),
                );
                response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                return Ok(response);
            }
        };
        response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(range.end - range.start));
        if method != Method::HEAD && !range.is_empty() {
            *response.body_mut() = source.open(range).await?;
        }
        Ok(response)
    }

    fn not_modified(&self, req: &HeaderMap) -> bool {
        if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
            let Some(etag) = self.header(&header::ETAG) else {
                return false;
            };
            return inm.split(',').map(str::trim).any(|tag| tag == "*" || weak_eq(tag, etag));
        }
        match (
            req.get(header::IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok()),
            self.header(&header::LAST_MODIFIED).and_then(|v| httpdate::parse_http_date(v).ok()),
        ) {
            (Some(since), Some(modified)) => modified <= since,
            _ => false,
        }
    }

    fn if_range_holds(&self, req: &HeaderMap) -> bool {
        let Some(if_range) = req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
            return true;
        };
        if if_range.starts_with('"') {
            // A strong comparison: weak tags never satisfy If-Range.
            self.header(&header::ETAG) == Some(if_range)
        } else {
            self.header(&header::LAST_MODIFIED) == Some(if_range)
        }
    }
}

fn weak_eq(a: &str, b: &str) -> bool {
    a.trim_start_matches("W/") == b.trim_start_matches("W/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(upstream: &[(&str, &str)], path: &str) -> Vec<(String, String)> {
        let mut headers = HeaderMap::new();
        for (k, v) in upstream {
            headers.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        stored_headers(&headers, &ArtifactPath::parse(path, None).unwrap())
    }

    fn get<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn keeps_upstream_types_and_guesses_for_missing_or_generic_ones() {
        let h = stored(&[("content-type", "text/html"), ("etag", "\"1\""), ("server", "x")], "a/b.tgz");
        assert_eq!(get(&h, "content-type"), Some("text/html"));
        assert_eq!(get(&h, "etag"), Some("\"1\""));
        assert_eq!(get(&h, "server"), None, "only the kept headers are stored");
        let h = stored(&[("content-type", "application/octet-stream")], "a/b.tgz");
        assert_eq!(get(&h, "content-type"), Some("application/gzip"));
        let h = stored(&[], "a/b.zip");
        assert_eq!(get(&h, "content-type"), Some("application/zip"));
        assert_eq!(get(&h, "content-disposition"), Some("attachment; filename=\"b.zip\""));
        let h = stored(&[("content-disposition", "inline")], "a/b\"c.zip");
        assert_eq!(get(&h, "content-disposition"), Some("inline"));
        assert_eq!(disposition("b\"c.zip").as_deref(), Some("attachment; filename=\"b_c.zip\""));
        assert_eq!(disposition("naïve.zip"), None);
    }
}
