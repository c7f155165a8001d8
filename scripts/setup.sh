#!/usr/bin/env bash
# Install what building, testing and the default job need on Debian (run as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(libslirp0 iproute2 busybox iperf3 slirp4netns)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
rustup target list --installed | grep -qx x86_64-unknown-freebsd || rustup target add x86_64-unknown-freebsd
