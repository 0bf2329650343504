/*
 * kernels/cpu/matmul.c - out = x @ W^T for a batch of tokens, float32
 * weights; see kernels.h.
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
 */
#include "kernels/kernels.h"

#include <omp.h>

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

static int use_dot(size_t batch, size_t cols)
{
    return batch <= DOT_MAX_BATCH && batch * cols * sizeof(float) <= DOT_X_MAX;
}

/* Portable fallback: for each weight row, every token's dot product, so the
 * row is read from memory once and from cache batch - 1 times. */
static void rows_scalar(float *out, const float *w, const float *x,
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

/* out[b][r] = W[r] . x[b] for b < nb, r in [r0, r1). Two accumulators per
 * token keep at least four FMA chains in flight for nb >= 2. */
__attribute__((target("avx512f"), always_inline)) static inline void
dot_avx512(const int nb, float *out, size_t ldo, const float *w, const float *x,
           size_t cols, size_t r0, size_t r1)
{
    for (size_t r = r0; r < r1; r++) {
        const float *wr = w + r * cols;
        __m512 a0[DOT_MAX_BATCH], a1[DOT_MAX_BATCH];
        for (int b = 0; b < nb; b++) {
            a0[b] = _mm512_setzero_ps();
            a1[b] = _mm512_setzero_ps();
        }
        size_t j = 0;
        for (; j + 32 <= cols; j += 32) {
            /* A hint past the end of W is harmless: prefetches never
             * fault. */
            _mm_prefetch((const char *)(wr + j) + DOT_PREFETCH, _MM_HINT_T0);
            _mm_prefetch((const char *)(wr + j) + DOT_PREFETCH + 64,
                         _MM_HINT_T0);
            __m512 w0 = _mm512_loadu_ps(wr + j);
            __m512 w1 = _mm512_loadu_ps(wr + j + 16);
            for (int b = 0; b < nb; b++) {
                const float *xb = x + (size_t)b * cols + j;
                a0[b] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xb), a0[b]);
                a1[b] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xb + 16), a1[b]);
            }
        }
        if (j + 16 <= cols) {
            __m512 w0 = _mm512_loadu_ps(wr + j);
            for (int b = 0; b < nb; b++)
                a0[b] = _mm512_fmadd_ps(
                    w0, _mm512_loadu_ps(x + (size_t)b * cols + j), a0[b]);
            j += 16;
        }
        if (j < cols) {
            /* Masked-off lanes are neither read nor faulted on. */
            __mmask16 m = (__mmask16)((1u << (cols - j)) - 1u);
            __m512 w0 = _mm512_maskz_loadu_ps(m, wr + j);
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

__attribute__((target("avx512f"))) static void
dots_avx512(float *out, const float *w, const float *x, size_t batch,
            size_t rows, size_t cols, size_t r0, size_t r1)
{
    DISPATCH_1_4(dot_avx512, batch, out, rows, w, x, cols, r0, r1)
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

/* dst(kc, 32) = w(nrv, kc)^T, rows nrv..31 zero. dst is 64-byte aligned. */
__attribute__((target("avx512f"))) static void
pack_avx512(float *dst, const float *w, size_t ldw, size_t nrv, size_t kc)
{
    size_t k = 0;
    if (nrv == MM_NR512) {
        for (; k + 16 <= kc; k += 16) {
            for (size_t h = 0; h < MM_NR512; h += 16) {
                __m512 r[16];
                for (size_t i = 0; i < 16; i++)
                    r[i] = _mm512_loadu_ps(w + (h + i) * ldw + k);
                transpose16_avx512(r);
                for (size_t j = 0; j < 16; j++)
                    _mm512_store_ps(dst + (k + j) * MM_NR512 + h, r[j]);
            }
        }
    }
    for (; k < kc; k++) {
        size_t i = 0;
        for (; i < nrv; i++)
            dst[k * MM_NR512 + i] = w[i * ldw + k];
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
            int accumulate, const float *pf, size_t ldw)
{
    __m512 c0[MM_MR512], c1[MM_MR512];
    for (int i = 0; i < mr; i++) {
        c0[i] = _mm512_setzero_ps();
        c1[i] = _mm512_setzero_ps();
    }
    for (size_t k = 0; k < kc; k++) {
        if (pf && (k & 7) == 0 && (k >> 3) < MM_NR512) {
            const char *p = (const char *)(pf + (k >> 3) * ldw);
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

__attribute__((target("avx512f"))) static void
panels_avx512(float *out, const float *w, const float *x, size_t batch,
              size_t rows, size_t cols, size_t r0, size_t r1)
{
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
            const float *next = NULL;
            if (r + MM_NR512 < r1)
                next = w + (r + MM_NR512) * cols + k0;
            else if (k0 + MM_KC < cols)
                next = w + r0 * cols + k0 + MM_KC;
            pack_avx512(wp, w + r * cols + k0, cols, nrv, kc);
            float *o = out + r;
            size_t b = 0;
            for (; b + MM_MR512 <= batch; b += MM_MR512) {
                tile_avx512(MM_MR512, kc, wp, xk + b * cols, cols, o + b * rows,
                            rows, m0, m1, acc, next, cols);
                next = NULL;
            }
            /* The last group: split so each part is 1..8 tokens. */
            size_t left = batch - b;
            if (left > 8) {
                DISPATCH_1_8(tile_avx512, left - 8, kc, wp, xk + b * cols, cols,
                             o + b * rows, rows, m0, m1, acc, next, cols)
                next = NULL;
                b += left - 8;
                left = 8;
            }
            DISPATCH_1_8(tile_avx512, left, kc, wp, xk + b * cols, cols,
                         o + b * rows, rows, m0, m1, acc, next, cols)
        }
    }
}
_Static_assert(MM_MR512 >= 8 && MM_MR512 <= 16,
               "the tail of a batch is split in two groups of 1..8");

/* ---- AVX2 --------------------------------------------------------------- */

__attribute__((target("avx2,fma"), always_inline)) static inline void
dot_avx2(const int nb, float *out, size_t ldo, const float *w, const float *x,
         size_t cols, size_t r0, size_t r1)
{
    for (size_t r = r0; r < r1; r++) {
        const float *wr = w + r * cols;
        __m256 a0[DOT_MAX_BATCH], a1[DOT_MAX_BATCH];
        for (int b = 0; b < nb; b++) {
            a0[b] = _mm256_setzero_ps();
            a1[b] = _mm256_setzero_ps();
        }
        size_t j = 0;
        for (; j + 16 <= cols; j += 16) {
            _mm_prefetch((const char *)(wr + j) + DOT_PREFETCH, _MM_HINT_T0);
            __m256 w0 = _mm256_loadu_ps(wr + j);
            __m256 w1 = _mm256_loadu_ps(wr + j + 8);
            for (int b = 0; b < nb; b++) {
                const float *xb = x + (size_t)b * cols + j;
                a0[b] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xb), a0[b]);
                a1[b] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xb + 8), a1[b]);
            }
        }
        float s[DOT_MAX_BATCH];
        for (int b = 0; b < nb; b++)
            s[b] = slm__hsum_avx2(_mm256_add_ps(a0[b], a1[b]));
        for (; j < cols; j++)
            for (int b = 0; b < nb; b++)
                s[b] += wr[j] * x[(size_t)b * cols + j];
        for (int b = 0; b < nb; b++)
            out[(size_t)b * ldo + r] = s[b];
    }
}

__attribute__((target("avx2,fma"))) static void
dots_avx2(float *out, const float *w, const float *x, size_t batch, size_t rows,
          size_t cols, size_t r0, size_t r1)
{
    DISPATCH_1_4(dot_avx2, batch, out, rows, w, x, cols, r0, r1)
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

/* dst(kc, 16) = w(nrv, kc)^T, rows nrv..15 zero. dst is 32-byte aligned. */
__attribute__((target("avx2,fma"))) static void
pack_avx2(float *dst, const float *w, size_t ldw, size_t nrv, size_t kc)
{
    size_t k = 0;
    if (nrv == MM_NR256) {
        for (; k + 8 <= kc; k += 8) {
            for (size_t h = 0; h < MM_NR256; h += 8) {
                __m256 r[8];
                for (size_t i = 0; i < 8; i++)
                    r[i] = _mm256_loadu_ps(w + (h + i) * ldw + k);
                transpose8_avx2(r);
                for (size_t j = 0; j < 8; j++)
                    _mm256_store_ps(dst + (k + j) * MM_NR256 + h, r[j]);
            }
        }
    }
    for (; k < kc; k++) {
        size_t i = 0;
        for (; i < nrv; i++)
            dst[k * MM_NR256 + i] = w[i * ldw + k];
        for (; i < MM_NR256; i++)
            dst[k * MM_NR256 + i] = 0.0f;
    }
}

/* out(mr, 16; lanes masked by m0, m1) (+)= x(mr, kc) @ wp(kc, 16); see
 * tile_avx512 (here one row of the next block every 16 k). */
__attribute__((target("avx2,fma"), always_inline)) static inline void
tile_avx2(const int mr, size_t kc, const float *wp, const float *x, size_t ldx,
          float *out, size_t ldo, __m256i m0, __m256i m1, int accumulate,
          const float *pf, size_t ldw)
{
    __m256 c0[MM_MR256], c1[MM_MR256];
    for (int i = 0; i < mr; i++) {
        c0[i] = _mm256_setzero_ps();
        c1[i] = _mm256_setzero_ps();
    }
    for (size_t k = 0; k < kc; k++) {
        if (pf && (k & 15) == 0 && (k >> 4) < MM_NR256) {
            const char *p = (const char *)(pf + (k >> 4) * ldw);
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

__attribute__((target("avx2,fma"))) static void
panels_avx2(float *out, const float *w, const float *x, size_t batch,
            size_t rows, size_t cols, size_t r0, size_t r1)
{
    float wp[MM_KC * MM_NR256] __attribute__((aligned(32)));
    for (size_t k0 = 0; k0 < cols; k0 += MM_KC) {
        size_t kc = min_size(MM_KC, cols - k0);
        int acc = k0 > 0;
        const float *xk = x + k0;
        for (size_t r = r0; r < r1; r += MM_NR256) {
            size_t nrv = min_size(MM_NR256, r1 - r);
            __m256i m0 = lanes_avx2(nrv);
            __m256i m1 = lanes_avx2(nrv > 8 ? nrv - 8 : 0);
            const float *next = NULL;
            if (r + MM_NR256 < r1)
                next = w + (r + MM_NR256) * cols + k0;
            else if (k0 + MM_KC < cols)
                next = w + r0 * cols + k0 + MM_KC;
            pack_avx2(wp, w + r * cols + k0, cols, nrv, kc);
            float *o = out + r;
            size_t b = 0;
            for (; b + MM_MR256 <= batch; b += MM_MR256) {
                tile_avx2(MM_MR256, kc, wp, xk + b * cols, cols, o + b * rows,
                          rows, m0, m1, acc, next, cols);
                next = NULL;
            }
            DISPATCH_1_5(tile_avx2, batch - b, kc, wp, xk + b * cols, cols,
                         o + b * rows, rows, m0, m1, acc, next, cols)
        }
    }
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

static void matmul_rows(slm__isa isa, float *out, const float *w,
                        const float *x, size_t batch, size_t rows, size_t cols,
                        size_t r0, size_t r1)
{
#ifdef SLM_HAVE_X86
    if (isa == SLM__ISA_AVX512) {
        if (use_dot(batch, cols))
            dots_avx512(out, w, x, batch, rows, cols, r0, r1);
        else
            panels_avx512(out, w, x, batch, rows, cols, r0, r1);
        return;
    }
    if (isa == SLM__ISA_AVX2) {
        if (use_dot(batch, cols))
            dots_avx2(out, w, x, batch, rows, cols, r0, r1);
        else
            panels_avx2(out, w, x, batch, rows, cols, r0, r1);
        return;
    }
#endif
    rows_scalar(out, w, x, batch, rows, cols, r0, r1);
}

void slm_cpu_matmul(float *out, const float *w, const float *x, size_t batch,
                    size_t rows, size_t cols)
{
    if (batch == 0 || rows == 0)
        return;
    if (batch == 1) {
        slm_cpu_matvec(out, w, x, rows, cols);
        return;
    }
    if (cols == 0) {
        for (size_t i = 0; i < batch * rows; i++)
            out[i] = 0.0f;
        return;
    }
    slm__isa isa = slm__cpu_isa_level();
    if (batch * rows * cols < MATMUL_SERIAL_MAX || omp_get_max_threads() == 1) {
        matmul_rows(isa, out, w, x, batch, rows, cols, 0, rows);
        return;
    }
    size_t grain = row_grain(isa, batch, cols);
    size_t per_chunk = CHUNK_BYTES / (cols * sizeof(float)) / grain;
    if (grain > 1)
        per_chunk = GEMM_CHUNK_PANELS;
    size_t chunk = (per_chunk ? per_chunk : 1) * grain; /* rows */
    size_t n_chunks = (rows + chunk - 1) / chunk;
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t c = 0; c < n_chunks; c++) {
        size_t r0 = c * chunk;
        matmul_rows(isa, out, w, x, batch, rows, cols, r0,
                    min_size(r0 + chunk, rows));
    }
}
