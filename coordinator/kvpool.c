/* coordinator/kvpool.c - see kvpool.h. */
#include "coordinator/kvpool.h"

#include <stdlib.h>
#include <string.h>

struct slm_kvpool {
    size_t total;
    uint32_t *free; /* (total) a stack of free blocks */
    size_t n_free;
    uint8_t *taken;   /* (total) 1 while allocated */
    uint8_t *pending; /* (total) 1 while in freed */
    uint32_t *freed;  /* (total) released, not yet zeroed by a step */
    size_t n_freed;
    uint32_t *handed; /* (total) the last take_freed's copy */
};

slm_status slm_kvpool_create(size_t n_blocks, slm_kvpool_t **out)
{
    *out = NULL;
    if (n_blocks == 0 || n_blocks > ((size_t)1 << 22))
        return slm_fail(SLM_ERR_RANGE, "kv pool: %zu blocks, not 1..%zu",
                        n_blocks, (size_t)1 << 22);
    slm_kvpool_t *p = calloc(1, sizeof *p);
    if (!p)
        return slm_fail(SLM_ERR_NOMEM, "kv pool: out of memory");
    p->total = n_blocks;
    p->free = calloc(n_blocks, sizeof *p->free);
    p->taken = calloc(n_blocks, 1);
    p->pending = calloc(n_blocks, 1);
    p->freed = calloc(n_blocks, sizeof *p->freed);
    p->handed = calloc(n_blocks, sizeof *p->handed);
    if (!p->free || !p->taken || !p->pending || !p->freed || !p->handed) {
        slm_kvpool_destroy(&p);
        return slm_fail(SLM_ERR_NOMEM, "kv pool: out of memory");
    }
    /* Lowest blocks on top, so that a quiet server keeps reusing the same
     * few (and the order is predictable in tests). */
    for (size_t i = 0; i < n_blocks; i++)
        p->free[i] = (uint32_t)(n_blocks - 1 - i);
    p->n_free = n_blocks;
    *out = p;
    return SLM_OK;
}

void slm_kvpool_destroy(slm_kvpool_t **pp)
{
    if (!pp || !*pp)
        return;
    free((*pp)->free);
    free((*pp)->taken);
    free((*pp)->pending);
    free((*pp)->freed);
    free((*pp)->handed);
    free(*pp);
    *pp = NULL;
}

bool slm_kvpool_alloc(slm_kvpool_t *p, size_t n, uint32_t *out)
{
    if (n > p->n_free)
        return false;
    for (size_t i = 0; i < n; i++) {
        out[i] = p->free[--p->n_free];
        p->taken[out[i]] = 1;
    }
    return true;
}

slm_status slm_kvpool_release(slm_kvpool_t *p, const uint32_t *blocks, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (blocks[i] >= p->total || !p->taken[blocks[i]])
            return slm_fail(SLM_ERR_INVALID,
                            "kv pool: block %u released but not taken",
                            blocks[i]);
        for (size_t j = 0; j < i; j++)
            if (blocks[j] == blocks[i])
                return slm_fail(SLM_ERR_INVALID,
                                "kv pool: block %u released twice", blocks[i]);
    }
    for (size_t i = 0; i < n; i++) {
        p->taken[blocks[i]] = 0;
        p->free[p->n_free++] = blocks[i];
        /* Freed again before a step zeroed it: once is enough. */
        if (!p->pending[blocks[i]]) {
            p->pending[blocks[i]] = 1;
            p->freed[p->n_freed++] = blocks[i];
        }
    }
    return SLM_OK;
}

void slm_kvpool_take_freed(slm_kvpool_t *p, const uint32_t **blocks, size_t *n)
{
    memcpy(p->handed, p->freed, p->n_freed * sizeof *p->freed);
    for (size_t i = 0; i < p->n_freed; i++)
        p->pending[p->freed[i]] = 0;
    *blocks = p->handed;
    *n = p->n_freed;
    p->n_freed = 0;
}

size_t slm_kvpool_free_count(const slm_kvpool_t *p)
{
    return p->n_free;
}

size_t slm_kvpool_total(const slm_kvpool_t *p)
{
    return p->total;
}
