#!/usr/bin/env bash
# Builds every firmware binary (release: opt-level "s", LTO) for thumbv7em-none-eabihf and
# prints arm-none-eabi-size's text/data/bss for each.
#
# Usage: firmware/size-report.sh        (installs missing Debian packages; needs root for that)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/scripts/toolchain.sh"

fw_ensure_packages
fw_cargo build --release --bins >&2

mapfile -t elfs < <(fw_elfs)
printf '%-24s %8s %8s %8s\n' binary text data bss
for elf in "${elfs[@]}"; do
    # Berkeley format: a header line, then "text data bss dec hex filename".
    read -r text data bss _ < <(arm-none-eabi-size "$elf" | tail -n 1)
    printf '%-24s %8d %8d %8d\n' "$(basename "$elf")" "$text" "$data" "$bss"
done
