//! Index rows decoded, on either database: an [`Entry`], a [`Cold`] one, a
//! [`BlobRow`], a remote's [`Usage`].

use artifactapi_layers::store::{BlobRow, Cold, Entry, EntryClass, StoreError, Usage};
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::sql::backend;

/// An entry from a row of `columns!()`.
pub(super) fn entry<'r, R>(row: &'r R) -> Result<Entry, StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let class: String = row.try_get("class").map_err(backend)?;
    let headers: String = row.try_get("headers").map_err(backend)?;
    Ok(Entry {
        key: row.try_get("key").map_err(backend)?,
        remote: row.try_get("remote").map_err(backend)?,
        path: row.try_get("path").map_err(backend)?,
        blob: row.try_get("blob").map_err(backend)?,
        size: row.try_get::<i64, _>("size").map_err(backend)? as u64,
        class: EntryClass::parse(&class).ok_or_else(|| backend(format!("unknown class {class:?}")))?,
        headers: serde_json::from_str(&headers).map_err(backend)?,
        cached_at_ms: row.try_get("cached_at_ms").map_err(backend)?,
        expires_at_ms: row.try_get("expires_at_ms").map_err(backend)?,
        policy: row.try_get("policy").map_err(backend)?,
    })
}

/// An entry from a row of `columns!()` and `last_access_ms`.
pub(super) fn cold<'r, R>(row: &'r R) -> Result<Cold, StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Cold { entry: entry(row)?, last_access_ms: row.try_get("last_access_ms").map_err(backend)? })
}

/// A row of `blob, key, cached_at_ms`.
pub(super) fn blob_row<'r, R>(row: &'r R) -> Result<BlobRow, StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(BlobRow {
        blob: row.try_get("blob").map_err(backend)?,
        key: row.try_get("key").map_err(backend)?,
        cached_at_ms: row.try_get("cached_at_ms").map_err(backend)?,
    })
}

/// A row of `remote, entries, bytes` (the usage table).
pub(super) fn usage<'r, R>(row: &'r R) -> Result<Usage, StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Usage {
        remote: row.try_get("remote").map_err(backend)?,
        entries: row.try_get::<i64, _>("entries").map_err(backend)?.max(0) as u64,
        bytes: row.try_get::<i64, _>("bytes").map_err(backend)?.max(0) as u64,
    })
}
