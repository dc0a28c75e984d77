//! The integration tests: one test crate, a module per area, so that the
//! shared support is compiled once and one test binary is linked instead of
//! one per area. Each test still runs in a process of its own (nextest);
//! run one area with `cargo nextest run -E 'test(/^lifecycle::/)'`.

mod support;

mod abuse;
mod access_log;
mod alpine;
mod apt;
mod backend_faults;
mod backends;
mod budgets;
mod cache_behaviour;
mod cargo;
mod cli;
mod deploy;
mod docker;
mod e2e_nginx;
mod faults;
mod generic_remote;
mod go;
mod groups;
mod helm;
mod lifecycle;
mod load;
mod local_tier;
mod management;
mod maven;
mod metrics;
mod npm;
mod operations;
mod operator_page;
mod policy;
mod pypi;
mod replicas;
mod rewrite;
mod rpm;
mod rubygems;
mod secrets;
mod ssrf;
mod summary;
mod telemetry;
mod terraform;
mod tls;
mod upstream_content;
mod upstream_proxy;
