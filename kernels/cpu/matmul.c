/*
 * kernels/cpu/matmul.c - out = x @ W^T for a batch of tokens, float32 or
 * 16-bit (bfloat16, IEEE half) weights; see kernels.h.
 *
 * Three regimes:
 *   - 1 token: slm_cpu_matvec, bound by memory bandwidth.
 *   - 2..4 tokens whose x fits in L1 (DOT_X_MAX): still bound by memory
 *     bandwidth. Each weight row is streamed once, as in matvec, and dotted
 *     with every token's x. Software prefetch runs DOT_PREFETCH bytes ahead
 *     of the row: with several x loads per weight load, the hardware
 *     prefetcher alone left the load queue full of L1 hits waiting behind
 *     DRAM misses (2 tokens: 44 GB/s with it, 39 without; 4 tokens: 31
 *     against 21, one thread, against matvec's 58).
 *   - more: bound by arithmetic. A small GEMM in the manner of GotoBLAS/BLIS:
 *
 *       for each chunk of 4 panels of NR weight rows (handed out to threads):
 *         for each block of KC columns:
 *           for each panel of the chunk:
 *             pack W[panel, block] transposed, as (KC, NR), so that one
 *             aligned vector load gives a column of the panel;
 *             for each group of MR tokens:
 *               micro-kernel: an MR x NR tile of out in registers, k
 *               innermost; per k, NR/16 loads of the packed panel, MR
 *               broadcasts of x[b][k] and MR * NR/16 FMAs; then the tile is
 *               stored (first block) or added to out (later blocks).
 *
 *     The packed panel stays in L1 while it is used against every token, so
 *     W is read from memory once per call. x is read in place (no packing):
 *     MR rows of it, KC floats each; one broadcast per NR/16 FMAs. The block
 *     of x (batch x KC floats) stays in L2 across the chunk's panels, and
 *     the chunk's out (batch x 4 NR floats) across the column blocks. The
 *     first micro-kernel of each block prefetches the next block (one row of
 *     it every 8 k): packing alone would read 32 short row segments from
 *     DRAM a few misses at a time, with the FMA units idle. That doubled 8
 *     tokens' throughput from DRAM and added 40 % at 64.
 *
 * Sizes, on a 2-vCPU Zen 5 (48 KiB L1, 1 MiB L2 per core, two 512-bit FMA
 * pipes): AVX-512 NR = 32 (two zmm), MR = 12: 24 accumulators, 2 loads and
 * 12 broadcasts per 24 FMAs; KC = 256 (a 32 KiB panel). MR = 8 and 14 were
 * no better. AVX2 NR = 16, MR = 6: 12 accumulators of the 16 ymm registers.
 * Measurements: bench/bench_matmul.c.
 *
 * Work is handed to threads in chunks (of panels, or of rows for the dot
 * path) from a shared counter rather than split evenly up front: on a host
 * shared with other work, one slowed thread would otherwise hold the whole
 * call back.
 *
 * Summation order: in the GEMM, each output is one chain of FMAs per column
 * block, the blocks added in order; in the dot path, two interleaved partial
 * sums per vector lane, reduced at the end.
 *
 * 16-bit weights go through the same loops: every load of W widens 8 or 16
 * values to float32 in registers (bfloat16: zero-extend and shift left 16,
 * exact; half: vcvtph2ps, exact), so x, the products and the sums stay
 * float32 and the result is the float32 product with the widened weights.
 * The dot path (batch 1 included: decode) streams half the bytes, which is
 * what it is bound by; the widening costs one or two vector operations per
 * 8 or 16 weights, beside the FMAs. The GEMM widens while it packs a panel,
 * which it does anyway, and its micro-kernel is unchanged. The AVX-512 BF16
 * dot instruction (vdpbf16ps) is not used: it needs x rounded to bfloat16,
 * an activation error float32 weights do not have, for a loop that is bound
 * by memory, not arithmetic.
 */
#include "kernels/kernels.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/isa.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SLM_HAVE_X86 1
#endif

#define MM_KC    256
#define MM_MR512 12
#define MM_NR512 32
#define MM_MR256 6
#define MM_NR256 16

/* The dot path: at most this many tokens, whose x (batch * cols floats)
 * takes at most this many bytes, beside the weight stream in a 48 KiB L1.
 * Past either, the GEMM was faster (4 tokens of 5632 columns: 29 GB/s
 * against 19). */
#define DOT_MAX_BATCH 4
#define DOT_X_MAX     ((size_t)32 * 1024)
/* How far ahead of the weight row the dot path prefetches: 8 KiB was best
 * of 4, 8 and 16 KiB for 2048 and 1024 columns. */
#define DOT_PREFETCH 8192

/* Below this many multiply-adds a thread team costs more than it saves
 * (as in matvec.c). */
#define MATMUL_SERIAL_MAX ((size_t)256 * 1024)
/* A chunk of work handed to a thread covers about this many weight bytes:
 * long enough to stream, short enough to balance. */
#define CHUNK_BYTES ((size_t)256 * 1024)
/* In the GEMM, a chunk is this many panels: the block of x is read from
 * L3 once per chunk and per column block. 4 panels gave 3-5 % over 1 at
 * batch 128 (2 threads, 5632 x 2048 and 2048 x 5632); 8, no more. */
#define GEMM_CHUNK_PANELS 4

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* Batch 1 always streams (float32's goes to slm_cpu_matvec first): the GEMM
 * would spend a transpose per weight on one token. */
static int use_dot(size_t batch, size_t cols)
{
    return batch == 1 || (batch <= DOT_MAX_BATCH &&
                          batch * cols * sizeof(float) <= DOT_X_MAX);
}

/* The element type of W. A compile-time constant in every hot loop: the
 * loops are always_inline and instantiated once per type. */
enum { WT_F32, WT_BF16, WT_F16 };

static size_t wt_bytes(int wt)
{
    return wt == WT_F32 ? sizeof(float) : sizeof(uint16_t);
}

/* Element i of W as a float (exact for every type). */
static inline float w_at(const int wt, const void *w, size_t i)
{
    if (wt == WT_F32)
        return ((const float *)w)[i];
    float f;
    if (wt == WT_BF16)
        slm_cpu_bf16_to_f32(&f, (const uint16_t *)w + i, 1);
    else
        slm_cpu_f16_to_f32(&f, (const uint16_t *)w + i, 1);
    return f;
}

/* Row r of W(rows, cols), in bytes. */
static inline const void *w_row(const int wt, const void *w, size_t r,
                                size_t cols)
{
    return (const char *)w + r * cols * wt_bytes(wt);
}

/* Portable fallback: for each weight row, every token's dot product, so the
 * row is read from memory once and from cache batch - 1 times. */
static void rows_scalar_f32(float *out, const float *w, const float *x,
                            size_t batch, size_t rows, size_t cols, size_t r0,
                            size_t r1)
{
    for (size_t r = r0; r < r1; r++) {
        const float *wr = w + r * cols;
        for (size_t b = 0; b < batch; b++) {
            const float *xb = x + b * cols;
            float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
            size_t j = 0;
            for (; j + 4 <= cols; j += 4) {
                s0 += wr[j] * xb[j];
                s1 += wr[j + 1] * xb[j + 1];
                s2 += wr[j + 2] * xb[j + 2];
                s3 += wr[j + 3] * xb[j + 3];
            }
            for (; j < cols; j++)
                s0 += wr[j] * xb[j];
            out[b * rows + r] = (s0 + s1) + (s2 + s3);
        }
    }
}

/* The fallback for 16-bit W: each row widened into a float row on the
 * stack, a block of columns at a time, then the float loop on it. */
static void rows_scalar(const int wt, float *out, const void *w, const float *x,
                        size_t batch, size_t rows, size_t cols, size_t r0,
                        size_t r1)
{
    if (wt == WT_F32) {
        rows_scalar_f32(out, w, x, batch, rows, cols, r0, r1);
        return;
    }
    enum { BLOCK = 512 };
    float wf[BLOCK];
    for (size_t r = r0; r < r1; r++) {
        const uint16_t *wr = w_row(wt, w, r, cols);
        for (size_t b = 0; b < batch; b++)
            out[b * rows + r] = 0.0f;
        for (size_t k0 = 0; k0 < cols; k0 += BLOCK) {
            size_t kc = cols - k0 < BLOCK ? cols - k0 : BLOCK;
            if (wt == WT_BF16)
                slm_cpu_bf16_to_f32(wf, wr + k0, kc);
            else
                slm_cpu_f16_to_f32(wf, wr + k0, kc);
            for (size_t b = 0; b < batch; b++) {
                const float *xb = x + b * cols + k0;
                float s0 = 0.0f, s1 = 0.0f;
                size_t j = 0;
                for (; j + 2 <= kc; j += 2) {
                    s0 += wf[j] * xb[j];
                    s1 += wf[j + 1] * xb[j + 1];
                }
                for (; j < kc; j++)
                    s0 += wf[j] * xb[j];
                out[b * rows + r] += s0 + s1;
            }
        }
    }
}

#ifdef SLM_HAVE_X86

/* The batch sizes each kernel is compiled for (SLM__DISPATCH_CASE). */
#define DISPATCH_1_4(fn, nb, ...)                                              \
    switch (nb) {                                                              \
        SLM__DISPATCH_CASE(fn, 1, __VA_ARGS__)                                 \
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
_Static_assert(DOT_MAX_BATCH == 4, "the dot path dispatches 1..4 tokens");

/* ---- AVX-512 ------------------------------------------------------------ */

/* 16 elements of W from element i on, as floats. */
__attribute__((target("avx512f"), always_inline)) static inline __m512
load_avx512(const int wt, const void *w, size_t i)
{
    if (wt == WT_F32)
        return _mm512_loadu_ps((const float *)w + i);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
    if (wt == WT_BF16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/* Elements i..i+n-1 (n < 16) of W, the other lanes zero: masked for float
 * (masked-off lanes are neither read nor faulted on), through a small copy
 * for 16-bit (a masked 16-bit load needs AVX-512 BW). */
__attribute__((target("avx512f"), always_inline)) static inline __m512
load_tail_avx512(const int wt, const void *w, size_t i, size_t n)
{
    if (wt == WT_F32)
        return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u),
                                     (const float *)w + i);
    uint16_t tmp[16] = {0};
    memcpy(tmp, (const uint16_t *)w + i, n * sizeof *tmp);
    return load_avx512(wt, tmp, 0);
}

/* out[b][r] = W[r] . x[b] for b < nb, r in [r0, r1). Two accumulators per
 * token keep at least four FMA chains in flight for nb >= 2. */
__attribute__((target("avx512f"), always_inline)) static inline void
dot_avx512(const int nb, const int wt, float *out, size_t ldo, const void *w,
           const float *x, size_t cols, size_t r0, size_t r1)
{
    for (size_t r = r0; r < r1; r++) {
        const void *wr = w_row(wt, w, r, cols);
        const char *wb = wr;
        __m512 a0[DOT_MAX_BATCH], a1[DOT_MAX_BATCH];
        for (int b = 0; b < nb; b++) {
            a0[b] = _mm512_setzero_ps();
            a1[b] = _mm512_setzero_ps();
        }
        size_t j = 0;
        for (; j + 32 <= cols; j += 32) {
            /* A hint past the end of W is harmless: prefetches never
             * fault. */
            const char *at = wb + j * wt_bytes(wt);
            _mm_prefetch(at + DOT_PREFETCH, _MM_HINT_T0);
            if (wt == WT_F32) /* 128 bytes per step; 64 for 16-bit */
                _mm_prefetch(at + DOT_PREFETCH + 64, _MM_HINT_T0);
            __m512 w0 = load_avx512(wt, wr, j);
            __m512 w1 = load_avx512(wt, wr, j + 16);
            for (int b = 0; b < nb; b++) {
                const float *xb = x + (size_t)b * cols + j;
                a0[b] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xb), a0[b]);
                a1[b] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xb + 16), a1[b]);
            }
        }
        if (j + 16 <= cols) {
            __m512 w0 = load_avx512(wt, wr, j);
            for (int b = 0; b < nb; b++)
                a0[b] = _mm512_fmadd_ps(
                    w0, _mm512_loadu_ps(x + (size_t)b * cols + j), a0[b]);
            j += 16;
        }
        if (j < cols) {
            __mmask16 m = (__mmask16)((1u << (cols - j)) - 1u);
            __m512 w0 = load_tail_avx512(wt, wr, j, cols - j);
            for (int b = 0; b < nb; b++)
                a1[b] = _mm512_fmadd_ps(
                    w0, _mm512_maskz_loadu_ps(m, x + (size_t)b * cols + j),
                    a1[b]);
        }
        for (int b = 0; b < nb; b++)
            out[(size_t)b * ldo + r] =
                _mm512_reduce_add_ps(_mm512_add_ps(a0[b], a1[b]));
    }
}

/* One token, 16-bit W: as matvec.c's loop, one row at a time with four
 * independent accumulators over 64 weights per step and no software
 * prefetch - one sequential stream per thread, which the hardware
 * prefetcher follows best. The dot loop above (two accumulators,
 * prefetch) streamed 16-bit weights at 0.78 of float32's bytes per second
 * on one core; this one at 0.94 of it (a 185 MB bf16 set of 5632 x 2048
 * matrices from DRAM against matvec on the float32 one). */
__attribute__((target("avx512f"), always_inline)) static inline void
one_avx512(const int wt, float *out, const void *w, const float *x, size_t cols,
           size_t r0, size_t r1)
{
    for (size_t r = r0; r < r1; r++) {
        const void *wr = w_row(wt, w, r, cols);
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        size_t j = 0;
        for (; j + 64 <= cols; j += 64) {
            a0 = _mm512_fmadd_ps(load_avx512(wt, wr, j), _mm512_loadu_ps(x + j),
                                 a0);
            a1 = _mm512_fmadd_ps(load_avx512(wt, wr, j + 16),
                                 _mm512_loadu_ps(x + j + 16), a1);
            a2 = _mm512_fmadd_ps(load_avx512(wt, wr, j + 32),
                                 _mm512_loadu_ps(x + j + 32), a2);
            a3 = _mm512_fmadd_ps(load_avx512(wt, wr, j + 48),
                                 _mm512_loadu_ps(x + j + 48), a3);
        }
        for (; j + 16 <= cols; j += 16)
            a0 = _mm512_fmadd_ps(load_avx512(wt, wr, j), _mm512_loadu_ps(x + j),
                                 a0);
        if (j < cols) {
            __mmask16 m = (__mmask16)((1u << (cols - j)) - 1u);
            a1 = _mm512_fmadd_ps(load_tail_avx512(wt, wr, j, cols - j),
                                 _mm512_maskz_loadu_ps(m, x + j), a1);
        }
        out[r] = _mm512_reduce_add_ps(
            _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
}

/* One token, bfloat16 W, with x split into its even and odd elements
 * (xe[i] = x[2i], xo[i] = x[2i + 1]; deinterleave_x): each 32-bit lane of a
 * load holds two weights, the even one's bits in its low half, so a shift
 * left by 16 gives the even weights as floats and a mask of the high half
 * the odd ones - one in-lane operation each where widening 16 values
 * (vpmovzxwd) crosses lanes. A row's sum is then over the same products in
 * another order. Batch-1 decode of tinyllama-1.1b in bfloat16, 2 threads:
 * 0.89 of the bandwidth limit this way, 0.78-0.80 widening (BENCHMARKS.md). */
__attribute__((target("avx512f"))) static void
one_bf16_avx512(float *out, const uint16_t *w, const float *x, const float *xe,
                const float *xo, size_t cols, size_t r0, size_t r1)
{
    const __m512i high = _mm512_set1_epi32((int)0xffff0000u);
    for (size_t r = r0; r < r1; r++) {
        const uint16_t *wr = w + r * cols;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        size_t j = 0;
        for (; j + 64 <= cols; j += 64) {
            __m512i v0 = _mm512_loadu_si512(wr + j);
            __m512i v1 = _mm512_loadu_si512(wr + j + 32);
            a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v0, 16)),
                                 _mm512_loadu_ps(xe + j / 2), a0);
            a1 =
                _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v0, high)),
                                _mm512_loadu_ps(xo + j / 2), a1);
            a2 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v1, 16)),
                                 _mm512_loadu_ps(xe + j / 2 + 16), a2);
            a3 =
                _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v1, high)),
                                _mm512_loadu_ps(xo + j / 2 + 16), a3);
        }
        float s = _mm512_reduce_add_ps(
            _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
        for (; j < cols; j++)
            s += w_at(WT_BF16, wr, j) * x[j];
        out[r] = s;
    }
}

__attribute__((target("avx512f"))) static void
dots_avx512(int wt, float *out, const void *w, const float *x, size_t batch,
            size_t rows, size_t cols, size_t r0, size_t r1)
{
    if (batch == 1 && wt == WT_BF16)
        one_avx512(WT_BF16, out, w, x, cols, r0, r1);
    else if (batch == 1 && wt == WT_F16)
        one_avx512(WT_F16, out, w, x, cols, r0, r1);
    else if (wt == WT_BF16)
        DISPATCH_1_4(dot_avx512, batch, WT_BF16, out, rows, w, x, cols, r0, r1)
    else if (wt == WT_F16)
        DISPATCH_1_4(dot_avx512, batch, WT_F16, out, rows, w, x, cols, r0, r1)
    else
        DISPATCH_1_4(dot_avx512, batch, WT_F32, out, rows, w, x, cols, r0, r1)
}

/* In-register transpose of 16 rows of 16 floats: lane j of r[i] becomes
 * lane i of r[j]. Four rounds of 16 two-input shuffles. */
__attribute__((target("avx512f"), always_inline)) static inline void
transpose16_avx512(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* Then 128-bit lane L of r[g + c] holds rows g..g+3 of column 4L + c. */
    for (int g = 0; g < 16; g += 4) {
        __m512d t0 = _mm512_castps_pd(t[g]), t1 = _mm512_castps_pd(t[g + 1]);
        __m512d t2 = _mm512_castps_pd(t[g + 2]);
        __m512d t3 = _mm512_castps_pd(t[g + 3]);
        r[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        r[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        r[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        r[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    /* Gather the four row groups' 128-bit lanes of each column. */
    for (int c = 0; c < 4; c++) {
        t[c] = _mm512_shuffle_f32x4(r[c], r[c + 4], 0x88);
        t[c + 4] = _mm512_shuffle_f32x4(r[c], r[c + 4], 0xdd);
        t[c + 8] = _mm512_shuffle_f32x4(r[c + 8], r[c + 12], 0x88);
        t[c + 12] = _mm512_shuffle_f32x4(r[c + 8], r[c + 12], 0xdd);
    }
    for (int c = 0; c < 4; c++) {
        r[c] = _mm512_shuffle_f32x4(t[c], t[c + 8], 0x88);
        r[c + 8] = _mm512_shuffle_f32x4(t[c], t[c + 8], 0xdd);
        r[c + 4] = _mm512_shuffle_f32x4(t[c + 4], t[c + 12], 0x88);
        r[c + 12] = _mm512_shuffle_f32x4(t[c + 4], t[c + 12], 0xdd);
    }
}

/* dst(kc, 32) = w(nrv, kc)^T as floats, rows nrv..31 zero; row i of w
 * starts at element i * ldw. dst is 64-byte aligned. */
__attribute__((target("avx512f"), always_inline)) static inline void
pack_avx512(const int wt, float *dst, const void *w, size_t ldw, size_t nrv,
            size_t kc)
{
    size_t k = 0;
    if (nrv == MM_NR512) {
        for (; k + 16 <= kc; k += 16) {
            for (size_t h = 0; h < MM_NR512; h += 16) {
                __m512 r[16];
                for (size_t i = 0; i < 16; i++)
                    r[i] = load_avx512(wt, w, (h + i) * ldw + k);
                transpose16_avx512(r);
                for (size_t j = 0; j < 16; j++)
                    _mm512_store_ps(dst + (k + j) * MM_NR512 + h, r[j]);
            }
        }
    }
    for (; k < kc; k++) {
        size_t i = 0;
        for (; i < nrv; i++)
            dst[k * MM_NR512 + i] = w_at(wt, w, i * ldw + k);
        for (; i < MM_NR512; i++)
            dst[k * MM_NR512 + i] = 0.0f;
    }
}

/* out(mr, 32; lanes masked by m0, m1) (+)= x(mr, kc) @ wp(kc, 32), mr a
 * compile-time constant at each call site. pf (NULL for none) is the next
 * block to pack, 32 rows at stride ldw, prefetched here, one row (16 lines)
 * every 8 k, while the FMAs keep the core busy. */
__attribute__((target("avx512f"), always_inline)) static inline void
tile_avx512(const int mr, size_t kc, const float *wp, const float *x,
            size_t ldx, float *out, size_t ldo, __mmask16 m0, __mmask16 m1,
            int accumulate, const char *pf, size_t ldw)
{
    __m512 c0[MM_MR512], c1[MM_MR512];
    for (int i = 0; i < mr; i++) {
        c0[i] = _mm512_setzero_ps();
        c1[i] = _mm512_setzero_ps();
    }
    for (size_t k = 0; k < kc; k++) {
        if (pf && (k & 7) == 0 && (k >> 3) < MM_NR512) {
            const char *p = pf + (k >> 3) * ldw; /* ldw in bytes here */
            for (int l = 0; l < 16; l++)
                _mm_prefetch(p + 64 * l, _MM_HINT_T0);
        }
        __m512 w0 = _mm512_load_ps(wp + k * MM_NR512);
        __m512 w1 = _mm512_load_ps(wp + k * MM_NR512 + 16);
        for (int i = 0; i < mr; i++) {
            __m512 xi = _mm512_set1_ps(x[(size_t)i * ldx + k]);
            c0[i] = _mm512_fmadd_ps(w0, xi, c0[i]);
            c1[i] = _mm512_fmadd_ps(w1, xi, c1[i]);
        }
    }
    for (int i = 0; i < mr; i++) {
        float *o = out + (size_t)i * ldo;
        if (accumulate) {
            c0[i] = _mm512_add_ps(c0[i], _mm512_maskz_loadu_ps(m0, o));
            c1[i] = _mm512_add_ps(c1[i], _mm512_maskz_loadu_ps(m1, o + 16));
        }
        _mm512_mask_storeu_ps(o, m0, c0[i]);
        _mm512_mask_storeu_ps(o + 16, m1, c1[i]);
    }
}

__attribute__((target("avx512f"), always_inline)) static inline void
panels_avx512(const int wt, float *out, const void *w, const float *x,
              size_t batch, size_t rows, size_t cols, size_t r0, size_t r1)
{
    const size_t ldb = cols * wt_bytes(wt); /* bytes per row of w */
    /* 32 KiB on the thread's stack (OpenMP threads have megabytes). */
    float wp[MM_KC * MM_NR512] __attribute__((aligned(64)));
    /* Column blocks outside, panels inside: the block of x (batch x KC)
     * stays in L2 while every panel of the range uses it. */
    for (size_t k0 = 0; k0 < cols; k0 += MM_KC) {
        size_t kc = min_size(MM_KC, cols - k0);
        int acc = k0 > 0;
        const float *xk = x + k0;
        for (size_t r = r0; r < r1; r += MM_NR512) {
            size_t nrv = min_size(MM_NR512, r1 - r);
            __mmask16 m0 = (__mmask16)(nrv >= 16 ? 0xffffu : (1u << nrv) - 1u);
            __mmask16 m1 = (__mmask16)(nrv >= 32   ? 0xffffu
                                       : nrv <= 16 ? 0u
                                                   : (1u << (nrv - 16)) - 1u);
            /* The block packed after this one: the next panel's, else the
             * first panel's next columns. */
            const char *next = NULL, *wb = w;
            if (r + MM_NR512 < r1)
                next = wb + (r + MM_NR512) * ldb + k0 * wt_bytes(wt);
            else if (k0 + MM_KC < cols)
                next = wb + r0 * ldb + (k0 + MM_KC) * wt_bytes(wt);
            pack_avx512(wt, wp, wb + r * ldb + k0 * wt_bytes(wt), cols, nrv,
                        kc);
            float *o = out + r;
            size_t b = 0;
            for (; b + MM_MR512 <= batch; b += MM_MR512) {
                tile_avx512(MM_MR512, kc, wp, xk + b * cols, cols, o + b * rows,
                            rows, m0, m1, acc, next, ldb);
                next = NULL;
            }
            /* The last group: split so each part is 1..8 tokens. */
            size_t left = batch - b;
            if (left > 8) {
                DISPATCH_1_8(tile_avx512, left - 8, kc, wp, xk + b * cols, cols,
                             o + b * rows, rows, m0, m1, acc, next, ldb)
                next = NULL;
                b += left - 8;
                left = 8;
            }
            DISPATCH_1_8(tile_avx512, left, kc, wp, xk + b * cols, cols,
                         o + b * rows, rows, m0, m1, acc, next, ldb)
        }
    }
}

/* One copy of the GEMM per weight type. */
__attribute__((target("avx512f"))) static void
gemm_avx512(int wt, float *out, const void *w, const float *x, size_t batch,
            size_t rows, size_t cols, size_t r0, size_t r1)
{
    if (wt == WT_BF16)
        panels_avx512(WT_BF16, out, w, x, batch, rows, cols, r0, r1);
    else if (wt == WT_F16)
        panels_avx512(WT_F16, out, w, x, batch, rows, cols, r0, r1);
    else
        panels_avx512(WT_F32, out, w, x, batch, rows, cols, r0, r1);
}
_Static_assert(MM_MR512 >= 8 && MM_MR512 <= 16,
               "the tail of a batch is split in two groups of 1..8");

/* ---- AVX2 (with F16C, which every AVX2 CPU has; isa.c checks) ---------- */

/* 8 elements of W from element i on, as floats. */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline __m256
load_avx2(const int wt, const void *w, size_t i)
{
    if (wt == WT_F32)
        return _mm256_loadu_ps((const float *)w + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    if (wt == WT_BF16)
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void
dot_avx2(const int nb, const int wt, float *out, size_t ldo, const void *w,
         const float *x, size_t cols, size_t r0, size_t r1)
{
    for (size_t r = r0; r < r1; r++) {
        const void *wr = w_row(wt, w, r, cols);
        const char *wb = wr;
        __m256 a0[DOT_MAX_BATCH], a1[DOT_MAX_BATCH];
        for (int b = 0; b < nb; b++) {
            a0[b] = _mm256_setzero_ps();
            a1[b] = _mm256_setzero_ps();
        }
        size_t j = 0;
        for (; j + 16 <= cols; j += 16) {
            _mm_prefetch(wb + j * wt_bytes(wt) + DOT_PREFETCH, _MM_HINT_T0);
            __m256 w0 = load_avx2(wt, wr, j);
            __m256 w1 = load_avx2(wt, wr, j + 8);
            for (int b = 0; b < nb; b++) {
                const float *xb = x + (size_t)b * cols + j;
                a0[b] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xb), a0[b]);
                a1[b] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xb + 8), a1[b]);
            }
        }
        float s[DOT_MAX_BATCH];
        for (int b = 0; b < nb; b++)
            s[b] = slm__hsum_avx2(_mm256_add_ps(a0[b], a1[b]));
        for (; j < cols; j++) {
            const float wj = w_at(wt, wr, j);
            for (int b = 0; b < nb; b++)
                s[b] += wj * x[(size_t)b * cols + j];
        }
        for (int b = 0; b < nb; b++)
            out[(size_t)b * ldo + r] = s[b];
    }
}

/* One token, 16-bit W: see one_avx512 (here eight accumulators of 8). */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void
one_avx2(const int wt, float *out, const void *w, const float *x, size_t cols,
         size_t r0, size_t r1)
{
    for (size_t r = r0; r < r1; r++) {
        const void *wr = w_row(wt, w, r, cols);
        __m256 a[8];
        for (int i = 0; i < 8; i++)
            a[i] = _mm256_setzero_ps();
        size_t j = 0;
        for (; j + 64 <= cols; j += 64)
            for (int i = 0; i < 8; i++)
                a[i] = _mm256_fmadd_ps(load_avx2(wt, wr, j + 8 * (size_t)i),
                                       _mm256_loadu_ps(x + j + 8 * (size_t)i),
                                       a[i]);
        for (; j + 8 <= cols; j += 8)
            a[0] = _mm256_fmadd_ps(load_avx2(wt, wr, j), _mm256_loadu_ps(x + j),
                                   a[0]);
        __m256 s0 =
            _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
        __m256 s1 =
            _mm256_add_ps(_mm256_add_ps(a[4], a[5]), _mm256_add_ps(a[6], a[7]));
        float s = slm__hsum_avx2(_mm256_add_ps(s0, s1));
        for (; j < cols; j++)
            s += w_at(wt, wr, j) * x[j];
        out[r] = s;
    }
}

/* One token, bfloat16 W, x split: see one_bf16_avx512. */
__attribute__((target("avx2,fma"))) static void
one_bf16_avx2(float *out, const uint16_t *w, const float *x, const float *xe,
              const float *xo, size_t cols, size_t r0, size_t r1)
{
    const __m256i high = _mm256_set1_epi32((int)0xffff0000u);
    for (size_t r = r0; r < r1; r++) {
        const uint16_t *wr = w + r * cols;
        __m256 a[8];
        for (int i = 0; i < 8; i++)
            a[i] = _mm256_setzero_ps();
        size_t j = 0;
        for (; j + 64 <= cols; j += 64)
            for (int i = 0; i < 4; i++) {
                __m256i v = _mm256_loadu_si256(
                    (const __m256i *)(wr + j + 16 * (size_t)i));
                const size_t h = j / 2 + 8 * (size_t)i;
                a[2 * i] = _mm256_fmadd_ps(
                    _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)),
                    _mm256_loadu_ps(xe + h), a[2 * i]);
                a[2 * i + 1] = _mm256_fmadd_ps(
                    _mm256_castsi256_ps(_mm256_and_si256(v, high)),
                    _mm256_loadu_ps(xo + h), a[2 * i + 1]);
            }
        __m256 s0 =
            _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
        __m256 s1 =
            _mm256_add_ps(_mm256_add_ps(a[4], a[5]), _mm256_add_ps(a[6], a[7]));
        float s = slm__hsum_avx2(_mm256_add_ps(s0, s1));
        for (; j < cols; j++)
            s += w_at(WT_BF16, wr, j) * x[j];
        out[r] = s;
    }
}

__attribute__((target("avx2,fma,f16c"))) static void
dots_avx2(int wt, float *out, const void *w, const float *x, size_t batch,
          size_t rows, size_t cols, size_t r0, size_t r1)
{
    if (batch == 1 && wt == WT_BF16)
        one_avx2(WT_BF16, out, w, x, cols, r0, r1);
    else if (batch == 1 && wt == WT_F16)
        one_avx2(WT_F16, out, w, x, cols, r0, r1);
    else if (wt == WT_BF16)
        DISPATCH_1_4(dot_avx2, batch, WT_BF16, out, rows, w, x, cols, r0, r1)
    else if (wt == WT_F16)
        DISPATCH_1_4(dot_avx2, batch, WT_F16, out, rows, w, x, cols, r0, r1)
    else
        DISPATCH_1_4(dot_avx2, batch, WT_F32, out, rows, w, x, cols, r0, r1)
}

/* In-register transpose of 8 rows of 8 floats. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
transpose8_avx2(__m256 r[8])
{
    __m256 t[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    /* Then 128-bit lane L of r[g + c] holds rows g..g+3 of column 4L + c. */
    for (int g = 0; g < 8; g += 4) {
        r[g] = _mm256_shuffle_ps(t[g], t[g + 2], 0x44);
        r[g + 1] = _mm256_shuffle_ps(t[g], t[g + 2], 0xee);
        r[g + 2] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0x44);
        r[g + 3] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0xee);
    }
    for (int c = 0; c < 4; c++) {
        t[c] = _mm256_permute2f128_ps(r[c], r[c + 4], 0x20);
        t[c + 4] = _mm256_permute2f128_ps(r[c], r[c + 4], 0x31);
    }
    for (int i = 0; i < 8; i++)
        r[i] = t[i];
}

/* dst(kc, 16) = w(nrv, kc)^T as floats, rows nrv..15 zero; row i of w
 * starts at element i * ldw. dst is 32-byte aligned. */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void
pack_avx2(const int wt, float *dst, const void *w, size_t ldw, size_t nrv,
          size_t kc)
{
    size_t k = 0;
    if (nrv == MM_NR256) {
        for (; k + 8 <= kc; k += 8) {
            for (size_t h = 0; h < MM_NR256; h += 8) {
                __m256 r[8];
                for (size_t i = 0; i < 8; i++)
                    r[i] = load_avx2(wt, w, (h + i) * ldw + k);
                transpose8_avx2(r);
                for (size_t j = 0; j < 8; j++)
                    _mm256_store_ps(dst + (k + j) * MM_NR256 + h, r[j]);
            }
        }
    }
    for (; k < kc; k++) {
        size_t i = 0;
        for (; i < nrv; i++)
            dst[k * MM_NR256 + i] = w_at(wt, w, i * ldw + k);
        for (; i < MM_NR256; i++)
            dst[k * MM_NR256 + i] = 0.0f;
    }
}

/* out(mr, 16; lanes masked by m0, m1) (+)= x(mr, kc) @ wp(kc, 16); see
 * tile_avx512 (here one row of the next block every 16 k). */
__attribute__((target("avx2,fma"), always_inline)) static inline void
tile_avx2(const int mr, size_t kc, const float *wp, const float *x, size_t ldx,
          float *out, size_t ldo, __m256i m0, __m256i m1, int accumulate,
          const char *pf, size_t ldw)
{
    __m256 c0[MM_MR256], c1[MM_MR256];
    for (int i = 0; i < mr; i++) {
        c0[i] = _mm256_setzero_ps();
        c1[i] = _mm256_setzero_ps();
    }
    for (size_t k = 0; k < kc; k++) {
        if (pf && (k & 15) == 0 && (k >> 4) < MM_NR256) {
            const char *p = pf + (k >> 4) * ldw; /* ldw in bytes here */
            for (int l = 0; l < 16; l++)
                _mm_prefetch(p + 64 * l, _MM_HINT_T0);
        }
        __m256 w0 = _mm256_load_ps(wp + k * MM_NR256);
        __m256 w1 = _mm256_load_ps(wp + k * MM_NR256 + 8);
        for (int i = 0; i < mr; i++) {
            __m256 xi = _mm256_broadcast_ss(x + (size_t)i * ldx + k);
            c0[i] = _mm256_fmadd_ps(w0, xi, c0[i]);
            c1[i] = _mm256_fmadd_ps(w1, xi, c1[i]);
        }
    }
    for (int i = 0; i < mr; i++) {
        float *o = out + (size_t)i * ldo;
        /* Masked-off lanes are neither read nor written (nor faulted). */
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

__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void
panels_avx2(const int wt, float *out, const void *w, const float *x,
            size_t batch, size_t rows, size_t cols, size_t r0, size_t r1)
{
    const size_t ldb = cols * wt_bytes(wt); /* bytes per row of w */
    float wp[MM_KC * MM_NR256] __attribute__((aligned(32)));
    for (size_t k0 = 0; k0 < cols; k0 += MM_KC) {
        size_t kc = min_size(MM_KC, cols - k0);
        int acc = k0 > 0;
        const float *xk = x + k0;
        for (size_t r = r0; r < r1; r += MM_NR256) {
            size_t nrv = min_size(MM_NR256, r1 - r);
            __m256i m0 = lanes_avx2(nrv);
            __m256i m1 = lanes_avx2(nrv > 8 ? nrv - 8 : 0);
            const char *next = NULL, *wb = w;
            if (r + MM_NR256 < r1)
                next = wb + (r + MM_NR256) * ldb + k0 * wt_bytes(wt);
            else if (k0 + MM_KC < cols)
                next = wb + r0 * ldb + (k0 + MM_KC) * wt_bytes(wt);
            pack_avx2(wt, wp, wb + r * ldb + k0 * wt_bytes(wt), cols, nrv, kc);
            float *o = out + r;
            size_t b = 0;
            for (; b + MM_MR256 <= batch; b += MM_MR256) {
                tile_avx2(MM_MR256, kc, wp, xk + b * cols, cols, o + b * rows,
                          rows, m0, m1, acc, next, ldb);
                next = NULL;
            }
            DISPATCH_1_5(tile_avx2, batch - b, kc, wp, xk + b * cols, cols,
                         o + b * rows, rows, m0, m1, acc, next, ldb)
        }
    }
}

__attribute__((target("avx2,fma,f16c"))) static void
gemm_avx2(int wt, float *out, const void *w, const float *x, size_t batch,
          size_t rows, size_t cols, size_t r0, size_t r1)
{
    if (wt == WT_BF16)
        panels_avx2(WT_BF16, out, w, x, batch, rows, cols, r0, r1);
    else if (wt == WT_F16)
        panels_avx2(WT_F16, out, w, x, batch, rows, cols, r0, r1);
    else
        panels_avx2(WT_F32, out, w, x, batch, rows, cols, r0, r1);
}
_Static_assert(MM_MR256 == 6, "the tail of a batch is one group of 1..5");
#endif

/* Rows per unit of work: the GEMM's panel height, so that threads never
 * split a panel; one row for the dot paths. */
static size_t row_grain(slm__isa isa, size_t batch, size_t cols)
{
#ifdef SLM_HAVE_X86
    if (!use_dot(batch, cols) && isa == SLM__ISA_AVX512)
        return MM_NR512;
    if (!use_dot(batch, cols) && isa == SLM__ISA_AVX2)
        return MM_NR256;
#endif
    (void)isa;
    (void)batch;
    (void)cols;
    return 1;
}

static void matmul_rows(slm__isa isa, int wt, float *out, const void *w,
                        const float *x, size_t batch, size_t rows, size_t cols,
                        size_t r0, size_t r1)
{
#ifdef SLM_HAVE_X86
    if (isa == SLM__ISA_AVX512) {
        if (use_dot(batch, cols))
            dots_avx512(wt, out, w, x, batch, rows, cols, r0, r1);
        else
            gemm_avx512(wt, out, w, x, batch, rows, cols, r0, r1);
        return;
    }
    if (isa == SLM__ISA_AVX2) {
        if (use_dot(batch, cols))
            dots_avx2(wt, out, w, x, batch, rows, cols, r0, r1);
        else
            gemm_avx2(wt, out, w, x, batch, rows, cols, r0, r1);
        return;
    }
#endif
    rows_scalar(wt, out, w, x, batch, rows, cols, r0, r1);
}

/* x(cols) as its even elements then its odd ones, for the bfloat16
 * one-token loops; NULL when out of memory (they then widen instead). */
static float *deinterleave_x(const float *x, size_t cols)
{
    float *xs = malloc((cols + 1) * sizeof *xs);
    if (!xs)
        return NULL;
    const size_t half = cols / 2;
    for (size_t i = 0; i < half; i++) {
        xs[i] = x[2 * i];
        xs[half + i] = x[2 * i + 1];
    }
    return xs;
}

/* One token over rows [r0, r1): the split-x bfloat16 loops when xs is
 * there, else matmul_rows. */
static void one_rows(slm__isa isa, int wt, float *out, const void *w,
                     const float *x, const float *xs, size_t rows, size_t cols,
                     size_t r0, size_t r1)
{
#ifdef SLM_HAVE_X86
    if (xs && isa == SLM__ISA_AVX512) {
        one_bf16_avx512(out, w, x, xs, xs + cols / 2, cols, r0, r1);
        return;
    }
    if (xs && isa == SLM__ISA_AVX2) {
        one_bf16_avx2(out, w, x, xs, xs + cols / 2, cols, r0, r1);
        return;
    }
#endif
    (void)xs;
    matmul_rows(isa, wt, out, w, x, 1, rows, cols, r0, r1);
}

/* Both entry points: W of type wt. A batch of 1 always takes the dot path
 * (float32 has its own, slm_cpu_matvec). */
static void matmul_any(int wt, float *out, const void *w, const float *x,
                       size_t batch, size_t rows, size_t cols)
{
    if (batch == 0 || rows == 0)
        return;
    if (cols == 0) {
        for (size_t i = 0; i < batch * rows; i++)
            out[i] = 0.0f;
        return;
    }
    slm__isa isa = slm__cpu_isa_level();
    if (batch * rows * cols < MATMUL_SERIAL_MAX || omp_get_max_threads() == 1) {
        matmul_rows(isa, wt, out, w, x, batch, rows, cols, 0, rows);
        return;
    }
    if (batch == 1) {
        /* One token is a stream of W: as matvec.c, one contiguous range of
         * rows per thread, which each streams front to back (chunks handed
         * out as threads come free cut every thread's stream into pieces:
         * 2 threads decoding tinyllama-1.1b in bfloat16 read 0.83 of
         * float32's bytes per second that way). */
        float *xs = wt == WT_BF16 ? deinterleave_x(x, cols) : NULL;
#pragma omp parallel
        {
            const size_t nt = (size_t)omp_get_num_threads();
            const size_t t = (size_t)omp_get_thread_num();
            one_rows(isa, wt, out, w, x, xs, rows, cols, rows * t / nt,
                     rows * (t + 1) / nt);
        }
        free(xs);
        return;
    }
    size_t grain = row_grain(isa, batch, cols);
    size_t per_chunk = CHUNK_BYTES / (cols * wt_bytes(wt)) / grain;
    if (grain > 1)
        per_chunk = GEMM_CHUNK_PANELS;
    size_t chunk = (per_chunk ? per_chunk : 1) * grain; /* rows */
    size_t n_chunks = (rows + chunk - 1) / chunk;
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t c = 0; c < n_chunks; c++) {
        size_t r0 = c * chunk;
        matmul_rows(isa, wt, out, w, x, batch, rows, cols, r0,
                    min_size(r0 + chunk, rows));
    }
}

void slm_cpu_matmul(float *out, const float *w, const float *x, size_t batch,
                    size_t rows, size_t cols)
{
    if (batch == 1) {
        slm_cpu_matvec(out, w, x, rows, cols);
        return;
    }
    matmul_any(WT_F32, out, w, x, batch, rows, cols);
}

void slm_cpu_matmul_h16(float *out, const uint16_t *w, slm_half_type type,
                        const float *x, size_t batch, size_t rows, size_t cols)
{
    matmul_any(type == SLM_HALF_F16 ? WT_F16 : WT_BF16, out, w, x, batch, rows,
               cols);
}
