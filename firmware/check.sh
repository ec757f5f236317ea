#!/usr/bin/env bash
# Every firmware check, in the order CI should run them:
#   rustfmt; clippy on the host (library + its tests) and for thumbv7em (library + binaries);
#   the library's unit tests on the host; the QEMU end-to-end cases; the size report.
# Usage: firmware/check.sh [--enforce-budgets]   (installs missing Debian packages)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/scripts/toolchain.sh"
cd "$FW_DIR"

step() { printf '\n==== firmware: %s ====\n' "$*"; }
HOST_TARGET="$(rustc -vV | sed -n 's/^host: //p')"

fw_ensure_packages

step "rustfmt"
cargo fmt --check

# The host side runs on rustup's toolchain (RUSTC unset so it is not Debian's).
step "clippy, host ($HOST_TARGET): library and unit tests"
env -u RUSTC cargo clippy --lib --tests --target "$HOST_TARGET" -- -D warnings

step "clippy, $FW_TARGET (Debian toolchain): library and binaries"
fw_cargo clippy --release --lib --bins -- -D warnings

step "unit tests, host"
env -u RUSTC cargo test --lib --target "$HOST_TARGET"

step "end-to-end under QEMU"
"$FW_DIR/run-e2e.sh"

step "size and instruction-count report"
if [[ "${1:-}" == "--enforce-budgets" ]]; then
    "$FW_DIR/size-report.sh" --enforce
else
    "$FW_DIR/size-report.sh"
fi
