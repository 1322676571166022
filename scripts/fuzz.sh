#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/) for a fixed time, one after the other, and prints the
# executions and wall time of each. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`).
#
#   scripts/fuzz.sh [seconds-per-target]     (default 600)
#   FUZZ_TARGETS="onnx npy" scripts/fuzz.sh 60
#
# New inputs go to fuzz/work/<target>/ (ignored by git); the committed seeds in
# fuzz/corpus/<target>/ are only read. A crash, leak, timeout or out-of-memory input is written to
# fuzz/artifacts/<target>/ and makes the script exit non-zero after the other targets have run.
# Targets run without a sanitizer (safe Rust; debug assertions on, so integer overflow panics).
set -euo pipefail

seconds="${1:-600}"
targets="${FUZZ_TARGETS:-onnx safetensors_json npy image}"
cd "$(dirname "$0")/.."

flags=(--sanitizer none --debug-assertions)
cargo +nightly fuzz build "${flags[@]}"

max_len() {
    case "$1" in
        onnx | safetensors_json) echo 65536 ;; # the largest seeds are real models of ~64 KB
        npy) echo 4096 ;;
        image) echo 16384 ;;
    esac
}

failed=0
summary="target            status  executions  fuzz-s  wall-s  exec/s  corpus-files"
for target in $targets; do
    work="fuzz/work/$target"
    log="fuzz/work/$target.log"
    mkdir -p "$work"
    args=(-max_total_time="$seconds" -max_len="$(max_len "$target")" -rss_limit_mb=2048
        -timeout=10 -print_final_stats=1)
    [[ -f "fuzz/dict/$target.dict" ]] && args+=(-dict="fuzz/dict/$target.dict")
    echo "== $target: ${seconds}s, log in $log"
    start=$(date +%s)
    status=ok
    if ! cargo +nightly fuzz run "${flags[@]}" "$target" "$work" "fuzz/corpus/$target" -- \
        "${args[@]}" >"$log" 2>&1; then
        status=FAILED
        failed=1
        grep -E "^(==[0-9]+== ERROR|SUMMARY|thread '.*' panicked)|Test unit written to" "$log" || true
    fi
    wall=$(($(date +%s) - start))
    execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -n1)
    execs="${execs:-0}"
    # libFuzzer's own clock ("Done N runs in S second(s)"); wall time also counts the build check.
    fuzz_s=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n1)
    fuzz_s="${fuzz_s:-$wall}"
    rate=$((execs / (fuzz_s > 0 ? fuzz_s : 1)))
    files=$(find "$work" -type f | wc -l)
    summary+=$'\n'"$(printf '%-17s %-7s %10s %7s %7s %7s %13s' "$target" "$status" "$execs" "$fuzz_s" "$wall" "$rate" "$files")"
done
echo
echo "$summary"
exit "$failed"
