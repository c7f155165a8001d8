#!/usr/bin/env bash
# Set up, then run the whole test suite of the workspace: unit tests, the libnv vectors, the
# helper end to end with the real libslirp, the kernel-guest tests through slirp-frontend, and
# (criterion, test mode) the benchmarks once each. Tests that cannot run here (not root, a tool
# missing) are reported as skipped, with the reason, not as passed. With CI=true a skip fails
# the run: CI runs as root and must run everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
log=$(mktemp)
skips=$(mktemp)
trap 'rm -f "$log" "$skips"' EXIT
# The e2e tests run slirp-frontend from the target directory: build every binary first.
cargo build --release --workspace --bins
status=0
SLIRP_TEST_SKIPS=$skips cargo test --release --workspace --all-targets 2>&1 | tee "$log" ||
  status=$?
bash scripts/test-summary.sh "$log" "$skips" || status=$?
exit "$status"
