#!/bin/bash
# The connection keeper's cost: its resident memory and wake-ups while idle, and what
# starting it adds to an up (the OpenVPN hook's up, timed with and without a keeper:
# against the vpn-ns build before the keeper existed, in the same run). Prints a
# Markdown report (or writes it to $1). Needs root, hyperfine, /usr/bin/time; runs in a
# private network + mount namespace (unshare): the machine's network and /run are
# untouched.
#
#   sudo bench/keeper.sh                           # release builds of this checkout and of BASE
#   sudo VPN_NS=... VPN_NS_BASE=... bench/keeper.sh  # prebuilt binaries
#   IDLE_SECS=60 (idle window), RUNS=30, BASE=<git rev before the keeper> (default da5b2de)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-/dev/stdout}
RUNS=${RUNS:-30}
IDLE_SECS=${IDLE_SECS:-60}
BASE=${BASE:-da5b2de}

if [ -z "${VPN_NS_BENCH_INNER:-}" ]; then
    [ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 2; }
    command -v hyperfine >/dev/null || { echo "bench: hyperfine missing (apt-get install hyperfine time)" >&2; exit 2; }
    [ -x /usr/bin/time ] || { echo "bench: /usr/bin/time missing (apt-get install time)" >&2; exit 2; }
    if [ -z "${VPN_NS:-}" ]; then
        cargo build --release --locked -q
        VPN_NS=$ROOT/target/release/vpn-ns
    fi
    if [ -z "${VPN_NS_BASE:-}" ]; then
        # The same build of the revision before the keeper, from git (no worktree).
        src=$(mktemp -d /tmp/vpn-ns-base.XXXXXX)
        git archive "$BASE" | tar -x -C "$src"
        (cd "$src" && CARGO_TARGET_DIR="$src/target" cargo build --release --locked -q)
        VPN_NS_BASE=$src/target/release/vpn-ns
    fi
    for d in /run/netns /run/vpn-ns /etc/netns; do mkdir -p "$d"; done
    exec env VPN_NS_BENCH_INNER=1 VPN_NS="$VPN_NS" VPN_NS_BASE="$VPN_NS_BASE" OUT="$OUT" \
        unshare --net --mount --propagation private -- "$0" "$@"
fi

for d in /run/netns /run/vpn-ns /etc/netns; do mount -t tmpfs -o mode=0755 tmpfs "$d"; done
ip link set lo up
W=$(mktemp -d /tmp/vpn-ns-bench-keeper.XXXXXX)
trap 'ip -all netns del 2>/dev/null || true; rm -rf "$W"' EXIT
CONF=$W/conf
mkdir -p "$CONF"
export VPN_NS_LOG=error
printf 'type = "openvpn"\nnetns-name = "kb"\n' > "$CONF/kb.toml"
# The same without a namespace (netns-isolate = false): no device move, whose 20-45 ms
# of kernel waiting would drown a difference of a millisecond in its noise.
printf 'type = "openvpn"\nnetns-isolate = false\n' > "$CONF/kh.toml"

# OpenVPN's environment for the up/down of tun device $1 (as OpenVPN 2.6 sets it).
hook_env() {
    printf '%q ' "dev=$1" dev_type=tun tun_mtu=1500 ifconfig_local=100.64.0.2 \
        ifconfig_netmask=255.255.255.0 route_vpn_gateway=100.64.0.1 \
        route_network_1=203.0.113.0 route_netmask_1=255.255.255.0 route_gateway_1=100.64.0.1 \
        "foreign_option_1=dhcp-option DNS 203.0.113.53" script_context=init
}
median_ms() {
    python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["median"]*1000))' "$1" "$2"
}

# ---------------------------------------------------------------------------
# 1. The added cost to up: the hook's up with this build (which starts a keeper) and
# with the build before the keeper. Each run starts from what OpenVPN leaves: a tun in
# the host namespace; the previous run is taken down by this build's down hook (which
# ends a keeper; the record format is the same), untimed.
clean='ip link del tunk 2>/dev/null; ip -all netns del 2>/dev/null; rm -rf /etc/netns/* /run/vpn-ns/*.json'
down_VPN_NS="env script_type=down $VPN_NS -q --config-dir $CONF hook openvpn kb"
(
    eval export "$(hook_env tunk)"
    hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$W/up.json" --export-markdown "$W/up.md" \
        -n "up, with a keeper (this build)" \
        --prepare "bash -c '$down_VPN_NS >/dev/null 2>&1; $clean; ip tuntap add dev tunk mode tun'" \
        "env script_type=up $VPN_NS -q --config-dir $CONF hook openvpn kb" \
        -n "up, no keeper ($BASE)" \
        --prepare "bash -c '$down_VPN_NS >/dev/null 2>&1; $clean; ip tuntap add dev tunk mode tun'" \
        "env script_type=up $VPN_NS_BASE -q --config-dir $CONF hook openvpn kb" >&2
    eval "$down_VPN_NS" >/dev/null 2>&1 || true
)
up_keeper=$(median_ms "$W/up.json" 0)
up_base=$(median_ms "$W/up.json" 1)
added=$(python3 -c "print('%.2f' % ($up_keeper - $up_base))")
(
    eval export "$(hook_env tunh)"
    clean_h='ip link del tunh 2>/dev/null; rm -f /run/vpn-ns/kh.json'
    hyperfine -N --warmup 3 --runs "$((RUNS * 3))" --export-json "$W/uph.json" --export-markdown "$W/uph.md" \
        -n "host-namespace up, with a keeper (this build)" \
        --prepare "bash -c 'env script_type=down $VPN_NS -q --config-dir $CONF hook openvpn kh >/dev/null 2>&1; $clean_h; ip tuntap add dev tunh mode tun'" \
        "env script_type=up $VPN_NS -q --config-dir $CONF hook openvpn kh" \
        -n "host-namespace up, no keeper ($BASE)" \
        --prepare "bash -c 'env script_type=down $VPN_NS -q --config-dir $CONF hook openvpn kh >/dev/null 2>&1; $clean_h; ip tuntap add dev tunh mode tun'" \
        "env script_type=up $VPN_NS_BASE -q --config-dir $CONF hook openvpn kh" >&2
    env script_type=down "$VPN_NS" -q --config-dir "$CONF" hook openvpn kh >/dev/null 2>&1 || true
    ip link del tunh 2>/dev/null || true
)
uph_keeper=$(median_ms "$W/uph.json" 0)
uph_base=$(median_ms "$W/uph.json" 1)
added_h=$(python3 -c "print('%.2f' % ($uph_keeper - $uph_base))")

# ---------------------------------------------------------------------------
# 2. An idle keeper: resident memory, and wake-ups (context switches) over IDLE_SECS.
# The "VPN" is a sleeping process that runs the hook as its child, as OpenVPN does;
# nothing happens during the window, so an event-driven keeper must not wake at all.
bash -c "$clean; ip tuntap add dev tunk mode tun"
cat > "$W/vpn.sh" <<EOS
#!/bin/bash
"$VPN_NS" -q --config-dir "$CONF" hook openvpn kb || exit 1
exec sleep $((IDLE_SECS + 30))
EOS
# Not through eval: $! must be the process that runs the hook (and then sleeps).
eval "vpn_env=($(hook_env tunk))"
env "${vpn_env[@]}" script_type=up bash "$W/vpn.sh" &
vpn=$!
for _ in $(seq 1 100); do
    [ -S /run/vpn-ns/kb.keeper.sock ] && break
    sleep 0.05
done
keeper=$(python3 -c 'import json; print(json.load(open("/run/vpn-ns/kb.json"))["keeper"]["pid"])')
sleep 1 # let its start-up finish before the window opens
switches() { awk '/ctxt_switches/ {n += $2} END {print n}' "/proc/$keeper/status"; }
s0=$(switches)
sleep "$IDLE_SECS"
s1=$(switches)
wakeups=$(( s1 - s0 ))
per_min=$(python3 -c "print('%.1f' % ($wakeups * 60 / $IDLE_SECS))")
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$keeper/status")
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$keeper/status")
# One status request in the window's aftermath: the keeper answers and goes back to sleep.
"$VPN_NS" --config-dir "$CONF" status kb >/dev/null
s2=$(switches)
# The VPN dies: the keeper takes the connection down (and exits).
kill "$vpn" 2>/dev/null || true
wait "$vpn" 2>/dev/null || true
for _ in $(seq 1 100); do
    [ -e /run/vpn-ns/kb.json ] || break
    sleep 0.01
done
gone=$([ -e /run/vpn-ns/kb.json ] && echo "NOT taken down" || echo "taken down")

# Peak RSS of the up hook itself (/usr/bin/time -v), which now also starts the keeper.
bash -c "$clean; ip tuntap add dev tunk mode tun"
hook_rss=$(eval env "$(hook_env tunk)" script_type=up /usr/bin/time -v '"$VPN_NS"' -q \
    --config-dir '"$CONF"' hook openvpn kb 2>&1 >/dev/null |
    awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}')
eval "$down_VPN_NS" >/dev/null 2>&1 || true

{
    echo "## Keeper"
    echo
    echo "$("$VPN_NS" --version); baseline $BASE; $(nproc) CPU(s); $(uname -r)."
    echo "Reproduce: \`sudo bench/keeper.sh\` (needs hyperfine and time)."
    echo
    echo "| measure | value | target |"
    echo "|---|---|---|"
    echo "| added cost to up, host-namespace up (median with keeper - without) | ${added_h} ms (${uph_keeper} vs ${uph_base} ms) | < 2 ms |"
    echo "| added cost to up, namespace up (median with keeper - without; device move noise) | ${added} ms (${up_keeper} vs ${up_base} ms) | < 2 ms |"
    echo "| keeper RSS while idle (VmRSS / peak VmHWM) | ${rss} KiB / ${hwm} KiB | < 3 MB |"
    echo "| keeper wake-ups while idle | ${wakeups} in ${IDLE_SECS} s (${per_min}/min) | 0 |"
    echo "| wake-ups to answer one \`status\` | $(( s2 - s1 )) | - |"
    echo "| VPN process killed after the window | connection ${gone} | - |"
    echo "| peak RSS of the up hook (/usr/bin/time -v) | ${hook_rss} KiB | - |"
    echo
    echo "### hyperfine: hook up into a namespace"
    cat "$W/up.md"
    echo
    echo "### hyperfine: hook up in the host namespace (netns-isolate = false)"
    cat "$W/uph.md"
} > "$OUT"
