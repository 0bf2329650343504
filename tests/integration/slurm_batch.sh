#!/usr/bin/env bash
# deploy/slurm/batch.sbatch on a real Slurm: a private one-node cluster
# (tests/slurm/cluster.sh: its own munged, slurmctld and slurmd on 127.0.0.1,
# in the scratch directory) runs the golden prompts as one JSONL batch at
# TP=2 through `sbatch --wait`, srun --mpi=pmix starting the 3 ranks; each
# answer must equal NN.txt byte for byte and the job must end COMPLETED. A job
# submitted with the wrong task count must fail, saying which count it needs.
# Then deploy/slurm/serve.sbatch: the real server (where shardlm-client is
# built) answers health and the first golden prompt until scancel, which ends
# it without a requeue; and a stand-in server that dies on its first start is
# requeued once and runs again. Every daemon is stopped on exit, and nothing
# the jobs started is left.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/../slurm/cluster.sh"
require "$models/stories260K.bin" "$models/tok512.bin" "$golden/01.prompt" \
    "$golden/02.prompt"
command -v jq >/dev/null || { echo "SKIP: jq not found"; exit 77; }
for c in munged slurmctld slurmd sbatch srun squeue scontrol scancel sinfo; do
    if ! command -v "$c" >/dev/null; then
        # deploy/install-deps.sh installs Slurm: as root (CI) this is a failure
        [ "$(id -u)" -eq 0 ] || { echo "SKIP: $c not found"; exit 77; }
        echo "FAIL: $c not found: run deploy/install-deps.sh"
        exit 1
    fi
done
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
model="$models/stories260K.bin"
tok="$models/tok512.bin"
[[ $bin == /* ]] || bin=$PWD/$bin
[[ $model == /* ]] || model=$PWD/$model
[[ $tok == /* ]] || tok=$PWD/$tok

trap 'slurm_stop; rm -rf "$tmp"' EXIT
trap 'exit 143' TERM INT HUP # so that the EXIT trap runs (ctest's timeout)
started=$SECONDS
if ! slurm_start "$tmp/slurm"; then
    [ "$(id -u)" -eq 0 ] || { echo "SKIP: cannot start Slurm daemons as $(id -un)"; exit 77; }
    fail "the Slurm daemons did not start"
    finish
    exit
fi
echo "Slurm up in $((SECONDS - started)) s"
srun --mpi=list 2>&1 | grep -qw pmix ||
    fail "srun has no mpi/pmix plugin (Debian: slurm-wlm-basic-plugins, libpmix-dev)"

# --- the batch: golden prompts, greedy, TP=2 -----------------------------------
names=(01 02)
for name in "${names[@]}"; do
    jq -cn --arg id "$name" --rawfile p "$golden/$name.prompt" \
        '{id: $id, prompt: $p}' >>"$tmp/in.jsonl"
done
export_vars="ALL,TP=2,PP=1,MODEL=$model,TOKENIZER=$tok,SHARDLM=$bin"
export_vars+=",INPUT=$tmp/in.jsonl,OUTPUT=$tmp/out.jsonl,STEPS=256,TEMPERATURE=0"
t0=$SECONDS
# 3 tasks (1 + TP * PP) on a node of $(nproc) CPUs: --overcommit
jobid=$(timeout 180 sbatch --wait --parsable --ntasks=3 --overcommit \
    --time=5 --chdir="$tmp" --output="$tmp/batch-%j.out" \
    --export="$export_vars" "$srcdir/deploy/slurm/batch.sbatch" "${asroot[@]}")
rc=$?
echo "batch job ${jobid:-?}: sbatch --wait exit $rc after $((SECONDS - t0)) s"
check "batch job: sbatch --wait exits 0" test "$rc" -eq 0
state=$(slurm_job_state "$jobid")
check "batch job: ends COMPLETED, not $state" test "$state" = COMPLETED
if [ "$rc" -ne 0 ] || [ "$state" != COMPLETED ]; then
    tail -n 20 "$tmp"/batch-*.out
fi
lines=0
[ -f "$tmp/out.jsonl" ] && lines=$(wc -l <"$tmp/out.jsonl")
check "batch job: $lines answers for ${#names[@]} requests" test "$lines" -eq "${#names[@]}"
for name in "${names[@]}"; do
    jq -j "select(.id == \"$name\") | .text" "$tmp/out.jsonl" >"$tmp/text" 2>/dev/null
    printf '\n' >>"$tmp/text" # generate's final newline, as in NN.txt
    if cmp -s "$tmp/text" "$golden/$name.txt"; then
        echo "ok slurm tp=2 $name"
        pass
    else
        fail "slurm tp=2 $name: text differs from $name.txt"
    fi
done

# --- the wrong task count is refused, naming the right one ---------------------
jobid=$(timeout 60 sbatch --wait --parsable --ntasks=2 --time=5 \
    --chdir="$tmp" --output="$tmp/bad-%j.out" --export="$export_vars" \
    "$srcdir/deploy/slurm/batch.sbatch" "${asroot[@]}")
rc=$?
state=$(slurm_job_state "$jobid")
if [ "$rc" -ne 0 ] && [ "$state" = FAILED ] &&
    grep -q "needs 3 tasks .*sbatch --ntasks=3" "$tmp/bad-$jobid.out"; then
    pass
else
    fail "wrong task count: exit $rc, state $state"
    cat "$tmp/bad-$jobid.out"
fi

# --- serve.sbatch: the real server answers a client until scancel -------------
client=${SHARDLM_CLIENT:-$(dirname "$bin")/client/shardlm-client}
if [ -x "$client" ]; then
    port=$(slurm_free_port)
    jobid=$(sbatch --parsable --ntasks=3 --overcommit --time=5 --chdir="$tmp" \
        --output="$tmp/real-serve-%j.out" \
        --export="ALL,TP=2,MODEL=$model,TOKENIZER=$tok,SHARDLM=$bin,PORT=$port" \
        "$srcdir/deploy/slurm/serve.sbatch" "${asroot[@]}" --insecure)
    endpoint=tcp://127.0.0.1:$port
    for i in $(seq 150); do
        "$client" --connect "$endpoint" --timeout-ms 500 health >"$tmp/health" 2>&1 && break
        sleep 0.2
    done
    check "serve job: health says SERVING" grep -q 'state: SERVING' "$tmp/health"
    check "serve job: endpoint file names $endpoint" \
        grep -qxF "$endpoint" "$tmp/shardlm-serve-$jobid.endpoint"
    # the batch's first answer again, from the server: as many tokens, greedy
    n=$(jq -r 'select(.id == "01") | .completion_tokens' "$tmp/out.jsonl" 2>/dev/null)
    { cat "$golden/01.prompt"
      "$client" --connect "$endpoint" generate --prompt "$(cat "$golden/01.prompt")" \
          --temperature 0 -n "${n:-0}"
      printf '\n'; } >"$tmp/served" 2>"$tmp/served.err"
    if cmp -s "$tmp/served" "$golden/01.txt"; then
        echo "ok slurm serve tp=2 01"
        pass
    else
        fail "serve job: generate 01 differs from 01.txt"; cat "$tmp/served.err"
    fi
    scancel "$jobid"
    for i in $(seq 100); do
        state=$(slurm_job_state "$jobid")
        [ "$state" = CANCELLED ] && break
        sleep 0.1
    done
    check "serve job: CANCELLED by scancel, not $state" test "$state" = CANCELLED
    for i in $(seq 50); do # the batch shell's last words
        grep -q "the server exited" "$tmp/real-serve-$jobid.out" && break
        sleep 0.1
    done
    check "serve job: not requeued after scancel" \
        test "$(slurm_job_state "$jobid")" = CANCELLED
    check "serve job: no requeue asked" \
        bash -c "! grep -q requeueing '$tmp/real-serve-$jobid.out'"
    check "serve job: no sanitizer report" no_sanitizer_report "$tmp/real-serve-$jobid.out"
    [ $fails -eq 0 ] || cat "$tmp/real-serve-$jobid.out"
else
    skip_part "the real server under Slurm: $client not built"
fi

# --- serve.sbatch: requeued after a failure, not after scancel ------------------
# A stand-in for shardlm serve: on the first start rank 0 exits 1, as the
# coordinator does when it loses a shard; on the restart every rank waits to be
# stopped, as a healthy server does.
cat >"$tmp/fake-serve" <<'EOF'
#!/usr/bin/env bash
echo "fake-serve rank ${SLURM_PROCID:-?} restart ${SLURM_RESTART_COUNT:-0}: $*" >>"$FAKE_LOG"
if [ "${SLURM_RESTART_COUNT:-0}" -eq 0 ]; then
    [ "${SLURM_PROCID:-0}" -ne 0 ] || exit 1
    exec sleep 60 # --kill-on-bad-exit ends the other ranks
fi
trap 'echo "fake-serve rank $SLURM_PROCID stopped" >>"$FAKE_LOG"; exit 0' TERM
sleep 60 &
wait
EOF
chmod +x "$tmp/fake-serve"
: >"$tmp/fake.log"
jobid=$(sbatch --parsable --ntasks=3 --overcommit --time=5 --chdir="$tmp" \
    --output="$tmp/serve-%j.out" \
    --export="ALL,TP=2,MODEL=$model,TOKENIZER=$tok,SHARDLM=$tmp/fake-serve,FAKE_LOG=$tmp/fake.log,PORT=5999,MAX_RESTARTS=1" \
    "$srcdir/deploy/slurm/serve.sbatch")
# wait for the restart's three ranks to be up (the requeue's delay included)
for i in $(seq 300); do
    [ "$(grep -c 'restart 1' "$tmp/fake.log")" -ge 3 ] && break
    sleep 0.2
done
restarted=$(grep -c 'restart 1' "$tmp/fake.log")
check "serve job: requeued after rank 0 failed, all 3 ranks restarted" \
    test "$restarted" -eq 3
check "serve job: shardlm got serve --tp 2 --listen tcp://127.0.0.1:5999" \
    grep -q 'restart 0: serve .*--tp 2 --pp 1 --listen tcp://127.0.0.1:5999' "$tmp/fake.log"
check "serve job: endpoint file" \
    grep -qx 'tcp://127.0.0.1:5999' "$tmp/shardlm-serve-$jobid.endpoint"
scancel "$jobid"
for i in $(seq 100); do
    state=$(slurm_job_state "$jobid")
    [ "$state" = CANCELLED ] && break
    sleep 0.1
done
check "serve job: CANCELLED by scancel, not $state" test "$state" = CANCELLED
for i in $(seq 50); do # the restarted batch shell's last words
    [ "$(grep -c "the server exited" "$tmp/serve-$jobid.out")" -ge 2 ] && break
    sleep 0.1
done
state=$(slurm_job_state "$jobid")
check "serve job: not requeued after scancel (state $state)" test "$state" = CANCELLED
check "serve job: one requeue asked, not two" \
    test "$(grep -c requeueing "$tmp/serve-$jobid.out")" -eq 1
if [ $fails -ne 0 ]; then
    cat "$tmp"/serve-*.out "$tmp/fake.log"
fi

echo "Slurm test done in $((SECONDS - started)) s"
slurm_stop
left=$(slurm_leftovers)
check "nothing left running: ${left:-none}" test -z "$left"
finish
