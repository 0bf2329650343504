#!/usr/bin/env bash
# The control plane admits only the job's shards: while `shardlm serve` runs
# at TP=2, a plaintext peer and CURVE peers with keys the coordinator never
# saw (claiming shard and heartbeat routing ids) are refused in the
# handshake, each CURVE refusal is in the audit log (stderr), and the server
# still answers a client with the golden text afterwards.
source "$(dirname "$0")/../lib.sh"
require_mpirun
model=$models/stories260K.bin
tok=$models/tok512.bin
require "$model" "$tok" "$golden/01.txt"
client=$(dirname "$bin")/client/shardlm-client
intruder=${SHARDLM_TEST_BIN_DIR:-}/control_intruder
[ -x "$client" ] && [ -x "$intruder" ] ||
    { echo "FAIL shardlm-client or control_intruder not built"; exit 1; }
export OMP_NUM_THREADS=1

"${mpirun[@]}" -np 3 "$bin" serve "${asroot[@]}" --insecure --tp 2 --model "$model" \
    --tokenizer "$tok" --listen 'tcp://127.0.0.1:*' 2>"$tmp/err" &
pid=$!
ep=
for _ in $(seq 600); do
    ep=$(sed -n 's/^shardlm serve: listening on \([^ ]*\) .*/\1/p' "$tmp/err")
    [ -n "$ep" ] && break
    sleep 0.1
done
[ -n "$ep" ] || { cat "$tmp/err"; kill -9 $pid; exit 1; }
read -r cep ckey < <(sed -n 's/^shardlm: control plane on \([^ ]*\) (CURVE, server key \([^,]*\),.*/\1 \2/p' "$tmp/err")
check "the control endpoint and key are announced" test -n "$cep" -a -n "$ckey"

"$intruder" "$cep" "$ckey" >"$tmp/intruder.out" 2>&1
rc=$?
cat "$tmp/intruder.out"
check "plaintext and unknown CURVE keys are refused in the handshake" test $rc -eq 0
sleep 0.3
check "the audit log records the refused keys" \
    test "$(grep -c '"event":"auth_refused".*"domain":"shardlm-shards"' "$tmp/err")" -ge 2

"$client" --connect "$ep" generate --prompt "$(cat "$golden/01.prompt")" -n 300 \
    --temperature 0 >"$tmp/g.out" 2>/dev/null
n=$(($(wc -c <"$golden/01.txt") - 1))
check "the cluster still serves: golden" \
    bash -c "{ cat '$golden/01.prompt'; cat '$tmp/g.out'; } | head -c $n | cmp -s - <(head -c $n '$golden/01.txt')"
"$client" --connect "$ep" health >/dev/null 2>&1
check "health still SERVING (no shard was displaced)" test $? -eq 0
kill -TERM $pid 2>/dev/null
wait $pid 2>/dev/null
finish
