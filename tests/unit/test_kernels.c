/*
 * tests/unit/test_kernels.c - the CPU kernels (kernels/cpu/) against plain
 * references.
 *
 * Each kernel is compared with an obviously-correct version written here
 * (double accumulation where the kernel may reorder a sum), on seeded random
 * inputs of awkward sizes. Outputs are poisoned with NaN first, so a kernel
 * that skips an element fails, and a sentinel after each output catches
 * writes past the end. matvec runs on every instruction set this CPU has
 * (slm__cpu_isa_force) and with 1, 2 and 3 OpenMP threads.
 *
 * The kernels that must track llama2.c's run.c (rope, softmax, swiglu,
 * attention, rmsnorm) are also checked bit for bit against a literal float
 * port of run.c's loop. That relies on the compiler not contracting a * b + c
 * into an FMA differently in the two copies, which holds for the project's
 * build (no -march, so no FMA in plain C code); where __FMA__ is on the exact
 * checks are skipped and only the tolerances apply.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "coordinator/sampler.h"
#include "kernels/cpu/exp_avx512.h"
#include "kernels/cpu/isa.h"
#include "kernels/kernels.h"
#include "model/checkpoint.h"
#include "tests/testutil.h"

#ifdef __FMA__
#define EXACT_CHECKS 0
#else
#define EXACT_CHECKS 1
#endif

/* Unit roundoff of float. */
#define U        ((double)FLT_EPSILON / 2.0)
#define SENTINEL 12345.0f

static const size_t awkward[] = {1, 3, 15, 16, 17, 63, 64, 65, 1000, 4099};
#define N_AWKWARD (sizeof awkward / sizeof awkward[0])
static const int thread_counts[] = {1, 2, 3};
#define N_THREADS (sizeof thread_counts / sizeof thread_counts[0])

/* n floats from cmocka's allocator (leaks fail the test), plus one sentinel
 * slot at [n]; the n are NaN. */
static float *alloc_poisoned(size_t n)
{
    float *p = test_malloc((n + 1) * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
    p[n] = SENTINEL;
    return p;
}

static float *alloc_random(size_t n, uint64_t *rng, float lo, float hi)
{
    float *p = alloc_poisoned(n);
    slm_test_fill_uniform(p, n, rng, lo, hi);
    return p;
}

static void check_sentinel(const float *p, size_t n, const char *what)
{
    if (p[n] != SENTINEL)
        fail_msg("%s: wrote past its %zu outputs", what, n);
}

static int bits_equal(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof(float)) == 0;
}

/* ------------------------------------------------------------------------ */

static void test_isa(void **state)
{
    (void)state;
    const char *isa = slm_cpu_isa();
    assert_non_null(isa);
    assert_true(strcmp(isa, "avx512") == 0 || strcmp(isa, "avx2") == 0 ||
                strcmp(isa, "scalar") == 0);
    /* Forcing a level is clamped to the hardware and shows in the name. */
    slm__isa hw = slm__cpu_isa_detected();
    assert_int_equal(slm__cpu_isa_force(SLM__ISA_SCALAR), SLM__ISA_SCALAR);
    assert_string_equal(slm_cpu_isa(), "scalar");
    assert_int_equal(slm__cpu_isa_force(SLM__ISA_AVX512), hw);
    assert_int_equal(slm__cpu_isa_level(), hw);
    assert_string_equal(slm_cpu_isa(), isa);
    fprintf(stderr, "# cpu isa: %s\n", isa);
}

/* ------------------------------------------------------------------------ */

/* Tolerance: the kernel sums each row in float, in several interleaved
 * partial sums; the longest chain of dependent float additions is at most
 * cols / 4 + 16 long on every path (scalar: 4 partial sums; AVX2: 8 lanes x
 * 8 registers; AVX-512: 16 lanes x 4 registers, plus tails and the final
 * reductions). The standard bound for recursive summation then gives
 * |out - exact| <= (cols / 4 + 17) * u * sum_j |w_j x_j|, which is what we
 * check, with the exact value computed in double. */
static void check_matvec(size_t rows, size_t cols, const float *w,
                         const float *x, const double *ref, const double *mag,
                         slm__isa isa, int threads)
{
    float *out = alloc_poisoned(rows);
    slm_cpu_matvec(out, w, x, rows, cols);
    double k = (double)cols / 4.0 + 17.0;
    for (size_t r = 0; r < rows; r++) {
        double err = fabs((double)out[r] - ref[r]);
        double tol = k * U * mag[r] + 1e-30;
        if (!(err <= tol))
            fail_msg("matvec %zux%zu isa %d threads %d row %zu: %.9g vs "
                     "%.9g, error %.3g > %.3g",
                     rows, cols, (int)isa, threads, r, (double)out[r], ref[r],
                     err, tol);
    }
    check_sentinel(out, rows, "matvec");
    test_free(out);
}

static void test_matvec(void **state)
{
    (void)state;
    uint64_t rng = 0x6d61747665630001ULL;
    slm__isa hw = slm__cpu_isa_detected();
    for (size_t ri = 0; ri < N_AWKWARD; ri++) {
        for (size_t ci = 0; ci < N_AWKWARD; ci++) {
            size_t rows = awkward[ri], cols = awkward[ci];
            /* One float of offset on odd shapes: W rows then start at every
             * alignment, as they do inside a real checkpoint. */
            size_t off = (ri + ci) % 2;
            float *wbuf = alloc_random(rows * cols + off, &rng, -1.0f, 1.0f);
            const float *w = wbuf + off;
            float *x = alloc_random(cols, &rng, -1.0f, 1.0f);
            double *ref = test_malloc(rows * sizeof(double));
            double *mag = test_malloc(rows * sizeof(double));
            assert_non_null(ref);
            assert_non_null(mag);
            for (size_t r = 0; r < rows; r++) {
                double s = 0.0, m = 0.0;
                for (size_t j = 0; j < cols; j++) {
                    double p = (double)w[r * cols + j] * (double)x[j];
                    s += p;
                    m += fabs(p);
                }
                ref[r] = s;
                mag[r] = m;
            }
            for (int isa = SLM__ISA_SCALAR; isa <= (int)hw; isa++) {
                slm__cpu_isa_force((slm__isa)isa);
                for (size_t ti = 0; ti < N_THREADS; ti++) {
                    omp_set_num_threads(thread_counts[ti]);
                    check_matvec(rows, cols, w, x, ref, mag, (slm__isa)isa,
                                 thread_counts[ti]);
                }
            }
            test_free(mag);
            test_free(ref);
            test_free(x);
            test_free(wbuf);
        }
    }
    slm__cpu_isa_force(hw);
    omp_set_num_threads(2);
}

/* ------------------------------------------------------------------------ */

/* run.c's rmsnorm, literally. */
static void runc_rmsnorm(float *o, const float *x, const float *weight,
                         size_t size)
{
    float ss = 0.0f;
    for (size_t j = 0; j < size; j++)
        ss += x[j] * x[j];
    ss /= (float)size;
    ss += 1e-5f;
    ss = 1.0f / sqrtf(ss);
    for (size_t j = 0; j < size; j++)
        o[j] = weight[j] * (ss * x[j]);
}

static void test_rmsnorm(void **state)
{
    (void)state;
    uint64_t rng = 0x726d736e6f726d01ULL;
    for (size_t i = 0; i < N_AWKWARD; i++) {
        size_t n = awkward[i];
        float *x = alloc_random(n, &rng, -2.0f, 2.0f);
        float *wt = alloc_random(n, &rng, 0.5f, 1.5f);
        float *out = alloc_poisoned(n);
        float *want = alloc_poisoned(n);
        double *ref = test_malloc(n * sizeof(double));
        assert_non_null(ref);
        slm_cpu_rmsnorm(out, x, wt, n, 1e-5f);
        check_sentinel(out, n, "rmsnorm");

        double ss = 0.0;
        for (size_t j = 0; j < n; j++)
            ss += (double)x[j] * (double)x[j];
        double scale = 1.0 / sqrt(ss / (double)n + 1e-5);
        /* Tolerance: the float sum of squares is one chain of n additions,
         * relative error <= n u; the square root halves it and the last few
         * operations add a few u: (n / 2 + 8) u relative to |out|. */
        double tol = ((double)n / 2.0 + 8.0) * U;
        for (size_t j = 0; j < n; j++) {
            ref[j] = (double)wt[j] * scale * (double)x[j];
            double err = fabs((double)out[j] - ref[j]);
            if (!(err <= tol * fabs(ref[j]) + 1e-30))
                fail_msg("rmsnorm n %zu [%zu]: %.9g vs %.9g", n, j,
                         (double)out[j], ref[j]);
        }
        if (EXACT_CHECKS) {
            runc_rmsnorm(want, x, wt, n);
            assert_true(bits_equal(out, want, n));
        }
        /* In place gives the same bits. */
        slm_cpu_rmsnorm(x, x, wt, n, 1e-5f);
        assert_true(bits_equal(x, out, n));
        test_free(ref);
        test_free(want);
        test_free(out);
        test_free(wt);
        test_free(x);
    }
}

/* ------------------------------------------------------------------------ */

/* run.c's RoPE for one vector, literally: the angle recomputed per element,
 * head by head. */
static void runc_rope(float *vec, size_t dim, size_t head_size, size_t pos,
                      float theta)
{
    for (size_t i = 0; i < dim; i += 2) {
        size_t head_dim = i % head_size;
        float freq = 1.0f / powf(theta, (float)head_dim / (float)head_size);
        float val = (float)pos * freq;
        float fcr = cosf(val);
        float fci = sinf(val);
        float v0 = vec[i];
        float v1 = vec[i + 1];
        vec[i] = v0 * fcr - v1 * fci;
        vec[i + 1] = v0 * fci + v1 * fcr;
    }
}

static void check_rope(size_t hs, size_t nh, size_t pos, float theta,
                       uint64_t *rng)
{
    size_t n = nh * hs;
    float *vec = alloc_random(n, rng, -3.0f, 3.0f);
    float *orig = alloc_poisoned(n);
    float *want = alloc_poisoned(n);
    memcpy(orig, vec, n * sizeof(float));
    memcpy(want, vec, n * sizeof(float));
    /* the frequencies as the model description computes them */
    slm_model_config cfg = {.head_size = (int32_t)hs, .rope_theta = theta};
    float *freqs = alloc_poisoned(hs / 2);
    slm_model_config_rope_freqs(&cfg, freqs);
    slm_cpu_rope(vec, nh, hs, pos, freqs);
    test_free(freqs);
    check_sentinel(vec, n, "rope");
    runc_rope(want, n, hs, pos, theta);
    /* Exactly run.c's float operations, so exactly its bits. */
    if (EXACT_CHECKS && !bits_equal(vec, want, n))
        fail_msg("rope hs %zu heads %zu pos %zu: differs from run.c", hs, nh,
                 pos);
    /* Position 0 is the identity. */
    if (pos == 0)
        assert_true(bits_equal(vec, orig, n));
    for (size_t e = 0; e < n; e += 2) {
        size_t i = e % hs;
        double x0 = orig[e], x1 = orig[e + 1];
        double y0 = vec[e], y1 = vec[e + 1];
        double r_in = sqrt(x0 * x0 + x1 * x1);
        double r_out = sqrt(y0 * y0 + y1 * y1);
        /* A rotation keeps the pair's norm. cos and sin are each within an
         * ulp, so cos^2 + sin^2 = 1 +- 2u, and the two products and the sum
         * of each output add 3u more: 1e-6 relative is ample. */
        if (!(fabs(r_out - r_in) <= 1e-6 * r_in + 1e-30))
            fail_msg("rope: norm %.9g -> %.9g", r_in, r_out);
        /* The angle is pos * theta^(-i / hs), i the index of the pair's first
         * element within its head. The float angle's absolute error grows
         * like pos * u, so compare with double only for small pos, where the
         * error stays below 1e-4 of the norm. */
        if (pos <= 64) {
            double ang =
                (double)pos * pow((double)theta, -(double)i / (double)hs);
            double z0 = x0 * cos(ang) - x1 * sin(ang);
            double z1 = x0 * sin(ang) + x1 * cos(ang);
            double err = fmax(fabs(z0 - y0), fabs(z1 - y1));
            if (!(err <= 1e-4 * r_in + 1e-30))
                fail_msg("rope hs %zu pos %zu element %zu: angle off", hs, pos,
                         e);
        }
    }
    test_free(want);
    test_free(orig);
    test_free(vec);
}

static void test_rope(void **state)
{
    (void)state;
    static const size_t head_sizes[] = {2, 6, 8, 16, 64, 128};
    static const size_t heads[] = {1, 3, 8, 32};
    static const size_t positions[] = {0, 1, 7, 37, 255, 300, 2047, 4095};
    uint64_t rng = 0x726f706500000001ULL;
    for (size_t a = 0; a < sizeof head_sizes / sizeof *head_sizes; a++) {
        for (size_t b = 0; b < sizeof heads / sizeof *heads; b++) {
            for (size_t c = 0; c < sizeof positions / sizeof *positions; c++) {
                check_rope(head_sizes[a], heads[b], positions[c], 10000.0f,
                           &rng);
                check_rope(head_sizes[a], heads[b], positions[c], 500000.0f,
                           &rng);
            }
        }
    }
}

/* ------------------------------------------------------------------------ */

/* run.c's softmax, literally. */
static void runc_softmax(float *x, size_t size)
{
    float max_val = x[0];
    for (size_t i = 1; i < size; i++)
        if (x[i] > max_val)
            max_val = x[i];
    float sum = 0.0f;
    for (size_t i = 0; i < size; i++) {
        x[i] = expf(x[i] - max_val);
        sum += x[i];
    }
    for (size_t i = 0; i < size; i++)
        x[i] /= sum;
}

/* Tolerance, with d_i = x_i - max and p_i the exact outputs: the float
 * subtraction is off by up to |d_i| u, which expf turns into as much relative
 * error; expf itself adds up to an ulp (2u); the float sum, one chain of n
 * additions of such terms, is off by sum_j p_j (|d_j| + 2) u + (n - 1) u
 * relative; the division adds u. So output i is within
 * (|d_i| + E + n + 6) u of p_i, relative, with E = sum_j p_j |d_j|, and the
 * outputs sum to 1 within the p-weighted mean of those. */
static void check_softmax(const float *in, size_t n)
{
    float *x = alloc_poisoned(n);
    float *want = alloc_poisoned(n);
    memcpy(x, in, n * sizeof(float));
    memcpy(want, in, n * sizeof(float));
    slm_cpu_softmax(x, n);
    check_sentinel(x, n, "softmax");

    double mx = in[0];
    for (size_t i = 1; i < n; i++)
        mx = fmax(mx, in[i]);
    double den = 0.0;
    for (size_t i = 0; i < n; i++)
        den += exp((double)in[i] - mx);
    double e = 0.0;
    for (size_t i = 0; i < n; i++)
        e += exp((double)in[i] - mx) / den * fabs((double)in[i] - mx);
    double total = 0.0, total_tol = 0.0;
    for (size_t i = 0; i < n; i++) {
        double ref = exp((double)in[i] - mx) / den;
        double tol = (fabs((double)in[i] - mx) + e + (double)n + 6.0) * U;
        if (!(fabs((double)x[i] - ref) <= tol * ref + 1e-38))
            fail_msg("softmax n %zu [%zu]: %.9g vs %.9g", n, i, (double)x[i],
                     ref);
        total += x[i];
        total_tol += tol * ref;
    }
    if (!(fabs(total - 1.0) <= total_tol + 1e-12))
        fail_msg("softmax n %zu: sums to %.9g", n, total);
    if (EXACT_CHECKS) {
        runc_softmax(want, n);
        assert_true(bits_equal(x, want, n));
    }
    test_free(want);
    test_free(x);
}

static void test_softmax(void **state)
{
    (void)state;
    uint64_t rng = 0x736f66746d617801ULL;
    for (size_t i = 0; i < N_AWKWARD; i++) {
        size_t n = awkward[i];
        float *in = alloc_random(n, &rng, -10.0f, 10.0f);
        check_softmax(in, n);
        /* Shifted far up: exp(x) alone would overflow. */
        for (size_t j = 0; j < n; j++)
            in[j] += 1000.0f;
        check_softmax(in, n);
        test_free(in);
    }
    /* Stable where a naive exp overflows (1000) or underflows (-1000). */
    const float big[2] = {1000.0f, 1001.0f};
    check_softmax(big, 2);
    float x[2] = {1000.0f, 1001.0f};
    slm_cpu_softmax(x, 2);
    assert_float_equal(x[0], 1.0 / (1.0 + exp(1.0)), 1e-6);
    assert_float_equal(x[1], exp(1.0) / (1.0 + exp(1.0)), 1e-6);
    const float low[3] = {-1000.0f, -1001.0f, -1000.5f};
    check_softmax(low, 3);
    const float one[1] = {-7.0f};
    float y = one[0];
    slm_cpu_softmax(&y, 1);
    assert_true(y == 1.0f);
    /* Far below the maximum, an entry rounds to 0, never to NaN. */
    float z[3] = {0.0f, -200.0f, 88.0f};
    slm_cpu_softmax(z, 3);
    assert_true(z[1] == 0.0f && z[0] >= 0.0f && z[2] > 0.99f);
}

/* ------------------------------------------------------------------------ */

/* run.c's attention for one head, literally (float, index order). */
static void runc_attention(float *out, const float *q, const float *k_cache,
                           const float *v_cache, float *att, size_t n_heads,
                           size_t n_kv_heads, size_t head_size,
                           size_t kv_stride, size_t pos)
{
    size_t kv_mul = n_heads / n_kv_heads;
    for (size_t h = 0; h < n_heads; h++) {
        const float *qh = q + h * head_size;
        for (size_t t = 0; t <= pos; t++) {
            const float *k = k_cache + t * kv_stride + (h / kv_mul) * head_size;
            float score = 0.0f;
            for (size_t i = 0; i < head_size; i++)
                score += qh[i] * k[i];
            score /= sqrtf((float)head_size);
            att[t] = score;
        }
        runc_softmax(att, pos + 1);
        float *xb = out + h * head_size;
        memset(xb, 0, head_size * sizeof(float));
        for (size_t t = 0; t <= pos; t++) {
            const float *v = v_cache + t * kv_stride + (h / kv_mul) * head_size;
            float a = att[t];
            for (size_t i = 0; i < head_size; i++)
                xb[i] += a * v[i];
        }
    }
}

static void check_attention(size_t n_heads, size_t n_kv_heads, size_t head_size,
                            size_t pos, int threads, uint64_t *rng)
{
    /* Padding in both strides: the kernel must use them, not assume them. */
    size_t kv_stride = n_kv_heads * head_size + 5;
    size_t att_stride = pos + 3;
    size_t nq = n_heads * head_size;
    size_t ncache = (pos + 1) * kv_stride;
    size_t natt = n_heads * att_stride;
    float *q = alloc_random(nq, rng, -1.0f, 1.0f);
    float *kc = alloc_random(ncache, rng, -1.0f, 1.0f);
    float *vc = alloc_random(ncache, rng, -1.0f, 1.0f);
    float *out = alloc_poisoned(nq);
    float *att = alloc_poisoned(natt);
    float *want = alloc_poisoned(nq);
    float *want_att = alloc_poisoned(pos + 1);
    for (size_t h = 0; h < n_heads; h++)
        for (size_t t = pos + 1; t < att_stride; t++)
            att[h * att_stride + t] = SENTINEL;

    omp_set_num_threads(threads);
    slm_cpu_attention(out, q, kc, vc, att, att_stride, n_heads, n_kv_heads,
                      head_size, kv_stride, pos);
    check_sentinel(out, nq, "attention out");
    for (size_t h = 0; h < n_heads; h++)
        for (size_t t = pos + 1; t < att_stride; t++)
            if (att[h * att_stride + t] != SENTINEL)
                fail_msg("attention: att row %zu written past pos", h);

    /* Reference in double. Tolerance, per head, with S the largest
     * sum_i |q_i k_ti| / sqrt(head_size) (a bound on any score's size): a
     * float score is a chain of head_size products and sums, so its absolute
     * error is within (head_size + 2) u S; a weight exp(s_t - max) / sum
     * then has relative error within 2 (head_size + 2) u S from the scores
     * plus (pos + 4) u from expf, the float sum and the division; an output
     * element, one chain of pos + 1 products and sums, adds (pos + 2) u of
     * sum_t att_t |v_t|. We allow twice these. */
    size_t kv_mul = n_heads / n_kv_heads;
    double *p = test_malloc((pos + 1) * sizeof(double));
    assert_non_null(p);
    double rs = 1.0 / sqrt((double)head_size);
    for (size_t h = 0; h < n_heads; h++) {
        const float *qh = q + h * head_size;
        size_t g = (h / kv_mul) * head_size;
        double mx = -INFINITY, big = 0.0;
        for (size_t t = 0; t <= pos; t++) {
            double s = 0.0, m = 0.0;
            for (size_t i = 0; i < head_size; i++) {
                double prod = (double)qh[i] * (double)kc[t * kv_stride + g + i];
                s += prod;
                m += fabs(prod);
            }
            p[t] = s * rs;
            mx = fmax(mx, p[t]);
            big = fmax(big, m * rs);
        }
        double den = 0.0;
        for (size_t t = 0; t <= pos; t++)
            den += exp(p[t] - mx);
        double w_tol =
            2.0 * (2.0 * ((double)head_size + 2.0) * big + (double)pos + 4.0) *
            U;
        for (size_t t = 0; t <= pos; t++) {
            p[t] = exp(p[t] - mx) / den;
            double got = att[h * att_stride + t];
            if (!(fabs(got - p[t]) <= w_tol * p[t] + 1e-38))
                fail_msg("attention h %zu t %zu: weight %.9g vs %.9g", h, t,
                         got, p[t]);
        }
        double o_tol = w_tol + 2.0 * ((double)pos + 2.0) * U;
        for (size_t i = 0; i < head_size; i++) {
            double s = 0.0, m = 0.0;
            for (size_t t = 0; t <= pos; t++) {
                double v = vc[t * kv_stride + g + i];
                s += p[t] * v;
                m += p[t] * fabs(v);
            }
            double got = out[h * head_size + i];
            double tol = o_tol * m + 1e-30;
            if (!(fabs(got - s) <= tol))
                fail_msg("attention %zu/%zu hs %zu pos %zu threads %d: "
                         "out[%zu] %.9g vs %.9g (tol %.3g)",
                         n_heads, n_kv_heads, head_size, pos, threads,
                         h * head_size + i, got, s, tol);
        }
    }
    test_free(p);

    if (EXACT_CHECKS) {
        runc_attention(want, q, kc, vc, want_att, n_heads, n_kv_heads,
                       head_size, kv_stride, pos);
        if (!bits_equal(out, want, nq))
            fail_msg("attention %zu/%zu hs %zu pos %zu threads %d: differs "
                     "from run.c's order",
                     n_heads, n_kv_heads, head_size, pos, threads);
    }
    test_free(want_att);
    test_free(want);
    test_free(att);
    test_free(out);
    test_free(vc);
    test_free(kc);
    test_free(q);
}

static void test_attention(void **state)
{
    (void)state;
    static const size_t pairs[][2] = {{8, 4}, {8, 8}, {8, 1}, {4, 2}};
    static const size_t head_sizes[] = {8, 17, 64};
    static const size_t positions[] = {0, 1, 37, 300};
    uint64_t rng = 0x617474656e740001ULL;
    for (size_t a = 0; a < sizeof pairs / sizeof *pairs; a++) {
        for (size_t b = 0; b < sizeof head_sizes / sizeof *head_sizes; b++) {
            for (size_t c = 0; c < sizeof positions / sizeof *positions; c++) {
                for (size_t d = 0; d < N_THREADS; d++)
                    check_attention(pairs[a][0], pairs[a][1], head_sizes[b],
                                    positions[c], thread_counts[d], &rng);
            }
        }
    }
    omp_set_num_threads(2);
}

/* ------------------------------------------------------------------------ */

/* Paged attention: the scalar path (forced) equals slm_cpu_attention on
 * the same keys and values laid out contiguously, bit for bit; the AVX-512
 * path (where the machine has it) agrees with it to float rounding. Blocks
 * of 4 positions in a shuffled order; head sizes with and without a
 * multiple of 16; positions across several blocks. */
static void test_attention_paged(void **state)
{
    (void)state;
    enum { BS = 4, BLOCKS = 16, MAXPOS = BS * BLOCKS - 1, HEADS = 2 };
    static const size_t sizes[] = {12, 16, 64, 80, 128};
    const slm__isa hw = slm__cpu_isa_detected();
    uint64_t rng = 42;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const size_t hs = sizes[si], kv = HEADS * hs;
        float *kp = malloc(BLOCKS * BS * kv * sizeof *kp);
        float *vp = malloc(BLOCKS * BS * kv * sizeof *vp);
        float *kc = malloc((MAXPOS + 1) * kv * sizeof *kc);
        float *vc = malloc((MAXPOS + 1) * kv * sizeof *vc);
        float *q = malloc(hs * HEADS * sizeof *q);
        float *o1 = malloc(hs * sizeof *o1), *o2 = malloc(hs * sizeof *o2);
        float *oc = malloc(hs * HEADS * sizeof *oc);
        float *att = malloc((MAXPOS + 1) * HEADS * sizeof *att);
        assert_non_null(kp && vp && kc && vc && q && o1 && o2 && oc && att);
        slm_test_fill_uniform(kp, BLOCKS * BS * kv, &rng, -1.0f, 1.0f);
        slm_test_fill_uniform(vp, BLOCKS * BS * kv, &rng, -1.0f, 1.0f);
        slm_test_fill_uniform(q, hs * HEADS, &rng, -1.0f, 1.0f);
        uint32_t table[BLOCKS];
        for (uint32_t b = 0; b < BLOCKS; b++)
            table[b] = (b * 7 + 3) % BLOCKS; /* a permutation */
        for (size_t t = 0; t <= MAXPOS; t++) {
            const size_t row = (size_t)table[t / BS] * BS + t % BS;
            memcpy(kc + t * kv, kp + row * kv, kv * sizeof *kc);
            memcpy(vc + t * kv, vp + row * kv, kv * sizeof *vc);
        }
        static const size_t positions[] = {0, 3, 4, 17, MAXPOS};
        for (size_t pi = 0; pi < 5; pi++) {
            const size_t pos = positions[pi];
            slm_cpu_attention(oc, q, kc, vc, att, MAXPOS + 1, HEADS, HEADS, hs,
                              kv, pos);
            for (size_t h = 0; h < HEADS; h++) {
                slm__cpu_isa_force(SLM__ISA_SCALAR);
                slm_cpu_attention_paged_head(o1, q + h * hs, kp, vp, table, BS,
                                             att, hs, kv, h * hs, pos);
                assert_memory_equal(o1, oc + h * hs, hs * sizeof *o1);
                slm__cpu_isa_force(hw);
                slm_cpu_attention_paged_head(o2, q + h * hs, kp, vp, table, BS,
                                             att, hs, kv, h * hs, pos);
                /* outputs are convex mixes of values in [-1, 1] */
                for (size_t i = 0; i < hs; i++)
                    assert_true(fabsf(o2[i] - o1[i]) <= 1e-5f);
            }
        }
        free(kp);
        free(vp);
        free(kc);
        free(vc);
        free(q);
        free(o1);
        free(o2);
        free(oc);
        free(att);
    }
    slm__cpu_isa_force(hw);
}

/* The AVX-512 paged path on the shapes it special-cases: block sizes below,
 * at and above its 16-position chunks (1, 3, 16, 32), positions at chunk
 * edges and across many blocks (0, 1, 15, 16, 17, 200), head sizes 16, 64
 * (kept in registers) and 128 (two 64-wide output passes), grouped-query
 * heads (4 query heads on 2 kv heads), rows padded to an odd stride.
 *
 * Each output element is checked against a double reference with the
 * error bound of check_attention, with the exp term raised from expf's 1
 * ulp to slm__cpu_exp_avx512's 2 (pos + 8 instead of pos + 4): a 16-lane
 * score sum and normalizing at the end are reorderings that the bound (a
 * sequential sum's worst case) already covers. That bound is loose, so the
 * two paths are also held to each other: relative 1e-5 of M = sum_t w_t
 * |v_t| (the size of the mix; an element can cancel to near 0, so not of
 * the element). Both paths' actual errors are a few u times the score
 * error, about sqrt(head_size) u S <= 1e-6 M here (S, the largest score
 * magnitude, is at most sqrt(128) / 4 on average for uniform [-1, 1] data
 * and never near 1e-5 / u), so 1e-5 leaves a margin of 10 without hiding
 * a wrong weight or row, which moves outputs by 1e-2 or more. */
static void check_paged(size_t block_size, size_t head_size, size_t pos,
                        slm__isa hw, uint64_t *rng)
{
    enum { HEADS = 4, KV_HEADS = 2 };
    const size_t kv_stride = KV_HEADS * head_size + 5;
    const size_t n = pos + 1;
    const size_t blocks = (n + block_size - 1) / block_size + 3;
    const size_t rows = blocks * block_size;
    float *kp = alloc_random(rows * kv_stride, rng, -1.0f, 1.0f);
    float *vp = alloc_random(rows * kv_stride, rng, -1.0f, 1.0f);
    float *q = alloc_random(HEADS * head_size, rng, -1.0f, 1.0f);
    float *want = alloc_poisoned(head_size);
    float *got = alloc_poisoned(head_size);
    float *att = alloc_poisoned(n);
    uint32_t *table = test_malloc(blocks * sizeof *table);
    double *w = test_malloc(n * sizeof *w);
    assert_non_null(table);
    assert_non_null(w);
    /* Scattered: block j of the sequence is pool block (j * 5 + 2) mod
     * blocks, a permutation whenever 5 does not divide blocks. */
    size_t stepb = blocks % 5 == 0 ? 7 : 5;
    for (size_t j = 0; j < blocks; j++)
        table[j] = (uint32_t)((j * stepb + 2) % blocks);

    const double rs = 1.0 / sqrt((double)head_size);
    for (size_t h = 0; h < HEADS; h++) {
        const size_t kv_off = (h / (HEADS / KV_HEADS)) * head_size;
        const float *qh = q + h * head_size;
        slm__cpu_isa_force(SLM__ISA_SCALAR);
        slm_cpu_attention_paged_head(want, qh, kp, vp, table, block_size, att,
                                     head_size, kv_stride, kv_off, pos);
        slm__cpu_isa_force(hw);
        slm_cpu_attention_paged_head(got, qh, kp, vp, table, block_size, att,
                                     head_size, kv_stride, kv_off, pos);
        check_sentinel(got, head_size, "paged attention out");
        check_sentinel(att, n, "paged attention att");

        double mx = -INFINITY, big = 0.0, den = 0.0;
        for (size_t t = 0; t < n; t++) {
            const float *k =
                kp +
                ((size_t)table[t / block_size] * block_size + t % block_size) *
                    kv_stride +
                kv_off;
            double s = 0.0, m = 0.0;
            for (size_t i = 0; i < head_size; i++) {
                s += (double)qh[i] * (double)k[i];
                m += fabs((double)qh[i] * (double)k[i]);
            }
            w[t] = s * rs;
            mx = fmax(mx, w[t]);
            big = fmax(big, m * rs);
        }
        for (size_t t = 0; t < n; t++)
            den += exp(w[t] - mx);
        for (size_t t = 0; t < n; t++)
            w[t] = exp(w[t] - mx) / den;
        const double w_tol =
            2.0 * (2.0 * ((double)head_size + 2.0) * big + (double)pos + 8.0) *
            U;
        const double o_tol = w_tol + 2.0 * ((double)pos + 2.0) * U;
        for (size_t i = 0; i < head_size; i++) {
            double s = 0.0, m = 0.0;
            for (size_t t = 0; t < n; t++) {
                const double v =
                    vp[((size_t)table[t / block_size] * block_size +
                        t % block_size) *
                           kv_stride +
                       kv_off + i];
                s += w[t] * v;
                m += w[t] * fabs(v);
            }
            if (!(fabs(got[i] - s) <= o_tol * m + 1e-30) ||
                !(fabs(want[i] - s) <= o_tol * m + 1e-30))
                fail_msg("paged bs %zu hs %zu pos %zu h %zu: out[%zu] %.9g "
                         "(scalar %.9g) vs %.9g",
                         block_size, head_size, pos, h, i, got[i], want[i], s);
            if (!(fabs(got[i] - want[i]) <= 1e-5 * m))
                fail_msg("paged bs %zu hs %zu pos %zu h %zu: out[%zu] %.9g, "
                         "scalar twin %.9g",
                         block_size, head_size, pos, h, i, got[i], want[i]);
        }
    }
    test_free(w);
    test_free(table);
    test_free(att);
    test_free(got);
    test_free(want);
    test_free(q);
    test_free(vp);
    test_free(kp);
}

static void test_attention_paged_shapes(void **state)
{
    (void)state;
    static const size_t block_sizes[] = {1, 3, 16, 32};
    static const size_t head_sizes[] = {16, 64, 128};
    static const size_t positions[] = {0, 1, 15, 16, 17, 200};
    const slm__isa hw = slm__cpu_isa_detected();
    uint64_t rng = 0x7061676564000001ULL;
    for (size_t a = 0; a < sizeof block_sizes / sizeof *block_sizes; a++)
        for (size_t b = 0; b < sizeof head_sizes / sizeof *head_sizes; b++)
            for (size_t c = 0; c < sizeof positions / sizeof *positions; c++)
                check_paged(block_sizes[a], head_sizes[b], positions[c], hw,
                            &rng);
    slm__cpu_isa_force(hw);
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static void exp16(float *y, const float *x)
{
    _mm512_storeu_ps(y, slm__cpu_exp_avx512(_mm512_loadu_ps(x)));
}

/* Distance from got to the exact exp(x), in units of the float spacing
 * at the exact value (2^-149 in the subnormal range). Past FLT_MAX, inf
 * counts as the next value, 2^128, as rounding treats it. */
static double exp_ulps(float got, float x)
{
    const double want = exp((double)x);
    const float wf = (float)want;
    if (isinf(wf))
        return isinf(got) && got > 0.0f ? 0.0 : INFINITY;
    const double g = isinf(got) ? ldexp(1.0, 128) : (double)got;
    const double ulp = (double)nextafterf(wf, 0.0f) == (double)wf
                           ? ldexp(1.0, -149)
                           : (double)wf - (double)nextafterf(wf, 0.0f);
    return fabs(g - want) / ulp;
}
#endif

/* slm__cpu_exp_avx512 within 2 ulp of exp, and so within 3 of glibc's
 * expf (itself within 1), on a dense sweep of [-110, 90] (every result
 * from 0 through the subnormals to inf), random inputs over the same
 * range, and the edges: 0 gives exactly 1, inputs below -104 (-inf
 * included) exactly 0, inputs above the overflow threshold inf, NaN NaN. */
static void test_exp_avx512(void **state)
{
    (void)state;
#if defined(__x86_64__)
    /* main runs this case set ("avx512") only on a CPU with AVX-512 */
    assert_true(slm__cpu_isa_detected() >= SLM__ISA_AVX512);
    enum { N = 16 * 13000 };
    float *x = test_malloc(N * sizeof *x), *y = test_malloc(N * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    uint64_t rng = 0x6578703531320001ULL;
    for (size_t i = 0; i < N; i++)
        x[i] = i % 2 ? -110.0f + 200.0f * (float)i / (float)N
                     : slm_test_rand_float(&rng, -110.0f, 90.0f);
    for (size_t i = 0; i < N; i += 16)
        exp16(y + i, x + i);
    double worst = 0.0;
    for (size_t i = 0; i < N; i++) {
        const double e = exp_ulps(y[i], x[i]);
        if (!(e <= 2.0))
            fail_msg("exp(%.9g) = %.9g, %.3g ulp from %.9g", x[i], y[i], e,
                     exp((double)x[i]));
        if (e > worst)
            worst = e;
        const float ef = expf(x[i]);
        if (isinf(ef) || isinf(y[i])) {
            if (ef != y[i])
                fail_msg("exp(%.9g) = %.9g, expf %.9g", x[i], y[i], ef);
        } else if (!(fabs((double)y[i] - (double)ef) <=
                     3.0 * ((double)nextafterf(ef, INFINITY) - (double)ef)))
            fail_msg("exp(%.9g) = %.9g, expf %.9g", x[i], y[i], ef);
    }
    print_message("slm__cpu_exp_avx512: worst %.3f ulp\n", worst);

    const float edge[16] = {0.0f,    -0.0f,    -INFINITY, -FLT_MAX,
                            -1e30f,  -104.0f,  -103.0f,   1e-30f,
                            -1e-30f, 88.72f,   88.73f,    89.0f,
                            1e30f,   INFINITY, NAN,       -87.5f};
    float got[16];
    exp16(got, edge);
    assert_true(got[0] == 1.0f && got[1] == 1.0f);
    assert_true(got[2] == 0.0f && got[3] == 0.0f && got[4] == 0.0f &&
                got[5] == 0.0f && !signbit(got[2]));
    assert_true(got[6] > 0.0f && exp_ulps(got[6], edge[6]) <= 2.0);
    assert_true(got[7] == 1.0f && got[8] == 1.0f);
    assert_true(isfinite(got[9]) && exp_ulps(got[9], edge[9]) <= 2.0);
    assert_true(isinf(got[10]) && isinf(got[11]) && isinf(got[12]) &&
                isinf(got[13]) && got[13] > 0.0f);
    assert_true(isnan(got[14]));
    assert_true(exp_ulps(got[15], edge[15]) <= 2.0);
    test_free(y);
    test_free(x);
#else
    fail_msg("AVX-512 exp on a CPU that is not x86-64");
#endif
}

static void test_swiglu(void **state)
{
    (void)state;
    uint64_t rng = 0x737769676c750001ULL;
    for (size_t i = 0; i < N_AWKWARD; i++) {
        size_t n = awkward[i];
        float *h1 = alloc_random(n, &rng, -8.0f, 8.0f);
        float *h3 = alloc_random(n, &rng, -2.0f, 2.0f);
        float *in = alloc_poisoned(n);
        memcpy(in, h1, n * sizeof(float));
        slm_cpu_swiglu(h1, h3, n);
        check_sentinel(h1, n, "swiglu");
        for (size_t j = 0; j < n; j++) {
            double v = in[j];
            double ref = v / (1.0 + exp(-v)) * (double)h3[j];
            /* Tolerance: expf within 2 ulps, then an add, a division and two
             * products, each one rounding: 8u relative is ample. */
            if (!(fabs((double)h1[j] - ref) <= 8.0 * U * fabs(ref) + 1e-37))
                fail_msg("swiglu [%zu]: silu(%.9g) * %.9g = %.9g, want %.9g", j,
                         v, (double)h3[j], (double)h1[j], ref);
            if (EXACT_CHECKS) {
                float val = in[j];
                val *= (1.0f / (1.0f + expf(-val)));
                val *= h3[j];
                assert_true(val == h1[j] || (val == 0.0f && h1[j] == 0.0f));
            }
        }
        test_free(in);
        test_free(h3);
        test_free(h1);
    }
    /* Large inputs saturate without NaN: silu(x) -> x, silu(-x) -> -0. */
    float a[4] = {100.0f, -100.0f, 1000.0f, -1000.0f};
    const float b[4] = {1.0f, 1.0f, 2.0f, 2.0f};
    slm_cpu_swiglu(a, b, 4);
    assert_true(a[0] == 100.0f && a[1] == 0.0f && a[2] == 2000.0f &&
                a[3] == 0.0f);
}

/* ------------------------------------------------------------------------ */

static void test_add(void **state)
{
    (void)state;
    uint64_t rng = 0x6164640000000001ULL;
    for (size_t i = 0; i < N_AWKWARD; i++) {
        size_t n = awkward[i];
        float *x = alloc_random(n, &rng, -100.0f, 100.0f);
        float *y = alloc_random(n, &rng, -100.0f, 100.0f);
        float *want = alloc_poisoned(n);
        for (size_t j = 0; j < n; j++)
            want[j] = x[j] + y[j];
        slm_cpu_add(x, y, n);
        check_sentinel(x, n, "add");
        /* One IEEE addition per element: exact. */
        assert_true(bits_equal(x, want, n));
        test_free(want);
        test_free(y);
        test_free(x);
    }
}

/* ---- twins of the CUDA kernels ----------------------------------------- */

static uint16_t f16_of(float f)
{
    uint16_t h;
    slm_cpu_f32_to_f16(&h, &f, 1);
    return h;
}

static uint16_t bf16_of(float f)
{
    uint16_t h;
    slm_cpu_f32_to_bf16(&h, &f, 1);
    return h;
}

static float f16_val(uint16_t h)
{
    float f;
    slm_cpu_f16_to_f32(&f, &h, 1);
    return f;
}

static float bf16_val(uint16_t h)
{
    float f;
    slm_cpu_bf16_to_f32(&f, &h, 1);
    return f;
}

/* Is h the nearest of its neighbours to x, ties to the even one? Decoding is
 * exact, so the distances are exact in double. */
static int is_nearest(float x, uint16_t h, float (*val)(uint16_t))
{
    double d = fabs((double)val(h) - (double)x);
    for (int step = -1; step <= 1; step += 2) {
        uint16_t nb = (uint16_t)(h + step);
        if (((nb ^ h) & 0x8000u) || isnan(val(nb)))
            continue;
        double dn = fabs((double)val(nb) - (double)x);
        if (dn < d || (dn == d && (nb & 1u) == 0))
            return 0;
    }
    return 1;
}

static void test_half_conversions(void **state)
{
    (void)state;
    /* hand-checked float16 encodings */
    assert_int_equal(f16_of(1.0f), 0x3c00);
    assert_int_equal(f16_of(-2.0f), 0xc000);
    assert_int_equal(f16_of(0.0f), 0x0000);
    assert_int_equal(f16_of(-0.0f), 0x8000);
    assert_int_equal(f16_of(0.1f), 0x2e66);
    assert_int_equal(f16_of(1.0f / 3.0f), 0x3555);
    assert_int_equal(f16_of(65504.0f), 0x7bff); /* largest finite */
    assert_int_equal(f16_of(65519.0f), 0x7bff); /* below the midpoint */
    assert_int_equal(f16_of(65520.0f), 0x7c00); /* midpoint: to inf */
    assert_int_equal(f16_of(INFINITY), 0x7c00);
    assert_int_equal(f16_of(-INFINITY), 0xfc00);
    assert_int_equal(f16_of(0x1p-14f), 0x0400);        /* smallest normal */
    assert_int_equal(f16_of(0x1p-24f), 0x0001);        /* smallest subnormal */
    assert_int_equal(f16_of(0x1p-25f), 0x0000);        /* tie: to even 0 */
    assert_int_equal(f16_of(0x1.8p-25f), 0x0001);      /* above the tie */
    assert_int_equal(f16_of(0x3p-25f), 0x0002);        /* 1.5 ulp: tie to 2 */
    assert_int_equal(f16_of(1.0f + 0x1p-11f), 0x3c00); /* tie: to even */
    assert_int_equal(f16_of(1.0f + 0x3p-11f), 0x3c02); /* tie: to even */
    assert_int_equal(f16_of(0x1.ffcp-15f), 0x0400);    /* carry into normal */
    assert_true(isnan(f16_val(f16_of(NAN))));
    /* hand-checked bfloat16 encodings */
    assert_int_equal(bf16_of(1.0f), 0x3f80);
    assert_int_equal(bf16_of(-2.0f), 0xc000);
    assert_int_equal(bf16_of(1.0f + 0x1p-8f), 0x3f80); /* tie: to even */
    assert_int_equal(bf16_of(1.0f + 0x3p-8f), 0x3f82); /* tie: to even */
    assert_int_equal(bf16_of(FLT_MAX), 0x7f80);        /* rounds to inf */
    assert_int_equal(bf16_of(0x1p-133f), 0x0001);      /* subnormal */
    assert_true(isnan(bf16_val(bf16_of(NAN))));
    assert_true(isnan(bf16_val(bf16_of(-NAN))));
    /* every non-NaN half survives the round trip, bit for bit */
    for (uint32_t u = 0; u < 0x10000u; u++) {
        uint16_t h = (uint16_t)u;
        float f = f16_val(h);
        if (!isnan(f))
            assert_int_equal(f16_of(f), h);
        float g = bf16_val(h);
        if (!isnan(g))
            assert_int_equal(bf16_of(g), h);
        else
            assert_true(isnan(bf16_val(bf16_of(g))));
    }
    /* random floats over the whole range round to the nearest, ties even */
    uint64_t rng = 0x6861666600000001ULL;
    for (int i = 0; i < 200000; i++) {
        uint32_t bits = (uint32_t)slm_test_rand_u64(&rng);
        float x;
        memcpy(&x, &bits, sizeof x);
        if (isnan(x))
            continue;
        uint16_t h = f16_of(x);
        if (fabsf(x) < 65520.0f) {
            if (!is_nearest(x, h, f16_val))
                fail_msg("f16(%a) = 0x%04x is not the nearest", (double)x, h);
        } else {
            assert_int_equal(h & 0x7fffu, 0x7c00);
        }
        uint16_t b = bf16_of(x);
        if (!isinf(bf16_val(b)) && !is_nearest(x, b, bf16_val))
            fail_msg("bf16(%a) = 0x%04x is not the nearest", (double)x, b);
    }
    /* the array forms agree with the single ones and stop at n */
    float src[5] = {1.0f, -0.5f, 3.0f, 65504.0f, 0.0f};
    uint16_t h[6], b[6];
    float back[6];
    h[5] = b[5] = 0xabcd;
    back[5] = SENTINEL;
    slm_cpu_f32_to_f16(h, src, 5);
    slm_cpu_f32_to_bf16(b, src, 5);
    slm_cpu_f16_to_f32(back, h, 5);
    assert_true(h[5] == 0xabcd && b[5] == 0xabcd && back[5] == SENTINEL);
    assert_true(bits_equal(back, src, 5)); /* all exact in float16 */
    slm_cpu_bf16_to_f32(back, b, 5);
    assert_true(back[0] == 1.0f && back[1] == -0.5f && back[2] == 3.0f &&
                back[3] == 65536.0f && back[4] == 0.0f);
}

static void test_embedding_slice(void **state)
{
    (void)state;
    enum { DIM = 3, COUNT = 4, ROWS = 6 };
    float table[COUNT * DIM];
    for (int i = 0; i < COUNT * DIM; i++)
        table[i] = (float)(i + 1);
    /* slice [10, 14): 10 and 13 are its ends, 9 and 14 just outside */
    const int32_t tokens[ROWS] = {10, 13, 9, 14, -1, 12};
    float *out = alloc_poisoned(ROWS * DIM);
    slm_cpu_embedding_slice(out, table, tokens, ROWS, 10, COUNT, DIM);
    check_sentinel(out, ROWS * DIM, "embedding");
    const float want[ROWS * DIM] = {1, 2, 3, 10, 11, 12, 0, 0, 0,
                                    0, 0, 0, 0,  0,  0,  7, 8, 9};
    assert_true(bits_equal(out, want, ROWS * DIM));
    /* two slices sum to the full lookup */
    float *lo = alloc_poisoned(ROWS * DIM), *hi = alloc_poisoned(ROWS * DIM);
    const int32_t all[ROWS] = {0, 1, 2, 3, 1, 0};
    slm_cpu_embedding_slice(lo, table, all, ROWS, 0, 2, DIM);
    slm_cpu_embedding_slice(hi, table + 2 * DIM, all, ROWS, 2, 2, DIM);
    for (int r = 0; r < ROWS; r++)
        for (int i = 0; i < DIM; i++)
            assert_true(lo[r * DIM + i] + hi[r * DIM + i] ==
                        table[all[r] * DIM + i]);
    test_free(hi);
    test_free(lo);
    test_free(out);
}

static void test_argmax(void **state)
{
    (void)state;
    const float a[] = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f};
    assert_int_equal(slm_cpu_argmax(a, 5), 1); /* the first maximum */
    assert_int_equal(slm_cpu_argmax(a, 1), 0);
    const float b[] = {-INFINITY, -INFINITY, -1e30f};
    assert_int_equal(slm_cpu_argmax(b, 3), 2);
    const float c[] = {0.0f, NAN, 5.0f, NAN};
    assert_int_equal(slm_cpu_argmax(c, 4), 2); /* NaN never wins ... */
    const float d[] = {NAN, 1.0f, 5.0f};
    assert_int_equal(slm_cpu_argmax(d, 3), 0); /* ... except at index 0 */
}

/* The coin coordinator/sampler.c draws first for a seed (its rand_unit after
 * slm_sampler_create; restated here, so a change there fails this test). */
static float sampler_first_coin(uint64_t seed)
{
    uint64_t x = seed + 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    uint64_t rng = (x ^ (x >> 31)) | 1;
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (float)((rng * 0x2545f4914f6cdd1dULL) >> 40) * 0x1.0p-24f;
}

static void test_sample_hand(void **state)
{
    (void)state;
    /* probabilities proportional to 1, 2, 3, 4 */
    const float logits[4] = {logf(1.0f), logf(2.0f), logf(3.0f), logf(4.0f)};
    slm_cpu_candidate scratch[4];
    /* no cut: ids in order, cdf 0.1, 0.3, 0.6, 1.0 */
    assert_int_equal(
        slm_cpu_sample_topk_topp(logits, 4, 1.0f, 0, 1.0f, 0.05f, scratch), 0);
    assert_int_equal(
        slm_cpu_sample_topk_topp(logits, 4, 1.0f, 0, 1.0f, 0.15f, scratch), 1);
    assert_int_equal(
        slm_cpu_sample_topk_topp(logits, 4, 1.0f, 0, 1.0f, 0.99f, scratch), 3);
    /* top-k 2 keeps ids 3, 2 (4/7, 3/7), walked in that order */
    assert_int_equal(
        slm_cpu_sample_topk_topp(logits, 4, 1.0f, 2, 1.0f, 0.5f, scratch), 3);
    assert_int_equal(
        slm_cpu_sample_topk_topp(logits, 4, 1.0f, 2, 1.0f, 0.6f, scratch), 2);
    /* top-p 0.5: 0.4 < 0.5, 0.7 >= 0.5: ids 3, 2 again */
    assert_int_equal(
        slm_cpu_sample_topk_topp(logits, 4, 1.0f, 0, 0.5f, 0.6f, scratch), 2);
    assert_int_equal(
        slm_cpu_sample_topk_topp(logits, 4, 1.0f, 0, 0.5f, 0.999f, scratch), 2);
    /* top-p 0.35: id 3 alone */
    assert_int_equal(
        slm_cpu_sample_topk_topp(logits, 4, 1.0f, 0, 0.35f, 0.999f, scratch),
        3);
    /* top-k 3 then top-p 0.5 of the kept 9/10: 4/9 < 0.5, 7/9 >= 0.5 */
    assert_int_equal(
        slm_cpu_sample_topk_topp(logits, 4, 1.0f, 3, 0.5f, 0.6f, scratch), 2);
    /* top-k larger than the vocabulary: sorted order, no cut */
    assert_int_equal(
        slm_cpu_sample_topk_topp(logits, 4, 1.0f, 9, 1.0f, 0.95f, scratch), 0);
    /* ties are broken by id: equal logits, top-k 1 keeps the lowest id */
    const float flat[3] = {2.0f, 2.0f, 2.0f};
    assert_int_equal(
        slm_cpu_sample_topk_topp(flat, 3, 0.7f, 1, 1.0f, 0.9f, scratch), 0);
    /* a tiny temperature is greedy */
    assert_int_equal(
        slm_cpu_sample_topk_topp(logits, 4, 1e-4f, 0, 1.0f, 0.5f, scratch), 3);
    /* the logits are left alone */
    assert_true(logits[3] == logf(4.0f));
}

/* The twin picks what coordinator/sampler.c picks for the same coin. */
static void test_sample_matches_sampler(void **state)
{
    (void)state;
    const size_t vocabs[] = {1, 2, 7, 512, 32000};
    const struct {
        float temperature;
        int32_t top_k;
        float top_p;
    } params[] = {{1.0f, 0, 1.0f},  {1.0f, 0, 0.9f},  {0.7f, 40, 1.0f},
                  {1.3f, 40, 0.8f}, {0.5f, 1, 1.0f},  {1.0f, 100000, 0.5f},
                  {2.0f, 0, 0.1f},  {0.9f, 3, 0.95f}, {1.0f, 0, 0.999f}};
    uint64_t rng = 0x73616d706c650001ULL;
    for (size_t v = 0; v < sizeof vocabs / sizeof *vocabs; v++) {
        const size_t n = vocabs[v];
        float *logits = test_malloc(n * sizeof *logits);
        float *copy = test_malloc(n * sizeof *copy);
        slm_cpu_candidate *scratch = test_malloc(n * sizeof *scratch);
        assert_non_null(logits && copy && scratch);
        for (size_t p = 0; p < sizeof params / sizeof *params; p++) {
            for (int trial = 0; trial < 6; trial++) {
                /* trial 5 quantizes the logits, so many are tied */
                slm_test_fill_uniform(logits, n, &rng, -6.0f, 6.0f);
                if (trial == 5)
                    for (size_t i = 0; i < n; i++)
                        logits[i] = roundf(logits[i]);
                slm_sampling_params sp = slm_sampling_defaults();
                sp.temperature = params[p].temperature;
                sp.top_k = params[p].top_k;
                sp.top_p = params[p].top_p;
                sp.seed = slm_test_rand_u64(&rng);
                slm_sampler_t *s = NULL;
                assert_int_equal(slm_sampler_create((int32_t)n, &sp, &s),
                                 SLM_OK);
                memcpy(copy, logits, n * sizeof *copy);
                int32_t want = slm_sampler_sample(s, copy, NULL, 0);
                slm_sampler_destroy(&s);
                int32_t got = slm_cpu_sample_topk_topp(
                    logits, n, sp.temperature, sp.top_k, sp.top_p,
                    sampler_first_coin(sp.seed), scratch);
                if (got != want)
                    fail_msg("vocab %zu, T %g, top_k %d, top_p %g: twin %d, "
                             "sampler %d",
                             n, (double)sp.temperature, sp.top_k,
                             (double)sp.top_p, got, want);
            }
        }
        test_free(scratch);
        test_free(copy);
        test_free(logits);
    }
}

int main(int argc, char **argv)
{
    if (slm_test_case_set(argc, argv, "avx512")) {
        /* The case set "avx512" (unit.test_kernels.avx512). The main run's
         * ISA loops cover AVX-512 paths too where the CPU has it; on one
         * without, this set's skip is what says they went untested. */
#if defined(__x86_64__)
        if (slm__cpu_isa_detected() < SLM__ISA_AVX512)
#endif
            return slm_test_cannot_run("the CPU has no AVX-512: its kernels "
                                       "are not tested here");
        const struct CMUnitTest avx512[] = {
            cmocka_unit_test(test_exp_avx512),
        };
        return cmocka_run_group_tests_name("kernels, AVX-512", avx512, NULL,
                                           NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_isa),
        cmocka_unit_test(test_matvec),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_paged),
        cmocka_unit_test(test_attention_paged_shapes),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_half_conversions),
        cmocka_unit_test(test_embedding_slice),
        cmocka_unit_test(test_argmax),
        cmocka_unit_test(test_sample_hand),
        cmocka_unit_test(test_sample_matches_sampler),
    };
    return cmocka_run_group_tests_name("kernels", tests, NULL, NULL);
}
