#!/usr/bin/env bash
# Where the time goes: `perf record` of the forwarder (and the frontend's pump) during the
# same tests perf/run.sh measures, one run per cell, summarised as the top symbols and the
# split by library. Root. Writes perf/results/<date>-<host>-profile.md (or --out DIR).
#
# Same rules as perf/run.sh (it uses its libraries): traffic only to 127.0.0.0/8 and ::1 or into
# namespaces this run created, no default route, no DNS, every client under `timeout`, only
# processes this run started are stopped (by pid), its namespaces deleted on exit.
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

USAGE="usage: bash perf/profile.sh [--configs LIST] [--tests LIST] [--mtus LIST] [--idle N]
                              [--secs S] [--no-build] [--out DIR]

  --configs LIST  ours,ours6,uring,cdesign,slirp4netns,slirp4netns6 (default ours,slirp4netns;
                  ours6 and slirp4netns6 are the two over IPv6, see perf/run.sh)
  --tests LIST    tcp_g2h,tcp_h2g,udp64,rr (default all four; udp64 and rr at MTU 1500 only)
  --mtus LIST     1500,65520 (default 1500)
  --idle N        hold N idle connections open during the tests (default 0)
  --secs S        length of each test (default 6; perf records S - 2 seconds inside it)
  --no-build      use the binaries already built
  --syscalls      count the forwarder's system calls by name, as shares of all (perf stat on the
                  tracepoints of the calls a forwarder makes, and all of them together)
                  instead of sampling where time goes
  --out DIR       where the report goes (default perf/results)"

CONFIGS=ours,slirp4netns
TESTS=tcp_g2h,tcp_h2g,udp64,rr
MTUS=1500
IDLE=0
DURATION=6
BUILD=1
OUT=$HERE/results
TOP=12
SYSCALLS=0

while [ $# -gt 0 ]; do
  case $1 in
    --configs) CONFIGS=${2:?}; shift ;;
    --tests) TESTS=${2:?}; shift ;;
    --mtus) MTUS=${2:?}; shift ;;
    --idle) IDLE=${2:?}; shift ;;
    --secs) DURATION=${2:?}; shift ;;
    --no-build) BUILD=0 ;;
    --syscalls) SYSCALLS=1 ;;
    --out) OUT=${2:?}; shift ;;
    -h | --help) echo "$USAGE"; exit 0 ;;
    *) echo "$USAGE" >&2; exit 2 ;;
  esac
  shift
done
[[ $DURATION =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 4 ] && [ "$DURATION" -le 60 ] ||
  die "--secs $DURATION: 4..60"
[[ $IDLE =~ ^[0-9]+$ ]] || die "--idle $IDLE: a number"
[ "$(id -u)" -eq 0 ] || die "run as root: it creates namespaces and tap devices"
command -v perf >/dev/null || die "perf is missing (bash perf/setup.sh installs it)"
WARM=1 HOLD_CONNECT_SECS=100

BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
[ "$BUILD" = 0 ] || (cd "$ROOT" && cargo build --release --workspace --bins --quiet)

# The top symbols (self time) of the one process recorded in DATA, and its split by library.
# (awk, not head, cuts the lists: a closed pipe would end the run under pipefail.)
summarise() {
  local data=$1 what=$2
  if [ ! -s "$data" ]; then
    echo "_no samples for ${what}_"
    echo
    return 0
  fi
  echo "**$what**, by library:"
  echo
  perf report -i "$data" --no-children --sort dso -g none -q 2>/dev/null |
    awk 'NF >= 2 && $1 + 0 >= 0.5 { printf "%s %s; ", $1, $2 } END { print "" }'
  echo
  echo "By system call, with the kernel work done inside it (children %):"
  echo
  perf report -i "$data" --children --sort sym -g none -q 2>/dev/null |
    awk '$NF ~ /^__x64_sys_/ && $1 + 0 >= 1 { sub(/^__x64_sys_/, "", $NF); printf "%s %s; ", $1, $NF }
         END { print "" }'
  echo
  echo "| self % | symbol | library |"
  echo "|---|---|---|"
  perf report -i "$data" --no-children -F overhead,sym,dso -g none -q -t '|' 2>/dev/null |
    awk -v top="$TOP" 'NR <= top' |
    awk -F'|' '{ for (i = 1; i <= 3; i++) gsub(/^ +| +$/, "", $i); sub(/^\[[.k]\] /, "", $2)
                 printf "| %s | `%s` | %s |\n", $1, $2, $3 }'
  echo
}

# counters_line F0 F1 S0 S1 G0 G1 M0 M1 R0 R1: what the helper's SIGUSR1 counters say about the
# recorded window (frames both ways, frontend-socket syscalls, coalescer merges, guest frames);
# nothing for slirp4netns, which has no such counters.
counters_line() {
  local frames sock segs merges rx inputs
  frames=$(calc 'b - a' "$1" "$2")
  # slirp4netns: frames from its tap, no socket, no coalescer.
  [ -n "$frames" ] && [ -n "$3" ] || return 0
  sock=$(calc 'b - a' "$3" "$4") segs=$(calc 'b - a' "${5:-}" "${6:-}")
  merges=$(calc 'b - a' "${7:-}" "${8:-}") rx=$(calc 'b - a' "${9:-}" "${10:-}")
  inputs=$(calc 'a - b + c' "$rx" "$segs" "$merges")
  echo "Helper counters over the recorded window: $frames frames ($rx from the guest), $(calc 'b > 0 ? a / b : ""' "$sock" "$frames") frontend-socket syscalls per frame; coalescer: $merges merged packets of $(calc 'b > 0 ? a / b : ""' "$segs" "$merges") segments on average, $inputs packets handed to libslirp, $(calc 'b > 0 ? a / b : ""' "$inputs" "$rx") per guest frame."
  echo
}

profile_cell() {
  local config=$1 test=$2 mtu=$3 tag port srv cli data status=0
  tag=prof-$config-$test-$mtu
  port=$(free_port "${SERVER_NS[$config]}")
  start_server "$test" "${SERVER_NS[$config]}" "${LISTEN[$config]}" "$port" "$tag" srv
  wait_until 5 listening "${SERVER_NS[$config]}" "$port" || die "$tag: server did not start"
  start_client "$test" "${CLIENT_NS[$config]}" "${DEST[$config]}" "$port" "$tag" cli
  sleep "$WARM"
  data=$WORK/$tag
  if [ "$SYSCALLS" = 1 ]; then
    count_cell "$config" "$test" "$mtu" "$tag" "$data" "$cli" "$srv"
    return 0
  fi
  local rec_fwd rec_pump="" f0 s0 g0 m0 r0 f1 s1 g1 m1 r1
  read -r f0 s0 g0 m0 r0 < <(frames_now "$config") || true
  spawn rec_fwd "" /dev/null /dev/null timeout -k 2 "$((DURATION + 10))" \
    perf record -F 499 -g -p "${FWD_PID[$config]}" -o "$data.fwd" -- sleep "$((DURATION - 2))"
  if [ -n "${PUMP_PID[$config]:-}" ]; then
    spawn rec_pump "" /dev/null /dev/null timeout -k 2 "$((DURATION + 10))" \
      perf record -F 499 -g -p "${PUMP_PID[$config]}" -o "$data.pump" -- sleep "$((DURATION - 2))"
  fi
  reap "$rec_fwd" || true
  [ -z "$rec_pump" ] || reap "$rec_pump" || true
  read -r f1 s1 g1 m1 r1 < <(frames_now "$config") || true
  reap "$cli" || status=$?
  stop_pid "$srv" 2 || true
  local -A r=()
  parse_client "$test" "$WORK/$tag.out" r
  [ "$status" -eq 0 ] || r[error]="${r[error]:-client exit $status}"
  {
    echo "### $config, $test, MTU $mtu, $IDLE idle connections: $(calc 'a' "${r[value]:-}") ${r[unit]:-} ${r[error]:-}"
    echo
    counters_line "$f0" "$f1" "$s0" "$s1" "$g0" "$g1" "$m0" "$m1" "$r0" "$r1"
    summarise "$data.fwd" "forwarder ($config)"
    [ -z "${PUMP_PID[$config]:-}" ] || summarise "$data.pump" "frontend (slirp-frontend, its pump thread)"
  } >>"$REPORT"
  log "  $tag: $(calc 'a' "${r[value]:-}") ${r[unit]:-} ${r[error]:-}"
}

# The forwarder's system calls by name over DURATION - 2 s, as shares of all its calls, most
# frequent first.
count_cell() {
  local config=$1 test=$2 mtu=$3 tag=$4 data=$5 cli=$6 srv=$7 f0 f1 s0 s1 status=0
  read -r f0 s0 < <(frames_now "$config") || true
  # The calls a forwarder makes, by name (all ~350 tracepoints take perf longer to open
  # than a run lasts), and the total: the rest is "other".
  local names=(io_uring_enter poll ppoll epoll_wait epoll_pwait epoll_ctl recvmmsg sendmmsg
    recvfrom sendto recvmsg sendmsg read write readv writev getsockopt setsockopt ioctl close
    accept4 connect socket shutdown) events=raw_syscalls:sys_enter n
  for n in "${names[@]}"; do events+=",syscalls:sys_enter_$n"; done
  timeout -k 2 "$((DURATION + 10))" perf stat -x, -e "$events" \
    -p "${FWD_PID[$config]}" -o "$data.sc" -- sleep "$((DURATION - 2))" >/dev/null 2>&1 || true
  read -r f1 s1 < <(frames_now "$config") || true
  reap "$cli" || status=$?
  stop_pid "$srv" 2 || true
  local -A r=()
  parse_client "$test" "$WORK/$tag.out" r
  [ "$status" -eq 0 ] || r[error]="${r[error]:-client exit $status}"
  local frames
  frames=$(calc 'b - a' "${f0:-}" "${f1:-}")
  {
    echo "### $config, $test, MTU $mtu, $IDLE idle connections: $(calc 'a' "${r[value]:-}") ${r[unit]:-} ${r[error]:-}"
    echo
    echo "$frames frames from just before to just after the window (perf takes a few seconds"
    echo "to open its counters inside it: use the shares with perf/run.sh's syscalls per frame)."
    echo
    echo "| system call | calls | share of all |"
    echo "|---|---|---|"
    awk -F, -v f="${frames:-0}" '$1 ~ /^[0-9]+$/ {
        if ($3 == "raw_syscalls:sys_enter") { t = $1; next }
        n = $3; sub(/^syscalls:sys_enter_/, "", n); named += $1; if ($1 > 0) c[n] = $1 }
      END { for (n in c) printf "%s %d %.3f\n", n, c[n], (t > 0 ? c[n] / t : 0)
            printf "~other %d %.3f\n", t - named, (t > 0 ? (t - named) / t : 0)
            printf "~all %d 1\n", t }' "$data.sc" |
      sort -k2,2nr | awk '{ printf "| %s | %s | %s |\n",
        ($1 == "~all" ? "**all**" : ($1 == "~other" ? "other" : "`" $1 "`")), $2, $3 }'
    echo
  } >>"$REPORT"
  log "  $tag: $(calc 'a' "${r[value]:-}") ${r[unit]:-} ${r[error]:-}"
}

main() {
  trap cleanup EXIT
  trap 'log "interrupted"; exit 130' INT TERM HUP
  DEADLINE=$(($(now) + 60 * 60))
  WORK=$(mktemp -d /tmp/slirp-profile.XXXXXX)
  CSV=$WORK/unused.csv
  mkdir -p "$OUT"
  REPORT=$OUT/$(date +%F)-$(hostname)-profile.md
  [ "$IDLE" -eq 0 ] || REPORT=${REPORT%.md}-idle$IDLE.md
  [ "$SYSCALLS" = 0 ] || REPORT=${REPORT%.md}-syscalls.md
  local commit
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$ROOT" diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
  cat >"$REPORT" <<EOF
# Profiles: $(date +%F) on $(hostname)

\`bash perf/profile.sh --configs $CONFIGS --tests $TESTS --mtus $MTUS --idle $IDLE --secs $DURATION\`
at commit $commit; kernel $(uname -r), $(nproc) CPUs; libslirp0
$(dpkg-query -W -f='${Version}' libslirp0 2>/dev/null || echo ?). \`perf record -F 499 -g\` on the
forwarder and the frontend for $((DURATION - 2)) s inside each ${DURATION} s test (one run per
cell: shares, not rates, are the point). Self time per symbol; kernel symbols are the
syscalls' work (AF_UNIX for the frontend socket, TCP/UDP for the host sockets, epoll, the
scheduler). This VM has no hardware counters, so perf samples on a software clock: a sample
due while interrupts were off lands where they are turned back on, which piles the cost of
wakeups and context switches onto \`finish_task_switch\` and \`_raw_spin_unlock_irqrestore\`.

EOF
  local config mtu test
  local -A held=() hold_pids=()
  for mtu in ${MTUS//,/ }; do
    for config in ${CONFIGS//,/ }; do
      target_start "$config" "$mtu"
      [ "$IDLE" -eq 0 ] || start_hold "$config" "$IDLE" hold_pids held
      for test in ${TESTS//,/ }; do
        wants "$config" "$test" "$mtu" || continue
        profile_cell "$config" "$test" "$mtu"
      done
      [ -n "${hold_pids[$config]:-}" ] && { stop_pid "${hold_pids[$config]}" 5 || true; }
      [ -n "${hold_pids[$config.server]:-}" ] && { stop_pid "${hold_pids[$config.server]}" 5 || true; }
      target_stop "$config"
    done
  done
  log "written: $REPORT"
}

main
