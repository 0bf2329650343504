#!/usr/bin/env bash
# Tensor parallelism on one machine, same model, same run:
#   1. decode tokens/s of TP=2 with 1 thread per rank against TP=1 with 2
#      threads (same cores in use), with the collectives' time per token;
#   2. per-rank weight memory at TP=4 against TP=1.
#   bench/tp.sh [SHAPE]     (default 110m; model written once to
#                            $SHARDLM_BENCH_DIR, default /tmp/shardlm-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
shape=${1:-110m}
dir=${SHARDLM_BENCH_DIR:-/tmp/shardlm-bench}
mkdir -p build "$dir"
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DSLM_TESTS=OFF \
    -DSLM_CUDA=OFF >build/bench.configure.log 2>&1 ||
    { cat build/bench.configure.log; exit 1; }
cmake --build build/bench -j "$(nproc)" --target shardlm bench_tp >/dev/null
model="$dir/$shape.bin"
[ -f "$model" ] || build/bench/shardlm mkmodel --shape "$shape" --seed 1 --out "$model"
mpirun=(mpirun --oversubscribe --bind-to none)
[ "$(id -u)" -eq 0 ] && mpirun+=(--allow-run-as-root)
run() { # THREADS TP
    OMP_NUM_THREADS=$1 "${mpirun[@]}" -np "$2" build/bench/bench_tp \
        --model "$model" --tp "$2" --tokens 64 --warmup 4
}
for round in 1 2; do
    echo "=== round $round: TP=1, 2 threads"
    run 2 1
    echo "=== round $round: TP=2, 1 thread per rank"
    run 1 2
done
echo "=== TP=4, 1 thread per rank (memory)"
run 1 4
