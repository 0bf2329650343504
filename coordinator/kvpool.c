/* coordinator/kvpool.c - see kvpool.h. */
#include "coordinator/kvpool.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/checked.h"

#define NONE UINT32_MAX /* no block: ends a hash chain or the LRU list */

struct slm_kvpool {
    size_t total;
    uint32_t *free; /* (total) a stack of free blocks */
    size_t n_free;
    uint32_t *refs;   /* (total) holds on each block; 0: free or cached */
    uint8_t *pending; /* (total) 1 while in freed */
    uint32_t *freed;  /* (total) released, not yet zeroed by a step */
    size_t n_freed;
    uint32_t *handed; /* (total) the last take_freed's copy */

    /* The prefix cache; block_size 0 (and these NULL) without one. */
    size_t block_size;
    slm__kvpool_hash_fn hash_fn; /* a test's, or NULL: keyed SipHash */
    uint8_t hash_key[crypto_shorthash_KEYBYTES];
    uint8_t *key_bytes;   /* (12 + 4 * block_size) a key, serialised */
    uint8_t *cached;      /* (total) 1 while registered */
    uint32_t *gen;        /* (total) bumped at each eviction */
    uint32_t *tenant;     /* (total) the key of a registered block: */
    uint32_t *parent;     /* (total)   its parent (or NO_PARENT), */
    uint32_t *parent_gen; /* (total)   the parent's generation then, */
    int32_t *tokens;      /* (total, block_size) its tokens */
    uint64_t *hash;       /* (total) the key's hash */
    uint32_t *bucket;     /* (n_buckets) first block of each hash chain */
    uint32_t *chain;      /* (total) next block in its chain */
    size_t n_buckets;     /* a power of two */
    uint32_t *lru_prev;   /* (total) cached, unheld blocks: oldest at */
    uint32_t *lru_next;   /* (total)   lru_head, newest at lru_tail */
    uint32_t lru_head, lru_tail;
    size_t n_cached, n_evictable;
};

/* A key's hash picks its bucket (a match is decided by comparing every
 * field). Keyed SipHash (libsodium) with a random key per pool: the keys
 * come from tenants' prompts, and an unkeyed hash would let one tenant
 * choose prompts whose blocks crowd the buckets every tenant's look-ups
 * walk. */
static uint64_t key_hash(slm_kvpool_t *p, uint32_t tenant, uint32_t parent,
                         uint32_t parent_gen, const int32_t *tokens)
{
    const size_t bs = p->block_size;
    if (p->hash_fn)
        return p->hash_fn(tenant, parent, parent_gen, tokens, bs);
    memcpy(p->key_bytes, &tenant, 4);
    memcpy(p->key_bytes + 4, &parent, 4);
    memcpy(p->key_bytes + 8, &parent_gen, 4);
    memcpy(p->key_bytes + 12, tokens, bs * sizeof *tokens);
    uint8_t out[crypto_shorthash_BYTES];
    crypto_shorthash(out, p->key_bytes, 12 + bs * sizeof *tokens, p->hash_key);
    uint64_t h;
    memcpy(&h, out, sizeof h);
    return h;
}

static slm_status create(size_t n_blocks, size_t block_size, slm_kvpool_t **out)
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
    p->refs = calloc(n_blocks, sizeof *p->refs);
    p->pending = calloc(n_blocks, 1);
    p->freed = calloc(n_blocks, sizeof *p->freed);
    p->handed = calloc(n_blocks, sizeof *p->handed);
    bool ok = p->free && p->refs && p->pending && p->freed && p->handed;
    if (ok && block_size) {
        size_t n_tokens = 0;
        if (!slm_size_mul(n_blocks, block_size, &n_tokens)) {
            slm_kvpool_destroy(&p);
            return slm_fail(SLM_ERR_RANGE,
                            "kv pool: %zu blocks of %zu tokens overflow",
                            n_blocks, block_size);
        }
        p->block_size = block_size;
        p->hash_fn = NULL;
        if (sodium_init() < 0) {
            slm_kvpool_destroy(&p);
            return slm_fail(SLM_ERR_INTERNAL, "kv pool: libsodium failed");
        }
        randombytes_buf(p->hash_key, sizeof p->hash_key);
        /* block_size <= 4096 (checked by the caller): no overflow */
        p->key_bytes = malloc(12 + block_size * sizeof(int32_t));
        p->n_buckets = 16;
        while (p->n_buckets < n_blocks)
            p->n_buckets *= 2;
        p->cached = calloc(n_blocks, 1);
        p->gen = calloc(n_blocks, sizeof *p->gen);
        p->tenant = calloc(n_blocks, sizeof *p->tenant);
        p->parent = calloc(n_blocks, sizeof *p->parent);
        p->parent_gen = calloc(n_blocks, sizeof *p->parent_gen);
        p->tokens = calloc(n_tokens, sizeof *p->tokens);
        p->hash = calloc(n_blocks, sizeof *p->hash);
        p->bucket = malloc(p->n_buckets * sizeof *p->bucket);
        p->chain = calloc(n_blocks, sizeof *p->chain);
        p->lru_prev = calloc(n_blocks, sizeof *p->lru_prev);
        p->lru_next = calloc(n_blocks, sizeof *p->lru_next);
        ok = p->cached && p->gen && p->tenant && p->parent && p->parent_gen &&
             p->tokens && p->hash && p->key_bytes && p->bucket && p->chain &&
             p->lru_prev && p->lru_next;
        if (ok)
            for (size_t i = 0; i < p->n_buckets; i++)
                p->bucket[i] = NONE;
        p->lru_head = p->lru_tail = NONE;
    }
    if (!ok) {
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

slm_status slm_kvpool_create(size_t n_blocks, slm_kvpool_t **out)
{
    return create(n_blocks, 0, out);
}

slm_status slm_kvpool_create_cached(size_t n_blocks, size_t block_size,
                                    slm_kvpool_t **out)
{
    *out = NULL;
    if (block_size == 0 || block_size > 4096)
        return slm_fail(SLM_ERR_RANGE,
                        "kv pool: blocks of %zu positions, not 1..4096",
                        block_size);
    return create(n_blocks, block_size, out);
}

void slm_kvpool_destroy(slm_kvpool_t **pp)
{
    if (!pp || !*pp)
        return;
    slm_kvpool_t *p = *pp;
    free(p->free);
    free(p->refs);
    free(p->pending);
    free(p->freed);
    free(p->handed);
    free(p->cached);
    free(p->gen);
    free(p->tenant);
    free(p->parent);
    free(p->parent_gen);
    free(p->tokens);
    free(p->hash);
    free(p->key_bytes);
    free(p->bucket);
    free(p->chain);
    free(p->lru_prev);
    free(p->lru_next);
    free(p);
    *pp = NULL;
}

static void lru_unlink(slm_kvpool_t *p, uint32_t b)
{
    const uint32_t prev = p->lru_prev[b], next = p->lru_next[b];
    if (prev == NONE)
        p->lru_head = next;
    else
        p->lru_next[prev] = next;
    if (next == NONE)
        p->lru_tail = prev;
    else
        p->lru_prev[next] = prev;
    p->n_evictable--;
}

static void lru_append(slm_kvpool_t *p, uint32_t b)
{
    p->lru_prev[b] = p->lru_tail;
    p->lru_next[b] = NONE;
    if (p->lru_tail == NONE)
        p->lru_head = b;
    else
        p->lru_next[p->lru_tail] = b;
    p->lru_tail = b;
    p->n_evictable++;
}

static void queue_zeroing(slm_kvpool_t *p, uint32_t b)
{
    /* Freed again before a step zeroed it: once is enough. */
    if (!p->pending[b]) {
        p->pending[b] = 1;
        p->freed[p->n_freed++] = b;
    }
}

/* Takes b, cached and unheld, out of the cache; its content is dropped. */
static void evict(slm_kvpool_t *p, uint32_t b)
{
    lru_unlink(p, b);
    uint32_t *link = &p->bucket[p->hash[b] & (p->n_buckets - 1)];
    while (*link != b)
        link = &p->chain[*link];
    *link = p->chain[b];
    p->cached[b] = 0;
    p->n_cached--;
    p->gen[b]++; /* its children's keys name the old generation */
    queue_zeroing(p, b);
}

bool slm_kvpool_alloc(slm_kvpool_t *p, size_t n, uint32_t *out)
{
    if (n > p->n_free + p->n_evictable)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (p->n_free) {
            out[i] = p->free[--p->n_free];
        } else {
            out[i] = p->lru_head;
            evict(p, out[i]);
        }
        p->refs[out[i]] = 1;
    }
    return true;
}

slm_status slm_kvpool_release(slm_kvpool_t *p, const uint32_t *blocks, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (blocks[i] >= p->total || !p->refs[blocks[i]])
            return slm_fail(SLM_ERR_INVALID,
                            "kv pool: block %u released but not held",
                            blocks[i]);
        for (size_t j = 0; j < i; j++)
            if (blocks[j] == blocks[i])
                return slm_fail(SLM_ERR_INVALID,
                                "kv pool: block %u released twice", blocks[i]);
    }
    for (size_t i = 0; i < n; i++) {
        const uint32_t b = blocks[i];
        if (--p->refs[b])
            continue; /* another sequence still reads it */
        if (p->cached && p->cached[b]) {
            lru_append(p, b);
        } else {
            p->free[p->n_free++] = b;
            queue_zeroing(p, b);
        }
    }
    return SLM_OK;
}

/* The registered block under the key, or NONE: every field compared. */
static uint32_t find(const slm_kvpool_t *p, uint64_t h, uint32_t tenant,
                     uint32_t parent, uint32_t parent_gen,
                     const int32_t *tokens)
{
    const size_t bs = p->block_size;
    for (uint32_t b = p->bucket[h & (p->n_buckets - 1)]; b != NONE;
         b = p->chain[b])
        if (p->hash[b] == h && p->tenant[b] == tenant &&
            p->parent[b] == parent && p->parent_gen[b] == parent_gen &&
            memcmp(p->tokens + (size_t)b * bs, tokens, bs * sizeof *tokens) ==
                0)
            return b;
    return NONE;
}

size_t slm_kvpool_lookup(slm_kvpool_t *p, uint32_t tenant,
                         const int32_t *tokens, size_t n_blocks, uint32_t *out)
{
    if (!p->block_size)
        return 0;
    const size_t bs = p->block_size;
    uint32_t parent = SLM_KVPOOL_NO_PARENT, parent_gen = 0;
    size_t found = 0;
    for (; found < n_blocks; found++) {
        const int32_t *t = tokens + found * bs;
        const uint64_t h = key_hash(p, tenant, parent, parent_gen, t);
        const uint32_t b = find(p, h, tenant, parent, parent_gen, t);
        if (b == NONE)
            break;
        if (p->refs[b]++ == 0)
            lru_unlink(p, b);
        out[found] = b;
        parent = b;
        parent_gen = p->gen[b];
    }
    return found;
}

slm_status slm_kvpool_register(slm_kvpool_t *p, uint32_t block, uint32_t tenant,
                               uint32_t parent, const int32_t *tokens)
{
    if (block >= p->total || !p->refs[block])
        return slm_fail(SLM_ERR_INVALID,
                        "kv pool: block %u registered but not held", block);
    if (parent != SLM_KVPOOL_NO_PARENT &&
        (parent >= p->total || parent == block))
        return slm_fail(SLM_ERR_INVALID,
                        "kv pool: block %u registered after block %u", block,
                        parent);
    if (!p->block_size || p->cached[block])
        return SLM_OK;
    uint32_t parent_gen = 0;
    if (parent != SLM_KVPOOL_NO_PARENT) {
        if (!p->cached[parent])
            return SLM_OK; /* unreachable by a lookup */
        parent_gen = p->gen[parent];
    }
    const size_t bs = p->block_size;
    const uint64_t h = key_hash(p, tenant, parent, parent_gen, tokens);
    if (find(p, h, tenant, parent, parent_gen, tokens) != NONE)
        return SLM_OK;
    p->cached[block] = 1;
    p->tenant[block] = tenant;
    p->parent[block] = parent;
    p->parent_gen[block] = parent_gen;
    memcpy(p->tokens + (size_t)block * bs, tokens, bs * sizeof *tokens);
    p->hash[block] = h;
    uint32_t *head = &p->bucket[h & (p->n_buckets - 1)];
    p->chain[block] = *head;
    *head = block;
    p->n_cached++;
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
    return p->n_free + p->n_evictable;
}

size_t slm_kvpool_cached_count(const slm_kvpool_t *p)
{
    return p->n_cached;
}

size_t slm_kvpool_total(const slm_kvpool_t *p)
{
    return p->total;
}

void slm__kvpool_set_hash(slm_kvpool_t *p, slm__kvpool_hash_fn fn)
{
    if (p->block_size)
        p->hash_fn = fn;
}
