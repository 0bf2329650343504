#!/usr/bin/env bash
# Batch-1 decode benchmark on a synthetic model of a named shape (default
# tinyllama-1.1b, float32, about 4.4 GB, written once to $SHARDLM_BENCH_DIR,
# default /tmp/shardlm-bench), with the bandwidth probe in the same run.
# SHAPE-bf16 or SHAPE-f16 (e.g. tinyllama-1.1b-bf16) is a Hugging Face
# directory of that shape in that dtype (mkmodel --format hf), held in it.
#   bench/decode.sh [SHAPE] [THREADS] [bench_decode options, e.g. --weights mapped]
set -euo pipefail
cd "$(dirname "$0")/.."
shape=${1:-tinyllama-1.1b}
threads=${2:-2}
dir=${SHARDLM_BENCH_DIR:-/tmp/shardlm-bench}
mkdir -p build "$dir"
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DSLM_TESTS=OFF \
    -DSLM_CUDA=OFF >build/bench.configure.log 2>&1 ||
    { cat build/bench.configure.log; exit 1; }
cmake --build build/bench -j "$(nproc)" --target shardlm bench_decode >/dev/null
case $shape in
*-bf16 | *-f16)
    model="$dir/$shape"
    [ -f "$model/model.safetensors" ] ||
        build/bench/shardlm mkmodel --format hf --dtype "${shape##*-}" \
            --shape "${shape%-*}" --seed 1 --out "$model"
    ;;
*)
    model="$dir/$shape.bin"
    [ -f "$model" ] || build/bench/shardlm mkmodel --shape "$shape" --seed 1 --out "$model"
    ;;
esac
build/bench/bench_decode --model "$model" --threads "$threads" --tokens 32 --warmup 4 "${@:3}"
