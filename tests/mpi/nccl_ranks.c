/*
 * tests/mpi/nccl_ranks.c - the NCCL backend of collectives/comm.h across
 * ranks, one GPU each, under mpirun (tests/integration/comm_nccl.sh runs it
 * where at least two GPUs are present). Exits 77 (skipped) in builds
 * without CUDA and where there are fewer GPUs on a node than ranks on it.
 *
 * As in test_comm_mpi.c: every rank computes every expected value itself
 * (small integers, exact in f32, compared with memcmp), outputs are
 * poisoned first, and there are no asserts - a failing check is counted
 * and printed as "rank R: FAIL ...", the counts are summed at the end, rank
 * 0 prints "N passed, M failed" last, and every rank exits 0 only if none
 * failed.
 *
 * `nccl_ranks --probe` exits 0 at once (77 without CUDA), without MPI.
 *
 * `nccl_ranks --stall` instead tests the watchdog: the last rank never
 * enters an all-reduce (it sleeps past the others' timeout), and every other
 * rank's all-reduce must fail with SLM_ERR_IO "did not finish within" in
 * about opts.timeout_ms, not hang; rank 0 then prints "stall: ok".
 */
#include <mpi.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "collectives/comm_nccl.h"

#ifdef SLM_HAVE_CUDA

#include <cuda_runtime_api.h>

#define N 4099 /* elements per rank: odd, not a power of two */

static int g_rank, g_size;
static int g_passed, g_failed;

__attribute__((format(printf, 2, 3))) static bool check(bool ok,
                                                        const char *fmt, ...)
{
    if (ok) {
        g_passed++;
        return true;
    }
    g_failed++;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "rank %d: FAIL %s\n", g_rank, msg);
    return false;
}

static bool check_ok(slm_status rc, const char *what)
{
    return check(rc == SLM_OK, "%s: %s: %s", what, slm_status_str(rc),
                 slm_error_message());
}

/* Device buffer of `bytes`, poisoned (0xff: NaN in f32, -1 in i32) or
 * filled from host. Exits on a CUDA failure: nothing else could be run. */
static void *dev(const void *host, size_t bytes)
{
    void *d = NULL;
    if (cudaMalloc(&d, bytes) != cudaSuccess ||
        (host ? cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice)
              : cudaMemset(d, 0xff, bytes)) != cudaSuccess) {
        fprintf(stderr, "rank %d: CUDA allocation of %zu bytes failed\n",
                g_rank, bytes);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return d;
}

/* Whether device buffer d holds exactly the host values want. */
static bool dev_equals(const void *d, const void *want, size_t bytes)
{
    void *h = malloc(bytes);
    bool same =
        h && cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost) == cudaSuccess &&
        memcmp(h, want, bytes) == 0;
    free(h);
    return same;
}

static void check_all_reduce(slm_comm_t *comm)
{
    float send[N], want[N];
    int32_t mine[N], wanti[N];
    for (int i = 0; i < N; i++) {
        send[i] = (float)(g_rank + i % 7);
        want[i] = (float)(g_size * (g_size - 1) / 2 + g_size * (i % 7));
        mine[i] = g_rank * 1000 - i;
        wanti[i] = (g_size - 1) * 1000 - i;
    }
    void *ds = dev(send, sizeof send), *dr = dev(NULL, sizeof send);
    check_ok(slm_comm_all_reduce(ds, dr, N, SLM_DTYPE_F32, SLM_REDOP_SUM, comm,
                                 NULL),
             "all_reduce sum f32");
    check(dev_equals(dr, want, sizeof want), "all_reduce sum f32 values");
    void *di = dev(mine, sizeof mine);
    check_ok(slm_comm_all_reduce(di, di, N, SLM_DTYPE_I32, SLM_REDOP_MAX, comm,
                                 NULL),
             "all_reduce max i32 in place");
    check(dev_equals(di, wanti, sizeof wanti), "all_reduce max i32 values");
    cudaFree(ds);
    cudaFree(dr);
    cudaFree(di);
}

static void check_all_gather(slm_comm_t *comm)
{
    const size_t total = (size_t)N * (size_t)g_size;
    float send[N];
    float *want = malloc(total * sizeof *want);
    if (!want)
        MPI_Abort(MPI_COMM_WORLD, 1);
    for (size_t i = 0; i < total; i++)
        want[i] = (float)((i / N) * 100 + i % N);
    for (int i = 0; i < N; i++)
        send[i] = (float)(g_rank * 100 + i);
    void *ds = dev(send, sizeof send), *dr = dev(NULL, total * sizeof *want);
    check_ok(slm_comm_all_gather(ds, dr, N, SLM_DTYPE_F32, comm, NULL),
             "all_gather");
    check(dev_equals(dr, want, total * sizeof *want), "all_gather values");
    /* in place: this rank's slot already holds its part */
    cudaMemset(dr, 0xff, total * sizeof *want);
    float *slot = (float *)dr + (size_t)g_rank * N;
    cudaMemcpy(slot, send, sizeof send, cudaMemcpyHostToDevice);
    check_ok(slm_comm_all_gather(slot, dr, N, SLM_DTYPE_F32, comm, NULL),
             "all_gather in place");
    check(dev_equals(dr, want, total * sizeof *want),
          "all_gather in place values");
    cudaFree(ds);
    cudaFree(dr);
    free(want);
}

static void check_all_gather_v(slm_comm_t *comm)
{
    /* rank r gives 3r + 1 elements, rank 1 none: uneven, one empty */
    size_t *counts = calloc((size_t)g_size, sizeof *counts);
    size_t total = 0, before = 0;
    if (!counts)
        MPI_Abort(MPI_COMM_WORLD, 1);
    for (int r = 0; r < g_size; r++) {
        counts[r] = r == 1 ? 0 : (size_t)(3 * r + 1);
        if (r == g_rank)
            before = total;
        total += counts[r];
    }
    int32_t *want = malloc(total * sizeof *want);
    int32_t send[3 * 64 + 1];
    if (!want || counts[g_rank] > sizeof send / sizeof *send)
        MPI_Abort(MPI_COMM_WORLD, 1);
    for (int r = 0, k = 0; r < g_size; r++)
        for (size_t i = 0; i < counts[r]; i++)
            want[k++] = r * 1000 + (int32_t)i;
    for (size_t i = 0; i < counts[g_rank]; i++)
        send[i] = g_rank * 1000 + (int32_t)i;
    const size_t mine = counts[g_rank];
    void *ds = dev(send, mine ? mine * sizeof *send : 1);
    void *dr = dev(NULL, total * sizeof *want);
    check_ok(
        slm_comm_all_gather_v(ds, mine, dr, counts, SLM_DTYPE_I32, comm, NULL),
        "all_gather_v");
    check(dev_equals(dr, want, total * sizeof *want), "all_gather_v values");
    cudaMemset(dr, 0xff, total * sizeof *want);
    int32_t *slot = (int32_t *)dr + before;
    if (mine)
        cudaMemcpy(slot, send, mine * sizeof *send, cudaMemcpyHostToDevice);
    check_ok(slm_comm_all_gather_v(slot, mine, dr, counts, SLM_DTYPE_I32, comm,
                                   NULL),
             "all_gather_v in place");
    check(dev_equals(dr, want, total * sizeof *want),
          "all_gather_v in place values");
    cudaFree(ds);
    cudaFree(dr);
    free(want);
    free(counts);
}

static void check_broadcast(slm_comm_t *comm)
{
    const int root = g_size - 1;
    float send[N];
    for (int i = 0; i < N; i++)
        send[i] = (float)(root * 10 + i);
    void *ds = g_rank == root ? dev(send, sizeof send) : NULL;
    void *dr = dev(NULL, sizeof send);
    check_ok(slm_comm_broadcast(ds, dr, N, SLM_DTYPE_F32, root, comm, NULL),
             "broadcast");
    check(dev_equals(dr, send, sizeof send), "broadcast values");
    cudaFree(ds);
    cudaFree(dr);
}

/* A ring: each rank sends to the next and receives from the previous; even
 * ranks send first, odd ranks receive first (comm.h's advice). */
static void check_send_recv(slm_comm_t *comm, cudaStream_t s)
{
    const int next = (g_rank + 1) % g_size;
    const int prev = (g_rank + g_size - 1) % g_size;
    int32_t mine[N], want[N];
    for (int i = 0; i < N; i++) {
        mine[i] = g_rank * 7 + i;
        want[i] = prev * 7 + i;
    }
    void *ds = dev(mine, sizeof mine), *dr = dev(NULL, sizeof mine);
    for (int step = 0; step < 2; step++) {
        if ((step == 0) == (g_rank % 2 == 0))
            check_ok(slm_comm_send(ds, N, SLM_DTYPE_I32, next, comm, s),
                     "send");
        else
            check_ok(slm_comm_recv(dr, N, SLM_DTYPE_I32, prev, comm, s),
                     "recv");
    }
    check(dev_equals(dr, want, sizeof want), "recv values (from rank %d)",
          prev);
    cudaFree(ds);
    cudaFree(dr);
}

static void check_split(slm_comm_t *comm)
{
    /* two halves by parity, each ordered backwards by key */
    slm_comm_t *sub = NULL;
    if (!check_ok(slm_comm_split(comm, g_rank % 2, -g_rank, &sub), "split"))
        return;
    const int n = (g_size - g_rank % 2 + 1) / 2;
    check(sub && slm_comm_size(sub) == n, "split size %d, want %d",
          sub ? slm_comm_size(sub) : -1, n);
    if (!sub)
        return;
    check(slm_comm_rank(sub) == n - 1 - g_rank / 2, "split rank %d",
          slm_comm_rank(sub));
    int32_t v = g_rank, want = 0;
    for (int r = g_rank % 2; r < g_size; r += 2)
        want += r;
    void *d = dev(&v, sizeof v);
    check_ok(
        slm_comm_all_reduce(d, d, 1, SLM_DTYPE_I32, SLM_REDOP_SUM, sub, NULL),
        "all_reduce in the split");
    check(dev_equals(d, &want, sizeof want), "all_reduce in the split value");
    cudaFree(d);
    slm_comm_destroy(&sub);
}

/* The watchdog: the last rank stays away; the others must give up. */
static int run_stall(slm_comm_t *comm, int timeout_ms)
{
    int bad = 0;
    if (g_rank == g_size - 1) {
        usleep((useconds_t)(3 * timeout_ms) * 1000u);
    } else {
        void *d = dev(NULL, 64 * sizeof(float));
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        slm_status rc = slm_comm_all_reduce(d, d, 64, SLM_DTYPE_F32,
                                            SLM_REDOP_SUM, comm, NULL);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
        fprintf(stderr, "rank %d: after %.0f ms: %s: %s\n", g_rank, ms,
                slm_status_str(rc), slm_error_message());
        bad = rc != SLM_ERR_IO ||
              !strstr(slm_error_message(), "did not finish within") ||
              ms > 3.0 * timeout_ms;
        cudaFree(d);
    }
    int any_bad = 1;
    MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (g_rank == 0)
        printf(any_bad ? "stall: FAILED\n" : "stall: ok\n");
    return any_bad;
}

int main(int argc, char **argv)
{
    /* comm_nccl.sh asks, without mpirun, whether this build can run. */
    if (argc > 1 && strcmp(argv[1], "--probe") == 0)
        return 0;
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "MPI_Init failed\n");
        return 1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    const bool stall = argc > 1 && strcmp(argv[1], "--stall") == 0;

    /* One GPU per rank of a node: the local rank picks it. */
    MPI_Comm node;
    int local = 0, local_n = 1, ngpu = 0, enough = 0, all_enough = 0;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL,
                        &node);
    MPI_Comm_rank(node, &local);
    MPI_Comm_size(node, &local_n);
    MPI_Comm_free(&node);
    if (cudaGetDeviceCount(&ngpu) != cudaSuccess)
        ngpu = 0;
    enough = ngpu >= local_n;
    MPI_Allreduce(&enough, &all_enough, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all_enough) {
        if (g_rank == 0)
            printf("SKIP: fewer GPUs than ranks on a node (%d here)\n", ngpu);
        MPI_Finalize();
        return 77;
    }

    slm_comm_nccl_options opts = SLM_COMM_NCCL_OPTIONS_DEFAULT;
    opts.timeout_ms = stall ? 2000 : 30000;
    slm_comm_t *comm = NULL;
    if (!check_ok(slm_comm_nccl_create(MPI_COMM_WORLD, local, &opts, &comm),
                  "slm_comm_nccl_create")) {
        MPI_Abort(MPI_COMM_WORLD, 1); /* the others may be inside NCCL */
        return 1;
    }
    if (stall) {
        int rc = run_stall(comm, opts.timeout_ms);
        slm_comm_destroy(&comm);
        MPI_Finalize();
        return rc;
    }
    cudaStream_t s = NULL;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    check(slm_comm_rank(comm) == g_rank && slm_comm_size(comm) == g_size,
          "rank %d of %d", slm_comm_rank(comm), slm_comm_size(comm));
    check_all_reduce(comm);
    check_all_gather(comm);
    check_all_gather_v(comm);
    check_broadcast(comm);
    check_send_recv(comm, s);
    check_split(comm);
    slm_comm_destroy(&comm);
    cudaStreamDestroy(s);

    int counts[2] = {g_passed, g_failed}, sums[2] = {0, 0};
    MPI_Allreduce(counts, sums, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (g_rank == 0)
        printf("%d passed, %d failed\n", sums[0], sums[1]);
    MPI_Finalize();
    return sums[1] == 0 ? 0 : 1;
}

#else /* !SLM_HAVE_CUDA */

int main(void)
{
    printf("SKIP: built without CUDA/NCCL\n");
    return 77;
}

#endif
