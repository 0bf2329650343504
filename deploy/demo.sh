#!/usr/bin/env bash
# The demo: installs the dependencies, builds shardlm, and serves the shared
# stories260K model from a real cluster - mpirun starts a coordinator and two
# tensor-parallel shards (TP=2), each holding half of the weights - then asks
# it for a story with shardlm-client, and shows the cluster's info and health.
# Extra arguments go to `shardlm-client generate` (e.g. --temperature 0).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
models=${SHARDLM_MODELS_DIR:-$PWD/../shared/models}
mkdir -p build
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DSLM_TESTS=OFF \
    -DSLM_BENCH=OFF >build/release.configure.log 2>&1 ||
    { cat build/release.configure.log; exit 1; }
cmake --build build/release -j "$(nproc 2>/dev/null || echo 2)" \
    --target shardlm shardlm-client >/dev/null
client=build/release/client/shardlm-client
tp=2
mpirun=(mpirun --oversubscribe)
asroot=() # shardlm refuses root unless told; the demo says so for you
[ "$(id -u)" -eq 0 ] && mpirun+=(--allow-run-as-root) && asroot=(--allow-root)
log=$(mktemp)
# CURVE, as serve requires by default: a server key pair, one client key pair,
# and the allowlist naming that client (tenant "demo"). Keys live in files
# only (0600 for secrets), never on command lines.
keys=$(mktemp -d)
build/release/shardlm keygen --curve "$keys/server" 2>/dev/null
build/release/shardlm keygen --curve "$keys/client" 2>/dev/null
printf '%s demo\n' "$(cat "$keys/client.key")" >"$keys/clients"
# One OpenMP thread per shard: the ranks already share the cores. Port "*":
# any free one, on loopback.
OMP_NUM_THREADS=1 "${mpirun[@]}" -np $((1 + tp)) build/release/shardlm serve "${asroot[@]}" \
    --model "$models/stories260K.bin" --tokenizer "$models/tok512.bin" \
    --tp "$tp" --listen 'tcp://127.0.0.1:*' --server-key "$keys/server.key_secret" \
    --clients "$keys/clients" 2>"$log" &
server=$!
# mpirun reports the SIGTERM that ends the demo as a failure: not ours.
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true; rm -rf "$log" "$keys"' EXIT
ep=
for _ in $(seq 300); do
    ep=$(sed -n 's/^shardlm serve: listening on \([^ ]*\) .*/\1/p' "$log")
    [ -n "$ep" ] && break
    kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
done
[ -n "$ep" ] || { cat "$log"; exit 1; }
echo "== shardlm serve on $ep"
"$client" --connect "$ep" --server-key "$keys/server.key" --key "$keys/client.key_secret" info
echo "== shardlm-client generate"
printf 'Once upon a time'
"$client" --connect "$ep" --server-key "$keys/server.key" --key "$keys/client.key_secret" generate --prompt "Once upon a time" -n 200 \
    --temperature 0.8 --top-p 0.9 --seed 42 "$@"
echo
echo "== shardlm-client health"
"$client" --connect "$ep" --server-key "$keys/server.key" --key "$keys/client.key_secret" health
