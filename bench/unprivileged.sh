#!/bin/bash
# Unprivileged mode benchmark: `vpn-ns up` of the same WireGuard connection (built-in
# data plane, the same key and peer) by a normal user (uid $BENCH_UID, no capability,
# no_new_privs: setpriv) against root mode (`backend = "builtin"`), hyperfine-timed
# with `down` between runs (not timed). Target: unprivileged within 1.2x of root.
# Writes BENCHMARKS-unprivileged.md (or $1). Needs root (to build the peer and to
# switch to the user), hyperfine, wireguard-go, wireguard-tools, util-linux's setpriv;
# runs inside a private network + mount namespace (unshare): the machine's network,
# /run/netns, /run/vpn-ns, /etc/netns, /run/wireguard are untouched. The user needs no
# account: a uid, and directories it owns under a private temporary directory.
#
#   sudo bench/unprivileged.sh                 # release build of this checkout
#   sudo VPN_NS=/usr/bin/vpn-ns bench/unprivileged.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-$ROOT/BENCHMARKS-unprivileged.md}
RUNS=${RUNS:-30}
BENCH_UID=${BENCH_UID:-4243}

if [ -z "${VPN_NS_BENCH_INNER:-}" ]; then
    [ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 2; }
    for t in hyperfine wireguard-go wg setpriv; do
        command -v $t >/dev/null || { echo "bench: $t missing (apt-get install hyperfine wireguard-go wireguard-tools util-linux)" >&2; exit 2; }
    done
    if [ -z "${VPN_NS:-}" ]; then
        cargo build --release --locked -q
        VPN_NS=$ROOT/target/release/vpn-ns
    fi
    for d in /run/netns /run/vpn-ns /etc/netns /run/wireguard; do mkdir -p "$d"; done
    exec env VPN_NS_BENCH_INNER=1 VPN_NS="$VPN_NS" OUT="$OUT" \
        unshare --net --mount --propagation private -- "$0" "$@"
fi

for d in /run/netns /run/vpn-ns /etc/netns /run/wireguard; do mount -t tmpfs -o mode=0755 tmpfs "$d"; done
ip link set lo up
W=$(mktemp -d /tmp/vpn-ns-unprivbench.XXXXXX)
chmod 755 "$W"
CONF=$W/conf
mkdir -p "$CONF"
chmod 700 "$CONF"
export VPN_NS_LOG=error WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1
# The user's side: home, config and runtime directories it owns, mode 0700.
U=$W/user
mkdir -p "$U/home" "$U/config/vpn-ns" "$U/run"
USER_ENV=(env -i "HOME=$U/home" "XDG_CONFIG_HOME=$U/config" "XDG_RUNTIME_DIR=$U/run" "VPN_NS_LOG=error" "PATH=/usr/bin:/bin")
AS_USER="setpriv --reuid=$BENCH_UID --regid=$BENCH_UID --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- ${USER_ENV[*]} $VPN_NS -q"
# Root's side goes through setpriv and env too, so both pay the same exec overhead.
AS_ROOT="setpriv --reuid=0 -- env VPN_NS_LOG=error $VPN_NS -q --config-dir $CONF"
cleanup() {
    $AS_USER down home >/dev/null 2>&1 || true
    $AS_ROOT down wgr >/dev/null 2>&1 || true
    [ -n "${SRV_PID:-}" ] && kill "$SRV_PID" 2>/dev/null
    ip -all netns del 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

# The peer: wireguard-go in namespace srv behind a veth.
ip netns add srv
ip link add up1 type veth peer name eth0 netns srv
ip addr add 198.51.100.1/30 dev up1
ip link set up1 up
ip -n srv link set lo up
ip -n srv addr add 198.51.100.2/30 dev eth0
ip -n srv link set eth0 up
umask 077
wg genkey > "$W/srv.key"; wg pubkey < "$W/srv.key" > "$W/srv.pub"
wg genkey > "$W/cli.key"; wg pubkey < "$W/cli.key" > "$W/cli.pub"
ip netns exec srv wireguard-go -f wgs > "$W/srv.log" 2>&1 &
SRV_PID=$!
for _ in $(seq 100); do [ -S /run/wireguard/wgs.sock ] && break; sleep 0.05; done
ip netns exec srv wg set wgs private-key "$W/srv.key" listen-port 51820 \
    peer "$(cat "$W/cli.pub")" allowed-ips 100.64.0.2/32
ip -n srv addr add 100.64.0.1/24 dev wgs
ip -n srv link set wgs up

# One wg-quick file per side (same key, peer, addresses, DNS): the same work for both.
wgfile() {
    printf '[Interface]\nPrivateKey = %s\nAddress = 100.64.0.2/32\nDNS = 100.64.0.1\n[Peer]\nPublicKey = %s\nEndpoint = 198.51.100.2:51820\nAllowedIPs = 0.0.0.0/0\n' \
        "$(cat "$W/cli.key")" "$(cat "$W/srv.pub")"
}
wgfile > "$W/wgr0.conf"
printf 'type = "wireguard"\n[wireguard]\nconfig = "%s"\nbackend = "builtin"\n' "$W/wgr0.conf" > "$CONF/wgr.toml"
chmod 644 "$CONF/wgr.toml"
wgfile > "$U/config/vpn-ns/home.conf"
printf 'type = "wireguard"\n' > "$U/config/vpn-ns/home.toml"
chmod 644 "$U/config/vpn-ns/home.toml"
chown -R "$BENCH_UID:$BENCH_UID" "$U"
chmod 700 "$U/config" "$U/config/vpn-ns" "$U/run"
umask 022

# Both must work before they are timed.
$AS_ROOT up wgr >/dev/null && $AS_ROOT down wgr >/dev/null
$AS_USER up home >/dev/null && $AS_USER down home >/dev/null

hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$W/up.json" \
    -n "root: vpn-ns up (builtin)" --prepare "$AS_ROOT down wgr" "$AS_ROOT up wgr" \
    -n "user: vpn-ns up (unprivileged)" --prepare "$AS_USER down home" "$AS_USER up home" >&2
$AS_ROOT down wgr >/dev/null; $AS_USER down home >/dev/null
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$W/down.json" \
    -n "root: vpn-ns down" --prepare "$AS_ROOT up wgr" "$AS_ROOT down wgr" \
    -n "user: vpn-ns down" --prepare "$AS_USER up home" "$AS_USER down home" >&2
$AS_USER up home >/dev/null; $AS_ROOT up wgr >/dev/null
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$W/exec.json" \
    -n "root: vpn-ns exec -- true" "$AS_ROOT exec wgr -- /bin/true" \
    -n "user: vpn-ns exec -- true" "$AS_USER exec home -- /bin/true" >&2

stat() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]; print("%.2f ± %.2f" % (r["median"]*1000, r["stddev"]*1000))' "$1" "$2"; }
med() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["median"])' "$1" "$2"; }
ratio() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[2]) / float(sys.argv[1])))' "$(med "$1" 0)" "$(med "$1" 1)"; }

{
    echo "# Unprivileged mode: up, down, exec times"
    echo
    echo "Generated by \`bench/unprivileged.sh\` on $(date -u +%Y-%m-%d) ($(uname -r), $(nproc) CPUs), $RUNS runs each,"
    echo "binary \`$VPN_NS\`. Same WireGuard file, same wireguard-go peer in a namespace"
    echo "behind a veth; the user is uid $BENCH_UID with no capability (setpriv). Median ± stddev, ms."
    echo
    echo "| step | root (backend = builtin) | user (unprivileged) | user / root |"
    echo "|---|---|---|---|"
    echo "| \`up\` | $(stat "$W/up.json" 0) | $(stat "$W/up.json" 1) | $(ratio "$W/up.json") |"
    echo "| \`down\` | $(stat "$W/down.json" 0) | $(stat "$W/down.json" 1) | $(ratio "$W/down.json") |"
    echo "| \`exec -- true\` | $(stat "$W/exec.json" 0) | $(stat "$W/exec.json" 1) | $(ratio "$W/exec.json") |"
    echo
    echo "Target: unprivileged \`up\` within 1.2x of root mode."
} > "$OUT"
cat "$OUT"
