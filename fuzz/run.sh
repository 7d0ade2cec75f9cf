#!/usr/bin/env bash
# Short fuzzing run of every target (CI): SECONDS_PER_TARGET (default 20) each, starting
# from the committed seed corpus. New inputs go to a scratch directory, so the committed
# corpus only changes by hand (regression seeds). A crash, panic or timeout fails the run;
# libFuzzer leaves the input in fuzz/artifacts/<target>/.
#
# cargo-fuzz needs nightly-only rustc flags (-Z sanitizer); RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")"
secs=${SECONDS_PER_TARGET:-20}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz missing: installing it (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
cargo fuzz build -O
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in $targets; do
    echo "=== fuzz $t: ${secs} s"
    mkdir -p "$scratch/$t"
    # -timeout: one input taking over 2 s is a finding (the parsers must stay fast).
    if ! cargo fuzz run -O "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=2 -rss_limit_mb=1024 -print_final_stats=1 \
        >"$scratch/$t.log" 2>&1; then
        tail -n 60 "$scratch/$t.log" >&2
        echo "fuzz target $t FAILED; the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$scratch/$t.log" || true
done
echo "fuzz: all targets ran ${secs} s without a finding"
