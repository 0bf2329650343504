#!/usr/bin/env bash
# Hugging Face tokenizer.json files against `tokenizers` itself, on real
# vocabularies: llama.cpp's ggml-vocab-*.gguf files (from PyPI's
# llama-cpp-python sdist) turned into tokenizer.json by transformers, plus
# the same vocabularies rewritten in the styles published files use
# (tests/reference/tokenizers_ref.py lists them). For every case tok_check
# requires our ids == tokenizers' ids on llama.cpp's test texts and on 2,000
# random strings (special tokens as text, and parsed; every tenth also with
# the post-processor's tokens), and our streamed decode == tokenizers' decode;
# on the byte-level files without a normalizer, decode(encode(s)) == s for
# every random string.
#
# The .out files are the original tokenizers' ids; where the converted file
# differs from the original (a conversion difference, not ours: tok_check has
# already required ours == tokenizers' on the same file), the list of test
# texts that differ must be exactly the known one:
#   llama-spm   15 texts: transformers' converter writes Metaspace with
#               prepend_scheme "first" and no dummy-prefix normalizer, so
#               texts that start with spaces or are only whitespace lose
#               SentencePiece's extra "\u2581" (the legacy-style rewrite of
#               the same vocabulary, llama-spm-legacy, matches all 46)
#   llama-bpe   1 text (43, Vietnamese): the converted file lacks Llama 3's
#               ignore_merges (llama3-official, with it, matches all 46)
#   starcoder   1 text (0, "ied 4 ½ months"): StarCoder's own pre-tokenizer
#               splits digits, the converted ByteLevel one does not
source "$(dirname "$0")/../lib.sh"
prog=${SHARDLM_TEST_BIN_DIR:-}/tok_check
[ -x "$prog" ] || { echo "FAIL tok_check not built ($prog)"; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)

# The references are made once per version of the scripts and the pins
# (tests/reference/tok_refs.sh).
refs=$(bash "$here/reference/tok_refs.sh") || {
    [ "${CI:-}" = true ] && { echo "FAIL: the references could not be made"; exit 1; }
    echo "SKIP: the references could not be made"
    exit 77
}

declare -A known_out_diffs=(
    [llama-spm]="3,4,5,12,14,15,17,18,24,25,26,27,28,29,44"
    [llama-spm-legacy]=""
    [phi-3]=""
    [llama-bpe]="43"
    [llama-bpe-strings]="43"
    [llama3-official]=""
    [qwen2]=""
    [qwen2-nfc]=""
    [qwen35]=""
    [gpt-2]=""
    [starcoder]="0"
)

# Byte-level files without a normalizer promise decode(encode(s)) == s (every
# byte has a token and nothing is rewritten): every random string must come
# back. The SentencePiece ones and NFC do not (a dummy prefix, normalized
# text); their counts are printed only.
declare -A lossless=([llama-bpe]=1 [llama-bpe-strings]=1 [llama3-official]=1
    [qwen2]=1 [qwen35]=1 [gpt-2]=1 [gpt-2-digits]=1 [starcoder]=1)

n=0
while read -r name; do
    [ -n "$name" ] || continue
    n=$((n + 1))
    if timeout 600 "$prog" "$refs/$name" >"$tmp/out" 2>"$tmp/err"; then
        pass
    else
        fail "$name: tok_check exit $?"
        head -40 "$tmp/err"
    fi
    cat "$tmp/out"
    check "$name: no sanitizer report" no_sanitizer_report "$tmp/err"
    diffs=$(sed -n 's/^out_diffs: //p' "$tmp/out")
    if [ -n "${known_out_diffs[$name]+set}" ]; then
        # the case has llama.cpp's test texts: all of them were compared
        check "$name: test texts were compared" grep -Eq 'inp ids == tokenizers +[1-9][0-9]*/' "$tmp/out"
        check "$name: the texts whose .out ids differ are the known ones ('$diffs' = '${known_out_diffs[$name]}')" \
            test "$diffs" = "${known_out_diffs[$name]}"
    fi
    check "$name: 2000 random strings were compared" grep -Eq 'random plain +[0-9]+/2000$' "$tmp/out"
    if [ -n "${lossless[$name]:-}" ]; then
        check "$name: decode(encode(s)) == s for every random string" \
            grep -Eq 'decode\(encode\(s\)\) == s +2000/2000$' "$tmp/out"
    fi
done <"$refs/cases.txt"
check "every case of the reference ran ($n)" test "$n" -ge 14
for name in llama-spm llama-bpe qwen2; do
    check "the reference has $name" grep -qx "$name" "$refs/cases.txt"
done
finish
