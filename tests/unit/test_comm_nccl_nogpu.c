/*
 * tests/unit/test_comm_nccl_nogpu.c - the NCCL backend's constructor where it
 * cannot work: in a build without CUDA it must say "built without
 * CUDA/NCCL"; in a CUDA build on a machine without a GPU, "no CUDA device".
 * Either way SLM_ERR_UNSUPPORTED, *out NULL, and nothing left behind. Where
 * a GPU is present the communicator is made, destroyed, and the rest skipped
 * (tests/gpu/test_comm_nccl.c covers that case).
 *
 * The constructor is collective over an MPI communicator, so main runs
 * MPI_Init (a singleton, without mpirun) and uses MPI_COMM_SELF.
 */
#include "tests/testutil.h"

#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "collectives/comm_mpi.h"
#include "collectives/comm_nccl.h"
#include "shard/device.h"

/* Open MPI keeps allocations until exit by design; the ASan build's LSan
 * would report them. tests/lsan.supp names the same libraries for the
 * integration scripts, but ctest's unit tests do not load it, and this is
 * the one unit test that initializes MPI. Unused outside sanitizer builds. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libmpi.so\nleak:libopen-pal.so\nleak:libopen-rte.so\n"
           "leak:libhwloc.so\nleak:libpmix.so\nleak:libevent\n";
}

/* Open MPI has no frame pointers: only the slow unwinder reaches the frames
 * the suppressions name (as tests/lib.sh sets for the scripts). */
const char *__lsan_default_options(void);
const char *__lsan_default_options(void)
{
    return "fast_unwind_on_malloc=0";
}

/* What a build without a usable GPU must say. */
static const char *expected_reason(void)
{
#ifdef SLM_HAVE_CUDA
    return "no CUDA device";
#else
    return "built without CUDA/NCCL";
#endif
}

static void test_out_null_is_invalid(void **state)
{
    (void)state;
    assert_int_equal(slm_comm_nccl_create(MPI_COMM_SELF, 0, NULL, NULL),
                     SLM_ERR_INVALID);
    assert_non_null(strstr(slm_error_message(), "out is NULL"));
}

static void test_create_fails_cleanly(void **state)
{
    (void)state;
    slm_comm_t *comm = (slm_comm_t *)&comm; /* not NULL: must be reset */
    slm_status rc = slm_comm_nccl_create(MPI_COMM_SELF, 0, NULL, &comm);
    assert_int_equal(rc, SLM_ERR_UNSUPPORTED);
    assert_null(comm);
    const char *msg = slm_error_message();
    print_message("slm_comm_nccl_create: %s\n", msg);
    if (!strstr(msg, expected_reason()))
        fail_msg("message \"%s\" lacks \"%s\"", msg, expected_reason());
    /* Failing again is just as clean (no state left behind). */
    comm = (slm_comm_t *)&comm;
    assert_int_equal(slm_comm_nccl_create(MPI_COMM_SELF, 0, NULL, &comm), rc);
    assert_null(comm);
}

static void test_bad_options(void **state)
{
    (void)state;
    slm_comm_nccl_options opts = SLM_COMM_NCCL_OPTIONS_DEFAULT;
    assert_int_equal(opts.timeout_ms, SLM_COMM_NCCL_DEFAULT_TIMEOUT_MS);
    assert_true(opts.wait);
    opts.timeout_ms = 0;
    slm_comm_t *comm = NULL;
    slm_status rc = slm_comm_nccl_create(MPI_COMM_SELF, 0, &opts, &comm);
    assert_null(comm);
#ifdef SLM_HAVE_CUDA
    /* Checked before anything else, GPU or not. */
    assert_int_equal(rc, SLM_ERR_INVALID);
    assert_non_null(strstr(slm_error_message(), "timeout_ms = 0"));
    opts.timeout_ms = SLM_COMM_NCCL_DEFAULT_TIMEOUT_MS;
    assert_int_equal(slm_comm_nccl_create(MPI_COMM_NULL, 0, &opts, &comm),
                     SLM_ERR_INVALID);
    assert_non_null(strstr(slm_error_message(), "MPI_COMM_NULL"));
#else
    assert_int_equal(rc, SLM_ERR_UNSUPPORTED);
#endif
}

static void test_sync_refuses_other_communicators(void **state)
{
    (void)state;
    assert_int_equal(slm_comm_nccl_sync(NULL, NULL), SLM_ERR_INVALID);
    slm_comm_t *mpi = NULL;
    assert_int_equal(slm_comm_mpi_create(MPI_COMM_SELF, &mpi), SLM_OK);
    assert_int_equal(slm_comm_nccl_sync(mpi, NULL), SLM_ERR_INVALID);
    assert_non_null(strstr(slm_error_message(), "not an nccl communicator"));
    slm_comm_destroy(&mpi);
}

int main(int argc, char **argv)
{
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "MPI_Init failed\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_out_null_is_invalid),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_sync_refuses_other_communicators),
    };
    /* the case set "without_gpu": creating a communicator must fail where
     * there is no usable GPU */
    const struct CMUnitTest without_gpu[] = {
        cmocka_unit_test(test_create_fails_cleanly),
    };
    int failed;
    if (!slm_test_case_set(argc, argv, "without_gpu"))
        failed = cmocka_run_group_tests(tests, NULL, NULL);
    else if (slm_device_count() > 0)
        failed = slm_test_cannot_run("a GPU is present: the cases of a "
                                     "machine without one do not apply");
    else
        failed = cmocka_run_group_tests_name("nccl, without a GPU", without_gpu,
                                             NULL, NULL);
    MPI_Finalize();
    return failed;
}
