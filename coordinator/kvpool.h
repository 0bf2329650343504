/*
 * coordinator/kvpool.h - the KV-cache block allocator of the coordinator.
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
 */
#ifndef SLM_COORDINATOR_KVPOOL_H
#define SLM_COORDINATOR_KVPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct slm_kvpool slm_kvpool_t;

/* A pool of n_blocks blocks (1 .. 2^22), all free. The caller owns *out. */
slm_status slm_kvpool_create(size_t n_blocks, slm_kvpool_t **out);

/* Accepts NULL; sets *p to NULL. */
void slm_kvpool_destroy(slm_kvpool_t **p);

/* Takes n blocks into out(n), all or none: false (and nothing taken) when
 * fewer than n are free. */
bool slm_kvpool_alloc(slm_kvpool_t *p, size_t n, uint32_t *out);

/* Gives back blocks(n), each taken by slm_kvpool_alloc and not yet given
 * back (anything else is SLM_ERR_INVALID, and nothing is released). */
slm_status slm_kvpool_release(slm_kvpool_t *p, const uint32_t *blocks,
                              size_t n);

/* The blocks released since the last call, to be zeroed by the next step:
 * *n of them at *blocks (borrowed until the next slm_kvpool_take_freed). */
void slm_kvpool_take_freed(slm_kvpool_t *p, const uint32_t **blocks, size_t *n);

size_t slm_kvpool_free_count(const slm_kvpool_t *p);
size_t slm_kvpool_total(const slm_kvpool_t *p);

#endif
