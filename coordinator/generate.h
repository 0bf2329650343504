/*
 * coordinator/generate.h - the generation loop of one sequence: encode the
 * prompt, feed it, sample, stream each piece of text as it is produced.
 */
#ifndef SLM_COORDINATOR_GENERATE_H
#define SLM_COORDINATOR_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "coordinator/sampler.h"
#include "model/tokenizer.h"
#include "shard/transformer.h"

/* What a batched step returns, borrowed until the next call: a row of
 * vocab_size logits for each sequence with want_logits, in order; except
 * that a runner that sets argmax returns, for each sequence that also has
 * want_argmax, the index of its largest logit (the first, on a tie) in
 * argmax, in order, and no row. */
typedef struct {
    const float *logits;
    size_t rows;
    const int32_t *argmax; /* NULL: every row is in logits */
    size_t n_argmax;
} slm_step_out;

/* Whatever computes the logits of one position: the model in this process,
 * or a cluster of shards driven over the control plane. */
typedef struct {
    /* Feeds token at pos of the runner's single sequence (a new one at
     * position 0); *logits: vocab_size floats, borrowed until the next
     * call. */
    slm_status (*forward)(void *ctx, int32_t token, int32_t pos,
                          const float **logits);
    /* One batched step over the paged KV cache (slm_transformer_step).
     * Not to be mixed with forward, which uses the blocks from 0. */
    slm_status (*step)(void *ctx, const slm_step *step, slm_step_out *out);
    void *ctx;
    int32_t seq_len;
    const slm_kv_config *kv;     /* the pool and the limits of a step */
    const slm_model_config *cfg; /* its stop tokens (eos ids) */
} slm_model_runner;

/* The runner of a whole model in this process; t is borrowed. */
slm_model_runner slm_runner_local(slm_transformer_t *t);

/* Whether a decoded piece may be shown: a single control byte (escape,
 * bell, backspace ...) may not, so a model cannot drive a terminal;
 * whitespace, multi-byte pieces and bytes >= 0x80 (byte-fallback tokens that
 * reassemble UTF-8) may. */
bool slm_piece_printable(const char *piece, size_t len);

/* Called with each piece of text (not NUL-terminated, borrowed for the call)
 * and its token id. A non-OK return stops generation with that status. */
typedef slm_status (*slm_piece_fn)(void *user, const char *piece, size_t len,
                                   int32_t token);

typedef struct {
    size_t prompt_tokens;    /* including BOS */
    size_t generated_tokens; /* sampled, not counting the prompt */
    double prompt_seconds;   /* feeding the prompt */
    double decode_seconds;   /* sampling the rest */
    bool stopped;            /* ended by BOS/EOS rather than by length */
} slm_generate_stats;

/* Runs `steps` positions (BOS and the prompt included, llama2.c's meaning of
 * -n; clamped to the model's seq_len; 0 means seq_len). Pieces of the prompt
 * are streamed too, so the output reads as prompt + continuation. Generation
 * ends early when the model produces BOS or EOS. Control characters other
 * than whitespace are not passed to fn (a model must not drive a terminal).
 * Positions restart at 0: a runner's KV cache is simply overwritten. */
slm_status slm_generate(const slm_model_runner *m, const slm_tokenizer_t *tok,
                        slm_sampler_t *sampler, const char *prompt,
                        int32_t steps, slm_piece_fn fn, void *user,
                        slm_generate_stats *stats);

#endif
