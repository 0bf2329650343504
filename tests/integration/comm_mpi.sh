#!/usr/bin/env bash
# The MPI collectives backend (collectives/comm_mpi.c) under mpirun with 1 to
# 4 ranks: tests/mpi/test_comm_mpi checks every operation on every rank and
# exits non-zero if any rank failed. Then the abort path: one rank calls
# slm_comm_abort while the others wait in a collective, and the job must end
# promptly with a non-zero status rather than hang. Each run is under
# `timeout`, so a hang is a failure, not a stuck suite.
source "$(dirname "$0")/../lib.sh"
require_mpirun
prog=${SHARDLM_TEST_BIN_DIR:?SHARDLM_TEST_BIN_DIR must name the test build directory}/test_comm_mpi
[ -x "$prog" ] || { echo "FAIL: $prog is not built"; exit 1; }

# run_np N: the test program on N ranks; its output is shown on failure.
run_np() {
    local n=$1 rc
    timeout 60 "${mpirun[@]}" -np "$n" "$prog" >"$tmp/out.$n" 2>&1
    rc=$?
    tail -n 2 "$tmp/out.$n"
    if [ $rc -ne 0 ] || ! tail -n 1 "$tmp/out.$n" | grep -qE '^[0-9]+ passed, 0 failed$'; then
        echo "mpirun -np $n exited $rc:"; head -c 8000 "$tmp/out.$n"; echo
        return 1
    fi
}

# abort_np N: the last rank aborts; the job must end non-zero, before the
# timeout (exit 124), having printed the reason.
abort_np() {
    local n=$1 rc
    timeout 60 "${mpirun[@]}" -np "$n" "$prog" --abort >"$tmp/abort.$n" 2>&1
    rc=$?
    if [ $rc -eq 0 ] || [ $rc -eq 124 ] ||
        ! grep -q "aborting the MPI job: test_comm_mpi: simulated lost rank" "$tmp/abort.$n"; then
        echo "abort with $n ranks: mpirun exited $rc:"; head -c 8000 "$tmp/abort.$n"; echo
        return 1
    fi
}

for n in 1 2 3 4; do
    check "mpirun -np $n test_comm_mpi" run_np "$n"
done
check "abort with 2 ranks" abort_np 2
check "abort with 4 ranks" abort_np 4
finish
