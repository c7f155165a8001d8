# shellcheck shell=bash
# Groups: the configs that are up at the same time and measured in turn. Within a group the
# order is repetition → test → config, so drift in the machine's load (it is shared) hits every
# config alike and the ratios from one run stay fair. Groups with idle connections held open
# have one config each (see run.sh).

# wants CONFIG TEST MTU: whether this cell is part of the matrix. UDP and RR at MTU 1500 (the
# frame size does not matter to 64-byte datagrams and 1-byte requests); loopback (MTU 65536)
# only once, with the large-MTU group; the IPv6 configs (ours6, slirp4netns6) bulk and RR only,
# the cells issue #11 compares with IPv4.
wants() {
  local config=$1 test=$2 mtu=$3
  case $config:$test in
    loopback:*) [ "$mtu" -gt 1500 ] ;;
    ours6:udp64 | slirp4netns6:udp64) return 1 ;;
    *:udp64 | *:rr) [ "$mtu" -le 1500 ] ;;
    *) return 0 ;;
  esac
}

# run_group MTU N_IDLE "CONFIGS" "TESTS"
run_group() {
  local mtu=$1 n_idle=$2 config test rep
  local -a configs tests up=()
  read -ra configs <<<"$3"
  read -ra tests <<<"$4"
  local -A held=() hold_pids=()
  mapfile -t configs < <(selected "${configs[@]}")
  [ "${#configs[@]}" -gt 0 ] || return 0
  if [ "$(budget_left)" -lt "$MIN_GROUP_SECS" ]; then
    log "group mtu=$mtu n=$n_idle skipped: $(budget_left) s left of the time budget"
    SKIPPED+=("mtu $mtu, $n_idle idle: ${configs[*]} (time budget)")
    return 0
  fi
  log "group: mtu=$mtu, $n_idle idle connections: ${configs[*]}"
  for config in "${configs[@]}"; do
    target_start "$config" "$(config_mtu "$config" "$mtu")"
    up+=("$config")
    held[$config]=0
    if [ "$n_idle" -gt 0 ]; then
      measure_baseline "$config" "$mtu" "$n_idle" "${tests[@]}"
      start_hold "$config" "$n_idle" hold_pids held
    fi
  done
  for ((rep = 1; rep <= REPS; rep++)); do
    for test in "${tests[@]}"; do
      for config in "${up[@]}"; do
        wants "$config" "$test" "$mtu" || continue
        if [ "$(budget_left)" -lt $((DURATION + 10)) ]; then
          SKIPPED+=("$config $test mtu $mtu n $n_idle rep $rep (time budget)")
          continue
        fi
        measure "$config" "$test" "$(config_mtu "$config" "$mtu")" "$n_idle" \
          "${held[$config]}" "$rep"
      done
    done
  done
  for config in "${up[@]}"; do
    [ -n "${hold_pids[$config]:-}" ] && { stop_pid "${hold_pids[$config]}" 5 || true; }
    [ -n "${hold_pids[$config.server]:-}" ] && { stop_pid "${hold_pids[$config.server]}" 5 || true; }
    target_stop "$config"
  done
}

# count_group MTU N_IDLE "CONFIGS" "TESTS": add to ESTIMATE the seconds run_group would take
# with these arguments. A cell takes its DURATION (rr one more: its client's margin); bringing a
# target up about 2 s; holding N connections 5 s plus N/400 (connecting, then settling). Fitted
# to the full 5-run of 2026-11-27 (29 min 23 s; the model says 30 min) and a quick run.
count_group() {
  local mtu=$1 n_idle=$2 config test cells=0 rr=0 configs tests
  read -ra configs <<<"$3"
  read -ra tests <<<"$4"
  mapfile -t configs < <(selected "${configs[@]}")
  [ "${#configs[@]}" -gt 0 ] || return 0
  for config in "${configs[@]}"; do
    ESTIMATE=$((ESTIMATE + 2))
    [ "$n_idle" -eq 0 ] || ESTIMATE=$((ESTIMATE + 5 + n_idle / 400))
    for test in "${tests[@]}"; do
      wants "$config" "$test" "$mtu" || continue
      # With N held, each cell is measured twice: just before the N are opened, and with them.
      cells=$((cells + (n_idle > 0 ? 2 : 1)))
      [ "$test" != rr ] || rr=$((rr + (n_idle > 0 ? 2 : 1)))
    done
  done
  ESTIMATE=$((ESTIMATE + REPS * (cells * DURATION + rr)))
}

# measure_baseline CONFIG MTU N TEST...: the same tests with no connection held, on the same
# forwarder just before N are opened, recorded with n_idle "baseN". The scale ratios (N
# against 0) compare these, not the N = 0 group measured minutes earlier: on a shared machine
# the load drifts more between groups than within one.
measure_baseline() {
  local config=$1 mtu=$2 n=$3 test rep
  shift 3
  for ((rep = 1; rep <= REPS; rep++)); do
    for test in "$@"; do
      [ "$(budget_left)" -ge $((DURATION + 10)) ] || return 0
      measure "$config" "$test" "$(config_mtu "$config" "$mtu")" "base$n" 0 "$rep"
    done
  done
}

# Loopback's MTU is the kernel's (65536), whatever the group says.
config_mtu() { if [ "$1" = loopback ]; then echo 65536; else echo "$2"; fi; }

# The configs of "$@" that --configs selected.
selected() {
  local c
  for c in "$@"; do
    case ",$CONFIGS," in *",$c,"*) echo "$c" ;; esac
  done
}

# start_hold CONFIG N PIDS HELD: a hold-server on the host's 127.0.0.1 and `slirp-loadgen hold
# N` in the guest, connecting through the forwarder; waits for its report and records how many
# connections it holds. Both live until the budget ends and are stopped by pid with the group.
start_hold() {
  local config=$1 n=$2 port srv cli out secs
  local -n _pids=$3 _held=$4
  port=$(free_port "")
  secs=$(budget_left)
  out=$WORK/$config-hold$n
  spawn srv "" "$out.srv" "$out.srv" timeout -k 2 "$((secs + 5))" \
    "$BIN/slirp-loadgen" hold-server --listen "127.0.0.1:$port" --secs "$secs"
  _pids[$config.server]=$srv
  wait_until 5 listening "" "$port" || die "hold-server did not start (see $out.srv)"
  spawn cli "${CLIENT_NS[$config]}" "$out.out" "$out.err" timeout -k 2 "$((secs + 5))" \
    "$BIN/slirp-loadgen" hold "$n" --connect "$GUEST_DEST:$port" \
    --connect-secs "$HOLD_CONNECT_SECS" --secs "$secs"
  _pids[$config]=$cli
  if ! wait_until "$((HOLD_CONNECT_SECS + 15))" grep -qs '^hold ' "$out.out"; then
    log "$config: hold $n did not report (see $out.err)"
    return 0
  fi
  _held[$config]=$(kv held "$(grep '^hold ' "$out.out")")
  log "  $config: $(grep '^hold ' "$out.out")"
  settle "$config"
}

# Wait (at most 30 s) until the forwarder is idle again: connects that timed out in the guest
# can leave it working through queued SYNs and resets, which is not the idle N we measure.
settle() {
  local pid=${FWD_PID[$1]} i c0 c1
  for ((i = 0; i < 30; i++)); do
    c0=$(cpu_secs "$pid")
    sleep 1
    c1=$(cpu_secs "$pid")
    [ "$(calc 'b - a < 0.1 ? 1 : 0' "$c0" "$c1")" = 1 ] && return 0
  done
  log "  $1: the forwarder is still busy after 30 s (above 10% CPU); measuring anyway"
}

# The frontend alone: its --pump-bench replaces the helper by a counting sink/source, so we
# know the harness can carry more than the helper does.
run_pump_bench() {
  local mtu ns out pid status
  for mtu in $PUMP_MTUS; do
    [ "$(budget_left)" -gt $((PUMP_SECS + 30)) ] || { SKIPPED+=("pump bench mtu $mtu"); continue; }
    ns=$(ns_name pump)
    out=$WORK/pump-$mtu.out
    ns_create "$ns"
    spawn pid "" "$out" "$out" timeout -k 2 "$((PUMP_SECS * 3 + 30))" \
      "$BIN/slirp-frontend" --netns "$ns" --mtu "$mtu" --pump-bench "$PUMP_SECS"
    status=0
    reap "$pid" || status=$?
    ns_delete "$ns"
    pump_rows "$mtu" "$out" "$status"
  done
}

# pump_rows MTU FILE STATUS: one row per direction from the bench's report lines.
pump_rows() {
  local mtu=$1 file=$2 status=$3 test pattern line
  for test in pump_g2h pump_h2g pump_h2g_delivered; do
    case $test in
      pump_g2h) pattern='guest->helper' ;;
      pump_h2g) pattern='helper->guest (' ;;
      pump_h2g_delivered) pattern='delivered to a guest' ;;
    esac
    line=$(grep -F "$pattern" "$file" | head -1 || true)
    if [ -z "$line" ]; then
      row pump "$test" "$mtu" 0 1 0 error="pump bench exit $status: $(tail -1 "$file")"
      continue
    fi
    # "...: 123456 frames/s, 1.23 Gbit/s (...)"
    row pump "$test" "$mtu" 0 1 0 \
      value="$(sed -n 's/.*, \([0-9.]*\) Gbit\/s.*/\1/p' <<<"$line")" \
      gbps="$(sed -n 's/.*, \([0-9.]*\) Gbit\/s.*/\1/p' <<<"$line")"
    log "  pump $test mtu=$mtu: ${line#*: }"
  done
}
