#!/bin/bash
# The usual shell hook that vpn-ns replaces, as people paste it around `ip netns`:
# the benchmark's reference. OpenVPN-style environment in, namespace out.
set -e
ns=$NS
case "$script_type" in
up)
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link set "$dev" netns "$ns"
    ip -n "$ns" link set "$dev" mtu "$tun_mtu"
    ip -n "$ns" addr add "$ifconfig_local/24" dev "$dev"
    ip -n "$ns" link set "$dev" up
    ip -n "$ns" route add "$route_network_1/24" via "$route_gateway_1" dev "$dev"
    ip -n "$ns" route add default via "$route_vpn_gateway" dev "$dev"
    mkdir -p "/etc/netns/$ns"
    echo "nameserver ${foreign_option_1##* }" > "/etc/netns/$ns/resolv.conf"
    ;;
down)
    ip netns del "$ns"
    rm -rf "/etc/netns/$ns"
    ;;
esac
