#!/bin/bash
# Builds the .deb, installs it with dpkg, and checks the installed package as a user
# meets it: the real-OpenVPN end-to-end test against /usr/bin/vpn-ns, man pages,
# bash completion (subcommands and connection names), the systemd units and examples
# (systemd-analyze verify), the sudoers and polkit files; then removes the package and
# checks that only its conffile is left, and that purging removes that too.
# Runs as root (CI does); installs the few tools it needs when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n---- test-deb: %s\n' "$*"; }
fail() { echo "test-deb: FAILED: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i, namespaces)"

# The package checked here must be the one this script built.
if dpkg -s vpn-ns >/dev/null 2>&1; then
    step "purging a vpn-ns package left from before"
    dpkg -P vpn-ns
fi

scratch=$(mktemp -d /tmp/vpn-ns-test-deb.XXXXXX)
probe=/etc/vpn-ns/vpnns-ci-probe.toml
zsh_session=vpnns-ci-zsh-$$
cleanup() {
    tmux kill-session -t "$zsh_session" 2>/dev/null || true
    rm -rf "$scratch"
    rm -f "$probe"
    if dpkg -s vpn-ns >/dev/null 2>&1; then dpkg -P vpn-ns >/dev/null || true; fi
}
trap cleanup EXIT

step "tools"
need=()
command -v man >/dev/null || need+=(man-db)
command -v groff >/dev/null || need+=(groff-base)
command -v systemd-analyze >/dev/null || need+=(systemd)
[ -f /usr/share/bash-completion/bash_completion ] || need+=(bash-completion)
command -v visudo >/dev/null || need+=(sudo)
command -v xmllint >/dev/null || need+=(libxml2-utils)
command -v fish >/dev/null || need+=(fish)
command -v zsh >/dev/null || need+=(zsh)
command -v tmux >/dev/null || need+=(tmux)
if [ "${#need[@]}" -gt 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! cargo deb --version >/dev/null 2>&1; then
    echo "installing cargo-deb (from source, a few minutes)"
    cargo install cargo-deb --locked
fi
cargo deb --version
systemd-analyze --version | head -n 1

step "build the package"
# A throwaway build: its Maintainer says so (build-deb.sh refuses placeholders).
deb=$(VPN_NS_DEB_TEST_BUILD=1 packaging/build-deb.sh)
[ -f "$deb" ] || fail "build-deb.sh gave no .deb ($deb)"
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p'
dpkg-deb --field "$deb" Maintainer | grep -q 'test build' || fail "the test build's Maintainer does not say it is one"
copyright=$(dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./usr/share/doc/vpn-ns/copyright)
grep -q '^License: MIT or Apache-2.0$' <<<"$copyright" || fail "copyright lacks vpn-ns's own licence"
grep -q '^Files: vendored-crate/tokio-' <<<"$copyright" || fail "copyright does not list the linked crates"

step "dpkg -i $deb"
dpkg -i "$deb"
dpkg-query -W -f='${Package} ${Version} ${Status}\n' vpn-ns
mapfile -t files < <(dpkg -L vpn-ns)
mapfile -t conffiles < <(dpkg-query -W -f='${Conffiles}\n' vpn-ns | awk 'NF {print $1}')
[ "${conffiles[*]}" = /etc/vpn-ns/README ] || fail "conffiles are '${conffiles[*]}', expected /etc/vpn-ns/README"
for f in /usr/bin/vpn-ns /usr/lib/systemd/system/vpn-ns@.service /usr/lib/systemd/user/vpn-ns@.service \
         /usr/share/bash-completion/completions/vpn-ns /usr/share/zsh/vendor-completions/_vpn-ns \
         /usr/share/fish/vendor_completions.d/vpn-ns.fish /usr/share/polkit-1/actions/org.vpn-ns.exec.policy \
         /usr/share/doc/vpn-ns/examples/sudoers.d/vpn-ns /usr/share/doc/vpn-ns/examples/work.toml \
         /usr/share/doc/vpn-ns/examples/systemd/confine-service.conf \
         /usr/share/doc/vpn-ns/examples/systemd/openvpn-client@.service.d/vpn-ns.conf; do
    [ -e "$f" ] || fail "$f not installed"
done
[ ! -e /usr/bin/vpn-ns-gen ] || fail "the build-time generator was shipped"
/usr/bin/vpn-ns --version

step "end to end: real OpenVPN against the installed /usr/bin/vpn-ns"
VPN_NS_BIN=/usr/bin/vpn-ns cargo test --locked --test openvpn -- --test-threads=2

step "man pages: vpn-ns and one per subcommand render"
# The subcommands as the installed binary lists them (clap's help), so a page missing
# for a new subcommand fails here.
mapfile -t subs < <(/usr/bin/vpn-ns --help | sed -n '/^Commands:/,/^$/p' | awk 'NR > 1 && NF && $1 != "help" {print $1}')
[ "${#subs[@]}" -gt 0 ] || fail "vpn-ns --help lists no subcommand"
pages=(vpn-ns)
for s in "${subs[@]}"; do pages+=("vpn-ns-$s"); done
# Every generated page, nested ones (vpn-ns-hook-openvpn) included.
for p in /usr/share/man/man1/vpn-ns*.1.gz; do
    p=${p##*/}; p=${p%.1.gz}
    [[ " ${pages[*]} " == *" $p "* ]] || pages+=("$p")
done
for p in "${pages[@]}"; do
    # man finds the installed page by name...
    path=$(man -w "$p") || fail "man -w $p: no page"
    [ "$path" = "/usr/share/man/man1/$p.1.gz" ] || fail "man $p resolves to $path, not the package's page"
    # ...and renders it; from the file itself, since man-db may serve a formatted copy
    # cached from an earlier install (/var/cache/man) that is newer than the package's.
    out=$(MANWIDTH=80 man --warnings -l -P cat "$path" 2>"$scratch/man.err") || fail "man $p: $(cat "$scratch/man.err")"
    [ ! -s "$scratch/man.err" ] || fail "man $p warns: $(cat "$scratch/man.err")"
    grep -q '^NAME' <<<"$out" || fail "man $p has no NAME section"
    grep -q "^ *$p " <<<"$out" || fail "man $p does not name $p"
    echo "man $p: $(wc -l <<<"$out") lines"
done
# The pages the issue names, by name as a user types them.
for p in vpn-ns vpn-ns-exec; do
    if [[ " ${pages[*]} " == *" $p "* ]]; then
        MANWIDTH=80 man -P cat "$p" | grep -q -- "^NAME" || fail "man $p"
    fi
done

step "bash completion (loaded on demand by bash-completion)"
mkdir -p "$scratch/conf" "$scratch/config"
touch "$scratch/conf/office.toml" "$scratch/conf/lab.toml" "$scratch/conf/notes.txt"
touch "$probe"
# complete WORD... : the candidates bash offers for the last word.
cat >"$scratch/complete.bash" <<'EOS'
source /usr/share/bash-completion/bash_completion
__load_completion vpn-ns || { echo "bash-completion found no completion for vpn-ns" >&2; exit 3; }
complete_words() {
    COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
    local spec fn
    spec=$(complete -p vpn-ns) || exit 4
    fn=${spec#*-F }; fn=${fn%% *}
    "$fn" vpn-ns "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
    printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' '
}
EOS
tab() { bash --norc --noprofile -c 'source "$1"; shift; complete_words "$@"' complete "$scratch/complete.bash" "$@"; }
got=$(tab vpn-ns "")
for s in "${subs[@]}"; do
    [[ " $got " == *" $s "* ]] || fail "'vpn-ns <TAB>' lacks $s: $got"
done
echo "vpn-ns <TAB>: $got"
# Connection names wherever a subcommand takes <CONN> first (exec, up, ..., hook openvpn).
conn_cmds=()
for s in "${subs[@]}"; do
    if /usr/bin/vpn-ns "$s" --help 2>/dev/null | grep -Eq "^Usage: vpn-ns $s (\[OPTIONS\] )?<CONN>"; then conn_cmds+=("$s"); fi
done
if /usr/bin/vpn-ns hook openvpn --help >/dev/null 2>&1; then conn_cmds+=("hook openvpn"); fi
[ "${#conn_cmds[@]}" -gt 0 ] || fail "no subcommand takes <CONN>: nothing to complete"
for c in "${conn_cmds[@]}"; do
    # shellcheck disable=SC2086 # split "hook openvpn" into words
    got=$(VPN_NS_CONFIG_DIR="$scratch/conf" tab vpn-ns $c "")
    [ "$got" = "lab office " ] || fail "'vpn-ns $c <TAB>' with VPN_NS_CONFIG_DIR gave '$got', expected 'lab office'"
    # shellcheck disable=SC2086
    got=$(unset VPN_NS_CONFIG_DIR; tab vpn-ns $c "")
    [[ " $got " == *" vpnns-ci-probe "* ]] || fail "'vpn-ns $c <TAB>' does not list /etc/vpn-ns: '$got'"
    echo "vpn-ns $c <TAB>: connections ok"
done

step "fish completion (autoloaded from vendor_completions.d)"
# A scratch HOME: no user config, the vendor directory as installed.
fishtab() { HOME="$scratch" XDG_CONFIG_HOME="$scratch/config" fish -c "complete -C '$*'" | cut -f1 | sort | tr '\n' ' '; }
got=$(fishtab "vpn-ns ")
for s in "${subs[@]}"; do
    [[ " $got " == *" $s "* ]] || fail "fish: 'vpn-ns <TAB>' lacks $s: $got"
done
for c in "${conn_cmds[@]}"; do
    got=$(VPN_NS_CONFIG_DIR="$scratch/conf" fishtab "vpn-ns $c ")
    [ "$got" = "lab office " ] || fail "fish: 'vpn-ns $c <TAB>' gave '$got', expected 'lab office'"
    got=$(unset VPN_NS_CONFIG_DIR; fishtab "vpn-ns $c ")
    [[ " $got " == *" vpnns-ci-probe "* ]] || fail "fish: 'vpn-ns $c <TAB>' does not list /etc/vpn-ns: '$got'"
done
echo "fish: subcommands and connections ok"

step "zsh completion (compinit, /usr/share/zsh/vendor-completions, typed in tmux)"
# zsh completes only inside its line editor, so a real interactive zsh gets the keys.
tmux new-session -d -s "$zsh_session" -x 200 -y 50 \
    "env -i HOME=$scratch TERM=xterm PATH=/usr/bin:/bin VPN_NS_CONFIG_DIR=$scratch/conf zsh -f"
# wait_pane REGEX: the screen shows REGEX within 10 s.
wait_pane() {
    local _
    for _ in $(seq 100); do
        tmux capture-pane -t "$zsh_session" -p | grep -Eq "$1" && return 0
        sleep 0.1
    done
    tmux capture-pane -t "$zsh_session" -p >&2
    return 1
}
tmux send-keys -t "$zsh_session" 'autoload -Uz compinit && compinit -u && PS1="zsh-ready> "' Enter
wait_pane '^zsh-ready>' || fail "zsh did not start"
tmux send-keys -t "$zsh_session" 'vpn-ns exec ' Tab
wait_pane '^lab +office *$' || fail "zsh: 'vpn-ns exec <TAB>' did not list lab and office"
# A cleared screen, so that only this completion's listing can match.
tmux send-keys -t "$zsh_session" C-u C-l
wait_pane '^zsh-ready> *$' || fail "zsh did not clear the screen"
tmux send-keys -t "$zsh_session" 'vpn-ns ' Tab
wait_pane '(^| )exec( |$)' || fail "zsh: 'vpn-ns <TAB>' did not list the subcommands"
tmux kill-session -t "$zsh_session"
echo "zsh: subcommands and connections ok"
rm -f "$probe"

step "systemd-analyze verify"
verify() {
    # Any complaint about a unit of ours (not only a non-zero exit) fails the check.
    if ! SYSTEMD_UNIT_PATH="$scratch/units:" systemd-analyze verify "$@" >"$scratch/verify.out" 2>&1 \
        || grep -E 'vpn-ns|vpnns-ci|openvpn-client' "$scratch/verify.out"; then
        cat "$scratch/verify.out" >&2
        return 1
    fi
}
mkdir -p "$scratch/units/openvpn-client@work.service.d" "$scratch/units/vpnns-ci-confined.service.d"
verify vpn-ns@work.service || fail "vpn-ns@.service"
echo "vpn-ns@work.service: ok"
# The user unit, as a user's service manager loads it (it needs a runtime directory).
mkdir -p -m 0700 "$scratch/user-run"
XDG_RUNTIME_DIR="$scratch/user-run" verify --user vpn-ns@home.service || fail "the user vpn-ns@.service"
echo "user vpn-ns@home.service: ok"
if [ -f /usr/lib/systemd/system/openvpn-client@.service ] || [ -f /lib/systemd/system/openvpn-client@.service ]; then
    cp /usr/share/doc/vpn-ns/examples/systemd/openvpn-client@.service.d/vpn-ns.conf \
       "$scratch/units/openvpn-client@work.service.d/"
    verify openvpn-client@work.service || fail "the openvpn-client@ drop-in"
    echo "openvpn-client@work.service + drop-in: ok"
else
    fail "openvpn-client@.service not installed (package openvpn): cannot check the drop-in"
fi
printf '[Unit]\nDescription=vpn-ns CI confined service\n[Service]\nExecStart=/bin/true\n' \
    >"$scratch/units/vpnns-ci-confined.service"
cp /usr/share/doc/vpn-ns/examples/systemd/confine-service.conf "$scratch/units/vpnns-ci-confined.service.d/"
verify vpnns-ci-confined.service || fail "confine-service.conf"
echo "service confined by confine-service.conf: ok"
# vpn-ns@.service's readiness loop, run as systemd would (%i and $$ expanded): a
# connection that never comes up fails it after its rounds, one without a namespace
# passes at once. (Reaching up is the exec tests' business.)
post=$(sed -n 's/^ExecStartPost=//p' /usr/lib/systemd/system/vpn-ns@.service)
[ -n "$post" ] || fail "vpn-ns@.service has no ExecStartPost="
mkdir -p "$scratch/ready"
printf 'type = "openvpn"\nnetns-timeout = 100\n' >"$scratch/ready/never.toml"
printf 'type = "openvpn"\nnetns-isolate = false\n' >"$scratch/ready/flat.toml"
ready() { eval "$(printf '%s' "$post" | sed "s/%i/$1/g; s/\\\$\\\$/\$/g")"; }
if (VPN_NS_CONFIG_DIR="$scratch/ready" ready never) 2>"$scratch/ready.err"; then
    fail "the readiness loop passed for a connection that is not up"
fi
grep -q 'vpn-ns@never: not up' "$scratch/ready.err" || fail "readiness loop: $(tail -n 1 "$scratch/ready.err")"
(VPN_NS_CONFIG_DIR="$scratch/ready" ready flat) || fail "the readiness loop failed for netns-isolate = false"
echo "vpn-ns@.service readiness loop: ok"
# The check can fail: a broken unit must be rejected.
printf '[Service]\nExecStart=/nonexistent/vpn-ns up x\n' >"$scratch/units/vpnns-ci-broken.service"
if verify vpnns-ci-broken.service 2>/dev/null; then fail "systemd-analyze verify accepted a broken unit"; fi
echo "a broken unit is rejected: ok"

step "sudoers example and polkit policy"
visudo -c -f /usr/share/doc/vpn-ns/examples/sudoers.d/vpn-ns
xmllint --noout /usr/share/polkit-1/actions/org.vpn-ns.exec.policy
grep -q '<annotate key="org.freedesktop.policykit.exec.path">/usr/bin/vpn-ns</annotate>' \
    /usr/share/polkit-1/actions/org.vpn-ns.exec.policy || fail "polkit exec.path annotation"
echo "ok"

step "dpkg -r: only the conffile stays"
dpkg -r vpn-ns
[ "$(dpkg-query -W -f='${Status}' vpn-ns)" = "deinstall ok config-files" ] || fail "status after dpkg -r"
for f in "${files[@]}"; do
    [ -d "$f" ] && continue
    if [[ " ${conffiles[*]} " == *" $f "* ]]; then
        [ -e "$f" ] || fail "conffile $f removed by dpkg -r (only purge may)"
    else
        [ ! -e "$f" ] || fail "$f left after dpkg -r"
    fi
done
[ ! -e /usr/share/doc/vpn-ns ] || fail "/usr/share/doc/vpn-ns left after dpkg -r"
echo "${#files[@]} paths checked"

step "dpkg -P: nothing left"
dpkg -P vpn-ns
if dpkg -s vpn-ns >/dev/null 2>&1; then fail "vpn-ns still known to dpkg after purge"; fi
for f in "${files[@]}"; do
    [ -d "$f" ] && continue
    [ ! -e "$f" ] || fail "$f left after dpkg -P"
done
[ ! -e /etc/vpn-ns ] || [ -n "$(ls -A /etc/vpn-ns)" ] || fail "empty /etc/vpn-ns left after purge"
echo "test-deb: OK (built, installed, tested, removed, purged)"
