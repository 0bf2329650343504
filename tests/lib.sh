# tests/lib.sh - sourced by the integration scripts: locations, skipping, a
# scratch directory, and pass/fail counting that ends in the plain
# "N passed, N failed" line.
set -u
models=${SHARDLM_MODELS_DIR:-../shared/models}
golden=${SHARDLM_GOLDEN_DIR:-../shared/golden}
bin=${SHARDLM_BIN:?SHARDLM_BIN must name the shardlm binary}
tmp=$(mktemp -d)
# Servers that start_server started: on any exit (a failed check that ends
# the script, a timeout's SIGTERM) those still running are killed with their
# ranks, so a failing test leaves no job and no port behind.
server_pids=()
cleanup() {
    local p
    for p in "${server_pids[@]}"; do
        kill -0 "$p" 2>/dev/null || continue
        pkill -9 -P "$p" 2>/dev/null
        kill -9 "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP # so that the EXIT trap runs (ctest's timeout)
fails=0
passes=0
skips=0
server_err=

# require FILE...: exit 77 (ctest: skipped) unless every file is readable;
# in CI (CI=true) a missing shared model or golden file is a failure.
require() {
    local f
    for f in "$@"; do
        [ -r "$f" ] && continue
        if [ "${CI:-}" = true ]; then
            echo "FAIL: $f not found (CI runs every test; set SHARDLM_MODELS_DIR / SHARDLM_GOLDEN_DIR)"
            exit 1
        fi
        echo "SKIP: $f not found"
        exit 77
    done
}

# Open MPI leaks at exit by design; under ASan, LeakSanitizer would report
# those leaks. The suppressions name only Open MPI and its libraries, and
# match on any frame of an allocation's stack - but Open MPI is built without
# frame pointers, so the default fast unwinder stops one frame into it and
# leaves nothing to match: fast_unwind_on_malloc=0 takes the slow, complete
# unwind. Leaks in our code are still reported. Ignored outside ASan builds.
export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lsan.supp:print_suppressions=0:fast_unwind_on_malloc=0"

# mpirun as this machine needs it: more ranks than cores, and root allowed
# only when we are root. Use as "${mpirun[@]}" -np N prog ...
mpirun=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && mpirun+=(--allow-run-as-root)

# shardlm refuses to run as root unless told (common/privilege.h); tests run
# as root in CI. Use as "$bin" generate "${asroot[@]}" ...
asroot=()
[ "$(id -u)" -eq 0 ] && asroot=(--allow-root)

# require_mpirun: exit 77 (skipped) where Open MPI is not installed.
require_mpirun() {
    command -v mpirun >/dev/null || { echo "SKIP: mpirun not found"; exit 77; }
}

pass() { passes=$((passes + 1)); }
# skip_part WHAT: a part of the test that cannot run here; the test then
# ends as skipped (77), not passed, even if the rest passed.
skip_part() { echo "SKIP $*"; skips=$((skips + 1)); }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }

# check NAME COMMAND...: counts a pass if COMMAND succeeds.
check() {
    local name=$1
    shift
    if "$@"; then pass; else fail "$name"; fi
}

# eventually SECONDS COMMAND...: succeeds once COMMAND does, retrying every
# 0.1 s for up to SECONDS. For what a server writes after the client has its
# answer: the audit log of a refusal the client saw first, say.
eventually() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.1
    done
}

# start_server ERRFILE COMMAND...: starts a server job (mpirun ... serve) in
# the background, its stderr in ERRFILE, and waits until it says where it
# listens: sets $pid, $ep and $server_err. Returns 1, having shown ERRFILE
# and killed the job, if it never does (60 s: a sanitized build on a loaded
# host is slow).
start_server() {
    local err=$1
    shift
    server_err=$err
    : >"$err"
    "$@" 2>"$err" &
    pid=$!
    server_pids+=("$pid")
    ep=
    for _ in $(seq 600); do
        ep=$(sed -n 's/^shardlm serve: listening on \([^ ]*\) .*/\1/p' "$err")
        [ -n "$ep" ] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "FAIL the server did not start ($*):"
    cat "$err"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 1
}

# job_ranks MPIRUN_PID [RANK]: the pids of that job's ranks (mpirun's
# children that carry an MPI rank), or of the one rank given.
job_ranks() {
    local p
    for p in $(pgrep -P "$1"); do
        tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null |
            grep -qx "OMPI_COMM_WORLD_RANK=${2:-[0-9]*}" && echo "$p"
    done
}

# no_sanitizer_report FILE: FILE (a program's stderr) holds no report of
# AddressSanitizer, LeakSanitizer, UndefinedBehaviorSanitizer or
# ThreadSanitizer. Under halt_on_error a report also ends the program with
# a non-zero status, but a report can hide behind a status that is expected
# to be non-zero, and LeakSanitizer speaks only at exit.
sanitizer_report='ERROR: AddressSanitizer|LeakSanitizer|WARNING: ThreadSanitizer|runtime error:'
no_sanitizer_report() {
    grep -Eq "$sanitizer_report" "$1" || return 0
    echo "--- sanitizer report in $1:"
    grep -E -A 25 "$sanitizer_report" "$1" | head -60
    return 1
}

# stop_server [PID ERRFILE]: ends a server job as scancel does - SIGTERM to
# every rank: the coordinator answers its clients, shuts the shards down and
# the job exits 0 (README) - and checks that it did: exit status 0 within
# 60 s, and no sanitizer report in ERRFILE (under ASan, leaks and crashes at
# shutdown show nowhere else). Defaults: $pid and the ERRFILE given to
# start_server.
stop_server() {
    local job=${1:-$pid} err=${2:-$server_err} p rc
    for p in $(job_ranks "$job"); do kill -TERM "$p" 2>/dev/null; done
    for _ in $(seq 600); do
        kill -0 "$job" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$job" 2>/dev/null; then
        fail "the server job $job did not end within 60 s of SIGTERM"
        pkill -9 -P "$job"
        kill -9 "$job" 2>/dev/null
    fi
    wait "$job"
    rc=$?
    check "the server exits 0 after SIGTERM (exit $rc)" test $rc -eq 0
    check "the server's stderr ($err) holds no sanitizer report" no_sanitizer_report "$err"
    [ $rc -eq 0 ] || tail -20 "$err"
}

# finish: prints the totals and exits non-zero on any failure, 77 (skipped)
# if a part was skipped.
finish() {
    echo "$passes passed, $fails failed, $skips skipped"
    [ $fails -eq 0 ] && [ $passes -gt 0 ] || exit 1
    [ $skips -eq 0 ] || exit 77
}
