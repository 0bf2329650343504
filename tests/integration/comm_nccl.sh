#!/usr/bin/env bash
# The NCCL collectives backend (collectives/nccl/comm_nccl.c) across ranks,
# one GPU each: tests/mpi/nccl_ranks checks every operation (send/recv
# included, which a single GPU cannot) with 2 up to min(GPUs, 4) ranks, then
# the watchdog: the last rank stays out of an all-reduce, and the others
# must give up within their timeout instead of hanging. Skipped (77) in
# builds without CUDA and where fewer than two GPUs are visible. Each run is
# under `timeout`, so a hang is a failure, not a stuck suite.
source "$(dirname "$0")/../lib.sh"
require_mpirun
prog=${SHARDLM_TEST_BIN_DIR:?SHARDLM_TEST_BIN_DIR must name the test build directory}/nccl_ranks
[ -x "$prog" ] || { echo "FAIL: $prog is not built"; exit 1; }
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
[ "$ngpu" -ge 2 ] || { echo "SKIP: $ngpu GPUs (2 needed)"; exit 77; }
"$prog" --probe >"$tmp/probe" 2>&1
if [ $? -eq 77 ]; then cat "$tmp/probe"; exit 77; fi # built without CUDA

# run_np N: the program on N ranks; its output is shown on failure.
run_np() {
    local n=$1 rc
    timeout 120 "${mpirun[@]}" -np "$n" "$prog" >"$tmp/out.$n" 2>&1
    rc=$?
    tail -n 2 "$tmp/out.$n"
    if [ $rc -ne 0 ] || ! tail -n 1 "$tmp/out.$n" | grep -qE '^[0-9]+ passed, 0 failed$'; then
        echo "mpirun -np $n exited $rc:"; head -c 8000 "$tmp/out.$n"; echo
        return 1
    fi
}

# stall_np N: the last rank never joins; the job must end, cleanly, with
# every other rank's watchdog having fired.
stall_np() {
    local n=$1 rc
    timeout 120 "${mpirun[@]}" -np "$n" "$prog" --stall >"$tmp/stall.$n" 2>&1
    rc=$?
    if [ $rc -ne 0 ] || ! grep -q '^stall: ok$' "$tmp/stall.$n" ||
        [ "$(grep -c 'did not finish within' "$tmp/stall.$n")" -ne $((n - 1)) ]; then
        echo "stall with $n ranks: mpirun exited $rc:"; head -c 8000 "$tmp/stall.$n"; echo
        return 1
    fi
}

max=$((ngpu < 4 ? ngpu : 4))
for n in $(seq 2 "$max"); do
    check "mpirun -np $n nccl_ranks" run_np "$n"
done
check "watchdog with 2 ranks" stall_np 2
[ "$max" -ge 3 ] && check "watchdog with $max ranks" stall_np "$max"
finish
