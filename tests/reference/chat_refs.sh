#!/usr/bin/env bash
# Prints the directory of transformers' renderings of real chat templates
# (chat_ref.py, run in the pinned environment of venv.sh on the templates of
# llamacpp_sdist.sh), making them first if they are not there. They are kept
# in the cache, keyed by the script, the pins and today's date (Llama 3.2's
# template writes today's date into the prompt), so they are made about once
# a day per machine; making them takes seconds. Exit 1 if they cannot be
# made. Progress and errors go to stderr; stdout is the path alone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=$(bash "$here/venv.sh")
sdist=$(bash "$here/llamacpp_sdist.sh")
key=$( (cat "$here/chat_ref.py" "$here/requirements.txt"; basename "$sdist"; date +%F) |
    sha256sum | cut -c1-16)
refs=${SHARDLM_CACHE:-$HOME/.cache/shardlm}/chat-refs-$key
if [ ! -e "$refs/.complete" ]; then
    # tests that run at once wait for one maker, then use its output
    mkdir -p "$(dirname "$refs")"
    exec 9>"$refs.lock"
    flock 9
    if [ ! -e "$refs/.complete" ]; then
        rm -rf "$refs"
        log=$(mktemp)
        if ! "$venv/bin/python" "$here/chat_ref.py" "$sdist" "$refs" >"$log" 2>&1; then
            echo "chat_refs.sh: the reference script failed:" >&2
            tail -20 "$log" >&2
            rm -f "$log"
            exit 1
        fi
        cat "$log" >&2
        rm -f "$log"
        touch "$refs/.complete"
    fi
fi
echo "$refs"
