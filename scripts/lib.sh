# Shared by scripts/install.sh, scripts/test.sh and .ci/run (sourced, not run):
# the Debian packages each of them needs, installing them, and "the builder": the user
# who runs cargo. Root installs packages and binaries and runs the tests; cargo runs as
# the owner of the checkout, with that user's own Rust, so `sudo scripts/...` from a
# normal user's shell never leaves root-owned files in their checkout.

# shellcheck shell=bash

# What `scripts/install.sh` needs: the C linker that rustc calls (rustup does not bring
# one), vpn-ns at run time (iproute2 for `ip netns exec` compatibility, not for vpn-ns
# itself) and the demo's OpenVPN lab.
VPN_NS_PACKAGES_INSTALL=(gcc libc6-dev iproute2 ca-certificates openvpn openssl socat
    util-linux)

# What the test suite needs (scripts/test.sh installs these; .ci/run runs test.sh).
# The only list of test packages: add a package here when a test starts using it.
VPN_NS_PACKAGES_TEST=("${VPN_NS_PACKAGES_INSTALL[@]}"
    wireguard-tools wireguard-go dnsmasq-base tcpdump procps psmisc curl passwd
    firefox-esr nftables
    xdg-dbus-proxy dbus-daemon dbus-bin gnupg dirmngr gpgconf perl
    network-manager network-manager-openvpn dbus)

VPN_NS_MIN_RUST=1.88

# `die CODE MESSAGE`: one line on stderr, prefixed with the script's name.
die() {
    local code=$1
    shift
    echo "${VPN_NS_SCRIPT:-vpn-ns}: $*" >&2
    exit "$code"
}

# Installs the packages that are not installed yet. Refreshes the package lists first
# when they are missing or older than a day, and once more if an install still fails
# (a mirror moved on since the lists were fetched).
install_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null ||
        die 2 "missing packages (${missing[*]}) and no apt-get: install them by hand"
    echo "${VPN_NS_SCRIPT:-vpn-ns}: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if apt_lists_stale; then
        apt-get update -qq || die 1 "apt-get update failed"
    fi
    # Packages are installed for their programs, not their services: a freshly installed
    # NetworkManager must not start managing this machine's interfaces (Debian's
    # policy-rc.d convention: exit 101 = "do not start").
    local guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        guard=/usr/sbin/policy-rc.d
    fi
    local ok=1
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || ok=0
    fi
    [ -z "$guard" ] || rm -f "$guard"
    [ "$ok" = 1 ] || die 1 "apt-get install ${missing[*]} failed"
    # ... nor at the next boot.
    if [[ " ${missing[*]} " == *" network-manager "* ]] && command -v systemctl >/dev/null; then
        systemctl disable --quiet NetworkManager.service NetworkManager-wait-online.service \
            NetworkManager-dispatcher.service 2>/dev/null || true
        echo "${VPN_NS_SCRIPT:-vpn-ns}: network-manager was installed for the tests only and is disabled (systemctl enable NetworkManager to use it)"
    fi
}

# True when no package list exists or the newest is more than a day old.
apt_lists_stale() {
    local lists=/var/lib/apt/lists
    compgen -G "$lists/*_Packages*" >/dev/null || return 0
    [ -z "$(find "$lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 -print -quit)" ]
}

# Sets BUILDER (the owner of the checkout $1), BUILDER_HOME and CARGO_BIN (a cargo that
# BUILDER can run, Rust >= VPN_NS_MIN_RUST), or exits 2 saying what to install.
#
# sudo resets PATH to its secure_path, so the user's rustup cargo (~/.cargo/bin) is not
# on it: look where rustup puts it for that user, then where the environment says.
builder_init() {
    local checkout=$1 c found="" looked=()
    BUILDER=$(stat -c %U "$checkout")
    [ "$BUILDER" = UNKNOWN ] && die 2 "$checkout belongs to no user on this machine"
    BUILDER_HOME=$(getent passwd "$BUILDER" | cut -d: -f6)
    local candidates=()
    [ -n "${CARGO:-}" ] && candidates+=("$CARGO")
    [ -n "${CARGO_HOME:-}" ] && candidates+=("$CARGO_HOME/bin/cargo")
    [ -n "$BUILDER_HOME" ] && candidates+=("$BUILDER_HOME/.cargo/bin/cargo")
    c=$(command -v cargo || true)
    [ -n "$c" ] && candidates+=("$c")
    candidates+=(/usr/local/cargo/bin/cargo)
    for c in "${candidates[@]}"; do
        looked+=("$c")
        [ -x "$c" ] || continue
        local v
        v=$(as_builder_with "$c" --version 2>/dev/null | awk '{print $2}') || continue
        if version_at_least "$v" "$VPN_NS_MIN_RUST"; then
            found=$c
            break
        fi
        looked[-1]="$c ($v, too old)"
    done
    [ -n "$found" ] || die 2 "no Rust >= $VPN_NS_MIN_RUST for user $BUILDER (looked at: ${looked[*]}); install it as $BUILDER with rustup (https://rustup.rs), then run this again"
    CARGO_BIN=$found
    # A build once run as root in this checkout left root-owned files that the owner's
    # cargo cannot overwrite: hand them back (only inside the checkout's target/).
    if [ "$BUILDER" != root ] && [ -d "$checkout/target" ]; then
        find "$checkout/target" ! -user "$BUILDER" -exec chown -h "$BUILDER:" {} + 2>/dev/null || true
    fi
}

# `as_builder_with PROGRAM ARGS...`: runs PROGRAM as BUILDER, with the directory of the
# chosen cargo first on PATH (rustup's proxies find rustc, clippy and rustfmt there).
as_builder_with() {
    local prog=$1
    shift
    local path
    path="$(dirname "$prog"):$PATH"
    if [ "$BUILDER" = root ] || [ "$(id -un)" = "$BUILDER" ]; then
        env PATH="$path" "$prog" "$@"
    else
        # runuser sets HOME, USER and LOGNAME to the builder's; RUSTUP_HOME and
        # CARGO_HOME pass through when the caller set them on purpose.
        runuser -u "$BUILDER" -- env PATH="$path" "$prog" "$@"
    fi
}

# `cargo_b ARGS...`: cargo as the builder.
cargo_b() { as_builder_with "$CARGO_BIN" "$@"; }

# `version_at_least 1.95.0 1.88`: numeric comparison of dotted versions.
version_at_least() {
    local IFS=.
    # shellcheck disable=SC2206
    local a=($1) b=($2) i
    for i in 0 1 2; do
        local x=${a[i]:-0} y=${b[i]:-0}
        x=${x%%[!0-9]*} y=${y%%[!0-9]*}
        ((${x:-0} > ${y:-0})) && return 0
        ((${x:-0} < ${y:-0})) && return 1
    done
    return 0
}
