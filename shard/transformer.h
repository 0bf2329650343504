/*
 * shard/transformer.h - the Llama forward pass of one shard, on the CPU.
 *
 * A shard holds a slice of the model (shard/weights.h): some layers (its
 * pipeline stage) and, within them, some heads, hidden units and vocabulary
 * rows (its tensor rank). The forward pass is the local computation plus one
 * named collective after each row-parallel product (Megatron style):
 *   embedding      vocabulary-parallel: own row or zeros, then all-reduce
 *   attention      q/k/v for own heads, attention over own KV cache,
 *                  wo over own head columns, then all-reduce
 *   feed-forward   w1/w3 for own hidden units, w2 over them, then all-reduce
 *   classifier     own vocabulary rows, then all-gather of the logits
 * and between stages, the residual stream is sent to the next stage.
 * One process running the whole model is the case tp = pp = 1, with no
 * collectives at all.
 *
 * Why the logits are all-gathered rather than reduced to a distributed
 * argmax: the coordinator samples with temperature, top-k, top-p and a
 * repetition penalty, which need the whole distribution; a vocabulary of 32K
 * floats is 128 KB per token, small next to the weights read per token.
 */
#ifndef SLM_SHARD_TRANSFORMER_H
#define SLM_SHARD_TRANSFORMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "collectives/comm.h"
#include "common/status.h"
#include "model/checkpoint.h"
#include "model/plan.h"
#include "shard/weights.h"

/* How a shard reaches its peers. All borrowed; they must outlive the
 * transformer. */
typedef struct {
    const slm_plan_t *plan; /* the split this shard is part of */
    slm_comm_t *tp;         /* this stage's tensor group; rank = tp_rank */
    slm_comm_t *pp;         /* shards of this tp_rank over stages; rank =
                               stage */
} slm_shard_links;

typedef struct slm_transformer slm_transformer_t;

/* The KV cache is a pool of blocks of block_size positions (each block holds
 * those positions' keys and values in every layer of this shard); a
 * sequence's block table says which block holds its positions
 * i * block_size .. (i + 1) * block_size - 1. The coordinator owns the
 * allocation and sends each sequence's table with every step. */
#define SLM_KV_DEFAULT_BLOCK 16
#define SLM_KV_MAX_BLOCK     1024
#define SLM_KV_MAX_SEQS      1024
#define SLM_KV_MAX_TOKENS    65536
#define SLM_KV_MAX_BLOCKS    (1 << 22)

typedef struct {
    size_t block_size; /* positions per block; 0 = SLM_KV_DEFAULT_BLOCK */
    size_t max_seqs;   /* sequences one step may carry; 0 = 1 */
    size_t max_tokens; /* tokens one step may carry (>= max_seqs); 0 =
                          max_seqs */
    size_t n_blocks;   /* the pool; 0 = max_seqs whole sequences. At least
                          one whole sequence (slm_transformer_forward). */
} slm_kv_config;

/* Fills in kv's defaults (kv may be NULL) for a context of seq_len and
 * checks the ranges: SLM_ERR_RANGE naming them. The coordinator and every
 * shard resolve the same options the same way. */
slm_status slm_kv_config_resolve(const slm_kv_config *kv, size_t seq_len,
                                 slm_kv_config *out);

/* One sequence's part of a step: n_tokens tokens fed at positions pos ..
 * pos + n_tokens - 1 (a chunk of its prompt, or the one token it sampled
 * last), with its block table (at least enough blocks for those
 * positions; the blocks of one step's sequences must differ). */
typedef struct {
    const int32_t *tokens;
    size_t n_tokens;
    int32_t pos;
    const uint32_t *blocks;
    size_t n_blocks;
    bool want_logits; /* the logits after its last token */
    /* With want_logits: only their argmax is wanted (a greedy request). The
     * transformer still returns the row; the shard's answer to the
     * coordinator carries the index alone. */
    bool want_argmax;
} slm_step_seq;

typedef struct {
    const slm_step_seq *seqs;
    size_t n_seqs;
    /* Blocks whose sequences ended: zeroed before anything else runs. */
    const uint32_t *free_blocks;
    size_t n_free;
} slm_step;

/* Allocates the run state (activations, KV cache) for the weights w. links
 * is NULL for a whole model in one process. w and the links are borrowed and
 * must outlive the transformer. The caller owns *out; free with
 * slm_transformer_destroy. */
slm_status slm_transformer_create(const slm_shard_weights_t *w,
                                  const slm_shard_links *links,
                                  slm_transformer_t **out);

/* The same with a KV configuration (NULL: the defaults, one sequence of
 * one token per step). Sizes out of range are SLM_ERR_RANGE. */
slm_status slm_transformer_create_ex(const slm_shard_weights_t *w,
                                     const slm_shard_links *links,
                                     const slm_kv_config *kv,
                                     slm_transformer_t **out);

/* Accepts NULL; sets *t to NULL. */
void slm_transformer_destroy(slm_transformer_t **t);

/* Runs this shard's part of one batched step: the freed blocks are zeroed,
 * then every sequence's tokens run together through each layer (one matrix
 * product per weight for all of them). Every shard of the job is given the
 * same step. On the last stage *logits points at *rows rows of vocab_size
 * logits, one per sequence with want_logits, in order (borrowed, valid until
 * the next call); elsewhere NULL and 0. Everything in the step is checked
 * first (SLM_ERR_RANGE naming what is wrong: a token outside the
 * vocabulary, a position outside the context, a block outside the pool or
 * named by two sequences, a table too short, too many sequences or
 * tokens); a peer's failure is the collective's status. */
slm_status slm_transformer_step(slm_transformer_t *t, const slm_step *step,
                                const float **logits, size_t *rows);

/* Runs this shard's part of one step of a single sequence kept in blocks
 * 0, 1, ...: feeds `token` at position `pos` (the KV cache must hold
 * positions 0..pos-1 of the same sequence; a step at position 0 starts a new
 * one and first zeroes the blocks the last one wrote). Every shard of
 * the job calls it with the same token and position. On the last stage
 * *logits points at the vocab_size logits of the next token (borrowed, valid
 * until the next call); elsewhere it is set to NULL. Fails with
 * SLM_ERR_RANGE if token is not in [0, vocab_size) or pos not in
 * [0, seq_len), and with the collective's status if a peer fails. */
slm_status slm_transformer_forward(slm_transformer_t *t, int32_t token,
                                   int32_t pos, const float **logits);

const slm_model_config *slm_transformer_config(const slm_transformer_t *t);

const slm_kv_config *slm_transformer_kv(const slm_transformer_t *t);

/* Zeroes the whole KV pool. */
void slm_transformer_reset(slm_transformer_t *t);

/* Blocks of the pool not all zeros in some layer (tests). */
size_t slm_transformer_kv_blocks_nonzero(const slm_transformer_t *t);

#endif
