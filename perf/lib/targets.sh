# shellcheck shell=bash
# Targets: the forwarding paths under test. `target_start CONFIG MTU` brings one up and
# records, per config:
#   CLIENT_NS  namespace the clients (the "guest" side) run in; "" = the host
#   SERVER_NS  namespace the servers (the "host" side) run in; "" = the host
#   LISTEN     address servers bind; DEST the address clients connect to
#   FWD_PID    the forwarder whose cost is measured (helper or slirp4netns); "" = none
#   PUMP_PID   the frontend, whose pump thread moves frames between tap and helper; "" = none
#   FRAMES     how frames are counted: helper (its SIGUSR1 counters line), tap, or none
#   LOG        where the forwarder's stderr goes
#
# Network rule: guest namespaces reach only 10.0.2.0/24 (no default route; slirp4netns's is
# deleted), libslirp maps 10.0.2.2 to the host's 127.0.0.1 where every server listens, and the
# veth pair joins two namespaces of this run only. The IPv6 configs (ours6, slirp4netns6) reach
# only their on-link /64 (no default route: the frontend does not take the RA's router, and
# slirp4netns's is refused and deleted): libslirp maps its host address (fec0::2 for ours,
# fd00::2 for slirp4netns) to the host's ::1, where their servers listen.

#   TAP_SETTINGS  the guest tap's offloads, queue length and qdisc as read back (ours, cdesign,
#                 slirp4netns), for the report's header
declare -A CLIENT_NS SERVER_NS LISTEN DEST FWD_PID PUMP_PID FRAMES LOG TARGET_NS TAP_SETTINGS

GUEST_DEST=10.0.2.2     # libslirp's host alias: the host's 127.0.0.1 in open mode
OURS_DEST6=fec0::2      # libslirp's default IPv6 host address (ours): the host's ::1
S4N_DEST6=fd00::2       # slirp4netns's IPv6 host address (its prefix fd00::/64): the host's ::1
VETH_SERVER=10.0.9.1    # the veth pair's own /24, inside this run's namespaces only
VETH_CLIENT=10.0.9.2

# Namespace names: unique to this run, recognisable in `ip netns list`.
ns_name() { echo "slirpperf-$$-$1"; }

target_start() {
  local config=$1 mtu=$2
  case $config in
    ours) start_frontend "$config" "$mtu" ;;
    ours6) start_frontend "$config" "$mtu" --ipv6 ;;
    cdesign)
      start_frontend "$config" "$mtu" --helper-arg --poller --helper-arg poll \
        --helper-arg --batch --helper-arg 1
      ;;
    uring)
      start_frontend "$config" "$mtu" --helper-arg --poller --helper-arg io_uring
      ;;
    slirp4netns) start_slirp4netns slirp4netns "$mtu" ;;
    slirp4netns6) start_slirp4netns slirp4netns6 "$mtu" --enable-ipv6 ;;
    veth) start_veth "$mtu" ;;
    loopback) start_loopback ;;
    *) die "unknown config $config" ;;
  esac
}

target_stop() {
  local config=$1 ns
  [ -n "${PUMP_PID[$config]:-}" ] && { stop_pid "${PUMP_PID[$config]}" 10 || true; }
  # slirp4netns is its own forwarder; the helper was stopped by its frontend above.
  case $config in slirp4netns*) stop_pid "${FWD_PID[$config]}" 5 || true ;; esac
  for ns in ${TARGET_NS[$config]:-}; do ns_delete "$ns"; done
  unset "CLIENT_NS[$config]" "SERVER_NS[$config]" "FWD_PID[$config]" "PUMP_PID[$config]" \
    "TARGET_NS[$config]"
}

# Our helper behind slirp-frontend (bhyve's role) in a namespace of ours. The frontend runs
# `sleep` as its command so it stays up, bounded by the run's budget; we stop it by pid.
start_frontend() {
  local config=$1 mtu=$2 ns fe log
  shift 2
  ns=$(ns_name "$config")
  log=$WORK/$config-$mtu-frontend.log
  ns_create "$ns"
  spawn fe "" "$log" "$log" "$BIN/slirp-frontend" --netns "$ns" --open --mtu "$mtu" "$@" \
    -- sleep "$(budget_left)"
  PUMP_PID[$config]=$fe
  TARGET_NS[$config]=$ns
  wait_until 20 frontend_ready "$ns" "$log" ||
    die "$config: the frontend did not come up (see $log): $(tail -3 "$log")"
  FWD_PID[$config]=$(sed -n 's/^slirp-frontend: helper pid \([0-9]*\).*/\1/p' "$log" | head -1)
  CLIENT_NS[$config]=$ns SERVER_NS[$config]="" LISTEN[$config]=127.0.0.1
  DEST[$config]=$GUEST_DEST FRAMES[$config]=helper LOG[$config]=$log
  if is_ipv6 "$config"; then
    # The frontend reports its SLAAC address once it is no longer tentative (guest::wait_slaac).
    wait_until 20 grep -qs '^slirp-frontend: SLAAC address' "$log" ||
      die "$config: no SLAAC address (see $log): $(tail -3 "$log")"
    LISTEN[$config]=::1 DEST[$config]=$OURS_DEST6
    no_default_route6 "$config" "$ns"
  fi
  pin_tap "$config" "$ns"
  warm_up "$config"
}

# The IPv6 configs: their servers on ::1, their clients to libslirp's IPv6 host address.
is_ipv6() { [[ $1 == *6 ]]; }

# HOST:PORT for a server or client argument, with IPv6 addresses in brackets.
host_port() { if [[ $1 == *:* ]]; then echo "[$1]:$2"; else echo "$1:$2"; fi; }

# The frontend assigns the guest address last in its set-up, after the helper and the pump.
frontend_ready() {
  grep -qs '^slirp-frontend: helper pid' "$2" &&
    ip -n "$1" -4 addr show dev tap0 2>/dev/null | grep -q 'inet 10\.0\.2\.15/'
}

# A usable (not tentative) global IPv6 address on the tap, from SLAAC.
slaac_ready() {
  ip -n "$1" -6 -o addr show dev tap0 scope global 2>/dev/null |
    grep -v -e tentative -e dadfailed | grep -q 'inet6 '
}

has_default_route6() { [ -n "$(ip -n "$1" -6 route show default)" ]; }

# no_default_route6 CONFIG NS: the network rule for IPv6. Routers from later RAs are refused
# first (accept_ra_defrtr 0), then any default route an earlier RA installed is deleted.
no_default_route6() {
  ip netns exec "$2" sh -c 'echo 0 > /proc/sys/net/ipv6/conf/tap0/accept_ra_defrtr'
  while has_default_route6 "$2"; do ip -n "$2" -6 route del default; done
  ! has_default_route6 "$2" || die "$1: could not delete the IPv6 default route in $2"
}

# slirp4netns on the same libslirp, reading the tap itself. Its fd limit is raised to the hard
# limit as our helper raises its own (10000 idle connections need 10000 sockets).
# start_slirp4netns CONFIG MTU [EXTRA_ARGS...]: slirp4netns6 passes --enable-ipv6.
start_slirp4netns() {
  local config=$1 mtu=$2 ns pid log
  shift 2
  ns=$(ns_name "$config")
  log=$WORK/$config-$mtu.log
  ns_create "$ns"
  spawn pid "" "$log" "$log" prlimit --nofile="$(ulimit -Hn)" -- \
    slirp4netns --configure --mtu="$mtu" --disable-dns "$@" --netns-type=path "/run/netns/$ns" tap0
  FWD_PID[$config]=$pid
  TARGET_NS[$config]=$ns
  # --configure adds a default route via 10.0.2.2; nothing runs in the namespace yet, and the
  # rule is no default route, so delete it before any client starts.
  wait_until 20 has_default_route "$ns" ||
    die "$config did not configure $ns (see $log): $(tail -3 "$log")"
  ip -n "$ns" route del default
  ! has_default_route "$ns" || die "could not delete $config's default route in $ns"
  CLIENT_NS[$config]=$ns SERVER_NS[$config]="" LISTEN[$config]=127.0.0.1
  DEST[$config]=$GUEST_DEST FRAMES[$config]=tap LOG[$config]=$log PUMP_PID[$config]=""
  if is_ipv6 "$config"; then
    # The kernel takes libslirp's RA (SLAAC in fd00::/64, and a default router, refused here).
    wait_until 20 slaac_ready "$ns" ||
      die "$config: no SLAAC address on tap0 in $ns: $(ip -n "$ns" -6 -o addr show dev tap0 | tr '\n' ';')"
    LISTEN[$config]=::1 DEST[$config]=$S4N_DEST6
    no_default_route6 "$config" "$ns"
  fi
  pin_tap "$config" "$ns"
  warm_up "$config"
}

# pin_tap CONFIG NS: the same tap settings for every forwarder, set explicitly rather than
# left to whoever created the tap, then read back into TAP_SETTINGS. Neither slirp-frontend nor
# slirp4netns opens its tap with IFF_VNET_HDR, so TSO and checksum offload cannot be on (the
# frames carry no offload header); GSO and GRO are the kernel's software ones, on by default,
# and kept on: at MTU 65520 they cost nothing, and turning them off lowered slirp4netns's g2h
# 65520 by about 10 % in a test on this machine, with the same spread. The queue is the
# kernel default (1000 frames, pfifo_fast).
TAP_TXQUEUELEN=1000
pin_tap() {
  local config=$1 ns=$2 k
  ip -n "$ns" link set dev tap0 txqueuelen "$TAP_TXQUEUELEN"
  if command -v ethtool >/dev/null; then
    ip netns exec "$ns" ethtool -K tap0 tso off gso on gro on >/dev/null 2>&1 ||
      log "$config: ethtool -K tap0 failed; the read-back below says what is set"
    k=$(ip netns exec "$ns" ethtool -k tap0 2>/dev/null | awk -F': ' '
      $1 == "tcp-segmentation-offload" { t = $2 } $1 == "generic-segmentation-offload" { g = $2 }
      $1 == "generic-receive-offload" { r = $2 } $1 == "tx-checksumming" { c = $2 }
      END { printf "tso %s, gso %s, gro %s, tx-csum %s", t, g, r, c }')
  else
    k="offloads unknown (no ethtool)"
  fi
  TAP_SETTINGS[$config]="$k, $(ip -n "$ns" -j link show dev tap0 |
    jq -r '.[0] | "txqueuelen \(.txqlen), qdisc \(.qdisc)"')"
}

# One line for the report: each distinct tap setting and the configs that had it.
tap_settings_line() {
  local config line=""
  for config in ours ours6 uring cdesign slirp4netns slirp4netns6; do
    [ -n "${TAP_SETTINGS[$config]:-}" ] || continue
    line+="$config: ${TAP_SETTINGS[$config]}; "
  done
  echo "${line%; }" | awk -F'; ' '{ for (i = 1; i <= NF; i++) { split($i, p, ": "); s = substr($i, length(p[1]) + 3)
    if (!(s in seen)) { order[++n] = s; seen[s] = p[1] } else seen[s] = seen[s] ", " p[1] }
    for (i = 1; i <= n; i++) printf "%s%s: %s", (i > 1 ? "; " : ""), seen[order[i]], order[i] }'
}

has_default_route() { [ -n "$(ip -n "$1" route show default)" ]; }

# The ceiling: two namespaces joined by a veth pair, kernel to kernel. At MTU 1500 the
# segmentation offloads go off, so every 1500-byte frame is handled as one (as through a tap).
start_veth() {
  local mtu=$1 client server
  client=$(ns_name veth-c) server=$(ns_name veth-s)
  ns_create "$client"
  ns_create "$server"
  TARGET_NS[veth]="$client $server"
  ip link add vperf$$c netns "$client" type veth peer name vperf$$s netns "$server"
  ip -n "$client" link set vperf$$c mtu "$mtu" up
  ip -n "$server" link set vperf$$s mtu "$mtu" up
  ip -n "$client" addr add "$VETH_CLIENT/24" dev vperf$$c
  ip -n "$server" addr add "$VETH_SERVER/24" dev vperf$$s
  if [ "$mtu" -le 1500 ]; then
    veth_offloads_off "$client" vperf$$c
    veth_offloads_off "$server" vperf$$s
  fi
  CLIENT_NS[veth]=$client SERVER_NS[veth]=$server LISTEN[veth]=$VETH_SERVER
  DEST[veth]=$VETH_SERVER FWD_PID[veth]="" PUMP_PID[veth]="" FRAMES[veth]=none
  wait_until 5 in_ns "$client" ping -c1 -W1 "$VETH_SERVER" >/dev/null ||
    die "veth: $VETH_SERVER unreachable from $client"
}

veth_offloads_off() {
  if command -v ethtool >/dev/null; then
    ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 ||
      log "veth: ethtool -K $2 failed; offloads stay on"
  else
    log "veth: no ethtool; offloads stay on (the MTU-1500 ceiling is then optimistic)"
  fi
}

start_loopback() {
  CLIENT_NS[loopback]="" SERVER_NS[loopback]="" LISTEN[loopback]=127.0.0.1
  DEST[loopback]=127.0.0.1 FWD_PID[loopback]="" PUMP_PID[loopback]="" FRAMES[loopback]=none
  TARGET_NS[loopback]=""
}

# Resolve libslirp's MAC (ARP, or neighbour discovery for IPv6) and check the path before
# anything is measured: libslirp answers ICMP echo to its host address (10.0.2.2, fec0::2,
# fd00::2) itself, so nothing leaves the host.
warm_up() {
  local dest=$GUEST_DEST
  is_ipv6 "$1" && dest=${DEST[$1]}
  wait_until 10 in_ns "${CLIENT_NS[$1]}" ping -c1 -W1 "$dest" >/dev/null ||
    die "$1: $dest does not answer ping from ${CLIENT_NS[$1]}"
}

# Frames through the forwarder so far (both directions), as FRAMES[config] says to count them.
frames_now() {
  case ${FRAMES[$1]} in
    helper) helper_frames "$1" ;;
    tap) tap_frames "$1" ;;
    *) : ;;
  esac
}

# SIGUSR1 makes the helper print its counters on stderr (the frontend's log); wait for the new
# line and print "FRAMES SOCKET_SYSCALLS MERGED_SEGMENTS MERGES GUEST_FRAMES": rx_frames +
# tx_frames, the recv/send calls it made on the frontend socket (rx_syscalls + tx_syscalls),
# the coalescer's counters (guest segments merged, merged packets handed to libslirp) and the
# guest frames it read (rx_frames).
helper_frames() {
  local log=${LOG[$1]} before
  before=$(grep -c 'rx_frames=' "$log" || true)
  kill -USR1 "${FWD_PID[$1]}" 2>/dev/null || return 0
  wait_until 3 stats_lines_above "$log" "$before" || return 0
  grep 'rx_frames=' "$log" | tail -1 | tr ' ' '\n' |
    awk -F= '$1 == "rx_frames" || $1 == "tx_frames" { f += $2 }
             $1 == "rx_syscalls" || $1 == "tx_syscalls" { s += $2 }
             $1 == "coalesced_segments" { g = $2 } $1 == "coalesced_frames" { m = $2 }
             $1 == "rx_frames" { r = $2 } END { print f, s, g, m, r }'
}

stats_lines_above() { [ "$(grep -c 'rx_frames=' "$1" || true)" -gt "$2" ]; }

# Frames through the tap in the guest namespace (both directions).
tap_frames() {
  ip -n "${CLIENT_NS[$1]}" -j -s link show dev tap0 2>/dev/null |
    jq '.[0].stats64.rx.packets + .[0].stats64.tx.packets' 2>/dev/null || true
}
