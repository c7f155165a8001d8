#!/usr/bin/env bash
# Install what perf/run.sh needs on Debian (root): the libslirp the helper loads, slirp4netns
# (baseline on the same libslirp), iperf3 (bulk and UDP load), iproute2 (namespaces, veths, ss),
# iputils-ping (ARP warm-up), linux-perf (syscall counts: `perf stat -e raw_syscalls:sys_enter`),
# gnuplot-nox (plots), jq (iperf3's JSON), ethtool (veth offloads off for the MTU-1500 ceiling);
# for the optional QEMU section (perf/qemu.sh): qemu-system-x86, linux-image-amd64 (the guest's
# kernel and modules), cpio (its initramfs), python3 (the launcher), passt (a baseline).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(libslirp0 slirp4netns iperf3 iproute2 iputils-ping linux-perf gnuplot-nox jq ethtool
  qemu-system-x86 linux-image-amd64 cpio python3 passt)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "perf/setup.sh: missing Debian packages: ${missing[*]}; run as root to install them" >&2
  exit 1
fi
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
