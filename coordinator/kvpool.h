/*
 * coordinator/kvpool.h - the KV-cache block allocator of the coordinator,
 * with a prefix cache of full blocks.
 *
 * Every shard holds the same pool of KV blocks (shard/transformer.h: each
 * block keeps block_size positions of its heads in every layer), so one
 * allocator on the coordinator decides for all of them and sends each
 * sequence's block table with every step. A request gets all the blocks it
 * can ever need when it is admitted, so it never fails mid-way for want of
 * memory; when the pool cannot hold the next request, admission waits.
 * Released blocks are also remembered until the next step tells the shards
 * to zero them (slm_kvpool_take_freed): a block is zeroed before the next
 * sequence that gets it writes a position.
 *
 * Prefix cache (vLLM-style automatic prefix caching; a pool made by
 * slm_kvpool_create_cached). Blocks are reference-counted. A block whose
 * block_size positions are all written may be registered under the exact
 * key (tenant, parent block, the parent's generation, its block_size token
 * ids); the first block of a sequence has the sentinel parent
 * SLM_KVPOOL_NO_PARENT. A key names the whole prefix up to and including
 * the block, so a sequence whose prompt begins with the same tokens can
 * read these blocks instead of computing them (slm_kvpool_lookup). Keys
 * are found by a 64-bit keyed hash (SipHash, a random key per pool) but
 * every field is compared: a collision never hands one prompt's KV to
 * another.
 *
 * - Per tenant: a cache shared across tenants would tell one tenant,
 *   through its time to first token, whether another tenant sent a given
 *   prompt. The tenant is part of the key, so only a tenant's own requests
 *   hit its blocks.
 * - A released registered block keeps its content (an LRU list of blocks
 *   nobody holds) and is not zeroed before a lookup hands it out again:
 *   its reader would compute that content itself from the same tokens at
 *   the same positions, up to float rounding (a product's summation order
 *   depends on how many tokens its step had, as every request's own
 *   arithmetic does, cached or not), so it learns nothing it did not send.
 * - When blocks run short, alloc evicts the least recently released of
 *   them: each is unregistered, its generation is bumped (so the keys of
 *   its children, which name the old generation, never match again) and
 *   it is queued for zeroing like a freed block, so the shards wipe it
 *   before its new holder, perhaps another tenant, writes it.
 */
#ifndef SLM_COORDINATOR_KVPOOL_H
#define SLM_COORDINATOR_KVPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct slm_kvpool slm_kvpool_t;

/* The parent of a sequence's first block in a cache key. */
#define SLM_KVPOOL_NO_PARENT UINT32_MAX

/* A pool of n_blocks blocks (1 .. 2^22), all free, without a prefix cache
 * (lookup finds nothing, register does nothing). The caller owns *out. */
slm_status slm_kvpool_create(size_t n_blocks, slm_kvpool_t **out);

/* The same with a prefix cache of blocks of block_size (1 .. 4096)
 * positions. The caller owns *out. */
slm_status slm_kvpool_create_cached(size_t n_blocks, size_t block_size,
                                    slm_kvpool_t **out);

/* Accepts NULL; sets *p to NULL. */
void slm_kvpool_destroy(slm_kvpool_t **p);

/* Takes n blocks into out(n), each held once, all or none: from the free
 * blocks first, then by evicting cached blocks nobody holds, least
 * recently released first. False (and nothing taken) when fewer than n
 * are free or evictable. */
bool slm_kvpool_alloc(slm_kvpool_t *p, size_t n, uint32_t *out);

/* Drops one hold on each of blocks(n) (held, and none twice in the call;
 * anything else is SLM_ERR_INVALID, and nothing is released). A block
 * nobody holds any more stays cached if it is registered, else is freed
 * and queued for zeroing. */
slm_status slm_kvpool_release(slm_kvpool_t *p, const uint32_t *blocks,
                              size_t n);

/* The cached blocks that hold the first of n_blocks full blocks of a
 * sequence of `tenant` whose tokens are tokens(n_blocks * block_size):
 * returns how many leading blocks were found (0 without a cache), writes
 * their ids to out and takes a hold on each (to be released as usual). */
size_t slm_kvpool_lookup(slm_kvpool_t *p, uint32_t tenant,
                         const int32_t *tokens, size_t n_blocks, uint32_t *out);

/* Records block (held, all its positions written) as holding tokens
 * (block_size of them) after parent (SLM_KVPOOL_NO_PARENT for a
 * sequence's first block) for tenant. Nothing is recorded without a
 * cache, when block is registered already, when an equal key is (another
 * sequence computed the same block), or when parent is not registered
 * (no lookup could reach the block). SLM_ERR_INVALID when block is not
 * held or either id is outside the pool. */
slm_status slm_kvpool_register(slm_kvpool_t *p, uint32_t block, uint32_t tenant,
                               uint32_t parent, const int32_t *tokens);

/* The blocks released or evicted since the last call, to be zeroed by the
 * next step: *n of them at *blocks (borrowed until the next
 * slm_kvpool_take_freed). */
void slm_kvpool_take_freed(slm_kvpool_t *p, const uint32_t **blocks, size_t *n);

/* Blocks an alloc could take now: free ones and cached ones nobody holds. */
size_t slm_kvpool_free_count(const slm_kvpool_t *p);
/* Registered blocks, held or not. */
size_t slm_kvpool_cached_count(const slm_kvpool_t *p);
size_t slm_kvpool_total(const slm_kvpool_t *p);

/* For tests only: replaces the key hash (NULL restores the default), e.g.
 * by a constant one, so that every key collides. Call it while the cache
 * is empty. */
typedef uint64_t (*slm__kvpool_hash_fn)(uint32_t tenant, uint32_t parent,
                                        uint32_t parent_gen,
                                        const int32_t *tokens,
                                        size_t block_size);
void slm__kvpool_set_hash(slm_kvpool_t *p, slm__kvpool_hash_fn fn);

#endif
