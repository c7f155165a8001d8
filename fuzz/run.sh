#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded time, one job each, starting from
# the committed seeds in fuzz/seeds/<target>/ plus whatever fuzz/corpus/<target>/ gathered
# before. Prints a results table; exits 1 if any target found a crash, leak, timeout or OOM.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]     # default 60 s, all targets
#   bash fuzz/run.sh 10                        # smoke mode (CI-sized)
#
# Environment: FUZZ_SANITIZER=address|none (default address), CARGO_TARGET_DIR (default
# fuzz/target), FUZZ_ARGS (extra libFuzzer flags). cargo-fuzz needs -Z flags: on a stable
# toolchain they are unlocked with RUSTC_BOOTSTRAP=1 (the ASan runtime ships with stable std).
set -uo pipefail

secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(nvlist_decode bhyve_config hostfwd frame_path reasm wire api_request cli)
fi
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-address}

if ! cargo fuzz build --sanitizer "$sanitizer" >/dev/null 2>&1; then
    echo "run.sh: cargo fuzz build failed (sanitizer $sanitizer)" >&2
    cargo fuzz build --sanitizer "$sanitizer" >&2
    exit 2
fi

extra_flags() {
    case "$1" in
        hostfwd) echo "-dict=fuzz/dicts/hostfwd.dict -max_len=512" ;;
        # A request line is at most 64 KiB; short ones find the grammar faster.
        api_request) echo "-dict=fuzz/dicts/api_request.dict -max_len=4096" ;;
        bhyve_config) echo "-dict=fuzz/dicts/bhyve_config.dict -max_len=4096" ;;
        nvlist_decode) echo "-max_len=4096" ;;
        cli) echo "-max_len=1024" ;;
        # Several full-size frames per input.
        frame_path) echo "-max_len=8192" ;;
        # Trains of full-size fragments.
        reasm) echo "-max_len=16384" ;;
    esac
}

mkdir -p fuzz/logs
status=0
rows=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log="fuzz/logs/$t.log"
    before=$(ls "fuzz/artifacts/$t" | wc -l)
    # shellcheck disable=SC2046
    cargo fuzz run --sanitizer "$sanitizer" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        $(extra_flags "$t") ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    corpus=$(ls "fuzz/corpus/$t" | wc -l)
    found=$(($(ls "fuzz/artifacts/$t" | wc -l) - before))
    if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then
        status=1
        echo "== $t: libFuzzer exit $rc, $found new artifact(s) in fuzz/artifacts/$t; tail of $log:" >&2
        grep -E 'ERROR|panicked|SUMMARY|Test unit written' "$log" | head -n 20 >&2
    fi
    rows+=("| $t | ${secs}s | ${execs:-?} | ${rate:-?} | $corpus | $found |")
done

echo
echo "| target | time | execs | execs/s | corpus | new artifacts |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit $status
