//! Committing a complete fill: the blob first, then the index row that
//! makes the entry visible.

use std::time::Duration;

use super::status::{FillJob, Head};
use crate::{
    extensions::StoreAs,
    pattern::Class,
    store::{is_shared_blob, new_blob_key, now_ms, Entry, EntryClass, Refresh, Store, StoreError},
};

/// Makes the spool durable as a blob, then writes the index row: only then
/// is the entry visible. `(size, completed_ms)`: the body's size, and when
/// its clients had the whole of it (the entry's time of storing and of
/// last use). Answers the entry's time to live.
pub(super) async fn commit(
    store: &Store,
    job: &FillJob,
    head: &Head,
    spool_path: &std::path::Path,
    (size, completed_ms): (u64, i64),
    store_as: &StoreAs,
    flushed: bool,
) -> Result<Option<Duration>, StoreError> {
    let file = head.file.clone();
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))??;
    let blob = match &store_as.content_address {
        Some(address) => address.clone(),
        None => new_blob_key(&job.remote.name, &job.key, job.path.file_name()),
    };
    store.blobs.put_file(&blob, spool_path, size).await?;
    let now = now_ms();
    let ttl = job.remote.ttl.for_class(job.class);
    let entry = Entry {
        key: job.key.to_string(),
        remote: job.remote.name.clone(),
        path: job.path.display(),
        blob: blob.clone(),
        size,
        class: match job.class {
            Class::Immutable => EntryClass::Immutable,
            Class::Mutable { .. } => EntryClass::Mutable,
        },
        headers: head.complete_headers().to_vec(),
        cached_at_ms: completed_ms,
        expires_at_ms: match ttl {
            // Declared out of date while this fill ran: stored, but expired.
            Some(_) if flushed && job.class != Class::Immutable => Some(now - 1),
            Some(_) if store.marks.marked_since(&job.key, job.started_ms) => Some(now - 1),
            ttl => ttl.map(|d| now.saturating_add(d.as_millis() as i64)),
        },
        policy: head.policy.clone(),
    };
    for (key, path) in &store_as.aliases {
        // The same bytes under another key (a manifest by digest): immutable.
        let alias = Entry {
            key: key.to_string(),
            path: path.display(),
            class: EntryClass::Immutable,
            expires_at_ms: job.remote.ttl.expiry(EntryClass::Immutable, now),
            policy: None,
            ..entry.clone()
        };
        match store.index.put(alias).await {
            Ok(_) => store.growth.add(&job.remote.name, size),
            Err(e) => tracing::warn!(key = %path.display(), error = %e, "could not store an alias entry"),
        }
    }
    let stored_fresh = entry.expires_at_ms.is_some_and(|at| now < at);
    let committed = store.index.put(entry).await;
    if committed.is_ok() {
        // Eviction checks the budget at once, not on its next round.
        store.growth.add(&job.remote.name, size);
        if stored_fresh && store.marks.marked_since(&job.key, job.started_ms) {
            // Marked while the row was on its way: the marker read the index
            // before the row landed and found nothing fresh to expire. (A
            // mark after this look finds the row.)
            let expired = Refresh { expires_at_ms: Some(now_ms() - 1), revalidated: None };
            if let Err(e) = store.index.refresh(&job.key, &blob, &expired).await {
                tracing::warn!(key = %job.path.display(), error = %e, "could not expire an entry marked out of date");
            }
        }
    }
    match committed {
        Ok(Some(old)) if old.blob != blob => {
            // A shared blob may still be another entry's.
            if !is_shared_blob(&old.blob) {
                if let Err(e) = store.blobs.delete(&old.blob).await {
                    tracing::warn!(blob = %old.blob, error = %e, "could not delete a replaced blob");
                }
            }
            Ok(ttl)
        }
        Ok(_) => Ok(ttl),
        Err(e) => {
            if !is_shared_blob(&blob) {
                let _ = store.blobs.delete(&blob).await;
            }
            Err(e)
        }
    }
}
