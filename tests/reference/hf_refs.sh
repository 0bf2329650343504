#!/usr/bin/env bash
# Prints the directory of transformers' reference models and outputs
# (hf_models.py, run in the pinned environment of venv.sh), making them
# first if they are not there. They are kept in the cache beside the
# environment, keyed by the script and the pins, so they are made once per
# machine and version. Exit 1 if either cannot be made. Progress and errors
# go to stderr; stdout is the path alone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=$(bash "$here/venv.sh")
key=$(cat "$here/hf_models.py" "$here/requirements.txt" | sha256sum | cut -c1-16)
refs=${SHARDLM_CACHE:-$HOME/.cache/shardlm}/hf-models-$key
if [ ! -e "$refs/.complete" ]; then
    # tests that run at once wait for one maker, then use its output
    mkdir -p "$(dirname "$refs")"
    exec 9>"$refs.lock"
    flock 9
    if [ ! -e "$refs/.complete" ]; then
        rm -rf "$refs"
        log=$(mktemp)
        if ! "$venv/bin/python" "$here/hf_models.py" "$refs" >"$log" 2>&1; then
            echo "hf_refs.sh: the reference script failed:" >&2
            tail -20 "$log" >&2
            rm -f "$log"
            exit 1
        fi
        rm -f "$log"
        touch "$refs/.complete"
    fi
fi
echo "$refs"
