#!/usr/bin/env bash
# The control plane admits only the job's shards: while `shardlm serve` runs
# at TP=2, a plaintext peer and CURVE peers with keys the coordinator never
# saw (claiming shard and heartbeat routing ids) reach the port and are
# refused in the handshake, each refusal is in the audit log (stderr), the
# plaintext one included, and the server
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

start_server "$tmp/err" "${mpirun[@]}" -np 3 "$bin" serve "${asroot[@]}" --insecure \
    --tp 2 --model "$model" --tokenizer "$tok" --listen 'tcp://127.0.0.1:*' || exit 1
read -r cep ckey < <(sed -n 's/^shardlm: control plane on \([^ ]*\) (CURVE, server key \([^,]*\),.*/\1 \2/p' "$tmp/err")
check "the control endpoint and key are announced" test -n "$cep" -a -n "$ckey"

"$intruder" "$cep" "$ckey" >"$tmp/intruder.out" 2>&1
rc=$?
cat "$tmp/intruder.out"
check "plaintext and unknown CURVE keys reach the port and are seen refused" test $rc -eq 0
check "three attempts, each refused" test "$(grep -c ': refused (' "$tmp/intruder.out")" -eq 3
# The coordinator writes its audit lines as it reads its monitor and its ZAP
# requests, which may be after the intruder has given up: hence eventually.
check "the audit log records the plaintext peer" eventually 5 grep -Eq \
    '"event":"frame_rejected".*"domain":"shardlm-shards".*(does not speak CURVE|closed the connection during the handshake)' \
    "$tmp/err"
# (read, not a for loop: a Z85 key holds glob characters)
while read -r key; do
    # (-F: a Z85 key is full of regular-expression characters)
    check "the audit log records the refused key $key" eventually 5 \
        bash -c "grep '\"event\":\"auth_refused\".*\"domain\":\"shardlm-shards\"' '$tmp/err' |
            grep -qF '\"key\":\"$key\"'"
done < <(sed -n 's/^CURVE .* key \(.*\)$/\1/p' "$tmp/intruder.out")
check "two refused keys named" test "$(grep -c '^CURVE .* key ' "$tmp/intruder.out")" -eq 2

"$client" --connect "$ep" generate --prompt "$(cat "$golden/01.prompt")" -n 300 \
    --temperature 0 >"$tmp/g.out" 2>/dev/null
n=$(($(wc -c <"$golden/01.txt") - 1))
check "the cluster still serves: golden" \
    bash -c "{ cat '$golden/01.prompt'; cat '$tmp/g.out'; } | head -c $n | cmp -s - <(head -c $n '$golden/01.txt')"
"$client" --connect "$ep" health >/dev/null 2>&1
check "health still SERVING (no shard was displaced)" test $? -eq 0
stop_server "$pid" "$tmp/err"
finish
