#!/usr/bin/env bash
# ThreadSanitizer over everything that runs threads: the shard's heartbeat
# thread, the OpenMP kernels, the coordinator's server loop beside ZeroMQ's
# I/O threads and the ZAP handler. Builds BUILD_PARENT/tsan (gcc,
# -fsanitize=thread, -O1 -g) and runs the unit tests, then the integration
# tests that start these threads (cluster, serving, faults, security) one at
# a time, each shard and client a TSAN binary. Fails on any report.
#
# OpenMP: gcc's code runs on LLVM's libomp (through its GOMP entry points)
# instead of libgomp, and libomp's Archer tool (libarcher.so; both from
# libomp-14-dev) tells TSAN about each parallel region's fork, join and
# barriers, so our parallel loops are checked for real. libgomp could not be
# (CMake refuses SLM_TSAN with it). Not clang: clang 14's TSAN pass leaves
# unchecked every access to a field of a stack object whose address escapes
# (a struct handed to pthread_create, such as the shard's heartbeat state),
# so races on those pass silently; gcc's instruments them.
#
# Libraries built without TSAN are named in tests/tsan.supp, each with its
# reason; none of our functions is. Every report of every process (mpirun's
# ranks, clients) goes to a file of its own (log_path), so a report fails the
# run even where a test expects its process to fail or never reads its
# stderr. Archer prints a warning ("please export ...
# ignore_noninstrumented_modules=1") in each process: tests/tsan.supp's
# narrower called_from_lib lines stand instead.
#
# Not run here: client_install (links the installed TSAN library into a
# program built without TSAN), comm_nccl and gpu.* (no CUDA in this build),
# slurm_batch (Slurm's launch of the same ranks cluster_run starts).
#
# Usage: tests/tsan.sh [BUILD_PARENT] (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
parent=${1:-build}
dir=$parent/tsan
jobs=$(nproc 2>/dev/null || echo 2)
models=${SHARDLM_MODELS_DIR:-$PWD/../shared/models}
golden=${SHARDLM_GOLDEN_DIR:-$PWD/../shared/golden}
llvm=/usr/lib/llvm-14/lib
# A test that cannot find the shared model would skip, and a run of skips
# reports no race: missing models fail here, as in CI.
export CI=true
for f in "$models/stories260K.bin" "$models/tok512.bin" "$golden"; do
    [ -e "$f" ] || { echo "tsan: $f not found (SHARDLM_MODELS_DIR, SHARDLM_GOLDEN_DIR)"; exit 1; }
done
for f in libomp.so libarcher.so; do
    [ -r "$llvm/$f" ] || { echo "tsan: $llvm/$f not found (deploy/install-deps.sh installs libomp-14-dev)"; exit 1; }
done

mkdir -p "$parent"
echo "=== tsan: configure and build ($dir)"
cmake -S . -B "$dir" -DCMAKE_C_COMPILER=gcc -DSLM_TSAN=ON -DSLM_CUDA=OFF \
    -DSLM_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-O1 -g" \
    -DOpenMP_C_FLAGS=-fopenmp -DOpenMP_C_LIB_NAMES=omp \
    -DOpenMP_omp_LIBRARY="$llvm/libomp.so" \
    -DSLM_WERROR=ON -DSLM_MODELS_DIR="$models" -DSLM_GOLDEN_DIR="$golden" \
    >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
cmake --build "$dir" -j "$jobs"
# libgomp as well would run some regions outside Archer's sight.
if ldd "$dir/shardlm" | grep -q libgomp || ! ldd "$dir/shardlm" | grep -q libomp.so.5; then
    echo "tsan: $dir/shardlm is not linked with libomp alone:"; ldd "$dir/shardlm"; exit 1
fi
export OMP_TOOL_LIBRARIES=$llvm/libarcher.so

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
# halt_on_error with exitcode 66: the first report ends the process with a
# status no test expects.
# The serving tests' 500 ms step deadline is for a release build; TSAN runs
# each step several times slower.
export SLM_TEST_STEP_TIMEOUT_MS=10000
export TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp:halt_on_error=1:exitcode=66:second_deadlock_stack=1:log_path=$logs/tsan"

rc=0
echo "=== tsan: unit tests"
ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$jobs" \
    -R '^unit\.' || rc=1
# One at a time: each starts several TSAN processes (ranks, 50 clients),
# and the serving tests' step and heartbeat deadlines assume the cores are
# theirs (serve_client's 500 ms step timeout failed beside serve_batch).
echo "=== tsan: integration tests"
ctest --test-dir "$dir" --output-on-failure --no-tests=error -j 1 \
    -R '^integration\.' -E '^integration\.(client_install|comm_nccl|slurm_batch)$' || rc=1

reports=("$logs"/tsan.*)
if [ -e "${reports[0]}" ]; then
    for f in "${reports[@]}"; do
        echo "--- ThreadSanitizer report (pid ${f##*.}):"
        head -60 "$f"
    done
    echo "tsan: ${#reports[@]} processes reported (above)"
    rc=1
fi
[ $rc -eq 0 ] || { echo "tsan: FAILED"; exit 1; }
echo "tsan: no ThreadSanitizer report"
