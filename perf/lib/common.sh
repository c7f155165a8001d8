# shellcheck shell=bash
# Shared by perf/run.sh: logging, the time budget, the processes and namespaces this run
# started (stopped by pid and deleted by name, never anything else), bounded waits, /proc.
#
# Every process is started from the main shell (never inside $(...) or a pipeline), so it is a
# direct child: `ours` can check that before signalling, which guards against pid reuse.

STARTED=()     # pids of background processes this run started
NAMESPACES=()  # network namespaces this run created
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# calc EXPR A [B [C [D]]]: decimal arithmetic (bash has integers only) on operands named a, b,
# c, d in EXPR. Prints nothing when an operand is empty or the result is empty, so a missing
# measurement stays an empty CSV cell instead of becoming 0. Guard divisions in EXPR.
calc() {
  local expr=$1 names=(a b c d) args=() i=0 v
  shift
  for v in "$@"; do
    [ -n "$v" ] || return 0
    args+=(-v "${names[i]}=$v")
    i=$((i + 1))
  done
  awk "${args[@]}" "BEGIN { x = $expr; if (x != \"\") printf \"%.6g\", x }" || true
}

# Seconds since the epoch, and what is left of the run's time budget.
now() { date +%s; }
budget_left() { echo $((DEADLINE - $(now))); }

# Is pid $1 a live direct child of this shell?
ours() {
  local stat
  [ -n "$1" ] || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  # Fields after the parenthesised command name (which may contain spaces): state ppid ...
  stat=${stat##*) }
  set -- $stat
  [ "$1" != Z ] && [ "$2" = "$$" ]
}

# spawn VAR NS OUT ERR CMD...: start CMD in the background inside namespace NS ("" = the
# host), stdout to OUT and stderr to ERR; its pid goes to VAR and to STARTED. `ip netns exec`
# execs CMD, so the pid is CMD's (or its `timeout` wrapper's).
spawn() {
  local -n _spawned=$1
  local ns=$2 out=$3 err=$4
  shift 4
  if [ -n "$ns" ]; then
    ip netns exec "$ns" "$@" >"$out" 2>"$err" </dev/null &
  else
    "$@" >"$out" 2>"$err" </dev/null &
  fi
  _spawned=$!
  STARTED+=("$_spawned")
}

# in_ns NS CMD...: run CMD in the foreground inside namespace NS ("" = the host).
in_ns() {
  local ns=$1
  shift
  if [ -n "$ns" ]; then ip netns exec "$ns" "$@"; else "$@"; fi
}

forget_pid() {
  local p kept=()
  for p in "${STARTED[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
  STARTED=("${kept[@]}")
}

# stop_pid PID [GRACE]: SIGTERM (only if it is still our child), SIGKILL after GRACE seconds
# (default 5), then reap it. Returns the process's exit status (from `wait`).
stop_pid() {
  local pid=$1 grace=${2:-5} i status=0
  if ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
      ours "$pid" || break
      sleep 0.1
    done
    if ours "$pid"; then
      log "pid $pid did not stop in ${grace}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || status=$?
  forget_pid "$pid"
  return "$status"
}

# reap PID: wait for a process that ends by itself (its `timeout` bounds it).
reap() {
  local status=0
  wait "$1" 2>/dev/null || status=$?
  forget_pid "$1"
  return "$status"
}

ns_create() {
  ip netns add "$1"
  NAMESPACES+=("$1")
  ip -n "$1" link set lo up
}

ns_delete() {
  local n kept=()
  ip netns delete "$1" 2>/dev/null || log "could not delete namespace $1"
  for n in "${NAMESPACES[@]}"; do [ "$n" = "$1" ] || kept+=("$n"); done
  NAMESPACES=("${kept[@]}")
}

# On any exit: stop what is still running (newest first), then delete the namespaces (which
# takes their veths and any tap a dead process left behind with them).
cleanup() {
  local i
  trap - EXIT INT TERM HUP
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    stop_pid "${STARTED[i]}" 3 || true
  done
  for i in "${NAMESPACES[@]}"; do ns_delete "$i"; done
}

# wait_until SECS CMD...: poll CMD every 0.1 s until it succeeds; fail after SECS seconds.
wait_until() {
  local limit=$1 i
  shift
  for ((i = 0; i < limit * 10; i++)); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

# Is something listening on TCP port $2 in namespace $1?
listening() { [ -n "$(in_ns "$1" ss -Hltn "sport = :$2")" ]; }

# A TCP port with no socket on it in namespace $1 (random, bounded search).
free_port() {
  local ns=$1 i port
  for ((i = 0; i < 100; i++)); do
    port=$((20000 + RANDOM % 10000))
    if [ -z "$(in_ns "$ns" ss -Hatn "( sport = :$port or dport = :$port )")" ]; then
      echo "$port"
      return 0
    fi
  done
  die "no free TCP port found in 100 tries"
}

# CPU seconds (user + system, all threads) of pid $1 so far; empty if it is gone.
# CPU-seconds the whole machine spent busy (all CPUs: user, nice, system, irq, softirq; not idle,
# iowait or steal) since boot: the budget every process of a test shares on a 2-CPU machine.
machine_busy_secs() {
  awk -v t="$CLK_TCK" '$1 == "cpu" { printf "%.2f", ($2 + $3 + $4 + $7 + $8) / t; exit }' /proc/stat
}

cpu_secs() {
  local stat
  [ -n "$1" ] || return 0
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  # After the command name: state is field 1, utime field 12, stime field 13.
  awk -v t="$CLK_TCK" '{ printf "%.2f", ($12 + $13) / t }' <<<"$stat"
}

# Peak resident set (VmHWM, KiB) of pid $1; empty if it is gone.
vmhwm_kb() { [ -z "$1" ] || awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
