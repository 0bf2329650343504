#!/usr/bin/env bash
# Prints the path of a virtual environment holding the pinned outside
# references (requirements.txt beside this file), creating it first if it is
# not there. It lives in a cache directory outside the checkout
# (${SHARDLM_CACHE:-~/.cache/shardlm}), named after the hash of the
# requirements, so only a fresh machine - or a change of pins - pays for the
# install (torch from PyPI brings its CUDA wheels: a few GB, a few minutes).
# Progress goes to stderr; stdout is the path alone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
req=$here/requirements.txt
cache=${SHARDLM_CACHE:-$HOME/.cache/shardlm}
venv=$cache/ref-$(sha256sum "$req" | cut -c1-16)
if [ ! -x "$venv/bin/python" ] || [ ! -e "$venv/.complete" ]; then
    # tests that run at once wait for one installer, then use its venv
    mkdir -p "$cache"
    exec 9>"$venv.lock"
    flock 9
    if [ ! -e "$venv/.complete" ]; then
        command -v python3 >/dev/null || { echo "venv.sh: python3 not found (deploy/install-deps.sh installs it)" >&2; exit 1; }
        rm -rf "$venv"
        echo "venv.sh: installing the references into $venv (once per machine)" >&2
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
        touch "$venv/.complete"
    fi
fi
echo "$venv"
