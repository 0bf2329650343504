#!/usr/bin/env bash
# shardlm mkmodel --format hf against transformers: a directory of each
# architecture (llama, llama3, mistral, qwen2, qwen3), in float32, bfloat16
# and float16, must load in transformers as the architecture it names
# (tests/reference/hf_models.py --from computes its greedy tokens and
# logits there), and shardlm's logits on it must be transformers' within
# 1e-4 (relative, per row) with the same 72 greedy tokens, at TP 1 and 2
# and PP 2. Its tokenizer.json loads in `tokenizers`, and our ids equal
# tokenizers' on 2,000 random strings (tokenizers_ref.py --dir, tok_check).
# The same seed gives the same bytes; refusals of a bad --arch,
# --dtype or --format name the flag.
source "$(dirname "$0")/../lib.sh"
require_mpirun
prog=${SHARDLM_TEST_BIN_DIR:-}/hf_logits
[ -x "$prog" ] || { echo "FAIL hf_logits not built ($prog)"; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)
export OMP_NUM_THREADS=1
venv=$(bash "$here/reference/venv.sh") || {
    [ "${CI:-}" = true ] && { echo "FAIL: the references could not be made"; exit 1; }
    echo "SKIP: the references could not be made"
    exit 77
}

dims=(--dim 64 --hidden 160 --layers 2 --heads 8 --kv-heads 4 --vocab 512 --seq-len 128)
# arch dtype: every architecture, every dtype at least once
while read -r arch dtype; do
    dir=$tmp/$arch-$dtype
    mkdir -p "$dir"
    if ! "$bin" mkmodel --format hf --arch "$arch" --dtype "$dtype" "${dims[@]}" \
        --seed 7 --out "$dir/model" 2>"$tmp/err"; then
        fail "mkmodel $arch $dtype"; cat "$tmp/err"; continue
    fi
    if ! "$venv/bin/python" "$here/reference/hf_models.py" --from "$dir/model" "$dir" \
        >"$tmp/ref.out" 2>"$tmp/ref.err"; then
        fail "transformers could not load mkmodel's $arch $dtype directory"
        tail -5 "$tmp/ref.err"; continue
    fi
    pass
    echo "$arch $dtype: $(cat "$tmp/ref.out")"
    # its tokenizer.json: `tokenizers` runs it, and ours gives the same ids
    if "$venv/bin/python" "$here/reference/tokenizers_ref.py" --dir "$dir/model" "$dir/tok" \
        >"$tmp/tok.out" 2>&1 &&
        "${SHARDLM_TEST_BIN_DIR:-}/tok_check" "$dir/tok" >"$tmp/tok.out" 2>&1; then
        pass
        echo "ok $arch tokenizer: $(tr '\n' ' ' <"$tmp/tok.out" | cut -c1-300)"
    else
        fail "$arch $dtype: the tokenizer"; tail -5 "$tmp/tok.out"
    fi
    for split in "1 1" "2 1" "1 2"; do
        read -r tp pp <<<"$split"
        if timeout 300 "${mpirun[@]}" -np $((tp * pp)) "$prog" "$dir/model" "$dir/ref.json" \
            "$dir/logits.f32" "$tp" "$pp" 1e-4 </dev/null >"$tmp/out" 2>"$tmp/err"; then
            pass
            echo "ok $arch $dtype tp=$tp pp=$pp: $(tr '\n' ' ' <"$tmp/out")"
        else
            fail "$arch $dtype tp=$tp pp=$pp"; cat "$tmp/out"; tail -5 "$tmp/err"
        fi
    done
done <<'EOF'
llama bf16
llama3 bf16
mistral f32
qwen2 bf16
qwen3 f16
llama3 f32
EOF

# deterministic: the same seed, the same bytes
"$bin" mkmodel --format hf --arch qwen2 --dtype bf16 "${dims[@]}" --seed 7 \
    --out "$tmp/again" 2>/dev/null
check "the same seed gives the same safetensors" \
    cmp -s "$tmp/again/model.safetensors" "$tmp/qwen2-bf16/model/model.safetensors"
check "the same seed gives the same config.json" \
    cmp -s "$tmp/again/config.json" "$tmp/qwen2-bf16/model/config.json"

# refusals name the flag and write nothing
refused() { # WHAT NEEDLE ARGS...
    local what=$1 needle=$2
    shift 2
    if "$bin" mkmodel "$@" >"$tmp/out" 2>"$tmp/err"; then
        fail "$what: accepted"
    elif grep -q -- "$needle" "$tmp/err"; then
        pass
    else
        fail "$what: no '$needle' in: $(cat "$tmp/err")"
    fi
}
refused "unknown arch" "unknown architecture 'gpt2'" --format hf --arch gpt2 "${dims[@]}" --out "$tmp/x1"
refused "unknown dtype" "\-\-dtype: 'f64'" --format hf --dtype f64 "${dims[@]}" --out "$tmp/x2"
refused "unknown format" "\-\-format: 'gguf'" --format gguf "${dims[@]}" --out "$tmp/x3"
refused "arch without hf" "are for --format hf" --arch llama3 "${dims[@]}" --out "$tmp/x4"
refused "a vocabulary too small" "at least 512 tokens" --format hf --dim 64 --hidden 160 \
    --layers 2 --heads 8 --kv-heads 4 --vocab 300 --seq-len 128 --out "$tmp/x5"
check "nothing written by a refusal" test ! -e "$tmp/x1" -a ! -e "$tmp/x2" -a ! -e "$tmp/x4"
finish
