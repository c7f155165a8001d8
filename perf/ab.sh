#!/usr/bin/env bash
# A/B of two helper binaries behind the same frontend, interleaved repetition by repetition
# (A, B, A, B, ...) so that both see the same machine: did a change move the figures?
#
#   bash perf/ab.sh OLD_HELPER NEW_HELPER [--reps N] [--secs S] [--out FILE.md]
#
# Runs, at MTU 1500 and 65520: iperf3 TCP guest->host and host->guest, and (MTU 1500)
# 1-byte TCP round trips (slirp-loadgen). The guest is slirp-frontend's namespace in open
# mode; its servers listen on the host's 127.0.0.1, reached at 10.0.2.2. Prints (and with
# --out writes) a Markdown table: per cell the median and range of each side and the ratio
# of the medians, NEW / OLD. Root; the frontend and loadgen are the ones built in this tree.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
REPS=5 SECS=4 OUT=
die() { echo "ab.sh: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: bash perf/ab.sh OLD_HELPER NEW_HELPER [--reps N] [--secs S] [--out FILE.md]"
OLD=$(realpath "$1") NEW=$(realpath "$2"); shift 2
while [ $# -gt 0 ]; do
  case $1 in
    --reps) REPS=${2:?--reps N}; shift ;;
    --secs) SECS=${2:?--secs S}; shift ;;
    --out) OUT=${2:?--out FILE}; shift ;;
    *) die "unknown option '$1'" ;;
  esac
  shift
done
[[ $REPS =~ ^[0-9]+$ && $REPS -ge 1 && $REPS -le 20 ]] || die "--reps $REPS: 1..20"
[[ $SECS =~ ^[0-9]+$ && $SECS -ge 2 && $SECS -le 30 ]] || die "--secs $SECS: 2..30"
[ "$(id -u)" -eq 0 ] || die "run as root: the frontend creates a namespace and a tap"
for b in "$OLD" "$NEW" "$BIN/slirp-frontend" "$BIN/slirp-loadgen"; do
  [ -x "$b" ] || die "$b is missing (cargo build --release)"
done
command -v iperf3 >/dev/null && command -v jq >/dev/null || die "needs iperf3 and jq (bash perf/setup.sh)"

PORT_IPERF=5299 PORT_RR=5298
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
iperf3 -s -B 127.0.0.1 -p "$PORT_IPERF" >/dev/null 2>&1 & PIDS+=($!)
"$BIN/slirp-loadgen" rr-server --listen "127.0.0.1:$PORT_RR" --secs 3600 >/dev/null 2>&1 & PIDS+=($!)
sleep 0.5

# One measurement: prints the figure (Gbit/s or round trips/s), or "nan" if the run failed.
measure() {
  local helper=$1 test=$2 mtu=$3 out
  case $test in
    g2h|h2g)
      local dir=(); [ "$test" = h2g ] && dir=(-R)
      out=$(timeout $((SECS + 30)) "$BIN/slirp-frontend" --open --mtu "$mtu" --helper "$helper" -- \
        iperf3 -c 10.0.2.2 -p "$PORT_IPERF" -t "$SECS" "${dir[@]}" -J 2>/dev/null) || true
      echo "$out" | jq -r '(.end.sum_received.bits_per_second // empty) / 1e9' 2>/dev/null | grep . || echo nan ;;
    rr)
      out=$(timeout $((SECS + 30)) "$BIN/slirp-frontend" --open --mtu "$mtu" --helper "$helper" -- \
        "$BIN/slirp-loadgen" rr-client --connect "10.0.2.2:$PORT_RR" --secs "$SECS" 2>/dev/null) || true
      echo "$out" | sed -n 's/.*per_sec=\([0-9.]*\).*/\1/p' | grep . || echo nan ;;
  esac
}

# median and range of the numbers on stdin: "median min max"
stats() { sort -g | awk '{v[NR]=$1} END { if (NR==0) { print "nan nan nan"; exit }
  m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2; print m, v[1], v[NR] }'; }

declare -A RES
CELLS=("g2h 1500" "h2g 1500" "g2h 65520" "h2g 65520" "rr 1500")
for rep in $(seq "$REPS"); do
  for cell in "${CELLS[@]}"; do
    read -r test mtu <<<"$cell"
    for side in old new; do
      helper=$OLD; [ "$side" = new ] && helper=$NEW
      v=$(measure "$helper" "$test" "$mtu")
      RES["$side $test $mtu"]+="$v "
      echo "[$(date +%T)] rep $rep $test mtu=$mtu $side: $v" >&2
    done
  done
done

report() {
  echo "| cell | unit | old: median (min–max) | new: median (min–max) | new / old |"
  echo "|---|---|---|---|---|"
  for cell in "${CELLS[@]}"; do
    read -r test mtu <<<"$cell"
    local unit="Gbit/s"; [ "$test" = rr ] && unit="round trips/s"
    read -r om omin omax < <(tr ' ' '\n' <<<"${RES["old $test $mtu"]}" | grep -v '^$' | grep -v nan | stats)
    read -r nm nmin nmax < <(tr ' ' '\n' <<<"${RES["new $test $mtu"]}" | grep -v '^$' | grep -v nan | stats)
    awk -v t="$test" -v m="$mtu" -v u="$unit" -v om="$om" -v a="$omin" -v b="$omax" \
        -v nm="$nm" -v c="$nmin" -v d="$nmax" 'BEGIN {
      f = (u == "Gbit/s") ? "%.2f" : "%.0f"
      printf "| %s MTU %s | %s | " f " (" f "–" f ") | " f " (" f "–" f ") | %.2f× |\n",
        t, m, u, om, a, b, nm, c, d, (om > 0 ? nm / om : 0) }'
  done
}
table=$(report)
echo "$table"
if [ -n "$OUT" ]; then
  {
    echo "# A/B: $(basename "$OLD") (old) against $(basename "$NEW") (new)"
    echo
    echo "- old: \`$OLD\`; new: \`$NEW\`; $REPS interleaved repetitions of $SECS s per cell"
    echo "  (old, new, old, new, ...), same frontend (\`$BIN/slirp-frontend\`), open mode."
    echo "- Machine: $(nproc) CPUs, $(uname -r); load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "- Commit of this tree: \`$(git -C "$ROOT" rev-parse HEAD)\`."
    echo
    echo "$table"
  } >"$OUT"
  echo "written: $OUT" >&2
fi
