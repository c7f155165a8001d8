# shellcheck shell=bash
# The run's outputs: medians of the CSV, the Markdown report (machine, versions, tables,
# ratios, anomalies), gnuplot PNGs, and the latest summary in perf/README.md.

# medians CSV: config,test,mtu,n_idle,metric,median,min,max,count for every numeric column.
# Values are sorted by `sort` so the awk stays portable (mawk has no asort).
medians() {
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[i] = $i; next }
    { for (i = 6; i < NF; i++) if ($i != "") print $1 "," $2 "," $3 "," $4 "," col[i] "," $i }' "$1" |
    sort -t, -k1,5 -k6,6g |
    awk -F, '
      function flush() {
        if (n) printf "%s,%.6g,%.6g,%.6g,%d\n", group, (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2, v[1], v[n], n
        n = 0
      }
      { key = $1 "," $2 "," $3 "," $4 "," $5; if (key != group) { flush(); group = key } v[++n] = $6 }
      END { flush() }'
}

# write_report STEM ELAPSED_SECS
write_report() {
  local stem=$1 elapsed=$2 prefix
  prefix=$(basename "$stem")
  medians "$CSV" >"$WORK/medians.csv"
  {
    report_header "$prefix" "$elapsed"
    awk -v scale_ns="$SCALE_NS" -v plot_prefix="$prefix" -f "$HERE/lib/report.awk" "$WORK/medians.csv"
    report_anomalies "$prefix"
  } >"$stem.md"
  plot_all "$stem"
  if [ "$OUT" = "$HERE/results" ]; then
    update_readme "$stem.md"
  fi
}

report_header() {
  local prefix=$1 elapsed=$2 commit
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$ROOT" diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
  cat <<EOF
# End-to-end benchmark: $(date +%F) on $(hostname)

- Mode: **$MODE**: median of $REPS run(s) per cell, ${DURATION} s each; syscalls counted over a
  ${WINDOW} s window inside each run; run took $((elapsed / 60)) min $((elapsed % 60)) s.
- Machine: $(cpu_model), $(nproc) CPUs; kernel $(uname -r); load average at the end
  $(cut -d' ' -f1-3 /proc/loadavg).
- Versions: libslirp0 $(dpkg-query -W -f='${Version}' libslirp0 2>/dev/null || echo ?),
  $(slirp4netns --version 2>/dev/null | head -1), $(iperf3 --version 2>/dev/null | head -1 | cut -d' ' -f1-2),
  $(perf --version 2>/dev/null || echo "no perf"); helper at commit $commit.
- **Noise:** this machine is shared with other agents building code, so absolute figures move
  from run to run. Configs are interleaved (repetition → test → config) and the ratios compare
  figures from this one run; trust ratios over absolute numbers.
- Paths: *ours* is \`slirp-frontend --open\` (a tap in a namespace pumped into the helper's
  SOCK_SEQPACKET socket, as bhyve does) with the default helper; *C design* adds
  \`--poller poll --batch 1\`; *slirp4netns* (\`--configure --mtu=N --disable-dns\`, default route
  deleted) reads the tap itself, one hop fewer; *veth* is iperf3 between two namespaces (MTU 1500
  with TSO/GSO/GRO off); *loopback* is the host's lo (MTU 65536). The guest reaches the host's
  127.0.0.1 at 10.0.2.2; no namespace has a default route.
- Costs: forwarder = the helper process (or slirp4netns), utime+stime from /proc/PID/stat over
  the whole run per GB received; pump = the slirp-frontend process (its pump thread; not part of
  bhyve's cost); syscalls from \`perf stat -e raw_syscalls:sys_enter -p PID\`; frames from the
  helper's SIGUSR1 counters (rx_frames + tx_frames) or the tap's counters (slirp4netns); peak RSS
  is VmHWM.

EOF
}

cpu_model() {
  sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1
}

# Cells that failed or were skipped: the report must say what it does not show.
report_anomalies() {
  local prefix=$1 errors
  errors=$(awk -F, 'NR > 1 && $NF != "" { print "- " $1 " " $2 " MTU " $3 ", " $4 " idle, run " $5 ": " $NF }' "$CSV")
  if [ -n "$errors" ] || [ "${#SKIPPED[@]}" -gt 0 ]; then
    echo "## Failed or skipped cells"
    echo ""
    [ -z "$errors" ] || echo "$errors"
    local s
    for s in "${SKIPPED[@]}"; do echo "- skipped: $s"; done
    echo ""
  fi
  echo "Every run's figures (one row each): [$prefix.csv]($prefix.csv)."
}

# plot_all STEM: data files from the medians, then one gnuplot script per figure.
plot_all() {
  # gnuplot warns about columns with no data (a config not run): keep that out of the console.
  local stem=$1 m=$WORK/medians.csv glog=$WORK/gnuplot.log
  # Throughput: one cluster per (direction, MTU), one bar per path; '?' = not measured.
  awk -F, -v OFS='\t' '
    $5 == "value" && $4 == 0 && ($2 == "tcp_g2h" || $2 == "tcp_h2g") { v[$1, $2, ($3 > 1500 ? "big" : "1500")] = $6 }
    function g(c, t, m) { return ((c, t, m) in v) ? v[c, t, m] : "?" }
    END {
      print "group", "ours", "C design", "slirp4netns", "veth", "loopback"
      split("tcp_g2h tcp_h2g", ts, " "); split("1500 big", ms, " ")
      for (i = 1; i <= 2; i++) for (j = 1; j <= 2; j++) {
        t = ts[i]; mm = ms[j]
        label = (t == "tcp_g2h" ? "g2h" : "h2g") " MTU " (mm == "big" ? "65520" : "1500")
        print "\"" label "\"", g("ours", t, mm), g("cdesign", t, mm), g("slirp4netns", t, mm), g("veth", t, mm), g("loopback", t, mm)
      }
    }' "$m" >"$WORK/throughput.dat"
  awk -F, -v OFS='\t' '
    $5 == "fwd_cpu_s_per_gb" && $4 == 0 && ($2 == "tcp_g2h" || $2 == "tcp_h2g") { v[$1, $2, $3] = $6 }
    function g(c, t, m) { return ((c, t, m) in v) ? v[c, t, m] : "?" }
    END {
      print "group", "ours", "C design", "slirp4netns"
      split("tcp_g2h tcp_h2g", ts, " "); split("1500 65520", ms, " ")
      for (i = 1; i <= 2; i++) for (j = 1; j <= 2; j++) {
        t = ts[i]; mm = ms[j]
        print "\"" (t == "tcp_g2h" ? "g2h" : "h2g") " MTU " mm "\"", g("ours", t, mm), g("cdesign", t, mm), g("slirp4netns", t, mm)
      }
    }' "$m" >"$WORK/cpu.dat"
  awk -F, -v OFS='\t' -v ns="0 $SCALE_NS" '
    $5 == "value" && $3 == 1500 && ($2 == "tcp_g2h" || $2 == "rr") { v[$1, $2, $4] = $6 }
    function g(c, t, n) { return ((c, t, n) in v) ? v[c, t, n] : "?" }
    END {
      print "N", "ours", "C design", "slirp4netns", "ours", "C design", "slirp4netns"
      k = split(ns, n, " ")
      for (i = 1; i <= k; i++)
        print n[i], g("ours", "tcp_g2h", n[i]), g("cdesign", "tcp_g2h", n[i]), g("slirp4netns", "tcp_g2h", n[i]),
          g("ours", "rr", n[i]), g("cdesign", "rr", n[i]), g("slirp4netns", "rr", n[i])
    }' "$m" >"$WORK/scale.dat"
  local common="set terminal pngcairo size 1000,560 font 'sans,11'; set datafile missing '?';
    set datafile separator tab; set key top left; set grid ytics"
  # Bars on a log axis: the ceilings are 10-40x the forwarders, which would vanish on a linear one.
  gnuplot -e "$common; set output '$stem-throughput.png';
    set title 'TCP throughput, one stream (median Gbit/s, log scale)'; set ylabel 'Gbit/s';
    set logscale y; set yrange [0.01:*]; set style data histograms;
    set style histogram clustered gap 1; set style fill solid 0.85 border -1; set boxwidth 0.9;
    plot for [i=2:6] '$WORK/throughput.dat' using i:xtic(1) title columnheader(i)" 2>>"$glog" ||
    log "gnuplot: throughput plot failed (see $glog)"
  gnuplot -e "$common; set output '$stem-cpu.png';
    set title 'Forwarder CPU per GB moved (median CPU-seconds/GB, lower is better)';
    set ylabel 'CPU-s per GB'; set yrange [0:*]; set style data histograms;
    set style histogram clustered gap 1; set style fill solid 0.85 border -1; set boxwidth 0.9;
    plot for [i=2:4] '$WORK/cpu.dat' using i:xtic(1) title columnheader(i)" 2>>"$glog" ||
    log "gnuplot: cpu plot failed (see $glog)"
  gnuplot -e "$common; set output '$stem-scale.png'; set multiplot layout 1,2
    title 'With N idle TCP connections held open (MTU 1500, medians, log scale)';
    set logscale y; set xlabel 'idle connections N'; set key bottom left;
    set ylabel 'TCP guest->host Gbit/s';
    plot for [i=2:4] '$WORK/scale.dat' using 0:i:xtic(1) with linespoints lw 2 pt 7 title columnheader(i);
    set ylabel '1-byte round trips/s';
    plot for [i=5:7] '$WORK/scale.dat' using 0:i:xtic(1) with linespoints lw 2 pt 7 title columnheader(i);
    unset multiplot" 2>>"$glog" || log "gnuplot: scale plot failed (see $glog)"
}

# Put the run's summary between the markers in perf/README.md.
update_readme() {
  local md=$1 readme=$HERE/README.md summary
  [ -f "$readme" ] && grep -q '<!-- latest-results:begin -->' "$readme" || return 0
  summary=$WORK/summary.md
  {
    echo "<!-- latest-results:begin -->"
    echo "Latest run: [$(basename "$md")](results/$(basename "$md")) ($MODE mode; $(uname -r); see the file for the machine and noise)."
    awk '/^## Summary/ { on = 1; next } on && /^## / { exit } on' "$md"
    echo "<!-- latest-results:end -->"
  } >"$summary"
  awk -v f="$summary" '
    /<!-- latest-results:begin -->/ { while ((getline line < f) > 0) print line; skip = 1; next }
    /<!-- latest-results:end -->/ { skip = 0; next }
    !skip' "$readme" >"$readme.new"
  mv "$readme.new" "$readme"
}
