#!/usr/bin/env bash
# Every golden prompt, greedy, 256 positions: stdout must equal NN.txt byte for
# byte (the reference is llama2.c's run.c on the same model). Skips (77) when
# the shared model or golden files are absent.
set -u
models=${SHARDLM_MODELS_DIR:-../shared/models}
golden=${SHARDLM_GOLDEN_DIR:-../shared/golden}
bin=${SHARDLM_BIN:?SHARDLM_BIN must name the shardlm binary}
for f in "$models/stories260K.bin" "$models/tok512.bin" "$golden/01.prompt"; do
    [ -r "$f" ] || { echo "SKIP: $f not found"; exit 77; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
count=0
for prompt in "$golden"/*.prompt; do
    name=$(basename "$prompt" .prompt)
    "$bin" generate --model "$models/stories260K.bin" \
        --tokenizer "$models/tok512.bin" --prompt "$(cat "$prompt")" \
        -n 256 --temperature 0 >"$tmp/$name.out" 2>"$tmp/$name.err" || {
        echo "FAIL $name: exit $?"; cat "$tmp/$name.err"; status=1; continue; }
    if cmp "$tmp/$name.out" "$golden/$name.txt"; then
        echo "ok $name: $(wc -c <"$tmp/$name.out") bytes identical"
        count=$((count + 1))
    else
        echo "FAIL $name: output differs from $golden/$name.txt"
        diff <(fold -w 80 "$golden/$name.txt") <(fold -w 80 "$tmp/$name.out") | head -20
        status=1
    fi
done
[ "$count" -gt 0 ] || { echo "FAIL: no golden prompts ran"; exit 1; }
exit $status
