//! The one implementation of [`Index`] over SQL, for SQLite and PostgreSQL.
//!
//! Queries are built at run time, so the build needs no database. Every
//! statement here reads the same on both; what does not is asked of the
//! [`Dialect`].
//!
//! Over 400 lines on purpose: it is one `impl Index`, a statement a method,
//! and Rust keeps a trait impl in one block. What is not a statement is
//! elsewhere (`row.rs` decodes, `prefix.rs` computes ranges, `dialect.rs`).

use std::collections::HashMap;

use artifactapi_layers::store::{BlobRow, Cold, Entry, Flushed, Index, Refresh, Served, StoreError, Usage};
use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};

use super::{
    columns, later_access,
    prefix::prefix_end,
    row::{blob_row, cold, entry, usage},
    Dialect,
};

/// An index in a SQL database: [`super::SqliteIndex`] or [`super::PostgresIndex`].
#[derive(Debug)]
pub struct SqlIndex<DB: Database> {
    pub(super) pool: Pool<DB>,
}

// By hand: a derive would ask `DB: Clone`, and the pool is what is shared.
impl<DB: Database> Clone for SqlIndex<DB> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone() }
    }
}

pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// How many characters `prefix` has, for `substr(path, 1, n) = prefix`: an
/// `i32` because PostgreSQL's `substr` takes an `integer` and finds no
/// function for a `bigint` (SQLite takes either).
fn chars(prefix: &str) -> i32 {
    i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX)
}

/// A `LIMIT` of `n` rows, as the `bigint` both databases take.
fn at_most(n: usize) -> i64 {
    n.min(i64::MAX as usize) as i64
}

// The bounds say what both drivers provide (executors, the types bound and
// read); Rust does not infer them from `DB: Dialect`, so they are spelt out.
#[async_trait]
impl<DB> Index for SqlIndex<DB>
where
    DB: Dialect,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    for<'a> i32: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    &'static str: ColumnIndex<DB::Row>,
{
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", columns!(), " FROM entries WHERE key = $1"))
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(entry).transpose()
    }

    async fn put(&self, e: Entry) -> Result<Option<Entry>, StoreError> {
        let headers = serde_json::to_string(&e.headers).map_err(backend)?;
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await.map_err(backend)?;
        let old = sqlx::query(DB::SELECT_FOR_REPLACE)
            .bind(e.key.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        // Last served when stored: `$8` twice.
        sqlx::query(
            "INSERT INTO entries (key, remote, path, blob, size, class, headers, cached_at_ms, expires_at_ms, policy, last_access_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $8) \
             ON CONFLICT (key) DO UPDATE SET remote = excluded.remote, path = excluded.path, \
             blob = excluded.blob, size = excluded.size, class = excluded.class, headers = excluded.headers, \
             cached_at_ms = excluded.cached_at_ms, expires_at_ms = excluded.expires_at_ms, policy = excluded.policy, \
             last_access_ms = excluded.last_access_ms",
        )
        .bind(e.key.as_str())
        .bind(e.remote.as_str())
        .bind(e.path.as_str())
        .bind(e.blob.as_str())
        .bind(e.size as i64)
        .bind(e.class.as_str())
        .bind(headers.as_str())
        .bind(e.cached_at_ms)
        .bind(e.expires_at_ms)
        .bind(e.policy.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        old.as_ref().map(entry).transpose()
    }

    async fn remove(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let row = sqlx::query(concat!("DELETE FROM entries WHERE key = $1 RETURNING ", columns!()))
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(entry).transpose()
    }

    async fn remove_if(&self, key: &str, blob: &str) -> Result<Option<Entry>, StoreError> {
        let row =
            sqlx::query(concat!("DELETE FROM entries WHERE key = $1 AND blob = $2 RETURNING ", columns!()))
                .bind(key)
                .bind(blob)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        row.as_ref().map(entry).transpose()
    }

    async fn refresh(&self, key: &str, blob: &str, refresh: &Refresh) -> Result<bool, StoreError> {
        let done = match &refresh.revalidated {
            None => {
                sqlx::query("UPDATE entries SET expires_at_ms = $1 WHERE key = $2 AND blob = $3")
                    .bind(refresh.expires_at_ms)
                    .bind(key)
                    .bind(blob)
                    .execute(&self.pool)
                    .await
            }
            Some(revalidated) => {
                let headers = serde_json::to_string(&revalidated.headers).map_err(backend)?;
                sqlx::query(
                    "UPDATE entries SET expires_at_ms = $1, headers = $2, policy = $3 WHERE key = $4 AND blob = $5",
                )
                .bind(refresh.expires_at_ms)
                .bind(headers.as_str())
                .bind(revalidated.policy.as_deref())
                .bind(key)
                .bind(blob)
                .execute(&self.pool)
                .await
            }
        };
        Ok(DB::rows_affected(&done.map_err(backend)?) == 1)
    }

    async fn list(&self, remote: &str, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        // Two statements, as in `coldest`: with `path > $2 OR $2 IS NULL`
        // a deep page read the remote's paths from the first (55 ms at a
        // million entries); this way each starts where the last page ended.
        let rows = match after {
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM entries WHERE remote = $1 ORDER BY path LIMIT $2"
                ))
                .bind(remote)
                .bind(at_most(limit))
                .fetch_all(&self.pool)
                .await
            }
            Some(after) => {
                sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM entries WHERE remote = $1 AND path > $2 ORDER BY path LIMIT $3"
                ))
                .bind(remote)
                .bind(after)
                .bind(at_most(limit))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(backend)?;
        rows.iter().map(entry).collect()
    }

    async fn touch(&self, accesses: &[Served]) -> Result<(), StoreError> {
        DB::touch(&self.pool, accesses).await
    }

    async fn served(&self, keys: &[String]) -> Result<HashMap<String, (u64, i64)>, StoreError> {
        DB::served(&self.pool, keys).await
    }

    async fn coldest(
        &self,
        remote: Option<&str>,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<Cold>, StoreError> {
        // Two statements, not one with an optional remote: each reads its
        // own index in order (entries_by_access_key, entries_by_remote_access)
        // from the cursor and stops after `limit` rows, so a round reads
        // each row once however many it keeps. No cursor is the least one.
        let (at, key) = after.unwrap_or((i64::MIN, ""));
        let rows = match remote {
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    ", last_access_ms FROM entries WHERE class <> 'local' \
                     AND (last_access_ms, key) > ($1, $2) ORDER BY last_access_ms, key LIMIT $3"
                ))
                .bind(at)
                .bind(key)
                .bind(at_most(limit))
                .fetch_all(&self.pool)
                .await
            }
            Some(remote) => {
                sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    ", last_access_ms FROM entries WHERE remote = $1 AND class <> 'local' \
                     AND (last_access_ms, key) > ($2, $3) ORDER BY last_access_ms, key LIMIT $4"
                ))
                .bind(remote)
                .bind(at)
                .bind(key)
                .bind(at_most(limit))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(backend)?;
        rows.iter().map(cold).collect()
    }

    async fn touch_prefix(&self, remote: &str, prefix: &str, at: i64) -> Result<(), StoreError> {
        let done = match prefix_end(prefix) {
            Some(end) => {
                sqlx::query(concat!(
                    "UPDATE entries SET last_access_ms = ",
                    later_access!(),
                    " WHERE remote = $2 AND path >= $3 AND path < $4"
                ))
                .bind(at)
                .bind(remote)
                .bind(prefix)
                .bind(end.as_str())
                .execute(&self.pool)
                .await
            }
            None => {
                sqlx::query(concat!(
                    "UPDATE entries SET last_access_ms = ",
                    later_access!(),
                    " WHERE remote = $2 AND substr(path, 1, $3) = $4"
                ))
                .bind(at)
                .bind(remote)
                .bind(chars(prefix))
                .bind(prefix)
                .execute(&self.pool)
                .await
            }
        };
        done.map_err(backend)?;
        Ok(())
    }

    async fn blob_in_use(&self, blob: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM entries WHERE blob = $1 LIMIT 1")
            .bind(blob)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(row.is_some())
    }

    async fn has_prefix(&self, remote: &str, prefix: &str) -> Result<bool, StoreError> {
        let row = match prefix_end(prefix) {
            Some(end) => {
                sqlx::query("SELECT 1 FROM entries WHERE remote = $1 AND path >= $2 AND path < $3 LIMIT 1")
                    .bind(remote)
                    .bind(prefix)
                    .bind(end.as_str())
                    .fetch_optional(&self.pool)
                    .await
            }
            None => {
                sqlx::query("SELECT 1 FROM entries WHERE remote = $1 AND substr(path, 1, $2) = $3 LIMIT 1")
                    .bind(remote)
                    .bind(chars(prefix))
                    .bind(prefix)
                    .fetch_optional(&self.pool)
                    .await
            }
        };
        Ok(row.map_err(backend)?.is_some())
    }

    async fn blob_rows(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<BlobRow>, StoreError> {
        // Two statements, as in `coldest`: each reads entries_by_blob in
        // order from where the last page ended.
        let rows = match after {
            None => {
                sqlx::query("SELECT blob, key, cached_at_ms FROM entries ORDER BY blob, key LIMIT $1")
                    .bind(at_most(limit))
                    .fetch_all(&self.pool)
                    .await
            }
            Some((blob, key)) => {
                sqlx::query(
                    "SELECT blob, key, cached_at_ms FROM entries WHERE (blob, key) > ($1, $2) \
                     ORDER BY blob, key LIMIT $3",
                )
                .bind(blob)
                .bind(key)
                .bind(at_most(limit))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(backend)?;
        rows.iter().map(blob_row).collect()
    }

    async fn find_path(&self, remote: &str, path: &str) -> Result<Vec<Entry>, StoreError> {
        let rows =
            sqlx::query(concat!("SELECT ", columns!(), " FROM entries WHERE remote = $1 AND path = $2"))
                .bind(remote)
                .bind(path)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        rows.iter().map(entry).collect()
    }

    async fn usage(&self) -> Result<Vec<Usage>, StoreError> {
        // Kept by triggers (migrations *_usage_and_blob_order.sql).
        let rows = sqlx::query("SELECT remote, entries, bytes FROM usage WHERE entries > 0 ORDER BY remote")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(usage).collect()
    }

    async fn expire_under(
        &self,
        remote: &str,
        dir: &str,
        keep: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let done = match prefix_end(dir) {
            Some(end) => {
                sqlx::query(
                    "UPDATE entries SET expires_at_ms = $1 \
                     WHERE remote = $2 AND class = 'mutable' AND key <> $3 AND path >= $4 AND path < $5",
                )
                .bind(now_ms)
                .bind(remote)
                .bind(keep)
                .bind(dir)
                .bind(end.as_str())
                .execute(&self.pool)
                .await
            }
            None => {
                sqlx::query(
                    "UPDATE entries SET expires_at_ms = $1 \
                     WHERE remote = $2 AND class = 'mutable' AND key <> $3 AND substr(path, 1, $4) = $5",
                )
                .bind(now_ms)
                .bind(remote)
                .bind(keep)
                .bind(chars(dir))
                .bind(dir)
                .execute(&self.pool)
                .await
            }
        }
        .map_err(backend)?;
        Ok(DB::rows_affected(&done))
    }

    async fn flush(
        &self,
        remote: Option<&str>,
        drop_immutable: bool,
        now_ms: i64,
    ) -> Result<Flushed, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await.map_err(backend)?;
        let expired = sqlx::query(
            "UPDATE entries SET expires_at_ms = $1 WHERE class = 'mutable' AND (CAST($2 AS TEXT) IS NULL OR remote = $2)",
        )
        .bind(now_ms)
        .bind(remote)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let expired = DB::rows_affected(&expired);
        let removed = if drop_immutable {
            sqlx::query(concat!(
                "DELETE FROM entries WHERE class = 'immutable' AND (CAST($1 AS TEXT) IS NULL OR remote = $1) RETURNING ",
                columns!()
            ))
            .bind(remote)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?
            .iter()
            .map(entry)
            .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        tx.commit().await.map_err(backend)?;
        Ok(Flushed { expired, removed })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(backend)
    }

    async fn connects(&self) -> Result<(), StoreError> {
        DB::connects(&self.pool).await
    }
}
