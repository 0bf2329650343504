#!/usr/bin/env bash
# libshardlm_client as a user gets it: `cmake --install` the build into a
# scratch prefix, then compile and link a small C program against the
# installed header and library with nothing but
# `pkg-config --cflags --libs shardlm_client`, and run it against a port
# where nothing listens: UNAVAILABLE after its 300 ms timeout. The installed
# shardlm-client runs too (it finds the library through its RPATH), and the
# library exports nothing but the shardlm_client_* API.
source "$(dirname "$0")/../lib.sh"
build=$(dirname "$bin") # shardlm is built at the top of the build tree
for tool in cmake pkg-config cc; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool not found"; exit 77; }
done

prefix=$tmp/prefix
if ! cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1; then
    fail "cmake --install $build"
    cat "$tmp/install.log"
    finish
    exit
fi
pass
pc=$(find "$prefix" -name shardlm_client.pc | head -1)
check "shardlm_client.pc installed" test -n "$pc"
check "shardlm_client.h installed" test -n "$(find "$prefix" -name shardlm_client.h)"
PKG_CONFIG_PATH=$(dirname "${pc:-$prefix/lib/pkgconfig/x}")
export PKG_CONFIG_PATH
check "pkg-config: the prefix is the one installed into" \
    test "$(pkg-config --variable=prefix shardlm_client)" = "$prefix"
libdir=$(pkg-config --variable=libdir shardlm_client)
lib=$libdir/libshardlm_client.so
check "the library is where the .pc says" test -e "$lib"

# The public API only: every other symbol is hidden.
if command -v nm >/dev/null; then
    nm -D --defined-only "$lib" | awk '{ print $3 }' >"$tmp/exported"
    check "exports shardlm_client_* only" \
        bash -c "! grep -v '^shardlm_client_' '$tmp/exported'"
    check "exports the API" grep -qx shardlm_client_generate "$tmp/exported"
fi

cat >"$tmp/prog.c" <<'EOF'
/* A user's program: only the installed header. */
#include <shardlm_client.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    shardlm_client_options_t o = {.timeout_ms = 300};
    shardlm_client_t *c = NULL;
    shardlm_client_code_t rc = shardlm_client_connect(argv[1], &o, &c);
    if (rc != SHARDLM_CLIENT_OK) {
        printf("connect: %s: %s\n", shardlm_client_code_name(rc),
               shardlm_client_last_error(NULL));
        return 1;
    }
    shardlm_client_health_t *h = NULL;
    rc = shardlm_client_health(c, &h);
    printf("%s: %s\n", shardlm_client_code_name(rc),
           shardlm_client_last_error(c));
    shardlm_client_health_free(&h);
    shardlm_client_destroy(&c);
    return rc == SHARDLM_CLIENT_UNAVAILABLE ? 0 : 1;
}
EOF
# A sanitized library needs its runtime in the program too.
san=()
if ldd "$lib" 2>/dev/null | grep -q libasan; then
    san=("-fsanitize=address,undefined")
fi
# shellcheck disable=SC2046 # pkg-config's output is a list of flags
if cc -std=c11 -Wall -Wextra -Wpedantic -Werror "${san[@]}" \
    $(pkg-config --cflags shardlm_client) "$tmp/prog.c" -o "$tmp/prog" \
    $(pkg-config --libs shardlm_client) 2>"$tmp/cc.err"; then
    pass
else
    fail "compile and link with pkg-config --cflags --libs shardlm_client"
    cat "$tmp/cc.err"
fi

# A port that was free a moment ago.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 1)
ep=tcp://127.0.0.1:$port

if [ -x "$tmp/prog" ]; then
    LD_LIBRARY_PATH=$libdir "$tmp/prog" "$ep" >"$tmp/prog.out" 2>&1
    rc=$?
    check "program: health with nothing listening is UNAVAILABLE (exit $rc)" test $rc -eq 0
    check "program: the message names the endpoint and the timeout" \
        grep -q "^UNAVAILABLE: no reply from $ep within 300 ms" "$tmp/prog.out"
    [ $rc -eq 0 ] || cat "$tmp/prog.out"
fi

tool=$prefix/bin/shardlm-client
check "shardlm-client installed" test -x "$tool"
"$tool" --help >/dev/null 2>&1
check "installed shardlm-client runs (--help, exit 0)" test $? -eq 0
"$tool" --connect "$ep" --timeout-ms 300 health >"$tmp/health.out" 2>"$tmp/health.err"
rc=$?
check "installed shardlm-client: health, nothing listening: exit 13 (got $rc)" test $rc -eq 13
check "installed shardlm-client: UNAVAILABLE on stderr" \
    grep -q "^shardlm-client: UNAVAILABLE: no reply from $ep within 300 ms" "$tmp/health.err"
check "installed shardlm-client: nothing on stdout" test ! -s "$tmp/health.out"
finish
