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
banner "cargo test --features fault-injection --test faults -- --test-threads=2"
# Crash recovery: a build with the fault-injection points (never shipped) SIGKILLs
# itself at each step of up and down. It rebuilds the vpn-ns binary with the feature,
# so it runs after the suite above; a later plain build rebuilds it without.
cargo test --features fault-injection --test faults -- --test-threads=2
