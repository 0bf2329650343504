/*
 * tests/gpu/test_comm_nccl.c - the NCCL backend of collectives/comm.h on one
 * GPU: a 1-rank communicator over MPI_COMM_SELF (MPI_Init as a singleton,
 * no mpirun), every operation against its expected values, outputs poisoned
 * first (0xff bytes: NaN as f32, -1 as i32) so that an operation that
 * writes nothing fails. Also the caller's stream, wait = false with
 * slm_comm_nccl_sync, count splitting in comm.c, split, abort, and the
 * watchdog: a stream held up by a sleeping host function must make an
 * all-reduce fail within its timeout and abort the communicator. Exits 77
 * (skipped) where no GPU is present. Send and recv need a second rank (and
 * NCCL a second GPU): tests/integration/comm_nccl.sh covers them.
 */
#include "tests/testutil.h"

#include <cuda_runtime_api.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "collectives/comm_impl.h" /* slm__comm_set_max_count */
#include "collectives/comm_mpi.h"
#include "collectives/comm_nccl.h"

/* Open MPI's allocations live until exit by design (see tests/lsan.supp). */
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

#define N 1000 /* elements per buffer: not a multiple of anything */

static void cuda_ok(cudaError_t e)
{
    if (e != cudaSuccess)
        fail_msg("CUDA: %s", cudaGetErrorString(e));
}

static void ok(slm_status rc)
{
    if (rc != SLM_OK)
        fail_msg("%s: %s", slm_status_str(rc), slm_error_message());
}

static void *dev_alloc(size_t bytes)
{
    void *d = NULL;
    cuda_ok(cudaMalloc(&d, bytes));
    return d;
}

static void poison(void *d, size_t bytes)
{
    cuda_ok(cudaMemset(d, 0xff, bytes));
}

static void to_dev(void *d, const void *h, size_t bytes)
{
    cuda_ok(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
}

static void from_dev(void *h, const void *d, size_t bytes)
{
    cuda_ok(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
}

/* f32 values i + 0.5 and i32 values 3i - 7: exact, all distinct. */
static void fill_f32(float *x, size_t n, float base)
{
    for (size_t i = 0; i < n; i++)
        x[i] = base + (float)i + 0.5f;
}

static void fill_i32(int32_t *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = 3 * (int32_t)i - 7;
}

static slm_comm_t *make_comm(const slm_comm_nccl_options *opts)
{
    slm_comm_t *comm = NULL;
    ok(slm_comm_nccl_create(MPI_COMM_SELF, 0, opts, &comm));
    assert_non_null(comm);
    return comm;
}

static void test_identity(void **state)
{
    (void)state;
    slm_comm_t *comm = make_comm(NULL);
    assert_string_equal(slm_comm_backend_name(comm), "nccl");
    assert_int_equal(slm_comm_rank(comm), 0);
    assert_int_equal(slm_comm_size(comm), 1);
    slm_comm_destroy(&comm);
    assert_null(comm);
}

static void test_all_reduce(void **state)
{
    (void)state;
    slm_comm_t *comm = make_comm(NULL);
    float hf[N], got[N];
    int32_t hi[N], goti[N];
    fill_f32(hf, N, 0.0f);
    fill_i32(hi, N);
    void *send = dev_alloc(sizeof hf), *recv = dev_alloc(sizeof hf);
    /* sum, f32, out of place: one rank's sum is its own input */
    to_dev(send, hf, sizeof hf);
    poison(recv, sizeof hf);
    ok(slm_comm_all_reduce(send, recv, N, SLM_DTYPE_F32, SLM_REDOP_SUM, comm,
                           NULL));
    from_dev(got, recv, sizeof got);
    assert_memory_equal(got, hf, sizeof hf);
    /* max, i32, in place */
    to_dev(recv, hi, sizeof hi);
    ok(slm_comm_all_reduce(recv, recv, N, SLM_DTYPE_I32, SLM_REDOP_MAX, comm,
                           NULL));
    from_dev(goti, recv, sizeof goti);
    assert_memory_equal(goti, hi, sizeof hi);
    /* in pieces of 7 elements (comm.c splits; 143 NCCL calls) */
    slm__comm_set_max_count(comm, 7);
    poison(recv, sizeof hf);
    ok(slm_comm_all_reduce(send, recv, N, SLM_DTYPE_F32, SLM_REDOP_SUM, comm,
                           NULL));
    from_dev(got, recv, sizeof got);
    assert_memory_equal(got, hf, sizeof hf);
    slm__comm_set_max_count(comm, 0);
    cudaFree(send);
    cudaFree(recv);
    slm_comm_destroy(&comm);
}

static void test_all_gather(void **state)
{
    (void)state;
    slm_comm_t *comm = make_comm(NULL);
    float hf[N], got[N];
    fill_f32(hf, N, 100.0f);
    void *send = dev_alloc(sizeof hf), *recv = dev_alloc(sizeof hf);
    to_dev(send, hf, sizeof hf);
    poison(recv, sizeof hf);
    ok(slm_comm_all_gather(send, recv, N, SLM_DTYPE_F32, comm, NULL));
    from_dev(got, recv, sizeof got);
    assert_memory_equal(got, hf, sizeof hf);
    /* in place: rank 0's slot is recv itself */
    to_dev(recv, hf, sizeof hf);
    ok(slm_comm_all_gather(recv, recv, N, SLM_DTYPE_F32, comm, NULL));
    from_dev(got, recv, sizeof got);
    assert_memory_equal(got, hf, sizeof hf);
    cudaFree(send);
    cudaFree(recv);
    slm_comm_destroy(&comm);
}

static void test_all_gather_v(void **state)
{
    (void)state;
    slm_comm_t *comm = make_comm(NULL);
    int32_t hi[N], got[N];
    fill_i32(hi, N);
    void *send = dev_alloc(sizeof hi), *recv = dev_alloc(sizeof hi);
    size_t counts[1] = {N};
    to_dev(send, hi, sizeof hi);
    poison(recv, sizeof hi);
    ok(slm_comm_all_gather_v(send, N, recv, counts, SLM_DTYPE_I32, comm, NULL));
    from_dev(got, recv, sizeof got);
    assert_memory_equal(got, hi, sizeof hi);
    to_dev(recv, hi, sizeof hi);
    ok(slm_comm_all_gather_v(recv, N, recv, counts, SLM_DTYPE_I32, comm, NULL));
    from_dev(got, recv, sizeof got);
    assert_memory_equal(got, hi, sizeof hi);
    /* a smaller contribution leaves the rest of recv alone */
    counts[0] = N / 3;
    poison(recv, sizeof hi);
    ok(slm_comm_all_gather_v(send, N / 3, recv, counts, SLM_DTYPE_I32, comm,
                             NULL));
    from_dev(got, recv, sizeof got);
    assert_memory_equal(got, hi, (N / 3) * sizeof *hi);
    assert_int_equal(got[N / 3], -1);
    cudaFree(send);
    cudaFree(recv);
    slm_comm_destroy(&comm);
}

static void test_broadcast(void **state)
{
    (void)state;
    slm_comm_t *comm = make_comm(NULL);
    float hf[N], got[N];
    fill_f32(hf, N, -50.0f);
    void *send = dev_alloc(sizeof hf), *recv = dev_alloc(sizeof hf);
    to_dev(send, hf, sizeof hf);
    poison(recv, sizeof hf);
    ok(slm_comm_broadcast(send, recv, N, SLM_DTYPE_F32, 0, comm, NULL));
    from_dev(got, recv, sizeof got);
    assert_memory_equal(got, hf, sizeof hf);
    ok(slm_comm_broadcast(recv, recv, N, SLM_DTYPE_F32, 0, comm, NULL));
    from_dev(got, recv, sizeof got);
    assert_memory_equal(got, hf, sizeof hf);
    cudaFree(send);
    cudaFree(recv);
    slm_comm_destroy(&comm);
}

/* With one rank, send and recv have no valid peer: refused before NCCL. */
static void test_send_recv_need_a_peer(void **state)
{
    (void)state;
    slm_comm_t *comm = make_comm(NULL);
    void *buf = dev_alloc(16);
    assert_int_equal(slm_comm_send(buf, 4, SLM_DTYPE_F32, 0, comm, NULL),
                     SLM_ERR_INVALID);
    assert_int_equal(slm_comm_recv(buf, 4, SLM_DTYPE_F32, 1, comm, NULL),
                     SLM_ERR_INVALID);
    cudaFree(buf);
    slm_comm_destroy(&comm);
}

/* The caller's stream, enqueue-only, then slm_comm_nccl_sync. */
static void test_stream_without_wait(void **state)
{
    (void)state;
    slm_comm_nccl_options opts = SLM_COMM_NCCL_OPTIONS_DEFAULT;
    opts.wait = false;
    slm_comm_t *comm = make_comm(&opts);
    cudaStream_t s = NULL;
    cuda_ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    float hf[N], got[N];
    fill_f32(hf, N, 7.0f);
    void *send = dev_alloc(sizeof hf), *recv = dev_alloc(sizeof hf);
    to_dev(send, hf, sizeof hf);
    poison(recv, sizeof hf);
    ok(slm_comm_all_reduce(send, recv, N, SLM_DTYPE_F32, SLM_REDOP_SUM, comm,
                           s));
    ok(slm_comm_nccl_sync(comm, s));
    cuda_ok(cudaMemcpyAsync(got, recv, sizeof got, cudaMemcpyDeviceToHost, s));
    cuda_ok(cudaStreamSynchronize(s));
    assert_memory_equal(got, hf, sizeof hf);
    cudaFree(send);
    cudaFree(recv);
    slm_comm_destroy(&comm);
    cudaStreamDestroy(s);
}

static void test_split(void **state)
{
    (void)state;
    slm_comm_t *comm = make_comm(NULL), *sub = NULL;
    ok(slm_comm_split(comm, SLM_COMM_NO_COLOR, 0, &sub));
    assert_null(sub);
    ok(slm_comm_split(comm, 5, 0, &sub));
    assert_non_null(sub);
    assert_string_equal(slm_comm_backend_name(sub), "nccl");
    assert_int_equal(slm_comm_size(sub), 1);
    slm_comm_destroy(&comm); /* the child outlives its parent */
    float hf[N], got[N];
    fill_f32(hf, N, 1.0f);
    void *buf = dev_alloc(sizeof hf);
    to_dev(buf, hf, sizeof hf);
    ok(slm_comm_all_reduce(buf, buf, N, SLM_DTYPE_F32, SLM_REDOP_MAX, sub,
                           NULL));
    from_dev(got, buf, sizeof got);
    assert_memory_equal(got, hf, sizeof hf);
    cudaFree(buf);
    slm_comm_destroy(&sub);
}

static void test_abort(void **state)
{
    (void)state;
    slm_comm_t *comm = make_comm(NULL);
    void *buf = dev_alloc(16);
    slm_comm_abort(comm, "test_comm_nccl: deliberate abort");
    assert_int_equal(slm_comm_all_reduce(buf, buf, 4, SLM_DTYPE_F32,
                                         SLM_REDOP_SUM, comm, NULL),
                     SLM_ERR_IO);
    assert_non_null(strstr(slm_error_message(), "aborted"));
    cudaFree(buf);
    slm_comm_destroy(&comm);
}

static void CUDART_CB sleep_host_fn(void *ms)
{
    struct timespec ts = {0, (long)(intptr_t)ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* A stream stalled behind a 900 ms host function stands in for a stuck
 * peer: the all-reduce behind it must fail after its 150 ms timeout. */
static void test_watchdog(void **state)
{
    (void)state;
    slm_comm_nccl_options opts = {150, true};
    slm_comm_t *comm = make_comm(&opts);
    cudaStream_t s = NULL;
    cuda_ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    void *buf = dev_alloc(N * sizeof(float));
    cuda_ok(cudaLaunchHostFunc(s, sleep_host_fn, (void *)(intptr_t)900));
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    slm_status rc =
        slm_comm_all_reduce(buf, buf, N, SLM_DTYPE_F32, SLM_REDOP_SUM, comm, s);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
    assert_int_equal(rc, SLM_ERR_IO);
    const char *msg = slm_error_message();
    if (!strstr(msg, "nccl all_reduce did not finish within 150 ms") ||
        !strstr(msg, "communicator aborted"))
        fail_msg("unexpected message: %s", msg);
    if (ms < 140 || ms > 5000)
        fail_msg("the watchdog fired after %.0f ms", ms);
    /* aborted: later operations fail at once */
    assert_int_equal(
        slm_comm_all_reduce(buf, buf, N, SLM_DTYPE_F32, SLM_REDOP_SUM, comm, s),
        SLM_ERR_IO);
    cuda_ok(cudaStreamSynchronize(s));
    cudaFree(buf);
    slm_comm_destroy(&comm);
    cudaStreamDestroy(s);
}

static void test_sync_refuses_mpi(void **state)
{
    (void)state;
    slm_comm_t *mpi = NULL;
    ok(slm_comm_mpi_create(MPI_COMM_SELF, &mpi));
    assert_int_equal(slm_comm_nccl_sync(mpi, NULL), SLM_ERR_INVALID);
    slm_comm_destroy(&mpi);
}

int main(int argc, char **argv)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        fprintf(stderr, "SKIP: no CUDA device\n");
        return SLM_TEST_SKIP;
    }
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "MPI_Init failed\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_all_reduce),
        cmocka_unit_test(test_all_gather),
        cmocka_unit_test(test_all_gather_v),
        cmocka_unit_test(test_broadcast),
        cmocka_unit_test(test_send_recv_need_a_peer),
        cmocka_unit_test(test_stream_without_wait),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_watchdog),
        cmocka_unit_test(test_sync_refuses_mpi),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    MPI_Finalize();
    return failed;
}
