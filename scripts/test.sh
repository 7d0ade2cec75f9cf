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
# tests/faults.rs is built only with the fault-injection feature: lint and run it
# here, before the plain suite, whose build then replaces the test-only vpn-ns binary
# (SIGKILL points at each step of up and down; never shipped) with the normal one.
banner "cargo clippy --workspace --all-targets --features fault-injection -- -D warnings"
cargo clippy --workspace --all-targets --features fault-injection -- -D warnings
banner "cargo test --features fault-injection --test faults -- --test-threads=2"
cargo test --features fault-injection --test faults -- --test-threads=2
banner "cargo test --all-targets -- --test-threads=2"
cargo test --all-targets -- --test-threads=2
