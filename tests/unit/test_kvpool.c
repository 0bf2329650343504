/*
 * tests/unit/test_kvpool.c - coordinator/kvpool.c: all-or-nothing
 * allocation, release checks, the freed list handed to the next step, and
 * the counters back to full after many rounds; the prefix cache: sharing,
 * reference counts, LRU eviction, exact keys under hash collisions,
 * generations, and random rounds with sharing.
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

enum { BS = 4 };

/* Registers blocks(n), held, as the chain of a sequence's tokens. */
static void register_chain(slm_kvpool_t *p, uint32_t tenant,
                           const uint32_t *blocks, size_t n,
                           const int32_t *tokens)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(
            slm_kvpool_register(p, blocks[i], tenant,
                                i ? blocks[i - 1] : SLM_KVPOOL_NO_PARENT,
                                tokens + i * BS),
            SLM_OK);
}

static void test_cache_sharing(void **state)
{
    (void)state;
    slm_kvpool_t *p = NULL;
    assert_int_not_equal(slm_kvpool_create_cached(8, 0, &p), SLM_OK);
    assert_int_equal(slm_kvpool_create_cached(8, BS, &p), SLM_OK);
    const int32_t a[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    int32_t b[12];
    memcpy(b, a, sizeof b);
    b[5] = 99; /* shares a's first block only */
    uint32_t x[3], y[3], z[3];
    assert_int_equal(slm_kvpool_lookup(p, 1, a, 3, x), 0);
    assert_true(slm_kvpool_alloc(p, 3, x));
    /* not held: refused; held: recorded once */
    assert_int_equal(slm_kvpool_register(p, 7, 1, SLM_KVPOOL_NO_PARENT, a),
                     SLM_ERR_INVALID);
    register_chain(p, 1, x, 3, a);
    register_chain(p, 1, x, 3, a); /* again: nothing changes */
    assert_int_equal(slm_kvpool_cached_count(p), 3);
    /* the same tenant finds the whole chain, b only its first block,
     * another tenant nothing */
    assert_int_equal(slm_kvpool_lookup(p, 1, a, 3, y), 3);
    assert_memory_equal(x, y, sizeof x);
    assert_int_equal(slm_kvpool_lookup(p, 1, b, 3, z), 1);
    assert_int_equal(z[0], x[0]);
    assert_int_equal(slm_kvpool_lookup(p, 2, a, 3, z + 1), 0);
    /* an equal block computed by another sequence is not recorded, nor
     * is a child of an unregistered parent (no lookup could reach it) */
    uint32_t w[2];
    assert_true(slm_kvpool_alloc(p, 2, w));
    register_chain(p, 1, w, 2, a);
    assert_int_equal(slm_kvpool_cached_count(p), 3);
    assert_int_equal(slm_kvpool_release(p, w, 2), SLM_OK);
    /* refcounts: x held three times (x, y, z) for its first block */
    assert_int_equal(slm_kvpool_free_count(p), 8 - 3);
    assert_int_equal(slm_kvpool_release(p, x, 3), SLM_OK);
    assert_int_equal(slm_kvpool_free_count(p), 8 - 3);
    assert_int_equal(slm_kvpool_release(p, y, 3), SLM_OK);
    assert_int_equal(slm_kvpool_free_count(p), 8 - 1);
    assert_int_equal(slm_kvpool_release(p, z, 1), SLM_OK);
    assert_int_equal(slm_kvpool_release(p, z, 1), SLM_ERR_INVALID);
    assert_int_equal(slm_kvpool_free_count(p), 8);
    assert_int_equal(slm_kvpool_cached_count(p), 3);
    /* cached blocks are not zeroed: only w was freed */
    const uint32_t *freed = NULL;
    size_t n = 0;
    slm_kvpool_take_freed(p, &freed, &n);
    assert_int_equal(n, 2);
    assert_int_equal(freed[0], w[0]);
    /* still found after every holder left */
    assert_int_equal(slm_kvpool_lookup(p, 1, a, 3, y), 3);
    assert_memory_equal(x, y, sizeof x);
    assert_int_equal(slm_kvpool_release(p, y, 3), SLM_OK);
    slm_kvpool_destroy(&p);
}

/* Eviction: free blocks go first, then the least recently released cached
 * ones, all or none; evicted blocks are queued for zeroing, and their
 * children can never be found again (generation). */
static void test_cache_eviction(void **state)
{
    (void)state;
    slm_kvpool_t *p = NULL;
    assert_int_equal(slm_kvpool_create_cached(6, BS, &p), SLM_OK);
    const int32_t a[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    const int32_t c[8] = {9, 9, 9, 9, 8, 8, 8, 8};
    uint32_t x[2], y[2], h[2], t[6];
    assert_true(slm_kvpool_alloc(p, 2, x));
    register_chain(p, 1, x, 2, a);
    assert_true(slm_kvpool_alloc(p, 2, y));
    register_chain(p, 1, y, 2, c);
    const uint32_t *freed = NULL;
    size_t n = 0;
    slm_kvpool_take_freed(p, &freed, &n);
    assert_int_equal(slm_kvpool_release(p, x, 2), SLM_OK); /* older */
    assert_int_equal(slm_kvpool_release(p, y, 2), SLM_OK);
    assert_int_equal(slm_kvpool_free_count(p), 6);
    /* y held again: only 2 free + x's 2 evictable */
    assert_int_equal(slm_kvpool_lookup(p, 1, c, 2, h), 2);
    assert_false(slm_kvpool_alloc(p, 5, t)); /* all or none */
    assert_int_equal(slm_kvpool_cached_count(p), 4);
    slm_kvpool_take_freed(p, &freed, &n);
    assert_int_equal(n, 0);
    /* 3: two free ones, then x's first block (the LRU) */
    assert_true(slm_kvpool_alloc(p, 3, t));
    assert_int_equal(t[2], x[0]);
    assert_int_equal(slm_kvpool_cached_count(p), 3);
    slm_kvpool_take_freed(p, &freed, &n);
    assert_int_equal(n, 1);
    assert_int_equal(freed[0], x[0]);
    /* x[1] is still cached, but its parent's generation moved on: even
     * when x[0] is registered again with the same tokens, a lookup stops
     * there */
    assert_int_equal(slm_kvpool_register(p, t[2], 1, SLM_KVPOOL_NO_PARENT, a),
                     SLM_OK);
    uint32_t f[2];
    assert_int_equal(slm_kvpool_lookup(p, 1, a, 2, f), 1);
    assert_int_equal(f[0], t[2]);
    assert_int_equal(slm_kvpool_release(p, f, 1), SLM_OK);
    /* the stale child goes next */
    uint32_t g[1];
    assert_true(slm_kvpool_alloc(p, 1, g));
    assert_int_equal(g[0], x[1]);
    assert_int_equal(slm_kvpool_release(p, g, 1), SLM_OK);
    assert_int_equal(slm_kvpool_release(p, t, 3), SLM_OK);
    assert_int_equal(slm_kvpool_release(p, h, 2), SLM_OK);
    assert_int_equal(slm_kvpool_free_count(p), 6);
    slm_kvpool_destroy(&p);
}

static uint64_t same_hash(uint32_t tenant, uint32_t parent, uint32_t parent_gen,
                          const int32_t *tokens, size_t block_size)
{
    (void)tenant, (void)parent, (void)parent_gen, (void)tokens,
        (void)block_size;
    return 42;
}

/* Every key hashes alike: each look-up still finds exactly its own. */
static void test_cache_collision(void **state)
{
    (void)state;
    slm_kvpool_t *p = NULL;
    assert_int_equal(slm_kvpool_create_cached(8, BS, &p), SLM_OK);
    slm__kvpool_set_hash(p, same_hash);
    const int32_t a[4] = {1, 2, 3, 4}, b[4] = {1, 2, 3, 5};
    uint32_t x[1], y[1], f[1];
    assert_true(slm_kvpool_alloc(p, 1, x));
    assert_true(slm_kvpool_alloc(p, 1, y));
    register_chain(p, 1, x, 1, a);
    assert_int_equal(slm_kvpool_lookup(p, 1, b, 1, f), 0);
    assert_int_equal(slm_kvpool_lookup(p, 2, a, 1, f), 0); /* tenant */
    register_chain(p, 1, y, 1, b); /* not taken for a's */
    assert_int_equal(slm_kvpool_cached_count(p), 2);
    assert_int_equal(slm_kvpool_lookup(p, 1, b, 1, f), 1);
    assert_int_equal(f[0], y[0]);
    assert_int_equal(slm_kvpool_release(p, f, 1), SLM_OK);
    assert_int_equal(slm_kvpool_lookup(p, 1, a, 1, f), 1);
    assert_int_equal(f[0], x[0]);
    assert_int_equal(slm_kvpool_release(p, f, 1), SLM_OK);
    assert_int_equal(slm_kvpool_release(p, x, 1), SLM_OK);
    assert_int_equal(slm_kvpool_release(p, y, 1), SLM_OK);
    /* evicting one in the shared chain keeps the other findable */
    uint32_t t[7];
    assert_true(slm_kvpool_alloc(p, 7, t));
    assert_int_equal(slm_kvpool_cached_count(p), 1);
    assert_int_equal(slm_kvpool_lookup(p, 1, b, 1, f), 1);
    assert_int_equal(f[0], y[0]);
    assert_int_equal(slm_kvpool_release(p, f, 1), SLM_OK);
    assert_int_equal(slm_kvpool_release(p, t, 7), SLM_OK);
    slm_kvpool_destroy(&p);
}

/* 1000 rounds of requests drawn from a few prompts, sharing what they can,
 * registering what they wrote: no block is written by two, a shared block
 * holds its key's tokens, and the pool is whole at the end. */
static void test_cache_no_leak(void **state)
{
    (void)state;
    enum { BLOCKS = 48, LIVE = 12, PROMPTS = 5, LEN = 6 };
    slm_kvpool_t *p = NULL;
    assert_int_equal(slm_kvpool_create_cached(BLOCKS, BS, &p), SLM_OK);
    int32_t prompts[PROMPTS][LEN * BS];
    uint64_t rng = 11;
    for (int i = 0; i < PROMPTS; i++)
        for (int j = 0; j < LEN * BS; j++)
            /* common beginnings: few distinct tokens early on */
            prompts[i][j] = j < 6 ? (int32_t)(slm_test_rand_u64(&rng) % 2)
                                  : (int32_t)(slm_test_rand_u64(&rng) % 1000);
    uint32_t held[LIVE][LEN];
    size_t count[LIVE] = {0};
    int which[LIVE];
    int32_t content[BLOCKS][BS]; /* what each held block holds */
    int writer[BLOCKS];
    memset(writer, -1, sizeof writer);
    for (int round = 0; round < 1000; round++) {
        const int k = (int)(slm_test_rand_u64(&rng) % LIVE);
        if (count[k]) {
            /* it wrote all its blocks: register them, then leave */
            for (size_t i = 0; i < count[k]; i++) {
                const uint32_t b = held[k][i];
                if (writer[b] == k) {
                    memcpy(content[b], prompts[which[k]] + i * BS,
                           sizeof content[b]);
                    writer[b] = -1;
                }
                if (slm_test_rand_u64(&rng) % 4)
                    assert_int_equal(
                        slm_kvpool_register(p, b, (uint32_t)(which[k] % 2),
                                            i ? held[k][i - 1]
                                              : SLM_KVPOOL_NO_PARENT,
                                            prompts[which[k]] + i * BS),
                        SLM_OK);
            }
            assert_int_equal(slm_kvpool_release(p, held[k], count[k]), SLM_OK);
            count[k] = 0;
            const uint32_t *freed = NULL;
            size_t n = 0;
            if (slm_test_rand_u64(&rng) % 2)
                slm_kvpool_take_freed(p, &freed, &n);
        } else {
            const int w = (int)(slm_test_rand_u64(&rng) % PROMPTS);
            const size_t want = 1 + slm_test_rand_u64(&rng) % LEN;
            const size_t found = slm_kvpool_lookup(p, (uint32_t)(w % 2),
                                                   prompts[w], want, held[k]);
            for (size_t i = 0; i < found; i++) {
                assert_int_equal(writer[held[k][i]], -1);
                assert_memory_equal(content[held[k][i]], prompts[w] + i * BS,
                                    sizeof content[0]);
            }
            if (slm_kvpool_alloc(p, want - found, held[k] + found)) {
                count[k] = want;
                which[k] = w;
                for (size_t i = found; i < want; i++) {
                    assert_int_equal(writer[held[k][i]], -1);
                    writer[held[k][i]] = k;
                }
            } else {
                assert_int_equal(slm_kvpool_release(p, held[k], found), SLM_OK);
            }
        }
    }
    for (int k = 0; k < LIVE; k++)
        assert_int_equal(slm_kvpool_release(p, held[k], count[k]), SLM_OK);
    assert_int_equal(slm_kvpool_free_count(p), BLOCKS);
    assert_true(slm_kvpool_cached_count(p) > 0);
    uint32_t all[BLOCKS];
    assert_true(slm_kvpool_alloc(p, BLOCKS, all));
    assert_int_equal(slm_kvpool_cached_count(p), 0);
    assert_int_equal(slm_kvpool_release(p, all, BLOCKS), SLM_OK);
    assert_int_equal(slm_kvpool_free_count(p), BLOCKS);
    slm_kvpool_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_release),
        cmocka_unit_test(test_no_leak),
        cmocka_unit_test(test_cache_sharing),
        cmocka_unit_test(test_cache_eviction),
        cmocka_unit_test(test_cache_collision),
        cmocka_unit_test(test_cache_no_leak),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
