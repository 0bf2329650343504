/*
 * tests/unit/test_utf8.c - common/utf8.c against an independent reference:
 * decode by bit pattern, then apply RFC 3629's rules to the code point
 * (shortest form, no surrogates, at most U+10FFFF). Every sequence of up to
 * three bytes is compared, and a million random four-byte ones.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/utf8.h"

/* The reference: length 1-4 of a complete well-formed sequence, 0 for a
 * well-formed but incomplete beginning, -1 otherwise. */
static int reference(const uint8_t *p, size_t n)
{
    const uint8_t b = p[0];
    int len;
    uint32_t cp;
    if (b < 0x80)
        return 1;
    if ((b & 0xe0) == 0xc0) {
        len = 2;
        cp = b & 0x1f;
    } else if ((b & 0xf0) == 0xe0) {
        len = 3;
        cp = b & 0x0f;
    } else if ((b & 0xf8) == 0xf0) {
        len = 4;
        cp = b & 0x07;
    } else {
        return -1;
    }
    /* Incomplete: well-formed if some completion is. Try them all is too
     * slow; check the given bytes, then extend with the smallest and the
     * largest continuation - the valid set is an interval per position. */
    for (int k = 1; k < len; k++) {
        if ((size_t)k >= n) {
            uint8_t full[4];
            memcpy(full, p, n);
            for (uint8_t fill = 0x80;; fill = 0xbf) {
                for (int j = (int)n; j < len; j++)
                    full[j] = fill;
                for (uint8_t second = 0x80; second <= 0xbf && n == 1;
                     second++) {
                    full[1] = second;
                    if (reference(full, (size_t)len) > 0)
                        return 0;
                }
                if (n > 1 && reference(full, (size_t)len) > 0)
                    return 0;
                if (fill == 0xbf)
                    return -1;
            }
        }
        if ((p[k] & 0xc0) != 0x80)
            return -1;
        cp = (cp << 6) | (p[k] & 0x3f);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return -1;
    return len;
}

static void test_all_short_sequences(void **state)
{
    (void)state;
    uint8_t p[3];
    for (uint32_t v = 0; v < (1u << 24); v++) {
        p[0] = (uint8_t)(v >> 16);
        p[1] = (uint8_t)(v >> 8);
        p[2] = (uint8_t)v;
        for (size_t n = 1; n <= 3; n++) {
            if (n < 3 && (v & ((1u << (8 * (3 - n))) - 1)))
                continue; /* each shorter prefix once */
            const int got = slm_utf8_sequence(p, n), want = reference(p, n);
            if (got != want)
                fail_msg("%02x %02x %02x (n %zu): %d, want %d", p[0], p[1],
                         p[2], n, got, want);
        }
    }
}

static void test_random_four_byte(void **state)
{
    (void)state;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 1000000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint8_t p[4] = {(uint8_t)(0xf0 | (x & 7)), (uint8_t)(x >> 8),
                        (uint8_t)(x >> 16), (uint8_t)(x >> 24)};
        if (i & 1) /* bias towards continuation bytes */
            for (int k = 1; k < 4; k++)
                p[k] = (uint8_t)(0x80 | (p[k] & 0x3f));
        const int got = slm_utf8_sequence(p, 4), want = reference(p, 4);
        if (got != want)
            fail_msg("%02x %02x %02x %02x: %d, want %d", p[0], p[1], p[2], p[3],
                     got, want);
    }
}

static void test_bad_offset(void **state)
{
    (void)state;
    const char ok[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z";
    assert_int_equal(slm_utf8_bad_offset(ok, strlen(ok)), strlen(ok));
    assert_int_equal(slm_utf8_bad_offset("ab\xc0\x80", 4), 2);   /* overlong */
    assert_int_equal(slm_utf8_bad_offset("\xed\xa0\x80", 3), 0); /* surrogate */
    assert_int_equal(slm_utf8_bad_offset("x\xf4\x90\x80\x80", 5), 1);
    assert_int_equal(slm_utf8_bad_offset("xy\xe2\x82", 4), 2); /* truncated */
    assert_int_equal(slm_utf8_bad_offset("\x80", 1), 0);
    assert_int_equal(slm_utf8_bad_offset("", 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_short_sequences),
        cmocka_unit_test(test_random_four_byte),
        cmocka_unit_test(test_bad_offset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
