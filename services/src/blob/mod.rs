//! Blob stores.

pub(crate) mod fs;
mod local;
mod s3;

pub use fs::FsBlobStore;
pub use local::{LocalStats, LocalTier};
pub use s3::{S3BlobStore, S3Config};
