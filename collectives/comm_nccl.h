/*
 * collectives/comm_nccl.h - the NCCL (GPU) backend's constructor and options.
 *
 * Every build has these functions: where shardlm was built without CUDA
 * (collectives/comm_nccl_stub.c) they fail with SLM_ERR_UNSUPPORTED, "built
 * without CUDA/NCCL"; with CUDA they are collectives/nccl/comm_nccl.c. The
 * header names no CUDA type (a stream is a void *), so any caller may
 * include it.
 *
 * How the operations of comm.h behave on an "nccl" communicator:
 *  - Buffers are memory the communicator's device can access (cudaMalloc,
 *    cudaMallocManaged). NCCL does not check this unless the environment
 *    sets NCCL_CHECK_POINTERS=1 (then SLM_ERR_INVALID with NCCL's text);
 *    otherwise a pageable host pointer faults the kernel and loses the
 *    CUDA context.
 *  - `stream` is the cudaStream_t (cast to void *) the operation is
 *    enqueued on; NULL means the communicator's own stream (a non-blocking
 *    stream it created; not CUDA's legacy default stream). Work the caller
 *    put on that stream before the call is ordered before the operation.
 *  - The calling thread's current device is set to the communicator's
 *    device by every call.
 *  - The watchdog (opts->wait, the default): every operation, once enqueued,
 *    is waited for, polling the stream's progress and NCCL's asynchronous
 *    error state, for at most opts->timeout_ms. Operations are therefore
 *    synchronous with respect to the host, as they are on the MPI backend:
 *    on return recv is complete (fine for decode, which needs the result on
 *    the next kernel anyway). Past the timeout, or on an asynchronous NCCL
 *    error, the communicator is aborted (ncclCommAbort) and the call fails
 *    with SLM_ERR_IO, e.g. "nccl all_reduce did not finish within 60000 ms
 *    (a peer is gone or stuck); communicator aborted". No rank waits
 *    forever; the other ranks' operations then time out in turn.
 *  - With opts->wait = false (for CUDA-graph capture, or to overlap the
 *    collective with other host work) an operation returns once it is
 *    enqueued; recv is ready only when the stream reaches it. Call
 *    slm_comm_nccl_sync to wait for it with the same watchdog. A stream
 *    that is being captured into a CUDA graph is never waited for, wait or
 *    not: the graph's launches are the caller's to synchronize.
 *  - slm_comm_seconds is the time to complete with wait, to enqueue without.
 *  - send/recv: NCCL does not compare the two sides' counts, so comm.h's
 *    SLM_ERR_FORMAT for a short message does not apply: a mismatched pair
 *    may hang until the watchdog aborts the communicator, or leave recv
 *    partly written. Match counts by construction (pipeline stages know
 *    their activation shapes).
 *  - slm_comm_abort prints the reason and calls ncclCommAbort; it returns,
 *    and the communicator may then only be destroyed. Any later operation
 *    fails with SLM_ERR_IO.
 *  - slm_comm_destroy flushes with ncclCommFinalize, which waits for the
 *    other ranks' pending work on this communicator, for at most
 *    opts->timeout_ms, and aborts past it: it never waits forever, but it
 *    is not instant either while peers still have operations in flight.
 */
#ifndef SLM_COLLECTIVES_COMM_NCCL_H
#define SLM_COLLECTIVES_COMM_NCCL_H

#include <stdbool.h>

#include <mpi.h>

#include "collectives/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits of slm_comm_nccl_options.timeout_ms: one day at most. */
#define SLM_COMM_NCCL_DEFAULT_TIMEOUT_MS 60000
#define SLM_COMM_NCCL_MAX_TIMEOUT_MS     (24 * 3600 * 1000)

typedef struct slm_comm_nccl_options {
    /* The longest wait, in milliseconds, in [1, SLM_COMM_NCCL_MAX_TIMEOUT_MS],
     * for one operation to complete (with `wait`), and for creation, split
     * and destroy; past it the communicator is aborted. It must cover the
     * slowest peer reaching the same operation, not just the transfer. */
    int timeout_ms;
    /* true: every operation waits for completion under the watchdog (the
     * default). false: operations return once enqueued (graph capture). */
    bool wait;
} slm_comm_nccl_options;

/* The defaults, also used when opts is NULL: usable as an initializer. */
#define SLM_COMM_NCCL_OPTIONS_DEFAULT                                          \
    {                                                                          \
        SLM_COMM_NCCL_DEFAULT_TIMEOUT_MS, true                                 \
    }

/* Collective over mpi (an intracommunicator; every rank calls it, each with
 * its own device): rank r of mpi becomes rank r of the NCCL communicator.
 * Rank 0 makes the NCCL unique id and broadcasts it over mpi; before that
 * the ranks agree (one MPI_Allreduce) that every one of them has set up its
 * device, so a rank without a usable GPU makes every rank fail rather than
 * leave the others waiting. The NCCL initialization itself is non-blocking
 * and bounded by opts->timeout_ms. MPI must be initialized by the caller
 * and mpi is used only during this call (MPI errors there go to mpi's own
 * error handler). opts may be NULL (SLM_COMM_NCCL_OPTIONS_DEFAULT) and is
 * copied. Fails with SLM_ERR_UNSUPPORTED "... no CUDA device ..." where
 * the process sees no GPU, and with SLM_ERR_UNSUPPORTED "built without
 * CUDA/NCCL" in builds without CUDA; SLM_ERR_INVALID for a device outside
 * [0, device count) or bad options. On success the caller owns *out and
 * releases it with slm_comm_destroy, before or after MPI_Finalize (MPI is
 * used only during this call); *out is NULL on failure. Split
 * communicators inherit device and options. */
slm_status slm_comm_nccl_create(MPI_Comm mpi, int device,
                                const slm_comm_nccl_options *opts,
                                slm_comm_t **out);

/* Waits, under the watchdog (aborting the communicator past
 * opts->timeout_ms), until everything enqueued on `stream` (NULL: the
 * communicator's own) is done. For opts->wait = false; harmless otherwise.
 * comm must be an "nccl" communicator (SLM_ERR_INVALID if not). */
slm_status slm_comm_nccl_sync(slm_comm_t *comm, void *stream);

#ifdef __cplusplus
}
#endif

#endif
