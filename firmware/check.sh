#!/usr/bin/env bash
# Every firmware check, in the order CI should run them:
#   rustfmt; clippy on the host (library + its tests) and for thumbv7em (library + binaries);
#   the library's unit tests on the host; the QEMU end-to-end cases against varta-watch; the
#   size report with its budgets enforced (issue 4: CI fails when a budget is exceeded).
# Usage: firmware/check.sh [--no-enforce-budgets]   (installs missing Debian packages)
# Env:   CARGO_TARGET_DIR   where the host build of varta-watch goes (default: ../target);
#                           the firmware always builds into firmware/target.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/scripts/toolchain.sh"
cd "$FW_DIR"

step() { printf '\n==== firmware: %s ====\n' "$*"; }
HOST_TARGET="$(rustc -vV | sed -n 's/^host: //p')"

fw_ensure_packages

step "rustfmt"
fw_host_cargo fmt --check

# The host side runs on rustup's toolchain (RUSTC unset so it is not Debian's).
step "clippy, host ($HOST_TARGET): library and unit tests"
fw_host_cargo clippy --lib --tests --target "$HOST_TARGET" -- -D warnings

step "clippy, $FW_TARGET (Debian toolchain): library and binaries"
fw_cargo clippy --release --lib --bins -- -D warnings

step "unit tests, host"
fw_host_cargo test --lib --target "$HOST_TARGET"

step "end-to-end under QEMU, against varta-watch"
"$FW_DIR/run-e2e.sh"

step "size and instruction-count report"
if [[ "${1:-}" == "--no-enforce-budgets" ]]; then
    "$FW_DIR/size-report.sh"
else
    "$FW_DIR/size-report.sh" --enforce
fi
