#!/usr/bin/env bash
# Freeze -> notification latency, direct Alertmanager delivery vs the Prometheus path, in one run
# (min / median / p99 over the freezes). Prints figures; not part of the test suite.
# Usage: bash scripts/ops-bench-alert.sh [--freezes N] [--threshold-ms T] [--daemon-direct]
# Needs Debian's prometheus and prometheus-alertmanager. PROFILE=release for an optimised build.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-debug}
flag=()
[ "$profile" = release ] && flag=(--release)
cargo build -q "${flag[@]}" -p varta-watch --bin varta-watch --example ops_bench_alert
VARTA_WATCH="$(pwd)/target/$profile/varta-watch" exec "target/$profile/examples/ops_bench_alert" "$@"
