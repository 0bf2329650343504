#!/usr/bin/env bash
# The golden texts at every tensor/pipeline split the issue names: each rank
# a shard holding only its slice, activations over the MPI collectives. Greedy
# output for every ../shared/golden/NN.prompt must equal NN.txt byte for byte.
source "$(dirname "$0")/../lib.sh"
require "$models/stories260K.bin" "$models/tok512.bin" "$golden/01.prompt"
require_mpirun
prog=${SHARDLM_TEST_BIN_DIR:?}/shard_golden
# Up to 8 ranks share 2 cores here: one thread each, or spinning OpenMP teams
# starve one another (44 s instead of 0.5 s at tp=8).
export OMP_NUM_THREADS=1
for split in "1 1" "2 1" "4 1" "8 1" "1 2" "2 2"; do
    read -r tp pp <<<"$split"
    for prompt in "$golden"/*.prompt; do
        name=$(basename "$prompt" .prompt)
        if ! timeout 120 "${mpirun[@]}" -np $((tp * pp)) "$prog" "$models/stories260K.bin" \
            "$models/tok512.bin" "$tp" "$pp" 256 "$(cat "$prompt")" \
            >"$tmp/out" 2>"$tmp/err"; then
            fail "tp=$tp pp=$pp $name: exit $?"; tail -20 "$tmp/err"; continue
        fi
        if cmp -s "$tmp/out" "$golden/$name.txt"; then
            echo "ok tp=$tp pp=$pp $name"
            pass
        else
            fail "tp=$tp pp=$pp $name: output differs from $name.txt"
            cmp "$tmp/out" "$golden/$name.txt"
        fi
    done
done
# An impossible split is refused on every rank, before any weight is read
# (slm_shard_create plans from the header first), with the reason and the
# sizes that would work.
timeout 60 "${mpirun[@]}" -np 3 "$prog" "$models/stories260K.bin" \
    "$models/tok512.bin" 3 1 16 "Once" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "tp=3 refused (exit $rc)" test "$rc" -ne 0 -a "$rc" -lt 124
check "tp=3 refusal names the working sizes" grep -q \
    "cannot split n_heads = 8 over tp = 3.*tp that work for this model: 1, 2, 4, 8" \
    "$tmp/err"
check "tp=3: no rank reported loading weights" bash -c "! grep -q 'bytes of weights' '$tmp/err'"
finish
