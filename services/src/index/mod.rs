//! Indexes of cache entries, in SQL: [`SqliteIndex`], the embedded default,
//! and [`PostgresIndex`], shared by every replica.
//!
//! Both are one implementation, [`SqlIndex`] (`sql.rs`), whose statements
//! read the same on both databases: `$n` placeholders (sqlx binds them by
//! number on SQLite too), `CAST(..)` rather than `::`, `substr` rather than
//! `left`. What the two databases really do differently (the transaction a
//! replacement runs in, batched access times, connecting and migrating) is
//! the [`Dialect`] trait, implemented once for each in `dialect.rs`.
//!
//! The schemas and their migrations (`migrations/sqlite`, `migrations/postgres`)
//! stay apart: they are what existing databases were created with.

mod dialect;
mod prefix;
mod row;
mod sql;
#[cfg(test)]
mod tests;

pub use dialect::Dialect;
pub use sql::SqlIndex;

/// An index in a SQLite database file: the embedded default
/// ([`SqliteIndex::open`]).
pub type SqliteIndex = SqlIndex<sqlx::Sqlite>;

/// An index in a PostgreSQL database, shared by every replica
/// ([`PostgresIndex::connect`]).
pub type PostgresIndex = SqlIndex<sqlx::Postgres>;

/// The columns of an entry, in both schemas, as a literal for `concat!`.
macro_rules! columns {
    () => {
        "key, remote, path, blob, size, class, headers, cached_at_ms, expires_at_ms, policy"
    };
}
use columns;

/// `last_access_ms` moved forward to `$1`, never back: SQLite spells the
/// greater of two values `MAX(a, b)` and PostgreSQL `GREATEST(a, b)`, and
/// neither knows the other's, so it is a `CASE` that both read alike.
macro_rules! later_access {
    () => {
        "CASE WHEN COALESCE(last_access_ms, 0) > $1 THEN COALESCE(last_access_ms, 0) ELSE $1 END"
    };
}
use later_access;
