#!/usr/bin/env bash
# Serving under load: starts `shardlm serve` (mpirun, 1 coordinator + TP
# shards, CURVE on loopback as users run it), runs bench/loadgen at 1, 4, 16
# and 64 concurrent streams, prints a Markdown table, and shuts the server
# down (SIGTERM: it answers its clients, stops the shards and exits 0; SIGKILL
# of its whole process group if it has not within 30 s, so no rank is left
# behind, on failure or Ctrl-C too).
#   bench/load.sh [--tp N] [--model SHAPE|260k] [--streams "1 4 16 64"]
#                 [--duration-s S | --requests R] [--prompt-tokens P]
#                 [--output-tokens T] [--shared-prefix K]
#                 [--prefix-cache on|off] [--insecure]
# SHAPE is any `shardlm mkmodel --shape` (default 110m), written once with
# seed 1 to $SHARDLM_BENCH_DIR (default /tmp/shardlm-bench, as bench/tp.sh);
# 260k is the shared stories260K model. The build is $SHARDLM_BENCH_BUILD
# (default build/bench, as bench/tp.sh). Each stream sends greedy requests of
# P prompt ids and exactly T output tokens (EOS ignored) back to back for S
# seconds (default 20); requests in flight then finish, and tok/s counts the
# tokens of the S seconds only. With --shared-prefix K the first K prompt ids
# are the same in every request (a system prompt); --prefix-cache is passed
# to serve (default on). OpenMP threads per shard: $OMP_NUM_THREADS,
# else the cores divided by TP (at least 1).
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
    echo "load.sh: $*" >&2
    exit 2
}

tp=1
shape=110m
levels="1 4 16 64"
run_for=(--duration-s 20)
prompt=16
output=32
shared=0
prefix_cache=on
insecure=0
while [ $# -gt 0 ]; do
    case $1 in
    --tp | --model | --streams | --duration-s | --requests | --prompt-tokens | --output-tokens | \
        --shared-prefix | --prefix-cache)
        [ $# -ge 2 ] || die "$1 needs a value"
        case $1 in
        --tp) tp=$2 ;;
        --model) shape=$2 ;;
        --streams) levels=$2 ;;
        --duration-s | --requests) run_for=("$1" "$2") ;;
        --prompt-tokens) prompt=$2 ;;
        --output-tokens) output=$2 ;;
        --shared-prefix) shared=$2 ;;
        --prefix-cache) prefix_cache=$2 ;;
        esac
        shift 2
        ;;
    --insecure) insecure=1; shift ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (--help for usage)" ;;
    esac
done
[[ $tp =~ ^[1-9][0-9]*$ ]] || die "--tp must be a positive integer, not '$tp'"
max_streams=0
for n in $levels; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "--streams: '$n' is not a positive integer"
    if [ "$n" -gt "$max_streams" ]; then max_streams=$n; fi
done
[ "$max_streams" -gt 0 ] || die "--streams is empty"
# (nproc counts OMP_NUM_THREADS as the cores when it is set)
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
command -v mpirun >/dev/null || die "mpirun not found (Debian: apt-get install openmpi-bin)"
command -v jq >/dev/null || die "jq not found (deploy/install-deps.sh installs it)"

# --- build and model ----------------------------------------------------------
build=${SHARDLM_BENCH_BUILD:-build/bench}
dir=${SHARDLM_BENCH_DIR:-/tmp/shardlm-bench}
models=${SHARDLM_MODELS_DIR:-../shared/models}
mkdir -p build "$dir"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSLM_TESTS=OFF \
    -DSLM_CUDA=OFF >"$build.configure.log" 2>&1 ||
    { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j "$cores" --target shardlm shardlm-client loadgen >/dev/null
bin=$build/shardlm
client=$build/client/shardlm-client
loadgen=$build/loadgen
case $shape in
260k | stories260K)
    model=$models/stories260K.bin
    tok=$models/tok512.bin
    ;;
*)
    model=$dir/$shape.bin
    [ -f "$model" ] || "$bin" mkmodel --shape "$shape" --seed 1 --out "$model"
    # the synthetic stories260k shape has the 512-token vocabulary; the
    # others Llama 2's 32000
    if [ "$shape" = stories260k ]; then tok=$models/tok512.bin; else tok=$models/tokenizer.bin; fi
    ;;
esac
[ -r "$model" ] || die "$model: not found"
[ -r "$tok" ] || die "$tok: not found"

# --- the server -----------------------------------------------------------------
work=$(mktemp -d)
log=$work/serve.err
server=
# The coordinator (rank 0) among mpirun's children: SIGTERM to it ends
# serving cleanly (clients are answered, the shards get Shutdown, the job
# exits 0); SIGTERM to mpirun would end every rank at once.
rank0() {
    local p
    for p in $(pgrep -P "$server" 2>/dev/null); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=0; then
            echo "$p"
            return 0
        fi
    done
    echo "$server" # not found: mpirun, which passes it on to every rank
}
stop_server() {
    [ -n "$server" ] || return 0
    local rc=0
    if kill -0 "$server" 2>/dev/null; then
        kill -TERM "$(rank0)" 2>/dev/null || true
        for _ in $(seq 300); do
            kill -0 "$server" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$server" 2>/dev/null; then
            echo "load.sh: the server did not stop within 30 s; killing its process group" >&2
            kill -KILL -- "-$server" 2>/dev/null || true
        fi
    fi
    wait "$server" 2>/dev/null || rc=$?
    server=
    [ $rc -eq 0 ] || echo "load.sh: the server exited with status $rc" >&2
    return $rc
}
# shellcheck disable=SC2317 # run from the trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_server || true
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ "$rc" -ne 143 ] && [ -s "$log" ]; then
        echo "--- the server's log (last 20 lines)" >&2
        tail -20 "$log" >&2
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

auth=()
serve_auth=(--insecure)
if [ $insecure -eq 0 ]; then
    # CURVE, as serve requires by default: keys in files only (0600 secrets).
    "$bin" keygen --curve "$work/server" 2>/dev/null
    "$bin" keygen --curve "$work/client" 2>/dev/null
    printf '%s bench\n' "$(cat "$work/client.key")" >"$work/clients"
    serve_auth=(--server-key "$work/server.key_secret" --clients "$work/clients"
        --audit-log "$work/audit.log")
    auth=(--server-key "$work/server.key" --key "$work/client.key_secret")
fi
if [ -z "${OMP_NUM_THREADS:-}" ]; then
    t=$((cores / tp))
    OMP_NUM_THREADS=$((t > 0 ? t : 1))
fi
export OMP_NUM_THREADS
asroot=()
[ "$(id -u)" -eq 0 ] && asroot=(--allow-root)
# Its own session (process group), so that a last-resort SIGKILL reaches
# every rank and Ctrl-C here reaches only this script, which stops it.
# --queue-depth: every stream but the running one may wait. The heartbeat
# timeout allows for a host whose cores the load generator shares.
setsid deploy/launch.sh --shardlm "$bin" --tp "$tp" serve "${asroot[@]}" \
    --model "$model" --tokenizer "$tok" --listen 'tcp://127.0.0.1:*' \
    --queue-depth "$max_streams" --heartbeat-timeout-ms 10000 \
    --prefix-cache "$prefix_cache" \
    "${serve_auth[@]}" 2>"$log" &
server=$!
ep=
for _ in $(seq 1200); do
    ep=$(sed -n 's/^shardlm serve: listening on \([^ ]*\) .*/\1/p' "$log")
    [ -n "$ep" ] && break
    kill -0 "$server" 2>/dev/null || die "the server exited before listening"
    sleep 0.1
done
[ -n "$ep" ] || die "the server did not listen within 120 s"
healthy=0
for _ in $(seq 120); do
    if "$client" --connect "$ep" "${auth[@]}" --timeout-ms 2000 health >/dev/null 2>&1; then
        healthy=1
        break
    fi
    kill -0 "$server" 2>/dev/null || die "the server exited"
    sleep 0.5
done
[ $healthy -eq 1 ] || die "the server is not SERVING after 60 s"

# --- the load -------------------------------------------------------------------
echo "shardlm serve, $(basename "$model") (tp $tp, $OMP_NUM_THREADS OpenMP thread(s) per shard," \
    "$([ $insecure -eq 1 ] && echo plaintext || echo CURVE) on loopback), $cores cores," \
    "$(date -u +%Y-%m-%dT%H:%MZ)"
if [ "${run_for[0]}" = --requests ]; then
    per="${run_for[1]} requests per stream"
else
    per="${run_for[1]} s per level, then the requests in flight finish"
fi
echo "each request: $prompt prompt ids ($shared shared by all, prefix cache $prefix_cache), $output output tokens (greedy, EOS ignored); $per"
echo
echo "| streams | tok/s | vs 1 stream | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | requests | errors |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
base=
status=0
for n in $levels; do
    rc=0
    line=$("$loadgen" --connect "$ep" "${auth[@]}" --streams "$n" \
        --prompt-tokens "$prompt" --shared-prefix "$shared" \
        --output-tokens "$output" "${run_for[@]}" \
        --json) || rc=$?
    # loadgen dies of SIGINT/SIGTERM when interrupted: so do we (the trap
    # may not have run yet while we waited for it)
    if [ $rc -eq 130 ] || [ $rc -eq 143 ]; then exit $rc; fi
    if [ $rc -gt 1 ] || [ -z "$line" ]; then
        die "loadgen failed at $n streams (exit $rc)"
    fi
    [ $rc -eq 0 ] || status=1
    # the ratio is against the first level (normally 1 stream)
    jq -r '[.streams, .tokens_per_s, .ttft_ms_p50, .ttft_ms_p99, .itl_ms_p50,
            .itl_ms_p99, .requests_completed, .errors] | @tsv' <<<"$line" |
        awk -F '\t' -v base="$base" '{
            ratio = base == "" ? 1 : (base > 0 ? $2 / base : 0)
            printf "| %d | %.1f | %.2fx | %.1f | %.1f | %.2f | %.2f | %d | %d |\n",
                $1, $2, ratio, $3, $4, $5, $6, $7, $8 }'
    [ -n "$base" ] || base=$(jq -r .tokens_per_s <<<"$line")
    # a failed rank ends the job, but mpirun may take a moment to exit
    if ! kill -0 "$server" 2>/dev/null ||
        ! "$client" --connect "$ep" "${auth[@]}" --timeout-ms 5000 health >/dev/null 2>&1; then
        die "the server is not serving after the run at $n streams"
    fi
done
stop_server || status=1
exit $status
