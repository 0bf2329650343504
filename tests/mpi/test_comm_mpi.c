/*
 * tests/mpi/test_comm_mpi.c - the MPI backend of collectives/comm.h, run
 * under mpirun with any number of ranks (tests/integration/comm_mpi.sh runs
 * 1 to 4).
 *
 * Every rank runs every check on inputs it can compute for all ranks, so it
 * knows each expected result locally: values are small integers, exactly
 * representable in f32, so float sums are exact and compared with ==.
 *
 * No cmocka asserts here: a failing assert would end one rank while the
 * others wait for it inside a collective, turning one failure into a hang.
 * Each check instead counts a pass or prints "rank R: FAIL ..." and counts
 * a failure; at the end the counts are summed over ranks, rank 0 prints
 * "N passed, M failed" as the last line, and every rank exits 0 only if no
 * rank failed.
 *
 * The MPI calls that move data are wrapped below through MPI's profiling
 * interface (our definition of MPI_Send is linked in place of Open MPI's,
 * which forwards to PMPI_Send), so the test can count them: to prove that
 * invalid arguments are refused before MPI is touched, and that large
 * counts are split into the expected number of pieces.
 *
 * `test_comm_mpi --abort` (2+ ranks) instead has the last rank call
 * slm_comm_abort while the others wait in an all-reduce that can never
 * complete; the job must end promptly with a non-zero status.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "collectives/comm.h"
#include "collectives/comm_impl.h" /* slm__comm_set_max_count */
#include "collectives/comm_mpi.h"

static int g_rank, g_size; /* in MPI_COMM_WORLD */
static int g_passed, g_failed;
static long g_mpi_calls; /* data-moving MPI calls made by this rank */

/* --- counting wrappers (profiling interface) --- */

int MPI_Allreduce(const void *sendbuf, void *recvbuf, int count,
                  MPI_Datatype datatype, MPI_Op op, MPI_Comm comm)
{
    g_mpi_calls++;
    return PMPI_Allreduce(sendbuf, recvbuf, count, datatype, op, comm);
}

int MPI_Allgather(const void *sendbuf, int sendcount, MPI_Datatype sendtype,
                  void *recvbuf, int recvcount, MPI_Datatype recvtype,
                  MPI_Comm comm)
{
    g_mpi_calls++;
    return PMPI_Allgather(sendbuf, sendcount, sendtype, recvbuf, recvcount,
                          recvtype, comm);
}

int MPI_Allgatherv(const void *sendbuf, int sendcount, MPI_Datatype sendtype,
                   void *recvbuf, const int recvcounts[], const int displs[],
                   MPI_Datatype recvtype, MPI_Comm comm)
{
    g_mpi_calls++;
    return PMPI_Allgatherv(sendbuf, sendcount, sendtype, recvbuf, recvcounts,
                           displs, recvtype, comm);
}

int MPI_Bcast(void *buffer, int count, MPI_Datatype datatype, int root,
              MPI_Comm comm)
{
    g_mpi_calls++;
    return PMPI_Bcast(buffer, count, datatype, root, comm);
}

int MPI_Send(const void *buf, int count, MPI_Datatype datatype, int dest,
             int tag, MPI_Comm comm)
{
    g_mpi_calls++;
    return PMPI_Send(buf, count, datatype, dest, tag, comm);
}

int MPI_Recv(void *buf, int count, MPI_Datatype datatype, int source, int tag,
             MPI_Comm comm, MPI_Status *status)
{
    g_mpi_calls++;
    return PMPI_Recv(buf, count, datatype, source, tag, comm, status);
}

/* --- checks --- */

__attribute__((format(printf, 2, 3))) static bool check(bool ok,
                                                        const char *fmt, ...)
{
    if (ok) {
        g_passed++;
        return true;
    }
    g_failed++;
    /* One write per line, so that lines from different ranks do not
     * interleave. */
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

/* rc must be `want`, the message must contain `needle`, and no MPI call may
 * have been made since `calls_before`. */
static void check_refused(slm_status rc, slm_status want, const char *needle,
                          long calls_before, const char *what)
{
    check(rc == want, "%s: got %s (%s), want %s", what, slm_status_str(rc),
          slm_error_message(), slm_status_str(want));
    check(strstr(slm_error_message(), needle) != NULL,
          "%s: message \"%s\" does not mention \"%s\"", what,
          slm_error_message(), needle);
    check(g_mpi_calls == calls_before, "%s: made %ld MPI calls", what,
          g_mpi_calls - calls_before);
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "rank %d: out of memory (%zu bytes)\n", g_rank, bytes);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return p;
}

/* --- the data: element i of rank r's input, a small integer in [-9, 9] --- */

static int32_t value(int rank, size_t i, int salt)
{
    return (int32_t)((i * 7 + (size_t)rank * 3 + (size_t)salt * 5) % 19) - 9;
}

#define SENTINEL 12345

static void put(void *buf, slm_dtype dt, size_t i, int32_t v)
{
    if (dt == SLM_DTYPE_F32)
        ((float *)buf)[i] = (float)v;
    else
        ((int32_t *)buf)[i] = v;
}

static bool is(const void *buf, slm_dtype dt, size_t i, int32_t v)
{
    if (dt == SLM_DTYPE_F32)
        return ((const float *)buf)[i] == (float)v;
    return ((const int32_t *)buf)[i] == v;
}

static double get(const void *buf, slm_dtype dt, size_t i)
{
    if (dt == SLM_DTYPE_F32)
        return ((const float *)buf)[i];
    return ((const int32_t *)buf)[i];
}

static void fill(void *buf, slm_dtype dt, size_t n, int rank, int salt)
{
    for (size_t i = 0; i < n; i++)
        put(buf, dt, i, value(rank, i, salt));
}

static void fill_const(void *buf, slm_dtype dt, size_t n, int32_t v)
{
    for (size_t i = 0; i < n; i++)
        put(buf, dt, i, v);
}

/* The first i with buf[i] != value(rank, i, salt), or n. */
static size_t first_wrong(const void *buf, slm_dtype dt, size_t n, int rank,
                          int salt)
{
    for (size_t i = 0; i < n; i++)
        if (!is(buf, dt, i, value(rank, i, salt)))
            return i;
    return n;
}

static int32_t reduced(slm_redop op, int size, size_t i, int salt)
{
    int32_t acc = value(0, i, salt);
    for (int r = 1; r < size; r++) {
        int32_t v = value(r, i, salt);
        acc = op == SLM_REDOP_SUM ? acc + v : (v > acc ? v : acc);
    }
    return acc;
}

static const slm_dtype dtypes[] = {SLM_DTYPE_F32, SLM_DTYPE_I32};
static const slm_redop redops[] = {SLM_REDOP_SUM, SLM_REDOP_MAX};

/* --- all-reduce --- */

static void all_reduce_case(slm_comm_t *comm, size_t n, slm_dtype dt,
                            slm_redop op, bool in_place, int salt)
{
    const int rank = slm_comm_rank(comm), size = slm_comm_size(comm);
    char what[160];
    snprintf(what, sizeof what, "all_reduce %s %s n=%zu %s (size %d)",
             slm_dtype_name(dt), slm_redop_name(op), n,
             in_place ? "in place" : "out of place", size);
    /* Empty: NULL buffers are allowed. */
    void *send = n ? xmalloc(n * 4) : NULL;
    void *recv = in_place ? send : (n ? xmalloc(n * 4) : NULL);
    fill(send, dt, n, rank, salt);
    if (!in_place)
        fill_const(recv, dt, n, SENTINEL);
    if (check_ok(slm_comm_all_reduce(send, recv, n, dt, op, comm, NULL),
                 what)) {
        size_t bad = n;
        for (size_t i = 0; i < n && bad == n; i++)
            if (!is(recv, dt, i, reduced(op, size, i, salt)))
                bad = i;
        check(bad == n, "%s: recv[%zu] = %g, want %d", what, bad,
              bad < n ? get(recv, dt, bad) : 0.0,
              bad < n ? reduced(op, size, bad, salt) : 0);
        if (!in_place)
            check(first_wrong(send, dt, n, rank, salt) == n,
                  "%s: send was modified", what);
    }
    if (!in_place)
        free(recv);
    free(send);
}

static void test_all_reduce(slm_comm_t *comm)
{
    static const size_t counts[] = {0, 1, 7, 1000, 100003};
    int salt = 0;
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
        for (size_t d = 0; d < 2; d++)
            for (size_t o = 0; o < 2; o++)
                for (int in_place = 0; in_place < 2; in_place++)
                    all_reduce_case(comm, counts[c], dtypes[d], redops[o],
                                    in_place, salt++);
}

/* --- all-gather --- */

static void all_gather_case(slm_comm_t *comm, size_t n, slm_dtype dt,
                            bool in_place, int salt)
{
    const int rank = slm_comm_rank(comm), size = slm_comm_size(comm);
    char what[160];
    snprintf(what, sizeof what, "all_gather %s n=%zu %s (size %d)",
             slm_dtype_name(dt), n, in_place ? "in place" : "out of place",
             size);
    const size_t total = n * (size_t)size;
    void *recv = total ? xmalloc(total * 4) : NULL;
    void *send = NULL;
    fill_const(recv, dt, total, SENTINEL);
    if (in_place) {
        send = n ? (char *)recv + (size_t)rank * n * 4 : NULL;
        fill(send, dt, n, rank, salt);
    } else {
        send = n ? xmalloc(n * 4) : NULL;
        fill(send, dt, n, rank, salt);
    }
    if (check_ok(slm_comm_all_gather(send, recv, n, dt, comm, NULL), what)) {
        for (int r = 0; r < size; r++) {
            size_t bad =
                first_wrong((char *)recv + (size_t)r * n * 4, dt, n, r, salt);
            check(bad == n, "%s: element %zu from rank %d is wrong", what, bad,
                  r);
        }
    }
    if (!in_place)
        free(send);
    free(recv);
}

static void test_all_gather(slm_comm_t *comm)
{
    static const size_t counts[] = {0, 1, 7, 1000};
    int salt = 100;
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
        for (size_t d = 0; d < 2; d++)
            for (int in_place = 0; in_place < 2; in_place++)
                all_gather_case(comm, counts[c], dtypes[d], in_place, salt++);
}

/* counts[r] for the uneven gathers: rank 1 (and 4, 7, ...) contributes
 * nothing; `base` scales the others. */
static size_t uneven_count(int r, size_t base)
{
    return r % 3 == 1 ? 0 : base + 5 * (size_t)r;
}

static void all_gather_v_case(slm_comm_t *comm, size_t base, slm_dtype dt,
                              bool in_place, int salt)
{
    const int rank = slm_comm_rank(comm), size = slm_comm_size(comm);
    char what[160];
    snprintf(what, sizeof what, "all_gather_v %s base=%zu %s (size %d)",
             slm_dtype_name(dt), base, in_place ? "in place" : "out of place",
             size);
    size_t *counts = xmalloc((size_t)size * sizeof *counts);
    size_t total = 0, mine_at = 0;
    for (int r = 0; r < size; r++) {
        counts[r] = uneven_count(r, base);
        if (r == rank)
            mine_at = total;
        total += counts[r];
    }
    const size_t n = counts[rank];
    void *recv = xmalloc(total * 4);
    fill_const(recv, dt, total, SENTINEL);
    void *send;
    if (in_place) {
        send = (char *)recv + mine_at * 4;
    } else {
        /* A rank with nothing to send may pass NULL. */
        send = n ? xmalloc(n * 4) : NULL;
    }
    fill(send, dt, n, rank, salt);
    if (check_ok(slm_comm_all_gather_v(send, n, recv, counts, dt, comm, NULL),
                 what)) {
        size_t at = 0;
        for (int r = 0; r < size; r++) {
            size_t bad =
                first_wrong((char *)recv + at * 4, dt, counts[r], r, salt);
            check(bad == counts[r], "%s: element %zu from rank %d is wrong",
                  what, bad, r);
            at += counts[r];
        }
    }
    if (!in_place)
        free(send);
    free(recv);
    free(counts);
}

static void test_all_gather_v(slm_comm_t *comm)
{
    static const size_t bases[] = {3, 20000};
    int salt = 200;
    for (size_t b = 0; b < 2; b++)
        for (size_t d = 0; d < 2; d++)
            for (int in_place = 0; in_place < 2; in_place++)
                all_gather_v_case(comm, bases[b], dtypes[d], in_place, salt++);
    /* Everyone empty: a no-op, NULL buffers allowed. */
    size_t *zeros = calloc((size_t)slm_comm_size(comm), sizeof *zeros);
    check_ok(
        slm_comm_all_gather_v(NULL, 0, NULL, zeros, SLM_DTYPE_F32, comm, NULL),
        "all_gather_v with all counts 0");
    free(zeros);
}

/* --- broadcast --- */

static void broadcast_case(slm_comm_t *comm, size_t n, slm_dtype dt, int root,
                           bool in_place, int salt)
{
    const int rank = slm_comm_rank(comm), size = slm_comm_size(comm);
    char what[160];
    snprintf(what, sizeof what, "broadcast %s n=%zu from %d, root %s (size %d)",
             slm_dtype_name(dt), n, root,
             in_place ? "in place" : "out of place", size);
    void *recv = xmalloc(n * 4), *send = NULL;
    fill_const(recv, dt, n, SENTINEL);
    if (rank == root) {
        send = in_place ? recv : xmalloc(n * 4);
        fill(send, dt, n, root, salt);
    }
    if (check_ok(slm_comm_broadcast(send, recv, n, dt, root, comm, NULL),
                 what)) {
        size_t bad = first_wrong(recv, dt, n, root, salt);
        check(bad == n, "%s: recv[%zu] is wrong", what, bad);
    }
    if (send != recv)
        free(send);
    free(recv);
}

static void test_broadcast(slm_comm_t *comm)
{
    static const size_t counts[] = {1, 1000, 100003};
    int salt = 300;
    for (int root = 0; root < slm_comm_size(comm); root++)
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
            for (size_t d = 0; d < 2; d++)
                for (int in_place = 0; in_place < 2; in_place++)
                    broadcast_case(comm, counts[c], dtypes[d], root, in_place,
                                   salt++);
}

/* --- send / recv --- */

/* Rank r sends n elements to r + 1 and receives from r - 1 (mod size).
 * Even ranks send first, odd ranks receive first, so the ring completes
 * even when sends wait for their receives. */
static void ring_case(slm_comm_t *comm, size_t n, slm_dtype dt, int salt)
{
    const int rank = slm_comm_rank(comm), size = slm_comm_size(comm);
    const int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    char what[160];
    snprintf(what, sizeof what, "ring %s n=%zu (size %d)", slm_dtype_name(dt),
             n, size);
    void *out = n ? xmalloc(n * 4) : NULL, *in = n ? xmalloc(n * 4) : NULL;
    fill(out, dt, n, rank, salt);
    fill_const(in, dt, n, SENTINEL);
    slm_status s1, s2;
    if (rank % 2 == 0) {
        s1 = slm_comm_send(out, n, dt, next, comm, NULL);
        s2 = slm_comm_recv(in, n, dt, prev, comm, NULL);
    } else {
        s2 = slm_comm_recv(in, n, dt, prev, comm, NULL);
        s1 = slm_comm_send(out, n, dt, next, comm, NULL);
    }
    check_ok(s1, what);
    if (check_ok(s2, what)) {
        size_t bad = first_wrong(in, dt, n, prev, salt);
        check(bad == n, "%s: element %zu from rank %d is wrong", what, bad,
              prev);
    }
    free(out);
    free(in);
}

static void test_send_recv(slm_comm_t *comm)
{
    if (slm_comm_size(comm) < 2)
        return;
    static const size_t counts[] = {0, 1, 1000, 100003};
    int salt = 400;
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
        for (size_t d = 0; d < 2; d++)
            ring_case(comm, counts[c], dtypes[d], salt++);
}

/* A receive told the wrong count: shorter messages are refused by us
 * (SLM_ERR_FORMAT), longer ones by MPI (truncation, SLM_ERR_IO with MPI's
 * text). Ranks 0 and 1 only; small messages, so the sends never wait. */
static void test_recv_mismatch(slm_comm_t *world)
{
    if (g_size < 2 || g_rank > 1)
        return;
    int32_t buf[10] = {0};
    if (g_rank == 0) {
        check_ok(slm_comm_send(buf, 5, SLM_DTYPE_I32, 1, world, NULL),
                 "send 5 for a receive of 10");
        check_ok(slm_comm_send(buf, 10, SLM_DTYPE_I32, 1, world, NULL),
                 "send 10 for a receive of 5");
        return;
    }
    slm_status rc = slm_comm_recv(buf, 10, SLM_DTYPE_I32, 0, world, NULL);
    check(rc == SLM_ERR_FORMAT && strstr(slm_error_message(), "sent 5"),
          "short message: got %s (%s), want a format error saying \"sent 5\"",
          slm_status_str(rc), slm_error_message());
    rc = slm_comm_recv(buf, 5, SLM_DTYPE_I32, 0, world, NULL);
    check(rc == SLM_ERR_IO && strstr(slm_error_message(), "MPI_ERR_TRUNCATE") &&
              strstr(slm_error_message(), "MPI_Recv"),
          "long message: got %s (%s), want an i/o error from MPI_Recv with "
          "MPI_ERR_TRUNCATE",
          slm_status_str(rc), slm_error_message());
}

/* Our traffic runs on a private duplicate: a message the caller sends on
 * MPI_COMM_WORLD, even with the tag comm_mpi.c uses, is not taken by
 * slm_comm_recv. */
static void test_isolation(slm_comm_t *world)
{
    if (g_size < 2 || g_rank > 1)
        return;
    const int tag = 0x534c; /* comm_mpi.c's SLM_MPI_TAG */
    int32_t theirs = 111, ours = 222, got = 0;
    if (g_rank == 0) {
        /* Small: sent eagerly, so the order of the receives cannot block. */
        PMPI_Send(&theirs, 1, MPI_INT32_T, 1, tag, MPI_COMM_WORLD);
        check_ok(slm_comm_send(&ours, 1, SLM_DTYPE_I32, 1, world, NULL),
                 "isolation send");
        return;
    }
    if (check_ok(slm_comm_recv(&got, 1, SLM_DTYPE_I32, 0, world, NULL),
                 "isolation recv"))
        check(got == ours, "isolation: slm_comm_recv got %d, want %d", got,
              ours);
    PMPI_Recv(&got, 1, MPI_INT32_T, 0, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    check(got == theirs, "isolation: MPI_Recv on the world got %d, want %d",
          got, theirs);
}

/* --- large counts: split into pieces or refused --- */

static void test_pieces(slm_comm_t *comm)
{
    const int rank = slm_comm_rank(comm), size = slm_comm_size(comm);
    slm__comm_set_max_count(comm, 1000);

    long before = g_mpi_calls;
    all_reduce_case(comm, 100003, SLM_DTYPE_F32, SLM_REDOP_SUM, true, 500);
    check(g_mpi_calls - before == 101,
          "all_reduce of 100003 in pieces of 1000: %ld MPI calls, want 101",
          g_mpi_calls - before);

    before = g_mpi_calls;
    broadcast_case(comm, 2500, SLM_DTYPE_I32, size - 1, false, 501);
    check(g_mpi_calls - before == 3,
          "broadcast of 2500 in pieces of 1000: %ld MPI calls, want 3",
          g_mpi_calls - before);

    if (size >= 2) {
        before = g_mpi_calls;
        ring_case(comm, 2500, SLM_DTYPE_F32, 502);
        check(g_mpi_calls - before == 6,
              "ring of 2500 in pieces of 1000: %ld MPI calls, want 6",
              g_mpi_calls - before);
    }

    /* The gathers cannot be split: refused, on every rank alike. */
    float *buf = xmalloc(1001 * (size_t)size * sizeof *buf);
    before = g_mpi_calls;
    check_refused(slm_comm_all_gather(buf, buf + (size_t)rank * 1001, 1001,
                                      SLM_DTYPE_F32, comm, NULL),
                  SLM_ERR_RANGE, "send_count = 1001", before,
                  "all_gather above max_count");
    size_t *counts = xmalloc((size_t)size * sizeof *counts);
    for (int r = 0; r < size; r++)
        counts[r] = r == 0 ? 1001 : 0;
    check_refused(slm_comm_all_gather_v(rank == 0 ? buf : NULL, counts[rank],
                                        buf, counts, SLM_DTYPE_F32, comm, NULL),
                  SLM_ERR_RANGE, "total 1001", before,
                  "all_gather_v above max_count");
    free(counts);
    free(buf);

    slm__comm_set_max_count(comm, 0);
    check(comm->max_count == INT_MAX, "max_count restored to %zu",
          comm->max_count);
}

/* --- split --- */

static void test_split(slm_comm_t *world)
{
    /* Two groups by parity, ordered by descending world rank. */
    const int color = g_rank % 2;
    slm_comm_t *sub = NULL;
    if (!check_ok(slm_comm_split(world, color, -g_rank, &sub), "split") ||
        !check(sub != NULL, "split gave NULL"))
        return;
    int want_size = 0, want_rank = 0;
    for (int r = 0; r < g_size; r++) {
        want_size += r % 2 == color;
        want_rank += r % 2 == color && r > g_rank;
    }
    check(slm_comm_size(sub) == want_size, "split size %d, want %d",
          slm_comm_size(sub), want_size);
    check(slm_comm_rank(sub) == want_rank, "split rank %d, want %d",
          slm_comm_rank(sub), want_rank);
    check(strcmp(slm_comm_backend_name(sub), "mpi") == 0,
          "split backend is \"%s\"", slm_comm_backend_name(sub));

    /* Collectives on each group see only that group. */
    int32_t mine = g_rank, sum = 0, want_sum = 0;
    for (int r = color; r < g_size; r += 2)
        want_sum += r;
    if (check_ok(slm_comm_all_reduce(&mine, &sum, 1, SLM_DTYPE_I32,
                                     SLM_REDOP_SUM, sub, NULL),
                 "all_reduce on the split"))
        check(sum == want_sum, "split all_reduce: %d, want %d", sum, want_sum);
    int32_t *order = xmalloc((size_t)want_size * sizeof *order);
    if (check_ok(slm_comm_all_gather(&mine, order, 1, SLM_DTYPE_I32, sub, NULL),
                 "all_gather on the split")) {
        /* Descending world ranks of this parity. */
        int r = g_size - 1;
        if (r % 2 != color)
            r--;
        for (int i = 0; i < want_size; i++, r -= 2)
            check(order[i] == r, "split all_gather[%d] = %d, want %d", i,
                  order[i], r);
    }
    free(order);
    double world_seconds = slm_comm_seconds(world);
    slm_comm_reset_stats(sub);
    all_reduce_case(sub, 1000, SLM_DTYPE_F32, SLM_REDOP_MAX, false, 600);
    test_send_recv(sub);
    check(slm_comm_seconds(sub) > 0.0, "split: no time accounted");
    check(slm_comm_seconds(world) == world_seconds,
          "split: the parent's time changed");

    /* A split of the split, with rank 0 of it opting out. */
    slm_comm_t *rest = NULL;
    const int sub_rank = slm_comm_rank(sub);
    if (check_ok(slm_comm_split(sub, sub_rank == 0 ? SLM_COMM_NO_COLOR : 7,
                                sub_rank, &rest),
                 "split with SLM_COMM_NO_COLOR")) {
        if (sub_rank == 0) {
            check(rest == NULL, "SLM_COMM_NO_COLOR gave a communicator");
        } else if (check(rest != NULL, "split of the rest gave NULL")) {
            check(slm_comm_size(rest) == want_size - 1 &&
                      slm_comm_rank(rest) == sub_rank - 1,
                  "rest: rank %d of %d, want %d of %d", slm_comm_rank(rest),
                  slm_comm_size(rest), sub_rank - 1, want_size - 1);
            /* The child outlives its parent. */
            slm_comm_destroy(&sub);
            all_reduce_case(rest, 7, SLM_DTYPE_I32, SLM_REDOP_SUM, true, 601);
        }
    }
    slm_comm_destroy(&rest);
    slm_comm_destroy(&sub);
    check(sub == NULL && rest == NULL, "destroy did not null the pointer");
}

/* --- invalid arguments: refused locally, before any MPI call --- */

static void test_validation(slm_comm_t *world)
{
    float a[16] = {0}, b[16 * 4] = {0};
    size_t counts[64] = {0}; /* size <= 64 in these tests */
    const int size = g_size, rank = g_rank;
    const long before = g_mpi_calls;

    check_refused(slm_comm_send(a, 1, SLM_DTYPE_F32, size, world, NULL),
                  SLM_ERR_INVALID, "peer = ", before, "send to peer = size");
    check_refused(slm_comm_send(a, 1, SLM_DTYPE_F32, -1, world, NULL),
                  SLM_ERR_INVALID, "peer = -1", before, "send to peer -1");
    check_refused(slm_comm_send(a, 1, SLM_DTYPE_F32, rank, world, NULL),
                  SLM_ERR_INVALID, "is this rank", before, "send to self");
    check_refused(slm_comm_recv(a, 1, SLM_DTYPE_F32, size + 3, world, NULL),
                  SLM_ERR_INVALID, "peer = ", before, "recv from peer > size");
    check_refused(
        slm_comm_recv(NULL, 4, SLM_DTYPE_F32, (rank + 1) % size, world, NULL),
        SLM_ERR_INVALID, size > 1 ? "buf is NULL" : "is this rank", before,
        "recv into NULL");
    check_refused(slm_comm_all_reduce(a, NULL, 7, SLM_DTYPE_F32, SLM_REDOP_SUM,
                                      world, NULL),
                  SLM_ERR_INVALID, "recv is NULL", before,
                  "all_reduce into NULL");
    check_refused(slm_comm_all_reduce(NULL, a, 7, SLM_DTYPE_F32, SLM_REDOP_SUM,
                                      world, NULL),
                  SLM_ERR_INVALID, "send is NULL", before,
                  "all_reduce from NULL");
    check_refused(
        slm_comm_all_reduce(a, b, 7, (slm_dtype)99, SLM_REDOP_SUM, world, NULL),
        SLM_ERR_INVALID, "dtype = 99", before, "unknown dtype");
    check_refused(
        slm_comm_all_reduce(a, b, 7, SLM_DTYPE_I32, (slm_redop)7, world, NULL),
        SLM_ERR_INVALID, "op = 7", before, "unknown op");
    check_refused(slm_comm_all_reduce(a, a + 1, 7, SLM_DTYPE_F32, SLM_REDOP_SUM,
                                      world, NULL),
                  SLM_ERR_INVALID, "overlap", before,
                  "all_reduce with overlapping buffers");
    check_refused(slm_comm_all_reduce(a, b, SIZE_MAX / 2, SLM_DTYPE_F32,
                                      SLM_REDOP_SUM, world, NULL),
                  SLM_ERR_INVALID, "overflows", before,
                  "all_reduce of SIZE_MAX / 2 floats");
    check_refused(
        slm_comm_all_reduce(a, b, 1, SLM_DTYPE_F32, SLM_REDOP_SUM, NULL, NULL),
        SLM_ERR_INVALID, "comm is NULL", before, "NULL comm");
    check_refused(slm_comm_broadcast(a, b, 4, SLM_DTYPE_F32, size, world, NULL),
                  SLM_ERR_INVALID, "root = ", before, "broadcast root = size");
    check_refused(slm_comm_broadcast(a, b, 4, SLM_DTYPE_F32, -2, world, NULL),
                  SLM_ERR_INVALID, "root = -2", before, "broadcast root -2");
    check_refused(
        slm_comm_broadcast(NULL, b, 4, SLM_DTYPE_F32, rank, world, NULL),
        SLM_ERR_INVALID, "send is NULL", before,
        "broadcast from NULL on the root");
    /* One element past the in-place slot. */
    check_refused(
        slm_comm_all_gather(b + rank * 4 + 1, b, 4, SLM_DTYPE_F32, world, NULL),
        SLM_ERR_INVALID, "overlap", before,
        "all_gather with send inside recv, not in place");
    check_refused(
        slm_comm_all_gather(a, b, SIZE_MAX / 2, SLM_DTYPE_F32, world, NULL),
        SLM_ERR_INVALID, "overflow", before, "all_gather of SIZE_MAX / 2");
    check_refused(
        slm_comm_all_gather_v(a, 3, b, NULL, SLM_DTYPE_F32, world, NULL),
        SLM_ERR_INVALID, "counts is NULL", before,
        "all_gather_v without counts");
    counts[rank] = 2;
    check_refused(
        slm_comm_all_gather_v(a, 3, b, counts, SLM_DTYPE_F32, world, NULL),
        SLM_ERR_INVALID, "counts[", before,
        "all_gather_v with send_count != counts[rank]");
    counts[0] = SIZE_MAX;
    counts[rank] = rank == 0 ? SIZE_MAX : 1;
    if (size > 1)
        check_refused(slm_comm_all_gather_v(a, counts[rank], b, counts,
                                            SLM_DTYPE_F32, world, NULL),
                      SLM_ERR_INVALID, "overflow", before,
                      "all_gather_v with counts summing past SIZE_MAX");
    slm_comm_t *out = (slm_comm_t *)&out; /* must be overwritten */
    check_refused(slm_comm_split(world, -5, 0, &out), SLM_ERR_INVALID,
                  "color = -5", before, "split with color -5");
    check(out == NULL, "failed split left *out set");
    check_refused(slm_comm_split(world, 0, 0, NULL), SLM_ERR_INVALID,
                  "out is NULL", before, "split without out");
    out = (slm_comm_t *)&out;
    check_refused(slm_comm_mpi_create(MPI_COMM_NULL, &out), SLM_ERR_INVALID,
                  "MPI_COMM_NULL", before, "create from MPI_COMM_NULL");
    check(out == NULL, "failed create left *out set");
    check_refused(slm_comm_mpi_create(MPI_COMM_WORLD, NULL), SLM_ERR_INVALID,
                  "out is NULL", before, "create without out");

    /* Releases accept NULL. */
    slm_comm_destroy(NULL);
    out = NULL;
    slm_comm_destroy(&out);
    slm_comm_abort(NULL, "a NULL communicator is not aborted");
    check(g_mpi_calls == before, "NULL destroy/abort made MPI calls");
}

/* --- time statistics --- */

static void test_stats(slm_comm_t *world)
{
    slm_comm_reset_stats(world);
    check(slm_comm_seconds(world) == 0.0, "seconds after reset: %g",
          slm_comm_seconds(world));
    all_reduce_case(world, 100003, SLM_DTYPE_F32, SLM_REDOP_SUM, false, 700);
    const double t1 = slm_comm_seconds(world);
    check(t1 > 0.0, "no time accounted for an all-reduce");
    all_gather_case(world, 1000, SLM_DTYPE_I32, false, 701);
    check(slm_comm_seconds(world) > t1, "all_gather added no time");
    /* Refused calls cost nothing measurable: they are not timed. */
    const double t2 = slm_comm_seconds(world);
    float x = 0;
    (void)slm_comm_all_reduce(&x, NULL, 1, SLM_DTYPE_F32, SLM_REDOP_SUM, world,
                              NULL);
    check(slm_comm_seconds(world) == t2, "a refused call was timed");
}

/* --- abort --- */

static int run_abort(slm_comm_t *world)
{
    if (g_size < 2) {
        fprintf(stderr, "--abort needs at least 2 ranks\n");
        return 2;
    }
    if (g_rank == g_size - 1)
        slm_comm_abort(world, "test_comm_mpi: simulated lost rank");
    /* Never completes: the last rank is not coming. */
    float x = 1;
    slm_status rc = slm_comm_all_reduce(&x, &x, 1, SLM_DTYPE_F32, SLM_REDOP_SUM,
                                        world, NULL);
    fprintf(stderr, "rank %d: the all-reduce returned %s (%s)\n", g_rank,
            slm_status_str(rc), slm_error_message());
    return 3;
}

int main(int argc, char **argv)
{
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "MPI_Init failed\n");
        return 1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    double t0 = MPI_Wtime();

    slm_comm_t *world = NULL;
    slm_status rc = slm_comm_mpi_create(MPI_COMM_WORLD, &world);
    if (rc != SLM_OK) {
        fprintf(stderr, "rank %d: slm_comm_mpi_create: %s\n", g_rank,
                slm_error_message());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (argc > 1 && strcmp(argv[1], "--abort") == 0)
        return run_abort(world);

    check(slm_comm_rank(world) == g_rank && slm_comm_size(world) == g_size,
          "world: rank %d of %d, want %d of %d", slm_comm_rank(world),
          slm_comm_size(world), g_rank, g_size);
    check(strcmp(slm_comm_backend_name(world), "mpi") == 0, "backend is \"%s\"",
          slm_comm_backend_name(world));

    test_validation(world);
    test_all_reduce(world);
    test_all_gather(world);
    test_all_gather_v(world);
    test_broadcast(world);
    test_send_recv(world);
    test_recv_mismatch(world);
    test_isolation(world);
    test_pieces(world);
    test_split(world);
    test_stats(world);

    slm_comm_destroy(&world);
    check(world == NULL, "destroy did not null the pointer");

    int local[2] = {g_passed, g_failed}, total[2] = {0, 0};
    PMPI_Allreduce(local, total, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (g_rank == 0) {
        printf("%d ranks, %.3f s\n", g_size, MPI_Wtime() - t0);
        printf("%d passed, %d failed\n", total[0], total[1]);
        fflush(stdout);
    }
    MPI_Finalize();
    return total[1] == 0 ? 0 : 1;
}
