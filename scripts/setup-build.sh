#!/usr/bin/env bash
# Installs what building es needs on a fresh Debian machine (run as root):
# a C toolchain and OpenSSL headers for libssh2, and git.
set -euo pipefail
missing=()
for pkg in build-essential pkg-config libssl-dev git; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep 'install ok installed' >/dev/null || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "[setup] installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "[setup] cargo is required (rustup)" >&2; exit 1; }
