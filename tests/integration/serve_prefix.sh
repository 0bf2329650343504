#!/usr/bin/env bash
# Prefix caching (coordinator/kvpool.h), TP=2 on stories260K with blocks of
# 4 positions: a long prompt, then the same prompt again and one sharing
# its first 40 characters, some at once, each equal to the unbatched text
# (`shardlm generate`); Health shows cached blocks and prefix hits once a
# request ended, and the pool whole at the end. Another tenant sending the
# same prompt must not hit the first one's blocks (its time to first token
# would tell it what the other sent), and with --prefix-cache off nothing
# is ever hit.
source "$(dirname "$0")/../lib.sh"
require_mpirun
model=$models/stories260K.bin
tok=$models/tok512.bin
require "$model" "$tok"
client=$(dirname "$bin")/client/shardlm-client
[ -x "$client" ] || { echo "FAIL shardlm-client not built at $client"; exit 1; }
export OMP_NUM_THREADS=1

long="Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her big red ball and her dog."
prompts=(
    "$long"
    "${long:0:40} She was very sad because her toy was broken."
)
for i in "${!prompts[@]}"; do
    "$bin" generate "${asroot[@]}" --model "$model" --tokenizer "$tok" \
        --prompt "${prompts[$i]}" -n 300 --temperature 0 >"$tmp/ref$i" 2>/dev/null ||
        { echo "FAIL reference $i"; exit 1; }
done

for k in server alice bob; do
    "$bin" keygen --curve "$tmp/$k" 2>/dev/null || { echo "FAIL keygen $k"; exit 1; }
done
printf '%s alice\n%s bob\n' "$(cat "$tmp/alice.key")" "$(cat "$tmp/bob.key")" >"$tmp/clients"

# serve ARGS...: a TP=2 server; sets pid and ep.
serve() {
    start_server "$tmp/serve.err" "${mpirun[@]}" -np 3 "$bin" serve "${asroot[@]}" \
        --tp 2 --model "$model" --tokenizer "$tok" --listen 'tcp://127.0.0.1:*' \
        --heartbeat-timeout-ms 10000 --max-batch 4 --step-tokens 8 --kv-block 4 "$@" \
        --server-key "$tmp/server.key_secret" --clients "$tmp/clients" || exit 1
}
keys() { echo --connect "$ep" --server-key "$tmp/server.key" --key "$tmp/$1.key_secret"; }
# health FIELD: "free", "total", "cached" or "hits" from the coordinator's
# line; "unknown" (which no numeric test accepts) when health fails or
# the line is not there, so that two failed reads never compare equal.
health() {
    local re='.*kv blocks \([0-9]*\) of \([0-9]*\) free, \([0-9]*\) cached, \([0-9]*\) prefix hits.*'
    local n v
    case $1 in
    free) n=1 ;; total) n=2 ;; cached) n=3 ;; hits) n=4 ;;
    esac
    # shellcheck disable=SC2046 # keys are words
    if "$client" $(keys alice) health >"$tmp/health" 2>"$tmp/health.err"; then
        v=$(sed -n "s/$re/\\$n/p" "$tmp/health")
    fi
    echo "${v:-unknown}"
}
# ask NAME WHO PROMPT_INDEX: a greedy request in the background; its pid
# goes to $tmp/NAME.pid.
ask() {
    # shellcheck disable=SC2046
    "$client" $(keys "$2") --timeout-ms 60000 generate --prompt "${prompts[$3]}" \
        -n 100 --temperature 0 >"$tmp/$1.out" 2>"$tmp/$1.err" &
    echo $! >"$tmp/$1.pid"
    echo "$3" >"$tmp/$1.prompt"
}
# expect NAME: the request ended well, with the unbatched text.
expect() {
    wait "$(cat "$tmp/$1.pid")"
    local rc=$? i
    i=$(cat "$tmp/$1.prompt")
    { printf '%s' "${prompts[$i]}"; cat "$tmp/$1.out"; } >"$tmp/$1.got"
    local n
    n=$(wc -c <"$tmp/$1.got")
    check "$1: exit 0 ($rc)" test $rc -eq 0
    check "$1 (prompt $i) equals the unbatched text ($n bytes)" \
        cmp -s "$tmp/$1.got" <(head -c "$n" "$tmp/ref$i")
    # and is not cut short (unless the reference ends first, at EOS)
    local want r
    r=$(wc -c <"$tmp/ref$i")
    want=$((r < ${#prompts[$i]} + 100 ? r : ${#prompts[$i]} + 100))
    check "$1 is not cut short ($n of at least $want bytes)" test "$n" -ge "$want"
}

serve
ask first alice 0
expect first
cached=$(health cached)
check "after the first request: cached blocks ($cached)" test "$cached" -gt 0
check "after the first request: no prefix hit yet ($(health hits))" test "$(health hits)" -eq 0

# The same prompt twice and the one sharing its beginning, at once.
ask again alice 0
ask shared alice 1
sleep 0.05
ask again2 alice 0
expect again
expect shared
expect again2
hits=$(health hits)
# the long prompt's whole blocks before its last token, twice, and the
# shared beginning's (40 characters: some blocks)
check "alice's repeats hit the cache ($hits blocks)" test "$hits" -gt 2

# bob sends alice's prompt: no hit, and the same text.
ask bob bob 0
expect bob
check "another tenant does not hit alice's blocks ($(health hits) = $hits)" \
    test "$(health hits)" -eq "$hits"
ask bob2 bob 0
expect bob2
check "but its own repeat does ($(health hits) > $hits)" test "$(health hits)" -gt "$hits"
total=$(health total)
check "afterwards: the KV pool is whole ($(health free) of $total free)" \
    test "$(health free)" -eq "$total"
check "afterwards: nothing running" grep -q 'coordinator: 0 queued, 0 running' "$tmp/health"
stop_server

serve --prefix-cache off
ask off1 alice 0
expect off1
ask off2 alice 0
ask off3 alice 1
expect off2
expect off3
check "--prefix-cache off: no hits ($(health hits))" test "$(health hits)" -eq 0
check "--prefix-cache off: nothing cached ($(health cached))" test "$(health cached)" -eq 0
check "--prefix-cache off: the pool is whole" test "$(health free)" -eq "$(health total)"
stop_server
if [ $fails -ne 0 ]; then
    echo "--- server"; tail -20 "$tmp/serve.err"; cat "$tmp/health"
fi
finish
