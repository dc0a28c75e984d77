//! What a fill is asked to do and how far it has got, as every client of it
//! sees it: the status, the answer's head, and the memory window of the
//! bytes received last.

use std::{
    fs::File,
    sync::{Arc, Mutex},
};

use bytes::Bytes;

use crate::{
    body::ArtifactBody,
    error::{find_cause, BoxError, UpstreamError, UpstreamErrorKind, UpstreamStatus},
    path::ArtifactPath,
    pattern::Class,
    remote::Remote,
    store::StoreError,
};

/// What a fill has got to, as seen by every client of it.
#[derive(Debug, Clone)]
pub(crate) enum FillStatus {
    /// Waiting for upstream's answer.
    Pending,
    /// Upstream answered 200; `received` bytes have arrived, the first
    /// `written` of them are in the spool, and the rest are in the head's
    /// memory window ([`Head::recent`]), so clients need not wait for the
    /// spool write to send them.
    Streaming { head: Arc<Head>, written: u64, received: u64 },
    /// The whole body is in the spool and checked.
    Complete { head: Arc<Head>, written: u64 },
    /// The fill failed; nothing is cached.
    Failed(FillError),
    /// The fill was conditional and upstream answered 304 with these headers.
    NotModified(Arc<http::HeaderMap>),
    /// The store has no room for the body: it goes to one client as it
    /// arrives, uncached (the first to take it; the others are refused).
    Direct(Arc<Direct>),
    /// The spool filled up part way: its first `at` bytes are readable, the
    /// rest goes on to the one client that reaches `at` first, uncached.
    Handover(Arc<Handover>),
}

/// The rest of a body the spool had no room for.
#[derive(Debug)]
pub(crate) struct Handover {
    pub(crate) head: Arc<Head>,
    pub(crate) at: u64,
    /// Bytes read from upstream but not spooled, then the rest of the body.
    pub(crate) rest: Mutex<Option<(Vec<Bytes>, ArtifactBody)>>,
}

/// An upstream answer passed through uncached.
#[derive(Debug)]
pub(crate) struct Direct {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) content_length: Option<u64>,
    pub(crate) body: Mutex<Option<ArtifactBody>>,
}

/// The answer's head, and the spool its body is in.
#[derive(Debug)]
pub(crate) struct Head {
    /// The headers to answer with while the body streams: upstream's, as
    /// stored, without any header the format decides from the whole body.
    pub(crate) headers: Vec<(String, String)>,
    /// The headers of the complete body, as stored with the entry: set
    /// before the fill says it is complete, when the format decides one
    /// from the whole body (the RubyGems MD5 `ETag`). Every client of such
    /// a fill waits for the body to be complete and answers with these.
    pub(crate) whole: std::sync::OnceLock<Vec<(String, String)>>,
    /// Upstream's `Content-Length`, when it sent one.
    pub(crate) content_length: Option<u64>,
    /// The spool file.
    pub(crate) file: Arc<File>,
    /// The serialized cache policy of the exchange, for later revalidation.
    pub(crate) policy: Option<String>,
    /// The last bytes received, still in memory: every byte not yet in the
    /// spool, and the last few MiB that are. Clients that keep up with the
    /// fill take them from here instead of reading the spool back (no copy,
    /// no blocking read, no wait for the write).
    pub(crate) recent: Mutex<Recent>,
}

impl Head {
    /// The headers to answer with once the body is complete, the same as
    /// the entry stores: every later answer (a store hit, a memory copy, a
    /// revalidated entry) carries these.
    pub(crate) fn complete_headers(&self) -> &[(String, String)] {
        self.whole.get().unwrap_or(&self.headers)
    }
}

/// How much of what a fill wrote last stays in memory for its clients.
const RECENT_BYTES: usize = 4 * 1024 * 1024;

/// The most recently received frames, contiguous, ending at what was
/// received. Frames not yet in the spool are never forgotten.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    /// The spool offset of the first frame.
    start: u64,
    frames: std::collections::VecDeque<Bytes>,
    len: usize,
    /// How much of the body is in the spool: frames past it stay.
    durable: u64,
}

impl Recent {
    /// Appends frames received at `offset` (which follows the last one), and
    /// forgets the oldest spooled ones beyond the window.
    pub(super) fn push(&mut self, offset: u64, frames: &[Bytes]) {
        if self.start + self.len as u64 != offset {
            *self = Recent { start: offset, durable: self.durable.min(offset), ..Recent::default() };
        }
        for f in frames.iter().filter(|f| !f.is_empty()) {
            self.len += f.len();
            self.frames.push_back(f.clone());
        }
        self.trim();
    }

    /// Records that the spool holds the first `upto` bytes.
    pub(super) fn spooled(&mut self, upto: u64) {
        self.durable = self.durable.max(upto);
        self.trim();
    }

    fn trim(&mut self) {
        while self.len > RECENT_BYTES {
            let Some(old) = self.frames.front() else { break };
            if self.start + old.len() as u64 > self.durable {
                break;
            }
            self.len -= old.len();
            self.start += old.len() as u64;
            self.frames.pop_front();
        }
    }

    /// The bytes at `offset`, up to the end of the frame holding it (and
    /// before `limit`), when they are still here.
    pub(crate) fn at(&self, offset: u64, limit: u64) -> Option<Bytes> {
        if offset < self.start || offset >= limit {
            return None;
        }
        let mut frame_start = self.start;
        for f in &self.frames {
            let frame_end = frame_start + f.len() as u64;
            if offset < frame_end {
                let from = (offset - frame_start) as usize;
                let to = (frame_end.min(limit) - frame_start) as usize;
                return Some(f.slice(from..to));
            }
            frame_start = frame_end;
        }
        None
    }
}

/// Why a fill failed. Cloned to every client of the fill.
#[derive(Debug, Clone)]
pub(crate) enum FillError {
    Upstream(UpstreamError),
    Status(UpstreamStatus),
    Store(Arc<str>),
}

impl FillError {
    pub(crate) fn into_box(self) -> BoxError {
        match self {
            FillError::Upstream(e) => Box::new(e),
            FillError::Status(e) => Box::new(e),
            FillError::Store(e) => Box::new(StoreError::Backend(e.to_string())),
        }
    }

    pub(super) fn from_box(e: BoxError, kind: UpstreamErrorKind) -> Self {
        match find_cause::<UpstreamError>(&*e) {
            Some(upstream) => FillError::Upstream(upstream.clone()),
            None => FillError::Upstream(UpstreamError::new(kind, e.to_string())),
        }
    }
}

/// What a fill fetches and how it is stored.
pub(crate) struct FillJob {
    pub(crate) key: Arc<str>,
    pub(crate) remote: Arc<Remote>,
    pub(crate) path: ArtifactPath,
    pub(crate) class: Class,
    /// The request carries validators; a 304 is an answer, not a failure.
    pub(crate) conditional: bool,
    /// This replica holds the coordination lease for the key.
    pub(crate) lease: bool,
    /// When the expired entry this fill replaces expired, if there is one.
    pub(crate) replaces: Option<i64>,
    /// When the fill was asked for (ms since the epoch).
    pub(crate) started_ms: i64,
}

#[cfg(test)]
mod recent_tests {
    use super::*;

    #[test]
    fn recent_bytes_are_sliced_by_offset_and_bounded() {
        let mut r = Recent::default();
        r.push(0, &[Bytes::from_static(b"abcd"), Bytes::from_static(b""), Bytes::from_static(b"efgh")]);
        assert_eq!(r.at(0, 8).as_deref(), Some(&b"abcd"[..]));
        assert_eq!(r.at(2, 8).as_deref(), Some(&b"cd"[..]));
        assert_eq!(r.at(5, 8).as_deref(), Some(&b"fgh"[..]));
        assert_eq!(r.at(5, 6).as_deref(), Some(&b"f"[..]), "never past what is published");
        assert_eq!(r.at(8, 8), None);
        // The window keeps the newest RECENT_BYTES once they are spooled.
        let big = Bytes::from(vec![7u8; RECENT_BYTES]);
        r.push(8, &[big]);
        r.spooled(8 + RECENT_BYTES as u64);
        assert_eq!(r.at(0, 8 + RECENT_BYTES as u64), None, "forgotten: read from the spool");
        assert_eq!(r.at(8, 9).as_deref(), Some(&[7u8][..]));
        // A gap (a write this window did not see) starts it again.
        r.push(100 + RECENT_BYTES as u64, &[Bytes::from_static(b"xyz")]);
        assert_eq!(r.at(8, 9), None);
        assert_eq!(r.at(101 + RECENT_BYTES as u64, u64::MAX).as_deref(), Some(&b"yz"[..]));
    }

    #[test]
    fn bytes_not_yet_spooled_are_never_forgotten() {
        let mut r = Recent::default();
        let mib = Bytes::from(vec![1u8; 1 << 20]);
        for i in 0..8u64 {
            r.push(i << 20, std::slice::from_ref(&mib));
        }
        // Nothing is spooled: all 8 MiB stay, past the window.
        assert!(r.at(0, 8 << 20).is_some(), "the first unspooled byte is still here");
        // Once the spool has 6 MiB, the window shrinks back to its size.
        r.spooled(6 << 20);
        assert!(r.at(0, 8 << 20).is_none());
        assert!(r.at((8 << 20) - RECENT_BYTES as u64, 8 << 20).is_some());
        assert!(r.at(7 << 20, 8 << 20).is_some());
    }
}
