# tests/lib.sh - sourced by the integration scripts: locations, skipping, a
# scratch directory, and pass/fail counting that ends in the plain
# "N passed, N failed" line.
set -u
models=${SHARDLM_MODELS_DIR:-../shared/models}
golden=${SHARDLM_GOLDEN_DIR:-../shared/golden}
bin=${SHARDLM_BIN:?SHARDLM_BIN must name the shardlm binary}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
passes=0

# require FILE...: exit 77 (ctest: skipped) unless every file is readable.
require() {
    local f
    for f in "$@"; do
        [ -r "$f" ] || { echo "SKIP: $f not found"; exit 77; }
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

# finish: prints the totals and exits non-zero on any failure.
finish() {
    echo "$passes passed, $fails failed"
    [ $fails -eq 0 ] && [ $passes -gt 0 ]
}
