#!/usr/bin/env bash
# Prints the directory of the tokenizer references (tokenizers_ref.py, run in
# the pinned environment of venv.sh), making them first if they are not there.
# The inputs are llama.cpp's vocabulary files and test vectors, as vendored in
# PyPI's llama-cpp-python sdist (downloaded once into the cache, never into
# the checkout). Everything is kept in the cache beside the environment,
# keyed by the scripts, the pins and the sdist version, so it is made once per
# machine and version. Exit 1 if it cannot be made. Progress and errors go to
# stderr; stdout is the path alone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sdist_version=0.3.36
venv=$(bash "$here/venv.sh")
cache=${SHARDLM_CACHE:-$HOME/.cache/shardlm}
key=$( (cat "$here/tokenizers_ref.py" "$here/tok_refs.sh" "$here/requirements.txt"
        echo "$sdist_version") | sha256sum | cut -c1-16)
refs=$cache/tok-refs-$key
vocab=$cache/llama-cpp-python-$sdist_version-vocab
mkdir -p "$cache"

# The sdist (77 MB) is fetched once; only its vocabulary files are kept.
if [ ! -e "$vocab/.complete" ]; then
    exec 8>"$vocab.lock"
    flock 8
    if [ ! -e "$vocab/.complete" ]; then
        rm -rf "$vocab" "$vocab.dl"
        mkdir -p "$vocab.dl"
        echo "tok_refs.sh: downloading llama-cpp-python $sdist_version (sdist, once per machine)" >&2
        "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
            --no-binary :all: "llama-cpp-python==$sdist_version" -d "$vocab.dl" >&2
        mkdir -p "$vocab"
        tar -xzf "$vocab.dl"/llama_cpp_python-"$sdist_version".tar.gz -C "$vocab.dl" \
            --wildcards '*/vendor/llama.cpp/models/ggml-vocab-*'
        mv "$vocab.dl"/llama_cpp_python-"$sdist_version"/vendor/llama.cpp/models/ggml-vocab-* "$vocab/"
        rm -rf "$vocab.dl"
        touch "$vocab/.complete"
    fi
    exec 8>&-
fi

if [ ! -e "$refs/.complete" ]; then
    # tests that run at once wait for one maker, then use its output
    exec 9>"$refs.lock"
    flock 9
    if [ ! -e "$refs/.complete" ]; then
        rm -rf "$refs"
        log=$(mktemp)
        if ! "$venv/bin/python" "$here/tokenizers_ref.py" "$vocab" "$refs" >"$log" 2>&1; then
            echo "tok_refs.sh: the reference script failed:" >&2
            tail -20 "$log" >&2
            rm -f "$log"
            exit 1
        fi
        rm -f "$log"
        touch "$refs/.complete"
    fi
fi
echo "$refs"
