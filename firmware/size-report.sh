#!/usr/bin/env bash
# Size and cost report of varta-client-nostd and the firmware (issue 4's budgets), for the
# release build (opt-level "s", fat LTO) on thumbv7em-none-eabihf. The one report command
# (it replaces client-nostd/size-probe/measure.sh):
#
#  1. arm-none-eabi-size text/data/bss of every firmware binary;
#  2. the client's text: each size probe (size-plain, size-shared, size-master: an agent
#     beating through a sink transport, no network) less size-baseline (the same frame without
#     the client). Budgets: plain frames 2 KB, AEAD 8 KB;
#  3. static RAM per agent: the size of the `AGENT` static (a GlobalAgent) in the heartbeat
#     firmware, from its symbol table. Budget 256 B;
#  4. instructions per beat: bench-beat under QEMU -icount shift=0 (Agent::try_beat, master
#     key, steady state). Budget 5,000 instructions for a sealed beat;
#  5. for information, what the whole heartbeat firmware adds over the network-only udp-probe.
#
# Usage: firmware/size-report.sh [--enforce]
#   --enforce: exit 1 when a budget is exceeded. A measurement that cannot be made (a probe
#   missing, bench-beat failing its calibration) exits 2 with or without --enforce.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/scripts/toolchain.sh"

ENFORCE=0
[[ "${1:-}" == "--enforce" ]] && ENFORCE=1
REL="$FW_TARGET_DIR/$FW_TARGET/release"

fw_ensure_packages
fw_cargo build --release --bins >&2

broken() { echo "size-report: cannot measure: $*" >&2; exit 2; }

declare -A TEXT
mapfile -t elfs < <(fw_elfs)
printf '%-16s %8s %8s %8s\n' binary text data bss
for elf in "${elfs[@]}"; do
    [[ -f "$elf" ]] || broken "$elf was not built"
    # Berkeley format: a header line, then "text data bss dec hex filename".
    read -r text data bss _ < <(arm-none-eabi-size "$elf" | tail -n 1)
    name="$(basename "$elf")"
    TEXT[$name]=$text
    printf '%-16s %8d %8d %8d\n' "$name" "$text" "$data" "$bss"
done

bench_out="$(timeout 120 qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic \
    -icount shift=0 -semihosting-config enable=on,target=native -nic none \
    -kernel "$REL/bench-beat" 2>/dev/null)" || { echo "$bench_out"; broken "bench-beat failed"; }
echo
echo "$bench_out"
bench() {
    local v
    v="$(sed -n "s/.*\[$1=\([0-9]*\)\].*/\1/p" <<<"$bench_out" | head -n 1)"
    [[ -n "$v" ]] || broken "bench-beat printed no $1"
    echo "$v"
}

agent_ram="$(arm-none-eabi-nm -S -C "$REL/heartbeat" | awk '$4 == "heartbeat::AGENT" { print $2 }')"
[[ -n "$agent_ram" ]] || broken "no heartbeat::AGENT symbol in the heartbeat ELF"
agent_ram=$((16#$agent_ram))

over=0
row() { # row WHAT VALUE BUDGET UNIT
    local verdict=ok
    if (($2 > $3)); then verdict=OVER; over=1; fi
    printf '  %-46s %7d %-6s budget %6d   %s\n' "$1" "$2" "$4" "$3" "$verdict"
}
base=${TEXT[size-baseline]}
echo
echo "Budgets (issue 4; thumbv7em-none-eabihf, opt-level s, LTO):"
row "client text, plain frames" $((TEXT[size-plain] - base)) 2048 bytes
row "client text, AEAD, shared-key datagrams" $((TEXT[size-shared] - base)) 8192 bytes
row "client text, AEAD, master-key datagrams" $((TEXT[size-master] - base)) 8192 bytes
row "static RAM per agent (heartbeat's AGENT)" "$agent_ram" 256 bytes
row "sealed beat (Agent::try_beat, master key)" "$(bench sealed_beat)" 5000 insns
echo
echo "For information:"
printf '  %-46s %+7d bytes of text\n' "heartbeat firmware over udp-probe (network only)" \
    $((TEXT[heartbeat] - TEXT[udp-probe]))
printf '  %-46s %7d insns\n' "plain beat (Agent::try_beat)" "$(bench plain_beat)"
printf '  %-46s %7d bytes (TaskMonitor<2>: %d)\n' "Agent alone on this target" \
    "$(bench agent_ram)" "$(bench tasks2_ram)"

if ((over)); then
    echo "size-report: a budget is exceeded"
    ((ENFORCE == 0)) || exit 1
fi
