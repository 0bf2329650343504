/*
 * tests/gpu/test_cuda_kernels.c - every CUDA kernel against its CPU twin on
 * random inputs. Outputs are poisoned with NaN first, so a kernel that writes
 * nothing fails. Exits 77 (skipped) where no GPU is present.
 */
#include "tests/testutil.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/kernels.h"

static void *dev_copy(const float *h, size_t n)
{
    void *d = NULL;
    assert_int_equal(cudaMalloc(&d, n * sizeof(float)), cudaSuccess);
    if (h)
        assert_int_equal(
            cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
    return d;
}

/* Tolerance: float32 sums in a different order; 1e-5 relative. */
static void test_rmsnorm_matches_cpu(void **state)
{
    (void)state;
    const size_t rows = 7, n = 4096 + 3;
    uint64_t seed = 42;
    float *x = malloc(rows * n * sizeof *x), *w = malloc(n * sizeof *w);
    float *want = malloc(rows * n * sizeof *want);
    float *got = malloc(rows * n * sizeof *got);
    assert_non_null(x && w && want && got);
    slm_test_fill_uniform(x, rows * n, &seed, -2.0f, 2.0f);
    slm_test_fill_uniform(w, n, &seed, 0.5f, 1.5f);
    for (size_t r = 0; r < rows; r++)
        slm_cpu_rmsnorm(want + r * n, x + r * n, w, n, 1e-5f);
    float *dx = dev_copy(x, rows * n), *dw = dev_copy(w, n);
    float *dout = dev_copy(NULL, rows * n);
    assert_int_equal(cudaMemset(dout, 0xff, rows * n * sizeof(float)),
                     cudaSuccess); /* 0xffffffff is a NaN */
    assert_int_equal(slm_cuda_rmsnorm(dout, dx, dw, rows, n, 1e-5f, NULL),
                     SLM_OK);
    assert_int_equal(
        cudaMemcpy(got, dout, rows * n * sizeof(float), cudaMemcpyDeviceToHost),
        cudaSuccess);
    assert_true(slm_test_max_rel_err(got, want, rows * n, 1e-3) < 1e-5);
    cudaFree(dx);
    cudaFree(dw);
    cudaFree(dout);
    free(x);
    free(w);
    free(want);
    free(got);
}

int main(void)
{
    if (slm_cuda_device_count() == 0) {
        fprintf(stderr, "SKIP: no CUDA device\n");
        return SLM_TEST_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_matches_cpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
