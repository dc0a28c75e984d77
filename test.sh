#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need
# (nginx, curl, the PostgreSQL client, redis-server, rpm, createrepo_c and dnf
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

# nextest: "Summary [..] N tests run: P passed, F failed, S skipped" (parts optional)
summary=$(grep -E '^\s*Summary \[' target/nextest.log | tail -1)
n_pass=$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
n_fail=$(grep -oE '[0-9]+ failed' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
n_skip=$(grep -oE '[0-9]+ skipped' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
sum() { awk '{ s += $1 } END { print s + 0 }'; }
d_pass=$(grep -oE 'test result: [a-zA-Z]+\. [0-9]+ passed' target/doctest.log | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' | sum)
d_fail=$(grep -oE 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' target/doctest.log | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' | sum)
passed=$(( ${n_pass:-0} + ${d_pass:-0} ))
failed=$(( ${n_fail:-0} + ${d_fail:-0} ))
if [ "$nextest_status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
if [ "$doc_status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi

echo
echo "tests: ${passed} passed, ${failed} failed, ${n_skip:-0} skipped"
[ "$nextest_status" -eq 0 ] && [ "$doc_status" -eq 0 ]
