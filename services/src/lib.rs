//! The backends behind artifactapi's layers.
//!
//! [`upstream::UpstreamFetch`] is the innermost service of the stack: a
//! reqwest client (with reqwest-middleware for retries) that streams upstream
//! bodies untouched. [`blob::FsBlobStore`] and [`index::SqliteIndex`] are the
//! embedded default store: files under `DATA_DIR` and a SQLite index, so that
//! one machine needs no set-up. [`blob::S3BlobStore`], [`index::PostgresIndex`]
//! and [`coord::RedisCoordinator`] are the production backends that let
//! several replicas act as one cache. Each implements a storage trait of
//! `artifactapi-layers`, where the layers that use them live. [`docker`] is
//! the Docker Registry HTTP API v2 router, over the same layers.
#![deny(missing_docs, unreachable_pub, unsafe_code)]

pub mod blob;
pub mod coord;
pub mod docker;
pub mod egress;
pub mod index;
pub mod upstream;
pub mod upstream_client;
