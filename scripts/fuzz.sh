#!/usr/bin/env bash
# Run the cargo-fuzz targets in fuzz/ (nightly), each for MINUTES (default 10), and print libFuzzer's final
# stats per target: executions, execs/s, coverage (cov:), features (ft:), corpus size and crashes.
#
#   scripts/fuzz.sh [MINUTES] [TARGET...]      (no targets: all of them, one after another)
#   FUZZ_JOBS=2 scripts/fuzz.sh 2              (two targets at a time)
#
# The working corpus is fuzz/corpus/<target> (ignored by git), seeded from fuzz/seeds/<target>; crashes land
# in fuzz/artifacts/<target>. Every crash becomes a regression test beside the code in the main workspace.
set -euo pipefail

cd "$(dirname "$0")/.."
minutes="${1:-10}"
shift || true
jobs="${FUZZ_JOBS:-1}"

if ! command -v cargo-fuzz >/dev/null; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

cd fuzz
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build >/dev/null
mkdir -p logs
seconds=$((minutes * 60))

run() {
    local t="$1"
    mkdir -p "corpus/$t" "artifacts/$t"
    local seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    # -rss_limit_mb: str0m and the opus encoder are not small; 4 GB keeps one target from starving the box.
    cargo +nightly fuzz run "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 \
        >"logs/$t.log" 2>&1 || true
}

summary() {
    local t="$1" log="logs/$1.log"
    local execs rate cov ft corp crashes
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -o '[0-9]*')
    ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | grep -o '[0-9]*')
    corp=$(grep -oE 'corp: [0-9]+/[0-9]+[bKM]*' "$log" | tail -1 | cut -d' ' -f2)
    crashes=$(find "artifacts/$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
    printf '%-18s execs %-10s execs/s %-7s cov %-6s ft %-7s corpus %-12s crashes %s\n' \
        "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes"
}

running=0
for t in "${targets[@]}"; do
    run "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

echo "== fuzz: ${minutes} min per target (logs in fuzz/logs) =="
status=0
for t in "${targets[@]}"; do
    summary "$t"
    if grep -qE '^==[0-9]+==ERROR|panicked at|deadly signal' "logs/$t.log"; then
        status=1
    fi
done
exit "$status"
