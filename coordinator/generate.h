/*
 * coordinator/generate.h - the generation loop of one sequence: encode the
 * prompt, feed it, sample, stream each piece of text as it is produced.
 */
#ifndef SLM_COORDINATOR_GENERATE_H
#define SLM_COORDINATOR_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "coordinator/sampler.h"
#include "model/tokenizer.h"
#include "shard/transformer.h"

/* Called with each piece of text (not NUL-terminated, borrowed for the call)
 * and its token id. A non-OK return stops generation with that status. */
typedef slm_status (*slm_piece_fn)(void *user, const char *piece, size_t len,
                                   int32_t token);

typedef struct {
    size_t prompt_tokens;    /* including BOS */
    size_t generated_tokens; /* sampled, not counting the prompt */
    double prompt_seconds;   /* feeding the prompt */
    double decode_seconds;   /* sampling the rest */
} slm_generate_stats;

/* Runs `steps` positions (BOS and the prompt included, llama2.c's meaning of
 * -n; clamped to the model's seq_len; 0 means seq_len). Pieces of the prompt
 * are streamed too, so the output reads as prompt + continuation. Generation
 * ends early when the model produces BOS or EOS. Control characters other
 * than whitespace are not passed to fn (a model must not drive a terminal).
 * The transformer must be fresh (position 0). */
slm_status slm_generate(slm_transformer_t *t, const slm_tokenizer_t *tok,
                        slm_sampler_t *sampler, const char *prompt,
                        int32_t steps, slm_piece_fn fn, void *user,
                        slm_generate_stats *stats);

#endif
