/*
 * kernels/cpu/matvec.c - out = W @ x, the hot loop of decode; see kernels.h.
 *
 * Decode reads every weight once per token, so this loop is bound by memory
 * bandwidth, not arithmetic: the goal is to stream W as fast as the best read
 * loop we have (bench/membw.c). Measured on a 2-core Zen 5 VM, 2 threads,
 * tinyllama-1.1b shapes, 1.3 GB of float32 weights cycled so that every byte
 * comes from DRAM, against the probe in the same run:
 *   - one row at a time, four independent accumulators, 64 columns per
 *     iteration (this loop): 95-99% of the probe (80-82 GB/s against 84; 49.4
 *     against 50.0 when a neighbour loaded the host), with 2 MiB or 4 KiB
 *     pages alike. Each thread then reads one sequential stream, which the
 *     hardware prefetcher follows best;
 *   - blocks of 2, 4 or 8 rows sharing each load of x: 92%, 94% and 84%
 *     (x sits in L1 anyway; several interleaved streams prefetch worse);
 *   - software prefetch 256-1024 bytes ahead: no gain for one row, losses of
 *     5-25% for the multi-row blocks. Not used, nor non-temporal hints.
 * The small matrices (256x2048, 2 MiB) reach 89-93% of the probe: starting
 * and joining the thread team costs a few microseconds out of 25.
 *
 * Summation order: each row is summed in four interleaved partial sums (and
 * a tail), so results differ from a sequential float sum by rounding only.
 */
#include "kernels/kernels.h"

#include <omp.h>

#include "kernels/cpu/isa.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SLM_HAVE_X86 1
#endif

/* Below this many weights a thread team costs more than it saves. Measured
 * with 2 threads, in cache: 512x64 takes 0.77 us on one thread and 0.91 us
 * on two; 256x256 takes 1.33 us and 1.17 us. */
#define MATVEC_SERIAL_MAX ((size_t)64 * 1024)

/* Portable fallback; the four partial sums let the CPU overlap additions. */
static void rows_scalar(float *out, const float *w, const float *x, size_t r0,
                        size_t r1, size_t cols)
{
    for (size_t r = r0; r < r1; r++) {
        const float *wr = w + r * cols;
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
        size_t j = 0;
        for (; j + 4 <= cols; j += 4) {
            s0 += wr[j] * x[j];
            s1 += wr[j + 1] * x[j + 1];
            s2 += wr[j + 2] * x[j + 2];
            s3 += wr[j + 3] * x[j + 3];
        }
        for (; j < cols; j++)
            s0 += wr[j] * x[j];
        out[r] = (s0 + s1) + (s2 + s3);
    }
}

#ifdef SLM_HAVE_X86
__attribute__((target("avx2,fma"))) static void
rows_avx2(float *out, const float *w, const float *x, size_t r0, size_t r1,
          size_t cols)
{
    for (size_t r = r0; r < r1; r++) {
        const float *wr = w + r * cols;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m256 a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        size_t j = 0;
        for (; j + 64 <= cols; j += 64) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + j),
                                 _mm256_loadu_ps(x + j), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + j + 8),
                                 _mm256_loadu_ps(x + j + 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + j + 16),
                                 _mm256_loadu_ps(x + j + 16), a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + j + 24),
                                 _mm256_loadu_ps(x + j + 24), a3);
            a4 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + j + 32),
                                 _mm256_loadu_ps(x + j + 32), a4);
            a5 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + j + 40),
                                 _mm256_loadu_ps(x + j + 40), a5);
            a6 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + j + 48),
                                 _mm256_loadu_ps(x + j + 48), a6);
            a7 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + j + 56),
                                 _mm256_loadu_ps(x + j + 56), a7);
        }
        for (; j + 8 <= cols; j += 8)
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + j),
                                 _mm256_loadu_ps(x + j), a0);
        a0 = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
        a4 = _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7));
        float s = slm__hsum_avx2(_mm256_add_ps(a0, a4));
        for (; j < cols; j++)
            s += wr[j] * x[j];
        out[r] = s;
    }
}

__attribute__((target("avx512f"))) static void
rows_avx512(float *out, const float *w, const float *x, size_t r0, size_t r1,
            size_t cols)
{
    for (size_t r = r0; r < r1; r++) {
        const float *wr = w + r * cols;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        size_t j = 0;
        for (; j + 64 <= cols; j += 64) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + j),
                                 _mm512_loadu_ps(x + j), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + j + 16),
                                 _mm512_loadu_ps(x + j + 16), a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + j + 32),
                                 _mm512_loadu_ps(x + j + 32), a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + j + 48),
                                 _mm512_loadu_ps(x + j + 48), a3);
        }
        for (; j + 16 <= cols; j += 16)
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + j),
                                 _mm512_loadu_ps(x + j), a0);
        if (j < cols) {
            /* Masked-off lanes are neither read nor faulted on. */
            __mmask16 m = (__mmask16)((1u << (cols - j)) - 1u);
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, wr + j),
                                 _mm512_maskz_loadu_ps(m, x + j), a1);
        }
        out[r] = _mm512_reduce_add_ps(
            _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
}
#endif

static void matvec_rows(slm__isa isa, float *out, const float *w,
                        const float *x, size_t r0, size_t r1, size_t cols)
{
#ifdef SLM_HAVE_X86
    if (isa == SLM__ISA_AVX512) {
        rows_avx512(out, w, x, r0, r1, cols);
        return;
    }
    if (isa == SLM__ISA_AVX2) {
        rows_avx2(out, w, x, r0, r1, cols);
        return;
    }
#endif
    (void)isa;
    rows_scalar(out, w, x, r0, r1, cols);
}

void slm_cpu_matvec(float *out, const float *w, const float *x, size_t rows,
                    size_t cols)
{
    slm__isa isa = slm__cpu_isa_level();
    if (rows * cols < MATVEC_SERIAL_MAX || omp_get_max_threads() == 1) {
        matvec_rows(isa, out, w, x, 0, rows, cols);
        return;
    }
    /* One contiguous range of rows per thread: each thread streams its own
     * part of W front to back. */
#pragma omp parallel
    {
        size_t nt = (size_t)omp_get_num_threads();
        size_t t = (size_t)omp_get_thread_num();
        matvec_rows(isa, out, w, x, rows * t / nt, rows * (t + 1) / nt, cols);
    }
}
