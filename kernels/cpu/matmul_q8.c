/*
 * kernels/cpu/matmul_q8.c - int8 weights with one float scale per output
 * row: quantization, and out = x @ (scale * q)^T for a batch of tokens; see
 * kernels.h.
 *
 * Weight-only quantization: x stays float, each int8 weight is widened to
 * float in a register (vpmovsxbd + vcvtdq2ps, exact) and multiplied in with
 * an FMA, and the row's scale is applied once to the finished sum. So the
 * result is the float product with the dequantized weights, up to float
 * rounding, and the quantization error is the weights' alone. (An int8 x
 * for VNNI would add a second, activation-dependent error; not done.)
 *
 * Layout and regimes follow matmul.c:
 *   - one token, or up to Q8_DOT_MAX whose x fits in L1: each weight row
 *     is streamed once from memory, with software prefetch, and dotted with
 *     every token's x. Batch-1 decode is here, and it is bound by memory
 *     bandwidth, at a quarter of float32's bytes: widening costs two vector
 *     operations per 16 weights, which one core sustains at about 45 GB/s
 *     of weights (measured in L2), so two cores keep up with DRAM.
 *   - more tokens: the packed GEMM of matmul.c, but the panel is packed as
 *     int8 (KC, NR) - a byte transpose, four times smaller in L1 - and the
 *     micro-kernel widens NR/16 vectors of it per k, shared by its MR
 *     tokens' 2 MR FMAs. The scales multiply the tile before it is stored.
 *     The first micro-kernel of each block prefetches the next one.
 */
#include "kernels/kernels.h"

#include <math.h>
#include <omp.h>

#include "kernels/cpu/isa.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SLM_HAVE_X86 1
#endif

#define Q8_KC    512
#define Q8_MR512 12
#define Q8_NR512 32
#define Q8_MR256 6
#define Q8_NR256 16

/* The dot path, as in matmul.c: at most this many tokens, whose x takes at
 * most this many bytes. */
#define Q8_DOT_MAX   4
#define Q8_DOT_X_MAX ((size_t)32 * 1024)
/* Bytes of int8 weights the row-streaming loops prefetch ahead. One
 * thread, 32000 x 2048 from DRAM, batch 1: 42 GB/s at 8 KiB, 40 at 4,
 * 36 at 2 KiB and without. */
#define Q8_PREFETCH 8192

/* As in matmul.c: below this many multiply-adds, one thread; chunks of
 * about this many weight bytes per unit of work. */
#define Q8_SERIAL_MAX  ((size_t)256 * 1024)
#define Q8_CHUNK_BYTES ((size_t)256 * 1024)
/* Panels per chunk in the GEMM, as in matmul.c. */
#define Q8_CHUNK_PANELS 4

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* Batch 1 always streams: the GEMM would spend a transpose per weight on
 * one token. */
static int use_dot(size_t batch, size_t cols)
{
    return batch == 1 || (batch <= Q8_DOT_MAX &&
                          batch * cols * sizeof(float) <= Q8_DOT_X_MAX);
}

void slm_cpu_quantize_q8(int8_t *q, float *scale, const float *w, size_t rows,
                         size_t cols)
{
    for (size_t r = 0; r < rows; r++) {
        const float *wr = w + r * cols;
        int8_t *qr = q + r * cols;
        float m = 0.0f;
        for (size_t j = 0; j < cols; j++)
            m = fmaxf(m, fabsf(wr[j]));
        if (m == 0.0f) {
            scale[r] = 0.0f;
            for (size_t j = 0; j < cols; j++)
                qr[j] = 0;
            continue;
        }
        float s = m / 127.0f;
        scale[r] = s;
        for (size_t j = 0; j < cols; j++) {
            /* |w| / s can round to a hair above 127; the clamp keeps such
             * an element at 127 rather than wrapping. */
            float v = rintf(wr[j] / s);
            v = fminf(fmaxf(v, -127.0f), 127.0f);
            qr[j] = (int8_t)v;
        }
    }
}

static void rows_scalar(float *out, const int8_t *q, const float *scale,
                        const float *x, size_t batch, size_t rows, size_t cols,
                        size_t r0, size_t r1)
{
    for (size_t r = r0; r < r1; r++) {
        const int8_t *qr = q + r * cols;
        for (size_t b = 0; b < batch; b++) {
            const float *xb = x + b * cols;
            float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
            size_t j = 0;
            for (; j + 4 <= cols; j += 4) {
                s0 += (float)qr[j] * xb[j];
                s1 += (float)qr[j + 1] * xb[j + 1];
                s2 += (float)qr[j + 2] * xb[j + 2];
                s3 += (float)qr[j + 3] * xb[j + 3];
            }
            for (; j < cols; j++)
                s0 += (float)qr[j] * xb[j];
            out[b * rows + r] = ((s0 + s1) + (s2 + s3)) * scale[r];
        }
    }
}

#ifdef SLM_HAVE_X86

/* The batch sizes each kernel is compiled for (SLM__DISPATCH_CASE). */
#define DISPATCH_2_4(fn, nb, ...)                                              \
    switch (nb) {                                                              \
        SLM__DISPATCH_CASE(fn, 2, __VA_ARGS__)                                 \
        SLM__DISPATCH_CASE(fn, 3, __VA_ARGS__)                                 \
        SLM__DISPATCH_CASE(fn, 4, __VA_ARGS__)                                 \
    default:                                                                   \
        break;                                                                 \
    }
#define DISPATCH_1_5(fn, nb, ...)                                              \
    switch (nb) {                                                              \
        SLM__DISPATCH_CASE(fn, 1, __VA_ARGS__)                                 \
        SLM__DISPATCH_CASE(fn, 2, __VA_ARGS__)                                 \
        SLM__DISPATCH_CASE(fn, 3, __VA_ARGS__)                                 \
        SLM__DISPATCH_CASE(fn, 4, __VA_ARGS__)                                 \
        SLM__DISPATCH_CASE(fn, 5, __VA_ARGS__)                                 \
    default:                                                                   \
        break;                                                                 \
    }
#define DISPATCH_1_8(fn, nb, ...)                                              \
    switch (nb) {                                                              \
        SLM__DISPATCH_CASE(fn, 1, __VA_ARGS__)                                 \
        SLM__DISPATCH_CASE(fn, 2, __VA_ARGS__)                                 \
        SLM__DISPATCH_CASE(fn, 3, __VA_ARGS__)                                 \
        SLM__DISPATCH_CASE(fn, 4, __VA_ARGS__)                                 \
        SLM__DISPATCH_CASE(fn, 5, __VA_ARGS__)                                 \
        SLM__DISPATCH_CASE(fn, 6, __VA_ARGS__)                                 \
        SLM__DISPATCH_CASE(fn, 7, __VA_ARGS__)                                 \
        SLM__DISPATCH_CASE(fn, 8, __VA_ARGS__)                                 \
    default:                                                                   \
        break;                                                                 \
    }
_Static_assert(Q8_DOT_MAX == 4, "the dot path dispatches 2..4 tokens");

/* 16 rows of 16 bytes: byte j of r[i] becomes byte i of r[j]. SSE2, four
 * rounds of 16 unpacks, each doubling the run of one column's bytes. */
static inline void transpose16_u8(__m128i r[16])
{
    __m128i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm_unpacklo_epi8(r[i], r[i + 1]);
        t[i + 1] = _mm_unpackhi_epi8(r[i], r[i + 1]);
    }
    /* r[g + c]: columns 4c..4c+3, four bytes (rows g..g+3) each. */
    for (int g = 0; g < 16; g += 4) {
        r[g] = _mm_unpacklo_epi16(t[g], t[g + 2]);
        r[g + 1] = _mm_unpackhi_epi16(t[g], t[g + 2]);
        r[g + 2] = _mm_unpacklo_epi16(t[g + 1], t[g + 3]);
        r[g + 3] = _mm_unpackhi_epi16(t[g + 1], t[g + 3]);
    }
    /* t[g + m]: columns 2m and 2m+1, eight bytes (rows g..g+7) each. */
    for (int g = 0; g < 16; g += 8) {
        for (int c = 0; c < 4; c++) {
            t[g + 2 * c] = _mm_unpacklo_epi32(r[g + c], r[g + 4 + c]);
            t[g + 2 * c + 1] = _mm_unpackhi_epi32(r[g + c], r[g + 4 + c]);
        }
    }
    for (int m = 0; m < 8; m++) {
        r[2 * m] = _mm_unpacklo_epi64(t[m], t[8 + m]);
        r[2 * m + 1] = _mm_unpackhi_epi64(t[m], t[8 + m]);
    }
}

/* dst(kc, nr) = q(nrv, kc)^T as bytes, rows nrv..nr-1 zero; nr is 16 or
 * 32, dst 16-byte aligned. */
static void pack_q8(int8_t *dst, const int8_t *q, size_t ldq, size_t nrv,
                    size_t kc, size_t nr)
{
    size_t k = 0;
    if (nrv == nr) {
        for (; k + 16 <= kc; k += 16) {
            for (size_t h = 0; h < nr; h += 16) {
                __m128i r[16];
                for (size_t i = 0; i < 16; i++)
                    r[i] = _mm_loadu_si128(
                        (const __m128i *)(q + (h + i) * ldq + k));
                transpose16_u8(r);
                for (size_t j = 0; j < 16; j++)
                    _mm_store_si128((__m128i *)(dst + (k + j) * nr + h), r[j]);
            }
        }
    }
    for (; k < kc; k++) {
        size_t i = 0;
        for (; i < nrv; i++)
            dst[k * nr + i] = q[i * ldq + k];
        for (; i < nr; i++)
            dst[k * nr + i] = 0;
    }
}

/* ---- AVX-512 ------------------------------------------------------------ */

__attribute__((target("avx512f"), always_inline)) static inline __m512
widen16_avx512(const int8_t *p)
{
    return _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

/* Batch-1 decode: out[r] = scale[r] * (q[r] . x), one row at a time (one
 * sequential stream per thread, as matvec found best), four accumulators. */
__attribute__((target("avx512f"))) static void
rows1_avx512(float *out, const int8_t *q, const float *scale, const float *x,
             size_t cols, size_t r0, size_t r1)
{
    for (size_t r = r0; r < r1; r++) {
        const int8_t *qr = q + r * cols;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        size_t j = 0;
        for (; j + 64 <= cols; j += 64) {
            _mm_prefetch((const char *)(qr + j) + Q8_PREFETCH, _MM_HINT_T0);
            a0 = _mm512_fmadd_ps(widen16_avx512(qr + j), _mm512_loadu_ps(x + j),
                                 a0);
            a1 = _mm512_fmadd_ps(widen16_avx512(qr + j + 16),
                                 _mm512_loadu_ps(x + j + 16), a1);
            a2 = _mm512_fmadd_ps(widen16_avx512(qr + j + 32),
                                 _mm512_loadu_ps(x + j + 32), a2);
            a3 = _mm512_fmadd_ps(widen16_avx512(qr + j + 48),
                                 _mm512_loadu_ps(x + j + 48), a3);
        }
        for (; j + 16 <= cols; j += 16)
            a0 = _mm512_fmadd_ps(widen16_avx512(qr + j), _mm512_loadu_ps(x + j),
                                 a0);
        float s = _mm512_reduce_add_ps(
            _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
        for (; j < cols; j++)
            s += (float)qr[j] * x[j];
        out[r] = s * scale[r];
    }
}

/* out[b][r] for b < nb, r in [r0, r1); see matmul.c's dot_avx512. */
__attribute__((target("avx512f"), always_inline)) static inline void
dot_avx512(const int nb, float *out, size_t ldo, const int8_t *q,
           const float *scale, const float *x, size_t cols, size_t r0,
           size_t r1)
{
    for (size_t r = r0; r < r1; r++) {
        const int8_t *qr = q + r * cols;
        __m512 a0[Q8_DOT_MAX], a1[Q8_DOT_MAX];
        for (int b = 0; b < nb; b++) {
            a0[b] = _mm512_setzero_ps();
            a1[b] = _mm512_setzero_ps();
        }
        size_t j = 0;
        for (; j + 32 <= cols; j += 32) {
            _mm_prefetch((const char *)(qr + j) + Q8_PREFETCH, _MM_HINT_T0);
            __m512 w0 = widen16_avx512(qr + j);
            __m512 w1 = widen16_avx512(qr + j + 16);
            for (int b = 0; b < nb; b++) {
                const float *xb = x + (size_t)b * cols + j;
                a0[b] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xb), a0[b]);
                a1[b] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xb + 16), a1[b]);
            }
        }
        if (j + 16 <= cols) {
            __m512 w0 = widen16_avx512(qr + j);
            for (int b = 0; b < nb; b++)
                a0[b] = _mm512_fmadd_ps(
                    w0, _mm512_loadu_ps(x + (size_t)b * cols + j), a0[b]);
            j += 16;
        }
        float s[Q8_DOT_MAX];
        for (int b = 0; b < nb; b++)
            s[b] = _mm512_reduce_add_ps(_mm512_add_ps(a0[b], a1[b]));
        for (; j < cols; j++)
            for (int b = 0; b < nb; b++)
                s[b] += (float)qr[j] * x[(size_t)b * cols + j];
        for (int b = 0; b < nb; b++)
            out[(size_t)b * ldo + r] = s[b] * scale[r];
    }
}

__attribute__((target("avx512f"))) static void
dots_avx512(float *out, const int8_t *q, const float *scale, const float *x,
            size_t batch, size_t rows, size_t cols, size_t r0, size_t r1)
{
    if (batch == 1) {
        rows1_avx512(out, q, scale, x, cols, r0, r1);
        return;
    }
    DISPATCH_2_4(dot_avx512, batch, out, rows, q, scale, x, cols, r0, r1)
}

/* out(mr, 32; lanes masked by m0, m1) (+)= (x(mr, kc) @ wp(kc, 32)) * (s0,
 * s1), mr a compile-time constant at each call site. pf (NULL for none) is
 * the next block to pack, prefetched one row (8 lines) every 16 k, as in
 * matmul.c. */
__attribute__((target("avx512f"), always_inline)) static inline void
tile_avx512(const int mr, size_t kc, const int8_t *wp, const float *x,
            size_t ldx, float *out, size_t ldo, __m512 s0, __m512 s1,
            __mmask16 m0, __mmask16 m1, int accumulate, const int8_t *pf,
            size_t ldw)
{
    __m512 c0[Q8_MR512], c1[Q8_MR512];
    for (int i = 0; i < mr; i++) {
        c0[i] = _mm512_setzero_ps();
        c1[i] = _mm512_setzero_ps();
    }
    for (size_t k = 0; k < kc; k++) {
        if (pf && (k & 15) == 0 && (k >> 4) < Q8_NR512) {
            const char *p = (const char *)(pf + (k >> 4) * ldw);
            for (int l = 0; l < Q8_KC / 64; l++)
                _mm_prefetch(p + 64 * l, _MM_HINT_T0);
        }
        __m512 w0 = widen16_avx512(wp + k * Q8_NR512);
        __m512 w1 = widen16_avx512(wp + k * Q8_NR512 + 16);
        for (int i = 0; i < mr; i++) {
            __m512 xi = _mm512_set1_ps(x[(size_t)i * ldx + k]);
            c0[i] = _mm512_fmadd_ps(w0, xi, c0[i]);
            c1[i] = _mm512_fmadd_ps(w1, xi, c1[i]);
        }
    }
    for (int i = 0; i < mr; i++) {
        float *o = out + (size_t)i * ldo;
        c0[i] = _mm512_mul_ps(c0[i], s0);
        c1[i] = _mm512_mul_ps(c1[i], s1);
        if (accumulate) {
            c0[i] = _mm512_add_ps(c0[i], _mm512_maskz_loadu_ps(m0, o));
            c1[i] = _mm512_add_ps(c1[i], _mm512_maskz_loadu_ps(m1, o + 16));
        }
        _mm512_mask_storeu_ps(o, m0, c0[i]);
        _mm512_mask_storeu_ps(o + 16, m1, c1[i]);
    }
}

__attribute__((target("avx512f"))) static void
panels_avx512(float *out, const int8_t *q, const float *scale, const float *x,
              size_t batch, size_t rows, size_t cols, size_t r0, size_t r1)
{
    /* 16 KiB on the thread's stack. */
    int8_t wp[Q8_KC * Q8_NR512] __attribute__((aligned(64)));
    /* Column blocks outside, panels inside, as in matmul.c. */
    for (size_t k0 = 0; k0 < cols; k0 += Q8_KC) {
        size_t kc = min_size(Q8_KC, cols - k0);
        int acc = k0 > 0;
        const float *xk = x + k0;
        for (size_t r = r0; r < r1; r += Q8_NR512) {
            size_t nrv = min_size(Q8_NR512, r1 - r);
            __mmask16 m0 = (__mmask16)(nrv >= 16 ? 0xffffu : (1u << nrv) - 1u);
            __mmask16 m1 = (__mmask16)(nrv >= 32   ? 0xffffu
                                       : nrv <= 16 ? 0u
                                                   : (1u << (nrv - 16)) - 1u);
            __m512 s0 = _mm512_maskz_loadu_ps(m0, scale + r);
            __m512 s1 = _mm512_maskz_loadu_ps(m1, scale + r + 16);
            const int8_t *next = NULL;
            if (r + Q8_NR512 < r1)
                next = q + (r + Q8_NR512) * cols + k0;
            else if (k0 + Q8_KC < cols)
                next = q + r0 * cols + k0 + Q8_KC;
            pack_q8(wp, q + r * cols + k0, cols, nrv, kc, Q8_NR512);
            float *o = out + r;
            size_t b = 0;
            for (; b + Q8_MR512 <= batch; b += Q8_MR512) {
                tile_avx512(Q8_MR512, kc, wp, xk + b * cols, cols, o + b * rows,
                            rows, s0, s1, m0, m1, acc, next, cols);
                next = NULL;
            }
            size_t left = batch - b;
            if (left > 8) {
                DISPATCH_1_8(tile_avx512, left - 8, kc, wp, xk + b * cols, cols,
                             o + b * rows, rows, s0, s1, m0, m1, acc, next,
                             cols)
                next = NULL;
                b += left - 8;
                left = 8;
            }
            DISPATCH_1_8(tile_avx512, left, kc, wp, xk + b * cols, cols,
                         o + b * rows, rows, s0, s1, m0, m1, acc, next, cols)
        }
    }
}
_Static_assert(Q8_MR512 <= 16, "the tail of a batch is split in two groups");

/* ---- AVX2 --------------------------------------------------------------- */

__attribute__((target("avx2,fma"), always_inline)) static inline __m256
widen8_avx2(const int8_t *p)
{
    return _mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

__attribute__((target("avx2,fma"))) static void
rows1_avx2(float *out, const int8_t *q, const float *scale, const float *x,
           size_t cols, size_t r0, size_t r1)
{
    for (size_t r = r0; r < r1; r++) {
        const int8_t *qr = q + r * cols;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        size_t j = 0;
        for (; j + 32 <= cols; j += 32) {
            a0 = _mm256_fmadd_ps(widen8_avx2(qr + j), _mm256_loadu_ps(x + j),
                                 a0);
            a1 = _mm256_fmadd_ps(widen8_avx2(qr + j + 8),
                                 _mm256_loadu_ps(x + j + 8), a1);
            a2 = _mm256_fmadd_ps(widen8_avx2(qr + j + 16),
                                 _mm256_loadu_ps(x + j + 16), a2);
            a3 = _mm256_fmadd_ps(widen8_avx2(qr + j + 24),
                                 _mm256_loadu_ps(x + j + 24), a3);
        }
        for (; j + 8 <= cols; j += 8)
            a0 = _mm256_fmadd_ps(widen8_avx2(qr + j), _mm256_loadu_ps(x + j),
                                 a0);
        float s = slm__hsum_avx2(
            _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; j < cols; j++)
            s += (float)qr[j] * x[j];
        out[r] = s * scale[r];
    }
}

__attribute__((target("avx2,fma"), always_inline)) static inline void
dot_avx2(const int nb, float *out, size_t ldo, const int8_t *q,
         const float *scale, const float *x, size_t cols, size_t r0, size_t r1)
{
    for (size_t r = r0; r < r1; r++) {
        const int8_t *qr = q + r * cols;
        __m256 a0[Q8_DOT_MAX], a1[Q8_DOT_MAX];
        for (int b = 0; b < nb; b++) {
            a0[b] = _mm256_setzero_ps();
            a1[b] = _mm256_setzero_ps();
        }
        size_t j = 0;
        for (; j + 16 <= cols; j += 16) {
            __m256 w0 = widen8_avx2(qr + j);
            __m256 w1 = widen8_avx2(qr + j + 8);
            for (int b = 0; b < nb; b++) {
                const float *xb = x + (size_t)b * cols + j;
                a0[b] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xb), a0[b]);
                a1[b] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xb + 8), a1[b]);
            }
        }
        float s[Q8_DOT_MAX];
        for (int b = 0; b < nb; b++)
            s[b] = slm__hsum_avx2(_mm256_add_ps(a0[b], a1[b]));
        for (; j < cols; j++)
            for (int b = 0; b < nb; b++)
                s[b] += (float)qr[j] * x[(size_t)b * cols + j];
        for (int b = 0; b < nb; b++)
            out[(size_t)b * ldo + r] = s[b] * scale[r];
    }
}

__attribute__((target("avx2,fma"))) static void
dots_avx2(float *out, const int8_t *q, const float *scale, const float *x,
          size_t batch, size_t rows, size_t cols, size_t r0, size_t r1)
{
    if (batch == 1) {
        rows1_avx2(out, q, scale, x, cols, r0, r1);
        return;
    }
    DISPATCH_2_4(dot_avx2, batch, out, rows, q, scale, x, cols, r0, r1)
}

/* out(mr, 16; lanes masked by m0, m1) (+)= (x(mr, kc) @ wp(kc, 16)) * (s0,
 * s1), prefetching the next block one row every 32 k, as in matmul.c. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
tile_avx2(const int mr, size_t kc, const int8_t *wp, const float *x, size_t ldx,
          float *out, size_t ldo, __m256 s0, __m256 s1, __m256i m0, __m256i m1,
          int accumulate, const int8_t *pf, size_t ldw)
{
    __m256 c0[Q8_MR256], c1[Q8_MR256];
    for (int i = 0; i < mr; i++) {
        c0[i] = _mm256_setzero_ps();
        c1[i] = _mm256_setzero_ps();
    }
    for (size_t k = 0; k < kc; k++) {
        if (pf && (k & 31) == 0 && (k >> 5) < Q8_NR256) {
            const char *p = (const char *)(pf + (k >> 5) * ldw);
            for (int l = 0; l < Q8_KC / 64; l++)
                _mm_prefetch(p + 64 * l, _MM_HINT_T0);
        }
        __m256 w0 = widen8_avx2(wp + k * Q8_NR256);
        __m256 w1 = widen8_avx2(wp + k * Q8_NR256 + 8);
        for (int i = 0; i < mr; i++) {
            __m256 xi = _mm256_broadcast_ss(x + (size_t)i * ldx + k);
            c0[i] = _mm256_fmadd_ps(w0, xi, c0[i]);
            c1[i] = _mm256_fmadd_ps(w1, xi, c1[i]);
        }
    }
    for (int i = 0; i < mr; i++) {
        float *o = out + (size_t)i * ldo;
        c0[i] = _mm256_mul_ps(c0[i], s0);
        c1[i] = _mm256_mul_ps(c1[i], s1);
        if (accumulate) {
            c0[i] = _mm256_add_ps(c0[i], _mm256_maskload_ps(o, m0));
            c1[i] = _mm256_add_ps(c1[i], _mm256_maskload_ps(o + 8, m1));
        }
        _mm256_maskstore_ps(o, m0, c0[i]);
        _mm256_maskstore_ps(o + 8, m1, c1[i]);
    }
}

/* Lanes 0..n-1 of a mask for _mm256_maskload_ps / maskstore_ps. */
__attribute__((target("avx2,fma"))) static inline __m256i lanes_avx2(size_t n)
{
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 8 ? n : 8)), idx);
}

__attribute__((target("avx2,fma"))) static void
panels_avx2(float *out, const int8_t *q, const float *scale, const float *x,
            size_t batch, size_t rows, size_t cols, size_t r0, size_t r1)
{
    int8_t wp[Q8_KC * Q8_NR256] __attribute__((aligned(64)));
    for (size_t k0 = 0; k0 < cols; k0 += Q8_KC) {
        size_t kc = min_size(Q8_KC, cols - k0);
        int acc = k0 > 0;
        const float *xk = x + k0;
        for (size_t r = r0; r < r1; r += Q8_NR256) {
            size_t nrv = min_size(Q8_NR256, r1 - r);
            __m256i m0 = lanes_avx2(nrv);
            __m256i m1 = lanes_avx2(nrv > 8 ? nrv - 8 : 0);
            __m256 s0 = _mm256_maskload_ps(scale + r, m0);
            __m256 s1 = _mm256_maskload_ps(scale + r + 8, m1);
            const int8_t *next = NULL;
            if (r + Q8_NR256 < r1)
                next = q + (r + Q8_NR256) * cols + k0;
            else if (k0 + Q8_KC < cols)
                next = q + r0 * cols + k0 + Q8_KC;
            pack_q8(wp, q + r * cols + k0, cols, nrv, kc, Q8_NR256);
            float *o = out + r;
            size_t b = 0;
            for (; b + Q8_MR256 <= batch; b += Q8_MR256) {
                tile_avx2(Q8_MR256, kc, wp, xk + b * cols, cols, o + b * rows,
                          rows, s0, s1, m0, m1, acc, next, cols);
                next = NULL;
            }
            DISPATCH_1_5(tile_avx2, batch - b, kc, wp, xk + b * cols, cols,
                         o + b * rows, rows, s0, s1, m0, m1, acc, next, cols)
        }
    }
}
_Static_assert(Q8_MR256 == 6, "the tail of a batch is one group of 1..5");
#endif

static size_t row_grain(slm__isa isa, size_t batch, size_t cols)
{
#ifdef SLM_HAVE_X86
    if (!use_dot(batch, cols) && isa == SLM__ISA_AVX512)
        return Q8_NR512;
    if (!use_dot(batch, cols) && isa == SLM__ISA_AVX2)
        return Q8_NR256;
#endif
    (void)isa;
    (void)batch;
    (void)cols;
    return 1;
}

static void q8_rows(slm__isa isa, float *out, const int8_t *q,
                    const float *scale, const float *x, size_t batch,
                    size_t rows, size_t cols, size_t r0, size_t r1)
{
#ifdef SLM_HAVE_X86
    if (isa == SLM__ISA_AVX512) {
        if (use_dot(batch, cols))
            dots_avx512(out, q, scale, x, batch, rows, cols, r0, r1);
        else
            panels_avx512(out, q, scale, x, batch, rows, cols, r0, r1);
        return;
    }
    if (isa == SLM__ISA_AVX2) {
        if (use_dot(batch, cols))
            dots_avx2(out, q, scale, x, batch, rows, cols, r0, r1);
        else
            panels_avx2(out, q, scale, x, batch, rows, cols, r0, r1);
        return;
    }
#endif
    rows_scalar(out, q, scale, x, batch, rows, cols, r0, r1);
}

void slm_cpu_matmul_q8(float *out, const int8_t *q, const float *scale,
                       const float *x, size_t batch, size_t rows, size_t cols)
{
    if (batch == 0 || rows == 0)
        return;
    if (cols == 0) {
        for (size_t i = 0; i < batch * rows; i++)
            out[i] = 0.0f;
        return;
    }
    slm__isa isa = slm__cpu_isa_level();
    if (batch * rows * cols < Q8_SERIAL_MAX || omp_get_max_threads() == 1) {
        q8_rows(isa, out, q, scale, x, batch, rows, cols, 0, rows);
        return;
    }
    size_t grain = row_grain(isa, batch, cols);
    size_t per_chunk = Q8_CHUNK_BYTES / cols / grain;
    if (grain > 1)
        per_chunk = Q8_CHUNK_PANELS;
    size_t chunk = (per_chunk ? per_chunk : 1) * grain; /* rows */
    size_t n_chunks = (rows + chunk - 1) / chunk;
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t c = 0; c < n_chunks; c++) {
        size_t r0 = c * chunk;
        q8_rows(isa, out, q, scale, x, batch, rows, cols, r0,
                min_size(r0 + chunk, rows));
    }
}
