/*
 * coordinator/sampler.h - turning logits into the next token: greedy,
 * temperature, top-k, top-p and a repetition penalty, with a per-request seed
 * so that the same seed and parameters give the same text.
 */
#ifndef SLM_COORDINATOR_SAMPLER_H
#define SLM_COORDINATOR_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct {
    float temperature;        /* 0 = greedy; otherwise >0, finite */
    int32_t top_k;            /* 0 = off; else keep the k most likely */
    float top_p;              /* (0, 1]; 1 = off */
    float repetition_penalty; /* 1 = off; >1 discourages repeats (CTRL) */
    uint64_t seed;
} slm_sampling_params;

/* temperature 1, top-p 0.9 (llama2.c's defaults), no top-k, no penalty. */
slm_sampling_params slm_sampling_defaults(void);

/* Checks every field; SLM_ERR_INVALID names the field and value. */
slm_status slm_sampling_validate(const slm_sampling_params *p);

typedef struct slm_sampler slm_sampler_t;

/* Validates p and allocates scratch for vocab_size logits. The caller owns
 * *out and frees it with slm_sampler_destroy. */
slm_status slm_sampler_create(int32_t vocab_size, const slm_sampling_params *p,
                              slm_sampler_t **out);

/* Accepts NULL; sets *s to NULL. */
void slm_sampler_destroy(slm_sampler_t **s);

/* Picks the next token from logits(vocab_size), which it may modify.
 * history(n_history) holds the ids seen so far (prompt and output) for the
 * repetition penalty; ids outside the vocabulary are ignored. With
 * temperature 0 this is argmax (the first maximum, as llama2.c). */
int32_t slm_sampler_sample(slm_sampler_t *s, float *logits,
                           const int32_t *history, size_t n_history);

/* Whether slm_sampler_sample is the argmax of the logits as they come
 * (temperature 0, no repetition penalty): then the index of the largest
 * logit, the first on a tie, is its answer whatever the history. */
bool slm_sampler_greedy(const slm_sampler_t *s);

#endif
