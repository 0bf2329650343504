/*
 * kernels/cpu/panels.c - float weights pre-packed in panels of
 * SLM_PANEL_ROWS (32) rows, and out = x @ W^T on them; see kernels.h for the
 * layout.
 *
 * slm_cpu_matmul packs 32-row panels of W on every call, which at 16 tokens
 * cost 30-40 % of the arithmetic time and read W in 32 strided streams. Here
 * the loader has packed once, so each panel is one contiguous stream in the
 * order the micro-kernel uses it:
 *
 *   for each chunk of panels (handed out to threads from a shared counter):
 *     for each panel of the chunk:
 *       for each block of KC columns (32 x KC floats, contiguous):
 *         for each group of at most MR tokens:
 *           micro-kernel: an mr x 32 tile of out in registers (two zmm per
 *           token), k innermost; per column two aligned loads of the block,
 *           mr broadcasts of x[b][k], 2 mr FMAs; the tile is stored (first
 *           block) or added to out (later blocks).
 *
 * A thread's weights are then read front to back, block after block, panel
 * after panel: one sequential stream per chunk. While a block is used, the
 * next one in memory is prefetched into L1, by the only group (two lines per
 * column) or by the first two groups (a half each, one line per column), so
 * the demand on DRAM is spread over the whole block's arithmetic rather than
 * bunched into the first group's pass; the later groups find the 32 KiB
 * block in L1. The batch is cut into the fewest groups of at most MR tokens,
 * of equal size (16 tokens: 8 + 8, not 12 + 4, whose 4-token tile has too
 * few FMAs per load).
 *
 * With one or two tokens, a tile has 2 or 4 FMA chains, fewer than the two
 * FMA pipes' latency needs to run ahead of memory; such a tile keeps
 * NSETS independent accumulator sets over alternating columns, added at the
 * end of the block.
 *
 * Summation order: each output is one chain of FMAs per column block (or
 * NSETS interleaved chains, added at the end of the block), the blocks added
 * in order.
 */
#include "kernels/kernels.h"

#include <assert.h>
#include <omp.h>

#include "kernels/cpu/isa.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SLM_HAVE_X86 1
#endif

#define PR SLM_PANEL_ROWS

/* Columns per block: 32 KiB of panel, which stays in a 48 KiB L1 beside a
 * group's block of x (at most MR512 x KC floats) while every group uses it. */
#define KC 256
/* Tokens per group: 2 MR zmm accumulators of 32, plus the two weight
 * vectors and a broadcast. */
#define MR512 12
/* AVX2 works on half-panels of 16 rows (two ymm per token), MR256 tokens:
 * 12 accumulators of the 16 ymm registers. */
#define MR256 6
/* Accumulator sets for a group of nb tokens: enough independent chains to
 * cover the FMA latency. */
#define NSETS(nb) ((nb) == 1 ? 4 : (nb) == 2 ? 2 : 1)
#define NSETS_MAX 4
/* How far ahead of its loads the AVX2 path's first group prefetches the
 * weight stream (not tuned: the host measured has AVX-512). */
#define PF_AHEAD 4096

/* Below this many multiply-adds a thread team costs more than it saves (as
 * in matmul.c). */
#define SERIAL_MAX ((size_t)256 * 1024)
/* A chunk of work handed to a thread covers about this many weight bytes:
 * long enough to stream, short enough to balance. */
#define CHUNK_BYTES ((size_t)256 * 1024)

_Static_assert(PR == 32, "the micro-kernels hold 32 rows of a panel");
_Static_assert(KC % NSETS_MAX == 0, "sets divide a full block evenly");

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

static size_t n_panels(size_t rows)
{
    return rows / PR + (rows % PR != 0);
}

bool slm_cpu_panels_floats(size_t rows, size_t cols, size_t *floats)
{
    size_t n;
    if (__builtin_mul_overflow(n_panels(rows), (size_t)PR, &n) ||
        __builtin_mul_overflow(n, cols, &n))
        return false;
    *floats = n;
    return true;
}

void slm_cpu_pack_panels(float *dst, const float *w, size_t rows, size_t cols,
                         size_t ldw)
{
    assert(ldw >= cols);
    size_t np = n_panels(rows);
    for (size_t p = 0; p < np; p++) {
        float *d = dst + p * PR * cols;
        size_t nrv = min_size(PR, rows - p * PR);
        /* Rows in the inner loop: the writes are sequential, and the
         * panel's 32 source rows (32 x cols floats) stay in L2. */
        for (size_t c = 0; c < cols; c++) {
            size_t i = 0;
            for (; i < nrv; i++)
                d[c * PR + i] = w[(p * PR + i) * ldw + c];
            for (; i < PR; i++)
                d[c * PR + i] = 0.0f;
        }
    }
}

void slm_cpu_panels_row(float *dst, const float *wp, size_t rows, size_t cols,
                        size_t r)
{
    assert(r < rows);
    (void)rows;
    const float *p = wp + (r / PR) * PR * cols + r % PR;
    for (size_t c = 0; c < cols; c++)
        dst[c] = p[c * PR];
}

/* ---- plain C ------------------------------------------------------------ */

/* Panels [p0, p1): 32 outputs at a time, which the compiler vectorizes with
 * the baseline instruction set. */
static void panels_scalar(float *out, const float *wp, const float *x,
                          size_t batch, size_t rows, size_t cols, size_t p0,
                          size_t p1)
{
    for (size_t p = p0; p < p1; p++) {
        size_t nrv = min_size(PR, rows - p * PR);
        const float *pp = wp + p * PR * cols;
        for (size_t k0 = 0; k0 < cols; k0 += KC) {
            size_t kc = min_size(KC, cols - k0);
            for (size_t b = 0; b < batch; b++) {
                const float *xb = x + b * cols + k0;
                const float *blk = pp + k0 * PR;
                float acc[PR] = {0};
                for (size_t k = 0; k < kc; k++) {
                    float xv = xb[k];
                    for (size_t i = 0; i < PR; i++)
                        acc[i] += blk[k * PR + i] * xv;
                }
                float *o = out + b * rows + p * PR;
                for (size_t i = 0; i < nrv; i++)
                    o[i] = k0 ? o[i] + acc[i] : acc[i];
            }
        }
    }
}

#ifdef SLM_HAVE_X86

/* The batch sizes each kernel is compiled for (SLM__DISPATCH_CASE). */
#define DISPATCH_1_6(fn, nb, ...)                                              \
    SLM__DISPATCH_CASE(fn, 1, __VA_ARGS__)                                     \
    SLM__DISPATCH_CASE(fn, 2, __VA_ARGS__)                                     \
    SLM__DISPATCH_CASE(fn, 3, __VA_ARGS__)                                     \
    SLM__DISPATCH_CASE(fn, 4, __VA_ARGS__)                                     \
    SLM__DISPATCH_CASE(fn, 5, __VA_ARGS__)                                     \
    SLM__DISPATCH_CASE(fn, 6, __VA_ARGS__)
#define DISPATCH_7_12(fn, nb, ...)                                             \
    SLM__DISPATCH_CASE(fn, 7, __VA_ARGS__)                                     \
    SLM__DISPATCH_CASE(fn, 8, __VA_ARGS__)                                     \
    SLM__DISPATCH_CASE(fn, 9, __VA_ARGS__)                                     \
    SLM__DISPATCH_CASE(fn, 10, __VA_ARGS__)                                    \
    SLM__DISPATCH_CASE(fn, 11, __VA_ARGS__)                                    \
    SLM__DISPATCH_CASE(fn, 12, __VA_ARGS__)

/* ---- AVX-512 ------------------------------------------------------------ */

/* out(mr, 32; lanes masked by m0, m1) (+)= x(mr, kc) @ blk(kc, 32), mr a
 * compile-time constant at each call site. pf (NULL for none): prefetched
 * from here, pl (1 or 2) lines per column. */
__attribute__((target("avx512f"), always_inline)) static inline void
tile_avx512(const int mr, size_t kc, const float *blk, const float *x,
            size_t ldx, float *out, size_t ldo, __mmask16 m0, __mmask16 m1,
            int accumulate, const char *pf, int pl)
{
    const int ns = NSETS(mr);
    __m512 c0[NSETS_MAX][MR512], c1[NSETS_MAX][MR512];
    for (int s = 0; s < ns; s++) {
        for (int i = 0; i < mr; i++) {
            c0[s][i] = _mm512_setzero_ps();
            c1[s][i] = _mm512_setzero_ps();
        }
    }
    size_t k = 0;
    for (; k + (size_t)ns <= kc; k += (size_t)ns) {
        for (int s = 0; s < ns; s++) {
            const float *p = blk + (k + (size_t)s) * PR;
            if (pf) {
                /* A hint past the end of the weights is harmless:
                 * prefetches never fault. */
                const char *q = pf + (k + (size_t)s) * 64 * (size_t)pl;
                _mm_prefetch(q, _MM_HINT_T0);
                if (pl == 2)
                    _mm_prefetch(q + 64, _MM_HINT_T0);
            }
            __m512 w0 = _mm512_load_ps(p);
            __m512 w1 = _mm512_load_ps(p + 16);
            for (int i = 0; i < mr; i++) {
                __m512 xi = _mm512_set1_ps(x[(size_t)i * ldx + k + (size_t)s]);
                c0[s][i] = _mm512_fmadd_ps(w0, xi, c0[s][i]);
                c1[s][i] = _mm512_fmadd_ps(w1, xi, c1[s][i]);
            }
        }
    }
    for (; k < kc; k++) {
        __m512 w0 = _mm512_load_ps(blk + k * PR);
        __m512 w1 = _mm512_load_ps(blk + k * PR + 16);
        for (int i = 0; i < mr; i++) {
            __m512 xi = _mm512_set1_ps(x[(size_t)i * ldx + k]);
            c0[0][i] = _mm512_fmadd_ps(w0, xi, c0[0][i]);
            c1[0][i] = _mm512_fmadd_ps(w1, xi, c1[0][i]);
        }
    }
    for (int s = 1; s < ns; s++) {
        for (int i = 0; i < mr; i++) {
            c0[0][i] = _mm512_add_ps(c0[0][i], c0[s][i]);
            c1[0][i] = _mm512_add_ps(c1[0][i], c1[s][i]);
        }
    }
    for (int i = 0; i < mr; i++) {
        float *o = out + (size_t)i * ldo;
        /* Masked-off lanes (padding rows) are neither read nor written. */
        if (accumulate) {
            c0[0][i] = _mm512_add_ps(c0[0][i], _mm512_maskz_loadu_ps(m0, o));
            c1[0][i] =
                _mm512_add_ps(c1[0][i], _mm512_maskz_loadu_ps(m1, o + 16));
        }
        _mm512_mask_storeu_ps(o, m0, c0[0][i]);
        _mm512_mask_storeu_ps(o + 16, m1, c1[0][i]);
    }
}

__attribute__((target("avx512f"))) static void
panels_avx512(float *out, const float *wp, const float *x, size_t batch,
              size_t rows, size_t cols, size_t p0, size_t p1)
{
    size_t groups = (batch + MR512 - 1) / MR512;
    for (size_t p = p0; p < p1; p++) {
        size_t nrv = min_size(PR, rows - p * PR);
        __mmask16 m0 = (__mmask16)(nrv >= 16 ? 0xffffu : (1u << nrv) - 1u);
        __mmask16 m1 = (__mmask16)(nrv >= 32   ? 0xffffu
                                   : nrv <= 16 ? 0u
                                               : (1u << (nrv - 16)) - 1u);
        const float *pp = wp + p * PR * cols;
        for (size_t k0 = 0; k0 < cols; k0 += KC) {
            size_t kc = min_size(KC, cols - k0);
            const float *blk = pp + k0 * PR;
            int acc = k0 > 0;
            for (size_t g = 0; g < groups; g++) {
                size_t b = batch * g / groups;
                size_t nb = batch * (g + 1) / groups - b;
                const float *xg = x + b * cols + k0;
                float *o = out + b * rows + p * PR;
                /* The next block: all of it from a lone group, a half
                 * each from the first two. */
                const char *pf = NULL;
                int pl = groups == 1 ? 2 : 1;
                if (g < 2)
                    pf = (const char *)(blk + kc * PR) + g * (size_t)KC * 64;
                switch (nb) {
                    DISPATCH_1_6(tile_avx512, nb, kc, blk, xg, cols, o, rows,
                                 m0, m1, acc, pf, pl)
                    DISPATCH_7_12(tile_avx512, nb, kc, blk, xg, cols, o, rows,
                                  m0, m1, acc, pf, pl)
                default:
                    break;
                }
            }
        }
    }
}
_Static_assert(MR512 == 12, "panels_avx512 dispatches groups of 1..12");

/* ---- AVX2 --------------------------------------------------------------- */

/* out(mr, 16 rows of the half-panel h; lanes masked by m0, m1) (+)=
 * x(mr, kc) @ blk(kc, 16 of 32); see tile_avx512. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
tile_avx2(const int mr, size_t kc, const float *blk, const float *x, size_t ldx,
          float *out, size_t ldo, __m256i m0, __m256i m1, int accumulate,
          int pf)
{
    const int ns = NSETS(mr);
    __m256 c0[NSETS_MAX][MR256], c1[NSETS_MAX][MR256];
    for (int s = 0; s < ns; s++) {
        for (int i = 0; i < mr; i++) {
            c0[s][i] = _mm256_setzero_ps();
            c1[s][i] = _mm256_setzero_ps();
        }
    }
    size_t k = 0;
    for (; k + (size_t)ns <= kc; k += (size_t)ns) {
        for (int s = 0; s < ns; s++) {
            const float *p = blk + (k + (size_t)s) * PR;
            if (pf) {
                _mm_prefetch((const char *)p + PF_AHEAD, _MM_HINT_T0);
                _mm_prefetch((const char *)p + PF_AHEAD + 64, _MM_HINT_T0);
            }
            __m256 w0 = _mm256_load_ps(p);
            __m256 w1 = _mm256_load_ps(p + 8);
            for (int i = 0; i < mr; i++) {
                __m256 xi =
                    _mm256_broadcast_ss(x + (size_t)i * ldx + k + (size_t)s);
                c0[s][i] = _mm256_fmadd_ps(w0, xi, c0[s][i]);
                c1[s][i] = _mm256_fmadd_ps(w1, xi, c1[s][i]);
            }
        }
    }
    for (; k < kc; k++) {
        __m256 w0 = _mm256_load_ps(blk + k * PR);
        __m256 w1 = _mm256_load_ps(blk + k * PR + 8);
        for (int i = 0; i < mr; i++) {
            __m256 xi = _mm256_broadcast_ss(x + (size_t)i * ldx + k);
            c0[0][i] = _mm256_fmadd_ps(w0, xi, c0[0][i]);
            c1[0][i] = _mm256_fmadd_ps(w1, xi, c1[0][i]);
        }
    }
    for (int s = 1; s < ns; s++) {
        for (int i = 0; i < mr; i++) {
            c0[0][i] = _mm256_add_ps(c0[0][i], c0[s][i]);
            c1[0][i] = _mm256_add_ps(c1[0][i], c1[s][i]);
        }
    }
    for (int i = 0; i < mr; i++) {
        float *o = out + (size_t)i * ldo;
        /* Masked-off lanes are neither read nor written (nor faulted). */
        if (accumulate) {
            c0[0][i] = _mm256_add_ps(c0[0][i], _mm256_maskload_ps(o, m0));
            c1[0][i] = _mm256_add_ps(c1[0][i], _mm256_maskload_ps(o + 8, m1));
        }
        _mm256_maskstore_ps(o, m0, c0[0][i]);
        _mm256_maskstore_ps(o + 8, m1, c1[0][i]);
    }
}

/* Lanes 0..n-1 of a mask for _mm256_maskload_ps / maskstore_ps. */
__attribute__((target("avx2,fma"))) static inline __m256i lanes_avx2(size_t n)
{
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 8 ? n : 8)), idx);
}

__attribute__((target("avx2,fma"))) static void
panels_avx2(float *out, const float *wp, const float *x, size_t batch,
            size_t rows, size_t cols, size_t p0, size_t p1)
{
    size_t groups = (batch + MR256 - 1) / MR256;
    for (size_t p = p0; p < p1; p++) {
        size_t nrv = min_size(PR, rows - p * PR);
        const float *pp = wp + p * PR * cols;
        for (size_t k0 = 0; k0 < cols; k0 += KC) {
            size_t kc = min_size(KC, cols - k0);
            int acc = k0 > 0;
            for (size_t h = 0; h < PR && h < nrv; h += 16) {
                size_t hv = nrv - h; /* valid rows from h */
                __m256i m0 = lanes_avx2(hv);
                __m256i m1 = lanes_avx2(hv > 8 ? hv - 8 : 0);
                const float *blk = pp + k0 * PR + h;
                for (size_t g = 0; g < groups; g++) {
                    size_t b = batch * g / groups;
                    size_t nb = batch * (g + 1) / groups - b;
                    const float *xg = x + b * cols + k0;
                    float *o = out + b * rows + p * PR + h;
                    /* The first half's first group runs ahead of the
                     * stream; the second half finds it in L1. */
                    int pf = g == 0 && h == 0;
                    switch (nb) {
                        DISPATCH_1_6(tile_avx2, nb, kc, blk, xg, cols, o, rows,
                                     m0, m1, acc, pf)
                    default:
                        break;
                    }
                }
            }
        }
    }
}
_Static_assert(MR256 == 6, "panels_avx2 dispatches groups of 1..6");
#endif

static void panels_run(slm__isa isa, float *out, const float *wp,
                       const float *x, size_t batch, size_t rows, size_t cols,
                       size_t p0, size_t p1)
{
#ifdef SLM_HAVE_X86
    if (isa == SLM__ISA_AVX512) {
        panels_avx512(out, wp, x, batch, rows, cols, p0, p1);
        return;
    }
    if (isa == SLM__ISA_AVX2) {
        panels_avx2(out, wp, x, batch, rows, cols, p0, p1);
        return;
    }
#endif
    (void)isa;
    panels_scalar(out, wp, x, batch, rows, cols, p0, p1);
}

void slm_cpu_matmul_panels(float *out, const float *wp, const float *x,
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
    size_t np = n_panels(rows);
    if (batch * rows * cols < SERIAL_MAX || omp_get_max_threads() == 1) {
        panels_run(isa, out, wp, x, batch, rows, cols, 0, np);
        return;
    }
    /* Guided: chunks of about half a thread's remaining share, down to a
     * grain of CHUNK_BYTES, from a shared counter. Each long chunk is one
     * sequential stream, and every chunk start costs the prefetchers a
     * ramp; the small chunks at the end balance a slowed thread. Against
     * fixed chunks of 256 KiB, 16 tokens (110m shape, 2 threads): 8.1 ms
     * against 10.1, and 1 token 5.5 against 6.1 (the fast memory phase). */
    size_t grain = CHUNK_BYTES / (PR * cols * sizeof(float));
    if (grain == 0)
        grain = 1;
    size_t n_grains = (np + grain - 1) / grain;
#pragma omp parallel for schedule(guided, 1)
    for (size_t c = 0; c < n_grains; c++) {
        size_t p0 = c * grain;
        panels_run(isa, out, wp, x, batch, rows, cols, p0,
                   min_size(p0 + grain, np));
    }
}
