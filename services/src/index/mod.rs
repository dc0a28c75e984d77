//! Indexes of cache entries.

mod postgres;
mod sqlite;

pub use postgres::PostgresIndex;
pub use sqlite::SqliteIndex;
