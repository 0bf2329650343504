#!/usr/bin/env bash
# `shardlm mkmodel` writes checkpoints that `generate` runs: a named shape, and
# explicit dims with a separate classifier over the 32000-token Llama 2
# vocabulary; the same seed gives the same bytes and the same sampled text.
source "$(dirname "$0")/../lib.sh"
require "$models/tok512.bin" "$models/tokenizer.bin"

# differ A B: both files exist and their bytes differ (cmp says 1; 2 is
# trouble, such as a missing file).
differ() {
    cmp -s "$1" "$2"
    [ $? -eq 1 ]
}

"$bin" mkmodel --shape stories260k --seed 3 --out "$tmp/a.bin" 2>/dev/null
check "mkmodel stories260k" test "$(stat -c %s "$tmp/a.bin")" = \
    "$(stat -c %s "$models/stories260K.bin" 2>/dev/null || echo 1056540)"
"$bin" mkmodel --shape stories260k --seed 3 --out "$tmp/b.bin" 2>/dev/null
check "same seed, same bytes" cmp -s "$tmp/a.bin" "$tmp/b.bin"
"$bin" mkmodel --shape stories260k --seed 4 --out "$tmp/c.bin" 2>/dev/null
check "other seed, other bytes" differ "$tmp/a.bin" "$tmp/c.bin"

# gen OUT TOKENIZER MODEL ARGS...: 40 steps from "Once upon" into OUT.
# Succeeds only if generate exits 0 having written the prompt and at least
# 10 bytes after it: generate prints the prompt before the model runs, so
# the prompt alone proves nothing.
gen() {
    local out=$1
    shift
    "$bin" generate "${asroot[@]}" --tokenizer "$1" --model "$2" --prompt "Once upon" \
        -n 40 "${@:3}" >"$out" 2>"$out.err" ||
        { echo "generate exited $?: $(head -c 300 "$out.err")"; return 1; }
    [ "$(head -c 9 "$out")" = "Once upon" ] && [ "$(wc -c <"$out")" -ge 19 ] ||
        { echo "generate wrote no text past the prompt: $(head -c 100 "$out")"; return 1; }
}
check "generate on a synthetic model" gen "$tmp/s1" "$models/tok512.bin" "$tmp/a.bin" \
    --temperature 0.9 --seed 5
check "same seed: generate runs" gen "$tmp/s2" "$models/tok512.bin" "$tmp/a.bin" \
    --temperature 0.9 --seed 5
check "same seed, same text" cmp -s "$tmp/s1" "$tmp/s2"
check "other seed: generate runs" gen "$tmp/s3" "$models/tok512.bin" "$tmp/a.bin" \
    --temperature 0.9 --seed 6
check "other seed, other text" differ "$tmp/s1" "$tmp/s3"
check "top-k, top-p and penalty run" gen "$tmp/s4" "$models/tok512.bin" "$tmp/a.bin" \
    --temperature 0.9 --top-k 5 --top-p 0.8 --repetition-penalty 1.3 --seed 5

"$bin" mkmodel --dim 64 --hidden 96 --layers 2 --heads 4 --kv-heads 2 \
    --vocab 32000 --seq-len 64 --separate-classifier --out "$tmp/d.bin" 2>/dev/null
check "explicit dims, separate classifier" test \
    "$(stat -c %s "$tmp/d.bin")" = $((28 + 4 * (32000 * 64 * 2 + 2 * (64 + 64 * 64 * 2 + 2 * 32 * 64 + 64 + 3 * 96 * 64) + 64 + 2 * 64 * 8)))
check "generate with the 32000-token vocabulary" \
    gen "$tmp/s5" "$models/tokenizer.bin" "$tmp/d.bin" --temperature 0

"$bin" mkmodel --shape gpt-9 --out "$tmp/e.bin" 2>"$tmp/err"
check "unknown shape refused" grep -q "unknown model shape 'gpt-9'" "$tmp/err"
"$bin" mkmodel --dim 65 --hidden 8 --layers 1 --heads 2 --vocab 8 --seq-len 4 \
    --out "$tmp/e.bin" 2>"$tmp/err"
check "indivisible dims refused" grep -q "dim = 65 is not divisible by n_heads = 2" "$tmp/err"

finish
