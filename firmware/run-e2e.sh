#!/usr/bin/env bash
# End-to-end test of the firmware: build it, boot it on QEMU's mps2-an386 with user-mode
# networking, and check that the UDP datagrams it sends to 10.0.2.2:PORT arrive at a listener
# on the host's 127.0.0.1:PORT.
#
# Usage: firmware/run-e2e.sh            (installs missing Debian packages; needs root for that)
# Env:   E2E_COUNT (datagrams, default 5), E2E_TIMEOUT (seconds for QEMU, default 30)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/scripts/toolchain.sh"

COUNT="${E2E_COUNT:-5}"
TIMEOUT="${E2E_TIMEOUT:-30}"

fw_ensure_packages
fw_log "e2e: building firmware (release)"
fw_cargo build --release --bin udp-probe >&2
ELF="$FW_DIR/target/$FW_TARGET/release/udp-probe"

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

# The host side, bound before QEMU starts (the guest transmits within milliseconds). It takes
# an ephemeral port, writes it to a file, and exits 0 once it has every expected datagram
# ("varta-probe I/COUNT" for I in 1..=COUNT, each once), 1 on a stray, a duplicate or a timeout.
# (To be replaced by the varta-watch observer once VLP frames are sent.)
python3 - "$WORK/port" "$COUNT" "$((TIMEOUT + 5))" >"$WORK/listener.log" 2>&1 <<'PY' &
import socket, sys, time
port_file, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
expected = {f"varta-probe {i}/{count}".encode() for i in range(1, count + 1)}
seen = set()
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
with open(port_file + ".tmp", "w") as f:
    f.write(str(sock.getsockname()[1]))
import os; os.rename(port_file + ".tmp", port_file)
deadline = time.monotonic() + timeout
while seen != expected:
    left = deadline - time.monotonic()
    if left <= 0:
        print(f"listener: timeout with {len(seen)}/{count} datagrams")
        sys.exit(1)
    sock.settimeout(left)
    try:
        data, peer = sock.recvfrom(2048)
    except socket.timeout:
        continue
    print(f"listener: {len(data)} bytes from {peer[0]}:{peer[1]}: {data!r}")
    if data not in expected or data in seen:
        print("listener: unexpected or duplicate datagram")
        sys.exit(1)
    seen.add(data)
print(f"listener: all {count} datagrams arrived")
PY
LISTENER_PID=$!

for _ in $(seq 100); do
    [[ -s "$WORK/port" ]] && break
    kill -0 "$LISTENER_PID" 2>/dev/null || { cat "$WORK/listener.log" >&2; exit 1; }
    sleep 0.05
done
[[ -s "$WORK/port" ]] || { fw_log "e2e: listener did not start"; exit 1; }
PORT="$(cat "$WORK/port")"

fw_log "e2e: booting udp-probe on mps2-an386, sending $COUNT datagrams to 127.0.0.1:$PORT"
qemu_rc=0
timeout "$TIMEOUT" qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic \
    -semihosting-config "enable=on,target=native,arg=udp-probe,arg=port=$PORT,arg=count=$COUNT" \
    -nic user -kernel "$ELF" || qemu_rc=$?

listener_rc=0
wait "$LISTENER_PID" || listener_rc=$?
LISTENER_PID=""
cat "$WORK/listener.log"

if ((qemu_rc != 0)); then
    fw_log "e2e: FAIL: firmware exited with status $qemu_rc (124 = QEMU timed out)"
    exit 1
fi
if ((listener_rc != 0)); then
    fw_log "e2e: FAIL: the host listener did not get every datagram"
    exit 1
fi
echo "e2e: udp-probe: $COUNT/$COUNT datagrams arrived on 127.0.0.1:$PORT"
