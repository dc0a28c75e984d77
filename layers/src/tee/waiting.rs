//! What a client of a fill waits for, and the body it reads: the head (or a
//! 304, or a pass-through when the store had no room), then the bytes as the
//! fill publishes them, from memory or from the spool.

use std::{io, sync::Arc};

use futures_util::{stream, StreamExt, TryStreamExt};
use http::{header, HeaderValue, Response, StatusCode};
use tokio::sync::watch;

use super::{
    fill::{Direct, FillStatus, Head},
    spool,
};
use crate::{
    body::{self, ArtifactBody},
    error::{BoxError, UpstreamError, UpstreamErrorKind},
    extensions::{CacheStatus, NotModified},
    respond,
    store::StoreError,
};

pub(super) fn abandoned() -> BoxError {
    Box::new(UpstreamError::new(UpstreamErrorKind::Other, "the fill was abandoned"))
}

/// What a client of a fill waited for.
pub(super) enum Waited {
    /// The head of a body being spooled, with its length once complete.
    Head(Arc<Head>, Option<u64>),
    /// Upstream answered the conditional request with 304.
    NotModified(Arc<http::HeaderMap>),
    /// The store had no room: the body is passed through.
    Direct(Arc<Direct>),
}

/// The body of a fill the store had no room for, to the first client that
/// asks; any other is told the store is full.
pub(super) fn direct_answer(
    direct: &Direct,
    status: CacheStatus,
) -> Result<Response<ArtifactBody>, BoxError> {
    let Some(body) = direct.body.lock().expect("direct body lock").take() else {
        return Err(Box::new(StoreError::Backend("the cache store is full".into())));
    };
    let mut response = Response::new(body);
    respond::put_headers(&mut response, &direct.headers, status);
    if let Some(len) = direct.content_length {
        response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(response)
}

/// A 304 from upstream, for the revalidation layer above to act on.
pub(super) fn not_modified(headers: Arc<http::HeaderMap>) -> Response<ArtifactBody> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    response.extensions_mut().insert(NotModified(headers));
    response
}

/// Waits for upstream's answer: the head of a body being spooled (with its
/// length if already complete), a 304, or the fill's failure.
pub(super) async fn wait_head(rx: &mut watch::Receiver<FillStatus>) -> Result<Waited, BoxError> {
    loop {
        match &*rx.borrow_and_update() {
            FillStatus::Pending => {}
            FillStatus::Streaming { head, .. } => return Ok(Waited::Head(head.clone(), None)),
            FillStatus::Complete { head, written } => return Ok(Waited::Head(head.clone(), Some(*written))),
            FillStatus::Failed(e) => return Err(e.clone().into_box()),
            FillStatus::NotModified(h) => return Ok(Waited::NotModified(h.clone())),
            FillStatus::Direct(d) => return Ok(Waited::Direct(d.clone())),
            FillStatus::Handover(h) => return Ok(Waited::Head(h.head.clone(), None)),
        }
        if rx.changed().await.is_err() && matches!(*rx.borrow(), FillStatus::Pending) {
            return Err(abandoned());
        }
    }
}

/// Waits for the whole body to be in the spool (or a 304).
pub(super) async fn wait_complete(rx: &mut watch::Receiver<FillStatus>) -> Result<Waited, BoxError> {
    loop {
        match &*rx.borrow_and_update() {
            FillStatus::Complete { head, written } => return Ok(Waited::Head(head.clone(), Some(*written))),
            FillStatus::Failed(e) => return Err(e.clone().into_box()),
            FillStatus::NotModified(h) => return Ok(Waited::NotModified(h.clone())),
            FillStatus::Direct(d) => return Ok(Waited::Direct(d.clone())),
            FillStatus::Handover(_) => {
                return Err(Box::new(StoreError::Backend("the cache store is full".into())));
            }
            FillStatus::Pending | FillStatus::Streaming { .. } => {}
        }
        if rx.changed().await.is_err()
            && matches!(*rx.borrow(), FillStatus::Pending | FillStatus::Streaming { .. })
        {
            return Err(abandoned());
        }
    }
}

/// A body that reads the spool as the fill writes it, and fails if the fill does.
pub(super) fn tail(rx: watch::Receiver<FillStatus>, head: Arc<Head>) -> ArtifactBody {
    // `offset` is `None` once the rest of a handed-over body was taken.
    let start = (rx, head, Some(0u64));
    let spooled = stream::try_unfold(start, |(mut rx, head, offset)| async move {
        let Some(offset) = offset else { return Ok(None) };
        loop {
            let handover = match &*rx.borrow_and_update() {
                FillStatus::Handover(h) if offset >= h.at => Some(h.clone()),
                _ => None,
            };
            if let Some(h) = handover {
                // The spool holds no more: the rest comes from upstream. This
                // client may have had some of the bytes past the spool from
                // memory already: those are skipped.
                let Some((mut pending, rest)) = h.rest.lock().expect("handover lock").take() else {
                    return Err(io::Error::other(StoreError::Backend("the cache store is full".into())));
                };
                let mut skip = (offset - h.at) as usize;
                for frame in &mut pending {
                    let cut = skip.min(frame.len());
                    *frame = frame.slice(cut..);
                    skip -= cut;
                }
                let rest = stream::iter(pending.into_iter().filter(|f| !f.is_empty()).map(Ok)).chain(
                    http_body_util::BodyStream::new(rest)
                        .try_filter_map(|frame| async move { Ok(frame.into_data().ok()) })
                        .map_err(io::Error::other),
                );
                return Ok(Some((Segment::Rest(Box::pin(rest)), (rx, head, None))));
            }
            // Bytes up to `received` have arrived; those up to `written` are
            // in the spool, the others still in the head's memory window.
            // The last byte of an announced length waits for the fill to be
            // complete and checked: a client never has the whole of a body
            // that then fails its length or digest check.
            let (received, written, complete) = match &*rx.borrow() {
                FillStatus::Pending => (0, 0, false),
                FillStatus::Streaming { written, received, .. } => {
                    let held = head.content_length.map_or(u64::MAX, |len| len.saturating_sub(1));
                    ((*received).min(held), (*written).min(held), false)
                }
                FillStatus::Complete { written, .. } => (*written, *written, true),
                FillStatus::Failed(e) => return Err(io::Error::other(e.clone().into_box())),
                FillStatus::NotModified(_) | FillStatus::Direct(_) => {
                    return Err(io::Error::other(abandoned()))
                }
                FillStatus::Handover(h) => (h.at, h.at, false),
            };
            if offset < received {
                let recent = head.recent.lock().expect("recent lock").at(offset, received);
                let bytes = match recent {
                    Some(bytes) => Some(bytes),
                    None if offset < written => {
                        let len = ((written - offset) as usize).min(spool::CHUNK);
                        Some(spool::read_at(head.file.clone(), offset, len).await?)
                    }
                    // Not spooled yet and no longer in memory: cannot be (the
                    // window keeps what is unspooled); wait for the write.
                    None => None,
                };
                if let Some(bytes) = bytes {
                    if bytes.is_empty() {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "spool file is short"));
                    }
                    let next = offset + bytes.len() as u64;
                    return Ok(Some((Segment::Bytes(bytes), (rx, head, Some(next)))));
                }
            }
            if complete {
                return Ok(None);
            }
            if rx.changed().await.is_err()
                && matches!(*rx.borrow(), FillStatus::Pending | FillStatus::Streaming { .. })
            {
                return Err(io::Error::other(abandoned()));
            }
        }
    });
    // Spooled chunks, then (after a handover) upstream's rest as it arrives.
    let flat = spooled
        .map_ok(|segment| match segment {
            Segment::Bytes(bytes) => stream::once(async move { Ok(bytes) }).boxed(),
            Segment::Rest(rest) => rest,
        })
        .try_flatten();
    body::from_stream(flat)
}

/// A piece of a tail: spooled bytes, or the rest of a handed-over body.
pub(super) enum Segment {
    Bytes(bytes::Bytes),
    Rest(futures_util::stream::BoxStream<'static, io::Result<bytes::Bytes>>),
}
