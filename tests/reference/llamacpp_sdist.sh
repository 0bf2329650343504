#!/usr/bin/env bash
# Prints the path of llama-cpp-python 0.3.36's source distribution, which
# carries llama.cpp's real chat templates (vendor/llama.cpp/models/templates/)
# and vocabularies, downloading it first if it is not in the cache. It is
# never committed: it is an outside reference, fetched at test time into
# ${SHARDLM_CACHE:-~/.cache/shardlm}/llamacpp/, one copy per machine shared
# by every test that needs it (the flock lets tests that run at once wait for
# one download). Exit 1 if it cannot be fetched. Progress and errors go to
# stderr; stdout is the path alone.
set -euo pipefail
version=0.3.36
cache=${SHARDLM_CACHE:-$HOME/.cache/shardlm}
dir=$cache/llamacpp
sdist=$dir/llama_cpp_python-$version.tar.gz
if [ ! -s "$sdist" ]; then
    mkdir -p "$dir"
    exec 9>"$cache/llamacpp.lock"
    flock 9
    if [ ! -s "$sdist" ]; then
        command -v python3 >/dev/null || { echo "llamacpp_sdist.sh: python3 not found" >&2; exit 1; }
        work=$(mktemp -d "$dir/.download.XXXXXX")
        # --no-binary: the sdist itself, not a wheel built from it
        if ! python3 -m pip download --quiet --disable-pip-version-check \
            --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work" >&2; then
            rm -rf "$work"
            echo "llamacpp_sdist.sh: could not download llama-cpp-python $version" >&2
            exit 1
        fi
        got=$(find "$work" -maxdepth 1 -name 'llama_cpp_python-*.tar.gz' | head -1)
        [ -n "$got" ] || { rm -rf "$work"; echo "llamacpp_sdist.sh: no sdist in the download" >&2; exit 1; }
        # rename is atomic: a reader never sees half a file
        mv "$got" "$sdist"
        rm -rf "$work"
    fi
fi
echo "$sdist"
