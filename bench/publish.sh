#!/bin/bash
# vpn-ns publish benchmark: the same service reached three ways, side by side in one
# run: directly on the namespace's loopback (the floor), through `vpn-ns publish` (the
# keeper's splice relay, host -> namespace), and through socat doing the same relay
# (the usual user-space bridge: socat on the host -> a Unix socket -> socat in the
# namespace, since socat cannot open sockets in another namespace itself). Measures
# throughput (iperf3), added connect latency (connect + 1-byte echo + close, median)
# and the keeper's RSS with 1,000 connections held open. Needs root, iperf3, socat,
# python3; runs inside a private network + mount namespace (unshare).
#
#   sudo bench/publish.sh                 # release build of this checkout
#   sudo VPN_NS=/usr/bin/vpn-ns bench/publish.sh [OUT.md]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-}
TP_ROUNDS=${TP_ROUNDS:-3}
TP_SECONDS=${TP_SECONDS:-5}
LAT_N=${LAT_N:-2000}
CONC=${CONC:-1000}

if [ -z "${VPN_NS_BENCH_INNER:-}" ]; then
    [ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 2; }
    for t in iperf3 socat python3; do
        command -v $t >/dev/null || { echo "bench: $t missing (apt-get install iperf3 socat python3)" >&2; exit 2; }
    done
    if [ -z "${VPN_NS:-}" ]; then
        cargo build --release --locked -q
        VPN_NS=$ROOT/target/release/vpn-ns
    fi
    for d in /run/netns /run/vpn-ns /etc/netns; do mkdir -p "$d"; done
    exec env VPN_NS_BENCH_INNER=1 VPN_NS="$VPN_NS" OUT="$OUT" \
        unshare --net --mount --propagation private -- "$0" "$@"
fi

for d in /run/netns /run/vpn-ns /etc/netns; do mount -t tmpfs -o mode=0755 tmpfs "$d"; done
ip link set lo up
ulimit -n "$(ulimit -Hn)"
W=$(mktemp -d /tmp/vpn-ns-bench-publish.XXXXXX)
cleanup() {
    # The servers inside run under `ip netns exec` in background subshells: end them by
    # namespace, not as children of this shell.
    ip netns pids pbench 2>/dev/null | xargs -r kill 2>/dev/null || true
    pkill -P $$ 2>/dev/null || true
    "$VPN_NS" -q --config-dir "$CONF" down pbench >/dev/null 2>&1 || true
    ip -all netns del 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
CONF=$W/conf
mkdir -p "$CONF"
export VPN_NS_LOG=error
LOAD="python3 $ROOT/bench/publish-load.py"
NS=pbench
# Inside: iperf3 on 5201, the echo server on 5202. Host side: vpn-ns publish on 9201/9202,
# socat on 9301/9302.
cat > "$CONF/$NS.toml" <<TOML
type = "device"
[[publish]]
listen = 9201
target = 5201
[[publish]]
listen = 9202
target = 5202
TOML
ip tuntap add dev tunp mode tun
"$VPN_NS" -q --config-dir "$CONF" adopt $NS tunp
inside() { ip netns exec $NS "$@"; }
inside iperf3 -s -B 127.0.0.1 -p 5201 >/dev/null 2>&1 &
inside $LOAD serve 5202 &
for p in 1 2; do
    inside socat UNIX-LISTEN:"$W/s$p.sock",fork,reuseaddr TCP:127.0.0.1:520$p &
    socat TCP-LISTEN:930$p,bind=127.0.0.1,fork,reuseaddr,backlog=4096 UNIX-CONNECT:"$W/s$p.sock" &
done
# Everything listening before anything is timed (looked up, not connected to: iperf3's
# server takes one client at a time).
for i in $(seq 100); do
    ok=1
    for p in 9201 9202 9301 9302; do
        ss -Hltn "sport = :$p" | grep -q . || ok=
    done
    inside ss -Hltn 'sport = :5201' | grep -q . || ok=
    [ -S "$W/s1.sock" ] && [ -S "$W/s2.sock" ] || ok=
    [ -n "$ok" ] && break
    sleep 0.1
done
[ -n "$ok" ] || { echo "bench: the relays did not come up" >&2; exit 1; }

mbits() { python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))'; }
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# 1. throughput, rounds interleaved so that a noisy moment hits all three alike
declare -a tp_direct tp_vpn tp_socat
for r in $(seq "$TP_ROUNDS"); do
    tp_direct+=("$(inside timeout 60 iperf3 -c 127.0.0.1 -p 5201 -t "$TP_SECONDS" -J | mbits)")
    tp_vpn+=("$(timeout 60 iperf3 -c 127.0.0.1 -p 9201 -t "$TP_SECONDS" -J | mbits)")
    tp_socat+=("$(timeout 60 iperf3 -c 127.0.0.1 -p 9301 -t "$TP_SECONDS" -J | mbits)")
    echo "throughput round $r: direct ${tp_direct[-1]}, vpn-ns ${tp_vpn[-1]}, socat ${tp_socat[-1]} Mbit/s" >&2
done
d_tp=$(med "${tp_direct[@]}"); v_tp=$(med "${tp_vpn[@]}"); s_tp=$(med "${tp_socat[@]}")

# 2. connect latency: connect + 1-byte echo + close, median and p90 of LAT_N
read -r d_lat d_p90 < <(inside $LOAD latency 5202 "$LAT_N")
read -r v_lat v_p90 < <($LOAD latency 9202 "$LAT_N")
read -r s_lat s_p90 < <($LOAD latency 9302 "$LAT_N")
echo "latency (median/p90 us): direct $d_lat/$d_p90, vpn-ns $v_lat/$v_p90, socat $s_lat/$s_p90" >&2

# 3. CONC connections held open through the relay: the keeper's RSS and its own count
status_cmd=("$VPN_NS" -q --config-dir "$CONF" --json status $NS)
held=$($LOAD hold 9202 "$CONC" "${status_cmd[@]}")
read -r rss active < <(printf '%s' "$held" | python3 -c '
import json, sys
k = json.load(sys.stdin)["connections"][0]["keeper"]
print(k["rss_kib"], next(r["active"] for r in k["published"] if r["listen"].endswith(":9202")))')
echo "$CONC connections held: keeper RSS $rss KiB, relay counts $active open" >&2

f() { python3 -c "print('%.3f' % ($1))"; }
verdict() { python3 -c "print('met' if $1 else '**missed**')"; }
v_add=$(f "$v_lat - $d_lat"); s_add=$(f "$s_lat - $d_lat")
report() {
    echo "## Publishing ports (bench/publish.sh)"
    echo
    echo "Run on $(date -u +%Y-%m-%d): $(nproc) cores, kernel $(uname -r), $("$VPN_NS" --version)."
    echo "The same services inside a namespace (iperf3 server, echo server) reached directly"
    echo "on the namespace's loopback, through \`vpn-ns publish\` from the host, and through"
    echo "socat (host socat -> Unix socket -> socat in the namespace), in one run."
    echo
    echo "| what | direct loopback | vpn-ns publish | socat relay |"
    echo "|---|---|---|---|"
    echo "| iperf3 throughput, median of $TP_ROUNDS x $TP_SECONDS s | $d_tp Mbit/s | $v_tp Mbit/s ($(f "$v_tp/$d_tp")) | $s_tp Mbit/s ($(f "$s_tp/$d_tp")) |"
    echo "| connect + 1-byte echo + close, median (p90) of $LAT_N | $d_lat ($d_p90) µs | $v_lat ($v_p90) µs | $s_lat ($s_p90) µs |"
    echo "| added connect latency (median minus direct) | | $v_add µs | $s_add µs |"
    echo "| $CONC connections held open | | keeper RSS $rss KiB, $active counted open | |"
    echo
    echo "| target | this run | |"
    echo "|---|---|---|"
    echo "| throughput >= 0.8 of direct loopback | $(f "$v_tp/$d_tp") | $(verdict "$v_tp >= 0.8 * $d_tp") |"
    echo "| throughput ahead of socat | $v_tp vs $s_tp Mbit/s | $(verdict "$v_tp > $s_tp") |"
    echo "| added connect latency under 100 µs (median) | $v_add µs | $(verdict "$v_add < 100") |"
    echo "| $CONC concurrent connections, keeper RSS under 32 MB | $rss KiB ($active open) | $(verdict "$rss < 32768 and $active == $CONC") |"
}
if [ -n "$OUT" ]; then report > "$OUT"; echo "wrote $OUT" >&2; else report; fi
