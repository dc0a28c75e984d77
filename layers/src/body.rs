//! The one response body type every layer answers with.
//!
//! Whichever branch produced a response (a synthetic error, a cached blob, a
//! live upstream stream), the body is an [`ArtifactBody`], so services stacked
//! on each other keep a single response type.

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http_body::Frame;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};

use crate::error::BoxError;

/// A boxed, streaming response body.
pub type ArtifactBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body with no bytes.
pub fn empty() -> ArtifactBody {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body made of bytes already in memory.
pub fn full(bytes: impl Into<Bytes>) -> ArtifactBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// A body that yields the items of a stream of byte chunks.
pub fn from_stream<S, E>(stream: S) -> ArtifactBody
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    StreamBody::new(stream.map_ok(Frame::data).map_err(Into::into)).boxed_unsync()
}

/// The whole of `body`, or `None` when it is longer than `max` bytes (a
/// document over a cap is an error for the caller, never a truncation).
pub async fn read_capped(mut body: ArtifactBody, max: usize) -> Result<Option<Bytes>, BoxError> {
    let mut out = bytes::BytesMut::new();
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
