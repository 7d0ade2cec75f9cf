# Shared by scripts/demo-openvpn.sh and bench/run.sh (sourced, not run): a throwaway
# OpenVPN 2.6 lab inside the caller's private namespaces. $LAB is its directory.
#   lab_pki                   CA, server and client certificates (EC P-256)
#   lab_server                namespace srv (198.51.100.2 via veth uplink), OpenVPN server,
#                             203.0.113.1 on srv's lo as the address behind the VPN
#   lab_client CONN CONFDIR   an OpenVPN client wired to vpn-ns (background; $LAB_CLIENT_PID)
#   lab_wait_connected N      until the client log shows N "Initialization Sequence Completed"

lab_pki() {
    (
        cd "$LAB"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj /CN=lab-ca -keyout ca.key -out ca.crt \
            -addext basicConstraints=critical,CA:TRUE \
            -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
        for who in server client; do
            eku=$([ $who = server ] && echo serverAuth || echo clientAuth)
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$who" \
                -keyout $who.key -out $who.csr 2>/dev/null
            printf 'keyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=%s\n' \
                $eku > $who.ext
            openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
                -extfile $who.ext -out $who.crt 2>/dev/null
        done
    )
}

lab_server() {
    ip netns add srv
    ip link add uplink type veth peer name eth0 netns srv
    ip addr add 198.51.100.1/24 dev uplink && ip link set uplink up
    ip -n srv addr add 198.51.100.2/24 dev eth0 && ip -n srv link set eth0 up
    ip -n srv link set lo up
    # No dummy module on every kernel: the service address lives on srv's loopback.
    ip -n srv addr add 203.0.113.1/32 dev lo
    cat > "$LAB/server.conf" <<CONF
dev tun
proto udp
local 198.51.100.2
port 1194
topology subnet
server 100.64.0.0 255.255.255.0
push "route 203.0.113.0 255.255.255.0"
push "dhcp-option DNS 203.0.113.53"
push "dhcp-option DOMAIN vpn.example"
ca $LAB/ca.crt
cert $LAB/server.crt
key $LAB/server.key
dh none
disable-dco
keepalive 2 10
verb 3
CONF
    ip netns exec srv openvpn --config "$LAB/server.conf" --log "$LAB/server.log" --daemon
}

lab_client() {
    local conn=$1 confdir=$2
    cat > "$LAB/client-$conn.conf" <<CONF
client
dev tun
proto udp
remote 198.51.100.2 1194
nobind
remote-cert-tls server
ca $LAB/ca.crt
cert $LAB/client.crt
key $LAB/client.key
disable-dco
ifconfig-noexec
route-noexec
script-security 2
up   "$VPN_NS --config-dir $confdir hook openvpn $conn"
down "$VPN_NS --config-dir $confdir hook openvpn $conn"
verb 3
CONF
    # A log left by an earlier run of this connection would satisfy lab_wait_connected
    # before the new OpenVPN has even started.
    rm -f "$LAB/client-$conn.log"
    openvpn --config "$LAB/client-$conn.conf" --log "$LAB/client-$conn.log" &
    LAB_CLIENT_PID=$!
    LAB_CLIENT_LOG=$LAB/client-$conn.log
}

lab_wait_connected() {
    local n=${1:-1} c
    for _ in $(seq 150); do
        c=$(grep -c "Initialization Sequence Completed" "$LAB_CLIENT_LOG" 2>/dev/null || true)
        [ "${c:-0}" -ge "$n" ] && return 0
        sleep 0.1
    done
    cat "$LAB_CLIENT_LOG" >&2
    return 1
}
