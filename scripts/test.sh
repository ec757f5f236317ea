#!/usr/bin/env bash
# The whole Varta test suite, on a fresh Debian machine with rustup's stable and nightly
# toolchains. Installs what it needs (Debian packages with apt-get, cargo-fuzz with cargo).
# Usage: bash scripts/test.sh            (everything)
#        QUICK=1 bash scripts/test.sh    (host tests only: no firmware, no fuzz smoke)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==== %s ====\n' "$*"; }

# Every `cargo test` run is also appended here, for the closing tally.
testlog=$(mktemp)
trap 'rm -f "$testlog"' EXIT
ctest() { cargo test "$@" 2>&1 | tee -a "$testlog"; }
tally() {
    awk '/^test result:/ { p += $4; f += $6 } END { printf "cargo tests: %d passed, %d failed\n", p, f }' "$testlog"
}

need_pkgs=()
for p in rustc-web cargo-web rust-web-src binutils-arm-none-eabi qemu-system-arm iproute2 openssl; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if [ "${QUICK:-0}" = 1 ]; then need_pkgs=(); fi
# The operations stack and the browser are needed by the host tests themselves
# (watch/tests/ops_*.rs start a real Alertmanager and Prometheus, watch/tests/policy_status_page.rs
# loads the status page in headless Chromium), so they are installed even with QUICK=1.
for p in prometheus prometheus-alertmanager chromium; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    step "installing Debian packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

step "rustfmt"
cargo fmt --all -- --check

step "clippy (-D warnings)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "rustdoc (-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --quiet
RUSTDOCFLAGS="-D warnings" cargo doc -p vlp-core --no-deps --quiet

step "host tests (workspace, all features)"
ctest --workspace --all-features

step "deploy/: systemd-analyze verify, promtool check/test rules, amtool, dashboard"
# The debug varta-watch built by the host tests above is the binary the units are verified with.
bash scripts/ops-check.sh "$root/target/debug/varta-watch"

# --all-features turns on vlp-core's `fast-aead`; these runs cover the default backend (the
# chacha20poly1305 crate) and the client's narrower feature sets.
step "vlp-core with its default AEAD backend (chacha20poly1305 crate), and no features at all"
ctest -p vlp-core --features std
ctest -p vlp-core --no-default-features --lib

step "varta-client feature combinations"
cargo clippy -p varta-client --no-default-features -- -D warnings
cargo clippy -p varta-client --no-default-features --features panic-handler -- -D warnings
ctest -p varta-client --no-default-features

if [ "${QUICK:-0}" = 1 ]; then
    echo "QUICK=1: skipping Cortex-M builds, firmware end-to-end and fuzz smoke"
    tally
    exit 0
fi

step "no_std builds for thumbv7em-none-eabihf (Debian rustc, -Z build-std)"
thumb() {
    RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$root/target/thumb" \
        /usr/bin/cargo build --target thumbv7em-none-eabihf --release \
        -Z build-std=core,compiler_builtins -Z build-std-features=compiler-builtins-mem "$@"
}
thumb -p vlp-core
thumb -p vlp-core --features fast-aead,defmt
# Every firmware-side feature (std and testing are host-only).
thumb -p varta-client-nostd --features embedded-nal,embedded-nal-async,smoltcp,embassy-net,defmt,fast-aead

step "firmware: QEMU mps2-an386 end-to-end against varta-watch, sizes and budgets"
# The debug varta-watch built by the host tests above is the observer the firmware talks to.
VARTA_WATCH="$root/target/debug/varta-watch" bash firmware/check.sh

step "fuzz smoke"
bash fuzz/smoke.sh

echo
echo "ALL CHECKS PASSED"
tally
