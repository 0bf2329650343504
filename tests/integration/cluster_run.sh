#!/usr/bin/env bash
# `mpirun -np 1+TP*PP shardlm run`: rank 0 coordinates over the ZeroMQ
# control plane, the shards hold their slices and move activations through
# the collectives. The golden prompts go in as one JSONL batch at every split
# the issue names; each result's text must equal NN.txt byte for byte and the
# job must exit 0. Then the refusals: an impossible split, a wrong rank
# count and a malformed input line each stop the job before any shard loads
# a weight, with the reason.
source "$(dirname "$0")/../lib.sh"
require "$models/stories260K.bin" "$models/tok512.bin" "$golden/01.prompt"
require_mpirun
command -v jq >/dev/null || { echo "SKIP: jq not found"; exit 77; }
# Up to 7 ranks share 2 cores: one thread each (see shard_golden.sh).
export OMP_NUM_THREADS=1
model="$models/stories260K.bin"
tok="$models/tok512.bin"

names=()
for prompt in "$golden"/*.prompt; do
    name=$(basename "$prompt" .prompt)
    names+=("$name")
    jq -cn --arg id "$name" --rawfile p "$prompt" \
        '{id: $id, prompt: $p, n: 256, temperature: 0}' >>"$tmp/in.jsonl"
done

# Up to 9 ranks on this host's cores, under sanitizers in CI: a heartbeat
# timeout with room for that (serve_faults.sh tests the default).
for split in "1 1" "2 1" "4 1" "8 1" "1 2" "2 2"; do
    read -r tp pp <<<"$split"
    if ! timeout 120 "${mpirun[@]}" -np $((1 + tp * pp)) "$bin" run "${asroot[@]}" \
        --model "$model" --tokenizer "$tok" --tp "$tp" --pp "$pp" \
        --heartbeat-timeout-ms 10000 \
        --input "$tmp/in.jsonl" --output "$tmp/out.jsonl" 2>"$tmp/err"; then
        fail "tp=$tp pp=$pp: job failed"; tail -20 "$tmp/err"; continue
    fi
    check "tp=$tp pp=$pp: one result per request" \
        test "$(wc -l <"$tmp/out.jsonl")" -eq "${#names[@]}"
    for i in "${!names[@]}"; do
        name=${names[$i]}
        jq -j "select(.id == \"$name\") | .text" "$tmp/out.jsonl" >"$tmp/text"
        printf '\n' >>"$tmp/text" # generate's final newline, as in NN.txt
        if cmp -s "$tmp/text" "$golden/$name.txt"; then
            echo "ok tp=$tp pp=$pp $name"
            pass
        else
            fail "tp=$tp pp=$pp $name: text differs from $name.txt"
        fi
    done
done

# int8 weights over a tensor split (quantized per output channel of each
# shard's slice): the same greedy tokens as the float golden text for the
# first 8 positions (bench/bench_accuracy measures the rest), and a whole
# result per request.
if timeout 120 "${mpirun[@]}" -np 3 "$bin" run "${asroot[@]}" \
    --model "$model" --tokenizer "$tok" --tp 2 --weights int8 \
    --heartbeat-timeout-ms 10000 \
    --input "$tmp/in.jsonl" --output "$tmp/int8.jsonl" 2>"$tmp/err"; then
    check "int8 tp=2: one result per request" \
        test "$(wc -l <"$tmp/int8.jsonl")" -eq "${#names[@]}"
    for name in "${names[@]}"; do
        jq -j "select(.id == \"$name\") | .text" "$tmp/int8.jsonl" >"$tmp/text"
        n=$(($(wc -c <"$golden/$name.prompt") + 24)) # the prompt and a few words
        check "int8 tp=2 $name: starts as the float golden text ($n bytes)" \
            cmp -s <(head -c $n "$tmp/text") <(head -c $n "$golden/$name.txt")
    done
else
    fail "int8 tp=2: job failed"; tail -20 "$tmp/err"
fi

# A separate classifier over the 32000-token vocabulary (CPU shards pack
# the embedding apart from the classifier, which the others cover): TP=2
# and TP=2 x PP=2 give the text of the one-process `generate`.
if [ ! -f "$models/tokenizer.bin" ]; then
    fail "$models/tokenizer.bin not found (the separate-classifier model needs it)"
fi
"$bin" mkmodel --dim 64 --hidden 96 --layers 2 --heads 4 --kv-heads 2 \
    --vocab 32000 --seq-len 64 --separate-classifier --seed 9 --out "$tmp/sep.bin" 2>/dev/null
# (tests/unit/test_reference.c checks generate's logits for such a model
# against a double-precision reference written from the model's equations)
"$bin" generate "${asroot[@]}" --model "$tmp/sep.bin" --tokenizer "$models/tokenizer.bin" \
    --prompt "Once upon" -n 40 --temperature 0 >"$tmp/sep.ref" 2>"$tmp/sep.err"
rc=$?
check "separate classifier: generate exits 0 ($rc)" test $rc -eq 0
check "separate classifier: generate wrote text past the prompt" \
    test "$(wc -c <"$tmp/sep.ref")" -ge 19
printf '{"id": "sep", "prompt": "Once upon", "n": 40, "temperature": 0}\n' >"$tmp/sep.jsonl"
for split in "2 1" "2 2"; do
    read -r tp pp <<<"$split"
    if timeout 120 "${mpirun[@]}" -np $((1 + tp * pp)) "$bin" run "${asroot[@]}" \
        --model "$tmp/sep.bin" --tokenizer "$models/tokenizer.bin" --tp "$tp" --pp "$pp" \
        --heartbeat-timeout-ms 10000 \
        --input "$tmp/sep.jsonl" --output "$tmp/sep.out" 2>"$tmp/err"; then
        jq -j .text "$tmp/sep.out" >"$tmp/text"
        printf '\n' >>"$tmp/text"
        check "separate classifier tp=$tp pp=$pp: the text of generate" \
            cmp -s "$tmp/text" "$tmp/sep.ref"
    else
        fail "separate classifier tp=$tp pp=$pp: job failed"; tail -20 "$tmp/err"
    fi
done

# refusals, each before any weight is read
expect_refusal() { # NAME PATTERN NP ARGS...
    local name=$1 pattern=$2 np=$3 rc
    shift 3
    timeout 60 "${mpirun[@]}" -np "$np" "$bin" run "${asroot[@]}" --model "$model" \
        --tokenizer "$tok" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -ne 0 ] && [ $rc -lt 124 ] && grep -qE -- "$pattern" "$tmp/err" &&
        ! grep -q "shards ready" "$tmp/err"; then
        pass
    else
        fail "$name: exit $rc"; tail -5 "$tmp/err"
    fi
}
expect_refusal "tp=3" "cannot split n_heads = 8 over tp = 3.*1, 2, 4, 8" 4 \
    --tp 3 --prompt "Once"
expect_refusal "wrong rank count" "needs 3 ranks .* use mpirun -np 3" 2 \
    --tp 2 --prompt "Once"
printf '{"prompt": "ok"}\n{"prompt": 5}\n' >"$tmp/bad.jsonl"
expect_refusal "malformed line" "bad.jsonl:2: \"prompt\" is required" 2 \
    --input "$tmp/bad.jsonl"
expect_refusal "unwritable output" "/nonexistent/out.jsonl: cannot create" 2 \
    --prompt "Once" --output /nonexistent/out.jsonl
printf '{"prompt": "ok", "temperature": -1}\n' >"$tmp/bad2.jsonl"
expect_refusal "bad sampling field" "bad2.jsonl:1: temperature = -1" 2 \
    --input "$tmp/bad2.jsonl"
finish
