#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need
# (nginx, curl, the PostgreSQL client, redis-server, rpm, createrepo_c, dnf and go
# from Debian;
# cargo-nextest and the Garage S3 server from the crates registry, once per
# machine), then runs every unit, integration, end-to-end and documentation
# test and prints one summary line. Exits non-zero if anything failed.
# PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are expected to be
# running, as they are on these machines; tests make their own databases,
# key prefixes and private instances.
set -uo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive

# shellcheck source=tools/install.sh
source tools/install.sh

install_apt
install_cargo_tools
install_python_tools
install_node_tools

log "building"
cargo build --workspace --all-targets || exit 1

mkdir -p target
log "unit, integration and end-to-end tests (nextest)"
cargo nextest run --workspace --no-fail-fast 2>&1 | tee target/nextest.log
nextest_status=${PIPESTATUS[0]}

log "documentation tests"
cargo test --workspace --doc 2>&1 | tee target/doctest.log
doc_status=${PIPESTATUS[0]}

# One closing line; timed-out tests, tests that could not start and test
# binaries that could not be listed count as failed (tools/test_summary.py).
echo
python3 tools/test_summary.py target/nextest.log "$nextest_status" target/doctest.log "$doc_status"
