#!/usr/bin/env bash
# deploy/launch.sh - starts a shardlm cluster with mpirun: one coordinator
# (rank 0) and TP x PP shards, so -np is always 1 + TP * PP.
#
#   deploy/launch.sh [--tp N] [--pp N] [--hostfile F] [--shardlm PATH]
#                    [--threads N] [--iface IF] [--dry-run]
#                    serve|run [shardlm args...]
#
# --tp and --pp are passed through to shardlm; everything after the
# subcommand goes to it unchanged. The script execs mpirun, so SIGTERM and
# SIGINT sent to it reach mpirun, which ends every rank at once (clients see
# their connection drop: UNAVAILABLE). To stop a server so that it answers
# its clients first and exits 0, send SIGTERM to rank 0 itself (its shards
# ignore SIGTERM and leave on the coordinator's Shutdown).
#
# What it adds to mpirun, and why:
#   --allow-run-as-root   only when we are root (Open MPI refuses root otherwise)
#   --oversubscribe       only when there are more ranks than slots: the cores
#                         here, or the hostfile's slots (a host listed without
#                         slots= counts as many cores as this one has)
#   --bind-to none        Open MPI binds each rank to one core (2 ranks) or one
#                         socket by default; a shard's OpenMP threads would then
#                         share that core
#   -x OMP_NUM_THREADS    kept from the environment when set, otherwise the
#                         cores of a host divided by the ranks it runs (at
#                         least 1; --threads N overrides)
#   single host (no hostfile): MPI moves data over shared memory only
#                         (btl self,vader) and its out-of-band channel stays on
#                         loopback, so nothing listens on a wildcard address
#   --iface IF            with a hostfile: MPI's TCP traffic on that interface
#
# shardlm is found from --shardlm, $SHARDLM, PATH, then the build directories
# of this checkout (build/release first, then the newest build/*/shardlm).
# Examples:
#   deploy/launch.sh --tp 2 run --model M --tokenizer T --prompt "Once" -n 64
#   deploy/launch.sh --tp 2 --pp 2 serve --model M --tokenizer T \
#       --listen tcp://127.0.0.1:5555
set -euo pipefail

die() {
    echo "launch.sh: $*" >&2
    exit 2
}

usage() {
    cat <<'EOF2'
usage: deploy/launch.sh [--tp N] [--pp N] [--hostfile F] [--shardlm PATH]
                        [--threads N] [--iface IF] [--dry-run]
                        serve|run [shardlm args...]
Starts 1 + TP * PP ranks with mpirun: rank 0 coordinates, the rest are shards.
--dry-run prints the mpirun command instead of running it. See the comment at
the top of this script for what it adds to mpirun and why.
EOF2
}

# positive_int NAME VALUE MAX
positive_int() {
    [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] && [ "$2" -le "$3" ] ||
        die "$1 must be an integer in [1, $3], not '$2'"
}

tp=1
pp=1
hostfile=
shardlm=${SHARDLM:-}
threads=
iface=
dry_run=0
mode=
while [ $# -gt 0 ]; do
    case $1 in
    --tp | --pp | --hostfile | --shardlm | --threads | --iface)
        [ $# -ge 2 ] || die "$1 needs a value"
        case $1 in
        --tp) tp=$2 ;;
        --pp) pp=$2 ;;
        --hostfile) hostfile=$2 ;;
        --shardlm) shardlm=$2 ;;
        --threads) threads=$2 ;;
        --iface) iface=$2 ;;
        esac
        shift 2
        ;;
    --tp=*) tp=${1#*=}; shift ;;
    --pp=*) pp=${1#*=}; shift ;;
    --hostfile=*) hostfile=${1#*=}; shift ;;
    --shardlm=*) shardlm=${1#*=}; shift ;;
    --threads=*) threads=${1#*=}; shift ;;
    --iface=*) iface=${1#*=}; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    serve | run) mode=$1; shift; break ;;
    *) usage >&2; die "unknown option '$1' (the subcommand, serve or run, comes last)" ;;
    esac
done
[ -n "$mode" ] || { usage >&2; die "serve or run is required"; }
# the limits are shardlm's own (SLM_PLAN_MAX_TP / _PP); it names the exact one
positive_int --tp "$tp" 4096
positive_int --pp "$pp" 4096
[ -z "$threads" ] || positive_int --threads "$threads" 1024
for a in "$@"; do
    case $a in
    --tp | --tp=* | --pp | --pp=*)
        die "give $a before '$mode': launch.sh derives -np from it" ;;
    esac
done
np=$((1 + tp * pp))

# --- shardlm -----------------------------------------------------------------
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "$shardlm" ]; then
    if command -v shardlm >/dev/null; then
        shardlm=$(command -v shardlm)
    elif [ -x "$root/build/release/shardlm" ]; then
        shardlm=$root/build/release/shardlm
    else
        shardlm=$(ls -t "$root"/build/*/shardlm 2>/dev/null | head -n 1 || true)
    fi
fi
[ -n "$shardlm" ] || die "shardlm not found: pass --shardlm PATH or set SHARDLM (or build it: cmake -S . -B build/release && cmake --build build/release)"
[ -x "$shardlm" ] || die "$shardlm: not an executable"
# mpirun starts the ranks on other hosts by this path too
[[ $shardlm == /* ]] || shardlm=$(cd "$(dirname "$shardlm")" && pwd)/$(basename "$shardlm")
command -v mpirun >/dev/null || die "mpirun not found (Debian: apt-get install openmpi-bin)"

# --- slots, threads ----------------------------------------------------------
cores=$(nproc 2>/dev/null || echo 1)
mpirun_args=(-np "$np")
if [ -n "$hostfile" ]; then
    [ -f "$hostfile" ] && [ -r "$hostfile" ] || die "$hostfile: cannot read the hostfile"
    # Open MPI's hostfile: "host [slots=N] [max_slots=N]", # comments.
    # A host without slots= gets its core count; we assume this host's.
    read -r hosts slots max_slots < <(awk -v cores="$cores" '
        { sub(/#.*/, "") }
        NF == 0 { next }
        { n = cores
          for (i = 2; i <= NF; i++)
              if ($i ~ /^slots=/) n = substr($i, 7) + 0
          if (!($1 in seen)) { seen[$1] = 1; hosts++ }
          total += n; if (n > most) most = n }
        END { print hosts + 0, total + 0, most + 0 }' "$hostfile")
    [ "$hosts" -gt 0 ] || die "$hostfile: no hosts"
    mpirun_args+=(--hostfile "$hostfile")
    # Open MPI fills each host's slots in order; past them it deals round-robin
    if [ "$np" -le "$slots" ]; then
        per_host=$((np < max_slots ? np : max_slots))
    else
        per_host=$(((np + hosts - 1) / hosts))
    fi
    if [ "$hosts" -gt 1 ]; then
        # The shards reach the coordinator over its control endpoint, which is
        # on loopback unless told otherwise.
        bind_given=0
        for a in "$@"; do
            case $a in --control-bind | --control-bind=*) bind_given=1 ;; esac
        done
        [ $bind_given -eq 1 ] || die "$hostfile names $hosts hosts: the shards on other hosts cannot reach a loopback control endpoint; add --control-bind tcp://ADDR:* with the address of rank 0's host (the first in $hostfile), on a trusted network: the control plane is not yet authenticated"
    fi
    if [ -n "$iface" ]; then
        mpirun_args+=(--mca btl_tcp_if_include "$iface" --mca oob_tcp_if_include "$iface")
    fi
else
    [ -z "$iface" ] || die "--iface needs --hostfile (one host uses shared memory)"
    slots=$cores
    per_host=$np
    # one host: shared memory between ranks, the launcher's channel on loopback
    # shellcheck disable=SC2054 # "self,vader" is one value
    mpirun_args+=(--mca btl self,vader --mca oob_tcp_if_include lo)
fi
[ "$(id -u)" -eq 0 ] && mpirun_args+=(--allow-run-as-root)
[ "$np" -gt "$slots" ] && mpirun_args+=(--oversubscribe)
mpirun_args+=(--bind-to none)

if [ -n "$threads" ]; then
    export OMP_NUM_THREADS=$threads
elif [ -z "${OMP_NUM_THREADS:-}" ]; then
    # The coordinator mostly waits; counting it too keeps the arithmetic simple
    # and errs towards fewer threads, never more than the cores.
    t=$((cores / per_host))
    export OMP_NUM_THREADS=$((t > 0 ? t : 1))
fi
mpirun_args+=(-x OMP_NUM_THREADS)

cmd=(mpirun "${mpirun_args[@]}" "$shardlm" "$mode" --tp "$tp" --pp "$pp" "$@")
if [ $dry_run -eq 1 ]; then
    echo "OMP_NUM_THREADS=$OMP_NUM_THREADS ${cmd[*]}"
    exit 0
fi
exec "${cmd[@]}"
