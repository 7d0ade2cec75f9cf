#!/bin/bash
# WireGuard benchmarks, side by side in one run: native `vpn-ns up` with the built-in
# data plane (tun born in the namespace) against the wireguard-go backend (tun created
# in the host namespace and moved), the kernel's device-move floor for reference, and
# iperf3 throughput through each, with the data plane's CPU time per GB. Writes
# BENCHMARKS-wireguard.md (or $1). Needs root, hyperfine, iperf3, wireguard-go,
# wireguard-tools, /usr/bin/time; runs inside a private network + mount namespace
# (unshare) so the machine's network, /run/netns, /etc/netns, /run/wireguard are
# untouched.
#
#   sudo bench/wireguard.sh                 # release build of this checkout
#   sudo VPN_NS=/usr/bin/vpn-ns bench/wireguard.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-$ROOT/BENCHMARKS-wireguard.md}
RUNS=${RUNS:-20}
TP_ROUNDS=${TP_ROUNDS:-5}
TP_SECONDS=${TP_SECONDS:-5}

if [ -z "${VPN_NS_BENCH_INNER:-}" ]; then
    [ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 2; }
    for t in hyperfine iperf3 wireguard-go wg; do
        command -v $t >/dev/null || { echo "bench: $t missing (apt-get install hyperfine iperf3 wireguard-go wireguard-tools time)" >&2; exit 2; }
    done
    [ -x /usr/bin/time ] || { echo "bench: /usr/bin/time missing (apt-get install time)" >&2; exit 2; }
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
W=$(mktemp -d /tmp/vpn-ns-wgbench.XXXXXX)
chmod 700 "$W"
CONF=$W/conf
mkdir -p "$CONF"
export VPN_NS_LOG=error WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1
cleanup() {
    for c in wgb wgg; do "$VPN_NS" -q --config-dir "$CONF" down "$c" >/dev/null 2>&1 || true; done
    [ -n "${SRV_PID:-}" ] && kill "$SRV_PID" 2>/dev/null
    ip -all netns del 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

# The peer: wireguard-go in namespace srv behind a veth, iperf3 on its tunnel address.
ip netns add srv
ip link add up1 type veth peer name eth0 netns srv
ip addr add 198.51.100.1/30 dev up1
ip link set up1 up
ip -n srv link set lo up
ip -n srv addr add 198.51.100.2/30 dev eth0
ip -n srv link set eth0 up
umask 077
wg genkey > "$W/srv.key"; wg pubkey < "$W/srv.key" > "$W/srv.pub"
# One client key per backend: boringtun's handshake timestamps run 27 s ahead of
# wireguard-go's, so a shared key would make the peer drop wireguard-go's handshakes
# as replays for that long after a builtin run.
for id in b g; do wg genkey > "$W/cli$id.key"; wg pubkey < "$W/cli$id.key" > "$W/cli$id.pub"; done
ip netns exec srv wireguard-go -f wgs > "$W/srv.log" 2>&1 &
SRV_PID=$!
for _ in $(seq 100); do [ -S /run/wireguard/wgs.sock ] && break; sleep 0.05; done
ip netns exec srv wg set wgs private-key "$W/srv.key" listen-port 51820 \
    peer "$(cat "$W/clib.pub")" allowed-ips 100.64.0.2/32 \
    peer "$(cat "$W/clig.pub")" allowed-ips 100.64.0.3/32
ip -n srv addr add 100.64.0.1/24 dev wgs
ip -n srv link set wgs up
ip netns exec srv iperf3 -s -B 100.64.0.1 -D

# Two connections with the same peer, one per backend.
for b in b:builtin:2 g:wireguard-go:3; do
    IFS=: read -r id backend host <<< "$b"
    printf '[Interface]\nPrivateKey = %s\nAddress = 100.64.0.%s/24\n[Peer]\nPublicKey = %s\nEndpoint = 198.51.100.2:51820\nAllowedIPs = 100.64.0.0/24\nPersistentKeepalive = 25\n' \
        "$(cat "$W/cli$id.key")" "$host" "$(cat "$W/srv.pub")" > "$W/wg${id}0.conf"
    printf 'type = "wireguard"\n[wireguard]\nconfig = "%s"\nbackend = "%s"\n' "$W/wg${id}0.conf" "$backend" > "$CONF/wg$id.toml"
done
umask 022
V="$VPN_NS -q --config-dir $CONF"

# ---------------------------------------------------------------------------
# 1. up time: builtin vs wireguard-go (down between runs, not timed), and the kernel's
# device-move floor (a tun created, then `ip link set DEV netns NS` timed alone).
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$W/up.json" \
    -n "vpn-ns up, backend = builtin" --prepare "$V down wgb" "$V up wgb" \
    -n "vpn-ns up, backend = wireguard-go" --prepare "$V down wgg" "$V up wgg" >&2
$V down wgb; $V down wgg
ip netns add mv
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$W/move.json" \
    --prepare "bash -c 'ip -n mv link del tunmv 2>/dev/null; ip tuntap add dev tunmv mode tun'" \
    -n "ip link set tun netns NS" "ip link set tunmv netns mv" >&2
ip -n mv link del tunmv 2>/dev/null || true
ms() { python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["median"]*1000))' "$1" "$2"; }
up_b=$(ms "$W/up.json" 0); up_g=$(ms "$W/up.json" 1); floor=$(ms "$W/move.json" 0)
rss_b=$(/usr/bin/time -v $V up wgb 2>&1 >/dev/null | awk -F': ' '/Maximum resident/ {print $2}'); $V down wgb
rss_g=$(/usr/bin/time -v $V up wgg 2>&1 >/dev/null | awk -F': ' '/Maximum resident/ {print $2}'); $V down wgg

# ---------------------------------------------------------------------------
# 2. throughput: iperf3 from the connection's namespace to the peer, both directions,
# alternating backends, TP_ROUNDS rounds of TP_SECONDS; CPU time (user+sys) of the
# client's data-plane process (vpn_pid) over the transfer, per GB received.
ticks=$(getconf CLK_TCK)
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# run <conn> [-R]: prints "Mbit/s cpu_s_per_GB"
run_tp() {
    local conn=$1 rev=${2:-} pid out before after
    pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vpn_pid"])' "/run/vpn-ns/$conn.json")
    # One datagram starts the handshake; measure once it is done.
    ip netns exec "$conn" bash -c 'echo > /dev/udp/100.64.0.1/9' || true
    for _ in $(seq 100); do
        wg show "${conn}0" latest-handshakes | awk '{exit !($2 > 0)}' && break
        sleep 0.05
    done
    for _ in 1 2 3 4 5; do
        before=$(cpu_of "$pid")
        out=$(ip netns exec "$conn" iperf3 -c 100.64.0.1 -t "$TP_SECONDS" $rev -J || true)
        after=$(cpu_of "$pid")
        if python3 - "$out" "$before" "$after" "$ticks" <<'PY' 2>/dev/null; then return 0; fi
import json, sys
r = json.loads(sys.argv[1])["end"]["sum_received"]
cpu = (float(sys.argv[3]) - float(sys.argv[2])) / float(sys.argv[4])
print("%.1f %.2f" % (r["bits_per_second"] / 1e6, cpu / (r["bytes"] / 1e9)))
PY
        sleep 1
    done
    echo "bench: iperf3 through $conn failed" >&2
    return 1
}
declare -A tp cpu
for _ in $(seq "$TP_ROUNDS"); do
    for c in wgb wgg; do
        $V up "$c"
        for dir in up down; do
            read -r m g < <(run_tp "$c" "$([ $dir = down ] && echo -R)")
            tp[$c.$dir]+="$m "; cpu[$c.$dir]+="$g "
        done
        $V down "$c"
    done
done
med() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

{
    echo "# WireGuard benchmarks"
    echo
    echo "Written by \`bench/wireguard.sh\` on $(date -u +%Y-%m-%d). Machine: $(nproc) cores," \
         "kernel $(uname -r) (no WireGuard module), $("$VPN_NS" --version), wireguard-go" \
         "$(dpkg-query -W -f '${Version}' wireguard-go 2>/dev/null || echo '?'). Peer: wireguard-go in"\
         "a namespace behind a veth. hyperfine -N, median of $RUNS runs."
    echo
    echo "| what | builtin | wireguard-go | builtin vs wireguard-go |"
    echo "|---|---|---|---|"
    echo "| \`vpn-ns up\` (whole process) | $up_b ms | $up_g ms | $(python3 -c "print('%.2f ms faster' % ($up_g - $up_b))") |"
    echo "| kernel floor: \`ip link set tun netns NS\` alone (in wireguard-go's up, not in builtin's) | | $floor ms | |"
    echo "| \`vpn-ns up\` peak RSS | $rss_b KiB | $rss_g KiB | |"
    for dir in up down; do
        b=$(med "${tp[wgb.$dir]}"); g=$(med "${tp[wgg.$dir]}")
        echo "| iperf3 $([ $dir = up ] && echo 'namespace -> peer' || echo 'peer -> namespace (-R)'), median of $TP_ROUNDS x $TP_SECONDS s | $b Mbit/s (${tp[wgb.$dir]% }) | $g Mbit/s (${tp[wgg.$dir]% }) | $(python3 -c "print('%.2fx' % ($b/$g))") |"
        b=$(med "${cpu[wgb.$dir]}"); g=$(med "${cpu[wgg.$dir]}")
        echo "| client data-plane CPU (user+sys) per GB, $dir | $b s | $g s | $(python3 -c "print('%.2fx' % ($b/$g))") |"
    done
    echo
    echo "The up of the wireguard-go backend includes starting wireguard-go, waiting for its"
    echo "UAPI socket and moving its tun into the namespace; the builtin up starts"
    echo "\`vpn-ns wg-builtin\`, whose tun is born in the namespace (no move). CPU per GB is"
    echo "the client process's utime+stime (/proc/PID/stat) over the transfer divided by the"
    echo "bytes iperf3 received; the peer (wireguard-go) shares the same 2 cores."
} > "$OUT"
cat "$OUT"
