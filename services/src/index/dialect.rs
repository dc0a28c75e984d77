//! What SQLite and PostgreSQL do differently, side by side: connecting and
//! migrating, the transaction in which `put` reads the entry it replaces,
//! and writing a batch of access times. Everything else is `sql.rs`.

use std::{collections::HashMap, future::Future, path::Path, str::FromStr, time::Duration};

use artifactapi_layers::store::{Served, StoreError};
use sqlx::Row;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    Database, Pool, Postgres, Sqlite,
};

use super::{columns, later_access, sql::backend, SqlIndex};

/// A database that [`SqlIndex`] runs on: SQLite or PostgreSQL (sealed).
pub trait Dialect: Database + sealed::Sealed {
    /// Opens a transaction that writes: the one in which `put` reads the
    /// entry it replaces and then writes its own, and `flush`'s.
    const BEGIN_WRITE: &'static str;
    /// Reads the entry under `$1` that `put` is about to replace, so that
    /// no other writer replaces it too before the commit.
    const SELECT_FOR_REPLACE: &'static str;
    /// How many rows a statement changed: each driver has its own result
    /// type, and sqlx has no trait for this.
    fn rows_affected(done: &Self::QueryResult) -> u64;
    /// Records when entries were last served; an earlier time never
    /// replaces a later one ([`artifactapi_layers::store::Index::touch`]).
    fn touch(pool: &Pool<Self>, accesses: &[Served]) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// How many times each of `keys` was served, and when last
    /// ([`artifactapi_layers::store::Index::served`]).
    fn served(
        pool: &Pool<Self>,
        keys: &[String],
    ) -> impl Future<Output = Result<HashMap<String, (u64, i64)>, StoreError>> + Send;
    /// Whether a new connection can be made now, without the pool's retries
    /// ([`artifactapi_layers::store::Index::connects`]).
    fn connects(pool: &Pool<Self>) -> impl Future<Output = Result<(), StoreError>> + Send;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for sqlx::Sqlite {}
    impl Sealed for sqlx::Postgres {}
}

impl Dialect for Sqlite {
    // SQLite locks the whole database, not rows. IMMEDIATE takes the write
    // lock up front: a deferred transaction that reads and then writes fails
    // at once (not after busy_timeout) when another connection committed in
    // between.
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    // No FOR UPDATE in SQLite, and no need: the transaction holds the lock.
    const SELECT_FOR_REPLACE: &'static str = concat!("SELECT ", columns!(), " FROM entries WHERE key = $1");

    fn rows_affected(done: &Self::QueryResult) -> u64 {
        done.rows_affected()
    }

    // SQLite has no arrays to unnest: one statement an access, in one
    // transaction (one lock, one sync).
    async fn touch(pool: &Pool<Self>, accesses: &[Served]) -> Result<(), StoreError> {
        let mut tx = pool.begin_with(Self::BEGIN_WRITE).await.map_err(backend)?;
        for (key, at, times) in accesses {
            sqlx::query(concat!(
                "UPDATE entries SET last_access_ms = ",
                later_access!(),
                ", served_count = served_count + $3, \
                 last_served_ms = MAX(COALESCE(last_served_ms, 0), $1) WHERE key = $2"
            ))
            .bind(at)
            .bind(key)
            .bind(i64::try_from(*times).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    // A file in this process: no connection to lose.
    async fn connects(_pool: &Pool<Self>) -> Result<(), StoreError> {
        Ok(())
    }

    // A page of keys, one indexed lookup each (in-process: microseconds).
    async fn served(pool: &Pool<Self>, keys: &[String]) -> Result<HashMap<String, (u64, i64)>, StoreError> {
        let mut conn = pool.acquire().await.map_err(backend)?;
        let mut found = HashMap::new();
        for key in keys {
            let row = sqlx::query(
                "SELECT served_count, last_served_ms FROM entries WHERE key = $1 AND served_count > 0",
            )
            .bind(key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
            if let Some(row) = row {
                let (count, last): (i64, Option<i64>) = (row.get(0), row.get(1));
                found.insert(key.clone(), (count as u64, last.unwrap_or_default()));
            }
        }
        Ok(found)
    }
}

impl Dialect for Postgres {
    // What `Pool::begin` sends: the row lock below does the rest.
    const BEGIN_WRITE: &'static str = "BEGIN";
    // PostgreSQL locks rows: FOR UPDATE holds this one until the commit, so
    // that of two replicas replacing the same key at once, the second waits
    // and answers the first's entry (whose blob is then deleted) rather than
    // the one both would have read.
    const SELECT_FOR_REPLACE: &'static str =
        concat!("SELECT ", columns!(), " FROM entries WHERE key = $1 FOR UPDATE");

    fn rows_affected(done: &Self::QueryResult) -> u64 {
        done.rows_affected()
    }

    // One statement for the whole batch, the accesses as two arrays.
    async fn touch(pool: &Pool<Self>, accesses: &[Served]) -> Result<(), StoreError> {
        let keys: Vec<&str> = accesses.iter().map(|(k, ..)| k.as_str()).collect();
        let times: Vec<i64> = accesses.iter().map(|(_, at, _)| *at).collect();
        let counts: Vec<i64> = accesses.iter().map(|(.., n)| i64::try_from(*n).unwrap_or(i64::MAX)).collect();
        sqlx::query(
            "UPDATE entries SET last_access_ms = GREATEST(COALESCE(entries.last_access_ms, 0), a.at), \
             served_count = entries.served_count + a.n, \
             last_served_ms = GREATEST(COALESCE(entries.last_served_ms, 0), a.at) \
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS a(key, at, n) WHERE entries.key = a.key",
        )
        .bind(keys)
        .bind(times)
        .bind(counts)
        .execute(pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    // One connection of its own, opened and closed: the pool would retry a
    // refused one until its acquire timeout. An I/O error (refused, reset,
    // closed) or a server that says it takes no connections now (SQLSTATE
    // 57P03: starting up, shutting down) is an unreachable index.
    async fn connects(pool: &Pool<Self>) -> Result<(), StoreError> {
        use sqlx::{ConnectOptions, Connection};
        match pool.connect_options().connect().await {
            Ok(conn) => {
                let _ = conn.close().await;
                Ok(())
            }
            Err(sqlx::Error::Io(e)) => Err(StoreError::Unreachable(e.to_string())),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("57P03") => {
                Err(StoreError::Unreachable(e.to_string()))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn served(pool: &Pool<Self>, keys: &[String]) -> Result<HashMap<String, (u64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT key, served_count, last_served_ms FROM entries WHERE key = ANY($1) AND served_count > 0",
        )
        .bind(keys)
        .fetch_all(pool)
        .await
        .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|row| {
                let (key, count, last): (String, i64, Option<i64>) = (row.get(0), row.get(1), row.get(2));
                (key, (count as u64, last.unwrap_or_default()))
            })
            .collect())
    }
}

impl SqlIndex<Sqlite> {
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

impl SqlIndex<Postgres> {
    /// Connects with `options`, failing fast when the server cannot be
    /// reached, and migrates the schema. sqlx serialises migrations across
    /// replicas with an advisory lock, so two replicas starting at once is
    /// safe.
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
