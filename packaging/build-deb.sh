#!/bin/bash
# Builds the Debian package: man pages and completions generated from src/cli.rs and the
# copyright file (every statically linked crate and its licence) into target/gen, then
# cargo deb (release build). Prints the path of the .deb.
# Needs cargo-deb (cargo install cargo-deb --locked).
#
# The Maintainer field names whoever builds the package, as Debian's own tools do:
# DEBFULLNAME and DEBEMAIL, else git's user.name and user.email. A placeholder address
# (example.*, *.invalid, localhost) is refused; a throwaway test build may set
# VPN_NS_DEB_TEST_BUILD=1 to be marked as such instead.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${DEBFULLNAME:-$(git config user.name 2>/dev/null || true)}
email=${DEBEMAIL:-$(git config user.email 2>/dev/null || true)}
if [ "${VPN_NS_DEB_TEST_BUILD:-}" = 1 ]; then
    name="vpn-ns test build (not for distribution)"
    email="root@$(hostname)"
elif [ -z "$name" ] || [ -z "$email" ]; then
    echo "build-deb.sh: who maintains this package? Set DEBFULLNAME and DEBEMAIL (or git's user.name and user.email)" >&2
    exit 2
elif [[ "$email" =~ (@|\.)(example(\.[a-z]+)?|invalid|localhost)$ ]]; then
    echo "build-deb.sh: $email is a placeholder address: set DEBEMAIL to a real one" >&2
    exit 2
fi
# A dev build: CI has the dev dependencies built already by the tests.
cargo build --locked --package vpn-ns-gen >&2
# cargo-deb reads the assets from ./target/gen (a path relative to Cargo.toml).
"${CARGO_TARGET_DIR:-target}/debug/vpn-ns-gen" target/gen >&2
cargo xtask copyright >target/gen/copyright
rm -f target/debian/vpn-ns_*.deb
cargo deb --locked --maintainer "$name <$email>" --output target/debian >&2
ls target/debian/vpn-ns_*.deb
