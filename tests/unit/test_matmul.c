/*
 * tests/unit/test_matmul.c - the batched products (kernels/cpu/matmul.c,
 * for float32 and 16-bit weights, kernels/cpu/matmul_q8.c, and on
 * pre-packed weights kernels/cpu/panels.c) against plain double-precision
 * references. The 16-bit products are checked against the exact product of
 * the widened weights (bfloat16 and half values of the same W).
 *
 * Every check runs on every instruction set this CPU has (forced with
 * slm__cpu_isa_force), so the AVX-512, AVX2 and scalar paths are each
 * compared with the reference, on shapes that are not multiples of any tile
 * size: batch 1..70 (the matvec, dot and GEMM regimes and every tail of the
 * micro-kernels' token groups), rows cutting the 32- and 16-row panels,
 * columns not a multiple of 16 and crossing the column blocks (256 for
 * float32, 512 for int8). Pointers are offset by one float or byte so that
 * nothing is aligned. Outputs are poisoned with NaN, so a skipped element
 * fails, and a sentinel after them catches writes past the end.
 *
 * Two kinds of data:
 *   - small integers, whose products and partial sums are exact in float
 *     whatever the summation order: every path must then give the exact
 *     result, bit for bit, which catches a term dropped, doubled or taken
 *     from the wrong place however small;
 *   - uniform random floats, checked against a rounding-error bound (below).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "kernels/cpu/isa.h"
#include "kernels/kernels.h"
#include "tests/testutil.h"

/* Unit roundoff of float. */
#define U        ((double)FLT_EPSILON / 2.0)
#define SENTINEL 12345.0f

/* The float32 and int8 GEMMs' column blocks (MM_KC, Q8_KC): the shapes
 * below cross them. Only used to choose shapes; the tolerance does not
 * depend on them. */
#define KC_F32 256
#define KC_Q8  512

/* Tolerance for float inputs. Every path computes each output as a tree of
 * float roundings in which any one product passes through at most
 * k = cols + cols / 16 + 8 of them: the GEMM runs one FMA chain per column
 * block (at most cols FMAs in all), then one addition per block (blocks are
 * at least 256 columns, except the last), and the int8 paths one multiply
 * by the scale; the dot and matvec paths have far shorter chains (several
 * interleaved partial sums, then a reduction of depth 4 to 6). The standard
 * bound for such a sum then gives
 *   |out - exact| <= gamma_k * sum_j |w_j x_j|,  gamma_k = k u / (1 - k u),
 * with exact and the magnitude sum computed in double. */
static double tolerance(size_t cols, double mag)
{
    double k = (double)cols + (double)cols / 16.0 + 8.0;
    return k * U / (1.0 - k * U) * mag + 1e-30;
}

/* n floats from cmocka's allocator (leaks fail the test), NaN, with one
 * sentinel after them. */
static float *alloc_poisoned(size_t n)
{
    float *p = test_malloc((n + 1) * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
    p[n] = SENTINEL;
    return p;
}

static void check_sentinel(const float *p, size_t n, const char *what)
{
    if (p[n] != SENTINEL)
        fail_msg("%s: wrote past its %zu outputs", what, n);
}

/* Integers in [-lim, lim], as floats. */
static void fill_ints(float *p, size_t n, uint64_t *rng, int lim)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((int)(slm_test_rand_u64(rng) % (uint64_t)(2 * lim + 1)) -
                       lim);
}

/* A problem: W (rows, cols) and x (batch, cols) at odd addresses, and the
 * double-precision reference. */
typedef struct {
    size_t batch, rows, cols;
    float *wbuf, *xbuf;  /* allocations */
    float *w, *x;        /* (rows, cols), (batch, cols): buf + 1 */
    int8_t *qbuf, *q;    /* (rows, cols): qbuf + 1 */
    float *scale;        /* (rows) */
    float *dq;           /* (rows, cols) float(q * scale) */
    double *ref, *mag;   /* (batch, rows): exact W x, sum |w x| */
    double *qref, *qmag; /* the same for the dequantized weights */
    /* W rounded to bfloat16 [0] and half [1], at odd addresses, and the
     * exact products of their widened values. */
    uint16_t *hbuf[2], *h[2];
    double *href[2], *hmag[2];
} problem;

static void problem_init(problem *p, size_t batch, size_t rows, size_t cols,
                         uint64_t *rng, int integers)
{
    memset(p, 0, sizeof *p);
    p->batch = batch;
    p->rows = rows;
    p->cols = cols;
    p->wbuf = test_malloc((rows * cols + 1) * sizeof(float));
    p->xbuf = test_malloc((batch * cols + 1) * sizeof(float));
    p->qbuf = test_malloc(rows * cols + 1);
    p->scale = test_malloc((rows ? rows : 1) * sizeof(float));
    p->dq = test_malloc((rows * cols + 1) * sizeof(float));
    p->ref = test_malloc((batch * rows + 1) * sizeof(double));
    p->mag = test_malloc((batch * rows + 1) * sizeof(double));
    p->qref = test_malloc((batch * rows + 1) * sizeof(double));
    p->qmag = test_malloc((batch * rows + 1) * sizeof(double));
    assert_true(p->wbuf && p->xbuf && p->qbuf && p->scale && p->dq && p->ref &&
                p->mag && p->qref && p->qmag);
    for (int t = 0; t < 2; t++) {
        p->hbuf[t] = test_malloc((rows * cols + 1) * sizeof(uint16_t));
        p->href[t] = test_malloc((batch * rows + 1) * sizeof(double));
        p->hmag[t] = test_malloc((batch * rows + 1) * sizeof(double));
        assert_true(p->hbuf[t] && p->href[t] && p->hmag[t]);
        p->h[t] = p->hbuf[t] + 1;
    }
    p->w = p->wbuf + 1;
    p->x = p->xbuf + 1;
    p->q = p->qbuf + 1;
    if (integers) {
        /* |w x| <= 127 * 3, so every partial sum is an integer below
         * 381 * cols < 2^24 (cols < 44000 here), exact in float. One weight per
         * row is
         * +-127, so the row's scale is exactly 1 and q == w. */
        fill_ints(p->w, rows * cols, rng, 3);
        fill_ints(p->x, batch * cols, rng, 3);
        for (size_t r = 0; r < rows && cols > 0; r++)
            p->w[r * cols + slm_test_rand_u64(rng) % cols] =
                slm_test_rand_u64(rng) & 1 ? 127.0f : -127.0f;
    } else {
        slm_test_fill_uniform(p->w, rows * cols, rng, -1.0f, 1.0f);
        slm_test_fill_uniform(p->x, batch * cols, rng, -1.0f, 1.0f);
    }
    slm_cpu_quantize_q8(p->q, p->scale, p->w, rows, cols);
    slm_cpu_f32_to_bf16(p->h[0], p->w, rows * cols);
    slm_cpu_f32_to_f16(p->h[1], p->w, rows * cols);
    float *widened = test_malloc((rows * cols + 1) * sizeof(float));
    assert_non_null(widened);
    for (int t = 0; t < 2; t++) {
        if (t == 0)
            slm_cpu_bf16_to_f32(widened, p->h[0], rows * cols);
        else
            slm_cpu_f16_to_f32(widened, p->h[1], rows * cols);
        for (size_t b = 0; b < batch; b++)
            for (size_t r = 0; r < rows; r++) {
                double s = 0.0, m = 0.0;
                for (size_t j = 0; j < cols; j++) {
                    double pw =
                        (double)widened[r * cols + j] * p->x[b * cols + j];
                    s += pw;
                    m += fabs(pw);
                }
                p->href[t][b * rows + r] = s;
                p->hmag[t][b * rows + r] = m;
            }
    }
    test_free(widened);
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < cols; j++)
            p->dq[r * cols + j] = (float)p->q[r * cols + j] * p->scale[r];
    for (size_t b = 0; b < batch; b++) {
        for (size_t r = 0; r < rows; r++) {
            double s = 0.0, m = 0.0, qs = 0.0, qm = 0.0;
            for (size_t j = 0; j < cols; j++) {
                double xv = p->x[b * cols + j];
                double pw = (double)p->w[r * cols + j] * xv;
                /* The exact dequantized weight, not its float rounding. */
                double pq =
                    (double)p->q[r * cols + j] * (double)p->scale[r] * xv;
                s += pw;
                m += fabs(pw);
                qs += pq;
                qm += fabs(pq);
            }
            p->ref[b * rows + r] = s;
            p->mag[b * rows + r] = m;
            p->qref[b * rows + r] = qs;
            p->qmag[b * rows + r] = qm;
        }
    }
}

static void problem_free(problem *p)
{
    for (int t = 0; t < 2; t++) {
        test_free(p->hmag[t]);
        test_free(p->href[t]);
        test_free(p->hbuf[t]);
    }
    test_free(p->qmag);
    test_free(p->qref);
    test_free(p->mag);
    test_free(p->ref);
    test_free(p->dq);
    test_free(p->scale);
    test_free(p->qbuf);
    test_free(p->xbuf);
    test_free(p->wbuf);
}

/* out against ref within tolerance(), or exactly where exact is set. */
static void check_out(const problem *p, const float *out, const double *ref,
                      const double *mag, int exact, const char *what)
{
    for (size_t i = 0; i < p->batch * p->rows; i++) {
        double err = fabs((double)out[i] - ref[i]);
        double tol = exact ? 0.0 : tolerance(p->cols, mag[i]);
        if (!(err <= tol))
            fail_msg("%s batch %zu rows %zu cols %zu isa %s threads %d: "
                     "out[%zu][%zu] = %.9g, want %.9g (error %.3g > %.3g)",
                     what, p->batch, p->rows, p->cols, slm_cpu_isa(),
                     omp_get_max_threads(), i / p->rows, i % p->rows,
                     (double)out[i], ref[i], err, tol);
    }
    check_sentinel(out, p->batch * p->rows, what);
}

/* Both products of p on the current ISA and thread count. */
static void check_problem(const problem *p, int exact)
{
    size_t n = p->batch * p->rows;
    float *out = alloc_poisoned(n);
    float *outq = alloc_poisoned(n);
    float *outd = alloc_poisoned(n);
    slm_cpu_matmul(out, p->w, p->x, p->batch, p->rows, p->cols);
    check_out(p, out, p->ref, p->mag, exact, "matmul");
    slm_cpu_matmul_q8(outq, p->q, p->scale, p->x, p->batch, p->rows, p->cols);
    check_out(p, outq, p->qref, p->qmag, exact, "matmul_q8");
    /* The int8 product is the float product of the dequantized weights:
     * each is within tolerance() of its exact value, and those differ by
     * the rounding of q * scale to float, at most u * qmag. */
    slm_cpu_matmul(outd, p->dq, p->x, p->batch, p->rows, p->cols);
    for (size_t i = 0; i < n; i++) {
        double tol = 2.0 * tolerance(p->cols, p->qmag[i]) * 1.01 +
                     U * p->qmag[i] + 1e-30;
        if (exact)
            tol = 0.0;
        if (!(fabs((double)outq[i] - (double)outd[i]) <= tol))
            fail_msg("q8 vs dequantized f32, batch %zu rows %zu cols %zu isa "
                     "%s: [%zu] %.9g vs %.9g",
                     p->batch, p->rows, p->cols, slm_cpu_isa(), i,
                     (double)outq[i], (double)outd[i]);
    }
    /* Small integers are exact in both 16-bit types, so the exact cases
     * stay exact. */
    for (int t = 0; t < 2; t++) {
        float *outh = alloc_poisoned(n);
        slm_cpu_matmul_h16(outh, p->h[t], t ? SLM_HALF_F16 : SLM_HALF_BF16,
                           p->x, p->batch, p->rows, p->cols);
        check_out(p, outh, p->href[t], p->hmag[t], exact,
                  t ? "matmul_h16 (f16)" : "matmul_h16 (bf16)");
        test_free(outh);
    }
    test_free(outd);
    test_free(outq);
    test_free(out);
}

/* Runs check_problem on every ISA the CPU has, with each thread count. */
static void check_all_isas(const problem *p, int exact, const int *threads,
                           size_t n_threads)
{
    slm__isa hw = slm__cpu_isa_detected();
    for (int isa = SLM__ISA_SCALAR; isa <= (int)hw; isa++) {
        slm__cpu_isa_force((slm__isa)isa);
        for (size_t t = 0; t < n_threads; t++) {
            omp_set_num_threads(threads[t]);
            check_problem(p, exact);
        }
    }
    slm__cpu_isa_force(hw);
    omp_set_num_threads(2);
}

static const int one_thread[] = {1};
static const int many_threads[] = {1, 2, 3};

/* ------------------------------------------------------------------------ */

/* Every batch size 1..70 on one awkward shape: 67 rows (two 32-row panels
 * and 3 rows; four 16-row panels and 3), 531 columns (two float32 column
 * blocks and 19, one int8 block and 19; 531 = 33 * 16 + 3). */
static void test_every_batch(void **state)
{
    (void)state;
    uint64_t rng = 0x6d61746d756c0001ULL;
    for (int integers = 1; integers >= 0; integers--) {
        for (size_t batch = 1; batch <= 70; batch++) {
            problem p;
            problem_init(&p, batch, 67, 531, &rng, integers);
            check_all_isas(&p, integers, one_thread, 1);
            problem_free(&p);
        }
    }
}

/* Shapes around the tile and block edges, for a batch in each regime. */
static void test_shapes(void **state)
{
    (void)state;
    static const size_t rows[] = {1, 2, 15, 16, 17, 31, 32, 33, 97};
    static const size_t cols[] = {1,   2,   15,  16,  17,  31,  33,
                                  255, 256, 257, 511, 512, 513, 1100};
    static const size_t batches[] = {2, 8, 9, 13, 25};
    uint64_t rng = 0x6d61746d756c0002ULL;
    for (size_t bi = 0; bi < sizeof batches / sizeof *batches; bi++) {
        for (size_t ri = 0; ri < sizeof rows / sizeof *rows; ri++) {
            for (size_t ci = 0; ci < sizeof cols / sizeof *cols; ci++) {
                for (int integers = 1; integers >= 0; integers--) {
                    problem p;
                    problem_init(&p, batches[bi], rows[ri], cols[ci], &rng,
                                 integers);
                    check_all_isas(&p, integers, one_thread, 1);
                    problem_free(&p);
                }
            }
        }
    }
}

/* 2..4 tokens go through the dot path while their x is small, else through
 * the GEMM (whose tails are then the whole batch); one token always
 * streams, however wide. */
static void test_small_batches(void **state)
{
    (void)state;
    static const size_t cols[] = {2047, 2048, 2049, 4100, 5633, 8200};
    uint64_t rng = 0x6d61746d756c0004ULL;
    for (size_t batch = 1; batch <= 4; batch++) {
        for (size_t ci = 0; ci < sizeof cols / sizeof *cols; ci++) {
            for (int integers = 1; integers >= 0; integers--) {
                problem p;
                problem_init(&p, batch, 37, cols[ci], &rng, integers);
                check_all_isas(&p, integers, one_thread, 1);
                problem_free(&p);
            }
        }
    }
}

/* Large enough to be split between threads in several chunks (including a
 * partial last panel), with 1, 2 and 3 threads. */
static void test_threads(void **state)
{
    (void)state;
    static const size_t batches[] = {1, 3, 8, 37};
    uint64_t rng = 0x6d61746d756c0003ULL;
    for (size_t bi = 0; bi < sizeof batches / sizeof *batches; bi++) {
        for (int integers = 1; integers >= 0; integers--) {
            problem p;
            problem_init(&p, batches[bi], 1007, 300, &rng, integers);
            check_all_isas(&p, integers, many_threads, 3);
            problem_free(&p);
        }
    }
}

/* Zero-sized dimensions: nothing written for batch 0 or rows 0; zeros for
 * cols 0 (an empty sum). */
static void test_empty(void **state)
{
    (void)state;
    float w[4] = {1, 2, 3, 4}, x[4] = {1, 1, 1, 1}, scale[2] = {1, 1};
    int8_t q[4] = {1, 2, 3, 4};
    float out[9];
    for (int i = 0; i < 9; i++)
        out[i] = SENTINEL;
    slm_cpu_matmul(out, w, x, 0, 2, 2);
    slm_cpu_matmul(out, w, x, 2, 0, 2);
    slm_cpu_matmul_q8(out, q, scale, x, 0, 2, 2);
    slm_cpu_matmul_q8(out, q, scale, x, 2, 0, 2);
    for (int i = 0; i < 9; i++)
        assert_true(out[i] == SENTINEL);
    for (size_t batch = 1; batch <= 4; batch++) {
        for (int kind = 0; kind < 2; kind++) {
            for (int i = 0; i < 9; i++)
                out[i] = i < 8 ? NAN : SENTINEL;
            if (kind == 0)
                slm_cpu_matmul(out, w, x, batch, 2, 0);
            else
                slm_cpu_matmul_q8(out, q, scale, x, batch, 2, 0);
            for (size_t i = 0; i < batch * 2; i++)
                assert_true(out[i] == 0.0f);
            for (size_t i = batch * 2; i < 8; i++)
                assert_true(isnan(out[i]));
            assert_true(out[8] == SENTINEL);
        }
    }
}

/* ------------------------------------------------------------------------ */

/* Round trip: scale is max|w| / 127 (as the float division gives it), every
 * q is in [-127, 127], the largest weight maps to +-127, and each weight is
 * recovered within half a step: fl(w / s) is within 127 u of w / s, rounding
 * to an integer adds at most 1/2, so |q s - w| <= s (1/2 + 127 u). */
static void check_quantized_row(const float *w, const int8_t *q, float s,
                                size_t cols, const char *what)
{
    double m = 0.0;
    for (size_t j = 0; j < cols; j++)
        m = fmax(m, fabs((double)w[j]));
    if (m == 0.0) {
        assert_true(s == 0.0f);
        for (size_t j = 0; j < cols; j++)
            assert_int_equal(q[j], 0);
        return;
    }
    assert_true(s == (float)m / 127.0f);
    int hit = 0;
    for (size_t j = 0; j < cols; j++) {
        assert_true(q[j] >= -127 && q[j] <= 127);
        double err = fabs((double)q[j] * (double)s - (double)w[j]);
        if (!(err <= (double)s * (0.5 + 127.0 * U)))
            fail_msg("%s: w %.9g -> q %d * s %.9g, error %.3g", what,
                     (double)w[j], q[j], (double)s, err);
        if (fabs((double)w[j]) == m) {
            assert_int_equal(abs(q[j]), 127);
            assert_true((q[j] > 0) == (w[j] > 0));
            hit = 1;
        }
    }
    assert_true(hit);
}

static void test_quantize(void **state)
{
    (void)state;
    uint64_t rng = 0x71756e7438000001ULL;
    const size_t rows = 9, cols = 301;
    float *w = test_malloc(rows * cols * sizeof(float));
    int8_t *q = test_malloc(rows * cols + 1);
    float *scale = test_malloc((rows + 1) * sizeof(float));
    assert_true(w && q && scale);
    q[rows * cols] = 0x5a;
    scale[rows] = SENTINEL;
    slm_test_fill_uniform(w, rows * cols, &rng, -1.0f, 1.0f);
    /* Rows with character: all zero; one non-zero (negative) weight; tiny
     * values (near the smallest normal); large ones; all equal. */
    for (size_t j = 0; j < cols; j++) {
        w[1 * cols + j] = 0.0f;
        w[2 * cols + j] = j == 77 ? -0.5f : 0.0f;
        w[3 * cols + j] *= 1e-36f;
        w[4 * cols + j] *= 1e30f;
        w[5 * cols + j] = 0.25f;
    }
    w[6 * cols] = -0.0f; /* a negative zero changes nothing */
    slm_cpu_quantize_q8(q, scale, w, rows, cols);
    assert_int_equal(q[rows * cols], 0x5a);
    assert_true(scale[rows] == SENTINEL);
    char what[32];
    for (size_t r = 0; r < rows; r++) {
        snprintf(what, sizeof what, "quantize row %zu", r);
        check_quantized_row(w + r * cols, q + r * cols, scale[r], cols, what);
    }
    assert_true(scale[1] == 0.0f);
    assert_int_equal(q[2 * cols + 77], -127);
    for (size_t j = 0; j < cols; j++)
        assert_int_equal(q[5 * cols + j], 127);
    /* Uniform weights: the mean error is about a quarter step. */
    double sum = 0.0;
    for (size_t j = 0; j < cols; j++)
        sum += fabs((double)q[j] * scale[0] - w[j]) / scale[0];
    assert_true(sum / (double)cols > 0.15 && sum / (double)cols < 0.35);
    test_free(scale);
    test_free(q);
    test_free(w);
}

/* What weight-only quantization costs: with |w - q s| <= s/2 per weight,
 * the int8 product is within sum_j |x_j| s / 2 (plus float rounding) of the
 * float product of the original weights. */
static void test_q8_error_bound(void **state)
{
    (void)state;
    uint64_t rng = 0x71756e7438000002ULL;
    problem p;
    problem_init(&p, 5, 70, 700, &rng, 0);
    float *outf = alloc_poisoned(p.batch * p.rows);
    float *outq = alloc_poisoned(p.batch * p.rows);
    slm_cpu_matmul(outf, p.w, p.x, p.batch, p.rows, p.cols);
    slm_cpu_matmul_q8(outq, p.q, p.scale, p.x, p.batch, p.rows, p.cols);
    double worst = 0.0;
    for (size_t b = 0; b < p.batch; b++) {
        double xs = 0.0;
        for (size_t j = 0; j < p.cols; j++)
            xs += fabs((double)p.x[b * p.cols + j]);
        for (size_t r = 0; r < p.rows; r++) {
            size_t i = b * p.rows + r;
            double bound = xs * (double)p.scale[r] * (0.5 + 127.0 * U) +
                           tolerance(p.cols, p.mag[i]) +
                           tolerance(p.cols, p.qmag[i]);
            double err = fabs((double)outq[i] - (double)outf[i]);
            assert_true(err <= bound);
            worst = fmax(worst, err / bound);
        }
    }
    /* Rounding errors are nearly independent, so the typical error is far
     * below the worst case. */
    assert_true(worst < 0.2);
    test_free(outq);
    test_free(outf);
    problem_free(&p);
}

/* ---- pre-packed panels (kernels/cpu/panels.c) --------------------------- */

/* A packed copy of W, 64-byte aligned as the kernel requires, with a
 * sentinel after it. */
typedef struct {
    void *buf;
    float *wp;
    size_t floats;
} packed;

static void packed_init(packed *pk, const float *w, size_t rows, size_t cols,
                        size_t ldw)
{
    assert_true(slm_cpu_panels_floats(rows, cols, &pk->floats));
    pk->buf = test_malloc((pk->floats + 1) * sizeof(float) + 64);
    assert_non_null(pk->buf);
    uintptr_t a = ((uintptr_t)pk->buf + 63) & ~(uintptr_t)63;
    pk->wp = (float *)a;
    for (size_t i = 0; i < pk->floats; i++)
        pk->wp[i] = NAN;
    pk->wp[pk->floats] = SENTINEL;
    slm_cpu_pack_panels(pk->wp, w, rows, cols, ldw);
    check_sentinel(pk->wp, pk->floats, "pack_panels");
}

static void packed_free(packed *pk)
{
    test_free(pk->buf);
}

/* The layout of kernels.h, element by element, padding rows zero; and
 * slm_cpu_panels_row gives back every row exactly. W's rows are ldw apart,
 * with NaN between them, which must not leak into the panels. */
static void test_panels_pack(void **state)
{
    (void)state;
    static const size_t rows[] = {1, 2, 31, 32, 33, 64, 100};
    static const size_t cols[] = {1, 2, 15, 16, 17, 255, 257};
    static const size_t pads[] = {0, 1, 7};
    uint64_t rng = 0x70616e656c730001ULL;
    for (size_t ri = 0; ri < sizeof rows / sizeof *rows; ri++) {
        for (size_t ci = 0; ci < sizeof cols / sizeof *cols; ci++) {
            for (size_t pi = 0; pi < sizeof pads / sizeof *pads; pi++) {
                size_t nr = rows[ri], nc = cols[ci], ldw = nc + pads[pi];
                float *w = test_malloc(nr * ldw * sizeof(float));
                float *row = alloc_poisoned(nc);
                assert_true(w && row);
                for (size_t i = 0; i < nr * ldw; i++)
                    w[i] = NAN;
                for (size_t r = 0; r < nr; r++)
                    slm_test_fill_uniform(w + r * ldw, nc, &rng, -1.0f, 1.0f);
                packed pk;
                packed_init(&pk, w, nr, nc, ldw);
                assert_int_equal(pk.floats, (nr + 31) / 32 * 32 * nc);
                for (size_t r = 0; r < (nr + 31) / 32 * 32; r++) {
                    for (size_t c = 0; c < nc; c++) {
                        float want = r < nr ? w[r * ldw + c] : 0.0f;
                        float got = pk.wp[(r / 32) * 32 * nc + c * 32 + r % 32];
                        if (memcmp(&got, &want, sizeof got) != 0)
                            fail_msg("pack %zux%zu ldw %zu: (%zu, %zu) = %g, "
                                     "want %g",
                                     nr, nc, ldw, r, c, (double)got,
                                     (double)want);
                    }
                }
                for (size_t r = 0; r < nr; r++) {
                    slm_cpu_panels_row(row, pk.wp, nr, nc, r);
                    assert_memory_equal(row, w + r * ldw, nc * sizeof(float));
                    check_sentinel(row, nc, "panels_row");
                }
                packed_free(&pk);
                test_free(row);
                test_free(w);
            }
        }
    }
}

static void test_panels_floats(void **state)
{
    (void)state;
    size_t n = 0;
    assert_true(slm_cpu_panels_floats(33, 10, &n));
    assert_int_equal(n, 640);
    assert_true(slm_cpu_panels_floats(32, 10, &n));
    assert_int_equal(n, 320);
    assert_true(slm_cpu_panels_floats(0, 10, &n));
    assert_int_equal(n, 0);
    assert_true(slm_cpu_panels_floats(5, 0, &n));
    assert_int_equal(n, 0);
    /* Rounding the rows up to whole panels overflows on its own. */
    assert_false(slm_cpu_panels_floats(SIZE_MAX, 1, &n));
    assert_false(slm_cpu_panels_floats(SIZE_MAX - 30, 1, &n));
    /* rows * cols fits, the padded rows * cols does not. */
    assert_false(slm_cpu_panels_floats(SIZE_MAX / 64 + 1, 64, &n));
    assert_false(slm_cpu_panels_floats(33, SIZE_MAX / 33, &n));
    assert_false(slm_cpu_panels_floats(1, SIZE_MAX / 16, &n));
    assert_true(slm_cpu_panels_floats(32, SIZE_MAX / 32, &n));
    assert_true(n == SIZE_MAX / 32 * 32);
}

/* slm_cpu_matmul_panels on p, on every ISA and each thread count. */
static void check_panels_all_isas(const problem *p, int exact,
                                  const int *threads, size_t n_threads)
{
    packed pk;
    packed_init(&pk, p->w, p->rows, p->cols, p->cols);
    size_t n = p->batch * p->rows;
    float *out = alloc_poisoned(n);
    slm__isa hw = slm__cpu_isa_detected();
    for (int isa = SLM__ISA_SCALAR; isa <= (int)hw; isa++) {
        slm__cpu_isa_force((slm__isa)isa);
        for (size_t t = 0; t < n_threads; t++) {
            omp_set_num_threads(threads[t]);
            for (size_t i = 0; i < n; i++)
                out[i] = NAN;
            slm_cpu_matmul_panels(out, pk.wp, p->x, p->batch, p->rows, p->cols);
            check_out(p, out, p->ref, p->mag, exact, "matmul_panels");
        }
    }
    slm__cpu_isa_force(hw);
    omp_set_num_threads(2);
    check_sentinel(pk.wp, pk.floats, "matmul_panels (weights)");
    test_free(out);
    packed_free(&pk);
}

/* Every token group split (1..20 and around 32 and 64), rows cutting the
 * panels, columns around the vector width, the sets' stride and the column
 * blocks. */
static void test_panels_matmul(void **state)
{
    (void)state;
    static const size_t batches[] = {1,  2,  3,  4,  5,  6,  7,  8,
                                     9,  10, 11, 12, 13, 14, 15, 16,
                                     17, 18, 19, 20, 31, 32, 33, 64};
    static const size_t rows[] = {1, 31, 33, 100};
    static const size_t cols[] = {1, 15, 16, 17, 255, 256, 257, 768};
    uint64_t rng = 0x70616e656c730002ULL;
    for (size_t bi = 0; bi < sizeof batches / sizeof *batches; bi++) {
        for (size_t ri = 0; ri < sizeof rows / sizeof *rows; ri++) {
            for (size_t ci = 0; ci < sizeof cols / sizeof *cols; ci++) {
                for (int integers = 1; integers >= 0; integers--) {
                    problem p;
                    problem_init(&p, batches[bi], rows[ri], cols[ci], &rng,
                                 integers);
                    check_panels_all_isas(&p, integers, one_thread, 1);
                    problem_free(&p);
                }
            }
        }
    }
}

/* Split between threads in several chunks, a partial last panel, 1..3
 * threads; and the empty cases of test_empty. */
static void test_panels_threads(void **state)
{
    (void)state;
    static const size_t batches[] = {1, 2, 3, 8, 16, 37};
    uint64_t rng = 0x70616e656c730003ULL;
    for (size_t bi = 0; bi < sizeof batches / sizeof *batches; bi++) {
        for (int integers = 1; integers >= 0; integers--) {
            problem p;
            problem_init(&p, batches[bi], 1007, 300, &rng, integers);
            check_panels_all_isas(&p, integers, many_threads, 3);
            problem_free(&p);
        }
    }
    float wp[64] __attribute__((aligned(64))) = {0}, x[4] = {1, 1, 1, 1};
    float out[9];
    for (int i = 0; i < 9; i++)
        out[i] = SENTINEL;
    slm_cpu_matmul_panels(out, wp, x, 0, 2, 2);
    slm_cpu_matmul_panels(out, wp, x, 2, 0, 2);
    for (int i = 0; i < 9; i++)
        assert_true(out[i] == SENTINEL);
    for (int i = 0; i < 9; i++)
        out[i] = i < 8 ? NAN : SENTINEL;
    slm_cpu_matmul_panels(out, wp, x, 4, 2, 0);
    for (int i = 0; i < 8; i++)
        assert_true(out[i] == 0.0f);
    assert_true(out[8] == SENTINEL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_batch),
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_small_batches),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_quantize),
        cmocka_unit_test(test_q8_error_bound),
        cmocka_unit_test(test_panels_pack),
        cmocka_unit_test(test_panels_floats),
        cmocka_unit_test(test_panels_matmul),
        cmocka_unit_test(test_panels_threads),
    };
    fprintf(stderr, "# cpu isa: %s\n", slm_cpu_isa());
    return cmocka_run_group_tests(tests, NULL, NULL);
}
