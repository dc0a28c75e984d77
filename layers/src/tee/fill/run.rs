//! Running one fill: ask upstream, then either pass its answer on (an
//! error, a 304, a body there is no room for) or spool the body and commit it.

use std::{
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use http::{header, Request, Response, StatusCode};
use http_cache_semantics::CachePolicy;
use tokio::sync::watch;
use tower::{Service, ServiceExt};

use super::{
    commit::commit,
    map::Fills,
    spooling::{spool_body, Checks, Spooled},
    status::{Direct, FillError, FillJob, FillStatus, Handover, Head, Recent},
};
use crate::{
    body::ArtifactBody,
    error::{BoxError, UpstreamErrorKind, UpstreamStatus},
    extensions::StoreAs,
    pattern::Class,
    respond,
    store::now_ms,
    tee::{flush::Flushed, spool},
};

/// Free space kept on the spool's filesystem beyond a body's size.
const ROOM_TO_SPARE: u64 = 1 << 20;

/// How long a committed fill stays joinable. A request that looked the key
/// up in the index just before the commit finds the finished fill here
/// instead of starting a second upstream fetch.
pub(super) const LINGER: Duration = Duration::from_secs(2);

/// Runs one fill; answers how long it should stay joinable afterwards.
/// Each step either hands the fill on to the next or has answered its
/// clients (an error, a 304, a body passed on uncached) and ends it; the
/// spool file goes with the fill unless its bytes were committed.
pub(super) async fn run<S, B>(
    fills: Arc<Fills>,
    inner: S,
    req: Request<B>,
    tx: watch::Sender<FillStatus>,
    job: FillJob,
) -> Option<Duration>
where
    S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError>,
{
    let fill = Fill { fills: &fills, tx: &tx, job: &job, span: tracing::Span::current() };
    let (response, policy) = fill.ask_upstream(inner, req).await?;
    let response = fill.pass_on_without_room(response)?;
    let (head, body, store_as, spool) = fill.start_spool(response, policy)?;
    let (written, spool) = fill.spool(body, &head, spool).await?;
    fill.decide_whole_headers(&head, written).await?;
    fill.expire_what_it_replaces().await;
    fill.complete_and_commit(&head, written, spool, &store_as).await
}

/// One fill's context: what every step reports to.
struct Fill<'a> {
    fills: &'a Fills,
    tx: &'a watch::Sender<FillStatus>,
    job: &'a FillJob,
    span: tracing::Span,
}

/// The spool file of a fill: removed when the fill ends without committing
/// it (its clients keep the open file).
struct SpoolFile {
    path: std::path::PathBuf,
    keep: bool,
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Fill<'_> {
    /// Ends the fill with `e`: its clients get the error.
    fn fail<T>(&self, e: FillError) -> Option<T> {
        self.fills.stats.failed.fetch_add(1, Ordering::Relaxed);
        self.tx.send_replace(FillStatus::Failed(e));
        None
    }

    /// Upstream's 200 with its cache policy; anything else is answered to
    /// the clients here (a 304 to a conditional request, an error, a status
    /// passed on; a 404 remembered for the negative lifetime).
    async fn ask_upstream<S, B>(
        &self,
        inner: S,
        req: Request<B>,
    ) -> Option<(Response<ArtifactBody>, Option<String>)>
    where
        S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError>,
    {
        // The exchange as the cache policy records it (for revalidation later).
        let mut policy_req = Request::new(());
        *policy_req.method_mut() = req.method().clone();
        *policy_req.uri_mut() = req.uri().clone();
        *policy_req.headers_mut() = req.headers().clone();
        let response = match inner.oneshot(req).await {
            Ok(response) => response,
            Err(e) => {
                return self.fail(FillError::from_box(e, UpstreamErrorKind::Other));
            }
        };
        if response.status() == StatusCode::NOT_MODIFIED && self.job.conditional {
            self.span.record("outcome", "not modified");
            self.tx.send_replace(FillStatus::NotModified(Arc::new(response.headers().clone())));
            return None;
        }
        if response.status() != StatusCode::OK {
            if response.status() == StatusCode::NOT_FOUND {
                self.fills.remember_missing(&self.job.key, self.job.remote.ttl.negative);
            }
            let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
            self.span.record("outcome", response.status().as_u16());
            let status = UpstreamStatus::new(response.status(), retry_after);
            self.tx.send_replace(FillStatus::Failed(FillError::Status(status)));
            return None;
        }
        let policy = serde_json::to_string(&CachePolicy::new(&policy_req, &response)).ok();
        Some((response, policy))
    }

    /// Whether the format decides the `ETag` from the whole body (RubyGems).
    fn md5_etag(&self) -> bool {
        let freshness = self.job.remote.package.format().freshness();
        freshness.is_some_and(|f| f.etag_is_md5_of_body(&self.job.path))
    }

    /// The response, unless the store has no room for its announced size:
    /// then the clients get the body as it arrives, uncached, and eviction
    /// is asked to make room.
    fn pass_on_without_room(&self, response: Response<ArtifactBody>) -> Option<Response<ArtifactBody>> {
        let announced: Option<u64> = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let (Some(len), Some(free)) = (announced, spool::free_bytes(&self.fills.spool_dir)) else {
            return Some(response);
        };
        if len.saturating_add(ROOM_TO_SPARE) <= free {
            return Some(response);
        }
        let job = self.job;
        tracing::warn!(remote = %job.remote.name, path = %job.path.display(), size = len, free, "no room in the store; serving uncached");
        self.fills.stats.store_full.fetch_add(1, Ordering::Relaxed);
        self.fills.stats.short_of_room.notify_one();
        self.span.record("outcome", "uncached: no room");
        let mut headers = respond::stored_headers(response.headers(), &job.path);
        if self.md5_etag() {
            // Upstream's would fail the client's check, and the body is
            // not held to compute the one it checks.
            headers.retain(|(name, _)| name != header::ETAG.as_str());
        }
        let body = Mutex::new(Some(response.into_body()));
        self.tx.send_replace(FillStatus::Direct(Arc::new(Direct {
            headers,
            content_length: Some(len),
            body,
        })));
        None
    }

    /// Opens the spool file and tells the clients the head: from now on
    /// they stream.
    fn start_spool(
        &self,
        response: Response<ArtifactBody>,
        policy: Option<String>,
    ) -> Option<(Arc<Head>, ArtifactBody, StoreAs, SpoolFile)> {
        let store_as = response.extensions().get::<StoreAs>().cloned().unwrap_or_default();
        let (parts, body) = response.into_parts();
        let (path, file) = match spool::create(&self.fills.spool_dir) {
            Ok(created) => created,
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.fills.spool_dir.display(), "cannot create a spool file");
                return self.fail(FillError::Store(format!("cannot spool: {e}").into()));
            }
        };
        let mut headers = respond::stored_headers(&parts.headers, &self.job.path);
        if self.md5_etag() {
            // Upstream's own would fail the client's check; it stays in
            // the cache policy, as the validator sent upstream.
            headers.retain(|(name, _)| name != header::ETAG.as_str());
        }
        let head = Arc::new(Head {
            headers,
            whole: std::sync::OnceLock::new(),
            content_length: parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            file: Arc::new(file),
            policy,
            recent: Mutex::new(Recent::default()),
        });
        self.tx.send_replace(FillStatus::Streaming { head: head.clone(), written: 0, received: 0 });
        Some((head, body, store_as, SpoolFile { path, keep: false }))
    }

    /// Spools the body, checked as it arrives; answers its size. A disk
    /// that fills up part way hands the rest to a client, uncached.
    async fn spool(
        &self,
        body: ArtifactBody,
        head: &Arc<Head>,
        spool: SpoolFile,
    ) -> Option<(u64, SpoolFile)> {
        let (fills, job) = (self.fills, self.job);
        let expected = fills.digests.as_ref().and_then(|d| d.get(&job.key));
        let document = job.remote.package.format().document(&job.path).map(|d| (d, fills.document_budget));
        let checks = Checks { expected, zip: fills.zip_budget, document };
        match spool_body(body, head, self.tx, checks).await {
            Ok(Spooled::Whole(written)) => Some((written, spool)),
            Ok(Spooled::NoRoom { at, pending, rest, error }) => {
                // The clients read what is spooled, then one of them the
                // rest straight from upstream, uncached. Readers keep the
                // open file; the name goes now (with `spool`).
                tracing::warn!(remote = %job.remote.name, path = %job.path.display(), at, error, "the spool filled up; serving the rest uncached");
                self.span.record("outcome", "uncached: no room");
                fills.stats.store_full.fetch_add(1, Ordering::Relaxed);
                fills.stats.short_of_room.notify_one();
                let rest = Mutex::new(Some((pending, rest)));
                self.tx.send_replace(FillStatus::Handover(Arc::new(Handover {
                    head: head.clone(),
                    at,
                    rest,
                })));
                None
            }
            Err(e) => {
                self.span.record("outcome", "failed");
                if matches!(e, FillError::Store(_)) {
                    fills.stats.short_of_room.notify_one();
                }
                tracing::warn!(remote = %job.remote.name, path = %job.path.display(), error = ?e, "fill failed; nothing cached");
                self.fail(e)
            }
        }
    }

    /// The headers of the whole body, decided once: every answer from now
    /// on (this fill's clients, the stored entry, a revalidated one) has
    /// them. The `ETag` the format's clients check is the MD5 of the file.
    async fn decide_whole_headers(&self, head: &Arc<Head>, written: u64) -> Option<()> {
        if !self.md5_etag() {
            return Some(());
        }
        let file = head.file.clone();
        match tokio::task::spawn_blocking(move || md5_of(&file, written)).await {
            Ok(Ok(etag)) => {
                let mut headers = head.headers.clone();
                headers.push((header::ETAG.as_str().to_owned(), etag));
                let _ = head.whole.set(headers);
                Some(())
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the digest task failed".to_owned(),
                };
                let job = self.job;
                tracing::warn!(remote = %job.remote.name, path = %job.path.display(), error, "cannot read the spool back; nothing cached");
                self.fail(FillError::Store(format!("cannot read the spool: {error}").into()))
            }
        }
    }

    /// What a new version of this file makes out of date (apt: a release
    /// file's index files; Maven: a metadata file's checksums) expires before
    /// any client has the new version's last byte, so a client that has seen
    /// it never gets an older companion from the cache afterwards.
    async fn expire_what_it_replaces(&self) {
        let (store, job) = (&self.fills.store, self.job);
        let expires_under = match job.class {
            Class::Immutable => None,
            Class::Mutable { .. } => {
                job.remote.package.format().freshness().and_then(|f| f.new_version_expires_under(&job.path))
            }
        };
        let Some(dir) = expires_under else { return };
        if matches!(store.index.get(&job.key).await, Ok(Some(_))) {
            if let Err(e) = store.index.expire_under(&job.remote.name, dir, &job.key, now_ms()).await {
                tracing::warn!(error = %e, "could not expire the entries a new version makes out of date");
            }
        }
    }

    /// Tells the clients the body is complete, then stores it (unless a
    /// flush removed what it replaces meanwhile); answers how long the
    /// finished fill stays joinable.
    async fn complete_and_commit(
        &self,
        head: &Arc<Head>,
        written: u64,
        mut spool: SpoolFile,
        store_as: &StoreAs,
    ) -> Option<Duration> {
        let (fills, job) = (self.fills, self.job);
        // From before the clients see the body complete until its row is
        // written: a flush waits for this commit, or this commit sees the flush.
        let _committing = fills.flushes.gate.read().await;
        // When the clients have the whole body: the entry was last served
        // then, not when its row is written (after the blob is made durable,
        // which takes long on a busy disk), so a file read after this one's
        // last byte is always the more recently used.
        let completed_ms = now_ms();
        self.tx.send_replace(FillStatus::Complete { head: head.clone(), written });
        self.span.record("bytes", written);
        let flushed = fills.flushes.since(&job.remote.name, job.started_ms);
        if flushed == Flushed::Removed {
            // The cache was flushed while this fill ran: its bytes are older
            // than the flush, so its clients have them and the cache does not.
            self.span.record("outcome", "not stored: flushed");
            return None;
        }
        let expired = flushed == Flushed::Expired;
        let committed =
            commit(&fills.store, job, head, &spool.path, (written, completed_ms), store_as, expired).await;
        self.span.record("outcome", if committed.is_ok() { "stored" } else { "not stored" });
        match committed {
            // Only an entry that stays fresh longer than the linger may be
            // answered from the finished fill: `mutable_ttl: 0` means every
            // request asks upstream.
            Ok(ttl) => {
                spool.keep = true;
                ttl.is_none_or(|t| t > fills.linger).then_some(fills.linger)
            }
            Err(e) => {
                fills.stats.store_failures.fetch_add(1, Ordering::Relaxed);
                fills.stats.short_of_room.notify_one();
                tracing::warn!(remote = %job.remote.name, path = %job.path.display(), error = %e, "could not store a complete body; served uncached");
                None
            }
        }
    }
}

/// The quoted MD5 of the first `len` bytes of `file`.
fn md5_of(file: &std::fs::File, len: u64) -> std::io::Result<String> {
    use md5::{Digest, Md5};
    use std::os::unix::fs::FileExt;
    let (mut hash, mut buf, mut at) = (Md5::new(), vec![0u8; spool::CHUNK], 0u64);
    while at < len {
        let n = ((len - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        hash.update(&buf[..n]);
        at += n as u64;
    }
    Ok(format!("\"{}\"", hex::encode(hash.finalize())))
}
