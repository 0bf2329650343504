#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs the dependencies,
# then builds and runs every test twice - a release build with warnings as
# errors (and the CUDA kernels, where nvcc is found), and an ASan+UBSan build -
# then runs every libFuzzer target for a minute (tests/fuzz/run.sh).
# Tests needing the shared models or a GPU report themselves skipped when
# those are absent. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
models=${SHARDLM_MODELS_DIR:-$PWD/../shared/models}
golden=${SHARDLM_GOLDEN_DIR:-$PWD/../shared/golden}

run_suite() { # NAME BUILD_DIR CMAKE_ARGS...
    local name=$1 dir=$2
    shift 2
    echo "=== $name: configure and build ($dir)"
    cmake -S . -B "$dir" -DSLM_WERROR=ON -DSLM_MODELS_DIR="$models" \
        -DSLM_GOLDEN_DIR="$golden" "$@" >"$dir.configure.log" 2>&1 ||
        { cat "$dir.configure.log"; return 1; }
    cmake --build "$dir" -j "$jobs"
    echo "=== $name: tests"
    ctest --test-dir "$dir" --output-on-failure -j "$jobs"
}


mkdir -p build
run_suite release build/ci-release -DCMAKE_BUILD_TYPE=RelWithDebInfo
# halt_on_error: the first sanitizer report fails the test that caused it.
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run_suite asan+ubsan build/ci-asan -DSLM_SANITIZE=ON -DSLM_CUDA=OFF \
    -DSLM_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug
# Every parser of outside bytes (control and client messages, tokenizer,
# manifest, allowlist) under libFuzzer for ${FUZZ_SECONDS:-60} s each.
echo "=== fuzz: every libFuzzer target"
bash tests/fuzz/run.sh build/ci-release
echo "=== all suites passed"
