
# Connection names for <CONN> positionals (clap_complete's static script cannot list
# them). Appended by vpn-ns-gen after clap's _vpn__ns and the generated tables above.

# Names of the connection files in DIR (<name>.toml).
_vpn_ns_connections() {
    local f
    for f in "$1"/*.toml; do
        [[ -e $f ]] || continue
        f=${f##*/}
        printf '%s\n' "${f%.toml}"
    done
}

_vpn_ns_complete() {
    local cur=${COMP_WORDS[COMP_CWORD]} path=vpn-ns npos=0 i w skip=0 no_opts=0 after_dd=0
    local dir=${!_vpn_ns_config_dir_env:-/etc/vpn-ns}
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if ((skip)); then
            skip=0
            continue
        fi
        if ((no_opts)); then
            after_dd=$((after_dd + 1))
        else
            case $w in
                --) no_opts=1; continue ;;
                "$_vpn_ns_config_dir_option"=*) dir=${w#*=}; continue ;;
                -*)
                    if [[ $w == "$_vpn_ns_config_dir_option" ]]; then
                        ((i + 1 < COMP_CWORD)) && dir=${COMP_WORDS[i + 1]}
                        skip=1
                    elif [[ " ${_vpn_ns_value_options[$path]} " == *" $w "* ]]; then
                        skip=1
                    fi
                    continue
                    ;;
            esac
        fi
        if ((npos == 0 && !no_opts)) && [[ " ${_vpn_ns_subcommands[$path]} " == *" $w "* ]]; then
            path+=" $w"
            continue
        fi
        npos=$((npos + 1))
    done
    dir=${dir/#\~/$HOME}
    # `exec CONN -- CMD [ARGS...]`: a program name, then its arguments (files).
    if ((no_opts)) && [[ -n ${_vpn_ns_runs_command[$path]} ]]; then
        if ((after_dd == 0)); then
            mapfile -t COMPREPLY < <(compgen -c -- "$cur")
        else
            COMPREPLY=()
        fi
        return 0
    fi
    if [[ $cur != -* && ${_vpn_ns_conn_position[$path]} == "$((npos + 1))" ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$(_vpn_ns_connections "$dir")" -- "$cur")
        return 0
    fi
    _vpn__ns "$@"
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _vpn_ns_complete -o nosort -o bashdefault -o default vpn-ns
else
    complete -F _vpn_ns_complete -o bashdefault -o default vpn-ns
fi
