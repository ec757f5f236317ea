#!/usr/bin/env bash
# Fuzz smoke test for CI: runs every cargo-fuzz target of vlp-core for a bounded time and fails
# on the first crash (the input is left in fuzz/artifacts/<target>/).
#
#   fuzz/smoke.sh [seconds per target]      (default 20, or $FUZZ_SECS)
#
# Needs the nightly toolchain (installed on these machines; cargo-fuzz's sanitizer flags are
# nightly-only) and installs cargo-fuzz if it is missing. Seeds: fuzz/seeds/<target> (the
# published vectors), added to the working corpus fuzz/corpus/<target> (git-ignored).
set -euo pipefail

cd "$(dirname "$0")/.."
SECS=${1:-${FUZZ_SECS:-20}}

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in decode open open_batch replay tracker worker_open audit_log state state_file keyfile kdf config cmsg; do
    mkdir -p "fuzz/seeds/$target"
    echo "== fuzz/$target for ${SECS}s"
    mkdir -p "fuzz/corpus/$target"
    status=0
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$SECS" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        tail -n 80 "$log"
        echo "fuzz/$target FAILED (exit $status)"
        exit 1
    fi
    grep -E 'DONE|stat::number_of_executed_units|stat::peak_rss_mb' "$log" || true
done
echo "fuzz smoke: all targets ran ${SECS}s each without a failure"
