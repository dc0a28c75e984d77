//! Reading a blob from the object store into a local copy, once per
//! replica: the first reader starts one `GET` of the whole object, written to
//! a file by a task of its own (so a reader that goes away stops nothing),
//! and every reader of the blob meanwhile, the first included, follows that
//! file as it grows, each at its own pace.

use std::{
    fs::File,
    io,
    ops::Range,
    os::unix::fs::FileExt,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use artifactapi_layers::{
    store::{BlobStream, StoreError},
    tee::read_at,
};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::Tier;

/// The most one read of a growing file moves.
const CHUNK: u64 = 1024 * 1024;

/// A read of a whole object into a local copy, under way.
pub(super) struct Filling {
    progress: watch::Receiver<Progress>,
    cancelled: AtomicBool,
}

impl Filling {
    /// The blob was deleted: the copy is not to be kept.
    pub(super) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
}

#[derive(Clone)]
enum Progress {
    /// The object store has not answered yet.
    Asking,
    /// Bytes `..written` of `total` are in `file`.
    Writing { file: Arc<File>, total: u64, written: u64 },
    /// The read broke off.
    Failed,
    /// Nothing is kept (no room, or the object store refused): each reader
    /// reads the object store itself.
    Elsewhere,
}

/// The reader that started a fill, then its writing task: when dropped, the
/// fill is no longer under way.
struct Leading {
    tier: Arc<Tier>,
    key: String,
    filling: Arc<Filling>,
}

impl Drop for Leading {
    fn drop(&mut self) {
        let mut state = self.tier.state.lock().expect("local tier lock");
        if state.filling.get(&self.key).is_some_and(|f| Arc::ptr_eq(f, &self.filling)) {
            state.filling.remove(&self.key);
        }
    }
}

/// Streams `range` (from 0) of the blob under `key`, filling its local copy.
pub(super) async fn read_through(
    tier: Arc<Tier>,
    key: &str,
    range: Option<Range<u64>>,
) -> Result<BlobStream, StoreError> {
    enum Found {
        Copy(u64),
        Filling(Arc<Filling>),
        Lead(watch::Sender<Progress>, Leading),
    }
    let found = {
        let mut state = tier.state.lock().expect("local tier lock");
        if let Some(size) = state.copies.get(key).map(|c| c.size) {
            Found::Copy(size)
        } else if let Some(filling) = state.filling.get(key).cloned() {
            Found::Filling(filling)
        } else {
            let (tx, rx) = watch::channel(Progress::Asking);
            let filling = Arc::new(Filling { progress: rx, cancelled: AtomicBool::new(false) });
            state.filling.insert(key.to_owned(), filling.clone());
            Found::Lead(tx, Leading { tier: tier.clone(), key: key.to_owned(), filling })
        }
    };
    let (tx, leading) = match found {
        // A fill finished since the caller looked.
        Found::Copy(size) => {
            return match tier.open_copy(key, size, range.clone()).await {
                Ok(stream) => Ok(stream),
                Err(_) => tier.inner.open(key, range).await,
            }
        }
        Found::Filling(filling) => return follow_or_read(&tier, key, filling, range).await,
        Found::Lead(tx, leading) => (tx, leading),
    };
    let (stream, total) = match tier.inner.open_sized(key, None).await {
        Ok(opened) => opened,
        Err(e) => {
            let _ = tx.send(Progress::Elsewhere);
            return Err(e);
        }
    };
    let end = range.as_ref().map(|r| r.end);
    let reserved = match total {
        Some(total) if tier.reserve(total).await => Some(total),
        _ => None,
    };
    let Some(total) = reserved else {
        let _ = tx.send(Progress::Elsewhere);
        return Ok(prefix(stream, end));
    };
    let path = tier.incoming_path();
    let file = match File::options().read(true).write(true).create_new(true).open(&path) {
        Ok(file) => Arc::new(file),
        Err(e) => {
            tracing::warn!(error = %e, "cannot write a local copy");
            tier.unreserve(total);
            let _ = tx.send(Progress::Elsewhere);
            return Ok(prefix(stream, end));
        }
    };
    tier.stats.fills.fetch_add(1, Ordering::Relaxed);
    let _ = tx.send(Progress::Writing { file: file.clone(), total, written: 0 });
    let filling = leading.filling.clone();
    tokio::spawn(write(leading, tx, stream, file, path, total));
    Ok(follow(filling, range))
}

/// Waits for a fill another reader started: follows it, or reads the object
/// store when the fill keeps nothing.
async fn follow_or_read(
    tier: &Tier,
    key: &str,
    filling: Arc<Filling>,
    range: Option<Range<u64>>,
) -> Result<BlobStream, StoreError> {
    let mut rx = filling.progress.clone();
    loop {
        match &*rx.borrow_and_update() {
            Progress::Asking => {}
            Progress::Writing { .. } => return Ok(follow(filling, range)),
            Progress::Failed | Progress::Elsewhere => break,
        }
        if rx.changed().await.is_err() {
            break;
        }
    }
    tier.inner.open(key, range).await
}

/// Writes the object's bytes into `file`, then keeps it as the copy.
async fn write(
    leading: Leading,
    tx: watch::Sender<Progress>,
    mut stream: BlobStream,
    file: Arc<File>,
    path: PathBuf,
    total: u64,
) {
    let tier = leading.tier.clone();
    let mut written = 0u64;
    let copied: io::Result<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            let len = chunk.len() as u64;
            if written + len > total {
                return Err(io::Error::other("the object is longer than it said"));
            }
            let (file, at) = (file.clone(), written);
            tokio::task::spawn_blocking(move || file.write_all_at(&chunk, at))
                .await
                .map_err(io::Error::other)??;
            written += len;
            tx.send_modify(|p| {
                if let Progress::Writing { written: w, .. } = p {
                    *w = written;
                }
            });
        }
        if written != total {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the object is shorter than it said"));
        }
        Ok(())
    }
    .await;
    let kept = match copied {
        Ok(()) => tier.keep(&leading.key, path, total).await,
        Err(e) => {
            let _ = tx.send(Progress::Failed);
            let _ = tokio::fs::remove_file(&path).await;
            Err(e)
        }
    };
    match kept {
        Ok(()) => tier.install(&leading.key, total, leading.filling.cancelled.load(Ordering::Relaxed)),
        Err(e) => {
            tracing::warn!(blob = %leading.key, error = %e, "cannot keep a local copy");
            tier.unreserve(total);
        }
    }
}

/// Follows a fill's file from `range.start` to `range.end` (its end).
fn follow(filling: Arc<Filling>, range: Option<Range<u64>>) -> BlobStream {
    let start = range.as_ref().map_or(0, |r| r.start);
    let end = range.map(|r| r.end);
    let state = (filling.progress.clone(), start, end);
    futures_util::stream::try_unfold(state, |(mut rx, offset, end)| async move {
        loop {
            let progress = rx.borrow_and_update().clone();
            let Progress::Writing { file, total, written } = progress else {
                return Err(broke_off());
            };
            let end = end.unwrap_or(total).min(total);
            if offset >= end {
                return Ok(None);
            }
            if written > offset {
                let len = (written.min(end) - offset).min(CHUNK) as usize;
                let bytes = read_at(file, offset, len).await?;
                if bytes.is_empty() {
                    return Err(broke_off());
                }
                let next = offset + bytes.len() as u64;
                return Ok(Some((bytes, (rx, next, Some(end)))));
            }
            if rx.changed().await.is_err() {
                // The writer is gone: what it wrote may still be read.
                let more = matches!(&*rx.borrow(), Progress::Writing { written, .. } if *written > offset);
                if !more {
                    return Err(broke_off());
                }
            }
        }
    })
    .boxed()
}

fn broke_off() -> io::Error {
    io::Error::other("reading the blob from the object store broke off")
}

/// The first `end` bytes of `stream` (all of it when `None`).
fn prefix(stream: BlobStream, end: Option<u64>) -> BlobStream {
    let Some(end) = end else { return stream };
    futures_util::stream::unfold((stream, 0u64), move |(mut stream, sent)| async move {
        if sent >= end {
            return None;
        }
        match stream.next().await? {
            Ok(mut chunk) => {
                chunk.truncate((end - sent).min(chunk.len() as u64) as usize);
                let sent = sent + chunk.len() as u64;
                Some((Ok(chunk), (stream, sent)))
            }
            Err(e) => Some((Err(e), (stream, end))),
        }
    })
    .boxed()
}
