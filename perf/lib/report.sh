# shellcheck shell=bash
# The run's outputs: medians and spread of the CSV (<stem>-summary.csv), the Markdown report
# (commit, machine, tap settings, tables, ratios, anomalies), gnuplot PNGs, and the latest
# summary in perf/README.md (full runs of a clean checkout into perf/results only).
# perf/plot.sh uses medians, plot_label and plot_all alone, on a results CSV.

# medians CSV: config,test,mtu,n_idle,metric,median,min,max,count,q1,q3 for every numeric
# column (q1 and q3 are the quartiles, interpolated between the sorted runs). Values are sorted
# by `sort` so the awk stays portable (mawk has no asort). The runs' error column is skipped.
medians() {
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[i] = $i; next }
    { for (i = 6; i <= NF; i++) if ($i != "" && col[i] != "error") print $1 "," $2 "," $3 "," $4 "," col[i] "," $i }' "$1" |
    sort -t, -k1,5 -k6,6g |
    awk -F, '
      function q(p,    x, k) { x = 1 + (n - 1) * p; k = int(x); return k >= n ? v[n] : v[k] + (x - k) * (v[k + 1] - v[k]) }
      function flush() {
        if (n) printf "%s,%.6g,%.6g,%.6g,%d,%.6g,%.6g\n", group, q(0.5), v[1], v[n], n, q(0.25), q(0.75)
        n = 0
      }
      { key = $1 "," $2 "," $3 "," $4 "," $5; if (key != group) { flush(); group = key } v[++n] = $6 }
      END { flush() }'
}

# The spread of every cell, for readers and other tools: <stem>-summary.csv.
SUMMARY_COLUMNS=config,test,mtu,n_idle,metric,median,min,max,runs,q1,q3

# write_report STEM ELAPSED_SECS
write_report() {
  local stem=$1 elapsed=$2 prefix
  prefix=$(basename "$stem")
  medians "$CSV" >"$WORK/medians.csv"
  { echo "$SUMMARY_COLUMNS"; cat "$WORK/medians.csv"; } >"$stem-summary.csv"
  {
    report_header "$prefix" "$elapsed"
    awk -v scale_ns="$SCALE_NS" -v plot_prefix="$prefix" -v reps="$REPS" \
      -f "$HERE/lib/report.awk" "$WORK/medians.csv"
    report_anomalies "$prefix"
  } >"$stem.md"
  plot_all "$stem" "$WORK/medians.csv" \
    "$(plot_label "$COMMIT" "$(date +%F)" "$REPS" "$(hostname): $(cpu_model), $(nproc) CPUs")"
  # Only a full run of committed code over the whole matrix, written where results are
  # committed, speaks for the project: a quick, dirty, --configs subset or --out run never
  # changes a tracked file.
  if [ "$MODE" = full ] && [ "$DIRTY" = 0 ] && [ "$OUT" = "$HERE/results" ] &&
    [ "$CONFIGS" = "$DEFAULT_CONFIGS" ]; then
    update_readme "$stem.md"
  else
    log "perf/README.md left alone ($MODE mode, $([ "$DIRTY" = 0 ] && echo clean || echo dirty) tree, configs $CONFIGS, results in $OUT)"
  fi
}

report_header() {
  local prefix=$1 elapsed=$2
  cat <<EOF
# End-to-end benchmark: $(date +%F) on $(hostname)

- Commit: \`$COMMIT\`$([ "$DIRTY" = 0 ] || echo " (**dirty**: run with uncommitted changes to tracked files; not a result to commit)").
- Mode: **$MODE**: $(mode_words), ${DURATION} s each; syscalls counted over a
  ${WINDOW} s window inside each run.
- Wall time: $((elapsed / 60)) min $((elapsed % 60)) s (the runner estimated $((ESTIMATE_SECS / 60)) min $((ESTIMATE_SECS % 60)) s).
- Machine: $(cpu_model), $(nproc) CPUs; kernel $(uname -r); load average at the start
  $LOAD_START, at the end $(cut -d' ' -f1-3 /proc/loadavg).
- Versions: libslirp0 $(dpkg-query -W -f='${Version}' libslirp0 2>/dev/null || echo ?),
  $(slirp4netns --version 2>/dev/null | head -1), $(iperf3 --version 2>/dev/null | head -1 | cut -d' ' -f1-2),
  $(perf --version 2>/dev/null || echo "no perf").
- Taps (ours and slirp4netns alike, set by the runner and read back): $(tap_settings_line).
  No process is pinned to a CPU: the scheduler places them (see perf/README.md, "Spread").
- **Noise:** this machine is shared with other agents building code, so absolute figures move
  from run to run. Configs are interleaved (repetition → test → config) and the ratios compare
  figures from this one run; every figure has its range (min–max) next to it, and its quartiles
  are in [$prefix-summary.csv]($prefix-summary.csv).
- Paths: *ours* is \`slirp-frontend --open\` (a tap in a namespace pumped into the helper's
  SOCK_SEQPACKET socket, as bhyve does) with the default helper; *C design* adds
  \`--poller poll --batch 1\`; *slirp4netns* (\`--configure --mtu=N --disable-dns\`, default route
  deleted) reads the tap itself, one hop fewer; *veth* is iperf3 between two namespaces (MTU 1500
  with TSO/GSO/GRO off); *loopback* is the host's lo (MTU 65536). The guest reaches the host's
  127.0.0.1 at 10.0.2.2; no namespace has a default route. *ours, IPv6* adds \`--ipv6\` (the
  helper's \`ipv6=on\`), *slirp4netns, IPv6* \`--enable-ipv6\`: the guest's SLAAC address reaches
  the host's ::1 at fec0::2 (ours) or fd00::2 (slirp4netns); their IPv6 default route is deleted.
- Costs: forwarder = the helper process (or slirp4netns), utime+stime from /proc/PID/stat over
  the whole run per GB received; pump = the slirp-frontend process (its pump thread; not part of
  bhyve's cost); syscalls from \`perf stat -e raw_syscalls:sys_enter -p PID\`; frames from the
  helper's SIGUSR1 counters (rx_frames + tx_frames) or the tap's counters (slirp4netns); peak RSS
  is VmHWM.

EOF
}

# "median of 5 runs per cell" or "a single run per cell (no range)".
mode_words() {
  if [ "$REPS" -le 1 ]; then echo "a single run per cell (no range)"; else echo "median of $REPS runs per cell"; fi
}

# Seconds to whole minutes, rounded.
minutes() { echo $((($1 + 30) / 60)); }

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

# plot_label COMMIT DATE REPS MACHINE: the footer every image carries, so a PNG copied alone
# still says what made it.
plot_label() {
  local runs commit=${1:0:12}
  [[ $1 != *-dirty ]] || commit+=-dirty
  if [ "$3" -le 1 ]; then
    runs="SINGLE RUN per cell (quick): no whiskers, no ranking"
  else
    runs="bars: median of $3 runs, whiskers: min-max"
  fi
  echo "commit $commit | $2 | $4 | $runs"
}

# plot_data MEDIANS METRIC CONFIGS ROWS: one line per row label, "label med min max" per
# config ('?' where not measured). ROWS is "label:test:mtu:n_idle ..." (label without spaces;
# '_' prints as a space).
plot_data() {
  awk -F, -v OFS='\t' -v metric="$2" -v configs="$3" -v rows="$4" '
    $5 == metric { med[$1, $2, $3, $4] = $6; lo[$1, $2, $3, $4] = $7; hi[$1, $2, $3, $4] = $8 }
    END {
      nc = split(configs, c, " "); nr = split(rows, r, " ")
      for (i = 1; i <= nr; i++) {
        split(r[i], p, ":"); label = p[1]; gsub("_", " ", label)
        line = "\"" label "\""
        for (j = 1; j <= nc; j++) {
          k = c[j] SUBSEP p[2] SUBSEP p[3] SUBSEP p[4]
          line = line OFS ((k in med) ? med[k] OFS lo[k] OFS hi[k] : "?" OFS "?" OFS "?")
        }
        print line
      }
    }' "$1"
}

# plot_all STEM MEDIANS LABEL: three PNGs next to STEM. Linear axes from 0, so a 3x gap looks
# like one; whiskers are the runs' min-max; idle connections N are categories, not a scale.
plot_all() {
  local stem=$1 m=$2 label=$3 dir glog
  dir=$(mktemp -d "${TMPDIR:-/tmp}/slirp-plot.XXXXXX")
  glog=$dir/gnuplot.log
  local fwd="ours cdesign slirp4netns" bulk="g2h_MTU_1500:tcp_g2h:1500:0 h2g_MTU_1500:tcp_h2g:1500:0
    g2h_MTU_65520:tcp_g2h:65520:0 h2g_MTU_65520:tcp_h2g:65520:0" ns n scale_rows="" ceilings
  plot_data "$m" value "$fwd" "$bulk" >"$dir/throughput.dat"
  plot_data "$m" fwd_cpu_s_per_gb "$fwd" "$bulk" >"$dir/cpu.dat"
  # N from the medians themselves, so plot.sh needs no option for it.
  ns=$(awk -F, '$2 == "tcp_g2h" && $3 == 1500 && $4 ~ /^[0-9]+$/ { print $4 }' "$m" | sort -un)
  for n in $ns; do scale_rows+=" N_=_$n:tcp_g2h:1500:$n"; done
  plot_data "$m" value "$fwd" "$scale_rows" >"$dir/scale-g2h.dat"
  plot_data "$m" value "$fwd" "${scale_rows//tcp_g2h/rr}" >"$dir/scale-rr.dat"
  # The ceilings are 5-20x the forwarders: named in the title instead of squashing the bars.
  ceilings=$(awk -F, '$5 == "value" && $4 == 0 && ($1 == "veth" || $1 == "loopback") && $2 ~ /^tcp_/ {
      printf "%s%s %s %s %.1f", sep, $1, substr($2, 5), $3, $6; sep = ", " }' "$m")
  local common="set terminal pngcairo size 1000,600 font 'sans,11'; set datafile missing '?';
    set datafile separator tab; set key top left; set grid ytics; set yrange [0:*];
    set bmargin 5; set label 99 \"$label\" at screen 0.01, 0.025 font 'sans,9';
    set style data histograms; set style histogram errorbars gap 1 lw 1;
    set style fill solid 0.85 border -1; set boxwidth 0.9; set errorbars 2"
  gnuplot -e "$common; set output '$stem-throughput.png';
    set title \"TCP throughput, one stream, Gbit/s (higher is better)\\n{/*0.8 ceilings, not drawn: ${ceilings:-not measured}}\";
    set ylabel 'Gbit/s';
    plot for [i=0:2] '$dir/throughput.dat' using (column(2+3*i)):(column(3+3*i)):(column(4+3*i)):xtic(1) title (i == 0 ? 'ours' : i == 1 ? 'C design' : 'slirp4netns')" \
    2>>"$glog" || log "gnuplot: throughput plot failed (see $glog)"
  gnuplot -e "$common; set output '$stem-cpu.png';
    set title 'Forwarder CPU-seconds per GB moved (lower is better)'; set ylabel 'CPU-s per GB';
    plot for [i=0:2] '$dir/cpu.dat' using (column(2+3*i)):(column(3+3*i)):(column(4+3*i)):xtic(1) title (i == 0 ? 'ours' : i == 1 ? 'C design' : 'slirp4netns')" \
    2>>"$glog" || log "gnuplot: cpu plot failed (see $glog)"
  gnuplot -e "$common; set output '$stem-scale.png'; set key top right;
    set multiplot layout 1,2 title 'With N idle TCP connections held open (MTU 1500; N is a category, not a scale)';
    set xlabel 'idle connections held'; set ylabel 'TCP guest->host Gbit/s';
    plot for [i=0:2] '$dir/scale-g2h.dat' using (column(2+3*i)):(column(3+3*i)):(column(4+3*i)):xtic(1) title (i == 0 ? 'ours' : i == 1 ? 'C design' : 'slirp4netns');
    set ylabel '1-byte round trips/s'; unset label 99;
    plot for [i=0:2] '$dir/scale-rr.dat' using (column(2+3*i)):(column(3+3*i)):(column(4+3*i)):xtic(1) title (i == 0 ? 'ours' : i == 1 ? 'C design' : 'slirp4netns');
    unset multiplot" 2>>"$glog" || log "gnuplot: scale plot failed (see $glog)"
  if grep -qi 'error' "$glog"; then log "gnuplot complained (see $glog)"; else rm -rf "$dir"; fi
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
