/*
 * tests/unit/test_device.c - shard/device: parsing --device, resolving it
 * against the GPUs this build and machine have, picking a GPU by local rank,
 * and the CUDA transformer's interface answering cleanly where there is no
 * GPU. Needs no files; meaningful in both builds (with and without CUDA).
 */
#include "tests/testutil.h"

#include <stdlib.h>
#include <string.h>

#include "shard/device.h"

static void test_parse(void **state)
{
    (void)state;
    slm_device_kind k = SLM_DEVICE_CPU;
    assert_int_equal(slm_device_parse("auto", &k), SLM_OK);
    assert_int_equal(k, SLM_DEVICE_AUTO);
    assert_int_equal(slm_device_parse("cpu", &k), SLM_OK);
    assert_int_equal(k, SLM_DEVICE_CPU);
    assert_int_equal(slm_device_parse("cuda", &k), SLM_OK);
    assert_int_equal(k, SLM_DEVICE_CUDA);
    const char *bad[] = {"", "CUDA", "gpu", "cuda0", "cpu ", "bogus"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        k = SLM_DEVICE_CPU;
        assert_int_equal(slm_device_parse(bad[i], &k), SLM_ERR_INVALID);
        assert_int_equal(k, SLM_DEVICE_CPU); /* untouched */
        assert_non_null(strstr(slm_error_message(), "expected auto, cpu or "
                                                    "cuda"));
    }
    assert_int_equal(slm_device_parse(NULL, &k), SLM_ERR_INVALID);
    assert_string_equal(slm_device_name(SLM_DEVICE_CUDA), "cuda");
    assert_string_equal(slm_device_name((slm_device_kind)42), "?");
}

static void test_resolve(void **state)
{
    (void)state;
    const int n = slm_device_count();
    assert_true(n >= 0);
    slm_device_kind k;
    assert_int_equal(slm_device_resolve(SLM_DEVICE_CPU, &k), SLM_OK);
    assert_int_equal(k, SLM_DEVICE_CPU);
    assert_int_equal(slm_device_resolve(SLM_DEVICE_AUTO, &k), SLM_OK);
    assert_int_equal(k, n > 0 ? SLM_DEVICE_CUDA : SLM_DEVICE_CPU);
    slm_status rc = slm_device_resolve(SLM_DEVICE_CUDA, &k);
    if (n > 0) {
        assert_int_equal(rc, SLM_OK);
        assert_int_equal(k, SLM_DEVICE_CUDA);
    } else {
        assert_int_equal(rc, SLM_ERR_UNSUPPORTED);
        const char *m = slm_error_message();
        assert_true(strstr(m, "built without CUDA") ||
                    strstr(m, "no CUDA GPU found"));
    }
}

static void test_pick(void **state)
{
    (void)state;
    const int n = slm_device_count();
    int dev = -1;
    if (n == 0) {
        assert_int_equal(slm_device_pick(0, &dev), SLM_ERR_UNSUPPORTED);
        return;
    }
    for (int r = 0; r < 3 * n; r++) {
        assert_int_equal(slm_device_pick(r, &dev), SLM_OK);
        assert_int_equal(dev, r % n);
    }
    assert_int_equal(slm_device_pick(-5, &dev), SLM_OK);
    assert_int_equal(dev, 0);
}

static void test_local_rank_from_env(void **state)
{
    (void)state;
    const char *saved = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    char *keep = saved ? strdup(saved) : NULL;
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3", 1);
    assert_int_equal(slm_device_local_rank(MPI_COMM_NULL), 3);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "x3", 1); /* ignored */
    unsetenv("SLURM_LOCALID");
    assert_int_equal(slm_device_local_rank(MPI_COMM_NULL), 0);
    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
    setenv("SLURM_LOCALID", "2", 1);
    assert_int_equal(slm_device_local_rank(MPI_COMM_NULL), 2);
    unsetenv("SLURM_LOCALID");
    if (keep) {
        setenv("OMPI_COMM_WORLD_LOCAL_RANK", keep, 1);
        free(keep);
    }
}

/* Without a GPU the CUDA forward pass exists and fails with a status (the
 * case set "without_gpu", which main runs only where there is no GPU). */
static void test_cuda_interface_without_gpu(void **state)
{
    (void)state;
    slm_cuda_transformer_t *t = (slm_cuda_transformer_t *)&t; /* poison */
    slm_forward_t *f = (slm_forward_t *)&f;
    const slm_cuda_options opt = slm_cuda_options_default();
    assert_int_equal(opt.batch, 1);
#ifndef SLM_HAVE_CUDA
    /* the stub touches no weights before it fails */
    assert_int_equal(slm_cuda_transformer_create(NULL, NULL, 0, &opt, &t),
                     SLM_ERR_UNSUPPORTED);
    assert_null(t);
    assert_non_null(strstr(slm_error_message(), "built without CUDA"));
#endif
    t = NULL;
    slm_cuda_transformer_destroy(&t);
    slm_cuda_transformer_destroy(NULL);
    slm_forward_destroy(NULL);
    assert_int_equal(
        slm_forward_create(SLM_DEVICE_AUTO, 0, NULL, NULL, NULL, &f),
        SLM_ERR_INVALID);
}

int main(int argc, char **argv)
{
    if (slm_test_case_set(argc, argv, "without_gpu")) {
        if (slm_device_count() > 0)
            return slm_test_cannot_run("a GPU is present: the cases of a "
                                       "machine without one do not apply");
        const struct CMUnitTest without_gpu[] = {
            cmocka_unit_test(test_cuda_interface_without_gpu),
        };
        return cmocka_run_group_tests_name("device, without a GPU", without_gpu,
                                           NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_pick),
        cmocka_unit_test(test_local_rank_from_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
