#!/usr/bin/env bash
# The whole Varta test suite, on a fresh Debian machine with rustup's stable and nightly
# toolchains. Installs what it needs (Debian packages with apt-get, cargo-fuzz with cargo).
# Usage: bash scripts/test.sh            (everything)
#        QUICK=1 bash scripts/test.sh    (host tests only: no firmware, no fuzz smoke)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==== %s ====\n' "$*"; }

need_pkgs=()
for p in rustc-web cargo-web rust-web-src binutils-arm-none-eabi qemu-system-arm iproute2 openssl; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if [ "${QUICK:-0}" != 1 ] && [ ${#need_pkgs[@]} -gt 0 ]; then
    step "installing Debian packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

step "rustfmt"
cargo fmt --all -- --check

step "clippy (-D warnings)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "host tests (workspace, all features)"
cargo test --workspace --all-features

step "host tests (vlp-core, no default features)"
cargo test -p vlp-core --no-default-features

if [ "${QUICK:-0}" = 1 ]; then
    echo "QUICK=1: skipping Cortex-M builds, firmware end-to-end and fuzz smoke"
    exit 0
fi

step "no_std build of vlp-core for thumbv7em-none-eabihf (Debian rustc, -Z build-std)"
RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$root/target/thumb" \
    /usr/bin/cargo build -p vlp-core --target thumbv7em-none-eabihf \
    -Z build-std=core,compiler_builtins -Z build-std-features=compiler-builtins-mem --release

step "fuzz smoke"
bash fuzz/smoke.sh

echo
echo "ALL CHECKS PASSED"
