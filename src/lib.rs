//! artifactapi: a caching proxy for build artifacts.
//!
//! This crate is the binary's library half: configuration ([`config`]),
//! runtime settings ([`settings`]) and the assembly of the layers of
//! `artifactapi-layers` and the backends of `artifactapi-services` into one
//! axum application ([`app`]). `main.rs` only parses the command line.
#![deny(missing_docs, unsafe_code)]

pub mod access_log;
pub mod app;
pub mod auth;
pub mod config;
mod listing;
mod manage;
pub mod metrics;
pub mod settings;
pub mod telemetry;
mod ui;
pub mod warm;
