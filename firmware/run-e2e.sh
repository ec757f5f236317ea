#!/usr/bin/env bash
# End-to-end test of the firmware: build it, boot each binary on QEMU's mps2-an386 with
# user-mode networking, and check that what it sends to 10.0.2.2:PORT arrives, well-formed, at
# a listener on the host's 127.0.0.1:PORT (scripts/listener.py, until varta-watch takes over).
#
#   udp-probe  text datagrams: the network path alone (LAN9118 + smoltcp + QEMU's slirp)
#   vlp-plain  VLP v0.2 plain frames from vlp-core's sender session, checked field by field
#   vlp-silent vlp-plain told to stop after COUNT beats and stay up, silent, for 1.5 s: exactly
#              COUNT frames, then nothing, then a clean exit (the device side of a stall)
#   vlp-secure VLP v0.2 master-key datagrams, opened on the host with an independent
#              ChaCha20-Poly1305 / HKDF-SHA256 (python3-cryptography) and checked likewise
#
# Usage: firmware/run-e2e.sh [CASE...]   (default: all; installs missing Debian packages)
# Env:   E2E_COUNT (datagrams per case, default 5), E2E_TIMEOUT (seconds per QEMU run, default 30)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/scripts/toolchain.sh"

COUNT="${E2E_COUNT:-5}"
TIMEOUT="${E2E_TIMEOUT:-30}"
CASES=("$@")
((${#CASES[@]})) || CASES=(udp-probe vlp-plain vlp-silent vlp-secure)
# The device id the vlp cases are told to use (any value but 0 and 1).
PID=305419896
# A master key for this run, and the per-boot entropy the board would take from its TRNG
# (QEMU's MPS2 has none): both fresh per run.
KEY="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
SALT="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

fw_ensure_packages
fw_log "e2e: building firmware (release)"
fw_cargo build --release --bins >&2

WORK="$(mktemp -d)"
LISTENER_PID=""
cleanup() {
    if [[ -n "$LISTENER_PID" ]]; then
        kill "$LISTENER_PID" 2>/dev/null || true
        wait "$LISTENER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# LISTEN_EXTRA: extra listener options for the next case.
LISTEN_EXTRA=()

# run_case NAME BIN KIND [EXTRA_QEMU_ARG...]: listener first (the guest transmits within
# milliseconds of boot), then QEMU; both must succeed.
run_case() {
    local name="$1" bin="$2" kind="$3"
    shift 3
    local elf="$FW_DIR/target/$FW_TARGET/release/$bin"
    rm -f "$WORK/port"
    python3 "$FW_DIR/scripts/listener.py" "$WORK/port" "$kind" "$COUNT" --pid "$PID" \
        --key "$KEY" --salt "$SALT" --timeout "$((TIMEOUT + 5))" "${LISTEN_EXTRA[@]}" \
        >"$WORK/listener.log" 2>&1 &
    LISTENER_PID=$!
    for _ in $(seq 100); do
        [[ -s "$WORK/port" ]] && break
        kill -0 "$LISTENER_PID" 2>/dev/null || break
        sleep 0.05
    done
    if [[ ! -s "$WORK/port" ]]; then
        cat "$WORK/listener.log" >&2
        fw_log "e2e: FAIL: $name: listener did not start"
        return 1
    fi
    local port semihosting
    port="$(cat "$WORK/port")"
    semihosting="enable=on,target=native,arg=$bin,arg=port=$port,arg=count=$COUNT"
    for a in "$@"; do semihosting+=",arg=$a"; done

    fw_log "e2e: $name: booting $bin on mps2-an386, $COUNT datagrams to 127.0.0.1:$port"
    local qemu_rc=0 listener_rc=0
    timeout "$TIMEOUT" qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic \
        -semihosting-config "$semihosting" -nic user -kernel "$elf" || qemu_rc=$?
    wait "$LISTENER_PID" || listener_rc=$?
    LISTENER_PID=""
    cat "$WORK/listener.log"
    if ((qemu_rc != 0)); then
        fw_log "e2e: FAIL: $name: firmware exited with status $qemu_rc (124: QEMU timed out)"
        return 1
    fi
    if ((listener_rc != 0)); then
        fw_log "e2e: FAIL: $name: the host listener rejected or missed datagrams"
        return 1
    fi
    echo "e2e: PASS: $name: $COUNT/$COUNT datagrams arrived and passed"
}

passed=0
failed=0
for c in "${CASES[@]}"; do
    case "$c" in
        udp-probe) run_case udp-probe udp-probe text && passed=$((passed + 1)) || failed=$((failed + 1)) ;;
        vlp-plain) run_case vlp-plain vlp-plain vlp-plain "pid=$PID" && passed=$((passed + 1)) || failed=$((failed + 1)) ;;
        vlp-silent)
            LISTEN_EXTRA=(--silence 1.2)
            run_case vlp-silent vlp-plain vlp-plain "pid=$PID" linger_ms=1500 &&
                passed=$((passed + 1)) || failed=$((failed + 1))
            LISTEN_EXTRA=()
            ;;
        vlp-secure)
            run_case vlp-secure vlp-secure vlp-master "pid=$PID" "key=$KEY" "salt=$SALT" &&
                passed=$((passed + 1)) || failed=$((failed + 1))
            ;;
        *) fw_log "e2e: unknown case $c"; failed=$((failed + 1)) ;;
    esac
done
echo "e2e: $passed passed, $failed failed"
((failed == 0))
