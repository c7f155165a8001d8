#!/usr/bin/env bash
# Install what building, testing and the default job need on Debian: libslirp (loaded at run
# time), iproute2 and busybox (namespaces, DHCP client), iperf3 and slirp4netns (throughput
# and the baseline), mandoc (the man page's lint), tcpdump (reads the helper's packet
# captures in the pcap tests), netcat-openbsd (nc -U: the control socket driven as
# slirp4netns's scripts drive it), QEMU and Debian's kernel (tests/qemu.rs boots a virtio-net
# guest whose initramfs is built from busybox and the kernel's modules), and the FreeBSD
# standard library for the cross-target type check.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(libslirp0 iproute2 busybox iperf3 slirp4netns iputils-ping mandoc tcpdump netcat-openbsd
  qemu-system-x86 linux-image-amd64)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}; run as root (sudo) to install them" >&2
    exit 1
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! rustup target list --installed | grep -qx x86_64-unknown-freebsd; then
  rustup target add x86_64-unknown-freebsd
fi
