#!/usr/bin/env bash
# Manifests of Hugging Face model directories: `shardlm manifest --out M DIR`
# lists every file of DIR that shardlm reads (config.json, the safetensors
# shards and their index, tokenizer.json, tokenizer_config.json), and
# generate --manifest M --public-key on DIR verifies them all before any
# weight is used: a good signed manifest runs; a flipped byte in a shard, an
# edited tokenizer.json or config.json, and a shard added after the
# manifest was written (which an index could name) are refused naming the
# file, with nothing generated. A cluster (shardlm run, TP=2) checks it on
# every rank.
source "$(dirname "$0")/../lib.sh"

run_ok() { # NAME CMD...: exit 0, no sanitizer report
    local name=$1 rc; shift
    "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?
    if [ $rc -ne 0 ] || grep -q Sanitizer "$tmp/err"; then
        fail "$name: exit $rc:"; head -c 2000 "$tmp/err"; echo
    else pass; fi
}
run_fail() { # NAME PATTERN CMD...: exit 1, stderr matching PATTERN, no text
    local name=$1 pattern=$2 rc; shift 2
    "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?
    if [ $rc -ne 1 ] || grep -q Sanitizer "$tmp/err" ||
        ! grep -qE -- "$pattern" "$tmp/err" || [ -s "$tmp/out" ]; then
        fail "$name: exit $rc, stdout $(wc -c <"$tmp/out") bytes, stderr:"; head -c 2000 "$tmp/err"; echo
    else pass; fi
}

d=$tmp/qwen2
run_ok "mkmodel" "$bin" mkmodel --format hf --arch qwen2 --dtype bf16 --dim 64 --hidden 160 \
    --layers 2 --heads 8 --kv-heads 4 --vocab 512 --seq-len 128 --seed 5 --out "$d"
run_ok "keygen" "$bin" keygen --sign "$tmp/k"
m=$d/manifest.txt
run_ok "manifest of the directory" "$bin" manifest --out "$m" --sign "$tmp/k.secret" "$d"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
    check "the manifest lists $f" grep -q " $f\$\|  $f\$\|$f" "$m"
done
check "generation_config.json is not read, so not listed" bash -c "! grep -q generation_config '$m'"
gen=("$bin" generate "${asroot[@]}" --model "$d" --prompt "tea" -n 8 --temperature 0
     --manifest "$m" --public-key "$tmp/k.public")
run_ok "generate with the manifest" "${gen[@]}"
check "... says it verified the files" grep -q "manifest verified (signature good): 4 files" "$tmp/err"
cp "$tmp/out" "$tmp/good"

cp "$d/model.safetensors" "$tmp/st"
printf '\x01' | dd of="$d/model.safetensors" bs=1 seek=20000 conv=notrunc status=none
run_fail "a flipped byte in the weights" "model.safetensors: SHA-256 differs" "${gen[@]}"
cp "$tmp/st" "$d/model.safetensors"
cp "$d/tokenizer.json" "$tmp/tj"
sed -i 's/"Isolated"/"Removed"/' "$d/tokenizer.json"
run_fail "an edited tokenizer.json" "tokenizer.json: (size|SHA-256)" "${gen[@]}"
cp "$tmp/tj" "$d/tokenizer.json"
cp "$d/config.json" "$tmp/cj"
sed -i 's/"rope_theta": /"rope_theta": 1/' "$d/config.json"
run_fail "an edited config.json" "config.json: (size|SHA-256)" "${gen[@]}"
cp "$tmp/cj" "$d/config.json"
cp "$d/model.safetensors" "$d/model-00002-of-00002.safetensors"
run_fail "a shard added after the manifest" "model-00002-of-00002.safetensors: not listed" "${gen[@]}"
rm "$d/model-00002-of-00002.safetensors"
run_ok "restored: generate again" "${gen[@]}"
check "... the same text" cmp -s "$tmp/out" "$tmp/good"

if command -v mpirun >/dev/null; then
    run=("${mpirun[@]}" -np 3 "$bin" run "${asroot[@]}" --model "$d" --tp 2 --prompt "tea"
         -n 8 --temperature 0 --manifest "$m" --public-key "$tmp/k.public")
    run_ok "a cluster with the manifest" timeout 120 "${run[@]}"
    check "... every rank verified it" test "$(grep -c 'manifest verified' "$tmp/err")" -ge 3
    printf '\x01' | dd of="$d/model.safetensors" bs=1 seek=30000 conv=notrunc status=none
    timeout 120 "${run[@]}" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    check "a cluster refuses a flipped byte (exit $rc)" test $rc -ne 0 -a $rc -lt 124
    check "... naming the file" grep -q "model.safetensors: SHA-256 differs" "$tmp/err"
else
    skip_part "mpirun not installed: the cluster part"
fi
finish
