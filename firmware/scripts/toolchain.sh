# Sourced by the firmware scripts: makes sure Debian's firmware toolchain is installed and
# defines `fw_cargo`, which runs Debian's cargo/rustc 1.96 with -Z build-std (the machines'
# rustup toolchain has no Cortex-M standard library; ../shared/FIRMWARE-TOOLCHAIN.md).

FW_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_DIR="$(cd "$FW_DIR/.." && pwd)"
FW_TARGET=thumbv7em-none-eabihf
# The firmware workspace always builds into its own target dir (a CARGO_TARGET_DIR meant for
# the host workspace does not move it).
FW_TARGET_DIR="$FW_DIR/target"
FW_PACKAGES=(rustc-web cargo-web rust-web-src rust-web-clippy binutils-arm-none-eabi qemu-system-arm python3)

fw_log() { printf '%s\n' "$*" >&2; }

# Installs whichever of FW_PACKAGES is missing (CI machines start bare).
fw_ensure_packages() {
    local missing=() pkg
    for pkg in "${FW_PACKAGES[@]}"; do
        if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]]; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    fw_log "firmware: installing ${missing[*]}"
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || { fw_log "firmware: need root (or sudo) to apt-get install ${missing[*]}"; return 1; }
        sudo=(sudo)
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
}

# cargo for the firmware workspace: Debian's cargo and rustc (1.96), build-std enabled.
# PATH puts /usr/bin first so `cargo clippy` finds Debian's clippy-driver, not rustup's.
fw_cargo() {
    (cd "$FW_DIR" && PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        CARGO_TARGET_DIR="$FW_TARGET_DIR" /usr/bin/cargo "$@")
}

# cargo for the firmware library on the host (rustup's toolchain: unit tests, host clippy).
fw_host_cargo() {
    (cd "$FW_DIR" && env -u RUSTC CARGO_TARGET_DIR="$FW_TARGET_DIR" cargo "$@")
}

# The release ELFs of the workspace's binaries, one path per line.
fw_elfs() {
    fw_cargo metadata --no-deps --format-version 1 |
        python3 -c '
import json, sys
meta = json.load(sys.stdin)
for pkg in meta["packages"]:
    for t in pkg["targets"]:
        if "bin" in t["kind"]:
            print(t["name"])' |
        while read -r name; do
            printf '%s/%s/release/%s\n' "$FW_TARGET_DIR" "$FW_TARGET" "$name"
        done
}
