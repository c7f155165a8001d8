#!/usr/bin/env bash
# Redraw the plots of one run from its CSV, without running anything:
#   bash perf/plot.sh perf/results/2026-11-27-vm.csv
# writes <stem>-summary.csv (median, min, max, quartiles of every cell) and <stem>-{throughput,
# cpu,scale}.png next to the CSV. The commit, date, machine and number of runs printed on the
# images come from the run's report (<stem>.md) when it is there.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=perf/lib/common.sh
source "$HERE/lib/common.sh"
# shellcheck source=perf/lib/report.sh
source "$HERE/lib/report.sh"

USAGE="usage: bash perf/plot.sh RESULTS.csv   (a CSV written by perf/run.sh)"

main() {
  [ $# -eq 1 ] || { echo "$USAGE" >&2; exit 2; }
  case $1 in -h | --help) echo "$USAGE"; exit 0 ;; esac
  local csv=$1 stem md commit date reps machine
  [ -f "$csv" ] || die "$csv: no such file"
  head -1 "$csv" | grep -q '^config,test,mtu,n_idle,rep,' ||
    die "$csv: line 1 is not the header of a perf/run.sh CSV (config,test,mtu,n_idle,rep,...)"
  command -v gnuplot >/dev/null || die "gnuplot is missing (bash perf/setup.sh installs it)"
  stem=${csv%.csv}
  md=$stem.md
  commit=unknown date=$(basename "$stem" | grep -o '^[0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\}' || echo "?")
  machine=unknown
  # The runs per cell: the most repetitions any cell has (the CSV's rep column).
  reps=$(awk -F, 'NR > 1 && $5 > r { r = $5 } END { print r + 0 }' "$csv")
  if [ -f "$md" ]; then
    # "- Commit: `HASH`" (current reports) or "helper at commit HASH" (before it).
    # shellcheck disable=SC2016 # the backquotes are Markdown, not an expansion
    commit=$(sed -n 's/^- Commit: `\([^`]*\)`.*/\1/p; s/.*helper at commit \([0-9a-f]*\)\( (with uncommitted changes)\)\{0,1\}\..*/\1\2/p' "$md" | head -1)
    commit=${commit/ (with uncommitted changes)/-dirty}
    machine="$(sed -n 's/^# End-to-end benchmark: .* on \(.*\)$/\1/p' "$md" | head -1): $(sed -n 's/^- Machine: \([^;]*\);.*/\1/p' "$md" | head -1)"
  fi
  medians "$csv" >"$stem.medians.tmp"
  { echo "$SUMMARY_COLUMNS"; cat "$stem.medians.tmp"; } >"$stem-summary.csv"
  plot_all "$stem" "$stem.medians.tmp" "$(plot_label "${commit:-unknown}" "$date" "$reps" "$machine")"
  rm -f "$stem.medians.tmp"
  log "wrote $stem-summary.csv and $stem-{throughput,cpu,scale}.png"
}

main "$@"
