#!/usr/bin/env bash
# Tenants and frame integrity on a CURVE server (issue 6), TP=2:
# - per-tenant limits from the allowlist (concurrency, tokens per request,
#   queue share): a tenant over one gets RESOURCE_EXHAUSTED, with an
#   audit line, while another tenant's requests complete and take turns;
# - a replayed frame, a tampered frame and a replayed session are refused
#   (the connection dropped, nothing answered), each in the audit log;
# - the server still serves the golden text afterwards.
# The client side is tests/mpi/client_security.c.
source "$(dirname "$0")/../lib.sh"
require_mpirun
model=$models/stories260K.bin
tok=$models/tok512.bin
require "$model" "$tok" "$golden/01.txt"
client=$(dirname "$bin")/client/shardlm-client
security=${SHARDLM_TEST_BIN_DIR:-}/client_security
[ -x "$client" ] || { echo "FAIL shardlm-client not built at $client"; exit 1; }
[ -x "$security" ] || { echo "FAIL client_security not built at $security"; exit 1; }
export OMP_NUM_THREADS=1

for k in server alice bob carol; do
    "$bin" keygen --curve "$tmp/$k" 2>/dev/null || { echo "FAIL keygen $k"; exit 1; }
done
cat >"$tmp/clients" <<END
$(cat "$tmp/alice.key") alice
$(cat "$tmp/bob.key") bob
$(cat "$tmp/carol.key") carol
limits alice concurrent=1 tokens=300
limits carol queue=50
END

start_server "$tmp/serve.err" "${mpirun[@]}" -np 3 "$bin" serve "${asroot[@]}" --tp 2 \
    --model "$model" --tokenizer "$tok" --listen 'tcp://127.0.0.1:*' --queue-depth 4 \
    --max-batch 1 --heartbeat-timeout-ms 10000 --server-key "$tmp/server.key_secret" \
    --clients "$tmp/clients" --audit-log "$tmp/audit" || exit 1

"$security" quota "$ep" "$tmp/server.key" "$tmp/alice.key_secret" \
    "$tmp/bob.key_secret" "$tmp/carol.key_secret" >"$tmp/quota.out" 2>&1
rc=$?
cat "$tmp/quota.out"
check "tenant quotas: client_security quota passed (exit $rc)" test $rc -eq 0
check "audit log: alice's concurrency rejection" \
    grep -q '"event":"quota_rejected".*"tenant":"alice".*requests open' "$tmp/audit"
check "audit log: alice's token rejection" \
    grep -q '"event":"quota_rejected".*"tenant":"alice".*at most 300 tokens' "$tmp/audit"
check "audit log: carol's queue-share rejection" \
    grep -q '"event":"quota_rejected".*"tenant":"carol".*its share' "$tmp/audit"
check "audit log: no quota rejection of bob" \
    bash -c "! grep -q '\"tenant\":\"bob\"' '$tmp/audit'"

"$security" tamper "$ep" "$tmp/server.key" "$tmp/alice.key_secret" >"$tmp/tamper.out" 2>&1
rc=$?
cat "$tmp/tamper.out"
check "replay and tamper: client_security tamper passed (exit $rc)" test $rc -eq 0
check "audit log: the replayed frame (nonce out of sequence)" \
    eventually 5 grep -q '"event":"frame_rejected".*replayed or reordered' "$tmp/audit"
check "audit log: the tampered frame (authentication failed)" \
    eventually 5 grep -q '"event":"frame_rejected".*failed CURVE authentication' "$tmp/audit"
check "audit log: the replayed session" eventually 5 \
    bash -c "test \$(grep -c '\"event\":\"frame_rejected\"' '$tmp/audit') -ge 3"

"$client" --connect "$ep" --server-key "$tmp/server.key" --key "$tmp/bob.key_secret" \
    generate --prompt "$(cat "$golden/01.prompt")" -n 300 --temperature 0 >"$tmp/g.out" 2>"$tmp/g.err"
n=$(($(wc -c <"$golden/01.txt") - 1))
check "afterwards: the golden text for a listed client" \
    bash -c "{ cat '$golden/01.prompt'; cat '$tmp/g.out'; } | head -c $n | cmp -s - <(head -c $n '$golden/01.txt')"

stop_server "$pid" "$tmp/serve.err"
if [ $fails -ne 0 ]; then
    echo "--- server"; tail -20 "$tmp/serve.err"
    echo "--- audit"; cat "$tmp/audit"
fi
finish
