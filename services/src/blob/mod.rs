//! Blob stores.

mod fs;

pub use fs::FsBlobStore;
