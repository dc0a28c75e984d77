//! The spool: the local file a fill writes upstream bytes into, which every
//! client of that fill reads from at its own pace (positioned reads on one
//! shared descriptor), and which becomes the blob on commit.

use std::{
    fs::{File, OpenOptions},
    hash::{BuildHasher, Hasher},
    io,
    ops::Range,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use futures_util::stream;

use crate::store::BlobStream;

/// The most a client read or a spool write moves at once.
pub(crate) const CHUNK: usize = 1024 * 1024;

/// A name no other fill, process or replica will pick.
pub(crate) fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or_default();
    let mut random = std::collections::hash_map::RandomState::new().build_hasher();
    random.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    random.write_u32(std::process::id());
    format!("{nanos:016x}{:016x}", random.finish())
}

/// Bytes free for an unprivileged writer on the filesystem of `dir`
/// (`None` when it cannot be told).
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Creates a new spool file in `dir`.
pub(crate) fn create(dir: &Path) -> io::Result<(PathBuf, File)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.part", unique_id()));
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    Ok((path, file))
}

/// Reads up to `len` bytes at `offset`, off the async threads.
pub async fn read_at(file: Arc<File>, offset: u64, len: usize) -> io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0; len];
        let n = file.read_at(&mut buf, offset)?;
        buf.truncate(n);
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(io::Error::other)?
}

/// Streams `range` of a complete file.
pub(crate) fn range_stream(file: Arc<File>, range: Range<u64>) -> BlobStream {
    Box::pin(stream::try_unfold((file, range.start), move |(file, offset)| async move {
        if offset >= range.end {
            return Ok(None);
        }
        let len = ((range.end - offset) as usize).min(CHUNK);
        let bytes = read_at(file.clone(), offset, len).await?;
        if bytes.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "spool file is short"));
        }
        let next = offset + bytes.len() as u64;
        Ok(Some((bytes, (file, next))))
    }))
}
