#!/usr/bin/env bash
# bench/gpu/run.sh - the GPU benchmark, in one go: builds shardlm with CUDA,
# runs the GPU tests, measures the device's copy bandwidth (membw_cuda), and
# times the decode step of tinyllama-1.1b and of a 7B shape (synthetic
# checkpoints from `shardlm mkmodel`, written once to $SHARDLM_BENCH_DIR,
# default /tmp/shardlm-bench; the 7B one is about 27 GB) at batch 1, 8 and
# 64, printing the bytes/s each step achieves against that bandwidth.
# Refuses, exit 1, where there is no GPU.
#   bench/gpu/run.sh [SHAPE...]     (default: tinyllama-1.1b 7b)
set -euo pipefail
asroot=() # shardlm refuses root unless told
[ "$(id -u)" -eq 0 ] && asroot=(--allow-root)
cd "$(dirname "$0")/../.."
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L 2>/dev/null | grep -q GPU; then
    echo "bench/gpu/run.sh: no NVIDIA GPU here (nvidia-smi lists none);" \
         "run it on a machine with one" >&2
    exit 1
fi
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=(tinyllama-1.1b 7b)
dir=${SHARDLM_BENCH_DIR:-/tmp/shardlm-bench}
build=build/gpu-bench
mkdir -p build "$dir"

echo "== build (Release, CUDA)"
cmake -S . -B $build -DCMAKE_BUILD_TYPE=Release -DSLM_CUDA=ON -DSLM_BENCH=ON \
    >build/gpu-bench.configure.log 2>&1 ||
    { cat build/gpu-bench.configure.log; exit 1; }
cmake --build $build -j "$(nproc)" >build/gpu-bench.build.log 2>&1 ||
    { tail -40 build/gpu-bench.build.log; exit 1; }
have_decode=0
[ -x $build/bench_gpu_decode ] && have_decode=1

echo "== check: GPU tests and the golden texts"
# A failed check is reported at the end, not fatal: the timings still say
# something, but the run exits non-zero.
checks=0
(cd $build && ctest -R 'gpu\.|device|golden' --output-on-failure) || checks=1

echo "== copy bandwidth"
if [ -x $build/membw_cuda ]; then
    membw_bin=$build/membw_cuda
else
    # not yet a CMake target: compile it directly against the toolkit
    cuda=$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")
    membw_bin=$build/membw_cuda.standalone
    cc -O2 -o $membw_bin bench/gpu/membw_cuda.c -I"$cuda/include" \
        -L"$cuda/lib64" -lcudart -Wl,-rpath,"$cuda/lib64"
fi
membw_line=$($membw_bin 2048)
echo "$membw_line"
membw=$(sed -n 's/.*: \([0-9.]*\) GB\/s.*/\1/p' <<<"$membw_line")

for shape in "${shapes[@]}"; do
    model="$dir/$shape.bin"
    [ -f "$model" ] || $build/shardlm mkmodel --shape "$shape" --seed 1 --out "$model"
    echo "== decode: $shape"
    if [ $have_decode -eq 1 ]; then
        for batch in 1 8 64; do
            $build/bench_gpu_decode --model "$model" --batch $batch --steps 64 \
                --warmup 8 --membw-gbps "$membw" || echo "(batch $batch failed)"
        done
    else
        # bench_gpu_decode not built: batch 1 through `shardlm generate`
        tok=${SHARDLM_MODELS_DIR:-../shared/models}/tokenizer.bin
        $build/shardlm generate "${asroot[@]}" --model "$model" --tokenizer "$tok" \
            --device cuda -n 128 --temperature 0 2>&1 >/dev/null | tail -1
        bytes=$(stat -c %s "$model")
        echo "  (weights: $((bytes / 2)) bytes in float16; divide by the" \
             "step time above and compare with $membw GB/s)"
    fi
done
if [ $checks -ne 0 ]; then
    echo "bench/gpu/run.sh: the GPU checks FAILED (see above); timings are" \
         "of a forward pass that does not pass its tests" >&2
    exit 1
fi
