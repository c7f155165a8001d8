# shellcheck shell=bash
# One measurement: a server on the "host" side, a client on the "guest" side, and around it the
# forwarder's cost: CPU (utime+stime before/after), syscalls (perf stat over a window inside the
# run) and frames (counted at the window's edges), peak RSS (VmHWM). One CSV row each.
#
# Tests: tcp_g2h / tcp_h2g (iperf3, one stream, -R for host→guest), udp64 (iperf3 -u -l 64
# -b 0: datagrams/s delivered), rr (slirp-loadgen: 1-byte round trips, p50/p99).

CSV_COLUMNS=config,test,mtu,n_idle,rep,held,value,gbps,bytes,secs,fwd_cpu_s,fwd_cpu_s_per_gb,fwd_cpu_pct,pump_cpu_s,pump_cpu_s_per_gb,machine_cpu_s,machine_cpu_s_per_gb,machine_busy_pct,syscalls,frames,syscalls_per_frame,sock_syscalls_per_frame,tap_frames,vmhwm_kb,udp_lost_pct,rr_p50_us,rr_p99_us,tcp_retransmits,segs_per_merge,slirp_inputs_per_guest_frame,syscalls_per_slirp_input,error

# measure CONFIG TEST MTU N_IDLE HELD REP
measure() {
  local config=$1 test=$2 mtu=$3 n_idle=$4 held=$5 rep=$6
  local cns=${CLIENT_NS[$config]} sns=${SERVER_NS[$config]} fwd=${FWD_PID[$config]:-}
  local pump=${PUMP_PID[$config]:-} tag port srv cli status=0
  tag=$config-$test-$mtu-n$n_idle-r$rep
  port=$(free_port "$sns")
  start_server "$test" "$sns" "${LISTEN[$config]}" "$port" "$tag" srv
  if ! wait_until 5 listening "$sns" "$port"; then
    stop_pid "$srv" || true
    row "$config" "$test" "$mtu" "$n_idle" "$rep" "$held" error="server did not start"
    return 0
  fi
  local cpu0 pcpu0 cpu1 pcpu1 mcpu0 mcpu1 f0 f1 s0 s1 t0_ns t1_ns syscalls="" tap0 tap1
  cpu0=$(cpu_secs "$fwd") pcpu0=$(cpu_secs "$pump") mcpu0=$(machine_busy_secs)
  t0_ns=$(date +%s%N)
  start_client "$test" "$cns" "${DEST[$config]}" "$port" "$tag" cli
  # The window starts after the ramp-up (TCP slow start, iperf3's control exchange) and ends
  # before the client does, so it sees steady state only.
  sleep "$WARM"
  local g0 g1 m0 m1 r0 r1
  read -r f0 s0 g0 m0 r0 < <(frames_now "$config") || true
  tap0=$(tap_frames "$config")
  [ -n "$fwd" ] && syscalls=$(count_syscalls "$fwd" "$WINDOW" "$WORK/$tag.perf")
  read -r f1 s1 g1 m1 r1 < <(frames_now "$config") || true
  tap1=$(tap_frames "$config")
  reap "$cli" || status=$?
  t1_ns=$(date +%s%N)
  cpu1=$(cpu_secs "$fwd") pcpu1=$(cpu_secs "$pump") mcpu1=$(machine_busy_secs)
  stop_pid "$srv" 2 || true
  local hwm="" wall
  [ -n "$fwd" ] && hwm=$(vmhwm_kb "$fwd")
  wall=$(calc '(b - a) / 1e9' "$t0_ns" "$t1_ns")
  local -A r=()
  parse_client "$test" "$WORK/$tag.out" r
  [ "$status" -eq 0 ] || r[error]="${r[error]:-client exit $status}"
  local cpu pcpu mcpu frames segs merges rx inputs
  cpu=$(calc 'b - a' "$cpu0" "$cpu1") pcpu=$(calc 'b - a' "$pcpu0" "$pcpu1")
  mcpu=$(calc 'b - a' "$mcpu0" "$mcpu1")
  frames=$(calc 'b - a' "$f0" "$f1")
  # The coalescer over the window: guest frames in (rx), segments merged, merged packets out;
  # what libslirp was given = rx - merged segments + merged packets.
  segs=$(calc 'b - a' "${g0:-}" "${g1:-}") merges=$(calc 'b - a' "${m0:-}" "${m1:-}")
  rx=$(calc 'b - a' "${r0:-}" "${r1:-}")
  inputs=$(calc 'a - b + c' "$rx" "$segs" "$merges")
  row "$config" "$test" "$mtu" "$n_idle" "$rep" "$held" \
    value="${r[value]:-}" gbps="${r[gbps]:-}" bytes="${r[bytes]:-}" secs="${r[secs]:-}" \
    fwd_cpu_s="$cpu" fwd_cpu_s_per_gb="$(calc 'b > 0 ? a / (b / 1e9) : ""' "$cpu" "${r[bytes]:-}")" \
    fwd_cpu_pct="$(calc 'b > 0 ? 100 * a / b : ""' "$cpu" "$wall")" \
    pump_cpu_s="$pcpu" pump_cpu_s_per_gb="$(calc 'b > 0 ? a / (b / 1e9) : ""' "$pcpu" "${r[bytes]:-}")" \
    machine_cpu_s="$mcpu" \
    machine_cpu_s_per_gb="$(calc 'b > 0 ? a / (b / 1e9) : ""' "$mcpu" "${r[bytes]:-}")" \
    machine_busy_pct="$(calc 'b > 0 ? 100 * a / (b * c) : ""' "$mcpu" "$wall" "$(nproc)")" \
    syscalls="$syscalls" frames="$frames" \
    syscalls_per_frame="$(calc 'b > 0 ? a / b : ""' "$syscalls" "$frames")" \
    sock_syscalls_per_frame="$(calc 'b > 0 ? a / b : ""' "$(calc 'b - a' "${s0:-}" "${s1:-}")" "$frames")" \
    tap_frames="$(calc 'b - a' "$tap0" "$tap1")" vmhwm_kb="$hwm" \
    udp_lost_pct="${r[lost]:-}" rr_p50_us="${r[p50]:-}" rr_p99_us="${r[p99]:-}" \
    tcp_retransmits="${r[retr]:-}" segs_per_merge="$(calc 'b > 0 ? a / b : ""' "$segs" "$merges")" \
    slirp_inputs_per_guest_frame="$(calc 'b > 0 ? a / b : ""' "$inputs" "$rx")" \
    syscalls_per_slirp_input="$(calc 'b > 0 ? a / b : ""' "$syscalls" "$inputs")" \
    error="${r[error]:-}"
  log "  $config $test mtu=$mtu n=$n_idle rep=$rep: $(calc 'a' "${r[value]:-}") ${r[unit]:-}" \
    "forwarder ${cpu:-–} CPU-s, $(calc 'b > 0 ? a / b : ""' "$syscalls" "$frames") syscalls/frame" \
    "${r[error]:-}"
}

# start_server TEST NS ADDR PORT TAG VAR: iperf3 serves exactly one test (-1), rr-server
# echoes; both end by themselves after the test's time plus a margin.
start_server() {
  local test=$1 ns=$2 addr=$3 port=$4 tag=$5
  local -n _srv=$6
  local limit=$((DURATION + 20))
  case $test in
    rr)
      spawn _srv "$ns" "$WORK/$tag.srv" "$WORK/$tag.srv" timeout -k 2 "$limit" \
        "$BIN/slirp-loadgen" rr-server --listen "$(host_port "$addr" "$port")" --secs "$limit"
      ;;
    *)
      spawn _srv "$ns" "$WORK/$tag.srv" "$WORK/$tag.srv" timeout -k 2 "$limit" \
        iperf3 -s -1 -B "$addr" -p "$port"
      ;;
  esac
}

# start_client TEST NS DEST PORT TAG VAR
start_client() {
  local test=$1 ns=$2 dest=$3 port=$4 tag=$5
  local -n _cli=$6
  local limit=$((DURATION + 15)) args=()
  case $test in
    tcp_g2h) args=(iperf3 -c "$dest" -p "$port" -t "$DURATION" -J) ;;
    tcp_h2g) args=(iperf3 -c "$dest" -p "$port" -t "$DURATION" -J -R) ;;
    udp64) args=(iperf3 -c "$dest" -p "$port" -t "$DURATION" -J -u -l 64 -b 0) ;;
    # It measures --secs after its connect and 200 ms warm-up (the limit above holds the margin).
    rr) args=("$BIN/slirp-loadgen" rr-client --connect "$(host_port "$dest" "$port")" --secs "$DURATION") ;;
    *) die "unknown test $test" ;;
  esac
  spawn _cli "$ns" "$WORK/$tag.out" "$WORK/$tag.err" timeout -k 2 "$limit" "${args[@]}"
}

# parse_client TEST FILE ARRAY: value (the headline figure) and unit, gbps, bytes, secs, lost,
# p50, p99, retr (TCP retransmits), error.
parse_client() {
  local test=$1 file=$2 line
  local -n _r=$3
  case $test in
    rr)
      line=$(grep '^rr ' "$file" 2>/dev/null || true)
      if [ -z "$line" ]; then
        _r[error]="rr-client: $(tail -c 200 "${file%.out}.err" 2>/dev/null | tr '\n,' '  ')"
        return 0
      fi
      _r[value]=$(kv per_sec "$line") _r[unit]=RR/s _r[secs]=$(kv secs "$line")
      _r[p50]=$(kv p50_us "$line") _r[p99]=$(kv p99_us "$line")
      ;;
    *)
      local err
      err=$(jq -r '.error // empty' "$file" 2>/dev/null || echo "no iperf3 JSON")
      if [ -n "$err" ]; then
        _r[error]="iperf3: $(tr ',' ' ' <<<"$err")"
        return 0
      fi
      if [ "$test" = udp64 ]; then
        read -r "_r[value]" "_r[lost]" "_r[secs]" "_r[bytes]" < <(jq -r '.end.sum_received |
          "\((.packets - .lost_packets) / .seconds) \(.lost_percent) \(.seconds) \(.bytes)"' "$file")
        _r[unit]=dgram/s
      else
        # Retransmits (the sender's, also with -R) tell a lossy run from a slow one.
        read -r "_r[bytes]" "_r[secs]" "_r[gbps]" "_r[retr]" < <(jq -r '(.end.sum_sent.retransmits // "") as $t |
          .end.sum_received | "\(.bytes) \(.seconds) \(.bits_per_second / 1e9) \($t)"' "$file")
        _r[value]=${_r[gbps]} _r[unit]=Gbit/s
      fi
      ;;
  esac
}

# kv KEY LINE: the value of KEY=value in a space-separated line.
kv() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }

# count_syscalls PID SECS FILE: syscalls PID made during the next SECS seconds (empty when
# perf cannot count them here).
count_syscalls() {
  [ "$HAVE_PERF" = 1 ] || return 0
  timeout -k 2 "$(($2 + 10))" perf stat -x, -e raw_syscalls:sys_enter -p "$1" -o "$3" \
    -- sleep "$2" >/dev/null 2>&1 || return 0
  awk -F, '/raw_syscalls:sys_enter/ && $1 ~ /^[0-9]+$/ { print $1 }' "$3"
}

# row CONFIG TEST MTU N_IDLE REP HELD key=value...: one CSV row in CSV_COLUMNS order.
row() {
  local -A v=([config]=$1 [test]=$2 [mtu]=$3 [n_idle]=$4 [rep]=$5 [held]=$6)
  local kvp col cols out=()
  shift 6
  for kvp in "$@"; do v[${kvp%%=*}]=${kvp#*=}; done
  IFS=, read -ra cols <<<"$CSV_COLUMNS"
  for col in "${cols[@]}"; do out+=("$(printf '%s' "${v[$col]:-}" | tr ',\n' '; ')"); done
  (IFS=,; echo "${out[*]}") >>"$CSV"
}
