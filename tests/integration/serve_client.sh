#!/usr/bin/env bash
# shardlm serve + shardlm-client under mpirun (TP=2): golden text streamed to
# a client, 50 concurrent clients, a full queue (RESOURCE_EXHAUSTED), cancel,
# deadlines (running and queued), health and info, an idle pause longer than
# the step deadline, and hostile client messages - with the server still
# serving after each.
source "$(dirname "$0")/../lib.sh"
require_mpirun
model=$models/stories260K.bin
tok=$models/tok512.bin
require "$model" "$tok" "$golden/01.txt" "$golden/02.txt"
client=$(dirname "$bin")/client/shardlm-client
garbage=${SHARDLM_TEST_BIN_DIR:-}/client_garbage
# Built with shardlm in every build: its absence is a failure, not a skip.
[ -x "$client" ] || { echo "FAIL shardlm-client not built at $client"; exit 1; }
export OMP_NUM_THREADS=1

# CURVE by default: a server pair, a listed client and an unlisted one.
for k in server client stranger; do
    "$bin" keygen --curve "$tmp/$k" 2>/dev/null || { echo "FAIL keygen $k"; exit 1; }
done
printf '# tenant keys\n%s alice\n' "$(cat "$tmp/client.key")" >"$tmp/clients"
keys=(--server-key "$tmp/server.key" --key "$tmp/client.key_secret")

# serve NAME ARGS...: the TP=2 CURVE server of these tests, its stderr in
# $tmp/NAME.err and its audit log in $tmp/NAME.audit; sets $ep and $pid.
serve() {
    local name=$1
    shift
    # Fault detection is serve_faults.sh's subject; here, a heartbeat
    # timeout with room for an oversubscribed, sanitized host under load.
    start_server "$tmp/$name.err" "${mpirun[@]}" -np 3 "$bin" serve "${asroot[@]}" \
        --tp 2 --tokenizer "$tok" --listen 'tcp://127.0.0.1:*' --heartbeat-timeout-ms 10000 \
        --server-key "$tmp/server.key_secret" --clients "$tmp/clients" \
        --audit-log "$tmp/$name.audit" "$@"
}

# golden_prefix NN FILE: FILE (the completion) after the prompt begins with
# the reference text (256 positions; FILE may be longer).
golden_prefix() {
    local want=$golden/$1.txt n
    n=$(($(wc -c <"$want") - 1)) # the reference ends with a newline
    { cat "$golden/$1.prompt"; cat "$2"; } | head -c $n | cmp -s - <(head -c $n "$want")
}

gen() { "$client" --connect "$ep" "${keys[@]}" generate "$@"; }

# failed_with NAME RC CODE ERRFILE: the client exited non-zero naming CODE.
failed_with() {
    if [ "$2" -ne 0 ] && grep -q "$3" "$4"; then
        pass
    else
        fail "$1 (exit $2: $(head -c 300 "$4"))"
    fi
}

# ---- stories260K: text, concurrency, hostile input ----
# tests/tsan.sh gives the steps longer: TSAN makes each several times slower
serve main --model "$model" --queue-depth 64 --timeout-ms "${SLM_TEST_STEP_TIMEOUT_MS:-500}" || exit 1
for nn in 01 02; do
    gen --prompt "$(cat "$golden/$nn.prompt")" -n 300 --temperature 0 \
        >"$tmp/g$nn.out" 2>"$tmp/g$nn.err"
    check "golden $nn: exit 0" test $? -eq 0
    check "golden $nn: streamed text equals the reference" golden_prefix $nn "$tmp/g$nn.out"
done

# 50 clients at once, each its own process and connection.
pids=()
for i in $(seq 50); do
    nn=$(printf '%02d' $((i % 2 + 1)))
    gen --prompt "$(cat "$golden/$nn.prompt")" -n 300 --temperature 0 \
        >"$tmp/c$i.out" 2>"$tmp/c$i.err" &
    pids+=($!)
done
ok=0
for i in $(seq 50); do
    nn=$(printf '%02d' $((i % 2 + 1)))
    if wait "${pids[$((i - 1))]}" && golden_prefix $nn "$tmp/c$i.out"; then
        ok=$((ok + 1))
    else
        echo "client $i: $(cat "$tmp/c$i.err")"
    fi
done
check "50 concurrent clients: all complete and golden ($ok/50)" test $ok -eq 50

# An idle server is normal: a pause longer than the step deadline.
sleep 1.5
gen --prompt "$(cat "$golden/01.prompt")" -n 300 --temperature 0 >"$tmp/idle.out" 2>/dev/null
check "after an idle pause: golden" golden_prefix 01 "$tmp/idle.out"

gen --prompt "Once upon a time" -n 40 --temperature 0 --stop "Lily" \
    >"$tmp/stop.out" 2>/dev/null
check "stop sequence: exit 0" test $? -eq 0
check "stop sequence: text ends before it" \
    test "$(cat "$tmp/stop.out")" = ", there was a little girl named "

gen --prompt "$(printf 'a %.0s' $(seq 1000))" -n 5 >/dev/null 2>"$tmp/long.err"
rc=$?
failed_with "prompt longer than the context" $rc INVALID_ARGUMENT "$tmp/long.err"

if [ -x "$garbage" ]; then
    "$garbage" "$ep" "$tmp/server.key" "$tmp/client.key_secret" >"$tmp/garbage.out" 2>&1
    check "hostile client messages: answered or dropped, never a crash" test $? -eq 0
    [ $? -eq 0 ] || tail -5 "$tmp/garbage.out"
else
    fail "client_garbage not built ($garbage)"
fi
gen --prompt "$(cat "$golden/02.prompt")" -n 300 --temperature 0 >"$tmp/after.out" 2>/dev/null
check "after the hostile messages: golden" golden_prefix 02 "$tmp/after.out"

"$client" --connect "$ep" "${keys[@]}" info >"$tmp/info.out" 2>&1
check "info: exit 0" test $? -eq 0
check "info: names the model and the split" \
    bash -c "grep -q stories260K '$tmp/info.out' && grep -Eiq 'tp[^0-9]*2' '$tmp/info.out'"
"$client" --connect "$ep" "${keys[@]}" health >"$tmp/health.out" 2>&1
check "health: SERVING, exit 0" bash -c "[ $? -eq 0 ] && grep -q SERVING '$tmp/health.out'"
check "health: one line per rank" test "$(grep -Eic 'rank' "$tmp/health.out")" -ge 3

# Authentication: an unlisted key and a plaintext client are refused in the
# handshake (fast, with the reason), the audit log records the unlisted
# key, and listed clients are still served.
t0=$SECONDS
"$client" --connect "$ep" --server-key "$tmp/server.key" \
    --key "$tmp/stranger.key_secret" --timeout-ms 20000 health >/dev/null 2>"$tmp/stranger.err"
rc=$?
failed_with "unlisted key refused" $rc "UNAVAILABLE.*refused us in the handshake" "$tmp/stranger.err"
check "... within 5 s, not at the timeout ($((SECONDS - t0)) s)" test $((SECONDS - t0)) -le 5
"$client" --connect "$ep" --timeout-ms 3000 health >/dev/null 2>"$tmp/plain.err"
rc=$?
failed_with "plaintext client refused" $rc UNAVAILABLE "$tmp/plain.err"
# (-F: a Z85 key is full of regular-expression characters)
# The server logs a refusal when it reads its socket's monitor, which can be
# after the refused client has already given up: hence "eventually".
check "audit log: the unlisted key's refusal, as JSON" eventually 5 \
    bash -c "grep '\"event\":\"auth_refused\"' '$tmp/main.audit' |
        grep -qF '\"key\":\"$(cat "$tmp/stranger.key")\"'"
# Which side notices the mechanism mismatch first is a race inside ZeroMQ:
# the server logs either the mismatch or the client hanging up mid-handshake.
check "audit log: the plaintext client, refused in the handshake" \
    eventually 5 grep -Eq '"event":"frame_rejected".*(does not speak CURVE|closed the connection during the handshake)' "$tmp/main.audit"
check "audit log: malformed messages of the listed client, with its tenant" \
    grep -q '"event":"malformed_message".*"tenant":"alice"' "$tmp/main.audit"
gen --prompt "$(cat "$golden/01.prompt")" -n 300 --temperature 0 >"$tmp/auth.out" 2>/dev/null
check "after the refusals: a listed client still gets the golden text" golden_prefix 01 "$tmp/auth.out"
stop_server "$pid" "$tmp/main.err"

# ---- a slower model: queue overflow, cancel, deadlines ----
"$bin" mkmodel --out "$tmp/slow.bin" --dim 512 --hidden 1536 --layers 8 \
    --heads 8 --kv-heads 8 --vocab 512 --seq-len 2048 --seed 3 >/dev/null
# One request at a time (--max-batch 1), so that others wait in the queue.
serve slow --model "$tmp/slow.bin" --queue-depth 2 --max-batch 1 || exit 1

# wait_streaming FILE: until the client has printed something.
wait_streaming() {
    for _ in $(seq 300); do [ -s "$1" ] && return 0; sleep 0.05; done
    return 1
}

# Started directly (not through the gen function, whose subshell would
# ignore SIGINT), so that $a is the client itself.
"$client" --connect "$ep" "${keys[@]}" generate --prompt "Once" -n 2000 --temperature 0 \
    >"$tmp/a.out" 2>"$tmp/a.err" &
a=$!
check "long request: streaming" wait_streaming "$tmp/a.out"
gen --prompt "Once" -n 5 >"$tmp/b.out" 2>"$tmp/b.err" &
b=$!
gen --prompt "Once" -n 5 >"$tmp/c.out" 2>"$tmp/c.err" &
c=$!
# Until the coordinator reports b and c queued behind a.
for _ in $(seq 100); do
    "$client" --connect "$ep" "${keys[@]}" --timeout-ms 2000 health 2>/dev/null |
        grep -q "2 queued" && break
    sleep 0.05
done
gen --prompt "Once" -n 5 >/dev/null 2>"$tmp/d.err"
rc=$?
failed_with "queue full" $rc RESOURCE_EXHAUSTED "$tmp/d.err"
kill -INT $a
wait $a
rc=$?
failed_with "cancel (SIGINT to the client)" $rc CANCELLED "$tmp/a.err"
wait $b
check "queued request b completes after the overflow" test $? -eq 0
wait $c
check "queued request c completes after the overflow" test $? -eq 0

gen --prompt "Once" -n 2000 --temperature 0 --deadline-ms 400 >"$tmp/e.out" 2>"$tmp/e.err"
rc=$?
failed_with "deadline while running" $rc DEADLINE_EXCEEDED "$tmp/e.err"
check "deadline while running: some text came first" test -s "$tmp/e.out"

"$client" --connect "$ep" "${keys[@]}" generate --prompt "Once" -n 2000 --temperature 0 \
    >"$tmp/f.out" 2>"$tmp/f.err" &
f=$!
wait_streaming "$tmp/f.out"
gen --prompt "Once" -n 5 --deadline-ms 300 >"$tmp/g.out" 2>"$tmp/g.err"
rc=$?
failed_with "deadline while queued" $rc DEADLINE_EXCEEDED "$tmp/g.err"
check "deadline while queued: no text" test ! -s "$tmp/g.out"
kill -INT $f
wait $f

gen --prompt "Once" -n 5 >/dev/null 2>"$tmp/h.err"
check "still serving after cancels and deadlines" test $? -eq 0

# Short sampled requests on the random model: first tokens that show no
# text (control bytes, half a character) must still stream cleanly (under
# UBSan this once found a NULL passed to memcpy for an empty first piece).
ok=0
for seed in $(seq 20); do
    gen --prompt "Once" -n 3 --seed "$seed" >/dev/null 2>"$tmp/short.err" && ok=$((ok + 1))
done
check "20 short sampled requests all complete ($ok/20)" test $ok -eq 20

# The random model samples byte-fallback tokens (half of tok512) in any
# order: the stream must still be well-formed UTF-8, broken characters
# replaced by U+FFFD.
gen --prompt "Once" -n 400 --temperature 1 --seed 5 >"$tmp/bytes.out" 2>/dev/null
check "random bytes from the model: stream is valid UTF-8" \
    iconv -f UTF-8 -t UTF-8 "$tmp/bytes.out" -o /dev/null
check "random bytes from the model: broken characters became U+FFFD" \
    grep -q $'\xef\xbf\xbd' "$tmp/bytes.out"
stop_server "$pid" "$tmp/slow.err"
# On failure, what the servers said (in CI the scratch directory is gone).
if [ $fails -ne 0 ]; then
    for f in "$tmp"/*.err; do
        case $f in */main.err | */slow.err) echo "--- $f"; tail -20 "$f" ;; esac
    done
fi
finish
