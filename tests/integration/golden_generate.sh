#!/usr/bin/env bash
# Every golden prompt, greedy, 256 positions: stdout must equal NN.txt byte for
# byte (the reference is llama2.c's run.c on the same model). Skips (77) when
# the shared model or golden files are absent.
source "$(dirname "$0")/../lib.sh"
require "$models/stories260K.bin" "$models/tok512.bin" "$golden/01.prompt"
for prompt in "$golden"/*.prompt; do
    name=$(basename "$prompt" .prompt)
    "$bin" generate "${asroot[@]}" --model "$models/stories260K.bin" \
        --tokenizer "$models/tok512.bin" --prompt "$(cat "$prompt")" \
        -n 256 --temperature 0 >"$tmp/$name.out" 2>"$tmp/$name.err" || {
        fail "$name: exit $?"; cat "$tmp/$name.err"; continue; }
    if cmp "$tmp/$name.out" "$golden/$name.txt"; then
        echo "ok $name: $(wc -c <"$tmp/$name.out") bytes identical"
        pass
    else
        fail "$name: output differs from $golden/$name.txt"
        diff <(fold -w 80 "$golden/$name.txt") <(fold -w 80 "$tmp/$name.out") | head -20
    fi
done
finish
