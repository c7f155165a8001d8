#!/usr/bin/env bash
# The QEMU section of the benchmarks (#14): one QEMU, one guest (Debian's kernel and a busybox
# initramfs with iperf3 and slirp-loadgen), one backend at a time, in one run (root):
#   ours     bhyve-slirp-helper on QEMU's -netdev socket over a SOCK_DGRAM socketpair (bhyve's
#            nvlist first: open, mtui), started by the launcher that becomes QEMU
#   cdesign  the same binary in the C helper's design: --poller poll --batch 1
#   user     QEMU's own libslirp (-netdev user), in QEMU's process: no socket hop
#   passt    passt (Debian), -netdev stream (skipped when passt is not installed)
# Tests, run by the guest itself: iperf3 guest→host (g2h) and host→guest (h2g) at each MTU, and
# 1-byte TCP request/response (rr, slirp-loadgen) at MTU 1500, against servers on the host's
# 127.0.0.1 reached through the backend's host address. Each row says KVM or TCG (KVM only when
# it boots the guest here) and the CPU-seconds per GB of the backend process and of QEMU.
#   bash perf/qemu.sh [--reps N] [--secs S] [--backends LIST] [--mtus LIST] [--bin DIR]
#                     [--out STEM] [--profile] [--perf] [--tests LIST] [--helper-arg ARG]...
# --profile: for each test also the CPU of every thread (QEMU's vCPU thread apart from its main
# loop, the backend, the iperf3 server, the whole machine) and the helper's SIGUSR1 counters;
# --perf adds a `perf record` of QEMU and the backend. Into STEM-profile.md.
# Writes STEM.csv and STEM.md (default perf/results/<date>-<host>-qemu). perf/run.sh runs it
# with `--configs ...,qemu`.
#
# Network rule: the guest has no default route (its DHCP script sets only its address); the
# servers listen on 127.0.0.1 only; every process runs under `timeout` and is stopped by pid.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=perf/lib/common.sh
source "$HERE/lib/common.sh"

REPS=3
SECS=6
BACKENDS=ours,cdesign,user,passt
MTUS="1500 65520"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
OUT_STEM=""
TESTS=""
HELPER_ARGS=()
PROFILE=0
PERF=0
BOOT_SECS=90
GUEST_MAC=52:54:00:12:34:56

usage() {
  sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

parse_args() {
  while [ $# -gt 0 ]; do
    case $1 in
      --reps) REPS=${2:?}; shift ;;
      --secs) SECS=${2:?}; shift ;;
      --backends) BACKENDS=${2:?}; shift ;;
      --mtus) MTUS=${2//,/ }; shift ;;
      --bin) BIN=${2:?}; shift ;;
      --out) OUT_STEM=${2:?}; shift ;;
      --tests) TESTS=${2:?}; shift ;;
      --helper-arg) HELPER_ARGS+=("${2:?}"); shift ;;
      --profile) PROFILE=1 ;;
      --perf) PROFILE=1 PERF=1 ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; exit 2 ;;
    esac
    shift
  done
  [[ $REPS =~ ^[1-9]$ ]] || die "--reps $REPS: 1..9"
  [[ $SECS =~ ^[0-9]+$ ]] && [ "$SECS" -ge 2 ] && [ "$SECS" -le 60 ] || die "--secs $SECS: 2..60"
  [ -n "$OUT_STEM" ] || OUT_STEM=$HERE/results/$(date +%F)-$(hostname)-qemu
}

preflight() {
  [ "$(id -u)" -eq 0 ] || die "run as root (the helper drops to nobody as it does in production)"
  local tool
  for tool in qemu-system-x86_64 iperf3 python3 jq busybox ldd cpio timeout; do
    command -v "$tool" >/dev/null || die "$tool is missing (bash perf/setup.sh installs it)"
  done
  for tool in bhyve-slirp-helper slirp-loadgen; do
    [ -x "$BIN/$tool" ] || die "$BIN/$tool is missing (cargo build --release --workspace)"
  done
  RELEASE=""
  local k
  for k in /boot/vmlinuz-*; do
    [ -d "/lib/modules/${k#/boot/vmlinuz-}" ] && RELEASE=${k#/boot/vmlinuz-}
  done
  [ -n "$RELEASE" ] || die "no /boot/vmlinuz-* with its modules (Debian package linux-image-amd64)"
  KERNEL=/boot/vmlinuz-$RELEASE
  if [[ ,$BACKENDS, == *,passt,* ]] && ! command -v passt >/dev/null; then
    log "passt is not installed: its rows are skipped"
    BACKENDS=${BACKENDS//passt/}
  fi
}

# module_deps MODULE: its modules.dep path and those it needs, dependencies first.
module_deps() {
  local dep=/lib/modules/$RELEASE/modules.dep path needs d
  path=$(awk -F: -v m="/$1.ko" 'index($1, m) == length($1) - length(m) + 1 { print $1; exit }' "$dep")
  [ -n "$path" ] || die "module $1 is not in $dep"
  module_path_deps "$path"
}

module_path_deps() {
  local dep=/lib/modules/$RELEASE/modules.dep needs d
  needs=$(awk -F': *' -v p="$1" '$1 == p { print $2; exit }' "$dep")
  for d in $needs; do module_path_deps "$d"; done
  echo "$1"
}

# The guest: busybox, iperf3 and slirp-loadgen with their libraries, the NIC's modules, and an
# init that takes its plan from the kernel command line (bench.*), prints each test's output
# between markers on the console, and powers off.
build_initramfs() {
  local root=$WORK/initramfs prog lib m mods=() seen=""
  mkdir -p "$root"/{bin,dev,proc,sys,tmp,etc,modules}
  cp /usr/bin/busybox "$root/bin/"
  cp "$(command -v iperf3)" "$root/bin/iperf3"
  cp "$BIN/slirp-loadgen" "$root/bin/slirp-loadgen"
  for prog in /usr/bin/busybox "$(command -v iperf3)" "$BIN/slirp-loadgen"; do
    for lib in $(ldd "$prog" | awk '/=>/ { print $3 } !/=>/ && $1 ~ /^\// { print $1 }'); do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  done
  for m in virtio_pci virtio_net; do
    while read -r lib; do
      case " $seen " in *" $lib "*) continue ;; esac
      seen="$seen $lib"
      cp "/lib/modules/$RELEASE/$lib" "$root/modules/"
      mods+=("$(basename "$lib")")
    done < <(module_deps "$m")
  done
  cat >"$root/etc/udhcpc.script" <<'EOF'
#!/bin/sh
case "$1" in
bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface"
  echo "${router%% *}" > /tmp/router;;
esac
exit 0
EOF
  {
    echo '#!/bin/busybox sh'
    echo '/bin/busybox --install -s /bin'
    echo 'export PATH=/bin'
    echo 'mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp'
    for m in "${mods[@]}"; do echo "insmod /modules/$m"; done
    cat <<'EOF'
for w in $(cat /proc/cmdline); do
  case $w in bench.*=*) k=${w%%=*}; eval "${k#bench.}='${w#*=}'";; esac
done
ip link set lo up; ip link set eth0 up
udhcpc -i eth0 -s /etc/udhcpc.script -n -q -t 10 -T 2 >/dev/null 2>&1
host=$(cat /tmp/router 2>/dev/null); [ -n "$host" ] || host=10.0.2.2
echo "BENCH-READY host=$host mtu=$(cat /sys/class/net/eth0/mtu)"
for t in $(echo "$tests" | tr , ' '); do
  echo "BENCH-START $t"
  case $t in
    g2h) iperf3 -c "$host" -p "$port" -t "$secs" -J > /tmp/out 2>&1 ;;
    h2g) iperf3 -c "$host" -p "$port" -t "$secs" -J -R > /tmp/out 2>&1 ;;
    rr) slirp-loadgen rr-client --connect "$host:$rrport" --secs "$secs" > /tmp/out 2>&1 ;;
  esac
  echo "BENCH-END $t rc=$?"
  sed 's/^/OUT /' /tmp/out
  echo "BENCH-OUTPUT-END $t"
done
echo BENCH-DONE
poweroff -f
EOF
  } >"$root/init"
  chmod +x "$root/init" "$root/etc/udhcpc.script"
  (cd "$root" && find . | cpio -o -H newc --quiet) >"$WORK/initramfs.cpio"
  INITRD=$WORK/initramfs.cpio
}

qemu_base() {
  local accel=$1 mtu=$2 tests=$3 console=$4
  QEMU_ARGS=(qemu-system-x86_64 -machine q35 -m 512 -smp 1 -nodefaults -no-user-config
    -name bench,debug-threads=on -display none -no-reboot -serial "file:$console" -kernel "$KERNEL" -initrd "$INITRD"
    -append "console=ttyS0 quiet panic=-1 bench.secs=$SECS bench.tests=$tests bench.port=$PORT bench.rrport=$RRPORT")
  if [ "$accel" = kvm ]; then QEMU_ARGS+=(-accel kvm -cpu host); else QEMU_ARGS+=(-accel tcg); fi
  NIC=(-device "virtio-net-pci,netdev=n0,mac=$GUEST_MAC,host_mtu=$mtu")
}

# wait_console FILE PATTERN SECS: until a line matching PATTERN is in FILE (grep -E).
wait_console() {
  local deadline=$(($(now) + $3))
  until grep -qE "$2" "$1" 2>/dev/null; do
    [ "$(now)" -lt "$deadline" ] || return 1
    [ -z "${QEMU_PID:-}" ] || kill -0 "$QEMU_PID" 2>/dev/null || { grep -qE "$2" "$1" 2>/dev/null; return; }
    sleep 0.05
  done
}

# child_of PID NAME: the pid of PID's child called NAME (timeout(1) forks its command), once
# it has exec'd; PID itself if none shows within 5 s.
child_of() {
  local i c
  for ((i = 0; i < 50; i++)); do
    c=$(pgrep -P "$1" -x "$2" | head -1 || true)
    [ -z "$c" ] || { echo "$c"; return 0; }
    sleep 0.1
  done
  echo "$1"
}

# start_guest BACKEND ACCEL MTU TESTS CONSOLE: QEMU_PID and BACKEND_PID (the helper or passt;
# QEMU's own for user), measured; WRAPPERS, the timeout(1) processes to stop.
start_guest() {
  local backend=$1 accel=$2 mtu=$3 tests=$4 console=$5 limit=$((BOOT_SECS + 4 * SECS + 60))
  qemu_base "$accel" "$mtu" "$tests" "$console"
  BACKEND_PID=""
  WRAPPERS=()
  local wrapper
  case $backend in
    ours | cdesign)
      local extra=() pidfile=$WORK/helper.pid
      [ "$backend" = ours ] || extra=(--helper-arg=--poller --helper-arg=poll --helper-arg=--batch --helper-arg=1)
      # --helper-arg: @RUN@ becomes this guest's name (backend-mtu-rep), e.g. for --pcap.
      local a run=${console##*/}
      for a in "${HELPER_ARGS[@]}"; do extra+=("--helper-arg=${a//@RUN@/${run%.console}}"); done
      rm -f "$pidfile"
      spawn wrapper "" "$WORK/$backend-$mtu.qemu.out" "$WORK/$backend-$mtu.qemu.err" timeout -k 2 "$limit" python3 "$HERE/lib/qemu_launch.py" \
        --helper "$BIN/bhyve-slirp-helper" --pidfile "$pidfile" --open --mtui "$mtu" "${extra[@]}" -- \
        "${QEMU_ARGS[@]}" -netdev socket,id=n0,fd=@FD@ "${NIC[@]}"
      WRAPPERS+=("$wrapper")
      wait_until 10 test -s "$pidfile" || die "the launcher did not start the helper"
      BACKEND_PID=$(cat "$pidfile")
      # timeout(1) forks: QEMU (the launcher, exec'd) is its child and the helper's parent.
      QEMU_PID=$(child_of "$wrapper" qemu-system-x86)
      ;;
    user)
      spawn wrapper "" "$WORK/$backend-$mtu.qemu.out" "$WORK/$backend-$mtu.qemu.err" timeout -k 2 "$limit" \
        "${QEMU_ARGS[@]}" -netdev user,id=n0 "${NIC[@]}"
      WRAPPERS+=("$wrapper")
      QEMU_PID=$(child_of "$wrapper" qemu-system-x86)
      BACKEND_PID=$QEMU_PID
      ;;
    passt)
      # passt drops to nobody before it binds its socket: a directory nobody may write in.
      local sock=$WORK/passt/passt.sock
      mkdir -p "$WORK/passt"
      chmod 711 "$WORK"
      chmod 777 "$WORK/passt"
      rm -f "$sock"
      spawn wrapper "" "$WORK/$backend-$mtu.passt.out" "$WORK/$backend-$mtu.passt.err" timeout -k 2 "$limit" passt -f -1 -4 \
        --socket "$sock" --mtu "$mtu" -a 10.0.2.15 -n 24 -g 10.0.2.2 -t none -u none
      WRAPPERS+=("$wrapper")
      wait_until 10 test -S "$sock" || die "passt did not create its socket: $(cat "$WORK/$backend-$mtu.passt.err")"
      # passt re-executes itself as passt.avx2 where the CPU has AVX2.
      BACKEND_PID=$(child_of "$wrapper" 'passt(\.avx2)?')
      spawn wrapper "" "$WORK/$backend-$mtu.qemu.out" "$WORK/$backend-$mtu.qemu.err" timeout -k 2 "$limit" \
        "${QEMU_ARGS[@]}" -netdev "stream,id=n0,server=off,addr.type=unix,addr.path=$sock" "${NIC[@]}"
      WRAPPERS+=("$wrapper")
      QEMU_PID=$(child_of "$wrapper" qemu-system-x86)
      ;;
  esac
}

# The KVM question, once: does a KVM guest reach BENCH-READY here? (On some machines /dev/kvm
# exists but guests hang early and -cpu host fails.)
choose_accel() {
  ACCEL=tcg
  if [ -n "${QEMU_ACCEL:-}" ]; then ACCEL=$QEMU_ACCEL; return; fi
  [ -e /dev/kvm ] || return 0
  local console=$WORK/kvm-probe.console
  start_guest user kvm 1500 none "$console"
  if wait_console "$console" 'BENCH-DONE' 30; then ACCEL=kvm; fi
  stop_guest
}

# Stop what start_guest started (newest first), by the pids this script spawned.
stop_guest() {
  local i
  for ((i = ${#WRAPPERS[@]} - 1; i >= 0; i--)); do stop_pid "${WRAPPERS[i]}" 3 || true; done
  WRAPPERS=()
}

# One guest: boot, then each test between its console markers, with the CPU of the backend and
# of QEMU around it; rows into the CSV.
run_guest() {
  local backend=$1 mtu=$2 rep=$3 tests=g2h,h2g t
  [ "$mtu" != 1500 ] || tests=g2h,h2g,rr
  [ -z "$TESTS" ] || tests=$TESTS
  if [ "$backend" = user ] && [ "$mtu" != 1500 ]; then
    log "user: QEMU's -netdev user has no MTU setting (libslirp's 1500): no row at MTU $mtu"
    return 0
  fi
  local console=$WORK/$backend-$mtu-$rep.console srv rrsrv
  : >"$console"
  spawn srv "" "$WORK/iperf3.srv" "$WORK/iperf3.srv" timeout -k 2 $((BOOT_SECS + 4 * SECS + 60)) iperf3 -s -B 127.0.0.1 -p "$PORT"
  spawn rrsrv "" "$WORK/rr.srv" "$WORK/rr.srv" timeout -k 2 $((BOOT_SECS + 4 * SECS + 60)) \
    "$BIN/slirp-loadgen" rr-server --listen "127.0.0.1:$RRPORT" --secs $((BOOT_SECS + 4 * SECS + 50))
  start_guest "$backend" "$ACCEL" "$mtu" "$tests" "$console"
  if ! wait_console "$console" '^BENCH-READY' "$BOOT_SECS"; then
    log "$backend MTU $mtu: the guest did not come up; console: $(tail -c 400 "$console" | tr '\n' ' ')"
    stop_guest; stop_pid "$srv" || true; stop_pid "$rrsrv" || true
    return 0
  fi
  for t in ${tests//,/ }; do
    wait_console "$console" "^BENCH-START $t" $((SECS + 30)) || break
    local b0 q0 b1 q1
    b0=$(cpu_secs "$BACKEND_PID") q0=$(cpu_secs "$QEMU_PID")
    [ "$PROFILE" = 0 ] || profile_start "$backend-$mtu-$rep-$t" "$(child_of "$srv" iperf3)"
    wait_console "$console" "^BENCH-END $t" $((SECS + 40)) || break
    b1=$(cpu_secs "$BACKEND_PID") q1=$(cpu_secs "$QEMU_PID")
    [ "$PROFILE" = 0 ] || profile_snapshot
    wait_console "$console" "^BENCH-OUTPUT-END $t" 10 || break
    local out=$WORK/$backend-$mtu-$rep-$t.out value="" unit="" bytes="" err=""
    # The serial console ends lines with CR LF.
    awk -v t="$t" '{ sub(/\r$/, "") } $0 == "BENCH-START " t { on = 1; next } /^BENCH-OUTPUT-END/ { on = 0 } on && /^OUT / { print substr($0, 5) }' \
      "$console" >"$out"
    case $t in
      rr)
        local line
        line=$(grep '^rr ' "$out" || true)
        [ -n "$line" ] || err="rr-client: $(tail -c 200 "$out" | tr '\n,' '  ')"
        value=$(tr ' ' '\n' <<<"$line" | sed -n 's/^per_sec=//p') unit=RR/s
        ;;
      *)
        err=$(jq -r '.error // empty' "$out" 2>/dev/null || echo "no iperf3 JSON")
        read -r bytes value < <(jq -r '.end.sum_received | "\(.bytes) \(.bits_per_second / 1e9)"' "$out" 2>/dev/null) || true
        unit=Gbit/s
        ;;
    esac
    local bcpu qcpu
    bcpu=$(calc '(b - a) / (c / 1e9)' "$b0" "$b1" "${bytes:-}")
    qcpu=$(calc '(b - a) / (c / 1e9)' "$q0" "$q1" "${bytes:-}")
    [ "$backend" != user ] || bcpu=""  # the backend is QEMU itself
    echo "$ACCEL,$backend,$mtu,$t,$rep,${value:-},$unit,${bytes:-},${bcpu:-},${qcpu:-},${err//,/ }" >>"$CSV"
    log "$ACCEL $backend MTU $mtu $t rep $rep: ${value:-?} $unit${err:+ ($err)}"
    [ "$PROFILE" = 0 ] || profile_end "$backend" "$mtu" "$t" "$rep"
  done
  wait_console "$console" '^BENCH-DONE' 20 || true
  wait_until 10 bash -c "! kill -0 $QEMU_PID 2>/dev/null" || true
  # The helper follows QEMU (--exit-with-parent), passt its one client (-1).
  [ -z "$BACKEND_PID" ] || [ "$backend" = user ] || wait_until 5 bash -c "! kill -0 $BACKEND_PID 2>/dev/null" \
    || log "$backend (pid $BACKEND_PID) still runs 5 s after QEMU exited"
  stop_guest
  stop_pid "$srv" || true
  stop_pid "$rrsrv" || true
}

# thread_ticks LABEL PID...: "LABEL/COMM TICKS" for every thread of each PID (user+system).
thread_ticks() {
  local label=$1 pid task stat comm
  shift
  for pid in "$@"; do
    [ -n "$pid" ] || continue
    for task in /proc/"$pid"/task/*; do
      stat=$(cat "$task/stat" 2>/dev/null) || continue
      comm=${stat#*(} comm=${comm%)*} comm=${comm// /_}
      stat=${stat##*) }
      awk -v l="$label/$comm" '{ print l, $12 + $13 }' <<<"$stat"
    done
    label=${label}+
  done
}

# The machine's busy and total ticks (/proc/stat).
machine_ticks() { awk '$1 == "cpu" { busy = $2 + $3 + $4 + $7 + $8; print busy, busy + $5 + $6 }' /proc/stat; }

# profile_start NAME IPERF_PID: snapshot every thread, the helper's counters (SIGUSR1), and
# start perf record (--perf) for the test's middle.
profile_start() {
  PROF_NAME=$1 PROF_T0=$(date +%s.%N) PROF_M0=$(machine_ticks)
  PROF_THREADS=$WORK/$1.threads
  {
    thread_ticks qemu "$QEMU_PID"
    [ "$BACKEND_PID" = "$QEMU_PID" ] || thread_ticks backend "$BACKEND_PID"
    thread_ticks iperf3-server "$2"
  } >"$PROF_THREADS.0"
  PROF_IPERF=$2
  PROF_ERR=$WORK/${1%-*-*}.qemu.err
  stats_signal "$PROF_THREADS.stats0"
  local pids=$QEMU_PID
  [ "$BACKEND_PID" = "$QEMU_PID" ] || pids=$pids,$BACKEND_PID
  # Syscalls and context switches per thread (the frames' path through QEMU's main loop).
  spawn PROF_STAT "" "$WORK/$1.stat.out" "$WORK/$1.stat.err" timeout -k 2 $((SECS + 10)) \
    perf stat --per-thread -e raw_syscalls:sys_enter,context-switches -p "$pids" -o "$WORK/$1.stat" -- sleep $((SECS - 2))
  PROF_PERF=""
  if [ "$PERF" = 1 ]; then
    spawn PROF_PERF "" "$WORK/$1.perf.out" "$WORK/$1.perf.err" timeout -k 2 $((SECS + 10)) \
      perf record -F 997 -g -p "$pids" -o "$WORK/$1.perf.data" -- sleep $((SECS - 2))
  fi
}

# stats_signal FILE: SIGUSR1 to the helper, wait (up to 2 s) for a new counters line and keep
# it in FILE. (Two signals close together make one line: each test reads its own copy.)
stats_signal() {
  : >"$1"
  [ "$BACKEND_PID" != "$QEMU_PID" ] || return 0
  local n0 i
  n0=$(grep -cE '(^|[^_])tx_frames=' "$PROF_ERR" 2>/dev/null || true)
  kill -USR1 "$BACKEND_PID" 2>/dev/null || return 0
  for ((i = 0; i < 40; i++)); do
    [ "$(grep -cE '(^|[^_])tx_frames=' "$PROF_ERR" 2>/dev/null || true)" -gt "${n0:-0}" ] && break
    sleep 0.05
  done
  grep -E '(^|[^_])tx_frames=' "$PROF_ERR" 2>/dev/null | tail -1 >"$1" || true
}

# At the test's end: every thread again, and the helper's counters.
profile_snapshot() {
  PROF_T1=$(date +%s.%N) PROF_M1=$(machine_ticks)
  {
    thread_ticks qemu "$QEMU_PID"
    [ "$BACKEND_PID" = "$QEMU_PID" ] || thread_ticks backend "$BACKEND_PID"
    thread_ticks iperf3-server "$PROF_IPERF"
  } >"$PROF_THREADS.1"
  stats_signal "$PROF_THREADS.stats1"
}

# profile_end BACKEND MTU TEST REP: the threads' CPU (% of one CPU) over the test, the
# counters' difference, perf's top symbols per thread; appended to $PROFILE_MD.
profile_end() {
  local secs ours
  secs=$(calc 'b - a' "$PROF_T0" "$PROF_T1")
  {
    echo "### $ACCEL $1 MTU $2 $3 (rep $4)"
    echo
    ours=$(awk -v s="$secs" -v hz="$CLK_TCK" 'FNR == NR { a[$1] += $2; next } { b[$1] += $2 } END { for (k in b) t += b[k] - a[k]; printf "%.0f", 100 * t / hz / s }' "$PROF_THREADS.0" "$PROF_THREADS.1")
    echo "$(tail -1 "$CSV" | cut -d, -f6,7 | tr , ' ') over ${secs%.*} s. Machine busy: $(awk -v a="$PROF_M0" -v b="$PROF_M1" -v n="$(nproc)" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f %% of one CPU (of %d)", n * 100 * (y[1] - x[1]) / (y[2] - x[2]), n * 100 }'), of which this test's processes $ours %."
    echo
    echo '| thread | % of one CPU |'
    echo '|---|---|'
    awk -v s="$secs" -v hz="$CLK_TCK" 'FNR == NR { a[$1] += $2; next } { b[$1] += $2 } END { for (k in b) { v = 100 * (b[k] - a[k]) / hz / s; if (v >= 0.5) printf "| %s | %.0f |\n", k, v } }' \
      "$PROF_THREADS.0" "$PROF_THREADS.1" | sort -t'|' -k3 -nr
    if [ "$BACKEND_PID" != "$QEMU_PID" ] && [ "$1" != passt ]; then
      local lines
      lines=$(cat "$PROF_THREADS.stats0" "$PROF_THREADS.stats1")
      if [ "$(wc -l <<<"$lines")" = 2 ]; then
        echo
        echo "Helper counters over the test (SIGUSR1 difference):"
        echo
        awk '{ for (i = 1; i <= NF; i++) if (split($i, kv, "=") == 2 && kv[2] ~ /^[0-9]+$/) { if (NR == 1) a[kv[1]] = kv[2]; else d[kv[1]] = kv[2] - a[kv[1]] } }
          END { printf "tx_frames=%d tx_syscalls=%d (%.1f frames/syscall) tx_avg_frame=%d tx_eagain=%d tx_full=%d tx_errors=%d rx_frames=%d rx_syscalls=%d rx_avg_frame=%d iterations=%d wakeups=%d\n",
            d["tx_frames"], d["tx_syscalls"], d["tx_syscalls"] ? d["tx_frames"] / d["tx_syscalls"] : 0, d["tx_frames"] ? d["tx_bytes"] / d["tx_frames"] : 0, d["tx_eagain"], d["tx_full"], d["tx_errors"],
            d["rx_frames"], d["rx_syscalls"], d["rx_frames"] ? d["rx_bytes"] / d["rx_frames"] : 0, d["iterations"], d["wakeups"] }' <<<"$lines"
      fi
    fi
    stop_pid "$PROF_STAT" 10 >/dev/null || true
    if [ -s "$WORK/$PROF_NAME.stat" ]; then
      echo
      echo "perf stat over $((SECS - 2)) s (syscalls and context switches per thread):"
      echo
      echo '```'
      grep -E 'raw_syscalls|context-switches' "$WORK/$PROF_NAME.stat" | sed 's/  */ /g' || true
      echo '```'
    fi
    if [ -n "$PROF_PERF" ]; then
      stop_pid "$PROF_PERF" 10 >/dev/null || true
      echo
      echo '```'
      timeout 120 perf report -i "$WORK/$PROF_NAME.perf.data" --no-children --sort comm,dso --stdio -g none --percent-limit 1 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -25 || true
      echo
      timeout 120 perf report -i "$WORK/$PROF_NAME.perf.data" --no-children --sort comm,sym --stdio -g none --percent-limit 0.7 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -40 || true
      echo '```'
    fi
    echo
  } >>"$PROFILE_MD"
}

write_md() {
  {
    echo "# QEMU: the same guest on each backend ($(date +%F), $(hostname))"
    echo
    echo "QEMU $(qemu-system-x86_64 --version | head -1 | awk '{ print $4 }'), guest kernel $RELEASE, $SECS s per test, $REPS repetition(s); medians."
    echo "Accelerator: **$ACCEL** (KVM only when it boots a guest here; under TCG the guest's CPU is expensive, so only ratios mean anything)."
    echo "CPU columns: CPU-seconds per GB moved, of the backend process (the helper, passt; for user it is QEMU itself) and of QEMU."
    echo "Load average at start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs); commit $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src perf || echo ' (dirty)')."
    echo
    echo "| accel | backend | MTU | test | median | unit | backend CPU-s/GB | QEMU CPU-s/GB |"
    echo "|---|---|---|---|---|---|---|---|"
    awk -F, 'NR > 1 && $6 != "" { k = $1 "|" $2 "|" $3 "|" $4 "|" $7; v[k] = v[k] " " $6; b[k] = b[k] " " $9; q[k] = q[k] " " $10; if (!(k in o)) { o[k] = ++n; keys[n] = k } }
      function med(s,   a, m, i, j, t) { m = split(s, a, " "); if (m == 0) return ""; for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }; return a[int((m + 1) / 2)] }
      function fmt(x, p) { return x == "" ? "" : sprintf(p, x) }
      END { for (i = 1; i <= n; i++) { k = keys[i]; split(k, f, "|"); printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", f[1], f[2], f[3], f[4], fmt(med(v[k]), f[5] == "RR/s" ? "%d" : "%.2f"), f[5], fmt(med(b[k]), "%.1f"), fmt(med(q[k]), "%.1f") } }' "$CSV"
  } >"$OUT_STEM.md"
}

main() {
  parse_args "$@"
  preflight
  trap cleanup EXIT
  WORK=$(mktemp -d /tmp/slirp-perf-qemu.XXXXXX)
  PORT=$(free_port "") RRPORT=$(free_port "")
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  build_initramfs
  choose_accel
  log "QEMU section: $ACCEL, backends $BACKENDS, MTU $MTUS, $REPS × $SECS s; logs in $WORK"
  CSV=$WORK/qemu.csv
  echo "accel,backend,mtu,test,rep,value,unit,bytes,backend_cpu_per_gb,qemu_cpu_per_gb,error" >"$CSV"
  PROFILE_MD=$WORK/profile.md
  [ "$PROFILE" = 0 ] || echo "# QEMU profile ($(date +%F), $(hostname), commit $(git -C "$ROOT" rev-parse --short HEAD))" >"$PROFILE_MD"
  local rep backend mtu
  for rep in $(seq 1 "$REPS"); do
    for mtu in $MTUS; do
      for backend in ${BACKENDS//,/ }; do
        run_guest "$backend" "$mtu" "$rep"
      done
    done
  done
  mkdir -p "$(dirname "$OUT_STEM")"
  cp "$CSV" "$OUT_STEM.csv"
  write_md
  [ "$PROFILE" = 0 ] || cp "$PROFILE_MD" "$OUT_STEM-profile.md"
  log "done: $OUT_STEM.md"
}

main "$@"
