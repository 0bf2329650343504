/*
 * shard/transformer.h - the Llama forward pass of one process, on the CPU.
 *
 * Holds the run state (activations and the KV cache) for one sequence over a
 * borrowed checkpoint. This is the single-rank model that the tensor-parallel
 * shards generalise: each shard runs the same steps on its slice.
 */
#ifndef SLM_SHARD_TRANSFORMER_H
#define SLM_SHARD_TRANSFORMER_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "model/checkpoint.h"

typedef struct slm_transformer slm_transformer_t;

/* Allocates the run state for ck. ck is borrowed and must outlive the
 * transformer. The caller owns *out; free with slm_transformer_destroy. */
slm_status slm_transformer_create(const slm_checkpoint_t *ck,
                                  slm_transformer_t **out);

/* Accepts NULL; sets *t to NULL. */
void slm_transformer_destroy(slm_transformer_t **t);

/* Feeds `token` at position `pos` (the KV cache must hold positions 0..pos-1
 * of the same sequence) and points *logits at the vocab_size logits for the
 * next token: borrowed, valid until the next call. Fails with SLM_ERR_RANGE
 * if token is not in [0, vocab_size) or pos not in [0, seq_len). */
slm_status slm_transformer_forward(slm_transformer_t *t, int32_t token,
                                   int32_t pos, const float **logits);

const slm_model_config *slm_transformer_config(const slm_transformer_t *t);

#endif
