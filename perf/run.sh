#!/usr/bin/env bash
# End-to-end benchmark of bhyve-slirp-helper against its baselines, in one run (root):
#   ours         our helper behind slirp-frontend (bhyve's role), default backends
#   cdesign      the same binary in the C helper's design: --poller poll --batch 1
#   uring        (optional, not in the default list) the same binary with --poller io_uring
#   slirp4netns  the same libslirp, reading the tap itself (no default route, no DNS)
#   ours6, slirp4netns6  the same two over IPv6 (slirp-frontend --ipv6; slirp4netns
#                --enable-ipv6): the guest's SLAAC address to libslirp's IPv6 host address,
#                which is the host's ::1 (bulk and RR only, next to their IPv4 rows)
#   veth         the ceiling: iperf3 between two namespaces over a veth pair
#   loopback     the ceiling: iperf3 over the host's lo
#   qemu         (optional, not in the default list) perf/qemu.sh: one QEMU guest on ours,
#                cdesign, QEMU's -netdev user and passt; its own STEM-qemu.{csv,md}
# Tests: iperf3 TCP guest→host and host→guest at MTU 1500 and 65520, UDP 64-byte datagrams/s,
# 1-byte TCP RR (rate, p50/p99), and bulk + RR with N idle connections held open.
# Writes perf/results/<date>-<host>.{csv,md}, <stem>-summary.csv (median, min-max, quartiles)
# and PNG plots (perf/plot.sh redraws them from a CSV); a run of a checkout with uncommitted
# changes goes to perf/results/dirty/ (ignored by git). See perf/README.md and
# /work/shared/docs/performance.md (what is measured and why).
#
# Network rule: traffic only to 127.0.0.0/8 and ::1 or into namespaces this run created; those
# get no default route (IPv4 or IPv6); no DNS (slirp4netns --disable-dns); every client runs under `timeout`; every
# loop is bounded; only processes this run started are stopped (by pid); its namespaces (and
# their veths and taps) are deleted on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=perf/lib/common.sh
source "$HERE/lib/common.sh"
# shellcheck source=perf/lib/targets.sh
source "$HERE/lib/targets.sh"
# shellcheck source=perf/lib/measure.sh
source "$HERE/lib/measure.sh"
# shellcheck source=perf/lib/groups.sh
source "$HERE/lib/groups.sh"
# shellcheck source=perf/lib/report.sh
source "$HERE/lib/report.sh"

USAGE="usage: bash perf/run.sh [--quick] [--configs LIST] [--reps N] [--idle LIST] [--no-build]
                          [--no-setup] [--out DIR]

  --quick         1 repetition of 3 s, N up to 1000 idle connections (about QUICK_MIN min;
                  full: about FULL_MIN min, --reps 5 about FULL5_MIN min; plus the build)
  --configs LIST  comma-separated subset of: ours,ours6,cdesign,slirp4netns,slirp4netns6,
                  veth,loopback,pump (default: all of them); ours6 and slirp4netns6 are
                  ours and slirp4netns over IPv6 (bulk and RR); optional, not in the
                  default list: uring (ours with --poller io_uring, measured beside ours)
                  and qemu (perf/qemu.sh after the rest, not in the estimate)
  --reps N        repetitions per cell (default 3; quick 1)
  --idle LIST     comma-separated N of idle connections for the scale groups
                  (default 1000,10000; quick 1000; N = 0 is always measured)
  --no-build      use the binaries already built (target/release or \$CARGO_TARGET_DIR)
  --no-setup      do not run perf/setup.sh (apt-get) first
  --out DIR       where results go (default perf/results)"

MODE=full
DEFAULT_CONFIGS=ours,ours6,cdesign,slirp4netns,slirp4netns6,veth,loopback,pump
CONFIGS=$DEFAULT_CONFIGS
BUILD=1
SETUP=1
OUT=$HERE/results
SKIPPED=()
REPS_ARG=""
IDLE_ARG=""

mode_params() {
  if [ "$1" = quick ]; then
    # One sample per cell: enough to see a collapse, not to rank close numbers.
    REPS=1 DURATION=3 WARM=0.7 WINDOW=1 SCALE_NS="1000" HOLD_CONNECT_SECS=40 PUMP_SECS=2
    BUDGET_SECS=$((8 * 60))
  else
    REPS=3 DURATION=6 WARM=1 WINDOW=4 SCALE_NS="1000 10000" HOLD_CONNECT_SECS=100 PUMP_SECS=3
    BUDGET_SECS=$((38 * 60))
  fi
  PUMP_MTUS="1500 65520"
}

# --help with the estimates of the default matrix filled in from the same model the run logs,
# so the help, perf/README.md and a run's report cannot drift apart.
usage_with_estimates() {
  local quick full full5
  mode_params quick; quick=$(minutes "$(estimate_secs)")
  mode_params full; full=$(minutes "$(estimate_secs)")
  REPS=5; full5=$(minutes "$(estimate_secs)")
  local text=${USAGE/QUICK_MIN/$quick}
  text=${text/FULL_MIN/$full}
  echo "${text/FULL5_MIN/$full5}"
}

parse_args() {
  while [ $# -gt 0 ]; do
    case $1 in
      --quick) MODE=quick ;;
      --configs) CONFIGS=${2:?--configs needs a list}; shift ;;
      --reps) REPS_ARG=${2:?--reps needs a number}; shift ;;
      --idle) IDLE_ARG=${2:?--idle needs a list}; shift ;;
      --no-build) BUILD=0 ;;
      --no-setup) SETUP=0 ;;
      --out) OUT=${2:?--out needs a directory}; shift ;;
      -h | --help) usage_with_estimates; exit 0 ;;
      *) echo "$USAGE" >&2; exit 2 ;;
    esac
    shift
  done
  mode_params "$MODE"
  if [ -n "$REPS_ARG" ]; then
    [[ $REPS_ARG =~ ^[1-9]$ ]] || die "--reps $REPS_ARG: 1..9"
    REPS=$REPS_ARG
  fi
  if [ -n "$IDLE_ARG" ]; then
    [[ $IDLE_ARG =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--idle $IDLE_ARG: a comma-separated list of numbers"
    local n list=() limit
    # Each idle connection is a socket in the loadgen, the helper and the hold-server.
    limit=$(($(ulimit -Hn) - 100))
    for n in ${IDLE_ARG//,/ }; do
      n=$((10#$n))
      [ "$n" -le "$limit" ] || die "--idle: $n is above the fd hard limit ($(ulimit -Hn)) - 100"
      [ "$n" -eq 0 ] || list+=("$n")
    done
    SCALE_NS=${list[*]}
  fi
  # A group needs its targets up and at least one repetition of its cells.
  MIN_GROUP_SECS=$((DURATION * 8 + 40))
}

preflight() {
  [ "$(id -u)" -eq 0 ] || die "run as root: it creates namespaces, veths and tap devices"
  [ "$SETUP" = 0 ] || bash "$HERE/setup.sh"
  local tool
  for tool in ip ss iperf3 slirp4netns prlimit jq gnuplot timeout ping; do
    command -v "$tool" >/dev/null || die "$tool is missing (bash perf/setup.sh installs it)"
  done
  HAVE_PERF=0
  if perf stat -e raw_syscalls:sys_enter -p $$ -o /dev/null -- sleep 0.1 >/dev/null 2>&1; then
    HAVE_PERF=1
  else
    log "perf cannot count raw_syscalls:sys_enter here: syscalls per frame will be empty"
  fi
}

build() {
  local target=${CARGO_TARGET_DIR:-$ROOT/target}
  BIN=$target/release
  if [ "$BUILD" = 1 ]; then
    log "building (release) into $target"
    (cd "$ROOT" && cargo build --release --workspace --bins --quiet)
  fi
  local b
  for b in bhyve-slirp-helper slirp-frontend slirp-loadgen; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing (build with cargo build --release --workspace)"
  done
}

# matrix FUNC: the groups of the run, in order, as FUNC MTU N_IDLE "CONFIGS" "TESTS" (run_group
# to measure, count_group to estimate the time).
matrix() {
  local helpers="ours uring cdesign slirp4netns" n config
  # The IPv6 configs are up in the same groups as the IPv4 ones, each next to its IPv4 twin,
  # so their ratios (issue #11: IPv6 >= 0.9x IPv4) come from interleaved cells of one run.
  local all="ours ours6 uring cdesign slirp4netns slirp4netns6"
  "$1" 1500 0 "$all veth" "tcp_g2h tcp_h2g udp64 rr"
  "$1" 65520 0 "$all veth loopback" "tcp_g2h tcp_h2g udp64 rr"
  # With N connections held, one config at a time: a forwarder still opening or timing out
  # thousands of connections (slirp4netns needs a minute for 10000) is busy, not idle, and
  # would take the CPU from the one being measured on a 2-core machine.
  for n in $SCALE_NS; do
    for config in $helpers; do
      "$1" 1500 "$n" "$config" "tcp_g2h rr"
    done
  done
}

# The run's expected wall time in seconds, from the cells it will measure (see count_group).
estimate_secs() {
  local mtu
  ESTIMATE=0
  case ",$CONFIGS," in
    *,pump,*) for mtu in $PUMP_MTUS; do ESTIMATE=$((ESTIMATE + PUMP_SECS + 5)); done ;;
  esac
  matrix count_group
  echo "$ESTIMATE"
}

# Is the checkout at a commit, with no change to a tracked file? Untracked files (earlier
# results, build output) do not change what runs.
checkout_state() {
  COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
  DIRTY=0
  if [ "$COMMIT" = unknown ] || [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    DIRTY=1
    COMMIT=$COMMIT-dirty
  fi
}

main() {
  parse_args "$@"
  preflight
  build
  trap cleanup EXIT
  trap 'log "interrupted"; exit 130' INT TERM HUP
  DEADLINE=$(($(now) + BUDGET_SECS))
  WORK=$(mktemp -d /tmp/slirp-perf.XXXXXX)
  checkout_state
  # A dirty run is not a result of any commit: it goes where git does not look.
  [ "$DIRTY" = 0 ] || [ "$OUT" != "$HERE/results" ] || OUT=$HERE/results/dirty
  mkdir -p "$OUT"
  local stem started
  stem=$OUT/$(date +%F)-$(hostname)
  [ "$MODE" = full ] || stem=$stem-$MODE
  [ "$DIRTY" = 0 ] || stem=$stem-dirty
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  ESTIMATE_SECS=$(estimate_secs)
  CSV=$WORK/results.csv
  echo "$CSV_COLUMNS" >"$CSV"
  started=$(now)
  log "mode $MODE: $REPS repetition(s) of ${DURATION}s per cell, about $(minutes "$ESTIMATE_SECS") min; commit $COMMIT; logs in $WORK"

  case ",$CONFIGS," in *,pump,*) run_pump_bench ;; esac
  matrix run_group

  cp "$CSV" "$stem.csv"
  write_report "$stem" "$(($(now) - started))"
  case ",$CONFIGS," in
    *,qemu,*)
      log "QEMU section (perf/qemu.sh): $stem-qemu.md"
      bash "$HERE/qemu.sh" --reps "$REPS" --secs "$DURATION" --bin "$BIN" --out "$stem-qemu" \
        || log "the QEMU section failed; the rest of the run stands"
      ;;
  esac
  log "done in $(($(now) - started)) s (estimated $ESTIMATE_SECS s): $stem.md"
}

main "$@"
