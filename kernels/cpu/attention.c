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

#include "kernels/cpu/exp_avx512.h"
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
/* Scores reduced together: one per lane of a vector. */
#define PAGED_CHUNK 16

/* Lane j of the result is the sum of the 16 lanes of a[j]: a tree of
 * in-lane interleaves, then 128-bit block shuffles, each level adding pairs
 * and halving the vectors (15 adds and 30 shuffles, against 16 horizontal
 * reductions of 4 shuffles and 4 adds each, plus their extraction). */
__attribute__((target("avx512f"), always_inline)) static inline __m512
sum16x16(const __m512 a[PAGED_CHUNK])
{
    __m512 b[8], c[4], d[2];
    /* b[i], per 128-bit block: lanes 0, 2 from a[2i], 1, 3 from a[2i+1] */
    for (int i = 0; i < 8; i++)
        b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                             _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    /* c[i], per 128-bit block: lane j from a[4i + j] */
    for (int i = 0; i < 4; i++) {
        const __m512d x = _mm512_castps_pd(b[2 * i]);
        const __m512d y = _mm512_castps_pd(b[2 * i + 1]);
        c[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    /* d[i]: blocks 0, 1 are halves of c[2i]'s sums, blocks 2, 3 of c[2i+1]'s */
    for (int i = 0; i < 2; i++)
        d[i] = _mm512_add_ps(_mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1],
                                                  _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1],
                                                  _MM_SHUFFLE(3, 1, 3, 1)));
    /* block i: the sums of a[4i..4i+3] */
    return _mm512_add_ps(
        _mm512_shuffle_f32x4(d[0], d[1], _MM_SHUFFLE(2, 0, 2, 0)),
        _mm512_shuffle_f32x4(d[0], d[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* The 16 lanes of q(head_size) * k(head_size), summed over 16-float
 * columns; q4 holds q when head_size is 64 (the common size), so that the
 * loop over positions loads only keys. */
__attribute__((target("avx512f"), always_inline)) static inline __m512
dot_lanes(const float *q, const __m512 q4[4], const float *k, size_t head_size)
{
    if (head_size == 64) {
        __m512 acc = _mm512_mul_ps(q4[0], _mm512_loadu_ps(k));
        acc = _mm512_fmadd_ps(q4[1], _mm512_loadu_ps(k + 16), acc);
        acc = _mm512_fmadd_ps(q4[2], _mm512_loadu_ps(k + 32), acc);
        return _mm512_fmadd_ps(q4[3], _mm512_loadu_ps(k + 48), acc);
    }
    __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(q), _mm512_loadu_ps(k));
    for (size_t i = 16; i < head_size; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), _mm512_loadu_ps(k + i),
                              acc);
    return acc;
}

/* The same with AVX-512, for head sizes that are a multiple of 16. A
 * batched serving step spent a third of its time here with sequential
 * sums, then a seventh with one horizontal reduction per score and libm's
 * expf: the arithmetic is small, the overhead per position was the cost.
 * So:
 *  - each position's score is left as 16 partial sums, and every 16
 *    positions one transpose-and-add tree (sum16x16) turns them into a
 *    vector of 16 scores;
 *  - the softmax runs on vectors, with slm__cpu_exp_avx512 for expf;
 *  - the weights are normalized once, at the end: out = (sum_t e_t v_t) /
 *    (sum_t e_t), not sum_t (e_t / sum) v_t.
 * So a score is a 16-lane sum, exp is within 2 ulp of expf rather than
 * equal to it, and the sums of e_t are in another order: the result differs
 * from the scalar twin's in the last bits.
 *
 * In a serving step the keys and values mostly come from DRAM (a layer's
 * are megabytes, each read once per step), so the loads are laid out for
 * the hardware prefetchers: positions are walked a block at a time, row
 * after row at the fixed stride kv_stride, by loops not unrolled across
 * rows, so that each load instruction strides evenly. Measured slower
 * (bench/bench_attention.c): scoring 16 rows in one unrolled step (about
 * 25 % more time from DRAM), software prefetches of the next rows, and a
 * single pass with a running max (online softmax), whose chain from score
 * to exp to values leaves less room for loads in flight. */
__attribute__((target("avx512f"))) static void
paged_head_avx512(float *out, const float *q, const float *k_pool,
                  const float *v_pool, const uint32_t *table, size_t block_size,
                  float *att, size_t head_size, size_t kv_stride, size_t kv_off,
                  size_t pos)
{
    const size_t n = pos + 1;
    const __m512 scale = _mm512_set1_ps(sqrtf((float)head_size));

    /* Scores, and their maximum lane by lane. part[t % 16] holds position
     * t's 16 partial sums until its chunk of 16 is complete. */
    __m512 q4[4], part[PAGED_CHUNK], max = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < 4; i++)
        q4[i] =
            head_size == 64 ? _mm512_loadu_ps(q + 16 * i) : _mm512_setzero_ps();
    for (size_t t = 0, b = 0; t < n; b++) {
        const float *k =
            k_pool + (size_t)table[b] * block_size * kv_stride + kv_off;
        const size_t end = n - t < block_size ? n : t + block_size;
        for (; t < end; t++, k += kv_stride) {
            part[t % PAGED_CHUNK] = dot_lanes(q, q4, k, head_size);
            if (t % PAGED_CHUNK == PAGED_CHUNK - 1) {
                const __m512 s = _mm512_div_ps(sum16x16(part), scale);
                _mm512_storeu_ps(att + t + 1 - PAGED_CHUNK, s);
                max = _mm512_max_ps(max, s);
            }
        }
    }
    const size_t tail = n % PAGED_CHUNK;
    if (tail) {
        const __mmask16 keep = (__mmask16)((1u << tail) - 1u);
        for (size_t r = tail; r < PAGED_CHUNK; r++)
            part[r] = _mm512_setzero_ps();
        const __m512 s = _mm512_div_ps(sum16x16(part), scale);
        _mm512_mask_storeu_ps(att + n - tail, keep, s);
        max = _mm512_mask_max_ps(max, keep, max, s);
    }

    /* att = exp(score - max), unnormalized; total = their sum. */
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(max));
    __m512 sum = _mm512_setzero_ps();
    for (size_t t = 0; t < n; t += PAGED_CHUNK) {
        const size_t m = n - t < PAGED_CHUNK ? n - t : PAGED_CHUNK;
        const __mmask16 keep = (__mmask16)((1u << m) - 1u);
        const __m512 e = slm__cpu_exp_avx512(
            _mm512_sub_ps(_mm512_maskz_loadu_ps(keep, att + t), mx));
        _mm512_mask_storeu_ps(att + t, keep, e);
        sum = _mm512_mask_add_ps(sum, keep, sum, e);
    }
    const __m512 total = _mm512_set1_ps(_mm512_reduce_add_ps(sum));

    /* Values, 64 dimensions at a time held in registers, two rows at a time
     * into two sets of accumulators (o, p): one set would wait on the fused
     * multiply-add latency at every row. */
    for (size_t c = 0; c < head_size; c += 64) {
        const size_t nd = head_size - c < 64 ? head_size - c : 64; /* 16..64 */
        __m512 o0 = _mm512_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
        __m512 p0 = o0, p1 = o0, p2 = o0, p3 = o0;
        for (size_t t = 0, b = 0; t < n; b++) {
            const float *v =
                v_pool + (size_t)table[b] * block_size * kv_stride + kv_off + c;
            const size_t end = n - t < block_size ? n : t + block_size;
            for (; t + 1 < end; t += 2, v += 2 * kv_stride) {
                const float *w = v + kv_stride;
                const __m512 a = _mm512_set1_ps(att[t]);
                const __m512 a1 = _mm512_set1_ps(att[t + 1]);
                o0 = _mm512_fmadd_ps(a, _mm512_loadu_ps(v), o0);
                p0 = _mm512_fmadd_ps(a1, _mm512_loadu_ps(w), p0);
                if (nd > 16) {
                    o1 = _mm512_fmadd_ps(a, _mm512_loadu_ps(v + 16), o1);
                    p1 = _mm512_fmadd_ps(a1, _mm512_loadu_ps(w + 16), p1);
                }
                if (nd > 32) {
                    o2 = _mm512_fmadd_ps(a, _mm512_loadu_ps(v + 32), o2);
                    p2 = _mm512_fmadd_ps(a1, _mm512_loadu_ps(w + 32), p2);
                }
                if (nd > 48) {
                    o3 = _mm512_fmadd_ps(a, _mm512_loadu_ps(v + 48), o3);
                    p3 = _mm512_fmadd_ps(a1, _mm512_loadu_ps(w + 48), p3);
                }
            }
            if (t < end) { /* an odd row left in the block */
                const __m512 a = _mm512_set1_ps(att[t]);
                o0 = _mm512_fmadd_ps(a, _mm512_loadu_ps(v), o0);
                if (nd > 16)
                    o1 = _mm512_fmadd_ps(a, _mm512_loadu_ps(v + 16), o1);
                if (nd > 32)
                    o2 = _mm512_fmadd_ps(a, _mm512_loadu_ps(v + 32), o2);
                if (nd > 48)
                    o3 = _mm512_fmadd_ps(a, _mm512_loadu_ps(v + 48), o3);
                t++;
            }
        }
        _mm512_storeu_ps(out + c, _mm512_div_ps(_mm512_add_ps(o0, p0), total));
        if (nd > 16)
            _mm512_storeu_ps(out + c + 16,
                             _mm512_div_ps(_mm512_add_ps(o1, p1), total));
        if (nd > 32)
            _mm512_storeu_ps(out + c + 32,
                             _mm512_div_ps(_mm512_add_ps(o2, p2), total));
        if (nd > 48)
            _mm512_storeu_ps(out + c + 48,
                             _mm512_div_ps(_mm512_add_ps(o3, p3), total));
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
