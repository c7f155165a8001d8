#!/usr/bin/env bash
# Set up, then run the whole test suite: unit tests, the libnv vectors, and the helper end to
# end with the real libslirp. Tests that need root (network namespaces, tap) skip with a
# reason when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --release --all-targets
