#!/bin/bash
# Installs vpn-ns from this checkout: Debian packages it needs at run time and for the
# demo, a release build, and the binary in $PREFIX/bin (default /usr/local).
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (sudo $0)" >&2
    exit 2
fi
if ! command -v cargo >/dev/null; then
    echo "install.sh: cargo not found; install Rust >= 1.88 (https://rustup.rs) first" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends openvpn iproute2 openssl socat util-linux ca-certificates >/dev/null
cargo build --release --locked
install -D -m 0755 target/release/vpn-ns "$PREFIX/bin/vpn-ns"
install -d -m 0755 /etc/vpn-ns
echo "installed $PREFIX/bin/vpn-ns ($("$PREFIX/bin/vpn-ns" --version))"
