#!/usr/bin/env bash
# `shardlm keygen --sign` and `shardlm manifest` on the shared model: a signed
# manifest verifies; a flipped model byte, a truncated tokenizer, another
# key, an unsigned manifest, a loose secret key and a file outside the
# manifest's directory are each refused with a message naming the file, and
# nothing crashes (exit >= 128 or a sanitizer report fails the test).
source "$(dirname "$0")/../lib.sh"
model="$models/stories260K.bin"
tok="$models/tok512.bin"
require "$model" "$tok"

# run_ok NAME CMD...: exit 0, no sanitizer report.
run_ok() {
    local name=$1 rc; shift
    "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?
    if [ $rc -ne 0 ] || grep -q Sanitizer "$tmp/err"; then
        fail "$name: exit $rc:"; head -c 2000 "$tmp/err"; echo
    else pass; fi
}
# run_fail NAME PATTERN CMD...: exit 1, stderr matching PATTERN.
run_fail() {
    local name=$1 pattern=$2 rc; shift 2
    "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?
    if [ $rc -ne 1 ] || grep -q Sanitizer "$tmp/err" ||
        ! grep -qE -- "$pattern" "$tmp/err"; then
        fail "$name: exit $rc, stderr:"; head -c 2000 "$tmp/err"; echo
    else pass; fi
}

d="$tmp/models"
mkdir "$d"
cp "$model" "$tok" "$d/"
m="$d/manifest.txt"
run_ok "keygen" "$bin" keygen --sign "$tmp/k"
check "secret key mode 0600" test "$(stat -c %a "$tmp/k.secret")" = 600
run_fail "keygen twice" "already exists" "$bin" keygen --sign "$tmp/k"
run_ok "keygen other" "$bin" keygen --sign "$tmp/other"
run_ok "manifest --out --sign" "$bin" manifest --out "$m" \
    --sign "$tmp/k.secret" "$d/stories260K.bin" "$d/tok512.bin"
check "signature written" test -s "$m.sig"
run_ok "verify signed" "$bin" manifest --verify "$m" \
    --public-key "$tmp/k.public" "$d/stories260K.bin" "$d/tok512.bin"
check "verify prints the cost" grep -qE "2 files verified, [0-9]+ bytes hashed in [0-9.]+ s.*signature good" "$tmp/err"

run_fail "another key" "signature does not verify" \
    "$bin" manifest --verify "$m" --public-key "$tmp/other.public"
printf '\x01' | dd of="$d/stories260K.bin" bs=1 seek=4096 conv=notrunc status=none
run_fail "flipped model byte" "stories260K.bin: SHA-256 differs from .*manifest.txt \(file changed or corrupted\)" \
    "$bin" manifest --verify "$m" --public-key "$tmp/k.public"
cp "$model" "$d/stories260K.bin"
head -c 100 "$tok" >"$d/tok512.bin"
run_fail "truncated tokenizer" "tok512.bin: size 100 bytes differs" \
    "$bin" manifest --verify "$m" --public-key "$tmp/k.public"
cp "$tok" "$d/tok512.bin"
run_fail "model outside the manifest's directory" "not the file" \
    "$bin" manifest --verify "$m" --public-key "$tmp/k.public" "$model"
mv "$m.sig" "$tmp/sig"
run_fail "unsigned, key required" "is not signed" \
    "$bin" manifest --verify "$m" --public-key "$tmp/k.public"
run_ok "unsigned, no key" "$bin" manifest --verify "$m"
chmod 644 "$tmp/k.secret"
run_fail "secret key 0644" "mode 0644" \
    "$bin" manifest --out "$d/m2" --sign "$tmp/k.secret" "$d/tok512.bin"
check "nothing left behind" test ! -e "$d/m2"
mv "$tmp/sig" "$m.sig"

# The cluster checks the manifest on every rank before any weight is used:
# a good one runs (and says what it cost), a flipped byte at any sampled
# offset or a wrong key stops the job before a shard loads.
if command -v mpirun >/dev/null; then
    export OMP_NUM_THREADS=1
    cluster() { # ARGS...: run at TP=2 on the copies in $d
        timeout 120 "${mpirun[@]}" -np 3 "$bin" run "${asroot[@]}" --tp 2 \
            --model "$d/stories260K.bin" --tokenizer "$d/tok512.bin" \
            --prompt "Once upon a time" -n 16 --temperature 0 "$@" \
            >"$tmp/out" 2>"$tmp/err"
    }
    cluster --manifest "$m" --public-key "$tmp/k.public"
    rc=$?
    check "cluster with a signed manifest: runs (exit $rc)" test $rc -eq 0
    check "... every rank verified it" \
        test "$(grep -c 'manifest verified (signature good)' "$tmp/err")" -eq 3
    size=$(stat -c %s "$model")
    for off in 0 27 $((size / 3)) $((size / 2 + 1)) $((size - 1)); do
        cp "$model" "$d/stories260K.bin"
        printf '\xa5' | dd of="$d/stories260K.bin" bs=1 seek=$off conv=notrunc status=none
        cmp -s "$model" "$d/stories260K.bin" || {
            cluster --manifest "$m" --public-key "$tmp/k.public"
            rc=$?
            if [ $rc -ne 0 ] && [ $rc -lt 124 ] && ! grep -q "shards ready" "$tmp/err" &&
                grep -q "stories260K.bin: SHA-256 differs" "$tmp/err"; then
                pass
            else
                fail "cluster with model byte $off flipped: exit $rc: $(head -c 300 "$tmp/err")"
            fi
        }
    done
    cp "$model" "$d/stories260K.bin"
    cluster --manifest "$m" --public-key "$tmp/other.public"
    rc=$?
    check "cluster with the wrong key: refused before loading (exit $rc)" \
        bash -c "[ $rc -ne 0 ] && [ $rc -lt 124 ] && ! grep -q 'shards ready' '$tmp/err' && grep -q 'signature does not verify' '$tmp/err'"
else
    skip_part "the manifest checked by a cluster: mpirun not found"
fi
finish
