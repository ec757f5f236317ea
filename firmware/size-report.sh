#!/usr/bin/env bash
# Size and cost report of the firmware (issue 4's budgets), for the release build
# (opt-level "s", fat LTO) on thumbv7em-none-eabihf:
#
#  1. arm-none-eabi-size text/data/bss of every binary;
#  2. what VLP adds over the network-only baseline (udp-probe): vlp-plain (plain frames,
#     budget 2 KB of text) and vlp-secure (master-key AEAD, budget 8 KB of text);
#  3. instruction counts per beat from bench-beat under QEMU -icount shift=0 (sealed beat
#     budget 5,000 instructions) and the sender state's RAM.
#
# Usage: firmware/size-report.sh [--enforce]   (--enforce: exit 1 when a budget is exceeded)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/scripts/toolchain.sh"

ENFORCE=0
[[ "${1:-}" == "--enforce" ]] && ENFORCE=1

fw_ensure_packages
fw_cargo build --release --bins >&2

declare -A TEXT
mapfile -t elfs < <(fw_elfs)
printf '%-16s %8s %8s %8s\n' binary text data bss
for elf in "${elfs[@]}"; do
    # Berkeley format: a header line, then "text data bss dec hex filename".
    read -r text data bss _ < <(arm-none-eabi-size "$elf" | tail -n 1)
    name="$(basename "$elf")"
    TEXT[$name]=$text
    printf '%-16s %8d %8d %8d\n' "$name" "$text" "$data" "$bss"
done

over=0
echo
echo "VLP text over the network-only baseline (udp-probe):"
for pair in "vlp-plain:2048" "vlp-secure:8192"; do
    name="${pair%%:*}" budget="${pair##*:}"
    delta=$((TEXT[$name] - TEXT[udp-probe]))
    verdict=ok
    if ((delta > budget)); then verdict=OVER; over=1; fi
    printf '  %-12s %+7d bytes (budget %d): %s\n' "$name" "$delta" "$budget" "$verdict"
done

echo
bench_rc=0
timeout 120 qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -icount shift=0 \
    -semihosting-config enable=on,target=native -nic none \
    -kernel "$FW_DIR/target/$FW_TARGET/release/bench-beat" 2>/dev/null || bench_rc=$?
((bench_rc == 0)) || over=1

if ((over)); then
    echo "size-report: a budget is exceeded"
    ((ENFORCE == 0)) || exit 1
fi
