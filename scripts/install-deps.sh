#!/usr/bin/env bash
# Installs what camstream needs to build, run and test on Debian/Ubuntu,
# skipping what is already there:
#   - GStreamer: the libraries and headers the Rust bindings link against,
#     and the plugins camstream's pipelines use (base, good, bad, ugly,
#     libav, and -x for the clock/text overlays);
#   - libjpeg-turbo's TurboJPEG library and headers (camstream's own JPEG
#     decoder links against it; at run time only libturbojpeg0 is needed);
#   - with --test: also gst-rtsp-server (the tests' in-process RTSP server),
#     chromium (the web page is tested in headless Chromium), prometheus
#     (for `promtool check metrics`, which checks /metrics, and `promtool
#     check config`), python3-venv (scripts/validate-k8s.sh installs its
#     Kubernetes checkers from PyPI into a virtualenv), and for HTTPS: curl
#     (a real HTTP/2 client), libnss3-tools (certutil, to make Chromium
#     trust a test CA) and nginx (the shipped reverse-proxy configuration
#     is tested with it);
#   - a Rust toolchain through rustup if cargo is missing.
set -euo pipefail

packages=(
  pkg-config
  libgstreamer1.0-dev
  libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
  gstreamer1.0-x
  gstreamer1.0-tools
  # TLS for rtsps:// and https:// sources (libsoup pulls it in too).
  glib-networking
  libturbojpeg0-dev
)
for arg in "$@"; do
  case "$arg" in
    --test) packages+=(libgstrtspserver-1.0-dev chromium prometheus python3-venv curl libnss3-tools nginx) ;;
    *) echo "usage: $0 [--test]" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "run as root or install sudo" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  # The prometheus package is installed for promtool only; on a host with
  # systemd it also enables a Prometheus server, which the tests do not
  # want running.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  # Likewise nginx: the tests start their own on loopback.
  if [[ " ${missing[*]} " == *" nginx "* ]] && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
fi

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  echo "Installing a Rust toolchain with rustup (https://rustup.rs)"
  command -v curl >/dev/null || { $sudo apt-get install -y -q curl ca-certificates; }
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95
fi
