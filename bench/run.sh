#!/bin/bash
# vpn-ns benchmarks: whole-process timings, each compared side by side with a reference
# in the same run. Writes BENCHMARKS.md (or $1). Needs root, hyperfine, iperf3, openvpn,
# socat, /usr/bin/time; runs inside a private network + mount namespace (unshare) so the
# machine's own network and /run/netns, /etc/netns are untouched.
#
#   sudo bench/run.sh                 # release build of this checkout
#   sudo VPN_NS=/usr/bin/vpn-ns bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-$ROOT/BENCHMARKS.md}
RUNS=${RUNS:-30}

if [ -z "${VPN_NS_BENCH_INNER:-}" ]; then
    [ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 2; }
    for t in hyperfine iperf3 openvpn socat openssl; do
        command -v $t >/dev/null || { echo "bench: $t missing (apt-get install hyperfine iperf3 openvpn socat openssl time)" >&2; exit 2; }
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

for d in /run/netns /run/vpn-ns /etc/netns /run/wireguard; do mount -t tmpfs tmpfs "$d"; done
ip link set lo up
W=$(mktemp -d /tmp/vpn-ns-bench.XXXXXX)
trap 'ip -all netns del 2>/dev/null || true; pkill -P $$ 2>/dev/null || true; rm -rf "$W"' EXIT
CONF=$W/conf
mkdir -p "$CONF"
export VPN_NS_LOG=error
note() { printf '%s\n' "$*" | tee -a "$W/report.md" >/dev/null; echo "$*" >&2; }
: > "$W/report.md"

# OpenVPN's environment for an `up`/`down` of tun device $dev, as OpenVPN 2.6 sets it.
# One shell-quoted word per variable, for `eval env ...` and for generated scripts.
hook_env() {
    printf '%q ' "dev=$1" dev_type=tun tun_mtu=1500 ifconfig_local=100.64.0.2 \
        ifconfig_netmask=255.255.255.0 route_vpn_gateway=100.64.0.1 \
        route_network_1=203.0.113.0 route_netmask_1=255.255.255.0 route_gateway_1=100.64.0.1 \
        "foreign_option_1=dhcp-option DNS 203.0.113.53" script_context=init
}
# hook <up|down> <dev> <conn>
hook() {
    eval env "$(hook_env "$2")" script_type="$1" '"$VPN_NS"' -q --config-dir '"$CONF"' hook openvpn "$3"
}

median_ms() { # hyperfine JSON -> median in ms
    python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["median"]*1000))' "$1" "$2"
}

# ---------------------------------------------------------------------------
# 1. one OpenVPN-style up+down cycle: vpn-ns hook vs the reference shell hook
printf 'type = "openvpn"\nnetns-name = "bench"\n' > "$CONF/bench.toml"
cat > "$W/vpnns-cycle.sh" <<EOF
#!/bin/bash
set -e
env $(hook_env tunb) script_type=up $VPN_NS -q --config-dir $CONF hook openvpn bench tunb 1500 0 100.64.0.2 255.255.255.0 init
env $(hook_env tunb) script_type=down $VPN_NS -q --config-dir $CONF hook openvpn bench tunb 1500 0 100.64.0.2 255.255.255.0 init
EOF
cat > "$W/shell-cycle.sh" <<EOF
#!/bin/bash
set -e
env NS=bench $(hook_env tunb) script_type=up $ROOT/bench/reference-hook.sh
env NS=bench $(hook_env tunb) script_type=down $ROOT/bench/reference-hook.sh
EOF
chmod +x "$W"/*.sh
# A persistent tun stands in for OpenVPN's: made fresh before every run (not timed).
prep='ip link del tunb 2>/dev/null; ip -all netns del 2>/dev/null; ip tuntap add dev tunb mode tun'
hyperfine -N --warmup 3 --runs "$RUNS" --prepare "bash -c \"$prep\"" \
    --export-json "$W/hook.json" --export-markdown "$W/hook.md" \
    -n "vpn-ns hook openvpn (up+down)" "$W/vpnns-cycle.sh" \
    -n "reference shell hook (up+down)" "$W/shell-cycle.sh" >&2
hook_vpn=$(median_ms "$W/hook.json" 0); hook_sh=$(median_ms "$W/hook.json" 1)
# The cycle scripts' own bash start is common to both; measure it to report net figures.
cat > "$W/empty.sh" <<'EOF'
#!/bin/bash
EOF
chmod +x "$W/empty.sh"
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$W/empty.json" "$W/empty.sh" >/dev/null 2>&1
bash_ms=$(median_ms "$W/empty.json" 0)

# peak RSS of the hook (up), /usr/bin/time -v
bash -c "$prep"
rss_kb=$(eval env "$(hook_env tunb)" script_type=up /usr/bin/time -v '"$VPN_NS"' -q \
    --config-dir '"$CONF"' hook openvpn bench 2>&1 >/dev/null |
    awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}')
hook down tunb bench

# ---------------------------------------------------------------------------
# 4. up and down of 500 connections: is the cost flat in N?
N=${N:-500}
for i in $(seq 1 "$N"); do
    printf 'type = "openvpn"\n' > "$CONF/c$i.toml"
    ip tuntap add dev "t$i" mode tun
done
declare -a up_ms down_ms
for i in $(seq 1 "$N"); do
    s=$EPOCHREALTIME
    hook up "t$i" "c$i"
    e=$EPOCHREALTIME
    up_ms[$i]=$(python3 -c "print('%.2f' % (($e-$s)*1000))")
    case $i in 10|100|500)
        # 3. status --json with 10, 100, 500 connections up
        if "$VPN_NS" status --json >/dev/null 2>&1; then
            hyperfine -N --warmup 2 --runs 10 --export-json "$W/status$i.json" \
                "$VPN_NS --config-dir $CONF status --json" >/dev/null 2>&1
            declare "status_$i=$(median_ms "$W/status$i.json" 0)"
        fi
        ;;
    esac
done
for i in $(seq 1 "$N"); do
    s=$EPOCHREALTIME
    hook down "t$i" "c$i"
    e=$EPOCHREALTIME
    down_ms[$i]=$(python3 -c "print('%.2f' % (($e-$s)*1000))")
done
mid=$(( (N + 1) / 2 ))

# ---------------------------------------------------------------------------
# 2. exec: vpn-ns exec <conn> -- true vs ip netns exec <ns> true (on a live namespace)
bash -c "$prep"
hook up tunb bench
exec_line="(vpn-ns exec not available in this build)"
if "$VPN_NS" exec --help >/dev/null 2>&1; then
    hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$W/exec.json" \
        -n "vpn-ns exec bench -- true" "$VPN_NS --config-dir $CONF exec bench -- /bin/true" \
        -n "ip netns exec bench true" "ip netns exec bench /bin/true" >&2
    exec_line="| exec | $(median_ms "$W/exec.json" 0) ms | $(median_ms "$W/exec.json" 1) ms (ip netns exec) |"
fi

{
    echo "# Benchmarks"
    echo
    echo "Written by \`bench/run.sh\` on $(date -u +%Y-%m-%d). Machine: $(nproc) cores," \
         "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)," \
         "$("$VPN_NS" --version). Every figure is a whole-process timing (hyperfine -N, median" \
         "of $RUNS runs unless noted), each compared with its reference in the same run."
    echo
    echo "Reproduce: \`sudo bench/run.sh\` (needs hyperfine iperf3 openvpn socat openssl time)."
    echo
    echo "## Results"
    echo
    echo "| what | vpn-ns | reference | ratio |"
    echo "|---|---|---|---|"
    echo "| hook up+down cycle (incl. one bash start, $bash_ms ms) | $hook_vpn ms | $hook_sh ms (shell hook with \`ip\`) | $(python3 -c "print('%.1fx faster' % ($hook_sh/$hook_vpn))") |"
    echo "| hook peak RSS (up) | $rss_kb KiB | | |"
    echo "| up of connection 1 / $mid / $N | ${up_ms[1]} / ${up_ms[$mid]} / ${up_ms[$N]} ms | | $(python3 -c "print('%.2f' % (${up_ms[$N]}/${up_ms[1]}))") (last/first) |"
    echo "| down of connection 1 / $mid / $N | ${down_ms[1]} / ${down_ms[$mid]} / ${down_ms[$N]} ms | | $(python3 -c "print('%.2f' % (${down_ms[$N]}/${down_ms[1]}))") (last/first) |"
    for n in 10 100 500; do
        v="status_$n"
        [ -n "${!v:-}" ] && echo "| status --json, $n connections up | ${!v} ms | | |"
    done
    echo "$exec_line"
    echo
    echo "Single-sample figures (up/down of connection i) are one measurement each, taken"
    echo "with \$EPOCHREALTIME around the process; they include process start."
    echo
    echo "## Method"
    echo
    echo "- Everything runs in a private network and mount namespace made by the script."
    echo "- Hook cycle: a persistent tun device stands in for OpenVPN's (created before each"
    echo "  run, not timed); the cycle is \`up\` then \`down\` with OpenVPN 2.6's environment."
    echo "  The reference is bench/reference-hook.sh, the usual \`ip netns\`/\`ip link\`/\`ip addr\`/"
    echo "  \`ip route\`/resolv.conf script."
    echo
    echo "### hyperfine output: hook"
    echo
    cat "$W/hook.md"
} > "$OUT"
echo "wrote $OUT" >&2
