/*
 * collectives/nccl/comm_nccl.c - the GPU backend of comm.h over NCCL.
 * Compiled only where CUDA and NCCL are found (SLM_HAVE_CUDA); the contract
 * is in collectives/comm_nccl.h.
 *
 * Every NCCL communicator here is non-blocking (ncclConfig_t.blocking = 0):
 * a call may answer ncclInProgress and finish in the background, and we
 * poll ncclCommGetAsyncError for it with a deadline (nccl_settle). That is
 * what bounds initialization, split and destroy, which with a blocking
 * communicator would wait forever for a rank that never arrives.
 *
 * Each operation is: enter() (the communicator is alive, the device is set,
 * the stream chosen), one NCCL call (or a group of them), then finish():
 * settle the call, and with opts.wait run the watchdog - record an event
 * after the operation and poll it together with NCCL's asynchronous error
 * state until it completes, NCCL reports a failure, or the timeout passes.
 * The last two abort the communicator (ncclCommAbort), so that this rank
 * stops, and its peers, whose operations then cannot complete, time out
 * in turn rather than hang.
 *
 * comm.c has validated every argument before these functions run: dtype and
 * op are valid, counts are non-zero (send/recv aside), peers and roots in
 * range, buffers disjoint or exactly in place.
 */
#include "collectives/comm_nccl.h"

#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "collectives/comm_impl.h"
#include "common/clock.h"

typedef struct {
    struct slm_comm base; /* first: slm_comm_t * and comm_nccl * convert */
    ncclComm_t nccl;      /* ours; NULL once aborted */
    int device;           /* the CUDA device every call runs on */
    slm_comm_nccl_options opts;
    cudaStream_t own;        /* ours: the stream for stream == NULL */
    cudaEvent_t done;        /* ours: recorded after each operation, polled */
    ncclComm_t split_result; /* where NCCL's background split writes */
} comm_nccl;

/* What an operation was, for its error messages. */
typedef struct {
    const char *name; /* "all_reduce", ... */
    size_t count;     /* elements (all_gather: per rank; all_gather_v: all) */
    slm_dtype dt;
} op_desc;

static const slm_comm_ops nccl_ops;

static comm_nccl *as_nccl(slm_comm_t *comm)
{
    return (comm_nccl *)comm;
}

static ncclDataType_t nccl_dtype(slm_dtype dt)
{
    /* comm.c admits only these two. */
    return dt == SLM_DTYPE_F32 ? ncclFloat32 : ncclInt32;
}

static ncclRedOp_t nccl_op(slm_redop op)
{
    return op == SLM_REDOP_SUM ? ncclSum : ncclMax;
}

/* --- errors --- */

/* A CUDA error as a status: "nccl: <call> on rank R of N: <CUDA's text>
 * (<error name>)"; SLM_ERR_NOMEM when memory ran out, else SLM_ERR_IO. */
__attribute__((format(printf, 4, 5))) static slm_status
cuda_fail(cudaError_t err, int rank, int size, const char *fmt, ...)
{
    char call[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call, sizeof call, fmt, ap);
    va_end(ap);
    slm_status code =
        err == cudaErrorMemoryAllocation ? SLM_ERR_NOMEM : SLM_ERR_IO;
    return slm_fail(code, "nccl: %s on rank %d of %d: %s (%s)", call, rank,
                    size, cudaGetErrorString(err), cudaGetErrorName(err));
}

/* An NCCL result as a status: "nccl: <call> on rank R of N: <NCCL's text>
 * (<NCCL's last error message>)"; SLM_ERR_INVALID for the results that
 * mean a bad argument or call (a host pointer, say), else SLM_ERR_IO. */
__attribute__((format(printf, 5, 6))) static slm_status
nccl_fail(ncclResult_t res, ncclComm_t comm, int rank, int size,
          const char *fmt, ...)
{
    char call[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call, sizeof call, fmt, ap);
    va_end(ap);
    slm_status code = res == ncclInvalidArgument || res == ncclInvalidUsage
                          ? SLM_ERR_INVALID
                          : SLM_ERR_IO;
    const char *last = ncclGetLastError(comm);
    return slm_fail(code, "nccl: %s on rank %d of %d: %s%s%s%s", call, rank,
                    size, ncclGetErrorString(res), last && *last ? " (" : "",
                    last && *last ? last : "", last && *last ? ")" : "");
}

/* --- waiting with a deadline --- */

typedef struct {
    double end;     /* slm_now_seconds() past which we give up */
    unsigned polls; /* so far */
} deadline;

static deadline deadline_in(int timeout_ms)
{
    return (deadline){slm_now_seconds() + timeout_ms / 1000.0, 0};
}

static bool deadline_passed(const deadline *d)
{
    return slm_now_seconds() > d->end;
}

/* Between polls: yield for the first thousand (a decode-sized collective is
 * done in tens of microseconds, and sleeping would add to its latency),
 * then sleep 50 us, so that a stuck peer does not cost a core. */
static void poll_pause(deadline *d)
{
    if (++d->polls < 1000) {
        sched_yield();
        return;
    }
    struct timespec ts = {0, 50 * 1000};
    nanosleep(&ts, NULL);
}

/* A non-blocking communicator answers ncclInProgress while a call goes on
 * in the background; polls ncclCommGetAsyncError until it has settled, for
 * at most timeout_ms. Returns the outcome, ncclInProgress on timeout. */
static ncclResult_t nccl_settle(ncclComm_t comm, ncclResult_t res,
                                int timeout_ms)
{
    deadline d = deadline_in(timeout_ms);
    while (res == ncclInProgress) {
        if (deadline_passed(&d))
            return ncclInProgress;
        poll_pause(&d);
        ncclResult_t state = ncclSuccess;
        ncclResult_t q = ncclCommGetAsyncError(comm, &state);
        res = q != ncclSuccess ? q : state;
    }
    return res;
}

/* Aborts NCCL's communicator (local: never waits for the other ranks). */
static void abort_nccl(comm_nccl *c)
{
    if (c->nccl) {
        ncclCommAbort(c->nccl);
        c->nccl = NULL;
    }
}

/* Whether NCCL has put the communicator in an error state, which only an
 * abort leaves. */
static bool nccl_broken(comm_nccl *c, ncclResult_t *state)
{
    *state = ncclSuccess;
    ncclResult_t q = ncclCommGetAsyncError(c->nccl, state);
    if (q != ncclSuccess)
        *state = q;
    return *state != ncclSuccess && *state != ncclInProgress;
}

static slm_status timed_out(comm_nccl *c, const op_desc *op)
{
    abort_nccl(c);
    return slm_fail(SLM_ERR_IO,
                    "nccl %s did not finish within %d ms (a peer is gone or "
                    "stuck); communicator aborted [rank %d of %d, %zu %s]",
                    op->name, c->opts.timeout_ms, c->base.rank, c->base.size,
                    op->count, slm_dtype_name(op->dt));
}

/* NCCL reported `state` asynchronously: a peer or the network failed. */
static slm_status async_failed(comm_nccl *c, const op_desc *op,
                               ncclResult_t state)
{
    slm_status rc =
        nccl_fail(state, c->nccl, c->base.rank, c->base.size,
                  "%s of %zu %s (asynchronous error); communicator aborted",
                  op->name, op->count, slm_dtype_name(op->dt));
    abort_nccl(c);
    return rc == SLM_ERR_INVALID ? SLM_ERR_IO : rc;
}

/* The watchdog: waits for everything enqueued on s so far, polling an event
 * recorded now and NCCL's asynchronous state, for at most timeout_ms. */
static slm_status wait_stream(comm_nccl *c, cudaStream_t s, const op_desc *op)
{
    /* A stream under graph capture runs nothing until the graph is
     * launched: there is nothing to wait for yet (and querying an event
     * recorded into the capture would fail). */
    enum cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    cudaError_t e = cudaStreamIsCapturing(s, &capture);
    if (e != cudaSuccess)
        return cuda_fail(e, c->base.rank, c->base.size,
                         "cudaStreamIsCapturing after %s", op->name);
    if (capture != cudaStreamCaptureStatusNone)
        return SLM_OK;
    e = cudaEventRecord(c->done, s);
    if (e != cudaSuccess)
        return cuda_fail(e, c->base.rank, c->base.size,
                         "cudaEventRecord after %s", op->name);
    deadline d = deadline_in(c->opts.timeout_ms);
    for (;;) {
        e = cudaEventQuery(c->done);
        if (e == cudaSuccess)
            return SLM_OK;
        if (e != cudaErrorNotReady) {
            /* A failed kernel poisons the context: this rank cannot go on,
             * so let its peers stop too. */
            slm_status rc =
                cuda_fail(e, c->base.rank, c->base.size,
                          "waiting for %s of %zu %s; "
                          "communicator aborted",
                          op->name, op->count, slm_dtype_name(op->dt));
            abort_nccl(c);
            return rc;
        }
        ncclResult_t state;
        if (nccl_broken(c, &state))
            return async_failed(c, op, state);
        if (deadline_passed(&d))
            return timed_out(c, op);
        poll_pause(&d);
    }
}

/* --- the operations --- */

/* Before each operation: the communicator is alive, the device current,
 * and *s the stream to use. */
static slm_status enter(comm_nccl *c, const char *name, void *stream,
                        cudaStream_t *s)
{
    if (!c->nccl)
        return slm_fail(SLM_ERR_IO,
                        "nccl %s on rank %d of %d: the communicator was "
                        "aborted; it may only be destroyed",
                        name, c->base.rank, c->base.size);
    cudaError_t e = cudaSetDevice(c->device);
    if (e != cudaSuccess)
        return cuda_fail(e, c->base.rank, c->base.size, "cudaSetDevice(%d)",
                         c->device);
    *s = stream ? (cudaStream_t)stream : c->own;
    return SLM_OK;
}

/* After each operation's NCCL call(s), which returned res: settles it and,
 * with opts.wait, waits for it under the watchdog. */
static slm_status finish(comm_nccl *c, ncclResult_t res, cudaStream_t s,
                         const op_desc *op)
{
    res = nccl_settle(c->nccl, res, c->opts.timeout_ms);
    if (res == ncclInProgress)
        return timed_out(c, op);
    if (res != ncclSuccess) {
        ncclResult_t state;
        if (nccl_broken(c, &state))
            return async_failed(c, op, state);
        /* Refused at enqueue (a host pointer, say): the communicator is
         * still sound, though the peers may now wait for this rank. */
        return nccl_fail(res, c->nccl, c->base.rank, c->base.size,
                         "%s of %zu %s", op->name, op->count,
                         slm_dtype_name(op->dt));
    }
    return c->opts.wait ? wait_stream(c, s, op) : SLM_OK;
}

static slm_status ops_all_reduce(slm_comm_t *comm, const void *send, void *recv,
                                 size_t count, slm_dtype dt, slm_redop op,
                                 void *stream)
{
    comm_nccl *c = as_nccl(comm);
    const op_desc d = {"all_reduce", count, dt};
    cudaStream_t s = NULL;
    SLM_CHECK(enter(c, d.name, stream, &s));
    /* In place when send == recv, as NCCL allows. */
    ncclResult_t r = ncclAllReduce(send, recv, count, nccl_dtype(dt),
                                   nccl_op(op), c->nccl, s);
    return finish(c, r, s, &d);
}

static slm_status ops_all_gather(slm_comm_t *comm, const void *send, void *recv,
                                 size_t send_count, slm_dtype dt, bool in_place,
                                 void *stream)
{
    comm_nccl *c = as_nccl(comm);
    const op_desc d = {"all_gather", send_count, dt};
    cudaStream_t s = NULL;
    SLM_CHECK(enter(c, d.name, stream, &s));
    /* comm.h's in-place rule is NCCL's: send == recv + rank * send_count. */
    ncclResult_t r =
        ncclAllGather(send, recv, send_count, nccl_dtype(dt), c->nccl, s);
    return finish(c, r, s, &d);
}

/* NCCL has no all-gather-v: one broadcast per contributing rank, from its
 * slot of recv (or its send buffer) into the same slot everywhere, fused
 * into one group so they run together. Every rank issues the same
 * broadcasts in the same order, since counts is identical on all. */
static slm_status ops_all_gather_v(slm_comm_t *comm, const void *send,
                                   void *recv, const size_t *counts,
                                   slm_dtype dt, bool in_place, void *stream)
{
    comm_nccl *c = as_nccl(comm);
    size_t total = 0;
    for (int r = 0; r < comm->size; r++)
        total += counts[r]; /* comm.c checked that this cannot overflow */
    const op_desc d = {"all_gather_v", total, dt};
    cudaStream_t s = NULL;
    SLM_CHECK(enter(c, d.name, stream, &s));
    const size_t esz = slm_dtype_size(dt);
    char *out = recv;
    size_t displ = 0; /* elements before rank root's slot */
    ncclResult_t res = ncclGroupStart();
    for (int root = 0; root < comm->size && res == ncclSuccess; root++) {
        char *slot = out + displ * esz;
        const void *src = root == comm->rank && !in_place ? send : slot;
        if (counts[root] > 0)
            res = ncclBroadcast(src, slot, counts[root], nccl_dtype(dt), root,
                                c->nccl, s);
        displ += counts[root];
    }
    /* A group once started is always ended, even after a failed call. */
    ncclResult_t end = ncclGroupEnd();
    return finish(c, res != ncclSuccess ? res : end, s, &d);
}

static slm_status ops_broadcast(slm_comm_t *comm, const void *send, void *recv,
                                size_t count, slm_dtype dt, int root,
                                void *stream)
{
    comm_nccl *c = as_nccl(comm);
    const op_desc d = {"broadcast", count, dt};
    cudaStream_t s = NULL;
    SLM_CHECK(enter(c, d.name, stream, &s));
    /* send is read on the root only; elsewhere NCCL ignores it. */
    ncclResult_t r = ncclBroadcast(send ? send : recv, recv, count,
                                   nccl_dtype(dt), root, c->nccl, s);
    return finish(c, r, s, &d);
}

static slm_status ops_send(slm_comm_t *comm, const void *buf, size_t count,
                           slm_dtype dt, int peer, void *stream)
{
    comm_nccl *c = as_nccl(comm);
    const op_desc d = {"send", count, dt};
    cudaStream_t s = NULL;
    SLM_CHECK(enter(c, d.name, stream, &s));
    ncclResult_t r = ncclSend(buf, count, nccl_dtype(dt), peer, c->nccl, s);
    return finish(c, r, s, &d);
}

static slm_status ops_recv(slm_comm_t *comm, void *buf, size_t count,
                           slm_dtype dt, int peer, void *stream)
{
    comm_nccl *c = as_nccl(comm);
    const op_desc d = {"recv", count, dt};
    cudaStream_t s = NULL;
    SLM_CHECK(enter(c, d.name, stream, &s));
    ncclResult_t r = ncclRecv(buf, count, nccl_dtype(dt), peer, c->nccl, s);
    return finish(c, r, s, &d);
}

/* --- the communicator --- */

static ncclConfig_t nonblocking_config(void)
{
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    return cfg;
}

/* Takes ownership of `nccl` (a ready communicator; aborted on failure) and
 * wraps it in *out with its own stream and event. */
static slm_status wrap(ncclComm_t nccl, int device,
                       const slm_comm_nccl_options *opts, int rank, int size,
                       slm_comm_t **out)
{
    slm_status rc = SLM_OK;
    cudaError_t e = cudaSuccess;
    comm_nccl *c = calloc(1, sizeof *c);
    if (!c) {
        rc = slm_fail(SLM_ERR_NOMEM,
                      "nccl: cannot allocate a communicator on rank %d of %d",
                      rank, size);
        goto fail;
    }
    if ((e = cudaStreamCreateWithFlags(&c->own, cudaStreamNonBlocking)) !=
        cudaSuccess) {
        rc = cuda_fail(e, rank, size, "cudaStreamCreateWithFlags");
        goto fail;
    }
    if ((e = cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming)) !=
        cudaSuccess) {
        rc = cuda_fail(e, rank, size, "cudaEventCreateWithFlags");
        goto fail;
    }
    c->nccl = nccl;
    c->device = device;
    c->opts = *opts;
    /* NCCL counts are size_t: comm.c never needs to split. */
    slm__comm_init(&c->base, &nccl_ops, rank, size, SIZE_MAX);
    *out = &c->base;
    return SLM_OK;
fail:
    if (c) {
        if (c->own)
            cudaStreamDestroy(c->own);
        free(c);
    }
    /* Abort, not destroy: destroying may wait for the other ranks. */
    ncclCommAbort(nccl);
    return rc;
}

static slm_status ops_split(slm_comm_t *comm, int color, int key,
                            slm_comm_t **out)
{
    comm_nccl *c = as_nccl(comm);
    cudaStream_t s = NULL;
    SLM_CHECK(enter(c, "split", NULL, &s));
    ncclConfig_t cfg = nonblocking_config();
    /* Non-blocking, the new communicator is built by a background job of
     * the parent, which writes it to split_result when done: hence a slot
     * that outlives this call, should the wait time out. */
    c->split_result = NULL;
    ncclResult_t res = ncclCommSplit(
        c->nccl, color == SLM_COMM_NO_COLOR ? NCCL_SPLIT_NOCOLOR : color, key,
        &c->split_result, &cfg);
    res = nccl_settle(c->nccl, res, c->opts.timeout_ms);
    if (res == ncclInProgress) {
        /* Stuck in the parent's bootstrap: the parent is unusable too, and
         * aborting it also stops the background job. */
        abort_nccl(c);
        return slm_fail(SLM_ERR_IO,
                        "nccl split (color %d, key %d) did not finish within "
                        "%d ms (a peer is gone or stuck); communicator "
                        "aborted [rank %d of %d]",
                        color, key, c->opts.timeout_ms, comm->rank, comm->size);
    }
    ncclComm_t sub = c->split_result;
    c->split_result = NULL;
    if (res != ncclSuccess) {
        slm_status rc =
            nccl_fail(res, c->nccl, comm->rank, comm->size,
                      "ncclCommSplit (color %d, key %d)", color, key);
        if (sub)
            ncclCommAbort(sub);
        return rc;
    }
    if (!sub)
        return SLM_OK; /* SLM_COMM_NO_COLOR: *out stays NULL */
    /* The child's own state, in case it lags its parent's. */
    int rank = -1, size = 0;
    if ((res = nccl_settle(sub, ncclInProgress, c->opts.timeout_ms)) !=
            ncclSuccess ||
        (res = ncclCommUserRank(sub, &rank)) != ncclSuccess ||
        (res = ncclCommCount(sub, &size)) != ncclSuccess) {
        slm_status rc = nccl_fail(res, sub, comm->rank, comm->size,
                                  "initializing the communicator of a "
                                  "split (color %d, key %d)",
                                  color, key);
        ncclCommAbort(sub);
        return rc;
    }
    return wrap(sub, c->device, &c->opts, rank, size, out);
}

static void ops_destroy(slm_comm_t *comm)
{
    comm_nccl *c = as_nccl(comm);
    cudaSetDevice(c->device);
    if (c->nccl) {
        /* Finalize flushes what is in flight and may wait for the peers:
         * bounded like everything else, with an abort past it. */
        ncclResult_t res =
            nccl_settle(c->nccl, ncclCommFinalize(c->nccl), c->opts.timeout_ms);
        if (res == ncclSuccess) {
            ncclCommDestroy(c->nccl);
            c->nccl = NULL;
        } else {
            fprintf(stderr,
                    "shardlm: rank %d of %d: nccl communicator did not "
                    "finalize within %d ms (%s); aborted\n",
                    comm->rank, comm->size, c->opts.timeout_ms,
                    ncclGetErrorString(res));
            abort_nccl(c);
        }
    }
    cudaEventDestroy(c->done);
    cudaStreamDestroy(c->own);
    free(c);
}

static void ops_abort(slm_comm_t *comm, const char *why)
{
    comm_nccl *c = as_nccl(comm);
    fprintf(stderr,
            "shardlm: rank %d of %d: aborting the NCCL communicator: %s\n",
            comm->rank, comm->size, why ? why : "(no reason given)");
    fflush(stderr);
    abort_nccl(c);
}

static const slm_comm_ops nccl_ops = {
    .name = "nccl",
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

/* --- construction --- */

/* This rank's device, before any communication: it exists and is current.
 * Sets the message on failure. */
static slm_status setup_device(int device, int rank, int size)
{
    static const char what[] = "slm_comm_nccl_create";
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        (void)cudaGetLastError(); /* not sticky: clear it */
        return slm_fail(SLM_ERR_UNSUPPORTED,
                        "%s on rank %d of %d: no CUDA device (%s)", what, rank,
                        size,
                        e != cudaSuccess ? cudaGetErrorString(e)
                                         : "cudaGetDeviceCount found none");
    }
    if (device < 0 || device >= n)
        return slm_fail(SLM_ERR_INVALID,
                        "%s on rank %d of %d: device = %d is out of range "
                        "[0, %d)",
                        what, rank, size, device, n);
    e = cudaSetDevice(device);
    if (e != cudaSuccess)
        return cuda_fail(e, rank, size, "%s: cudaSetDevice(%d)", what, device);
    return SLM_OK;
}

/* What rank 0 broadcasts: the id, and whether making it worked. */
typedef struct {
    ncclUniqueId id;
    int ok;
} bootstrap_msg;

slm_status slm_comm_nccl_create(MPI_Comm mpi, int device,
                                const slm_comm_nccl_options *opts,
                                slm_comm_t **out)
{
    static const char what[] = "slm_comm_nccl_create";
    if (!out)
        return slm_fail(SLM_ERR_INVALID, "%s: out is NULL", what);
    *out = NULL;
    slm_comm_nccl_options o = SLM_COMM_NCCL_OPTIONS_DEFAULT;
    if (opts)
        o = *opts;
    if (o.timeout_ms < 1 || o.timeout_ms > SLM_COMM_NCCL_MAX_TIMEOUT_MS)
        return slm_fail(SLM_ERR_INVALID,
                        "%s: opts->timeout_ms = %d is out of range [1, %d]",
                        what, o.timeout_ms, SLM_COMM_NCCL_MAX_TIMEOUT_MS);
    int flag = 0;
    MPI_Initialized(&flag);
    if (!flag)
        return slm_fail(SLM_ERR_INVALID,
                        "%s: MPI is not initialized (call MPI_Init first)",
                        what);
    MPI_Finalized(&flag);
    if (flag)
        return slm_fail(SLM_ERR_INVALID, "%s: MPI is already finalized", what);
    if (mpi == MPI_COMM_NULL)
        return slm_fail(SLM_ERR_INVALID, "%s: mpi is MPI_COMM_NULL", what);
    MPI_Comm_test_inter(mpi, &flag);
    if (flag)
        return slm_fail(SLM_ERR_INVALID,
                        "%s: mpi is an intercommunicator; collectives need "
                        "an intracommunicator",
                        what);
    int rank = 0, size = 0;
    MPI_Comm_rank(mpi, &rank);
    MPI_Comm_size(mpi, &size);

    /* 1. This rank's device. A failure is held back until every rank has
     * heard of it, so that no rank waits for one that gave up. */
    slm_status local = setup_device(device, rank, size);
    int ok = local == SLM_OK, all_ok = 0;
    if (MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, mpi) != MPI_SUCCESS)
        return slm_fail(SLM_ERR_IO, "%s on rank %d of %d: MPI_Allreduce failed",
                        what, rank, size);
    if (local != SLM_OK)
        return local;
    if (!all_ok)
        return slm_fail(SLM_ERR_UNAVAILABLE,
                        "%s on rank %d of %d: another rank could not set up "
                        "its CUDA device (see its error)",
                        what, rank, size);

    /* 2. Rank 0's unique id, to everyone. */
    bootstrap_msg boot;
    memset(&boot, 0, sizeof boot);
    ncclResult_t res = ncclSuccess;
    if (rank == 0) {
        res = ncclGetUniqueId(&boot.id);
        boot.ok = res == ncclSuccess;
    }
    if (MPI_Bcast(&boot, (int)sizeof boot, MPI_BYTE, 0, mpi) != MPI_SUCCESS)
        return slm_fail(SLM_ERR_IO, "%s on rank %d of %d: MPI_Bcast failed",
                        what, rank, size);
    if (rank == 0 && res != ncclSuccess)
        return nccl_fail(res, NULL, rank, size, "%s: ncclGetUniqueId", what);
    if (!boot.ok)
        return slm_fail(SLM_ERR_UNAVAILABLE,
                        "%s on rank %d of %d: rank 0 could not make the NCCL "
                        "unique id (see its error)",
                        what, rank, size);

    /* 3. NCCL's own initialization, non-blocking, with a deadline. */
    ncclConfig_t cfg = nonblocking_config();
    ncclComm_t nccl = NULL;
    res = ncclCommInitRankConfig(&nccl, size, boot.id, rank, &cfg);
    if (res == ncclInProgress && nccl)
        res = nccl_settle(nccl, res, o.timeout_ms);
    if (res != ncclSuccess) {
        slm_status rc =
            res == ncclInProgress
                ? slm_fail(SLM_ERR_IO,
                           "%s on rank %d of %d: NCCL initialization did not "
                           "finish within %d ms (a rank is missing or stuck); "
                           "aborted",
                           what, rank, size, o.timeout_ms)
                : nccl_fail(res, nccl, rank, size, "%s: ncclCommInitRankConfig",
                            what);
        if (nccl)
            ncclCommAbort(nccl);
        return rc;
    }
    return wrap(nccl, device, &o, rank, size, out);
}

slm_status slm_comm_nccl_sync(slm_comm_t *comm, void *stream)
{
    if (!comm || comm->ops != &nccl_ops)
        return slm_fail(SLM_ERR_INVALID,
                        "slm_comm_nccl_sync: not an nccl communicator (%s)",
                        comm ? comm->ops->name : "NULL");
    comm_nccl *c = as_nccl(comm);
    const op_desc d = {"sync", 0, SLM_DTYPE_F32};
    cudaStream_t s = NULL;
    SLM_CHECK(enter(c, d.name, stream, &s));
    return wait_stream(c, s, &d);
}
