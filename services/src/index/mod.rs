//! Indexes of cache entries.

mod postgres;
mod sqlite;

use artifactapi_layers::store::{Entry, EntryClass, StoreError, Usage};
pub use postgres::PostgresIndex;
pub use sqlite::SqliteIndex;
use sqlx::{ColumnIndex, Decode, Row, Type};

/// The columns of an entry, in both schemas, as a literal for `concat!`.
macro_rules! columns {
    () => {
        "key, remote, path, blob, size, class, headers, cached_at_ms, expires_at_ms, policy"
    };
}
pub(crate) use columns;

pub(crate) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A remote's usage from a row of either database (`remote`, `n`, `bytes`).
pub(crate) fn usage<'r, R>(row: &'r R) -> Result<Usage, StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Usage {
        remote: row.try_get("remote").map_err(backend)?,
        entries: row.try_get::<i64, _>("n").map_err(backend)?.max(0) as u64,
        bytes: row.try_get::<i64, _>("bytes").map_err(backend)?.max(0) as u64,
    })
}

/// `(key, blob, cached_at_ms)` from a row of either database.
pub(crate) fn blob_row<'r, R>(row: &'r R) -> Result<(String, String, i64), StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok((
        row.try_get("key").map_err(backend)?,
        row.try_get("blob").map_err(backend)?,
        row.try_get("cached_at_ms").map_err(backend)?,
    ))
}

/// An entry from a row of either database.
pub(crate) fn entry<'r, R>(row: &'r R) -> Result<Entry, StoreError>
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
