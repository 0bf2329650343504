/*
 * kernels/cpu/attention.c - grouped-query attention for one token; see
 * kernels.h.
 *
 * The arithmetic follows llama2.c run.c step for step, because the logits are
 * checked against it to 1e-4 and the greedy text byte for byte:
 *   score(t) = (sum over i, in index order, of q[i] * k_t[i]) / sqrtf(hs)
 *   att      = softmax(score(0..pos))            (slm_cpu_softmax, same order)
 *   out[i]   = sum over t, in order, of att[t] * v_t[i], starting from 0
 * The output accumulation is independent per i, so the compiler may vectorize
 * across i without changing any result; the score sum is left sequential.
 * Plain C on purpose (no target attributes): an FMA-enabled function could
 * contract a * b + c and change the rounding.
 *
 * Heads are independent and run in parallel when there is enough work to pay
 * for the thread team; each writes only its own out and att rows.
 */
#include "kernels/kernels.h"

#include <math.h>
#include <omp.h>

/* Score multiply-adds (n_heads * (pos + 1) * head_size) below which one
 * thread is faster than a team. Measured with 2 threads: 64 take 0.38 us on
 * one thread and 0.49 us on two; 1024 take 1.08 us and 0.89 us. */
#define ATTENTION_SERIAL_MAX ((size_t)512)

static void attend_head(float *restrict out, const float *restrict q,
                        const float *restrict k_cache,
                        const float *restrict v_cache, float *restrict att,
                        size_t head_size, size_t kv_stride, size_t pos)
{
    float scale = sqrtf((float)head_size);
    for (size_t t = 0; t <= pos; t++) {
        const float *k = k_cache + t * kv_stride;
        float score = 0.0f;
        for (size_t i = 0; i < head_size; i++)
            score += q[i] * k[i];
        att[t] = score / scale;
    }
    slm_cpu_softmax(att, pos + 1);
    for (size_t i = 0; i < head_size; i++)
        out[i] = 0.0f;
    for (size_t t = 0; t <= pos; t++) {
        const float *v = v_cache + t * kv_stride;
        float a = att[t];
        for (size_t i = 0; i < head_size; i++)
            out[i] += a * v[i];
    }
}

void slm_cpu_attention(float *out, const float *q, const float *k_cache,
                       const float *v_cache, float *att, size_t att_stride,
                       size_t n_heads, size_t n_kv_heads, size_t head_size,
                       size_t kv_stride, size_t pos)
{
    size_t kv_mul = n_heads / n_kv_heads;
    size_t work = n_heads * (pos + 1) * head_size;
#pragma omp parallel for schedule(static) if (work >= ATTENTION_SERIAL_MAX)
    for (size_t h = 0; h < n_heads; h++) {
        size_t kv_off = (h / kv_mul) * head_size;
        attend_head(out + h * head_size, q + h * head_size, k_cache + kv_off,
                    v_cache + kv_off, att + h * att_stride, head_size,
                    kv_stride, pos);
    }
}

/* attend_head with the keys and values of position t at row
 * table[t / block_size] * block_size + t % block_size of the pools: the
 * same arithmetic in the same order, so paged and contiguous caches give
 * bit-identical results. */
void slm_cpu_attention_paged_head(float *out, const float *q,
                                  const float *k_pool, const float *v_pool,
                                  const uint32_t *table, size_t block_size,
                                  float *att, size_t head_size,
                                  size_t kv_stride, size_t kv_off, size_t pos)
{
    float scale = sqrtf((float)head_size);
    for (size_t t = 0; t <= pos; t++) {
        const size_t row = (size_t)table[t / block_size] * block_size +
                           t % block_size;
        const float *k = k_pool + row * kv_stride + kv_off;
        float score = 0.0f;
        for (size_t i = 0; i < head_size; i++)
            score += q[i] * k[i];
        att[t] = score / scale;
    }
    slm_cpu_softmax(att, pos + 1);
    for (size_t i = 0; i < head_size; i++)
        out[i] = 0.0f;
    for (size_t t = 0; t <= pos; t++) {
        const size_t row = (size_t)table[t / block_size] * block_size +
                           t % block_size;
        const float *v = v_pool + row * kv_stride + kv_off;
        float a = att[t];
        for (size_t i = 0; i < head_size; i++)
            out[i] += a * v[i];
    }
}
