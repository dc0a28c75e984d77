//! The index in SQLite: the embedded default.

use std::{path::Path, str::FromStr, time::Duration};

use artifactapi_layers::store::{Entry, Flushed, Index, Refresh, StoreError, Usage};
use async_trait::async_trait;

use super::{backend, blob_row, columns, entry, usage};
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    SqlitePool,
};

/// An index in a SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteIndex {
    pool: SqlitePool,
}

impl SqliteIndex {
    /// Opens (creating if missing) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(backend)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool =
            SqlitePoolOptions::new().max_connections(8).connect_with(options).await.map_err(backend)?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await.map_err(backend)?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Index for SqliteIndex {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", columns!(), " FROM entries WHERE key = ?"))
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(entry).transpose()
    }

    async fn put(&self, e: Entry) -> Result<Option<Entry>, StoreError> {
        let headers = serde_json::to_string(&e.headers).map_err(backend)?;
        // IMMEDIATE takes the write lock up front: a deferred transaction that
        // reads and then writes fails at once (not after busy_timeout) when
        // another connection committed in between.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
        let old = sqlx::query(concat!("SELECT ", columns!(), " FROM entries WHERE key = ?"))
            .bind(&e.key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query(
            "INSERT INTO entries (key, remote, path, blob, size, class, headers, cached_at_ms, expires_at_ms, policy, last_access_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
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
        .bind(e.cached_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        old.as_ref().map(entry).transpose()
    }

    async fn remove(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let row = sqlx::query(concat!("DELETE FROM entries WHERE key = ? RETURNING ", columns!()))
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(entry).transpose()
    }

    async fn remove_if(&self, key: &str, blob: &str) -> Result<Option<Entry>, StoreError> {
        let row =
            sqlx::query(concat!("DELETE FROM entries WHERE key = ? AND blob = ? RETURNING ", columns!()))
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
                sqlx::query("UPDATE entries SET expires_at_ms = ? WHERE key = ? AND blob = ?")
                    .bind(refresh.expires_at_ms)
                    .bind(key)
                    .bind(blob)
                    .execute(&self.pool)
                    .await
            }
            Some(revalidated) => {
                let headers = serde_json::to_string(&revalidated.headers).map_err(backend)?;
                sqlx::query(
                    "UPDATE entries SET expires_at_ms = ?, headers = ?, policy = ? WHERE key = ? AND blob = ?",
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
            " FROM entries WHERE remote = ? AND (? IS NULL OR path > ?) ORDER BY path LIMIT ?"
        ))
        .bind(remote)
        .bind(after)
        .bind(after)
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(entry).collect()
    }

    async fn touch(&self, accesses: &[(String, i64)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
        for (key, at) in accesses {
            sqlx::query(
                "UPDATE entries SET last_access_ms = MAX(COALESCE(last_access_ms, 0), ?) WHERE key = ?",
            )
            .bind(at)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn coldest(&self, remote: Option<&str>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM entries WHERE class <> 'local' AND (? IS NULL OR remote = ?) \
             ORDER BY COALESCE(last_access_ms, cached_at_ms), key LIMIT ?"
        ))
        .bind(remote)
        .bind(remote)
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(entry).collect()
    }

    async fn touch_prefix(&self, remote: &str, prefix: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE entries SET last_access_ms = MAX(COALESCE(last_access_ms, 0), ?) WHERE remote = ? AND substr(path, 1, ?) = ?")
            .bind(at)
            .bind(remote)
            .bind(prefix.chars().count() as i64)
            .bind(prefix)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn blob_in_use(&self, blob: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM entries WHERE blob = ? LIMIT 1")
            .bind(blob)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(row.is_some())
    }

    async fn has_prefix(&self, remote: &str, prefix: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM entries WHERE remote = ? AND substr(path, 1, ?) = ? LIMIT 1")
            .bind(remote)
            .bind(prefix.chars().count() as i64)
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
        let rows = sqlx::query(concat!("SELECT ", columns!(), " FROM entries WHERE remote = ? AND path = ?"))
            .bind(remote)
            .bind(path)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(entry).collect()
    }

    async fn usage(&self) -> Result<Vec<Usage>, StoreError> {
        let rows = sqlx::query("SELECT remote, COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM entries GROUP BY remote ORDER BY remote")
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
        let done = sqlx::query("UPDATE entries SET expires_at_ms = ? WHERE remote = ? AND class = 'mutable' AND key <> ? AND substr(path, 1, ?) = ?")
            .bind(now_ms)
            .bind(remote)
            .bind(keep)
            .bind(dir.chars().count() as i64)
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
        let expired = sqlx::query(
            "UPDATE entries SET expires_at_ms = ? WHERE class = 'mutable' AND (? IS NULL OR remote = ?)",
        )
        .bind(now_ms)
        .bind(remote)
        .bind(remote)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        let removed = if drop_immutable {
            sqlx::query(concat!(
                "DELETE FROM entries WHERE class = 'immutable' AND (? IS NULL OR remote = ?) RETURNING ",
                columns!()
            ))
            .bind(remote)
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
}

#[cfg(test)]
mod tests {
    use artifactapi_layers::store::{EntryClass, Revalidated};

    use super::*;

    fn sample(key: &str, blob: &str) -> Entry {
        Entry {
            key: key.into(),
            remote: "r".into(),
            path: "a/b.tgz".into(),
            blob: blob.into(),
            size: 3,
            class: EntryClass::Mutable,
            headers: vec![("etag".into(), "\"x\"".into())],
            cached_at_ms: 1,
            expires_at_ms: Some(2),
            policy: Some("{}".into()),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let index = SqliteIndex::open(&dir.path().join("index.db")).await.unwrap();
        let writers: Vec<_> = (0..40)
            .map(|i| {
                let index = index.clone();
                tokio::spawn(async move {
                    index.put(sample(&format!("k{}", i % 10), &format!("b{i}"))).await.map(|_| ())
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap().expect("a concurrent put succeeds");
        }
        for i in 0..10 {
            assert!(index.get(&format!("k{i}")).await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn lists_by_path_in_pages_and_flushes_without_touching_local_entries() {
        let dir = tempfile::tempdir().unwrap();
        let index = SqliteIndex::open(&dir.path().join("index.db")).await.unwrap();
        for (i, class) in [EntryClass::Mutable, EntryClass::Immutable, EntryClass::Local].iter().enumerate() {
            for j in 0..3 {
                let mut e = sample(&format!("k{i}{j}"), "b");
                e.path = format!("p{i}{j}");
                e.class = *class;
                index.put(e).await.unwrap();
            }
        }
        let mut other = sample("other", "b");
        other.remote = "elsewhere".into();
        index.put(other).await.unwrap();

        let page = index.list("r", None, 4).await.unwrap();
        let paths: Vec<_> = page.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["p00", "p01", "p02", "p10"]);
        let page = index.list("r", Some("p10"), 100).await.unwrap();
        assert_eq!(page.len(), 5);

        let flushed = index.flush(Some("r"), false, 5).await.unwrap();
        assert_eq!((flushed.expired, flushed.removed.len()), (3, 0));
        assert_eq!(index.get("k00").await.unwrap().unwrap().expires_at_ms, Some(5));
        let flushed = index.flush(None, true, 6).await.unwrap();
        assert_eq!(flushed.removed.len(), 3);
        assert_eq!(flushed.expired, 4, "every remote's mutable entries");
        assert!(index.get("k10").await.unwrap().is_none());
        assert!(index.get("k20").await.unwrap().is_some(), "local entries survive a flush");
        assert!(index.get("other").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn put_get_replace_remove_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let index = SqliteIndex::open(&db).await.unwrap();
        assert_eq!(index.get("k").await.unwrap(), None);
        assert_eq!(index.put(sample("k", "b1")).await.unwrap(), None);
        assert_eq!(index.get("k").await.unwrap(), Some(sample("k", "b1")));
        let replaced = index.put(sample("k", "b2")).await.unwrap();
        assert_eq!(replaced.map(|e| e.blob), Some("b1".into()));
        drop(index);
        let index = SqliteIndex::open(&db).await.unwrap();
        assert_eq!(index.get("k").await.unwrap().map(|e| e.blob), Some("b2".into()));
        let refresh = Refresh {
            expires_at_ms: Some(99),
            revalidated: Some(Revalidated { headers: vec![("etag".into(), "\"y\"".into())], policy: None }),
        };
        assert!(!index.refresh("k", "b1", &refresh).await.unwrap(), "a replaced entry is not refreshed");
        assert!(index.refresh("k", "b2", &refresh).await.unwrap());
        let got = index.get("k").await.unwrap().unwrap();
        assert_eq!(got.expires_at_ms, Some(99));
        assert_eq!(got.header("etag"), Some("\"y\""));
        assert_eq!(got.policy, None);
        assert_eq!(index.remove("k").await.unwrap().map(|e| e.blob), Some("b2".into()));
        assert_eq!(index.remove("k").await.unwrap(), None);
    }
}
