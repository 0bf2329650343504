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

pass() { passes=$((passes + 1)); }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }

# check NAME COMMAND...: counts a pass if COMMAND succeeds.
check() {
    local name=$1
    shift
    if "$@"; then pass; else fail "$name"; fi
}

# finish: prints the totals and exits non-zero on any failure.
finish() {
    echo "$passes passed, $fails failed"
    [ $fails -eq 0 ] && [ $passes -gt 0 ]
}
