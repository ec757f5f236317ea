#!/usr/bin/env bash
# Our seal/open per frame beside OpenSSL's ChaCha20-Poly1305 on a 32-byte message, measured in
# the same run. Both figures are CPU time per operation (benches/core.rs measures the bench
# thread's CPU time; `openssl speed` divides user time by the count), so a busy machine skews
# them less. Run as root, both get `nice -n -20`.
#
#   vlp-core/benches/compare.sh          # both AEAD backends (the chacha20poly1305 crate, the
#                                        # default; feature fast-aead, the own one) with the
#                                        # build flags in effect (.cargo/config.toml)
#   vlp-core/benches/compare.sh --sweep  # also the crate backend under each chacha20/poly1305
#                                        # backend cfg (RUSTFLAGS replaces the configured flags)
#
# Environment: CARGO_TARGET_DIR (default: target), MEASURE_SECS (criterion measurement time per
# bench, default 3). Installs openssl with apt-get if it is missing.
set -euo pipefail

cd "$(dirname "$0")/../.."
MEASURE_SECS=${MEASURE_SECS:-3}
FILTER='^(envelope/(seal|open)_(shared|master)|wire/emit\+parse|reference/crate_(seal|open))$'
NICE=()
if [ "$(id -u)" = 0 ]; then NICE=(nice -n -20); fi

if ! command -v openssl >/dev/null; then
    apt-get install -y openssl >/dev/null
fi

# Prints "name median_ns" for each criterion bench matching $FILTER, built with RUSTFLAGS=$1
# (or, if $1 is "-", with the configured flags) and the vlp-core features $2.
run_ours() {
    local flags=$1 features=$2
    local out
    local cmd=("${NICE[@]}" cargo bench -q -p vlp-core --features "$features" --bench core --
        --warm-up-time 1 --measurement-time "$MEASURE_SECS" "$FILTER")
    if [ "$flags" = "-" ]; then
        out=$("${cmd[@]}" 2>&1)
    else
        out=$(RUSTFLAGS="$flags" "${cmd[@]}" 2>&1)
    fi
    # criterion: "name  time:   [lo unit mid unit hi unit]", the name alone on the line before
    # when it is long.
    awk '
        /time:/ {
            if ($1 != "time:") name = $1
            for (i = 1; i <= NF; i++) if ($i == "time:") break
            v = $(i + 3); u = $(i + 4)
            f = (u == "ps") ? 0.001 : (u == "ns") ? 1 : (u == "µs" || u == "us") ? 1000 : (u == "ms") ? 1e6 : 1e9
            printf "%s %.1f\n", name, v * f
            next
        }
        NF == 1 && $1 ~ /\// { name = $1 }
    ' <<<"$out"
}

# OpenSSL's per-operation time for one 32-byte AEAD encryption, in ns.
run_openssl() {
    "${NICE[@]}" openssl speed -seconds "$MEASURE_SECS" -evp chacha20-poly1305 -bytes 32 2>&1 |
        awk '/^Doing .* on 32 size blocks/ {
                 for (i = 1; i <= NF; i++) if ($i == "blocks:") n = $(i + 1)
                 s = $NF; sub(/s$/, "", s)
                 printf "%.1f\n", s * 1e9 / n
             }'
}

report() {
    local label=$1 flags=$2 features=${3:-}
    local ours ossl
    ours=$(run_ours "$flags" "$features")
    ossl=$(run_openssl)
    echo "== $label"
    printf '  %-24s %10s\n' "bench" "median ns"
    while read -r name ns; do
        [ -n "$name" ] && printf '  %-24s %10s\n' "$name" "$ns"
    done <<<"$ours"
    printf '  %-24s %10s\n' "openssl chacha20-poly1305 32B (seal)" "$ossl"
}

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load: $(cut -d' ' -f1-3 /proc/loadavg)"
report "crate AEAD backend (default features), configured flags" "-"
report "own AEAD backend (--features fast-aead), configured flags" "-" "fast-aead"
if [ "${1:-}" = "--sweep" ]; then
    # These cfgs change the chacha20poly1305 crate: the default envelope backend and
    # reference/crate_*.
    report "crate defaults (autodetected AVX2 ChaCha20 and Poly1305)" ""
    report "poly1305_force_soft" "--cfg poly1305_force_soft"
    report "poly1305_force_soft + chacha20_force_soft" "--cfg poly1305_force_soft --cfg chacha20_force_soft"
    report "poly1305_force_soft + chacha20_force_sse2" "--cfg poly1305_force_soft --cfg chacha20_force_sse2"
    report "poly1305_force_soft + chacha20_force_avx2 (+avx2)" \
        "--cfg poly1305_force_soft --cfg chacha20_force_avx2 -C target-feature=+avx2"
    report "chacha20_force_soft only" "--cfg chacha20_force_soft"
fi
