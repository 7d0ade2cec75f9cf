#!/bin/bash
# Builds the Debian package: man pages and completions generated from src/cli.rs into
# target/gen, then cargo deb (release build). Prints the path of the .deb.
# Needs cargo-deb (cargo install cargo-deb --locked).
set -euo pipefail
cd "$(dirname "$0")/.."
# A dev build: CI has the dev dependencies built already by the tests.
cargo build --locked --bin vpn-ns-gen >&2
# cargo-deb reads the assets from ./target/gen (a path relative to Cargo.toml).
"${CARGO_TARGET_DIR:-target}/debug/vpn-ns-gen" target/gen >&2
rm -f target/debian/vpn-ns_*.deb
cargo deb --locked --output target/debian >&2
ls target/debian/vpn-ns_*.deb
