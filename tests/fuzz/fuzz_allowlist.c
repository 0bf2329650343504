/*
 * tests/fuzz/fuzz_allowlist.c - libFuzzer target for the CURVE key allowlist
 * parser (common/zap.c, slm_allowlist_parse).
 *
 * Input: one byte that chooses max_entries (1 + byte % 8, so that "too many
 * entries" is reached), then the allowlist text. A text that parses is
 * checked against what it says: every line whose first non-blank byte is not
 * '#' must begin with a key that decodes and is found, with a tenant of 1-64
 * characters of [A-Za-z0-9_.-], or be a limits line whose tenant's limits
 * are in range and not all unset; the count is at most max_entries, and the
 * same text must fail with a limit one below the count and pass with the
 * count itself.
 *
 * Build (bash):
 *   clang -g -fsanitize=fuzzer,address,undefined -I. \
 *     tests/fuzz/fuzz_allowlist.c common/{zap,zkeys,audit,status,utf8}.c \
 *     -lzmq -lpthread
 * Run: ./a.out -max_total_time=60 tests/fuzz/corpus/allowlist/
 * Seeds: tests/fuzz/corpus/allowlist/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/zap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int tenant_ok(const char *t)
{
    const size_t n = strlen(t);
    if (n == 0 || n > SLM_ALLOWLIST_TENANT_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const char c = t[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const size_t max = 1 + data[0] % 8;
    /* A heap copy of exactly the text, so ASan sees any over-read. */
    const size_t len = size - 1;
    char *text = malloc(len ? len : 1);
    if (!text)
        return 0;
    memcpy(text, data + 1, len);

    slm_allowlist_t *l = NULL;
    if (slm_allowlist_parse(text, len, max, "fuzz", &l) != SLM_OK) {
        if (l)
            abort(); /* failure must leave no list */
        free(text);
        return 0;
    }
    const size_t n = slm_allowlist_count(l);
    if (n > max)
        abort();
    size_t keys = 0;
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        const size_t end = nl ? (size_t)(nl - text) : len;
        size_t i = pos;
        while (i < end && (text[i] == ' ' || text[i] == '\t'))
            i++;
        if (end - i > 6 && memcmp(text + i, "limits", 6) == 0 &&
            (text[i + 6] == ' ' || text[i + 6] == '\t')) {
            /* A limits line: its tenant's limits are in range. */
            size_t t0 = i + 6;
            while (t0 < end && (text[t0] == ' ' || text[t0] == '\t'))
                t0++;
            size_t t1 = t0;
            while (t1 < end && text[t1] != ' ' && text[t1] != '\t')
                t1++;
            char tenant[SLM_ALLOWLIST_TENANT_MAX + 1];
            if (t1 - t0 > SLM_ALLOWLIST_TENANT_MAX)
                abort();
            memcpy(tenant, text + t0, t1 - t0);
            tenant[t1 - t0] = '\0';
            const slm_tenant_limits v = slm_allowlist_limits(l, tenant);
            if (v.concurrent > SLM_TENANT_LIMIT_MAX ||
                v.max_tokens > SLM_TENANT_LIMIT_MAX || v.queue_share > 100 ||
                v.concurrent + v.max_tokens + v.queue_share == 0)
                abort();
        } else if (i < end && text[i] != '#') {
            uint8_t key[SLM_ZKEY_BYTES];
            if (end - i < SLM_ZKEY_Z85_LEN ||
                slm_zkeys_decode(text + i, "fuzz", key) != SLM_OK)
                abort(); /* accepted a line without a valid key */
            const char *tenant = slm_allowlist_find(l, key);
            if (!tenant || !tenant_ok(tenant))
                abort();
            keys++;
        }
        pos = end + 1;
    }
    if (keys != n) /* duplicates are refused, so every line is one entry */
        abort();
    slm_allowlist_destroy(&l);
    if (n > 0) {
        if (slm_allowlist_parse(text, len, n, "fuzz", &l) != SLM_OK)
            abort();
        slm_allowlist_destroy(&l);
        if (n > 1 &&
            slm_allowlist_parse(text, len, n - 1, "fuzz", &l) == SLM_OK)
            abort();
        slm_allowlist_destroy(&l);
    }
    free(text);
    return 0;
}
