#!/usr/bin/env bash
# The test suite: unit tests, libnv vectors, and the helper end to end with the real libslirp.
# Tests that need root (network namespaces, tap) skip with a reason when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --all-targets -- --test-threads=2
