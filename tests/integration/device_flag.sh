#!/usr/bin/env bash
# --device on generate, run and serve. `--device cpu` (and `auto` where it
# resolves to the CPU) must give the golden text byte for byte; `--device
# bogus` is refused, naming the value and the choices; where this machine or
# build has no GPU, `--device cuda` exits non-zero at once with a message
# that says why (built without CUDA, or no GPU found). Where `auto` picked a
# GPU, `--device cuda` must just work (tests/gpu checks its text).
source "$(dirname "$0")/../lib.sh"
model="$models/stories260K.bin"
tok="$models/tok512.bin"
require "$model" "$tok" "$golden/01.prompt"
no_gpu='built without CUDA|no CUDA GPU found'

# generate_on DEVICE: greedy golden prompt 01 on DEVICE.
generate_on() {
    "$bin" generate "${asroot[@]}" --model "$model" --tokenizer "$tok" \
        --prompt "$(cat "$golden/01.prompt")" -n 256 --temperature 0 \
        --device "$1"
}
# gen DEVICE: generate_on into $tmp/DEVICE.{out,err}; its exit status.
gen() { generate_on "$1" >"$tmp/$1.out" 2>"$tmp/$1.err"; }

# expect_refusal NAME PATTERN COMMAND...: exit in [1, 128), stderr (and
# stdout: mpirun may carry a rank's message there) matching PATTERN.
expect_refusal() {
    local name=$1 pattern=$2 rc
    shift 2
    "$@" >"$tmp/ref.out" 2>"$tmp/ref.err"
    rc=$?
    if [ $rc -eq 0 ] || [ $rc -ge 128 ] ||
        ! cat "$tmp/ref.err" "$tmp/ref.out" | grep -qE -- "$pattern"; then
        fail "$name: exit $rc, output:"
        head -c 2000 "$tmp/ref.err"; head -c 500 "$tmp/ref.out"; echo
    else
        pass
    fi
}

# cpu: the golden text
if gen cpu && cmp -s "$tmp/cpu.out" "$golden/01.txt"; then
    pass
else
    fail "--device cpu: not the golden text"; head -c 1000 "$tmp/cpu.err"
fi

# auto: the golden text where it ran on the CPU
if ! gen auto; then
    fail "--device auto: exit $?"; head -c 1000 "$tmp/auto.err"
elif grep -q "(cuda device" "$tmp/auto.err"; then
    echo "auto picked a GPU: its text is checked by tests/gpu"
    check "--device cuda with a GPU" gen cuda
else
    check "--device auto on the CPU: golden text" \
        cmp -s "$tmp/auto.out" "$golden/01.txt"
    expect_refusal "generate --device cuda without a GPU" "$no_gpu" \
        generate_on cuda
    if command -v mpirun >/dev/null; then
        expect_refusal "run --device cuda without a GPU" "$no_gpu" \
            timeout 120 "${mpirun[@]}" -np 2 "$bin" run "${asroot[@]}" --model "$model" \
            --tokenizer "$tok" --prompt "Once" -n 8 --temperature 0 \
            --device cuda
    else
        skip_part "run --device cuda without a GPU: mpirun not found"
    fi
fi

# a value that is no device: refused, naming it and the choices
expect_refusal "generate --device bogus" \
    "--device 'bogus': expected auto, cpu or cuda" generate_on bogus
if command -v mpirun >/dev/null; then
    for cmd in run serve; do
        args=(--prompt "Once")
        [ $cmd = serve ] && args=()
        expect_refusal "$cmd --device bogus" \
            "--device 'bogus': expected auto, cpu or cuda" \
            timeout 120 "${mpirun[@]}" -np 2 "$bin" $cmd "${asroot[@]}" --model "$model" \
            --tokenizer "$tok" "${args[@]}" --device bogus
    done
    # run --device cpu: the golden text through a cluster of one shard
    if timeout 120 "${mpirun[@]}" -np 2 "$bin" run "${asroot[@]}" --model "$model" \
        --tokenizer "$tok" --prompt "$(cat "$golden/01.prompt")" -n 256 \
        --temperature 0 --device cpu >"$tmp/run.jsonl" 2>"$tmp/run.err" &&
        command -v jq >/dev/null; then
        # generate ends its text with a newline; a JSON answer does not
        { jq -j .text "$tmp/run.jsonl"; echo; } >"$tmp/run.txt"
        check "run --device cpu: golden text" \
            cmp "$tmp/run.txt" "$golden/01.txt"
    else
        fail "run --device cpu"; head -c 1000 "$tmp/run.err"
    fi
else
    skip_part "run and serve --device: mpirun not found"
fi
finish
