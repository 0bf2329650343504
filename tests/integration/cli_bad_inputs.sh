#!/usr/bin/env bash
# `shardlm generate` on bad checkpoints and tokenizer files: each must exit
# non-zero with a message that names the field and value, and must not crash
# (a crash exits >= 128; under ASan+UBSan any finding aborts non-zero with a
# report, which this script also rejects).
source "$(dirname "$0")/../lib.sh"
model="$models/stories260K.bin"
tok="$models/tok512.bin"
require "$model" "$tok" "$models/tokenizer.bin"

# expect_fail NAME MODEL TOKENIZER PATTERN: non-zero exit below 128, stderr
# matching PATTERN, no sanitizer report.
expect_fail() {
    local name=$1 m=$2 t=$3 pattern=$4 rc
    "$bin" generate "${asroot[@]}" --model "$m" --tokenizer "$t" --prompt "Once" -n 8 \
        --temperature 0 >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 0 ] || [ $rc -ge 128 ] || grep -q "Sanitizer" "$tmp/err" ||
        ! grep -qE -- "$pattern" "$tmp/err"; then
        fail "$name: exit $rc, stderr:"; head -c 2000 "$tmp/err"; echo
    else
        pass
    fi
}

# header fields, each set to 0, -1 and a huge value
set_i32() { # file offset value: writes a little-endian int32 in place
    local u=$(( $3 & 0xffffffff ))
    printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((u & 255)) \
        $(((u >> 8) & 255)) $(((u >> 16) & 255)) $(((u >> 24) & 255)))" |
        dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
fields=(dim hidden_dim n_layers n_heads n_kv_heads vocab_size seq_len)
for i in "${!fields[@]}"; do
    for v in 0 -1 2000000000; do
        cp "$model" "$tmp/m.bin"
        set_i32 "$tmp/m.bin" $((4 * i)) "$v"
        shown=$v
        [ "${fields[$i]}" = vocab_size ] && [ "$v" = -1 ] && shown=1
        expect_fail "${fields[$i]}=$v" "$tmp/m.bin" "$tok" "${fields[$i]} = $shown"
    done
done

# truncated at many offsets (header, first tensor, middle, last byte)
size=$(stat -c %s "$model")
for cut in 0 3 27 28 29 1000 65536 $((size / 2)) $((size - 4)) $((size - 1)); do
    head -c "$cut" "$model" >"$tmp/m.bin"
    expect_fail "model truncated at $cut" "$tmp/m.bin" "$tok" "truncated|out of range"
done
# a byte too many
cp "$model" "$tmp/m.bin"; printf 'x' >>"$tmp/m.bin"
expect_fail "model with a trailing byte" "$tmp/m.bin" "$tok" "1 trailing bytes"

# random bytes, several sizes
for n in 0 1 28 4096 1056540; do
    head -c "$n" /dev/urandom >"$tmp/r.bin"
    expect_fail "random model of $n bytes" "$tmp/r.bin" "$tok" "shardlm: .+"
    expect_fail "random tokenizer of $n bytes" "$model" "$tmp/r.bin" "shardlm: .+"
done

# tokenizer: vocab mismatch both ways, truncation, bad max_token_length
expect_fail "32000-token vocab for a 512-token model" "$model" \
    "$models/tokenizer.bin" "trailing bytes"
tsize=$(stat -c %s "$tok")
for cut in 0 2 4 9 100 $((tsize / 2)) $((tsize - 1)); do
    head -c "$cut" "$tok" >"$tmp/t.bin"
    expect_fail "tokenizer truncated at $cut" "$model" "$tmp/t.bin" "truncated|offset"
done
cp "$tok" "$tmp/t.bin"; set_i32 "$tmp/t.bin" 0 0
expect_fail "max_token_length 0" "$model" "$tmp/t.bin" "max_token_length"
cp "$tok" "$tmp/t.bin"; set_i32 "$tmp/t.bin" 0 -5
expect_fail "max_token_length -5" "$model" "$tmp/t.bin" "max_token_length"
cp "$tok" "$tmp/t.bin"; set_i32 "$tmp/t.bin" 8 -3
expect_fail "piece length -3" "$model" "$tmp/t.bin" "-3"
cp "$tok" "$tmp/t.bin"; set_i32 "$tmp/t.bin" 8 100000
expect_fail "piece length 100000" "$model" "$tmp/t.bin" "100000"

# missing files and bad flags
expect_fail "missing model" "$tmp/nope.bin" "$tok" "nope.bin: cannot open"
"$bin" generate "${asroot[@]}" --model "$model" --tokenizer "$tok" -n abc 2>"$tmp/err"
rc=$?
check "-n abc refused (exit $rc)" test "$rc" -ne 0 -a "$rc" -lt 128
check "-n abc names the flag" grep -q -- "-n: 'abc'" "$tmp/err"
"$bin" generate "${asroot[@]}" --model "$model" --tokenizer "$tok" --top-p 2 2>"$tmp/err"
rc=$?
check "--top-p 2 refused (exit $rc)" test "$rc" -ne 0 -a "$rc" -lt 128
check "--top-p 2 names the field" grep -q "top_p" "$tmp/err"

# Least privilege: as root, generate and run refuse to start unless told.
if [ "$(id -u)" -eq 0 ]; then
    "$bin" generate --model "$model" --tokenizer "$tok" -n 8 >"$tmp/out" 2>"$tmp/err"
    rc=$?
    check "generate as root without --allow-root: refused (exit $rc)" \
        test "$rc" -ne 0 -a "$rc" -lt 128 -a ! -s "$tmp/out"
    check "... saying why and how" grep -q "refusing to run as root.*--allow-root" "$tmp/err"
    if command -v mpirun >/dev/null; then
        timeout 60 "${mpirun[@]}" -np 2 "$bin" run --model "$model" \
            --tokenizer "$tok" --prompt Once -n 8 >"$tmp/out" 2>"$tmp/err"
        rc=$?
        check "run as root without --allow-root: refused before loading (exit $rc)" \
            bash -c "[ $rc -ne 0 ] && [ $rc -lt 124 ] && ! grep -q 'shards ready' '$tmp/err'"
        check "... saying why" grep -q "refusing to run as root" "$tmp/err"
    else
        skip_part "run as root without --allow-root: mpirun not found"
    fi
else
    skip_part "the refusal to run as root: not root"
fi

finish
