/*
 * tests/unit/test_kvpool.c - coordinator/kvpool.c: all-or-nothing
 * allocation, release checks, the freed list handed to the next step, and
 * the counters back to full after many rounds.
 */
#include "tests/testutil.h"

#include <stdlib.h>
#include <string.h>

#include "coordinator/kvpool.h"

static void test_alloc_release(void **state)
{
    (void)state;
    slm_kvpool_t *p = NULL;
    assert_int_not_equal(slm_kvpool_create(0, &p), SLM_OK);
    assert_int_equal(slm_kvpool_create(8, &p), SLM_OK);
    uint32_t a[8], b[8];
    assert_true(slm_kvpool_alloc(p, 5, a));
    assert_int_equal(slm_kvpool_free_count(p), 3);
    assert_false(slm_kvpool_alloc(p, 4, b)); /* all or none */
    assert_int_equal(slm_kvpool_free_count(p), 3);
    assert_true(slm_kvpool_alloc(p, 3, b));
    assert_int_equal(slm_kvpool_free_count(p), 0);
    bool seen[8] = {false};
    for (int i = 0; i < 5; i++)
        seen[a[i]] = true;
    for (int i = 0; i < 3; i++) {
        assert_false(seen[b[i]]); /* every block handed out once */
        seen[b[i]] = true;
    }
    const uint32_t *freed = NULL;
    size_t n = 99;
    slm_kvpool_take_freed(p, &freed, &n);
    assert_int_equal(n, 0);
    assert_int_equal(slm_kvpool_release(p, a, 5), SLM_OK);
    /* released twice, never taken, out of range, twice in one call */
    assert_int_equal(slm_kvpool_release(p, a, 1), SLM_ERR_INVALID);
    const uint32_t bad[] = {8}, twice[] = {b[0], b[0]};
    assert_int_equal(slm_kvpool_release(p, bad, 1), SLM_ERR_INVALID);
    assert_int_equal(slm_kvpool_release(p, twice, 2), SLM_ERR_INVALID);
    assert_int_equal(slm_kvpool_free_count(p), 5);
    slm_kvpool_take_freed(p, &freed, &n);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(freed[i], a[i]);
    slm_kvpool_take_freed(p, &freed, &n);
    assert_int_equal(n, 0);
    assert_int_equal(slm_kvpool_release(p, b, 3), SLM_OK);
    assert_int_equal(slm_kvpool_free_count(p), slm_kvpool_total(p));
    slm_kvpool_destroy(&p);
    assert_null(p);
}

/* 1000 rounds of random requests coming and going: no block is ever held
 * twice, and the pool is full again at the end. */
static void test_no_leak(void **state)
{
    (void)state;
    enum { BLOCKS = 64, LIVE = 16 };
    slm_kvpool_t *p = NULL;
    assert_int_equal(slm_kvpool_create(BLOCKS, &p), SLM_OK);
    uint32_t held[LIVE][BLOCKS];
    size_t count[LIVE] = {0};
    int owner[BLOCKS];
    memset(owner, -1, sizeof owner);
    uint64_t rng = 7;
    for (int round = 0; round < 1000; round++) {
        const int k = (int)(slm_test_rand_u64(&rng) % LIVE);
        if (count[k]) {
            for (size_t i = 0; i < count[k]; i++)
                owner[held[k][i]] = -1;
            assert_int_equal(slm_kvpool_release(p, held[k], count[k]), SLM_OK);
            count[k] = 0;
        } else {
            const size_t want = 1 + slm_test_rand_u64(&rng) % 8;
            if (slm_kvpool_alloc(p, want, held[k])) {
                count[k] = want;
                for (size_t i = 0; i < want; i++) {
                    assert_int_equal(owner[held[k][i]], -1);
                    owner[held[k][i]] = k;
                }
            }
        }
    }
    for (int k = 0; k < LIVE; k++)
        assert_int_equal(slm_kvpool_release(p, held[k], count[k]), SLM_OK);
    assert_int_equal(slm_kvpool_free_count(p), BLOCKS);
    slm_kvpool_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_release),
        cmocka_unit_test(test_no_leak),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
