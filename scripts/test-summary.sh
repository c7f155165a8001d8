#!/usr/bin/env bash
# The closing lines of scripts/test.sh: what skipped and why, then one line for the whole run,
# `tests: N passed, N failed, N skipped` (a skipped test returned early and libtest counted it
# as passed: it is taken out of the passed count).
# usage: test-summary.sh LOG SKIPS   (LOG: cargo test's output; SKIPS: the tests' skip lines,
# `SKIPPED: <test>: <reason>`, one per line). Exit status 1 when CI=true and anything skipped.
set -euo pipefail
log=$1
skips=$2
awk -v ci="${CI:-}" '
  FILENAME == ARGV[1] { if (/^test result:/) { p += $4; f += $6 }; next }
  /^SKIPPED: / { s++; why[s] = substr($0, 10) }
  END {
    if (s > 0) {
      printf "skipped (%d):\n", s
      for (i = 1; i <= s; i++) printf "  %s\n", why[i]
    }
    bad = s > 0 && ci == "true"
    if (bad) print "CI: tests were skipped; CI runs as root after scripts/setup.sh and must skip nothing"
    printf "tests: %d passed, %d failed, %d skipped\n", p - s, f, s
    exit bad
  }
' "$log" "$skips"
