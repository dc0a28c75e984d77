//! The index in PostgreSQL: shared by every replica.
//!
//! Migrations run at start-up; sqlx serialises them across replicas with an
//! advisory lock, so two replicas starting at once is safe. Queries are built
//! at run time: the build needs no database.

use std::time::Duration;

use artifactapi_layers::store::{Entry, Flushed, Index, Refresh, StoreError, Usage};
use async_trait::async_trait;

use super::{backend, blob_row, columns, entry, usage};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};

/// An index in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresIndex {
    pool: PgPool,
}

impl PostgresIndex {
    /// Connects with `options`, failing fast when the server cannot be
    /// reached, and migrates the schema.
    pub async fn connect(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(backend)?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await.map_err(backend)?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Index for PostgresIndex {
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
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let old = sqlx::query(concat!("SELECT ", columns!(), " FROM entries WHERE key = $1 FOR UPDATE"))
            .bind(&e.key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query(
            "INSERT INTO entries (key, remote, path, blob, size, class, headers, cached_at_ms, expires_at_ms, policy, last_access_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $8) \
             ON CONFLICT (key) DO UPDATE SET remote = excluded.remote, path = excluded.path, \
             blob = excluded.blob, size = excluded.size, class = excluded.class, headers = excluded.headers, \
             cached_at_ms = excluded.cached_at_ms, expires_at_ms = excluded.expires_at_ms, policy = excluded.policy, \
             last_access_ms = excluded.last_access_ms",
        )
        .bind(&e.key)
        .bind(&e.remote)
        .bind(&e.path)
        .bind(&e.blob)
        .bind(e.size as i64)
        .bind(e.class.as_str())
        .bind(headers)
        .bind(e.cached_at_ms)
        .bind(e.expires_at_ms)
        .bind(&e.policy)
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
                .bind(headers)
                .bind(&revalidated.policy)
                .bind(key)
                .bind(blob)
                .execute(&self.pool)
                .await
            }
        };
        Ok(done.map_err(backend)?.rows_affected() == 1)
    }

    async fn list(&self, remote: &str, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM entries WHERE remote = $1 AND ($2::text IS NULL OR path > $2) ORDER BY path LIMIT $3"
        ))
        .bind(remote)
        .bind(after)
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(entry).collect()
    }

    async fn touch(&self, accesses: &[(String, i64)]) -> Result<(), StoreError> {
        let (keys, times): (Vec<&str>, Vec<i64>) = accesses.iter().map(|(k, t)| (k.as_str(), *t)).unzip();
        sqlx::query(
            "UPDATE entries SET last_access_ms = GREATEST(COALESCE(entries.last_access_ms, 0), a.at) \
             FROM UNNEST($1::text[], $2::bigint[]) AS a(key, at) WHERE entries.key = a.key",
        )
        .bind(keys)
        .bind(times)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn coldest(&self, remote: Option<&str>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM entries WHERE class <> 'local' AND ($1::text IS NULL OR remote = $1) \
             ORDER BY COALESCE(last_access_ms, cached_at_ms), key LIMIT $2"
        ))
        .bind(remote)
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(entry).collect()
    }

    async fn touch_prefix(&self, remote: &str, prefix: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE entries SET last_access_ms = GREATEST(COALESCE(last_access_ms, 0), $1) WHERE remote = $2 AND left(path, $3) = $4")
            .bind(at)
            .bind(remote)
            .bind(prefix.chars().count() as i32)
            .bind(prefix)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
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
        let row = sqlx::query("SELECT 1 FROM entries WHERE remote = $1 AND left(path, $2) = $3 LIMIT 1")
            .bind(remote)
            .bind(prefix.chars().count() as i32)
            .bind(prefix)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(row.is_some())
    }

    async fn blobs(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT key, blob, cached_at_ms FROM entries")
            .fetch_all(&self.pool)
            .await
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
        let rows = sqlx::query("SELECT remote, COUNT(*)::BIGINT AS n, COALESCE(SUM(size), 0)::BIGINT AS bytes FROM entries GROUP BY remote ORDER BY remote")
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
        let done = sqlx::query("UPDATE entries SET expires_at_ms = $1 WHERE remote = $2 AND class = 'mutable' AND key <> $3 AND substr(path, 1, $4) = $5")
            .bind(now_ms)
            .bind(remote)
            .bind(keep)
            .bind(dir.chars().count() as i32)
            .bind(dir)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn flush(
        &self,
        remote: Option<&str>,
        drop_immutable: bool,
        now_ms: i64,
    ) -> Result<Flushed, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let expired = sqlx::query(
            "UPDATE entries SET expires_at_ms = $1 WHERE class = 'mutable' AND ($2::text IS NULL OR remote = $2)",
        )
        .bind(now_ms)
        .bind(remote)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        let removed = if drop_immutable {
            sqlx::query(concat!(
                "DELETE FROM entries WHERE class = 'immutable' AND ($1::text IS NULL OR remote = $1) RETURNING ",
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
}
