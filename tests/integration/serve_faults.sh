#!/usr/bin/env bash
# A shard lost mid-stream (SIGKILL: the process dies; SIGSTOP: it hangs)
# while one request streams and another waits in the queue: both clients get
# UNAVAILABLE naming the rank within 3 s, the job (mpirun) exits non-zero
# within 5 s, and no process of the job is left behind. Then the same with
# the coordinator (rank 0) killed: the clients see UNAVAILABLE.
source "$(dirname "$0")/../lib.sh"
require_mpirun
tok=$models/tok512.bin
require "$tok"
client=$(dirname "$bin")/client/shardlm-client
# Built with shardlm in every build: its absence is a failure, not a skip.
[ -x "$client" ] || { echo "FAIL shardlm-client not built at $client"; exit 1; }
export OMP_NUM_THREADS=1

# A model slow enough that a stream lasts seconds.
"$bin" mkmodel --out "$tmp/slow.bin" --dim 512 --hidden 1536 --layers 8 \
    --heads 8 --kv-heads 8 --vocab 512 --seq-len 2048 --seed 3 >/dev/null

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
within() { awk -v s="$1" -v l="$2" 'BEGIN { exit !(s <= l) }'; } # SECONDS LIMIT

# The live (not zombie) processes of this job: ranks carry our model path.
job_procs() {
    local p n=0
    for p in $(pgrep -f "$tmp/slow.bin"); do
        [ "$(awk '{ print $3 }' /proc/$p/stat 2>/dev/null)" = Z ] || n=$((n + 1))
    done
    echo $n
}

# serve ERRFILE: the server of these cases, one request at a time
# (--max-batch 1): one runs, the other waits. Sets $pid and $ep.
serve() {
    start_server "$1" "${mpirun[@]}" -np 3 "$bin" serve "${asroot[@]}" --insecure --tp 2 \
        --model "$tmp/slow.bin" --tokenizer "$tok" --listen 'tcp://127.0.0.1:*' --max-batch 1
}

fault() { # SIGNAL VICTIM_RANK
    local sig=$1 rank=$2 a b victim t0 rc
    serve "$tmp/$sig.err" || { fail "$sig: server did not start"; return; }
    "$client" --connect "$ep" generate --prompt "Once" -n 2000 --temperature 0 >"$tmp/a.out" 2>"$tmp/a.err" &
    a=$!
    for _ in $(seq 300); do [ -s "$tmp/a.out" ] && break; sleep 0.05; done
    "$client" --connect "$ep" generate --prompt "Once" -n 5 >"$tmp/b.out" 2>"$tmp/b.err" &
    b=$!
    # Until the coordinator reports b waiting in its queue.
    check "$sig rank $rank: the second request is seen queued" eventually 10 \
        bash -c "'$client' --connect '$ep' --timeout-ms 2000 health 2>/dev/null | grep -q '1 queued'"
    victim=$(job_ranks "$pid" "$rank")
    if [ -z "$victim" ] || [ ! -s "$tmp/a.out" ]; then
        fail "$sig: no stream or no rank $rank to signal"; kill -9 $pid; return
    fi
    t0=$(now)
    kill -"$sig" "$victim"
    wait $a
    rc=$?
    local ta
    ta=$(elapsed "$t0")
    check "$sig rank $rank: streaming client exits non-zero" test $rc -ne 0
    # A lost shard is named by the coordinator; a lost coordinator is seen
    # by the client library itself (its connection drops).
    local want="UNAVAILABLE.*rank $rank"
    [ "$rank" -eq 0 ] && want=UNAVAILABLE
    check "$sig rank $rank: streaming client gets $want" grep -q "$want" "$tmp/a.err"
    check "$sig rank $rank: ... within 3 s (took $ta s)" within "$ta" 3
    wait $b
    rc=$?
    if [ $rc -ne 0 ] && grep -q "$want" "$tmp/b.err"; then
        pass
    else
        fail "$sig rank $rank: queued client gets $want too (exit $rc: $(head -c 300 "$tmp/b.err"))"
    fi
    for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
    local tj
    tj=$(elapsed "$t0")
    wait $pid
    rc=$?
    check "$sig rank $rank: the job exits non-zero (rc $rc)" test $rc -ne 0
    check "$sig rank $rank: ... within 5 s (took $tj s)" within "$tj" 5
    for _ in $(seq 40); do [ "$(job_procs)" -eq 0 ] && break; sleep 0.05; done
    check "$sig rank $rank: no process left behind" test "$(job_procs)" -eq 0
    check "$sig rank $rank: no sanitizer report" no_sanitizer_report "$tmp/$sig.err"
    [ "$(job_procs)" -eq 0 ] || pkill -9 -f "$tmp/slow.bin"
    echo "$sig rank $rank: client $ta s, job $tj s: $(head -c 300 "$tmp/a.err")"
}

# SIGTERM to every rank at once, as scancel and srun deliver it: shards wait
# for the coordinator, which answers its clients, sends Shutdown, sees every
# shard leave and exits 0.
graceful() {
    local a rc
    serve "$tmp/term.err" || { fail "TERM: server did not start"; return; }
    "$client" --connect "$ep" generate --prompt "Once" -n 2000 --temperature 0 >"$tmp/a.out" 2>"$tmp/a.err" &
    a=$!
    for _ in $(seq 300); do [ -s "$tmp/a.out" ] && break; sleep 0.05; done
    check "TERM all ranks: the request is streaming" test -s "$tmp/a.out"
    # SIGTERM to every rank, then the exit status 0 and a clean stderr
    stop_server "$pid" "$tmp/term.err"
    wait $a
    rc=$?
    check "TERM all ranks: client gets UNAVAILABLE, shutting down" \
        bash -c "[ $rc -ne 0 ] && grep -q 'UNAVAILABLE.*shutting down' '$tmp/a.err'"
    for _ in $(seq 40); do [ "$(job_procs)" -eq 0 ] && break; sleep 0.05; done
    check "TERM all ranks: no process left behind" test "$(job_procs)" -eq 0
    [ "$(job_procs)" -eq 0 ] || pkill -9 -f "$tmp/slow.bin"
}

fault KILL 2
fault STOP 2
fault STOP 1
fault KILL 0
graceful
finish
