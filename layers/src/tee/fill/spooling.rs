//! Copying upstream's body into the spool while publishing it to the fill's
//! clients, and checking it (length, digest) on the way.

use std::{
    fs::File,
    io::Write,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use tokio::sync::watch;

use super::{
    map::clients,
    status::{FillError, FillStatus, Head},
};
use crate::{
    body::ArtifactBody,
    budget::{Cancel, DocumentBudget, ZipBudget},
    digest::Expected,
    error::{UpstreamError, UpstreamErrorKind},
    format::Document,
    tee::spool,
};

/// How often a check over the whole file looks whether a client still
/// waits for it: it stops well within 2 s of the last one leaving.
const CLIENT_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// How spooling a body ended, when upstream did not fail.
pub(super) enum Spooled {
    /// Every byte is in the spool, checked.
    Whole(u64),
    /// The spool could take only the first `at` bytes; `pending` holds the
    /// bytes received after them, `rest` the body still to come.
    NoRoom { at: u64, pending: Vec<Bytes>, rest: ArtifactBody, error: String },
}

/// A batch of frames: what upstream has sent so far, up to a chunk.
struct Batch {
    frames: Vec<Bytes>,
    len: usize,
    /// The body ended after these frames.
    ended: bool,
}

/// Waits for the next frame, then takes every frame already there, up to a
/// chunk.
async fn next_batch(body: &mut ArtifactBody) -> Result<Batch, FillError> {
    let mut batch = Batch { frames: Vec::new(), len: 0, ended: false };
    let take = |frame: http_body::Frame<Bytes>, batch: &mut Batch| {
        if let Ok(data) = frame.into_data() {
            batch.len += data.len();
            batch.frames.push(data);
        }
    };
    match body.frame().await {
        None => batch.ended = true,
        Some(Err(e)) => return Err(FillError::from_box(e, UpstreamErrorKind::Body)),
        Some(Ok(frame)) => take(frame, &mut batch),
    }
    while !batch.ended && batch.len < spool::CHUNK {
        match body.frame().now_or_never() {
            None => break,
            Some(None) => batch.ended = true,
            Some(Some(Err(e))) => return Err(FillError::from_box(e, UpstreamErrorKind::Body)),
            Some(Some(Ok(frame))) => take(frame, &mut batch),
        }
    }
    Ok(batch)
}

/// A spool write in flight: the frames it writes, and how it went.
type Writing = tokio::task::JoinHandle<(Vec<Bytes>, std::io::Result<()>)>;

/// Copies the body into the spool and publishes it to the fill's clients.
///
/// Pipelined: a batch is published to clients (from memory) as soon as it
/// arrives, and written to the spool while the next batch is received, so
/// neither upstream nor the clients wait for the disk. One write is in
/// flight at a time, in order (the digest is computed as it writes), so at
/// most two batches are in memory unspooled.
pub(super) async fn spool_body(
    mut body: ArtifactBody,
    head: &Head,
    tx: &watch::Sender<FillStatus>,
    checks: Checks,
) -> Result<Spooled, FillError> {
    let Checks { expected, zip: budget, document } = checks;
    let mut hasher = expected.as_ref().and_then(|e| e.hasher()).map(|h| Arc::new(Mutex::new(h)));
    let (mut written, mut received) = (0u64, 0u64);
    let mut writing: Option<Writing> = None;
    let mut ended = false;
    loop {
        let batch = if ended { None } else { Some(next_batch(&mut body).await?) };
        if let Some(batch) = &batch {
            ended = batch.ended;
            if batch.len > 0 {
                head.recent.lock().expect("recent lock").push(received, &batch.frames);
                received += batch.len as u64;
                tx.send_modify(|status| {
                    if let FillStatus::Streaming { received: r, .. } = status {
                        *r = received;
                    }
                });
            }
        }
        if let Some(write) = writing.take() {
            let (frames, wrote) = write.await.map_err(|e| FillError::Store(e.to_string().into()))?;
            match wrote {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(28 | 122)) => {
                    // ENOSPC or EDQUOT: no room, but upstream is fine.
                    let mut pending = frames;
                    pending.extend(batch.map(|b| b.frames).unwrap_or_default());
                    return Ok(Spooled::NoRoom { at: written, pending, rest: body, error: e.to_string() });
                }
                Err(e) => return Err(FillError::Store(format!("spool write failed: {e}").into())),
            }
            written += frames.iter().map(|f| f.len() as u64).sum::<u64>();
            head.recent.lock().expect("recent lock").spooled(written);
            tx.send_modify(|status| {
                if let FillStatus::Streaming { written: w, .. } = status {
                    *w = written;
                }
            });
        }
        match batch {
            Some(batch) if batch.len > 0 => {
                let file = head.file.clone();
                let hashing = hasher.clone();
                writing = Some(tokio::task::spawn_blocking(move || {
                    if let Some(h) = hashing {
                        let mut h = h.lock().expect("hasher lock");
                        batch.frames.iter().for_each(|b| h.update(b));
                    }
                    let mut f: &File = &file;
                    let wrote = batch.frames.iter().try_for_each(|b| f.write_all(b));
                    (batch.frames, wrote)
                }));
            }
            _ if ended => break,
            _ => {}
        }
    }
    if let Some(expected) = head.content_length {
        if expected != written {
            return Err(FillError::Upstream(UpstreamError::new(
                UpstreamErrorKind::Body,
                format!("upstream sent {written} of the {expected} bytes it announced"),
            )));
        }
    }
    if let Some(expected) = expected {
        let got = match hasher.take() {
            Some(hasher) => {
                let hasher = Arc::try_unwrap(hasher).map(|m| m.into_inner().expect("hasher lock")).ok();
                Ok(hasher.map(|h| h.finish()).unwrap_or_default())
            }
            // Hashed over the whole file (a Go module zip), while the
            // client's answer waits; stopped once no client waits for it
            // (nothing is cached then: the next request starts again).
            None => {
                let (file, check) = (head.file.clone(), expected.clone());
                let cancel = Arc::new(Cancel::default());
                let stop = cancel.clone();
                let mut checking =
                    tokio::task::spawn_blocking(move || check.of_file(&file, written, &budget, &stop));
                loop {
                    tokio::select! {
                        done = &mut checking => break done.map_err(|e| FillError::Store(e.to_string().into()))?,
                        _ = tokio::time::sleep(CLIENT_POLL) => {
                            if clients(tx) == 0 {
                                cancel.cancel();
                            }
                        }
                    }
                }
            }
        };
        let problem = match got {
            Ok(got) if got == expected.digest => None,
            Ok(got) => Some(format!(
                "digest mismatch: {} promised {}, upstream sent {}",
                expected.vouched_by(),
                expected.show(&expected.digest),
                expected.show(&got)
            )),
            Err(e) => Some(format!("cannot check what {} promised: {e}", expected.vouched_by())),
        };
        if let Some(problem) = problem {
            return Err(FillError::Upstream(UpstreamError::new(UpstreamErrorKind::Body, problem)));
        }
    }
    if let Some((document, budget)) = document.filter(|(_, budget)| written <= budget.output_bytes as u64) {
        // A document that describes more than its budget (YAML aliases) is
        // refused before it is stored, so the cache never keeps what every
        // request would refuse again. One larger than the budget is not
        // read back: the rewrite refuses it by its size.
        let file = head.file.clone();
        let measured = tokio::task::spawn_blocking(move || {
            let mut bytes = vec![0; written as usize];
            std::os::unix::fs::FileExt::read_exact_at(&*file, &mut bytes, 0).map_err(|e| e.to_string())?;
            document.measure(&bytes, &budget).map_err(|over| over.to_string())
        })
        .await
        .map_err(|e| FillError::Store(e.to_string().into()))?;
        if let Err(over) = measured {
            return Err(FillError::Upstream(UpstreamError::new(UpstreamErrorKind::Other, over)));
        }
    }
    Ok(Spooled::Whole(written))
}

/// What a body is checked against once it is all spooled.
pub(super) struct Checks {
    /// The digest promised for it.
    pub(super) expected: Option<Expected>,
    /// What a check over the whole file may inflate.
    pub(super) zip: ZipBudget,
    /// The metadata document it is, and what such a document may describe.
    pub(super) document: Option<(&'static dyn Document, DocumentBudget)>,
}
