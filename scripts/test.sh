#!/bin/bash
# The whole test suite: formatting, lints, the licence check, unit tests and the
# integration tests (real OpenVPN, WireGuard, dnsmasq, Firefox in private namespaces).
#
# Needs root: the integration tests create namespaces and tun devices. Run it as
# `sudo scripts/test.sh` from your own shell: it installs the Debian packages the tests
# need, builds as the owner of the checkout with that user's Rust (never leaving
# root-owned files behind), then runs the test executables as root.
# Arguments go to every test executable (a name filter, `--nocapture`, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
VPN_NS_SCRIPT=test.sh
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
[ "$(id -u)" = 0 ] || die 2 "the tests need root (they create namespaces and tun devices): run  sudo $0"
[ -e /dev/net/tun ] || die 1 "/dev/net/tun is missing: load the tun module (modprobe tun) and run again"

banner() { printf '\n==== %s\n' "$*"; }

builder_init "$PWD"
banner "packages the tests need"
install_packages "${VPN_NS_PACKAGES_TEST[@]}"
echo "all installed; building as $BUILDER with $(cargo_b --version)"

banner "cargo fmt --all --check"
cargo_b fmt --all --check
banner "cargo clippy --workspace --all-targets -- -D warnings"
cargo_b clippy --locked --workspace --all-targets -- -D warnings
banner "cargo clippy --workspace --all-targets --features fault-injection -- -D warnings"
cargo_b clippy --locked --workspace --all-targets --features fault-injection -- -D warnings
banner "licences of every dependency (cargo xtask licences)"
cargo_b xtask licences
banner "layers and unused dependencies (cargo xtask layers, cargo xtask deps)"
cargo_b xtask layers
cargo_b xtask deps

# The tests run as root, not as the sudo caller: vpn-ns reads sudo's variables to find
# the invoking user (and refuses --config-dir under sudo), and the tests that exercise
# that set them themselves.
unset SUDO_USER SUDO_UID SUDO_GID SUDO_COMMAND SUDO_HOME PKEXEC_UID DOAS_USER

results=$(mktemp)
failed_bins=()

# Test executables that spend minutes asleep (a DHCP lease running out, a WireGuard key
# lifetime) run in the background from the start, beside the others: they wait on
# timers, not the CPU. Their output is printed, whole, when they end.
slow_bins=(keeper_dhcp wireguard_builtin_life)
bg_dir=$(mktemp -d)
trap 'rm -f "$results"; rm -rf "$bg_dir"' EXIT

# `run_bin MANIFEST EXE`: one test executable as root, from its package's directory (as
# cargo runs it), two test threads.
run_bin() {
    (cd "$(dirname "$1")" && "$2" --test-threads=2 "${test_args[@]}")
}

# `build_and_run CARGO_TEST_ARGS...`: builds the test executables as the builder, then
# runs each as root.
build_and_run() {
    local built
    built=$(cargo_b test --locked --no-run --message-format=json-render-diagnostics "$@") ||
        die 1 "building the tests failed"
    local manifest exe name bg=() st
    while read -r manifest exe; do
        name=${exe##*/}
        if [[ " ${slow_bins[*]} " == *" ${name%-*} "* ]]; then
            printf '\n     Started %s (in the background)\n' "${exe#"$PWD"/}"
            (run_bin "$manifest" "$exe" >"$bg_dir/$name.log" 2>&1; echo $? >"$bg_dir/$name.rc") &
            bg+=("$name")
            continue
        fi
        printf '\n     Running %s\n' "${exe#"$PWD"/}"
        set +e
        run_bin "$manifest" "$exe" 2>&1 | tee -a "$results"
        st=${PIPESTATUS[0]}
        set -e
        [ "$st" = 0 ] || failed_bins+=("$name")
    done < <(printf '%s\n' "$built" |
        sed -n 's/.*"manifest_path":"\([^"]*\)".*"profile":{[^}]*"test":true[^}]*}.*"executable":"\([^"]*\)".*/\1 \2/p')
    wait
    for name in "${bg[@]}"; do
        printf '\n     Finished %s (background)\n' "$name"
        tee -a "$results" <"$bg_dir/$name.log"
        [ "$(cat "$bg_dir/$name.rc" 2>/dev/null)" = 0 ] || failed_bins+=("$name")
    done
}
test_args=("$@")
# The only #[ignore]d tests need the WireGuard kernel module: run them where it exists.
if [ -d /sys/module/wireguard ] || modprobe -n -q wireguard 2>/dev/null; then
    test_args+=(--include-ignored)
fi

# tests/faults.rs needs the fault-injection build of vpn-ns (SIGKILL points at each step
# of up and down; never shipped): it runs first, and the plain build then replaces it.
banner "tests/faults.rs (--features fault-injection)"
build_and_run --features fault-injection --test faults
banner "all tests (--workspace --all-targets)"
build_and_run --workspace --all-targets

sum() { grep "^test result:" "$results" | grep -o "[0-9]* $1" | awk '{s += $1} END {print s + 0}'; }
banner "summary"
echo "tests: $(sum passed) passed, $(sum failed) failed, $(sum ignored) skipped"
if [ "${#failed_bins[@]}" -gt 0 ]; then
    echo "test.sh: FAILED in ${failed_bins[*]}" >&2
    exit 1
fi
