#!/usr/bin/env bash
# Builds every libFuzzer target (clang, ASan+UBSan) and runs each for
# FUZZ_SECONDS (default 60) from a copy of its committed seed corpus, printing
# the executions per target. Fails on the first crash, leak or sanitizer
# report. Usage: tests/fuzz/run.sh BUILD_DIR (a CMake build directory, for
# the generated protobuf code).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:?usage: tests/fuzz/run.sh BUILD_DIR}
seconds=${FUZZ_SECONDS:-60}
command -v clang >/dev/null || { echo "fuzz: clang not found (deploy/install-deps.sh installs it)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cc=(clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
    -I. -I"$build")
# name: sources and libraries (each target's own header comment says why)
# model/checkpoint.c opens either format, so it brings the HF loader along
model="model/checkpoint.c model/plan.c model/hf_model.c model/hf_config.c model/safetensors.c kernels/cpu/half.c common/status.c common/file.c"
# model/tokenizer.c opens either format, so it brings the tokenizer.json reader
tokenizer="model/tokenizer.c model/tokenizer_hf.c common/status.c common/reader.c common/file.c common/utf8.c -ljansson -lpcre2-8 -lutf8proc"
declare -A targets=(
    [wire]="tests/fuzz/fuzz_wire.c proto/wire.c proto/pbuf.c $build/proto/control.pb-c.c common/status.c -lprotobuf-c"
    [client]="tests/fuzz/fuzz_client_wire.c proto/client_wire.c proto/pbuf.c $build/proto/client.pb-c.c common/status.c common/utf8.c -lprotobuf-c -lm"
    [tokenizer]="tests/fuzz/fuzz_tokenizer.c $tokenizer"
    [tokenizer_json]="tests/fuzz/fuzz_tokenizer_json.c $tokenizer"
    [manifest]="tests/fuzz/fuzz_manifest.c model/manifest.c common/status.c common/reader.c common/file.c common/keyfile.c -lsodium"
    [allowlist]="tests/fuzz/fuzz_allowlist.c common/zap.c common/zkeys.c common/audit.c common/status.c common/utf8.c -lzmq -lpthread"
    [checkpoint]="tests/fuzz/fuzz_checkpoint.c $model common/reader.c common/hugemem.c -ljansson -lm"
    [hf_config]="tests/fuzz/fuzz_hf_config.c $model common/reader.c common/hugemem.c -ljansson -lm"
    [chat]="tests/fuzz/fuzz_chat.c model/chat.c common/status.c common/file.c common/utf8.c -ljansson -lsodium"
    [safetensors]="tests/fuzz/fuzz_safetensors.c model/safetensors.c kernels/cpu/half.c common/status.c common/file.c -ljansson -lm"
)
# FUZZ_TARGETS picks some (e.g. to rerun one after a fix); CI runs them all.
for name in ${FUZZ_TARGETS:-wire client tokenizer tokenizer_json manifest allowlist checkpoint safetensors hf_config chat}; do
    [[ -n ${targets[$name]:-} ]] || { echo "fuzz: no target $name"; exit 1; }
    # shellcheck disable=SC2086 # the table holds word lists
    "${cc[@]}" ${targets[$name]} -o "$work/fuzz_$name" 2>"$work/$name.build" ||
        { cat "$work/$name.build"; echo "fuzz: $name: build failed"; exit 1; }
    mkdir "$work/$name.corpus"
    cp tests/fuzz/corpus/"$name"/* "$work/$name.corpus/"
    if ! "$work/fuzz_$name" -max_total_time="$seconds" -max_len=65536 \
        -print_final_stats=1 "$work/$name.corpus" >"$work/$name.log" 2>&1; then
        tail -40 "$work/$name.log"
        echo "fuzz: $name: FAILED (the crashing input is above)"
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$name.log")
    echo "fuzz: $name: ${runs:-?} executions in ${seconds} s, no crash"
done
