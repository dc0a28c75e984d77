//! What SQLite and PostgreSQL do differently, side by side: connecting and
//! migrating, the transaction in which `put` reads the entry it replaces,
//! and writing a batch of access times. Everything else is `sql.rs`.

use std::{future::Future, path::Path, str::FromStr, time::Duration};

use artifactapi_layers::store::StoreError;
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
    fn touch(
        pool: &Pool<Self>,
        accesses: &[(String, i64)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
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
    async fn touch(pool: &Pool<Self>, accesses: &[(String, i64)]) -> Result<(), StoreError> {
        let mut tx = pool.begin_with(Self::BEGIN_WRITE).await.map_err(backend)?;
        for (key, at) in accesses {
            sqlx::query(concat!("UPDATE entries SET last_access_ms = ", later_access!(), " WHERE key = $2"))
                .bind(at)
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
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
    async fn touch(pool: &Pool<Self>, accesses: &[(String, i64)]) -> Result<(), StoreError> {
        let (keys, times): (Vec<&str>, Vec<i64>) = accesses.iter().map(|(k, t)| (k.as_str(), *t)).unzip();
        sqlx::query(
            "UPDATE entries SET last_access_ms = GREATEST(COALESCE(entries.last_access_ms, 0), a.at) \
             FROM UNNEST($1::text[], $2::bigint[]) AS a(key, at) WHERE entries.key = a.key",
        )
        .bind(keys)
        .bind(times)
        .execute(pool)
        .await
        .map_err(backend)?;
        Ok(())
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
