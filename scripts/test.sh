#!/bin/bash
# The test suite: formatting, lints, unit tests and the integration tests (which need
# root and /dev/net/tun: they create namespaces and tun devices in private sandboxes).
set -euo pipefail
cd "$(dirname "$0")/.."
banner() { printf '\n==== %s\n' "$*"; }
banner "cargo fmt --all --check"
cargo fmt --all --check
banner "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
banner "cargo test --all-targets -- --test-threads=2"
cargo test --all-targets -- --test-threads=2
