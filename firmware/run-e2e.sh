#!/usr/bin/env bash
# End-to-end test of the firmware against the real observer: builds the `heartbeat` firmware
# (Debian's toolchain, thumbv7em) and `varta-watch` (the host's cargo, release), then runs
# scripts/e2e.py, which for each case starts varta-watch on 127.0.0.1 with a fresh master key
# (key file mode 0600, --format json, --prom-addr), waits until it is bound, boots the firmware
# on QEMU's mps2-an386 and checks the watch's JSON events and metrics:
#
#   beats      beats received and opened (`new`, Prometheus beat count), clean `goodbye`
#   late-task  a task stops checking in: `status` ok -> degraded, payload 2 (task 1's bit)
#   stall      beats stop, device stays up: one `stall`, reported within threshold + 10 ms
#   panic      panic: the last-gasp terminal frame gives a `crash` with the panic's line
#
# Usage: firmware/run-e2e.sh [CASE...]     (default: all; installs missing Debian packages)
# Env:   VARTA_WATCH=/path/to/varta-watch  use this binary instead of building one
#        CARGO_TARGET_DIR                  where the host build of varta-watch goes
#                                          (default: the repository's target/)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/scripts/toolchain.sh"

fw_ensure_packages
fw_log "e2e: building the firmware (release, $FW_TARGET)"
fw_cargo build --release --bin heartbeat >&2

if [[ -z "${VARTA_WATCH:-}" ]]; then
    fw_log "e2e: building varta-watch (host, release)"
    host_target_dir="${CARGO_TARGET_DIR:-$REPO_DIR/target}"
    (cd "$REPO_DIR" && env -u RUSTC CARGO_TARGET_DIR="$host_target_dir" \
        cargo build --release --quiet -p varta-watch >&2)
    VARTA_WATCH="$host_target_dir/release/varta-watch"
fi

exec python3 "$FW_DIR/scripts/e2e.py" --watch "$VARTA_WATCH" \
    --elf "$FW_TARGET_DIR/$FW_TARGET/release/heartbeat" "$@"
