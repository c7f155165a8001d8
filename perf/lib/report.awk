# Markdown tables from the medians (config,test,mtu,n_idle,metric,median,min,max,count), for
# perf/lib/report.sh. Portable awk (Debian's default is mawk: no gawk extensions).
# Variables: scale_ns ("1000 10000"), plot_prefix (file name stem of the PNGs), reps (runs per
# cell the run asked for: 1 = a single run, no range to show).

BEGIN { FS = "," }
{
  MED[$1, $2, $3, $4, $5] = $6
  MIN[$1, $2, $3, $4, $5] = $7
  MAX[$1, $2, $3, $4, $5] = $8
  CNT[$1, $2, $3, $4] = $9 > CNT[$1, $2, $3, $4] ? $9 : CNT[$1, $2, $3, $4]
}

function med(c, t, m, n, k) { return ((c, t, m, n, k) in MED) ? MED[c, t, m, n, k] : "" }
function mx(c, t, m, n, k) { return ((c, t, m, n, k) in MAX) ? MAX[c, t, m, n, k] : "" }
# The median with the range of the runs, "9219 (5709–16263)", when there was more than one.
function spread(c, t, m, n, k, d) {
  if (med(c, t, m, n, k) == "") return "–"
  if (MIN[c, t, m, n, k] == MAX[c, t, m, n, k]) return f(med(c, t, m, n, k), d)
  return f(med(c, t, m, n, k), d) " (" f(MIN[c, t, m, n, k], d) "–" f(MAX[c, t, m, n, k], d) ")"
}
# Two cells as "a / b", each with its range.
function spair(c, t1, t2, m, n, k, d) {
  if (med(c, t1, m, n, k) == "" && med(c, t2, m, n, k) == "") return "–"
  return spread(c, t1, m, n, k, d) " / " spread(c, t2, m, n, k, d)
}
function f(x, d) { return x == "" ? "–" : sprintf("%." d "f", x) }
function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "–" : sprintf("%.2f×", a / b) }
function larger(a, b) { return (a == "" || (b != "" && b + 0 > a + 0)) ? b : a }
function mib(kb) { return kb == "" ? "–" : sprintf("%.1f", kb / 1024) }

function name(c) {
  if (c == "ours") return "ours (defaults)"
  if (c == "ours6") return "ours, IPv6"
  if (c == "slirp4netns6") return "slirp4netns, IPv6"
  if (c == "cdesign") return "ours, C design (poll, batch 1)"
  if (c == "veth") return "veth (ceiling)"
  if (c == "loopback") return "loopback (ceiling)"
  return c
}

# One row of the summary: the measure for ours, C design, slirp4netns, and the two ratios.
function summary(label, t, m, n, k, d,    o, c, s) {
  o = med("ours", t, m, n, k); c = med("cdesign", t, m, n, k); s = med("slirp4netns", t, m, n, k)
  if (o == "" && c == "" && s == "") return
  printf "| %s | %s | %s | %s | %s | %s |\n", label, spread("ours", t, m, n, k, d),
    spread("cdesign", t, m, n, k, d), spread("slirp4netns", t, m, n, k, d), ratio(o, c), ratio(o, s)
}

# What the brackets mean, or that there are none.
function intro_spread() {
  if (reps + 0 <= 1) {
    print "**Single run per cell** (quick mode or --reps 1): each figure is one measurement, with"
    print "no range; do not rank figures closer than the spread a full run shows."
  } else {
    print "Medians of " reps " runs, with the range of the runs (min–max) in brackets; the quartiles"
    print "are in the summary CSV. A wide range means the figure moved between repetitions (the"
    print "machine is shared, and CPU placement varies): a ratio whose ranges overlap is not a"
    print "difference."
  }
  print ""
}

function section_summary(    mtu, i, n, ns) {
  print "## Summary: ours against the baselines (this run)"
  print ""
  intro_spread()
  print "Ratios are of the medians, ours / baseline from the same run (higher is better for rates,"
  print "lower for costs)."
  print ""
  print "| measure | ours | C design | slirp4netns | ours / C design | ours / slirp4netns |"
  print "|---|---|---|---|---|---|"
  for (i = 1; i <= 2; i++) {
    mtu = i == 1 ? 1500 : 65520
    summary("TCP guest→host, MTU " mtu " (Gbit/s)", "tcp_g2h", mtu, 0, "value", 2)
    summary("TCP host→guest, MTU " mtu " (Gbit/s)", "tcp_h2g", mtu, 0, "value", 2)
  }
  for (i = 1; i <= 2; i++) {
    mtu = i == 1 ? 1500 : 65520
    summary("forwarder CPU-s per GB, g2h MTU " mtu, "tcp_g2h", mtu, 0, "fwd_cpu_s_per_gb", 2)
    summary("forwarder CPU-s per GB, h2g MTU " mtu, "tcp_h2g", mtu, 0, "fwd_cpu_s_per_gb", 2)
  }
  summary("whole-process syscalls per frame, g2h MTU 1500", "tcp_g2h", 1500, 0, "syscalls_per_frame", 2)
  summary("whole-process syscalls per frame, h2g MTU 1500", "tcp_h2g", 1500, 0, "syscalls_per_frame", 2)
  summary("frontend-socket syscalls per frame, g2h MTU 1500", "tcp_g2h", 1500, 0, "sock_syscalls_per_frame", 3)
  summary("frontend-socket syscalls per frame, h2g MTU 1500", "tcp_h2g", 1500, 0, "sock_syscalls_per_frame", 3)
  summary("UDP 64 B delivered (datagrams/s)", "udp64", 1500, 0, "value", 0)
  summary("TCP RR (round trips/s)", "rr", 1500, 0, "value", 0)
  summary("TCP RR p99 (µs)", "rr", 1500, 0, "rr_p99_us", 1)
  ns = split(scale_ns, n, " ")
  for (i = 1; i <= ns; i++) {
    summary("TCP g2h with " n[i] " idle connections (Gbit/s)", "tcp_g2h", 1500, n[i], "value", 3)
    summary("TCP RR with " n[i] " idle connections (round trips/s)", "rr", 1500, n[i], "value", 0)
  }
  print ""
  section_scale_ratio()
  section_ipv6()
}

# IPv6 against IPv4 (issue #11): each forwarder's IPv6 twin against itself over IPv4, from the
# same groups of this run. Goal: ours over IPv6 at least 0.9x ours over IPv4 in every cell.
function ipv6_row(label, t, m, k, d,    o4, o6, s4, s6, r, verdict) {
  o4 = med("ours", t, m, 0, k); o6 = med("ours6", t, m, 0, k)
  s4 = med("slirp4netns", t, m, 0, k); s6 = med("slirp4netns6", t, m, 0, k)
  if (o6 == "" && s6 == "") return
  verdict = "–"
  if (o4 != "" && o6 != "" && o4 + 0 > 0) verdict = (o6 / o4 >= 0.9) ? "met" : "**missed**"
  printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", label, spread("ours", t, m, 0, k, d),
    spread("ours6", t, m, 0, k, d), ratio(o6, o4), spread("slirp4netns", t, m, 0, k, d),
    spread("slirp4netns6", t, m, 0, k, d), ratio(s6, s4), verdict
}
function section_ipv6(    i, mtu) {
  if (med("ours6", "tcp_g2h", 1500, 0, "value") == "" && med("slirp4netns6", "tcp_g2h", 1500, 0, "value") == "" &&
      med("ours6", "tcp_g2h", 65520, 0, "value") == "" && med("slirp4netns6", "tcp_g2h", 65520, 0, "value") == "") return
  print "IPv6 against IPv4 (issue #11): each forwarder over IPv6 (guest SLAAC address to libslirp's"
  print "IPv6 host address, which is the host's ::1) against itself over IPv4, from the same groups."
  print "Goal: ours over IPv6 at least 0.9× ours over IPv4 in every cell."
  print ""
  print "| measure | ours IPv4 | ours IPv6 | ours v6 / v4 | slirp4netns IPv4 | slirp4netns IPv6 | slirp4netns v6 / v4 | goal (≥ 0.9×) |"
  print "|---|---|---|---|---|---|---|---|"
  for (i = 1; i <= 2; i++) {
    mtu = i == 1 ? 1500 : 65520
    ipv6_row("TCP guest→host, MTU " mtu " (Gbit/s)", "tcp_g2h", mtu, "value", 2)
    ipv6_row("TCP host→guest, MTU " mtu " (Gbit/s)", "tcp_h2g", mtu, "value", 2)
  }
  ipv6_row("TCP RR (round trips/s)", "rr", 1500, "value", 0)
  print ""
  print "How the coalescer fed libslirp in those cells (helper counters over the measuring window):"
  print "guest frames merged per merged packet, and packets handed to libslirp per guest frame"
  print "(1.00 = no merging)."
  print ""
  print "| cell | ours IPv4: segments/merge | ours IPv6: segments/merge | ours IPv4: inputs/frame | ours IPv6: inputs/frame |"
  print "|---|---|---|---|---|"
  for (i = 1; i <= 2; i++) {
    mtu = i == 1 ? 1500 : 65520
    printf "| g2h MTU %d | %s | %s | %s | %s |\n", mtu,
      f(med("ours", "tcp_g2h", mtu, 0, "segs_per_merge"), 1), f(med("ours6", "tcp_g2h", mtu, 0, "segs_per_merge"), 1),
      f(med("ours", "tcp_g2h", mtu, 0, "slirp_inputs_per_guest_frame"), 3),
      f(med("ours6", "tcp_g2h", mtu, 0, "slirp_inputs_per_guest_frame"), 3)
  }
  print ""
}

# N idle connections against none, each ratio from the same forwarder measured just before the
# N connections were opened (n_idle "baseN").
function scale_ratio(c, t, n) { return ratio(med(c, t, 1500, n, "value"), med(c, t, 1500, "base" n, "value")) }
function section_scale_ratio(    i, j, n, ns, c, cfgs, nc) {
  ns = split(scale_ns, n, " ")
  if (ns == 0 || med("ours", "rr", 1500, "base" n[1], "value") == "") return
  print "Scale ratios: each forwarder with N idle connections against itself with none, measured"
  print "on the same instance just before the N connections were opened (medians of the same"
  print "number of runs)."
  print ""
  print "| path | N | g2h: N / 0 | RR: N / 0 | g2h Gbit/s at 0 → N | RR/s at 0 → N |"
  print "|---|---|---|---|---|---|"
  nc = split("ours cdesign slirp4netns", cfgs, " ")
  for (j = 1; j <= nc; j++) {
    c = cfgs[j]
    for (i = 1; i <= ns; i++) {
      if (med(c, "rr", 1500, "base" n[i], "value") == "") continue
      printf "| %s | %d | %s | %s | %s → %s | %s → %s |\n", name(c), n[i],
        scale_ratio(c, "tcp_g2h", n[i]), scale_ratio(c, "rr", n[i]),
        f(med(c, "tcp_g2h", 1500, "base" n[i], "value"), 3), f(med(c, "tcp_g2h", 1500, n[i], "value"), 3),
        f(med(c, "rr", 1500, "base" n[i], "value"), 0), f(med(c, "rr", 1500, n[i], "value"), 0)
    }
  }
  print ""
}

function section_bulk(    i, j, mtu, c, cfgs, nc, m) {
  print "## Bulk TCP, one stream (iperf3)"
  print ""
  print "Medians (min–max of the runs); the sender's TCP retransmits are in the CSV."
  print ""
  print "| path | MTU | g2h Gbit/s | h2g Gbit/s | forwarder CPU-s/GB g2h / h2g | pump CPU-s/GB g2h / h2g | syscalls/frame g2h / h2g | peak RSS MiB | runs |"
  print "|---|---|---|---|---|---|---|---|---|"
  nc = split("ours ours6 cdesign slirp4netns slirp4netns6 veth loopback", cfgs, " ")
  for (i = 1; i <= 2; i++) {
    mtu = i == 1 ? 1500 : 65520
    for (j = 1; j <= nc; j++) {
      c = cfgs[j]; m = c == "loopback" ? 65536 : mtu
      if (c == "loopback" && i == 1) continue
      if (med(c, "tcp_g2h", m, 0, "value") == "" && med(c, "tcp_h2g", m, 0, "value") == "") continue
      printf "| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", name(c), m,
        spread(c, "tcp_g2h", m, 0, "value", 2), spread(c, "tcp_h2g", m, 0, "value", 2),
        spair(c, "tcp_g2h", "tcp_h2g", m, 0, "fwd_cpu_s_per_gb", 2),
        spair(c, "tcp_g2h", "tcp_h2g", m, 0, "pump_cpu_s_per_gb", 2),
        spair(c, "tcp_g2h", "tcp_h2g", m, 0, "syscalls_per_frame", 2),
        mib(larger(mx(c, "tcp_g2h", m, 0, "vmhwm_kb"), mx(c, "tcp_h2g", m, 0, "vmhwm_kb"))),
        CNT[c, "tcp_g2h", m, 0] + 0
    }
  }
  print ""
}

# Where the CPU of a bulk run goes, and what that allows. On a machine whose CPUs are all busy
# during a run, throughput is the machine's CPU budget divided by the CPU-seconds per GB of the
# whole path (guest kernel, iperf3, frontend, forwarder): so a helper that cost nothing would
# raise ours by at most machine / (machine - forwarder). The last two columns are that ceiling
# as a ratio against each baseline's measured figure.
function budget_row(c, t, m,    mc, fw, pu, o, cd, s4) {
  mc = med(c, t, m, 0, "machine_cpu_s_per_gb"); fw = med(c, t, m, 0, "fwd_cpu_s_per_gb")
  pu = med(c, t, m, 0, "pump_cpu_s_per_gb")
  if (mc == "") return
  o = "–"; cd = "–"; s4 = "–"
  if (c == "ours" && fw != "" && mc - fw > 0) {
    cd = ratio(med("cdesign", t, m, 0, "machine_cpu_s_per_gb"), mc - fw)
    s4 = ratio(med("slirp4netns", t, m, 0, "machine_cpu_s_per_gb"), mc - fw)
  }
  printf "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", name(c), t == "tcp_g2h" ? "g2h" : "h2g", m,
    f(med(c, t, m, 0, "machine_busy_pct"), 0), f(mc, 2), f(fw, 2), f(pu, 2),
    f(mc - (fw == "" ? 0 : fw) - (pu == "" ? 0 : pu), 2), cd, s4
}

function section_budget(    i, j, k, mtu, t, cfgs, nc) {
  if (med("ours", "tcp_g2h", 1500, 0, "machine_cpu_s_per_gb") == "") return
  print "## Where the CPU goes in bulk runs"
  print ""
  print "Machine = busy CPU-seconds of all CPUs (from /proc/stat) per GB received; rest = machine"
  print "− forwarder − pump (guest kernel, iperf3 both ends, loopback, softirqs). When the machine"
  print "is busy near 100 %, throughput is bounded by machine CPU per GB, so a helper that took"
  print "no CPU at all, with the same frames crossing the frontend and the guest, could reach at"
  print "most the last two columns (ours with the forwarder's CPU removed, against the"
  print "baseline's measured path). Medians only: the ranges of each figure are in the summary CSV."
  print ""
  print "| path | dir | MTU | machine busy % | machine CPU-s/GB | forwarder | pump | rest | zero-cost helper / C design | zero-cost helper / slirp4netns |"
  print "|---|---|---|---|---|---|---|---|---|---|"
  nc = split("ours cdesign slirp4netns", cfgs, " ")
  for (i = 1; i <= 2; i++) {
    mtu = i == 1 ? 1500 : 65520
    for (k = 1; k <= 2; k++) {
      t = k == 1 ? "tcp_g2h" : "tcp_h2g"
      for (j = 1; j <= nc; j++) budget_row(cfgs[j], t, mtu)
    }
  }
  print ""
}

function section_small(    j, c, cfgs, nc, m) {
  print "## Small packets and latency"
  print ""
  print "UDP: `iperf3 -u -l 64 -b 0` guest→host, datagrams/s the server received. RR: 1-byte"
  print "request/response on one TCP_NODELAY connection (`slirp-loadgen rr-client`). Medians"
  print "(min–max of the runs)."
  print ""
  print "| path | UDP 64 B delivered/s | UDP loss % | RR/s | RR p50 µs | RR p99 µs | syscalls/frame (RR) | forwarder CPU % (RR) |"
  print "|---|---|---|---|---|---|---|---|"
  nc = split("ours ours6 cdesign slirp4netns slirp4netns6 veth loopback", cfgs, " ")
  for (j = 1; j <= nc; j++) {
    c = cfgs[j]; m = c == "loopback" ? 65536 : 1500
    if (med(c, "udp64", m, 0, "value") == "" && med(c, "rr", m, 0, "value") == "") continue
    printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", name(c),
      spread(c, "udp64", m, 0, "value", 0), spread(c, "udp64", m, 0, "udp_lost_pct", 1),
      spread(c, "rr", m, 0, "value", 0), spread(c, "rr", m, 0, "rr_p50_us", 1),
      spread(c, "rr", m, 0, "rr_p99_us", 1), spread(c, "rr", m, 0, "syscalls_per_frame", 2),
      spread(c, "rr", m, 0, "fwd_cpu_pct", 0)
  }
  print ""
}

function section_scale(    i, j, c, cfgs, n, ns, nn) {
  print "## Scale: N idle TCP connections held open through the forwarder (MTU 1500)"
  print ""
  print "`slirp-loadgen hold N` in the guest against a hold-server on 127.0.0.1; \"held\" is how"
  print "many were established within the connect limit. Medians (min–max of the runs)."
  print ""
  print "| path | N | held | g2h Gbit/s | forwarder CPU-s/GB | syscalls/frame g2h | RR/s | RR p99 µs | peak RSS MiB |"
  print "|---|---|---|---|---|---|---|---|---|"
  nc = split("ours cdesign slirp4netns", cfgs, " ")
  ns = split("0 " scale_ns, n, " ")
  for (j = 1; j <= nc; j++) {
    c = cfgs[j]
    for (i = 1; i <= ns; i++) {
      nn = n[i]
      if (med(c, "tcp_g2h", 1500, nn, "value") == "" && med(c, "rr", 1500, nn, "value") == "") continue
      printf "| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", name(c), nn,
        f(med(c, "tcp_g2h", 1500, nn, "held"), 0), spread(c, "tcp_g2h", 1500, nn, "value", 3),
        spread(c, "tcp_g2h", 1500, nn, "fwd_cpu_s_per_gb", 2),
        spread(c, "tcp_g2h", 1500, nn, "syscalls_per_frame", 2),
        spread(c, "rr", 1500, nn, "value", 0), spread(c, "rr", 1500, nn, "rr_p99_us", 1),
        mib(mx(c, "rr", 1500, nn, "vmhwm_kb"))
    }
  }
  print ""
}

function section_pump(    i, mtu) {
  if (med("pump", "pump_g2h", 1500, 0, "value") == "" && med("pump", "pump_g2h", 65520, 0, "value") == "") return
  print "## The frontend alone (harness check)"
  print ""
  print "`slirp-frontend --pump-bench`: the helper replaced by a counting sink/source on the"
  print "socket. The harness must carry more than any helper figure above."
  print ""
  print "| MTU | guest→socket Gbit/s | socket→tap Gbit/s | delivered to a guest socket Gbit/s |"
  print "|---|---|---|---|"
  for (i = 1; i <= 2; i++) {
    mtu = i == 1 ? 1500 : 65520
    printf "| %d | %s | %s | %s |\n", mtu, f(med("pump", "pump_g2h", mtu, 0, "value"), 2),
      f(med("pump", "pump_h2g", mtu, 0, "value"), 2), f(med("pump", "pump_h2g_delivered", mtu, 0, "value"), 2)
  }
  print ""
}

END {
  section_summary()
  section_bulk()
  section_budget()
  section_small()
  section_scale()
  section_pump()
  print "## Plots"
  print ""
  print "![throughput per path and MTU](" plot_prefix "-throughput.png)"
  print ""
  print "![forwarder CPU per GB](" plot_prefix "-cpu.png)"
  print ""
  print "![throughput and RR against idle connections](" plot_prefix "-scale.png)"
  print ""
}
