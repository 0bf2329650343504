/*
 * bench/membw.c - the read-bandwidth probe; see membw.h.
 *
 * The reference that decode throughput is judged against, so it has to be the
 * fastest read loop we can write, not a typical one. Each thread reads its
 * own contiguous part of a huge-page-backed buffer that it touched first; the
 * loop keeps eight vector accumulators and reads the two halves of its part
 * at once. Chosen on a 2-core Zen 5 VM (1 GiB, 2 threads, best of 20
 * repetitions interleaved between the variants, host quiet):
 *   eight zmm accumulators, one stream per thread          87.0 GB/s
 *   the same, two streams per thread (this loop)            88.2 GB/s
 *   four streams per thread                                 87.7 GB/s
 *   one stream + software prefetch (T0/T1/NTA, 256-1024 B)  85-87 GB/s
 * The differences are small and, when a neighbour loads the host (about
 * 50 GB/s then), within the noise. The host's bandwidth swings between such
 * phases minutes apart, which is why a benchmark measures this in the same
 * run as the thing it compares, and takes the best repetition.
 */
#include "bench/membw.h"

#include <math.h>
#include <stdint.h>
#include <sys/mman.h>

#include <omp.h>

#include "common/checked.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SLM_HAVE_X86 1
#endif

#define HUGE_PAGE ((size_t)2 << 20)
/* Each thread's part is a multiple of this, so every stream starts on a
 * 64-byte boundary and the loops need no tails. Parts are whole huge pages
 * when the buffer is big enough, so each page is touched by its reader. */
#define PART_GRAIN ((size_t)4096)

/* Written after the loop so the compiler cannot drop the reads. */
static volatile float membw_sink;

enum { READ_SCALAR, READ_AVX2, READ_AVX512 };

/* Fallback for CPUs without AVX2, not tuned: n is a multiple of 8. */
static float read_scalar(const float *p, size_t n)
{
    float s[8] = {0};
    for (size_t i = 0; i < n; i += 8)
        for (size_t k = 0; k < 8; k++)
            s[k] += p[i + k];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

#ifdef SLM_HAVE_X86
/* n floats from a and n from b, both 64-byte aligned, n a multiple of 32. */
__attribute__((target("avx2"))) static float read_avx2(const float *a,
                                                       const float *b, size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    __m256 s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    for (size_t i = 0; i < n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_load_ps(a + i));
        s1 = _mm256_add_ps(s1, _mm256_load_ps(a + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_load_ps(a + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_load_ps(a + i + 24));
        s4 = _mm256_add_ps(s4, _mm256_load_ps(b + i));
        s5 = _mm256_add_ps(s5, _mm256_load_ps(b + i + 8));
        s6 = _mm256_add_ps(s6, _mm256_load_ps(b + i + 16));
        s7 = _mm256_add_ps(s7, _mm256_load_ps(b + i + 24));
    }
    s0 = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    s4 = _mm256_add_ps(_mm256_add_ps(s4, s5), _mm256_add_ps(s6, s7));
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(s0, s4));
    float s = 0.0f;
    for (int i = 0; i < 8; i++)
        s += lanes[i];
    return s;
}

/* n floats from a and n from b, both 64-byte aligned, n a multiple of 64. */
__attribute__((target("avx512f"))) static float
read_avx512(const float *a, const float *b, size_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    __m512 s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    for (size_t i = 0; i < n; i += 64) {
        s0 = _mm512_add_ps(s0, _mm512_load_ps(a + i));
        s1 = _mm512_add_ps(s1, _mm512_load_ps(a + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_load_ps(a + i + 32));
        s3 = _mm512_add_ps(s3, _mm512_load_ps(a + i + 48));
        s4 = _mm512_add_ps(s4, _mm512_load_ps(b + i));
        s5 = _mm512_add_ps(s5, _mm512_load_ps(b + i + 16));
        s6 = _mm512_add_ps(s6, _mm512_load_ps(b + i + 32));
        s7 = _mm512_add_ps(s7, _mm512_load_ps(b + i + 48));
    }
    s0 = _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3));
    s4 = _mm512_add_ps(_mm512_add_ps(s4, s5), _mm512_add_ps(s6, s7));
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s4));
}
#endif

static int read_level(void)
{
#ifdef SLM_HAVE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return READ_AVX512;
    if (__builtin_cpu_supports("avx2"))
        return READ_AVX2;
#endif
    return READ_SCALAR;
}

/* Reads part(n floats) as two streams, its halves, at once. */
static float read_part(int level, const float *part, size_t n)
{
    size_t half = n / 2;
#ifdef SLM_HAVE_X86
    if (level == READ_AVX512)
        return read_avx512(part, part + half, half);
    if (level == READ_AVX2)
        return read_avx2(part, part + half, half);
#endif
    (void)level;
    return read_scalar(part, n);
}

slm_status slm_bench_read_bandwidth(size_t bytes, int threads, int reps,
                                    double *best_gbps)
{
    if (!best_gbps || threads < 1 || reps < 1)
        return slm_fail(SLM_ERR_INVALID,
                        "read bandwidth: threads %d and reps %d must be >= 1",
                        threads, reps);
    size_t min_bytes;
    if (!slm_size_mul((size_t)threads, PART_GRAIN, &min_bytes) ||
        bytes < min_bytes)
        return slm_fail(SLM_ERR_INVALID,
                        "read bandwidth: %zu bytes is less than %zu per "
                        "thread for %d threads",
                        bytes, PART_GRAIN, threads);
    size_t map_len;
    if (!slm_size_add(bytes, HUGE_PAGE, &map_len))
        return slm_fail(SLM_ERR_RANGE, "read bandwidth: %zu bytes too large",
                        bytes);
    void *raw = mmap(NULL, map_len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return slm_fail(SLM_ERR_NOMEM, "read bandwidth: cannot map %zu bytes",
                        map_len);
    float *buf = (float *)(((uintptr_t)raw + HUGE_PAGE - 1) &
                           ~(uintptr_t)(HUGE_PAGE - 1));
    /* Best effort: without transparent huge pages the TLB misses more, the
     * probe reads a little slower, and it is still a valid measurement. */
    (void)madvise(buf, bytes, MADV_HUGEPAGE);

    int level = read_level();
    double best = INFINITY;
    size_t total = 0; /* bytes read per repetition */
    float sum = 0.0f;
    double t0 = 0.0;
#pragma omp parallel num_threads(threads)
    {
        /* The runtime may give fewer threads than asked; split by what we
         * got, the same way for the first touch and for the reads. */
        size_t nt = (size_t)omp_get_num_threads();
        size_t t = (size_t)omp_get_thread_num();
        size_t grain = bytes / nt >= 4 * HUGE_PAGE ? HUGE_PAGE : PART_GRAIN;
        size_t part = bytes / nt / grain * grain / sizeof(float);
        float *mine = buf + t * part;
        for (size_t i = 0; i < part; i++)
            mine[i] = 1.0f;
#pragma omp single
        total = part * nt * sizeof(float);
        float local = 0.0f;
        for (int r = 0; r < reps; r++) {
#pragma omp barrier
#pragma omp master
            t0 = omp_get_wtime();
#pragma omp barrier
            local += read_part(level, mine, part);
#pragma omp barrier
#pragma omp master
            {
                double dt = omp_get_wtime() - t0;
                if (dt < best)
                    best = dt;
            }
        }
#pragma omp atomic
        sum += local;
    }
    membw_sink = sum;
    munmap(raw, map_len);
    if (!(best > 0.0) || isinf(best))
        return slm_fail(SLM_ERR_INTERNAL, "read bandwidth: no usable timing");
    *best_gbps = (double)total / best / 1e9;
    return SLM_OK;
}
