#!/usr/bin/env bash
# Set up, then run the whole test suite: unit tests, the libnv vectors, the helper end to end
# with the real libslirp, and (criterion, test mode) the benchmarks once each. Tests that need
# root (network namespaces, tap) skip with a reason when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --all-targets 2>&1 | tee "$log"
# One closing line for the whole run (the per-binary lines are spread over the output).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
