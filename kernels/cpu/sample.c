/*
 * kernels/cpu/sample.c - argmax and top-k / top-p sampling with a given coin;
 * see kernels.h. The twins of kernels/cuda/argmax.cu and sample.cu.
 *
 * slm_cpu_sample_topk_topp repeats coordinator/sampler.c's float and double
 * operations in the same order, so that for the same coin it picks the same
 * token (tests/unit/test_kernels.c checks this against the sampler itself).
 * The one difference: the sampler first drops the tokens below (1 - top_p) /
 * (vocab - 1) of the mass when only top-p is on, which only saves sorting
 * them - such tokens can never be in the nucleus - so it is left out here.
 */
#include "kernels/kernels.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

int32_t slm_cpu_argmax(const float *x, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int32_t)best;
}

/* probability descending, then id ascending: a total order, so the sort is
 * deterministic whatever qsort's algorithm */
static int cmp_candidate_desc(const void *a, const void *b)
{
    const slm_cpu_candidate *x = a, *y = b;
    if (x->prob != y->prob)
        return x->prob > y->prob ? -1 : 1;
    return x->id < y->id ? -1 : (x->id > y->id);
}

int32_t slm_cpu_sample_topk_topp(const float *logits, size_t vocab,
                                 float temperature, int32_t top_k, float top_p,
                                 float coin, slm_cpu_candidate *cand)
{
    const float max = logits[slm_cpu_argmax(logits, vocab)];
    double sum = 0.0;
    for (size_t i = 0; i < vocab; i++) {
        float e = expf((logits[i] - max) / temperature);
        cand[i].prob = e;
        cand[i].id = (int32_t)i;
        sum += e;
    }
    size_t kept = vocab;
    const bool truncate = top_k > 0 || top_p < 1.0f;
    if (truncate) {
        qsort(cand, vocab, sizeof *cand, cmp_candidate_desc);
        if (top_k > 0 && (size_t)top_k < kept)
            kept = (size_t)top_k;
        if (top_p < 1.0f) {
            double total = sum;
            if (top_k > 0) {
                total = 0.0;
                for (size_t i = 0; i < kept; i++)
                    total += cand[i].prob;
            }
            double mass = 0.0;
            for (size_t i = 0; i < kept; i++) {
                mass += cand[i].prob;
                if (mass >= top_p * total) {
                    kept = i + 1;
                    break;
                }
            }
        }
    }
    double total = 0.0;
    for (size_t i = 0; i < kept; i++)
        total += cand[i].prob;
    const double r = (double)coin * total;
    double cdf = 0.0;
    for (size_t i = 0; i < kept; i++) {
        cdf += cand[i].prob;
        if (r < cdf)
            return cand[i].id;
    }
    return cand[kept - 1].id; /* rounding */
}
