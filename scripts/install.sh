#!/bin/bash
# Installs vpn-ns from this checkout: the Debian packages it and the demo need, a release
# build, the binary in $PREFIX/bin (default /usr/local) and /etc/vpn-ns.
#
# Meant to be run through sudo from a normal user's shell (`sudo scripts/install.sh`):
# cargo runs as the owner of the checkout with that user's own Rust (rustup's
# ~/.cargo/bin, which sudo's PATH does not have), so no root-owned file lands in the
# checkout; only the package and file installs run as root. Run by root directly in a
# root-owned checkout, root's Rust builds.
set -euo pipefail
cd "$(dirname "$0")/.."
VPN_NS_SCRIPT=install.sh
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
PREFIX=${PREFIX:-/usr/local}
[ "$(id -u)" = 0 ] || die 2 "installing needs root: run  sudo $0"

builder_init "$PWD"
echo "install.sh: building as $BUILDER with $(cargo_b --version)"
install_packages "${VPN_NS_PACKAGES_INSTALL[@]}"
cargo_b build --release --locked
install -D -m 0755 target/release/vpn-ns "$PREFIX/bin/vpn-ns"
install -d -m 0755 /etc/vpn-ns
echo "installed $PREFIX/bin/vpn-ns ($("$PREFIX/bin/vpn-ns" --version))"
