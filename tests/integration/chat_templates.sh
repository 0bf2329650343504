#!/usr/bin/env bash
# Chat formats against transformers itself: tests/reference/chat_ref.py
# takes the real chat templates that llama.cpp collected from model
# repositories (in llama-cpp-python's sdist, fetched into the cache at test
# time) and renders with transformers' apply_chat_template (pinned, in the
# cached venv) 28 conversations - with and without a system message,
# multi-turn, Unicode and Unicode white space, empty contents, roles out of
# order - with add_generation_prompt false and true. chat_check then
# requires model/chat to recognise each known template (Llama 2, 3, 3.1,
# 3.2, ChatML, Qwen2.5, Qwen3, Mistral v0.1, v0.2, v1, v3, v3-tekken) as
# its built-in and render every conversation byte for byte as transformers
# did, or refuse it where the template raised; and to refuse every other
# template: the rest of llama.cpp's collection, known templates carrying a
# Jinja injection (cycler.__init__.__globals__ ...) or one changed
# character.
source "$(dirname "$0")/../lib.sh"
prog=${SHARDLM_TEST_BIN_DIR:-}/chat_check
[ -x "$prog" ] || { echo "FAIL chat_check not built ($prog)"; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)

refs=$(bash "$here/reference/chat_refs.sh") || {
    [ "${CI:-}" = true ] && { echo "FAIL: the references could not be made"; exit 1; }
    echo "SKIP: the references could not be made"
    exit 77
}

"$prog" "$refs" >"$tmp/out" 2>"$tmp/err"
rc=$?
cat "$tmp/out"
check "chat_check passes (exit $rc)" test $rc -eq 0
check "chat_check wrote no sanitizer report" no_sanitizer_report "$tmp/err"
summary=$(tail -1 "$tmp/out")
known=$(sed -n 's/^chat_check: \([0-9]*\) templates recognised.*/\1/p' <<<"$summary")
refused=$(sed -n 's/.*, \([0-9]*\) refused as unknown.*/\1/p' <<<"$summary")
equal=$(sed -n 's/.*; \([0-9]*\) renderings equal.*/\1/p' <<<"$summary")
check "every known template and its variants were recognised (${known:-?} >= 40)" test "${known:-0}" -ge 40
check "the rest and the injections were refused (${refused:-?} >= 150)" test "${refused:-0}" -ge 150
check "renderings were compared (${equal:-?} >= 1500)" test "${equal:-0}" -ge 1500
n_ssti=$(grep -c '"source": "ssti-' "$refs/refs.json")
check "injected templates were among them ($n_ssti)" test "$n_ssti" -ge 40
finish
