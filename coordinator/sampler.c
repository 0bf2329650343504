/* coordinator/sampler.c - see sampler.h. */
#include "coordinator/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float prob;
    int32_t id;
} candidate;

struct slm_sampler {
    int32_t vocab_size;
    slm_sampling_params p;
    uint64_t rng;    /* xorshift64* state, never 0 */
    candidate *cand; /* (vocab_size) scratch */
    uint8_t *seen;   /* (vocab_size) scratch for the repetition penalty */
};

slm_sampling_params slm_sampling_defaults(void)
{
    slm_sampling_params p = {1.0f, 0, 0.9f, 1.0f, 0};
    return p;
}

slm_status slm_sampling_validate(const slm_sampling_params *p)
{
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return slm_fail(SLM_ERR_INVALID,
                        "temperature = %g must be finite and >= 0",
                        (double)p->temperature);
    if (p->top_k < 0)
        return slm_fail(SLM_ERR_INVALID, "top_k = %d must be >= 0", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return slm_fail(SLM_ERR_INVALID, "top_p = %g must be in (0, 1]",
                        (double)p->top_p);
    if (!(p->repetition_penalty > 0.0f) || !isfinite(p->repetition_penalty))
        return slm_fail(SLM_ERR_INVALID,
                        "repetition_penalty = %g must be finite and > 0",
                        (double)p->repetition_penalty);
    return SLM_OK;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

slm_status slm_sampler_create(int32_t vocab_size, const slm_sampling_params *p,
                              slm_sampler_t **out)
{
    if (vocab_size <= 0)
        return slm_fail(SLM_ERR_INVALID, "sampler: vocab_size = %d",
                        vocab_size);
    SLM_CHECK(slm_sampling_validate(p));
    slm_sampler_t *s = calloc(1, sizeof *s);
    if (!s)
        return slm_fail(SLM_ERR_NOMEM, "sampler: out of memory");
    s->vocab_size = vocab_size;
    s->p = *p;
    /* splitmix spreads nearby seeds apart; xorshift needs a non-zero state */
    s->rng = splitmix64(p->seed) | 1;
    s->cand = calloc((size_t)vocab_size, sizeof *s->cand);
    s->seen = calloc((size_t)vocab_size, 1);
    if (!s->cand || !s->seen) {
        slm_sampler_destroy(&s);
        return slm_fail(SLM_ERR_NOMEM, "sampler: out of memory");
    }
    *out = s;
    return SLM_OK;
}

void slm_sampler_destroy(slm_sampler_t **s)
{
    if (!s || !*s)
        return;
    free((*s)->cand);
    free((*s)->seen);
    free(*s);
    *s = NULL;
}

/* Uniform in [0, 1) with 24 random bits (exact in float). */
static float rand_unit(slm_sampler_t *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    uint64_t r = s->rng * 0x2545f4914f6cdd1dULL;
    return (float)(r >> 40) * 0x1.0p-24f;
}

static int32_t argmax(const float *x, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* CTRL-style penalty, once per distinct id: positive logits are divided,
 * negative ones multiplied, so repeats always become less likely. */
static void apply_repetition_penalty(slm_sampler_t *s, float *logits,
                                     const int32_t *history, size_t n)
{
    const float pen = s->p.repetition_penalty;
    if (pen == 1.0f || n == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        int32_t id = history[i];
        if (id < 0 || id >= s->vocab_size || s->seen[id])
            continue;
        s->seen[id] = 1;
        logits[id] = logits[id] > 0.0f ? logits[id] / pen : logits[id] * pen;
    }
    for (size_t i = 0; i < n; i++)
        if (history[i] >= 0 && history[i] < s->vocab_size)
            s->seen[history[i]] = 0;
}

static int cmp_candidate_desc(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    if (x->prob != y->prob)
        return x->prob > y->prob ? -1 : 1;
    return x->id < y->id ? -1 : (x->id > y->id); /* deterministic order */
}

int32_t slm_sampler_sample(slm_sampler_t *s, float *logits,
                           const int32_t *history, size_t n_history)
{
    const int32_t n = s->vocab_size;
    apply_repetition_penalty(s, logits, history, n_history);
    if (s->p.temperature == 0.0f)
        return argmax(logits, n);

    /* softmax(logits / temperature) into the candidate list */
    float max = logits[argmax(logits, n)];
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        float e = expf((logits[i] - max) / s->p.temperature);
        s->cand[i].prob = e;
        s->cand[i].id = i;
        sum += e;
    }
    int32_t kept = n;
    bool truncate = s->p.top_k > 0 || s->p.top_p < 1.0f;
    if (truncate) {
        if (s->p.top_p < 1.0f && s->p.top_k == 0) {
            /* Tokens below (1 - p) / (n - 1) of the mass cannot be in the
             * nucleus (llama2.c's trick); drop them before sorting. */
            const float cutoff =
                (float)((1.0 - s->p.top_p) / (double)(n > 1 ? n - 1 : 1) * sum);
            int32_t m = 0;
            for (int32_t i = 0; i < n; i++)
                if (s->cand[i].prob >= cutoff)
                    s->cand[m++] = s->cand[i];
            kept = m > 0 ? m : n;
        }
        qsort(s->cand, (size_t)kept, sizeof *s->cand, cmp_candidate_desc);
        if (s->p.top_k > 0 && s->p.top_k < kept)
            kept = s->p.top_k;
        if (s->p.top_p < 1.0f) {
            /* The nucleus is measured against the whole distribution; only
             * after a top-k cut is it the kept tokens' mass (renormalised).
             * The cutoff filter above drops tokens that cannot be in the
             * nucleus, not their share of the mass. */
            double total = sum;
            if (s->p.top_k > 0) {
                total = 0.0;
                for (int32_t i = 0; i < kept; i++)
                    total += s->cand[i].prob;
            }
            double mass = 0.0;
            for (int32_t i = 0; i < kept; i++) {
                mass += s->cand[i].prob;
                if (mass >= s->p.top_p * total) {
                    kept = i + 1;
                    break;
                }
            }
        }
    }
    double total = 0.0;
    for (int32_t i = 0; i < kept; i++)
        total += s->cand[i].prob;
    const double r = (double)rand_unit(s) * total;
    double cdf = 0.0;
    for (int32_t i = 0; i < kept; i++) {
        cdf += s->cand[i].prob;
        if (r < cdf)
            return s->cand[i].id;
    }
    return s->cand[kept - 1].id; /* rounding */
}

bool slm_sampler_greedy(const slm_sampler_t *s)
{
    return s->p.temperature == 0.0f && s->p.repetition_penalty == 1.0f;
}
