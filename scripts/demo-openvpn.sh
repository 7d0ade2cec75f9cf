#!/bin/bash
# A self-contained vpn-ns demo: an OpenVPN server in a throwaway namespace, a client
# whose tunnel vpn-ns isolates, a request from inside that succeeds and one from the
# host that fails, then a clean teardown.
#
# Everything runs inside a private network + mount namespace made for the demo
# (unshare), so the machine's own network, /run/netns and /etc/netns are not touched.
set -euo pipefail

VPN_NS=${VPN_NS:-$(command -v vpn-ns || true)}
if [ -z "$VPN_NS" ]; then
    echo "demo: vpn-ns not found; run scripts/install.sh or set VPN_NS=/path/to/vpn-ns" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "demo: run as root (it creates namespaces and tun devices)" >&2
    exit 2
fi

if [ -z "${VPN_NS_DEMO_INNER:-}" ]; then
    for d in /run/netns /run/vpn-ns /etc/netns; do mkdir -p "$d"; done
    exec env VPN_NS_DEMO_INNER=1 VPN_NS="$VPN_NS" \
        unshare --net --mount --propagation private -- "$0" "$@"
fi

for d in /run/netns /run/vpn-ns /etc/netns; do mount -t tmpfs -o mode=0755 tmpfs "$d"; done
ip link set lo up
work=$(mktemp -d /tmp/vpn-ns-demo.XXXXXX)
client_pid=""
cleanup() {
    [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null || true
    ip netns pids srv 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del srv 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=scripts/openvpn-lab.sh
. "$(dirname "$0")/openvpn-lab.sh"
step() { printf '\n== %s\n' "$*"; }

step "certificates (a throwaway CA, server and client)"
LAB=$work
lab_pki

step "VPN server in namespace srv (198.51.100.2), service 203.0.113.1:8080 behind it"
lab_server
ip netns exec srv socat TCP-LISTEN:8080,bind=203.0.113.1,fork,reuseaddr \
    SYSTEM:'echo hello from behind the VPN' &

step "connection file demo.toml (the demo keeps it in a temp dir; normally /etc/vpn-ns/demo.toml)"
mkdir -p "$work/conf"
printf 'type = "openvpn"\nnetns-name = "demo"\n' | tee "$work/conf/demo.toml"

step "OpenVPN client, wired to vpn-ns"
lab_client demo "$work/conf"
client_pid=$LAB_CLIENT_PID
lab_wait_connected 1
ip -n demo -br addr
cat /etc/netns/demo/resolv.conf

step "request from inside the namespace (must succeed)"
ip netns exec demo socat -T2 - TCP:203.0.113.1:8080,connect-timeout=2

step "the same request from the host (must fail)"
if socat -T2 - TCP:203.0.113.1:8080,connect-timeout=2 2>&1; then
    echo "demo: FAILED: the host reached the service behind the VPN" >&2
    exit 1
fi
echo "refused on the host, as it should be"

step "teardown: stop OpenVPN"
kill "$client_pid"; wait "$client_pid" || true; client_pid=""
if ip netns list | grep -qw demo || [ -e /etc/netns/demo ] || [ -e /run/vpn-ns/demo.json ]; then
    echo "demo: FAILED: something was left behind" >&2
    exit 1
fi
echo "namespace demo, /etc/netns/demo and the state are gone"
echo
echo "demo: OK"
