/*
 * tests/gpu/test_cuda_kernels.c - every CUDA kernel against its CPU twin on
 * random inputs. Outputs are poisoned with NaN first (0xff bytes: a NaN in
 * float32, float16 and bfloat16), so a kernel that writes nothing fails, and
 * every comparison fails on NaN (slm_test_max_rel_err returns infinity).
 * Inputs are rounded to the half type on the CPU side before the twin sees
 * them, so both sides compute on the same values. Each kernel runs for both
 * float16 and bfloat16, batch 1 and 8, grouped-query heads (8 query, 2 kv), a
 * 4096-position context (the split-K path of attention) and odd sizes.
 * Exits 77 (skipped) where no GPU is present.
 */
#include "tests/testutil.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/kernels.h"
#include "model/checkpoint.h"

static const slm_cuda_dtype dtypes[2] = {SLM_CUDA_F16, SLM_CUDA_BF16};
static const size_t batches[2] = {1, 8};

static const char *dt_name(slm_cuda_dtype dt)
{
    return dt == SLM_CUDA_F16 ? "f16" : "bf16";
}

/* ---- host <-> device helpers ------------------------------------------- */

static void *dev_alloc(size_t bytes)
{
    void *d = NULL;
    assert_int_equal(cudaMalloc(&d, bytes ? bytes : 1), cudaSuccess);
    assert_int_equal(cudaMemset(d, 0xff, bytes ? bytes : 1), cudaSuccess);
    return d; /* poisoned: NaN in every float type, -1 as int32 */
}

static void *dev_copy(const void *h, size_t bytes)
{
    void *d = dev_alloc(bytes);
    assert_int_equal(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice),
                     cudaSuccess);
    return d;
}

static void to_host(void *h, const void *d, size_t bytes)
{
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    assert_int_equal(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost),
                     cudaSuccess);
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    assert_non_null(p);
    return p;
}

/* x(n) rounded in place to dt's values; returns dt's bits (caller frees). */
static uint16_t *round_to(slm_cuda_dtype dt, float *x, size_t n)
{
    uint16_t *h = xmalloc(n * sizeof *h);
    if (dt == SLM_CUDA_F16) {
        slm_cpu_f32_to_f16(h, x, n);
        slm_cpu_f16_to_f32(x, h, n);
    } else {
        slm_cpu_f32_to_bf16(h, x, n);
        slm_cpu_bf16_to_f32(x, h, n);
    }
    return h;
}

/* Random values in [lo, hi) rounded to dt, on the host (caller frees) and on
 * the device (*dev, caller cudaFrees). */
static float *rand_half(slm_cuda_dtype dt, size_t n, uint64_t *rng, float lo,
                        float hi, void **dev)
{
    float *x = xmalloc(n * sizeof *x);
    slm_test_fill_uniform(x, n, rng, lo, hi);
    uint16_t *bits = round_to(dt, x, n);
    *dev = dev_copy(bits, n * sizeof *bits);
    free(bits);
    return x;
}

/* dt values at d(n) as floats (caller frees). */
static float *fetch_half(slm_cuda_dtype dt, const void *d, size_t n)
{
    uint16_t *bits = xmalloc(n * sizeof *bits);
    float *x = xmalloc(n * sizeof *x);
    to_host(bits, d, n * sizeof *bits);
    if (dt == SLM_CUDA_F16)
        slm_cpu_f16_to_f32(x, bits, n);
    else
        slm_cpu_bf16_to_f32(x, bits, n);
    free(bits);
    return x;
}

static float *fetch_f32(const void *d, size_t n)
{
    float *x = xmalloc(n * sizeof *x);
    to_host(x, d, n * sizeof *x);
    return x;
}

/* fails (with the worst error) unless got is within tol of want */
static void expect_close(const char *what, slm_cuda_dtype dt, const float *got,
                         const float *want, size_t n, double floor, double tol)
{
    double err = slm_test_max_rel_err(got, want, n, floor);
    if (!(err <= tol))
        fail_msg("%s (%s): max relative error %g > %g", what, dt_name(dt), err,
                 tol);
}

static int bits_equal(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof *a) == 0;
}

/* ---- rmsnorm (float32) ------------------------------------------------- */

/* Tolerance: float32 sums in a different order; 1e-5 relative. */
static void test_rmsnorm_matches_cpu(void **state)
{
    (void)state;
    const size_t rows = 7, n = 4096 + 3;
    uint64_t seed = 42;
    float *x = xmalloc(rows * n * sizeof *x), *w = xmalloc(n * sizeof *w);
    float *want = xmalloc(rows * n * sizeof *want);
    slm_test_fill_uniform(x, rows * n, &seed, -2.0f, 2.0f);
    slm_test_fill_uniform(w, n, &seed, 0.5f, 1.5f);
    for (size_t r = 0; r < rows; r++)
        slm_cpu_rmsnorm(want + r * n, x + r * n, w, n, 1e-5f);
    float *dx = dev_copy(x, rows * n * sizeof *x);
    float *dw = dev_copy(w, n * sizeof *w);
    float *dout = dev_alloc(rows * n * sizeof(float));
    assert_int_equal(slm_cuda_rmsnorm(dout, dx, dw, rows, n, 1e-5f, NULL),
                     SLM_OK);
    float *got = fetch_f32(dout, rows * n);
    assert_true(slm_test_max_rel_err(got, want, rows * n, 1e-3) < 1e-5);
    cudaFree(dx);
    cudaFree(dw);
    cudaFree(dout);
    free(x);
    free(w);
    free(want);
    free(got);
}

/* ---- conversions ------------------------------------------------------- */

/* Tolerance: none. Both sides round to nearest even; bits must match. */
static void test_convert_matches_cpu(void **state)
{
    (void)state;
    uint64_t rng = 0x636f6e7600000001ULL;
    const size_t n = 100003;
    float *x = xmalloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) {
        /* every exponent, not only [-1, 1): random bit patterns, no NaN */
        uint32_t u = (uint32_t)slm_test_rand_u64(&rng);
        memcpy(&x[i], &u, sizeof u);
        if (isnan(x[i]))
            x[i] = (float)i;
    }
    x[0] = 65520.0f; /* the float16 overflow midpoint */
    x[1] = 0x1p-25f; /* the float16 underflow midpoint */
    float *dx = dev_copy(x, n * sizeof *x);
    for (int d = 0; d < 2; d++) {
        slm_cuda_dtype dt = dtypes[d];
        void *dh = dev_alloc(n * 2);
        assert_int_equal(slm_cuda_to_half(dh, dx, n, dt, NULL), SLM_OK);
        uint16_t *got = xmalloc(n * sizeof *got), *want = xmalloc(n * 2);
        to_host(got, dh, n * 2);
        if (dt == SLM_CUDA_F16)
            slm_cpu_f32_to_f16(want, x, n);
        else
            slm_cpu_f32_to_bf16(want, x, n);
        for (size_t i = 0; i < n; i++)
            if (got[i] != want[i])
                fail_msg("to_half (%s) [%zu] of %a: 0x%04x, want 0x%04x",
                         dt_name(dt), i, (double)x[i], got[i], want[i]);
        float *dback = dev_alloc(n * sizeof(float));
        assert_int_equal(slm_cuda_from_half(dback, dh, n, dt, NULL), SLM_OK);
        float *back = fetch_f32(dback, n), *wback = xmalloc(n * sizeof *wback);
        if (dt == SLM_CUDA_F16)
            slm_cpu_f16_to_f32(wback, want, n);
        else
            slm_cpu_bf16_to_f32(wback, want, n);
        assert_true(bits_equal(back, wback, n));
        cudaFree(dh);
        cudaFree(dback);
        free(got);
        free(want);
        free(back);
        free(wback);
    }
    cudaFree(dx);
    free(x);
}

/* ---- residual + rmsnorm ------------------------------------------------ */

/* Tolerance: the residual add is one IEEE addition (bits must match); the
 * normalized output differs by float32 reordering (~1e-6) plus the rounding
 * of out to dt: half an ulp, 2^-11 (f16) or 2^-8 (bf16) relative. */
static void check_residual_rmsnorm(slm_cuda_dtype dt, size_t rows, size_t n,
                                   int with_delta, uint64_t *rng)
{
    float *x = xmalloc(rows * n * sizeof *x);
    float *delta = xmalloc(rows * n * sizeof *delta);
    slm_test_fill_uniform(x, rows * n, rng, -3.0f, 3.0f);
    slm_test_fill_uniform(delta, rows * n, rng, -1.0f, 1.0f);
    void *dw;
    float *w = rand_half(dt, n, rng, 0.5f, 1.5f, &dw);
    float *dx = dev_copy(x, rows * n * sizeof *x);
    float *dd = dev_copy(delta, rows * n * sizeof *delta);
    void *dout = dev_alloc(rows * n * 2);
    assert_int_equal(slm_cuda_residual_rmsnorm(dx, with_delta ? dd : NULL, dw,
                                               dout, rows, n, 1e-5f, dt, NULL),
                     SLM_OK);
    float *want = xmalloc(rows * n * sizeof *want);
    for (size_t r = 0; r < rows; r++) {
        if (with_delta)
            slm_cpu_add(x + r * n, delta + r * n, n);
        slm_cpu_rmsnorm(want + r * n, x + r * n, w, n, 1e-5f);
    }
    float *gx = fetch_f32(dx, rows * n);
    assert_true(bits_equal(gx, x, rows * n));
    float *got = fetch_half(dt, dout, rows * n);
    expect_close("residual_rmsnorm", dt, got, want, rows * n, 1e-3,
                 dt == SLM_CUDA_F16 ? 1e-3 : 5e-3);
    cudaFree(dw);
    cudaFree(dx);
    cudaFree(dd);
    cudaFree(dout);
    free(x);
    free(delta);
    free(w);
    free(want);
    free(gx);
    free(got);
}

static void test_residual_rmsnorm_matches_cpu(void **state)
{
    (void)state;
    uint64_t rng = 0x7265736e00000001ULL;
    for (int d = 0; d < 2; d++)
        for (int b = 0; b < 2; b++) {
            check_residual_rmsnorm(dtypes[d], batches[b], 4096, 1, &rng);
            check_residual_rmsnorm(dtypes[d], batches[b], 288 + 3, 1, &rng);
            check_residual_rmsnorm(dtypes[d], batches[b], 5, 0, &rng);
        }
}

/* ---- rope + KV-cache write --------------------------------------------- */

/* Tolerance: the angle is computed as the CPU computes it (correctly rounded
 * float pow/cos/sin, no FMA), so the float results agree to an ulp or two;
 * what remains is the rounding of q and the cache to dt: 2^-11 / 2^-8 of the
 * pair's magnitude (<= 1.5 here), hence a floor of 1. The cache rows other
 * than pos[r] must still hold the poison. */
static void check_rope_kv(slm_cuda_dtype dt, size_t rows, size_t n_heads,
                          size_t n_kv, size_t hd, size_t seq_len, uint64_t *rng)
{
    const size_t q_dim = n_heads * hd, kv_dim = n_kv * hd;
    void *dq, *dk, *dv;
    float *q = rand_half(dt, rows * q_dim, rng, -1.0f, 1.0f, &dq);
    float *k = rand_half(dt, rows * kv_dim, rng, -1.0f, 1.0f, &dk);
    float *v = rand_half(dt, rows * kv_dim, rng, -1.0f, 1.0f, &dv);
    int32_t *pos = xmalloc(rows * sizeof *pos);
    for (size_t r = 0; r < rows; r++)
        pos[r] = r == 0 ? (int32_t)seq_len - 1
                        : (int32_t)(slm_test_rand_u64(rng) % seq_len);
    int32_t *dpos = dev_copy(pos, rows * sizeof *pos);
    const size_t cache_n = rows * seq_len * kv_dim;
    void *dkc = dev_alloc(cache_n * 2), *dvc = dev_alloc(cache_n * 2);
    assert_int_equal(slm_cuda_rope_kv_write(dq, dk, dv, dkc, dvc, dpos, rows,
                                            n_heads, n_kv, hd, seq_len, dt,
                                            NULL),
                     SLM_OK);
    /* the twin's frequencies: the default rope of theta 10000, which the
     * CUDA kernel computes itself */
    slm_model_config cfg = {.head_size = (int32_t)hd, .rope_theta = 10000.0f};
    float *freqs = xmalloc(hd / 2 * sizeof *freqs);
    slm_model_config_rope_freqs(&cfg, freqs);
    for (size_t r = 0; r < rows; r++) {
        slm_cpu_rope(q + r * q_dim, n_heads, hd, (size_t)pos[r], freqs);
        slm_cpu_rope(k + r * kv_dim, n_kv, hd, (size_t)pos[r], freqs);
    }
    const double tol = dt == SLM_CUDA_F16 ? 1e-3 : 5e-3;
    float *gq = fetch_half(dt, dq, rows * q_dim);
    expect_close("rope q", dt, gq, q, rows * q_dim, 1.0, tol);
    float *gk = fetch_half(dt, dkc, cache_n),
          *gv = fetch_half(dt, dvc, cache_n);
    for (size_t r = 0; r < rows; r++)
        for (size_t t = 0; t < seq_len; t++) {
            const float *kr = gk + (r * seq_len + t) * kv_dim;
            const float *vr = gv + (r * seq_len + t) * kv_dim;
            if (t == (size_t)pos[r]) {
                expect_close("rope k cache", dt, kr, k + r * kv_dim, kv_dim,
                             1.0, tol);
                assert_true(bits_equal(vr, v + r * kv_dim, kv_dim));
            } else {
                for (size_t i = 0; i < kv_dim; i++)
                    if (!isnan(kr[i]) || !isnan(vr[i]))
                        fail_msg("rope (%s): cache row %zu of sequence %zu "
                                 "written (pos %d)",
                                 dt_name(dt), t, r, pos[r]);
            }
        }
    cudaFree(dq);
    cudaFree(dk);
    cudaFree(dv);
    cudaFree(dpos);
    cudaFree(dkc);
    cudaFree(dvc);
    free(q);
    free(k);
    free(v);
    free(pos);
    free(freqs);
    free(gq);
    free(gk);
    free(gv);
}

static void test_rope_kv_matches_cpu(void **state)
{
    (void)state;
    uint64_t rng = 0x726f706500000001ULL;
    for (int d = 0; d < 2; d++)
        for (int b = 0; b < 2; b++) {
            check_rope_kv(dtypes[d], batches[b], 8, 2, 64, 4096, &rng);
            check_rope_kv(dtypes[d], batches[b], 8, 2, 128, 300, &rng);
            check_rope_kv(dtypes[d], batches[b], 3, 3, 6, 17, &rng);
        }
}

/* A position outside the cache writes nothing and turns q into NaN. */
static void test_rope_kv_bad_position(void **state)
{
    (void)state;
    uint64_t rng = 0x726f706500000002ULL;
    const size_t hd = 8, seq_len = 4;
    void *dq, *dk, *dv;
    float *q = rand_half(SLM_CUDA_F16, hd, &rng, -1.0f, 1.0f, &dq);
    float *k = rand_half(SLM_CUDA_F16, hd, &rng, -1.0f, 1.0f, &dk);
    float *v = rand_half(SLM_CUDA_F16, hd, &rng, -1.0f, 1.0f, &dv);
    const int32_t pos = (int32_t)seq_len;
    int32_t *dpos = dev_copy(&pos, sizeof pos);
    void *dkc = dev_alloc(seq_len * hd * 2), *dvc = dev_alloc(seq_len * hd * 2);
    assert_int_equal(slm_cuda_rope_kv_write(dq, dk, dv, dkc, dvc, dpos, 1, 1, 1,
                                            hd, seq_len, SLM_CUDA_F16, NULL),
                     SLM_OK);
    float *gq = fetch_half(SLM_CUDA_F16, dq, hd);
    float *gk = fetch_half(SLM_CUDA_F16, dkc, seq_len * hd);
    for (size_t i = 0; i < hd; i++)
        assert_true(isnan(gq[i]));
    for (size_t i = 0; i < seq_len * hd; i++)
        assert_true(isnan(gk[i])); /* still the poison */
    /* and an odd head_dim is refused */
    assert_int_equal(slm_cuda_rope_kv_write(dq, dk, dv, dkc, dvc, dpos, 1, 1, 1,
                                            7, seq_len, SLM_CUDA_F16, NULL),
                     SLM_ERR_INVALID);
    cudaFree(dq);
    cudaFree(dk);
    cudaFree(dv);
    cudaFree(dpos);
    cudaFree(dkc);
    cudaFree(dvc);
    free(q);
    free(k);
    free(v);
    free(gq);
    free(gk);
}

/* ---- decode attention -------------------------------------------------- */

/* Tolerance: the outputs are convex combinations of v (|v| < 1). Scores and
 * weights are float32 in a different order (and the split-K rescaling):
 * ~1e-5 of the output; the rounding of out to dt adds 2^-11 / 2^-8 relative.
 * Floor 0.05 so that outputs that average to near zero are judged by their
 * absolute error. */
static void check_attention(slm_cuda_dtype dt, size_t rows, size_t n_heads,
                            size_t n_kv, size_t hd, size_t seq_len,
                            const int32_t *pos_hint, uint64_t *rng)
{
    const size_t q_dim = n_heads * hd, kv_dim = n_kv * hd;
    const size_t cache_n = rows * seq_len * kv_dim;
    void *dq, *dkc, *dvc;
    float *q = rand_half(dt, rows * q_dim, rng, -4.0f, 4.0f, &dq);
    float *kc = rand_half(dt, cache_n, rng, -1.0f, 1.0f, &dkc);
    float *vc = rand_half(dt, cache_n, rng, -1.0f, 1.0f, &dvc);
    int32_t *pos = xmalloc(rows * sizeof *pos);
    for (size_t r = 0; r < rows; r++)
        pos[r] = pos_hint && pos_hint[r] >= 0
                     ? pos_hint[r]
                     : (int32_t)(slm_test_rand_u64(rng) % seq_len);
    int32_t *dpos = dev_copy(pos, rows * sizeof *pos);
    size_t ws_bytes =
        slm_cuda_attention_workspace_bytes(rows, n_heads, hd, seq_len);
    assert_true(ws_bytes != SIZE_MAX);
    void *ws = dev_alloc(ws_bytes), *dout = dev_alloc(rows * q_dim * 2);
    assert_int_equal(slm_cuda_decode_attention(dout, dq, dkc, dvc, dpos, rows,
                                               n_heads, n_kv, hd, seq_len, ws,
                                               dt, NULL),
                     SLM_OK);
    float *want = xmalloc(rows * q_dim * sizeof *want);
    float *att = xmalloc(n_heads * seq_len * sizeof *att);
    for (size_t r = 0; r < rows; r++)
        slm_cpu_attention(want + r * q_dim, q + r * q_dim,
                          kc + r * seq_len * kv_dim, vc + r * seq_len * kv_dim,
                          att, seq_len, n_heads, n_kv, hd, kv_dim,
                          (size_t)pos[r]);
    float *got = fetch_half(dt, dout, rows * q_dim);
    char what[96];
    snprintf(what, sizeof what,
             "attention rows %zu heads %zu/%zu hd %zu seq %zu", rows, n_heads,
             n_kv, hd, seq_len);
    expect_close(what, dt, got, want, rows * q_dim, 0.05,
                 dt == SLM_CUDA_F16 ? 2e-3 : 8e-3);
    cudaFree(dq);
    cudaFree(dkc);
    cudaFree(dvc);
    cudaFree(dpos);
    cudaFree(ws);
    cudaFree(dout);
    free(q);
    free(kc);
    free(vc);
    free(pos);
    free(want);
    free(att);
    free(got);
}

static void test_attention_matches_cpu(void **state)
{
    (void)state;
    uint64_t rng = 0x6174746e00000001ULL;
    /* the chunk edges of the split (256 positions a block), both ends */
    const int32_t edges[8] = {0, 255, 256, 4095, 511, 1, 4000, 257};
    const int32_t one_long[1] = {4095};
    for (int d = 0; d < 2; d++) {
        slm_cuda_dtype dt = dtypes[d];
        check_attention(dt, 1, 8, 2, 64, 4096, one_long, &rng);
        check_attention(dt, 8, 8, 2, 64, 4096, edges, &rng);
        check_attention(dt, 8, 8, 2, 128, 4096, NULL, &rng);
        check_attention(dt, 1, 8, 2, 128, 300, NULL, &rng);
        check_attention(dt, 8, 6, 3, 40, 77, NULL, &rng); /* odd sizes */
        check_attention(dt, 3, 5, 1, 3, 513, NULL, &rng); /* MQA, tiny hd */
        check_attention(dt, 1, 2, 2, 256, 1, NULL, &rng); /* one position */
    }
}

/* A position outside the cache gives NaN, never a read outside it. */
static void test_attention_bad_position(void **state)
{
    (void)state;
    const size_t hd = 16, seq_len = 8;
    void *dq = dev_alloc(hd * 2), *dkc = dev_alloc(seq_len * hd * 2);
    void *dvc = dev_alloc(seq_len * hd * 2);
    const int32_t pos = -1;
    int32_t *dpos = dev_copy(&pos, sizeof pos);
    void *ws = dev_alloc(slm_cuda_attention_workspace_bytes(1, 1, hd, seq_len));
    void *dout = dev_alloc(hd * 2);
    assert_int_equal(cudaMemset(dout, 0, hd * 2), cudaSuccess);
    assert_int_equal(slm_cuda_decode_attention(dout, dq, dkc, dvc, dpos, 1, 1,
                                               1, hd, seq_len, ws,
                                               SLM_CUDA_BF16, NULL),
                     SLM_OK);
    float *got = fetch_half(SLM_CUDA_BF16, dout, hd);
    for (size_t i = 0; i < hd; i++)
        assert_true(isnan(got[i]));
    assert_int_equal(slm_cuda_decode_attention(dout, dq, dkc, dvc, dpos, 1, 3,
                                               2, hd, seq_len, ws,
                                               SLM_CUDA_BF16, NULL),
                     SLM_ERR_INVALID); /* 3 heads over 2 kv heads */
    cudaFree(dq);
    cudaFree(dkc);
    cudaFree(dvc);
    cudaFree(dpos);
    cudaFree(ws);
    cudaFree(dout);
    free(got);
}

/* ---- SwiGLU ------------------------------------------------------------ */

/* Tolerance: expf may differ by 2 ulps; the rest is the same float
 * operations; then the rounding to dt: 2^-11 / 2^-8 relative. Floor 1e-3:
 * silu of a large negative gate is tiny and rounds in dt's subnormals. */
static void check_swiglu(slm_cuda_dtype dt, size_t n, int in_place,
                         uint64_t *rng)
{
    void *dg, *du;
    float *g = rand_half(dt, n, rng, -8.0f, 8.0f, &dg);
    float *u = rand_half(dt, n, rng, -2.0f, 2.0f, &du);
    void *dout = in_place ? dg : dev_alloc(n * 2);
    assert_int_equal(slm_cuda_swiglu(dout, dg, du, n, dt, NULL), SLM_OK);
    slm_cpu_swiglu(g, u, n);
    float *got = fetch_half(dt, dout, n);
    expect_close("swiglu", dt, got, g, n, 1e-3,
                 dt == SLM_CUDA_F16 ? 1e-3 : 5e-3);
    if (!in_place)
        cudaFree(dout);
    cudaFree(dg);
    cudaFree(du);
    free(g);
    free(u);
    free(got);
}

static void test_swiglu_matches_cpu(void **state)
{
    (void)state;
    uint64_t rng = 0x7377676c00000001ULL;
    for (int d = 0; d < 2; d++)
        for (int b = 0; b < 2; b++) {
            check_swiglu(dtypes[d], batches[b] * 768, 0, &rng);
            check_swiglu(dtypes[d], batches[b] * 11008 + 1, 1, &rng);
        }
}

/* ---- embedding --------------------------------------------------------- */

/* Tolerance: none; a copy and an exact widening. */
static void check_embedding(slm_cuda_dtype dt, size_t rows, size_t dim,
                            uint64_t *rng)
{
    const size_t begin = 100, count = 50;
    void *dtab;
    float *tab = rand_half(dt, count * dim, rng, -1.0f, 1.0f, &dtab);
    int32_t *tok = xmalloc(rows * sizeof *tok);
    for (size_t r = 0; r < rows; r++)
        tok[r] = (int32_t)(slm_test_rand_u64(rng) % 200) - 10; /* some < 0 */
    tok[0] = (int32_t)begin; /* the slice's first ... */
    if (rows > 1)
        tok[1] = (int32_t)(begin + count - 1); /* ... and last token */
    int32_t *dtok = dev_copy(tok, rows * sizeof *tok);
    float *dout = dev_alloc(rows * dim * sizeof(float));
    assert_int_equal(
        slm_cuda_embedding(dout, dtab, dtok, rows, begin, count, dim, dt, NULL),
        SLM_OK);
    float *want = xmalloc(rows * dim * sizeof *want);
    slm_cpu_embedding_slice(want, tab, tok, rows, begin, count, dim);
    float *got = fetch_f32(dout, rows * dim);
    assert_true(bits_equal(got, want, rows * dim));
    cudaFree(dtab);
    cudaFree(dtok);
    cudaFree(dout);
    free(tab);
    free(tok);
    free(want);
    free(got);
}

static void test_embedding_matches_cpu(void **state)
{
    (void)state;
    uint64_t rng = 0x656d626400000001ULL;
    for (int d = 0; d < 2; d++)
        for (int b = 0; b < 2; b++) {
            check_embedding(dtypes[d], batches[b], 4096, &rng);
            check_embedding(dtypes[d], batches[b] * 5, 291, &rng);
        }
}

/* ---- argmax and sampling ----------------------------------------------- */

static void fill_logits(float *x, size_t rows, size_t vocab, uint64_t *rng,
                        int ties)
{
    slm_test_fill_uniform(x, rows * vocab, rng, -8.0f, 8.0f);
    for (size_t r = 0; r < rows && ties; r++) {
        float *row = x + r * vocab;
        if (ties == 2) /* coarse values: many exact ties */
            for (size_t i = 0; i < vocab; i++)
                row[i] = roundf(row[i]);
        /* two equal maxima; the first must win */
        size_t a = slm_test_rand_u64(rng) % vocab;
        size_t b = slm_test_rand_u64(rng) % vocab;
        row[a] = row[b] = 9.0f;
    }
}

/* Tolerance: none; comparisons only. */
static void test_argmax_matches_cpu(void **state)
{
    (void)state;
    uint64_t rng = 0x6172677800000001ULL;
    const size_t vocabs[] = {32000, 4099, 7, 1};
    for (size_t v = 0; v < sizeof vocabs / sizeof *vocabs; v++)
        for (int b = 0; b < 2; b++)
            for (int ties = 0; ties < 3; ties++) {
                const size_t rows = batches[b], vocab = vocabs[v];
                float *x = xmalloc(rows * vocab * sizeof *x);
                fill_logits(x, rows, vocab, &rng, ties);
                float *dx = dev_copy(x, rows * vocab * sizeof *x);
                int32_t *dout = dev_alloc(rows * sizeof(int32_t));
                assert_int_equal(slm_cuda_argmax(dout, dx, rows, vocab, NULL),
                                 SLM_OK);
                int32_t *got = xmalloc(rows * sizeof *got);
                to_host(got, dout, rows * sizeof *got);
                for (size_t r = 0; r < rows; r++)
                    if (got[r] != slm_cpu_argmax(x + r * vocab, vocab))
                        fail_msg("argmax vocab %zu row %zu: %d, want %d", vocab,
                                 r, got[r],
                                 slm_cpu_argmax(x + r * vocab, vocab));
                cudaFree(dx);
                cudaFree(dout);
                free(x);
                free(got);
            }
}

/* Tolerance: none - the same token for the same coin. The probabilities are
 * the same bits on both sides (correctly rounded expf); only the float64
 * sums differ in order, by ~1e-16, which a random coin does not resolve.
 * The draw's logic was also checked on the CPU (a serial port of the kernel
 * against slm_cpu_sample_topk_topp: 1000 cases, no mismatch). */
static void test_sample_matches_cpu(void **state)
{
    (void)state;
    uint64_t rng = 0x73616d7000000001ULL;
    /* 32000 fits the shared-memory cache of sample.cu, 70000 does not */
    const size_t vocabs[] = {32000, 70000, 512, 7, 1};
    const struct {
        float temperature;
        int32_t top_k;
        float top_p;
    } params[] = {{1.0f, 0, 1.0f},  {1.0f, 0, 0.9f},  {0.7f, 40, 1.0f},
                  {1.3f, 40, 0.8f}, {0.5f, 1, 1.0f},  {1.0f, 100000, 0.5f},
                  {2.0f, 0, 0.1f},  {0.9f, 3, 0.95f}, {1.0f, 0, 0.999f},
                  {0.05f, 0, 0.9f}};
    for (size_t v = 0; v < sizeof vocabs / sizeof *vocabs; v++)
        for (size_t p = 0; p < sizeof params / sizeof *params; p++)
            for (int b = 0; b < 2; b++)
                for (int ties = 0; ties < 3; ties++) {
                    const size_t rows = batches[b], vocab = vocabs[v];
                    float *x = xmalloc(rows * vocab * sizeof *x);
                    fill_logits(x, rows, vocab, &rng, ties);
                    float coins[8];
                    for (size_t r = 0; r < rows; r++)
                        coins[r] = slm_test_rand_float(&rng, 0.0f, 1.0f);
                    float *dx = dev_copy(x, rows * vocab * sizeof *x);
                    float *dc = dev_copy(coins, rows * sizeof *coins);
                    int32_t *dout = dev_alloc(rows * sizeof(int32_t));
                    assert_int_equal(slm_cuda_sample(dout, dx, rows, vocab,
                                                     params[p].temperature,
                                                     params[p].top_k,
                                                     params[p].top_p, dc, NULL),
                                     SLM_OK);
                    int32_t got[8];
                    to_host(got, dout, rows * sizeof *got);
                    slm_cpu_candidate *scratch =
                        xmalloc(vocab * sizeof *scratch);
                    for (size_t r = 0; r < rows; r++) {
                        int32_t want = slm_cpu_sample_topk_topp(
                            x + r * vocab, vocab, params[p].temperature,
                            params[p].top_k, params[p].top_p, coins[r],
                            scratch);
                        if (got[r] != want)
                            fail_msg("sample vocab %zu T %g k %d p %g ties %d "
                                     "coin %.9g: %d, want %d",
                                     vocab, (double)params[p].temperature,
                                     params[p].top_k, (double)params[p].top_p,
                                     ties, (double)coins[r], got[r], want);
                    }
                    cudaFree(dx);
                    cudaFree(dc);
                    cudaFree(dout);
                    free(x);
                    free(scratch);
                }
    /* parameters the CPU sampler would reject are refused */
    assert_int_equal(
        slm_cuda_sample(NULL, NULL, 1, 8, 0.0f, 0, 1.0f, NULL, NULL),
        SLM_ERR_INVALID);
    assert_int_equal(
        slm_cuda_sample(NULL, NULL, 1, 8, 1.0f, -1, 1.0f, NULL, NULL),
        SLM_ERR_INVALID);
    assert_int_equal(
        slm_cuda_sample(NULL, NULL, 1, 8, 1.0f, 0, 0.0f, NULL, NULL),
        SLM_ERR_INVALID);
}

/* ---- matrix products --------------------------------------------------- */

/* Tolerance: float32 accumulation in cuBLAS's order, not the CPU's: ~1e-6 of
 * the sum of |terms| (about in_dim / 4 here), a random walk reaching ~1e-4
 * absolute at in_dim 4096 (5e-4 allowed); y of dt adds its rounding, 2^-11 /
 * 2^-8 relative. Floor 1 (outputs are ~sqrt(in_dim)/3
 * in magnitude). */
static void check_matmul(void *blas, slm_cuda_dtype dt, size_t rows,
                         size_t in_dim, size_t out_dim, int y_f32,
                         uint64_t *rng)
{
    void *dx, *dw;
    float *x = rand_half(dt, rows * in_dim, rng, -1.0f, 1.0f, &dx);
    float *w = rand_half(dt, out_dim * in_dim, rng, -1.0f, 1.0f, &dw);
    void *dy = dev_alloc(rows * out_dim * (y_f32 ? 4 : 2));
    assert_int_equal(
        slm_cuda_matmul(blas, dy, y_f32, dx, dw, rows, in_dim, out_dim, dt),
        SLM_OK);
    float *want = xmalloc(rows * out_dim * sizeof *want);
    for (size_t r = 0; r < rows; r++)
        slm_cpu_matvec(want + r * out_dim, w, x + r * in_dim, out_dim, in_dim);
    float *got = y_f32 ? fetch_f32(dy, rows * out_dim)
                       : fetch_half(dt, dy, rows * out_dim);
    char what[96];
    snprintf(what, sizeof what, "matmul %zu x %zu x %zu%s", rows, in_dim,
             out_dim, y_f32 ? " -> f32" : "");
    expect_close(what, dt, got, want, rows * out_dim, 1.0,
                 y_f32 ? 5e-4 : (dt == SLM_CUDA_F16 ? 1.5e-3 : 6e-3));
    cudaFree(dx);
    cudaFree(dw);
    cudaFree(dy);
    free(x);
    free(w);
    free(want);
    free(got);
}

static void test_matmul_matches_cpu(void **state)
{
    (void)state;
    uint64_t rng = 0x6d6d756c00000001ULL;
    void *blas = NULL;
    assert_int_equal(slm_cuda_blas_create(&blas, NULL), SLM_OK);
    for (int d = 0; d < 2; d++)
        for (int f = 0; f < 2; f++) {
            for (int b = 0; b < 2; b++) {
                check_matmul(blas, dtypes[d], batches[b], 288, 768, f, &rng);
                check_matmul(blas, dtypes[d], batches[b], 4096, 1024, f, &rng);
            }
            check_matmul(blas, dtypes[d], 3, 1001, 333, f, &rng); /* odd */
        }
    slm_cuda_blas_destroy(&blas);
    assert_null(blas);
    slm_cuda_blas_destroy(&blas); /* NULL is accepted */
}

int main(void)
{
    if (slm_cuda_device_count() == 0) {
        fprintf(stderr, "SKIP: no CUDA device\n");
        return SLM_TEST_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_matches_cpu),
        cmocka_unit_test(test_convert_matches_cpu),
        cmocka_unit_test(test_residual_rmsnorm_matches_cpu),
        cmocka_unit_test(test_rope_kv_matches_cpu),
        cmocka_unit_test(test_rope_kv_bad_position),
        cmocka_unit_test(test_attention_matches_cpu),
        cmocka_unit_test(test_attention_bad_position),
        cmocka_unit_test(test_swiglu_matches_cpu),
        cmocka_unit_test(test_embedding_matches_cpu),
        cmocka_unit_test(test_argmax_matches_cpu),
        cmocka_unit_test(test_sample_matches_cpu),
        cmocka_unit_test(test_matmul_matches_cpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
