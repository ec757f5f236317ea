#!/usr/bin/env bash
# Freeze -> notification latency, direct Alertmanager delivery vs the Prometheus path, in one run
# through the real daemon: a thin wrapper of `varta bench alert` (tools/src/bench/alert.rs).
# Prints figures; not part of the test suite.
# Usage: bash scripts/ops-bench-alert.sh [--samples N] [--threshold-ms T] [--observer-exe PATH]
# Needs Debian's prometheus and prometheus-alertmanager. PROFILE=release for an optimised build.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-debug}
flag=()
[ "$profile" = release ] && flag=(--release)
cargo build -q "${flag[@]}" -p varta-tools --bin varta
exec "target/$profile/varta" bench alert "$@"
