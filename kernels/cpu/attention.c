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
 *
 * The paged form the forward pass uses (slm_cpu_attention_paged_head) has
 * the same plain-C twin, and an AVX-512 path chosen at run time.
 */
#include "kernels/kernels.h"
#include "kernels/cpu/isa.h"

#include <math.h>
#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

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

/* The row of position t in a paged cache. */
static inline size_t paged_row(const uint32_t *table, size_t block_size,
                               size_t t)
{
    return (size_t)table[t / block_size] * block_size + t % block_size;
}

/* attend_head over a paged cache, in plain C: the same arithmetic in the
 * same order as slm_cpu_attention. */
static void paged_head_scalar(float *out, const float *q, const float *k_pool,
                              const float *v_pool, const uint32_t *table,
                              size_t block_size, float *att, size_t head_size,
                              size_t kv_stride, size_t kv_off, size_t pos)
{
    float scale = sqrtf((float)head_size);
    for (size_t t = 0; t <= pos; t++) {
        const float *k =
            k_pool + paged_row(table, block_size, t) * kv_stride + kv_off;
        float score = 0.0f;
        for (size_t i = 0; i < head_size; i++)
            score += q[i] * k[i];
        att[t] = score / scale;
    }
    slm_cpu_softmax(att, pos + 1);
    for (size_t i = 0; i < head_size; i++)
        out[i] = 0.0f;
    for (size_t t = 0; t <= pos; t++) {
        const float *v =
            v_pool + paged_row(table, block_size, t) * kv_stride + kv_off;
        float a = att[t];
        for (size_t i = 0; i < head_size; i++)
            out[i] += a * v[i];
    }
}

#if defined(__x86_64__)
/* The same with AVX-512 for head sizes that are a multiple of 16: a score
 * is 16 lanes of fused multiply-adds summed at the end, so its rounding
 * differs from the sequential sum in the last bits (a batched serving step
 * spends a third of its time here with the sequential sum). Values
 * accumulate in registers, 64 dimensions at a time. */
__attribute__((target("avx512f"))) static void
paged_head_avx512(float *out, const float *q, const float *k_pool,
                  const float *v_pool, const uint32_t *table, size_t block_size,
                  float *att, size_t head_size, size_t kv_stride, size_t kv_off,
                  size_t pos)
{
    const float scale = sqrtf((float)head_size);
    /* Position by position within each block: a division per position
     * (its row) would cost more than its score. */
    for (size_t t = 0, b = 0, jb = 0; t <= pos; t++) {
        const float *k =
            k_pool + ((size_t)table[b] * block_size + jb) * kv_stride + kv_off;
        __m512 acc = _mm512_setzero_ps();
        for (size_t i = 0; i < head_size; i += 16)
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i),
                                  _mm512_loadu_ps(k + i), acc);
        att[t] = _mm512_reduce_add_ps(acc) / scale;
        if (++jb == block_size) {
            jb = 0;
            b++;
        }
    }
    slm_cpu_softmax(att, pos + 1);
    for (size_t c = 0; c < head_size; c += 64) {
        const size_t n = head_size - c < 64 ? head_size - c : 64; /* 16..64 */
        __m512 o0 = _mm512_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
        for (size_t t = 0, b = 0, jb = 0; t <= pos; t++) {
            const float *v = v_pool +
                             ((size_t)table[b] * block_size + jb) * kv_stride +
                             kv_off + c;
            if (++jb == block_size) {
                jb = 0;
                b++;
            }
            const __m512 a = _mm512_set1_ps(att[t]);
            o0 = _mm512_fmadd_ps(a, _mm512_loadu_ps(v), o0);
            if (n > 16)
                o1 = _mm512_fmadd_ps(a, _mm512_loadu_ps(v + 16), o1);
            if (n > 32)
                o2 = _mm512_fmadd_ps(a, _mm512_loadu_ps(v + 32), o2);
            if (n > 48)
                o3 = _mm512_fmadd_ps(a, _mm512_loadu_ps(v + 48), o3);
        }
        _mm512_storeu_ps(out + c, o0);
        if (n > 16)
            _mm512_storeu_ps(out + c + 16, o1);
        if (n > 32)
            _mm512_storeu_ps(out + c + 32, o2);
        if (n > 48)
            _mm512_storeu_ps(out + c + 48, o3);
    }
}
#endif

void slm_cpu_attention_paged_head(float *out, const float *q,
                                  const float *k_pool, const float *v_pool,
                                  const uint32_t *table, size_t block_size,
                                  float *att, size_t head_size,
                                  size_t kv_stride, size_t kv_off, size_t pos)
{
#if defined(__x86_64__)
    if (head_size % 16 == 0 && slm__cpu_isa_level() >= SLM__ISA_AVX512) {
        paged_head_avx512(out, q, k_pool, v_pool, table, block_size, att,
                          head_size, kv_stride, kv_off, pos);
        return;
    }
#endif
    paged_head_scalar(out, q, k_pool, v_pool, table, block_size, att, head_size,
                      kv_stride, kv_off, pos);
}
