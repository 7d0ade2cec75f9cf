
# Connection names for <CONN> positionals (clap_complete's static script cannot list
# them). Appended by vpn-ns-gen after clap's completions; the `complete` lines that use
# these functions are generated from src/cli.rs below.

# Names of the connection files (<name>.toml) in --config-dir, $VPN_NS_CONFIG_DIR or
# /etc/vpn-ns.
function __vpn_ns_connections
    set -l dir /etc/vpn-ns
    set -q VPN_NS_CONFIG_DIR; and set dir $VPN_NS_CONFIG_DIR
    set -l tokens (commandline -opc)
    for i in (seq (count $tokens))
        switch $tokens[$i]
            case '--config-dir=*'
                set dir (string replace -- '--config-dir=' '' $tokens[$i])
            case --config-dir
                set -l next (math $i + 1)
                set -q tokens[$next]; and set dir $tokens[$next]
        end
    end
    for f in $dir/*.toml
        string replace -r -- '^.*/(.*)\.toml$' '$1' $f
    end
end

# __vpn_ns_conn_wanted 'SUB WORDS' N VALUE-OPTIONS...: true when the word being completed
# is the Nth positional of that subcommand (options, and the values of VALUE-OPTIONS,
# do not count).
function __vpn_ns_conn_wanted
    set -l path (string split -n ' ' -- $argv[1])
    set -l want $argv[2]
    set -l valopts $argv[3..-1]
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l depth 0
    set -l npos 0
    set -l skip 0
    for t in $tokens
        if test $skip = 1
            set skip 0
            continue
        end
        switch $t
            case --
                return 1
            case '-*'
                contains -- $t $valopts; and set skip 1
                continue
        end
        if test $npos = 0; and test $depth -lt (count $path)
            set depth (math $depth + 1)
            test "$t" = "$path[$depth]"; or return 1
            continue
        end
        set npos (math $npos + 1)
    end
    test $depth = (count $path); and test (math $npos + 1) = $want
end
