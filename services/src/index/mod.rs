//! Indexes of cache entries.

mod sqlite;

pub use sqlite::SqliteIndex;
