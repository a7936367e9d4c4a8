# Shared by scripts/demo and scripts/test. Sourced, not run.
# Installs the Debian packages a step needs, or says exactly what is missing.

# Building roomboxd (alsa-sys, bundled libopus via cmake, bindgen via clang, the
# bundled echo canceller via autotools, openh264's x86 SIMD assembly via nasm:
# without nasm openh264 builds silently as plain C++ and encodes several times slower).
BUILD_PACKAGES="build-essential pkg-config cmake clang libclang-dev libasound2-dev ca-certificates autoconf automake libtool nasm"
# Running every test: real peers and tools (Chromium as a WebRTC peer, network
# namespaces, promtool for /metrics, an MQTT broker, curl as a real HTTP client,
# ffprobe from ffmpeg for recordings).
TEST_PACKAGES="chromium iproute2 iptables prometheus mosquitto mosquitto-clients curl ffmpeg"

need_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo is not installed. Install Rust (rustup, stable >= 1.95), then run this again." >&2
        exit 1
    fi
}

# ensure_packages PKG... : install the Debian packages that are not installed yet.
ensure_packages() {
    local missing=()
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$p")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: missing packages (${missing[*]}) and no apt-get: install them with your package manager." >&2
        exit 1
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            echo "error: missing Debian packages: ${missing[*]}" >&2
            echo "       run as root: apt-get update && apt-get install -y ${missing[*]}" >&2
            exit 1
        fi
    fi
    echo "==> installing Debian packages: ${missing[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
