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

for d in /run/netns /run/vpn-ns /etc/netns; do mount -t tmpfs tmpfs "$d"; done
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
step() { printf '\n== %s\n' "$*"; }

step "certificates (a throwaway CA, server and client)"
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=demo-ca -keyout ca.key -out ca.crt \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
for who in server client; do
    eku=$([ $who = server ] && echo serverAuth || echo clientAuth)
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$who" \
        -keyout $who.key -out $who.csr 2>/dev/null
    printf 'keyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=%s\n' $eku > $who.ext
    openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile $who.ext -out $who.crt 2>/dev/null
done

step "VPN server in namespace srv (198.51.100.2), service 203.0.113.1:8080 behind it"
ip netns add srv
ip link add uplink type veth peer name eth0 netns srv
ip addr add 198.51.100.1/24 dev uplink && ip link set uplink up
ip -n srv addr add 198.51.100.2/24 dev eth0 && ip -n srv link set eth0 up && ip -n srv link set lo up
# No dummy module on every kernel: the service address lives on srv's loopback.
ip -n srv addr add 203.0.113.1/32 dev lo
cat > server.conf <<CONF
dev tun
proto udp
local 198.51.100.2
port 1194
topology subnet
server 100.64.0.0 255.255.255.0
push "route 203.0.113.0 255.255.255.0"
push "dhcp-option DNS 203.0.113.53"
push "dhcp-option DOMAIN vpn.example"
ca $work/ca.crt
cert $work/server.crt
key $work/server.key
dh none
disable-dco
keepalive 2 10
verb 3
CONF
ip netns exec srv openvpn --config server.conf --log "$work/server.log" --daemon
ip netns exec srv socat TCP-LISTEN:8080,bind=203.0.113.1,fork,reuseaddr \
    SYSTEM:'echo hello from behind the VPN' &

step "connection file demo.toml (the demo keeps it in a temp dir; normally /etc/vpn-ns/demo.toml)"
mkdir -p "$work/conf"
printf 'type = "openvpn"\nnetns-name = "demo"\n' | tee "$work/conf/demo.toml"

step "OpenVPN client, wired to vpn-ns"
cat > client.conf <<CONF
client
dev tun
proto udp
remote 198.51.100.2 1194
nobind
remote-cert-tls server
ca $work/ca.crt
cert $work/client.crt
key $work/client.key
disable-dco
ifconfig-noexec
route-noexec
script-security 2
up   "$VPN_NS --config-dir $work/conf hook openvpn demo"
down "$VPN_NS --config-dir $work/conf hook openvpn demo"
verb 3
CONF
openvpn --config client.conf --log "$work/client.log" &
client_pid=$!
for _ in $(seq 100); do
    grep -q "Initialization Sequence Completed" "$work/client.log" 2>/dev/null && break
    sleep 0.1
done
grep -q "Initialization Sequence Completed" "$work/client.log" || { cat "$work/client.log"; exit 1; }
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
