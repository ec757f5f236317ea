#!/bin/sh
# Text size and instruction count of varta-client-nostd on thumbv7em-none-eabihf (opt-level "s",
# LTO), with Debian's rustc and -Z build-std (../../../shared/FIRMWARE-TOOLCHAIN.md).
#   text(client) = text(bin) - text(baseline), baseline = the same program without the client.
#   instructions = instructions QEMU executes between probe_mark_start and probe_mark_end
#   (one instruction per translation block with -singlestep, every block logged with -d exec).
set -eu
cd "$(dirname "$0")"
export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/tgt/nostd-probe}"
/usr/bin/cargo build --release --quiet
out="$CARGO_TARGET_DIR/thumbv7em-none-eabihf/release"
base=$(arm-none-eabi-size "$out/baseline" | awk 'NR==2{print $1}')
for b in plain shared master; do
  t=$(arm-none-eabi-size "$out/$b" | awk 'NR==2{print $1}')
  echo "client text, $b frames: $((t - base)) bytes (binary $t, baseline $base)"
done
elf="$out/count"
s=$(arm-none-eabi-nm "$elf" | awk '/ probe_mark_start$/{print $1}')
e=$(arm-none-eabi-nm "$elf" | awk '/ probe_mark_end$/{print $1}')
log=$(mktemp)
timeout 4 qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -singlestep \
  -d exec,nochain -D "$log" -kernel "$elf" >/dev/null 2>&1 || true
python3 - "$log" "$s" "$e" <<'PY'
import re, sys
log, start, end = sys.argv[1], int(sys.argv[2], 16), int(sys.argv[3], 16)
pcs = [int(m.group(1), 16) for m in (re.search(r'\[[0-9a-f]+/([0-9a-f]+)/', l) for l in open(log)) if m]
runs, n, inside = [], 0, False
for pc in pcs:
    if pc == start: inside, n = True, 0
    elif pc == end and inside: runs.append(n - 1); inside = False
    elif inside: n += 1
names = ["master-key sealed beat (steady state)", "plain beat"]
for name, r in zip(names, runs): print(f"instructions, {name}: {r}")
PY
rm -f "$log"
