#!/usr/bin/env bash
# Run every fuzz target of midge-codec for N seconds each (default 30).
#
#   crates/codec/fuzz/smoke.sh [SECONDS]
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass the nightly-only
# sanitizer flags. Installs cargo-fuzz if it is missing. The corpus grows in corpus/<target>
# (ignored by git), seeded from seeds/<target> (golden packets, in git). A crash leaves its
# input in artifacts/<target>/ and makes this script fail.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target"
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    echo "fuzzing $target for ${secs}s"
    cargo fuzz run "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1
done
