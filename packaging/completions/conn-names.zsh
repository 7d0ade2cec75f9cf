
# Connection names for <CONN> positionals (clap_complete's static script cannot list
# them): vpn-ns-gen points those arguments' action at this function.
(( $+functions[_vpn_ns_connections] )) ||
_vpn_ns_connections() {
    local dir=${VPN_NS_CONFIG_DIR:-/etc/vpn-ns} i
    # The whole command line: _arguments has narrowed $words to the subcommand.
    local -a all
    all=(${(z)BUFFER})
    for (( i = 1; i <= $#all; i++ )); do
        case $all[i] in
            --config-dir=*) dir=${all[i]#--config-dir=} ;;
            --config-dir) dir=${all[i+1]} ;;
        esac
    done
    local -a conns
    conns=(${~dir}/*.toml(N:t:r))
    _describe -t connections connection conns
}
