#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs the dependencies,
# then builds and runs every test twice - a release build with warnings as
# errors (and the CUDA kernels, where nvcc is found), and an ASan+UBSan build -
# then runs every libFuzzer target for a minute (tests/fuzz/run.sh).
#
# Skips are counted and named, never passed off as passes: a test that cannot
# do its work here exits 77 (ctest: skipped). Outside CI that is allowed for a
# missing shared model or GPU; in CI (CI=true) the shared models and golden
# files must be there (a test that misses them fails), and any skip other
# than one for hardware the machine lacks (see hardware_skip) fails the run.
# Ends with the counts: passed, failed, skipped (by name). Exits non-zero if
# anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
models=${SHARDLM_MODELS_DIR:-$PWD/../shared/models}
golden=${SHARDLM_GOLDEN_DIR:-$PWD/../shared/golden}
ci=${CI:-false}
# Extra ctest arguments, for a subset while developing (-R unit\.); CI
# leaves it empty.
read -r -a ctest_args <<<"${SLM_CTEST_ARGS:-}"

# Skips CI accepts: tests of hardware that CI machines lack (GPUs: gpu.*,
# comm_nccl; AVX-512: *.avx512) or that only a machine without a GPU can
# run (*.without_gpu).
hardware_skip='^(gpu\..*|integration\.comm_nccl|.*\.avx512|.*\.without_gpu)$'

passed=0 failed=0
skipped=() failures=()

# count_results SUITE LOG: adds ctest's verdict on each test in LOG to the
# totals. Anything but Passed or Skipped (Failed, Timeout, Exception, Not
# Run) is a failure.
count_results() {
    local suite=$1 name status
    while read -r name status; do
        case $status in
        Passed) passed=$((passed + 1)) ;;
        Skipped) skipped+=("$suite:$name") ;;
        *) failed=$((failed + 1)); failures+=("$suite:$name ($status)") ;;
        esac
    done < <(sed -n 's/^ *[0-9]*\/[0-9]* Test *#[0-9]*: \([^ ]*\) \.*[* ]*\([A-Za-z]*\).*/\1 \2/p' "$2")
}

run_suite() { # NAME BUILD_DIR CMAKE_ARGS...
    local name=$1 dir=$2 rc=0 before=$failed
    shift 2
    echo "=== $name: configure and build ($dir)"
    cmake -S . -B "$dir" -DSLM_WERROR=ON -DSLM_MODELS_DIR="$models" \
        -DSLM_GOLDEN_DIR="$golden" "$@" >"$dir.configure.log" 2>&1 ||
        { cat "$dir.configure.log"; return 1; }
    cmake --build "$dir" -j "$jobs"
    echo "=== $name: tests"
    ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$jobs" \
        "${ctest_args[@]}" 2>&1 | tee "$dir.ctest.log" || rc=$?
    count_results "$name" "$dir.ctest.log"
    # ctest's own failure (no tests, a crash of ctest) counts even if no
    # line of this suite said Failed.
    if [ $rc -ne 0 ] && [ "$failed" -eq "$before" ]; then
        failed=$((failed + 1)); failures+=("$name: ctest exited $rc")
    fi
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
if bash tests/fuzz/run.sh build/ci-release; then
    passed=$((passed + 1))
else
    failed=$((failed + 1)); failures+=("fuzz")
fi

echo "=== summary"
for f in "${failures[@]}"; do echo "failed: $f"; done
bad_skips=0
for s in "${skipped[@]}"; do
    why=
    if [[ ! ${s#*:} =~ $hardware_skip ]]; then
        bad_skips=$((bad_skips + 1))
        [ "$ci" = true ] && why=" (not allowed in CI: only hardware skips are)"
    fi
    echo "skipped: $s$why"
done
echo "total: $passed passed, $failed failed, ${#skipped[@]} skipped"
[ "$failed" -eq 0 ] || exit 1
if [ "$ci" = true ] && [ "$bad_skips" -gt 0 ]; then
    echo "CI: $bad_skips tests skipped that must run here"
    exit 1
fi
echo "=== all suites passed"
