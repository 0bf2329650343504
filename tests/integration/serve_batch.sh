#!/usr/bin/env bash
# Continuous batching (issue 7), TP=2 on stories260K: a mixed batch of
# requests with prompts of different lengths, started at different times so
# that they join the running batch at different steps, each fed in chunks
# (--step-tokens 8) from a small paged KV pool (--kv-block 4 --kv-blocks
# 260: three requests' worth of 85 blocks, so admission also waits for
# blocks while the batch of 4 has room), must each
# produce exactly the unbatched text (`shardlm generate`, one sequence, one
# token per step; the golden texts for the golden prompts): greedy ones,
# which the shards answer with the argmax alone, and sampled ones beside
# them, which get whole rows of logits.
# Then 1,000 short requests, some cancelled mid-stream and some past their
# deadline, all end, and the server reports its KV pool whole again.
source "$(dirname "$0")/../lib.sh"
require_mpirun
model=$models/stories260K.bin
tok=$models/tok512.bin
require "$model" "$tok" "$golden/01.txt" "$golden/02.txt"
client=$(dirname "$bin")/client/shardlm-client
driver=${SHARDLM_TEST_BIN_DIR:-}/client_security
[ -x "$client" ] || { echo "FAIL shardlm-client not built at $client"; exit 1; }
[ -x "$driver" ] || { echo "FAIL client_security not built at $driver"; exit 1; }
export OMP_NUM_THREADS=1

prompts=(
    "$(cat "$golden/01.prompt")"
    "$(cat "$golden/02.prompt")"
    "Lily"
    "The cat sat on the mat and looked at the big red ball. It wanted to play"
    "Tom and his mom went to the park. They saw a dog"
    "Once upon a time, there was a little boy named Tim. Tim liked to run and jump in the sun every day with his friends."
    "Lily"
    "The dog"
    "Tom and his mom went to the park. They saw a dog"
)
# Greedy requests get only the argmax from the shards, the others whole rows
# of logits: the last three (sampled with a seed, and greedy with a
# repetition penalty) run in the same steps as the greedy ones.
sampling=(
    "--temperature 0" "--temperature 0" "--temperature 0" "--temperature 0"
    "--temperature 0" "--temperature 0"
    "--temperature 0.8 --seed 11" "--temperature 1 --top-k 40 --top-p 0.95 --seed 12"
    "--temperature 0 --repetition-penalty 1.3"
)
# The unbatched references: one process, one sequence, a token per step.
for i in "${!prompts[@]}"; do
    # shellcheck disable=SC2086 # the options are words
    "$bin" generate "${asroot[@]}" --model "$model" --tokenizer "$tok" \
        --prompt "${prompts[$i]}" -n 400 ${sampling[$i]} >"$tmp/ref$i" 2>/dev/null ||
        { echo "FAIL reference $i"; exit 1; }
done
check "reference 0 is the golden text" cmp -s <(head -c $(($(wc -c <"$golden/01.txt") - 1)) "$tmp/ref0") \
    <(head -c $(($(wc -c <"$golden/01.txt") - 1)) "$golden/01.txt")

for k in server client; do
    "$bin" keygen --curve "$tmp/$k" 2>/dev/null || { echo "FAIL keygen $k"; exit 1; }
done
printf '%s alice\n' "$(cat "$tmp/client.key")" >"$tmp/clients"
start_server "$tmp/serve.err" "${mpirun[@]}" -np 3 "$bin" serve "${asroot[@]}" --tp 2 \
    --model "$model" --tokenizer "$tok" --listen 'tcp://127.0.0.1:*' \
    --heartbeat-timeout-ms 10000 --max-batch 4 --step-tokens 8 --kv-block 4 \
    --kv-blocks 260 --server-key "$tmp/server.key_secret" --clients "$tmp/clients" || exit 1
keys=(--connect "$ep" --server-key "$tmp/server.key" --key "$tmp/client.key_secret")

# Six requests, 300 tokens each, started 10 ms apart: the first ones are
# decoding when the later ones arrive and read their prompts, and the rest
# wait for blocks.
# Health every 20 ms meanwhile: the most requests it saw running at once
# (the outputs must come from a real batch, not from turns).
( peak=0
  while kill -0 $pid 2>/dev/null && [ ! -e "$tmp/stop_polling" ]; do
      n=$("$client" "${keys[@]}" health 2>/dev/null |
          sed -n 's/.*queued, \([0-9]*\) running.*/\1/p')
      [ -n "$n" ] && [ "$n" -gt "$peak" ] && { peak=$n; echo "$peak" >"$tmp/peak"; }
      sleep 0.02
  done ) &
poller=$!
pids=()
for i in "${!prompts[@]}"; do
    # shellcheck disable=SC2086
    "$client" "${keys[@]}" --timeout-ms 60000 generate --prompt "${prompts[$i]}" \
        -n 300 ${sampling[$i]} >"$tmp/out$i" 2>"$tmp/err$i" &
    pids+=($!)
    sleep 0.01
done
for i in "${!prompts[@]}"; do
    wait "${pids[$i]}"
    rc=$?
    got=$tmp/got$i
    { printf '%s' "${prompts[$i]}"; cat "$tmp/out$i"; } >"$got"
    n=$(wc -c <"$got")
    check "batched request $i (prompt of ${#prompts[$i]} chars): exit 0 ($rc)" test $rc -eq 0
    check "batched request $i (${sampling[$i]}) equals the unbatched text ($n bytes)" \
        cmp -s "$got" <(head -c "$n" "$tmp/ref$i")
    # and is not cut short: 300 tokens are hundreds of bytes, unless the
    # reference itself ends (EOS) before that
    want=$(($(wc -c <"$tmp/ref$i") < ${#prompts[$i]} + 200 ? $(wc -c <"$tmp/ref$i") : ${#prompts[$i]} + 200))
    check "batched request $i is not cut short ($n of at least $want bytes)" test "$n" -ge "$want"
done
touch "$tmp/stop_polling"
wait $poller
check "the requests ran batched (at most $(cat "$tmp/peak" 2>/dev/null) at once; at least 2)" \
    test "$(cat "$tmp/peak" 2>/dev/null || echo 0)" -ge 2
# And the golden files themselves, for the golden prompts.
for i in 0 1; do
    want=$golden/0$((i + 1)).txt
    n=$(($(wc -c <"$want") - 1)) # the reference ends with a newline
    [ "$(wc -c <"$tmp/got$i")" -lt $n ] && n=$(wc -c <"$tmp/got$i")
    check "batched request $i equals the golden text ($n bytes)" \
        cmp -s <(head -c $n "$tmp/got$i") <(head -c $n "$want")
done

"$driver" flood "$ep" "$tmp/server.key" "$tmp/client.key_secret" 1000 >"$tmp/flood.out" 2>&1
rc=$?
cat "$tmp/flood.out"
check "1,000 short requests (some cancelled, some past their deadline) all end ($rc)" test $rc -eq 0
"$client" "${keys[@]}" health >"$tmp/health" 2>&1
check "afterwards: nothing running or queued" grep -q 'coordinator: 0 queued, 0 running' "$tmp/health"
check "afterwards: the KV pool is whole (260 of 260 blocks free)" \
    grep -q 'kv blocks 260 of 260 free' "$tmp/health"

stop_server "$pid" "$tmp/serve.err"
if [ $fails -ne 0 ]; then
    echo "--- server"; tail -20 "$tmp/serve.err"; cat "$tmp/health"
fi
finish
