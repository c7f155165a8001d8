#!/usr/bin/env bash
# A/B of two helper binaries behind the same frontend, interleaved repetition by repetition
# (A, B, A, B, ...) so that both see the same machine: did a change move the figures?
#
#   bash perf/ab.sh OLD_HELPER NEW_HELPER [--reps N] [--secs S] [--ipv6] [--out FILE.md]
#
# Runs, at MTU 1500 and 65520: iperf3 TCP guest->host and host->guest, and (MTU 1500)
# 1-byte TCP round trips (slirp-loadgen). The guest is slirp-frontend's namespace in open
# mode; its servers listen on the host's 127.0.0.1, reached at 10.0.2.2. Prints (and with
# --out writes) a Markdown table: per cell the median and range of each side and the ratio
# of the medians, NEW / OLD, and the helper's peak RSS (/usr/bin/time's maximum resident set)
# per cell. Root; the frontend and loadgen are the ones built in this tree.
# --ipv6: every run with `slirp-frontend --ipv6` (the helper's ipv6=on), and the iperf3 cells
# also over IPv6 (g2h6, h2g6): an iperf3 server on ::1, reached at fec0::2 from the guest's
# SLAAC address.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
REPS=5 SECS=4 OUT= IPV6=
die() { echo "ab.sh: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: bash perf/ab.sh OLD_HELPER NEW_HELPER [--reps N] [--secs S] [--out FILE.md]"
OLD=$(realpath "$1") NEW=$(realpath "$2"); shift 2
while [ $# -gt 0 ]; do
  case $1 in
    --reps) REPS=${2:?--reps N}; shift ;;
    --secs) SECS=${2:?--secs S}; shift ;;
    --out) OUT=${2:?--out FILE}; shift ;;
    --ipv6) IPV6=1; shift; continue ;;
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

PORT_IPERF=5299 PORT_RR=5298 PORT_IPERF6=5297
FRONT=(); [ -n "$IPV6" ] && FRONT=(--ipv6)
PIDS=()
# Each helper runs under /usr/bin/time, which writes its peak RSS (KiB) when it exits.
TMPD=$(mktemp -d)
for side in old new; do
  helper=$OLD; [ "$side" = new ] && helper=$NEW
  printf '#!/bin/sh\nexec /usr/bin/time -o %s/rss -f %%M %s "$@"\n' "$TMPD" "$helper" >"$TMPD/$side.sh"
  chmod +x "$TMPD/$side.sh"
done
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMPD"; }
trap cleanup EXIT
iperf3 -s -B 127.0.0.1 -p "$PORT_IPERF" >/dev/null 2>&1 & PIDS+=($!)
"$BIN/slirp-loadgen" rr-server --listen "127.0.0.1:$PORT_RR" --secs 3600 >/dev/null 2>&1 & PIDS+=($!)
[ -n "$IPV6" ] && { iperf3 -s -B ::1 -p "$PORT_IPERF6" >/dev/null 2>&1 & PIDS+=($!); }
sleep 0.5
# Waits (bounded) for the guest's SLAAC address to leave "tentative", then runs iperf3 -6.
WAIT6='for i in $(seq 40); do ip -6 addr show dev tap0 scope global | grep inet6 | grep -qv tentative && break; sleep 0.25; done; exec "$@"'

# One measurement: prints the figure (Gbit/s or round trips/s), or "nan" if the run failed.
measure() {
  local helper=$1 test=$2 mtu=$3 out
  case $test in
    g2h|h2g)
      local dir=(); [ "$test" = h2g ] && dir=(-R)
      out=$(timeout $((SECS + 30)) "$BIN/slirp-frontend" "${FRONT[@]}" --open --mtu "$mtu" --helper "$helper" -- \
        iperf3 -c 10.0.2.2 -p "$PORT_IPERF" -t "$SECS" "${dir[@]}" -J 2>/dev/null) || true
      echo "$out" | jq -r '(.end.sum_received.bits_per_second // empty) / 1e9' 2>/dev/null | grep . || echo nan ;;
    g2h6|h2g6)
      local dir=(); [ "$test" = h2g6 ] && dir=(-R)
      out=$(timeout $((SECS + 40)) "$BIN/slirp-frontend" "${FRONT[@]}" --open --mtu "$mtu" --helper "$helper" -- \
        sh -c "$WAIT6" sh iperf3 -6 -c fec0::2 -p "$PORT_IPERF6" -t "$SECS" "${dir[@]}" -J 2>/dev/null) || true
      echo "$out" | jq -r '(.end.sum_received.bits_per_second // empty) / 1e9' 2>/dev/null | grep . || echo nan ;;
    rr)
      out=$(timeout $((SECS + 30)) "$BIN/slirp-frontend" "${FRONT[@]}" --open --mtu "$mtu" --helper "$helper" -- \
        "$BIN/slirp-loadgen" rr-client --connect "10.0.2.2:$PORT_RR" --secs "$SECS" 2>/dev/null) || true
      echo "$out" | sed -n 's/.*per_sec=\([0-9.]*\).*/\1/p' | grep . || echo nan ;;
  esac
}

# median and range of the numbers on stdin: "median min max"
stats() { sort -g | awk '{v[NR]=$1} END { if (NR==0) { print "nan nan nan"; exit }
  m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2; print m, v[1], v[NR] }'; }

declare -A RES RSS
CELLS=("g2h 1500" "h2g 1500" "g2h 65520" "h2g 65520" "rr 1500")
[ -n "$IPV6" ] && CELLS=("g2h 1500" "h2g 1500" "g2h6 1500" "h2g6 1500" "g2h 65520" "h2g 65520"
  "g2h6 65520" "h2g6 65520" "rr 1500")
for rep in $(seq "$REPS"); do
  for cell in "${CELLS[@]}"; do
    read -r test mtu <<<"$cell"
    for side in old new; do
      rm -f "$TMPD/rss"
      v=$(measure "$TMPD/$side.sh" "$test" "$mtu")
      RES["$side $test $mtu"]+="$v "
      r=$(tail -n 1 "$TMPD/rss" 2>/dev/null | grep -E '^[0-9]+$' || echo nan)
      RSS["$side $test $mtu"]+="$r "
      echo "[$(date +%T)] rep $rep $test mtu=$mtu $side: $v (peak RSS $r KiB)" >&2
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
rss_report() {
  echo "| cell | old peak RSS, MiB: median (min–max) | new peak RSS, MiB: median (min–max) |"
  echo "|---|---|---|"
  for cell in "${CELLS[@]}"; do
    read -r test mtu <<<"$cell"
    read -r om omin omax < <(tr ' ' '\n' <<<"${RSS["old $test $mtu"]}" | grep -v '^$' | grep -v nan | stats)
    read -r nm nmin nmax < <(tr ' ' '\n' <<<"${RSS["new $test $mtu"]}" | grep -v '^$' | grep -v nan | stats)
    awk -v t="$test" -v m="$mtu" -v om="$om" -v a="$omin" -v b="$omax" \
        -v nm="$nm" -v c="$nmin" -v d="$nmax" 'BEGIN {
      printf "| %s MTU %s | %.1f (%.1f–%.1f) | %.1f (%.1f–%.1f) |\n",
        t, m, om / 1024, a / 1024, b / 1024, nm / 1024, c / 1024, d / 1024 }'
  done
}
table=$(report)
rsstable=$(rss_report)
echo "$table"
echo
echo "$rsstable"
if [ -n "$OUT" ]; then
  {
    echo "# A/B: $(basename "$OLD") (old) against $(basename "$NEW") (new)"
    echo
    echo "- old: \`$OLD\`; new: \`$NEW\`; $REPS interleaved repetitions of $SECS s per cell"
    echo "  (old, new, old, new, ...), same frontend (\`$BIN/slirp-frontend\`), open mode${IPV6:+, \`--ipv6\` (g2h6/h2g6: iperf3 -6 to fec0::2, a server on ::1)}."
    echo "- Machine: $(nproc) CPUs, $(uname -r); load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "- Commit of this tree: \`$(git -C "$ROOT" rev-parse HEAD)\`."
    echo
    echo "$table"
    echo
    echo "Peak RSS of the helper per run (VmHWM, from /usr/bin/time):"
    echo
    echo "$rsstable"
  } >"$OUT"
  echo "written: $OUT" >&2
fi
