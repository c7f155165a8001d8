#!/usr/bin/env bash
# Set up, build, and run the default job (root): a Linux kernel guest in a fresh network
# namespace behind a tap device, networked through bhyve-slirp-helper exactly as bhyve would
# spawn it. It takes a DHCP lease, pings 10.0.2.2, reaches a service on the host's 127.0.0.1,
# forwards a host port into the guest, runs a short iperf3 both ways and prints a summary.
# The namespace gets no default route; everything stays on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bins
exec target/release/slirp-frontend "$@"
