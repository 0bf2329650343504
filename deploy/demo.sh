#!/usr/bin/env bash
# The demo: installs the dependencies, builds shardlm, and tells a story with
# the shared stories260K model. Extra arguments go to `shardlm generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
models=${SHARDLM_MODELS_DIR:-$PWD/../shared/models}
mkdir -p build
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DSLM_TESTS=OFF \
    -DSLM_BENCH=OFF >build/release.configure.log 2>&1 ||
    { cat build/release.configure.log; exit 1; }
cmake --build build/release -j "$(nproc 2>/dev/null || echo 2)" --target shardlm >/dev/null
exec build/release/shardlm generate --model "$models/stories260K.bin" \
    --tokenizer "$models/tok512.bin" --prompt "Once upon a time" -n 256 \
    --temperature 0.8 --top-p 0.9 --seed 42 "$@"
