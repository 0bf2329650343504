#!/usr/bin/env bash
# The demo: installs the dependencies, builds shardlm, and tells a story on a
# real cluster: mpirun starts a coordinator and two tensor-parallel shards
# (TP=2) of the shared stories260K model, each holding half of the weights.
# Extra arguments go to `shardlm run` (e.g. --temperature 0, --seed 7).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
models=${SHARDLM_MODELS_DIR:-$PWD/../shared/models}
mkdir -p build
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DSLM_TESTS=OFF \
    -DSLM_BENCH=OFF >build/release.configure.log 2>&1 ||
    { cat build/release.configure.log; exit 1; }
cmake --build build/release -j "$(nproc 2>/dev/null || echo 2)" --target shardlm >/dev/null
tp=2
mpirun=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && mpirun+=(--allow-run-as-root)
# one OpenMP thread per shard: the ranks already share the cores
OMP_NUM_THREADS=1 "${mpirun[@]}" -np $((1 + tp)) build/release/shardlm run \
    --model "$models/stories260K.bin" --tokenizer "$models/tok512.bin" \
    --tp "$tp" --prompt "Once upon a time" -n 256 --temperature 0.8 \
    --top-p 0.9 --seed 42 "$@" | jq -r .text
