#!/usr/bin/env bash
# Hugging Face models against transformers itself: tests/reference/hf_models.py
# (pinned transformers + torch in a cached virtual environment) builds tiny
# random models of each supported architecture and dtype - Llama with and
# without tied embeddings, Llama 3 rope scaling, bfloat16 and float16 weights
# (held in 16 bits by default, and widened to float32 with f32), a sharded
# checkpoint, Mistral - saves them with save_pretrained and writes its greedy
# tokens and per-position logits. shardlm loads the same directories at
# TP 1, 2, 4 (where the heads allow) and PP 2, and hf_logits requires every
# row of logits within 1e-4 (relative) of transformers', the argmax equal
# wherever transformers' margin is clear, and 72 greedy tokens equal.
# The same model with its config.json in the older style (rope_theta and
# rope_scaling at the top, "type" for "rope_type") gives the same logits.
source "$(dirname "$0")/../lib.sh"
require_mpirun
prog=${SHARDLM_TEST_BIN_DIR:-}/hf_logits
[ -x "$prog" ] || { echo "FAIL hf_logits not built ($prog)"; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)
export OMP_NUM_THREADS=1

# The references are made once per version of the script and the pins
# (tests/reference/hf_refs.sh).
venv=$(bash "$here/reference/venv.sh") && refs=$(bash "$here/reference/hf_refs.sh") || {
    [ "${CI:-}" = true ] && { echo "FAIL: the references could not be made"; exit 1; }
    echo "SKIP: the references could not be made"
    exit 77
}

# legacy CONFIG_IN CONFIG_OUT: the same config in the pre-transformers-5
# style most published checkpoints carry.
legacy() {
    "$venv/bin/python" - "$1" "$2" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
p = c.pop("rope_parameters")
c["rope_theta"] = p.pop("rope_theta")
t = p.pop("rope_type")
if t != "default":
    p["type"] = t
    c["rope_scaling"] = p
c["torch_dtype"] = c.pop("dtype")
json.dump(c, open(sys.argv[2], "w"), indent=2)
EOF
}
mkdir -p "$tmp/legacy"
cp -r "$refs/llama3_f32/model" "$tmp/legacy/model"
legacy "$refs/llama3_f32/model/config.json" "$tmp/legacy/model/config.json"
check "the older config style was written" grep -q '"rope_scaling"' "$tmp/legacy/model/config.json"

# run CASE_DIR MODEL_DIR TP PP [WEIGHTS]: WEIGHTS (default auto, the file's
# dtype: 16-bit files are held and multiplied in 16 bits) is what the shards
# hold the matrices in
run() {
    local dir=$1 model=$2 tp=$3 pp=$4 weights=${5:-auto} rc
    timeout 300 "${mpirun[@]}" -np $((tp * pp)) "$prog" "$model" "$dir/ref.json" \
        "$dir/logits.f32" "$tp" "$pp" 1e-4 "$weights" </dev/null >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 0 ]; then
        pass
        echo "ok $(basename "$dir") tp=$tp pp=$pp weights=$weights: $(tr '\n' ' ' <"$tmp/out")"
    else
        fail "$(basename "$dir") ($model) tp=$tp pp=$pp weights=$weights: exit $rc"
        cat "$tmp/out"; tail -5 "$tmp/err"
    fi
}

n=0
while read -r name heads kv; do
    n=$((n + 1))
    for split in "1 1" "2 1" "4 1" "1 2" "2 2"; do
        read -r tp pp <<<"$split"
        [ $((kv % tp)) -eq 0 ] || continue
        run "$refs/$name" "$refs/$name/model" "$tp" "$pp"
    done
done <"$refs/cases.txt"
check "every case of the reference ran ($n)" test "$n" -ge 6
run "$refs/llama3_f32" "$tmp/legacy/model" 1 1
run "$refs/llama3_f32" "$tmp/legacy/model" 2 2
# 16-bit files widened to float32 at load give the same logits
run "$refs/llama_bf16" "$refs/llama_bf16/model" 2 1 f32
run "$refs/llama_f16" "$refs/llama_f16/model" 1 2 f32
# a .safetensors file names its model too (config.json beside it)
run "$refs/llama_f32" "$refs/llama_f32/model/model.safetensors" 2 1
finish
