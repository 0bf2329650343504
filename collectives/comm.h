/*
 * collectives/comm.h - the collectives interface: one opaque communicator,
 * NCCL-shaped operations, several backends behind it (comm_impl.h).
 *
 * A tensor-parallel layer is its local matmuls followed by one named
 * collective from this file; the tensor group and the pipeline group are
 * slm_comm_split()s of the world of shards. Backends: "mpi" (CPU, this
 * directory's comm_mpi.c, constructed with slm_comm_mpi_create() from
 * comm_mpi.h); "nccl" (GPU, collectives/nccl/comm_nccl.c, constructed with
 * slm_comm_nccl_create() from comm_nccl.h, which also states how its
 * operations wait and time out).
 *
 * Conventions shared by every operation:
 *  - Shape (send, recv, count, dtype[, op | root], comm, stream), as NCCL.
 *    Counts are in elements of `dt`, not bytes.
 *  - Collectives are called by every rank of `comm`, in the same order, with
 *    the same count, dtype, op and root. They block until this rank's part is
 *    done (on CPU) and leave recv complete.
 *  - `stream` is unused by the CPU backend: pass NULL. For the NCCL backend
 *    it is the cudaStream_t the operation is enqueued on; by default the
 *    call waits for it under a watchdog (see comm_nccl.h).
 *  - Arguments are validated locally before any communication: a NULL buffer
 *    with count > 0, a peer or root outside [0, size), an unknown dtype or op,
 *    or buffers that overlap other than in the in-place way an operation
 *    allows fail with SLM_ERR_INVALID and a message naming the argument and
 *    its value; a count the backend cannot move in one piece (MPI counts are
 *    int) fails with SLM_ERR_RANGE where it cannot be split (the gathers) and
 *    is split into pieces where it can (all-reduce, broadcast, send, recv).
 *    A rank that fails validation does not enter the collective, so the
 *    other ranks will wait for it: treat any failed collective as fatal for
 *    the group and call slm_comm_abort().
 *  - A count of 0 is a no-op on every rank (send/recv excepted: see there).
 *  - Failures of the transport are SLM_ERR_IO (SLM_ERR_NOMEM when it ran out
 *    of memory) with the backend's own error text in slm_error_message().
 *  - A communicator is used by one thread at a time.
 */
#ifndef SLM_COLLECTIVES_COMM_H
#define SLM_COLLECTIVES_COMM_H

#include <stddef.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct slm_comm slm_comm_t;

typedef enum { SLM_DTYPE_F32, SLM_DTYPE_I32 } slm_dtype;
typedef enum { SLM_REDOP_SUM, SLM_REDOP_MAX } slm_redop;

/* Bytes per element of dt; 0 for a value outside the enum. */
size_t slm_dtype_size(slm_dtype dt);
/* "f32", "i32", "sum", "max"; "?" for a value outside the enum. */
const char *slm_dtype_name(slm_dtype dt);
const char *slm_redop_name(slm_redop op);

/* recv[i] = op over ranks of send[i], for i < count, on every rank.
 * In place when send == recv; otherwise the buffers must not overlap. */
slm_status slm_comm_all_reduce(const void *send, void *recv, size_t count,
                               slm_dtype dt, slm_redop op, slm_comm_t *comm,
                               void *stream);

/* recv (size * send_count) = the ranks' send (send_count) buffers, in rank
 * order. In place (NCCL's rule) when send == recv + rank * send_count, i.e.
 * this rank's slot already holds its contribution; otherwise no overlap. */
slm_status slm_comm_all_gather(const void *send, void *recv, size_t send_count,
                               slm_dtype dt, slm_comm_t *comm, void *stream);

/* Uneven all-gather: rank r contributes counts[r] elements (any may be 0),
 * placed at recv + (counts[0] + ... + counts[r-1]); recv holds the sum of
 * counts. counts (size entries) is the caller's, identical on every rank,
 * and send_count must equal counts[rank]. In place when send == recv +
 * (counts[0] + ... + counts[rank-1]); otherwise no overlap. Used for the
 * classifier, whose vocabulary rows split unevenly across ranks. */
slm_status slm_comm_all_gather_v(const void *send, size_t send_count,
                                 void *recv, const size_t *counts, slm_dtype dt,
                                 slm_comm_t *comm, void *stream);

/* recv (count) on every rank = send (count) of rank `root`. send is read on
 * the root only (other ranks may pass NULL); in place when send == recv on
 * the root, otherwise the root's buffers must not overlap. */
slm_status slm_comm_broadcast(const void *send, void *recv, size_t count,
                              slm_dtype dt, int root, slm_comm_t *comm,
                              void *stream);

/* Point-to-point, for pipeline stages. send returns once buf may be reused;
 * it may wait for the matching recv (never rely on buffering: in a ring,
 * let even ranks send first and odd ranks receive first). Messages between
 * two ranks are received in the order they were sent. recv must be told the
 * exact count that was sent: a shorter message fails with SLM_ERR_FORMAT, a
 * longer one with SLM_ERR_IO. peer must differ from this rank (a blocking
 * send to oneself could never complete). Unlike the collectives, count 0
 * still exchanges an empty message, so a mismatch is seen rather than hung
 * on. */
slm_status slm_comm_send(const void *buf, size_t count, slm_dtype dt, int peer,
                         slm_comm_t *comm, void *stream);
slm_status slm_comm_recv(void *buf, size_t count, slm_dtype dt, int peer,
                         slm_comm_t *comm, void *stream);

/* This rank's index in [0, size), and the number of ranks. */
int slm_comm_rank(const slm_comm_t *comm);
int slm_comm_size(const slm_comm_t *comm);
/* "mpi" (or "nccl"); static, never NULL. */
const char *slm_comm_backend_name(const slm_comm_t *comm);

/* Pass as `color` to take no part in any of the new communicators. */
#define SLM_COMM_NO_COLOR (-1)

/* Collective over parent: ranks passing the same color (>= 0) form a new
 * communicator of the same backend, ordered by key (ties by parent rank).
 * A rank passing SLM_COMM_NO_COLOR gets *out = NULL and SLM_OK. On success
 * the caller owns *out (when not NULL) and releases it with
 * slm_comm_destroy; it is independent of the parent, which may be destroyed
 * first. *out is NULL on failure. */
slm_status slm_comm_split(slm_comm_t *parent, int color, int key,
                          slm_comm_t **out);

/* Releases the communicator without communicating (collective-free: a rank
 * may destroy its communicator while others still hold theirs). Call it on
 * every rank after the last operation, and for the MPI backend before
 * MPI_Finalize. Accepts NULL and *comm == NULL; sets *comm to NULL. */
void slm_comm_destroy(slm_comm_t **comm);

/* For when a peer is lost or a collective failed: never waits for other
 * ranks. `why` (may be NULL) is printed to stderr with this rank. The MPI
 * backend calls MPI_Abort, which ends the whole job - every process of
 * every communicator, not just this one - and does not return; that is the
 * intent, since a tensor-parallel group cannot continue without a member.
 * Backends that can abort without ending the process (NCCL's
 * ncclCommAbort) will return; the communicator may then only be destroyed.
 * Does nothing when comm is NULL. */
void slm_comm_abort(slm_comm_t *comm, const char *why);

/* Wall-clock seconds spent inside this communicator's operations
 * (all-reduce, all-gather[_v], broadcast, send, recv) since it was created
 * or last reset; for benchmarks. For the NCCL backend this will be the time
 * to enqueue, not to complete. */
double slm_comm_seconds(const slm_comm_t *comm);
void slm_comm_reset_stats(slm_comm_t *comm);

#ifdef __cplusplus
}
#endif

#endif
