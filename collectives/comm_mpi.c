/*
 * collectives/comm_mpi.c - the CPU backend of comm.h over MPI.
 *
 * Each communicator owns a private MPI communicator (a dup of the caller's,
 * or a split of one of ours) with MPI_ERRORS_RETURN, so a failing call comes
 * back here and becomes an slm_status with MPI's own error text rather than
 * ending the job; only slm_comm_abort ends it, deliberately. comm.c has
 * validated every argument and cut counts to at most INT_MAX (MPI counts
 * and displacements are int) before these functions run.
 */
#include "collectives/comm_mpi.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/comm_impl.h"

/* One tag for all point-to-point traffic: the communicator is private, and
 * MPI keeps messages between two ranks in order. */
enum { SLM_MPI_TAG = 0x534c };

typedef struct {
    struct slm_comm base; /* first: slm_comm_t * and comm_mpi * convert */
    MPI_Comm mpi;         /* ours; freed by destroy */
    int *counts;          /* (size) scratch for all_gather_v */
    int *displs;          /* (size) */
} comm_mpi;

static comm_mpi *as_mpi(slm_comm_t *comm)
{
    return (comm_mpi *)comm;
}

static MPI_Datatype mpi_dtype(slm_dtype dt)
{
    /* comm.c admits only these two. */
    return dt == SLM_DTYPE_F32 ? MPI_FLOAT : MPI_INT32_T;
}

static MPI_Op mpi_op(slm_redop op)
{
    return op == SLM_REDOP_SUM ? MPI_SUM : MPI_MAX;
}

/* An MPI error code as a status: SLM_ERR_NOMEM for MPI_ERR_NO_MEM, else
 * SLM_ERR_IO, with "<call> on rank R of N: <MPI's text> (MPI error class
 * C)" as the message. rank < 0 when not yet known. */
__attribute__((format(printf, 4, 5))) static slm_status
mpi_fail(int err, int rank, int size, const char *fmt, ...)
{
    char call[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call, sizeof call, fmt, ap);
    va_end(ap);
    char text[MPI_MAX_ERROR_STRING];
    int len = 0, cls = MPI_ERR_UNKNOWN;
    if (MPI_Error_string(err, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "unknown MPI error code %d", err);
    if (MPI_Error_class(err, &cls) != MPI_SUCCESS)
        cls = MPI_ERR_UNKNOWN;
    slm_status code = cls == MPI_ERR_NO_MEM ? SLM_ERR_NOMEM : SLM_ERR_IO;
    if (rank < 0)
        return slm_fail(code, "mpi: %s: %s (MPI error class %d)", call, text,
                        cls);
    return slm_fail(code, "mpi: %s on rank %d of %d: %s (MPI error class %d)",
                    call, rank, size, text, cls);
}

static slm_status ops_all_reduce(slm_comm_t *comm, const void *send, void *recv,
                                 size_t count, slm_dtype dt, slm_redop op,
                                 void *stream)
{
    comm_mpi *c = as_mpi(comm);
    int err = MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv,
                            (int)count, mpi_dtype(dt), mpi_op(op), c->mpi);
    if (err != MPI_SUCCESS)
        return mpi_fail(err, comm->rank, comm->size,
                        "MPI_Allreduce of %zu %s (%s%s)", count,
                        slm_dtype_name(dt), slm_redop_name(op),
                        send == recv ? ", in place" : "");
    return SLM_OK;
}

static slm_status ops_all_gather(slm_comm_t *comm, const void *send, void *recv,
                                 size_t send_count, slm_dtype dt, bool in_place,
                                 void *stream)
{
    comm_mpi *c = as_mpi(comm);
    const MPI_Datatype t = mpi_dtype(dt);
    const int n = (int)send_count;
    int err = in_place ? MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv,
                                       n, t, c->mpi)
                       : MPI_Allgather(send, n, t, recv, n, t, c->mpi);
    if (err != MPI_SUCCESS)
        return mpi_fail(err, comm->rank, comm->size,
                        "MPI_Allgather of %zu %s per rank%s", send_count,
                        slm_dtype_name(dt), in_place ? " (in place)" : "");
    return SLM_OK;
}

static slm_status ops_all_gather_v(slm_comm_t *comm, const void *send,
                                   void *recv, const size_t *counts,
                                   slm_dtype dt, bool in_place, void *stream)
{
    comm_mpi *c = as_mpi(comm);
    /* comm.c checked that the total is at most INT_MAX, so every count and
     * every prefix sum fits an int. */
    int total = 0;
    for (int r = 0; r < comm->size; r++) {
        c->counts[r] = (int)counts[r];
        c->displs[r] = total;
        total += c->counts[r];
    }
    const MPI_Datatype t = mpi_dtype(dt);
    int err = in_place ? MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL,
                                        recv, c->counts, c->displs, t, c->mpi)
                       : MPI_Allgatherv(send, c->counts[comm->rank], t, recv,
                                        c->counts, c->displs, t, c->mpi);
    if (err != MPI_SUCCESS)
        return mpi_fail(err, comm->rank, comm->size,
                        "MPI_Allgatherv of %d %s in all, %d from this "
                        "rank%s",
                        total, slm_dtype_name(dt), c->counts[comm->rank],
                        in_place ? " (in place)" : "");
    return SLM_OK;
}

static slm_status ops_broadcast(slm_comm_t *comm, const void *send, void *recv,
                                size_t count, slm_dtype dt, int root,
                                void *stream)
{
    comm_mpi *c = as_mpi(comm);
    /* MPI_Bcast has one buffer: the root sends from recv. comm.c checked
     * that the root's buffers are equal or disjoint. */
    if (comm->rank == root && send != recv)
        memcpy(recv, send, count * slm_dtype_size(dt));
    int err = MPI_Bcast(recv, (int)count, mpi_dtype(dt), root, c->mpi);
    if (err != MPI_SUCCESS)
        return mpi_fail(err, comm->rank, comm->size,
                        "MPI_Bcast of %zu %s from root %d", count,
                        slm_dtype_name(dt), root);
    return SLM_OK;
}

static slm_status ops_send(slm_comm_t *comm, const void *buf, size_t count,
                           slm_dtype dt, int peer, void *stream)
{
    comm_mpi *c = as_mpi(comm);
    int err =
        MPI_Send(buf, (int)count, mpi_dtype(dt), peer, SLM_MPI_TAG, c->mpi);
    if (err != MPI_SUCCESS)
        return mpi_fail(err, comm->rank, comm->size,
                        "MPI_Send of %zu %s to rank %d", count,
                        slm_dtype_name(dt), peer);
    return SLM_OK;
}

static slm_status ops_recv(slm_comm_t *comm, void *buf, size_t count,
                           slm_dtype dt, int peer, void *stream)
{
    comm_mpi *c = as_mpi(comm);
    MPI_Status st;
    int err = MPI_Recv(buf, (int)count, mpi_dtype(dt), peer, SLM_MPI_TAG,
                       c->mpi, &st);
    if (err != MPI_SUCCESS)
        return mpi_fail(err, comm->rank, comm->size,
                        "MPI_Recv of %zu %s from rank %d", count,
                        slm_dtype_name(dt), peer);
    int got = 0;
    err = MPI_Get_count(&st, mpi_dtype(dt), &got);
    if (err != MPI_SUCCESS)
        return mpi_fail(err, comm->rank, comm->size,
                        "MPI_Get_count after a receive from rank %d", peer);
    /* MPI accepts a shorter message than the receive asked for; a pipeline
     * stage would then read stale activations, so refuse it. */
    if (got < 0 || (size_t)got != count)
        return slm_fail(SLM_ERR_FORMAT,
                        "mpi: MPI_Recv on rank %d of %d: rank %d sent %d "
                        "elements of %s where %zu were expected",
                        comm->rank, comm->size, peer, got, slm_dtype_name(dt),
                        count);
    return SLM_OK;
}

static slm_status wrap(MPI_Comm mine, slm_comm_t **out);

static slm_status ops_split(slm_comm_t *comm, int color, int key,
                            slm_comm_t **out)
{
    comm_mpi *c = as_mpi(comm);
    MPI_Comm sub = MPI_COMM_NULL;
    int err = MPI_Comm_split(
        c->mpi, color == SLM_COMM_NO_COLOR ? MPI_UNDEFINED : color, key, &sub);
    if (err != MPI_SUCCESS)
        return mpi_fail(err, comm->rank, comm->size,
                        "MPI_Comm_split (color %d, key %d)", color, key);
    if (sub == MPI_COMM_NULL)
        return SLM_OK; /* SLM_COMM_NO_COLOR: *out stays NULL */
    return wrap(sub, out);
}

static void ops_destroy(slm_comm_t *comm)
{
    comm_mpi *c = as_mpi(comm);
    /* MPI_Comm_free only marks the communicator for release, without
     * waiting for other ranks. After MPI_Finalize it may not be called at
     * all; the communicator is gone with MPI then. */
    int finalized = 1;
    MPI_Finalized(&finalized);
    if (!finalized && c->mpi != MPI_COMM_NULL)
        MPI_Comm_free(&c->mpi);
    free(c->counts);
    free(c->displs);
    free(c);
}

static void ops_abort(slm_comm_t *comm, const char *why)
{
    comm_mpi *c = as_mpi(comm);
    fprintf(stderr, "shardlm: rank %d of %d: aborting the MPI job: %s\n",
            comm->rank, comm->size, why ? why : "(no reason given)");
    fflush(stderr);
    /* Open MPI ends every process of the job, whatever the communicator;
     * it does not wait for the other ranks. */
    MPI_Abort(c->mpi, 1);
    _Exit(1); /* MPI_Abort does not return; if it ever does, still end. */
}

static const slm_comm_ops mpi_ops = {
    .name = "mpi",
    .all_reduce = ops_all_reduce,
    .all_gather = ops_all_gather,
    .all_gather_v = ops_all_gather_v,
    .broadcast = ops_broadcast,
    .send = ops_send,
    .recv = ops_recv,
    .split = ops_split,
    .destroy = ops_destroy,
    .abort = ops_abort,
};

/* Takes ownership of `mine` (freed on failure too) and wraps it in *out. */
static slm_status wrap(MPI_Comm mine, slm_comm_t **out)
{
    slm_status rc = SLM_OK;
    comm_mpi *c = NULL;
    int rank = -1, size = 0;
    int err = MPI_Comm_set_errhandler(mine, MPI_ERRORS_RETURN);
    if (err != MPI_SUCCESS) {
        rc = mpi_fail(err, -1, 0, "MPI_Comm_set_errhandler");
        goto fail;
    }
    if ((err = MPI_Comm_rank(mine, &rank)) != MPI_SUCCESS ||
        (err = MPI_Comm_size(mine, &size)) != MPI_SUCCESS) {
        rc = mpi_fail(err, -1, 0, "MPI_Comm_rank/MPI_Comm_size");
        goto fail;
    }
    c = calloc(1, sizeof *c);
    if (c) {
        c->counts = calloc((size_t)size, sizeof *c->counts);
        c->displs = calloc((size_t)size, sizeof *c->displs);
    }
    if (!c || !c->counts || !c->displs) {
        rc = slm_fail(SLM_ERR_NOMEM,
                      "mpi: cannot allocate a communicator of %d ranks", size);
        goto fail;
    }
    c->mpi = mine;
    slm__comm_init(&c->base, &mpi_ops, rank, size, INT_MAX);
    *out = &c->base;
    return SLM_OK;
fail:
    if (c) {
        free(c->counts);
        free(c->displs);
        free(c);
    }
    MPI_Comm_free(&mine);
    return rc;
}

slm_status slm_comm_mpi_create(MPI_Comm mpi_comm, slm_comm_t **out)
{
    static const char what[] = "slm_comm_mpi_create";
    if (!out)
        return slm_fail(SLM_ERR_INVALID, "%s: out is NULL", what);
    *out = NULL;
    int flag = 0;
    MPI_Initialized(&flag);
    if (!flag)
        return slm_fail(SLM_ERR_INVALID,
                        "%s: MPI is not initialized (call MPI_Init first)",
                        what);
    MPI_Finalized(&flag);
    if (flag)
        return slm_fail(SLM_ERR_INVALID, "%s: MPI is already finalized", what);
    if (mpi_comm == MPI_COMM_NULL)
        return slm_fail(SLM_ERR_INVALID, "%s: mpi_comm is MPI_COMM_NULL", what);
    int err = MPI_Comm_test_inter(mpi_comm, &flag);
    if (err != MPI_SUCCESS)
        return mpi_fail(err, -1, 0, "%s: MPI_Comm_test_inter", what);
    if (flag)
        return slm_fail(SLM_ERR_INVALID,
                        "%s: mpi_comm is an intercommunicator; collectives "
                        "need an intracommunicator",
                        what);
    MPI_Comm dup = MPI_COMM_NULL;
    err = MPI_Comm_dup(mpi_comm, &dup);
    if (err != MPI_SUCCESS)
        return mpi_fail(err, -1, 0, "%s: MPI_Comm_dup", what);
    return wrap(dup, out);
}

slm_status slm_comm_mpi_bcast_string(MPI_Comm mpi_comm, int root, char *buf,
                                     size_t cap)
{
    if (!buf || cap == 0 || cap > INT_MAX)
        return slm_fail(SLM_ERR_INVALID, "bcast_string: capacity %zu", cap);
    int rank = 0;
    MPI_Comm_rank(mpi_comm, &rank);
    if (rank == root)
        buf[cap - 1] = '\0';
    int rc = MPI_Bcast(buf, (int)cap, MPI_CHAR, root, mpi_comm);
    buf[cap - 1] = '\0'; /* whatever arrived, it ends here */
    if (rc != MPI_SUCCESS)
        return slm_fail(SLM_ERR_IO, "bcast_string: MPI_Bcast failed (%d)", rc);
    return SLM_OK;
}
