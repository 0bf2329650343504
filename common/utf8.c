/* common/utf8.c - see utf8.h. */
#include "common/utf8.h"

int slm_utf8_sequence(const uint8_t *p, size_t n)
{
    const uint8_t b = p[0];
    int need;
    uint8_t lo = 0x80, hi = 0xbf; /* the second byte's range */
    if (b < 0x80)
        return 1;
    if (b >= 0xc2 && b <= 0xdf) {
        need = 2;
    } else if (b >= 0xe0 && b <= 0xef) {
        need = 3;
        if (b == 0xe0)
            lo = 0xa0; /* below: overlong */
        if (b == 0xed)
            hi = 0x9f; /* above: surrogates */
    } else if (b >= 0xf0 && b <= 0xf4) {
        need = 4;
        if (b == 0xf0)
            lo = 0x90; /* below: overlong */
        if (b == 0xf4)
            hi = 0x8f; /* above: past U+10FFFF */
    } else {
        return -1; /* a continuation byte, C0/C1 (overlong) or F5-FF */
    }
    for (int k = 1; k < need; k++) {
        if ((size_t)k >= n)
            return 0;
        const uint8_t c = p[k];
        if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xbf))
            return -1;
    }
    return need;
}

size_t slm_utf8_bad_offset(const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        const int k = slm_utf8_sequence(p + i, n - i);
        if (k <= 0)
            return i;
        i += (size_t)k;
    }
    return n;
}
