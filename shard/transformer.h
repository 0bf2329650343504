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

/* Allocates the run state (activations, KV cache) for the weights w. links
 * is NULL for a whole model in one process. w and the links are borrowed and
 * must outlive the transformer. The caller owns *out; free with
 * slm_transformer_destroy. */
slm_status slm_transformer_create(const slm_shard_weights_t *w,
                                  const slm_shard_links *links,
                                  slm_transformer_t **out);

/* Accepts NULL; sets *t to NULL. */
void slm_transformer_destroy(slm_transformer_t **t);

/* Runs this shard's part of one step: feeds `token` at position `pos` (the
 * KV cache must hold positions 0..pos-1 of the same sequence). Every shard of
 * the job calls it with the same token and position. On the last stage
 * *logits points at the vocab_size logits of the next token (borrowed, valid
 * until the next call); elsewhere it is set to NULL. Fails with
 * SLM_ERR_RANGE if token is not in [0, vocab_size) or pos not in
 * [0, seq_len), and with the collective's status if a peer fails. */
slm_status slm_transformer_forward(slm_transformer_t *t, int32_t token,
                                   int32_t pos, const float **logits);

const slm_model_config *slm_transformer_config(const slm_transformer_t *t);

/* Zeroes the KV cache rows written so far. slm_transformer_forward does it
 * itself when a step at position 0 starts a new sequence, so one request's
 * keys and values never outlive it into the next. */
void slm_transformer_reset(slm_transformer_t *t);

/* Positions whose KV cache row is not all zeros in some layer (tests). */
size_t slm_transformer_kv_rows_nonzero(const slm_transformer_t *t);

#endif
