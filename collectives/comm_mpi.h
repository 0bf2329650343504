/*
 * collectives/comm_mpi.h - the MPI (CPU) backend's constructor. Kept apart
 * from comm.h so that only code which already speaks MPI includes mpi.h.
 */
#ifndef SLM_COLLECTIVES_COMM_MPI_H
#define SLM_COLLECTIVES_COMM_MPI_H

#include <mpi.h>

#include "collectives/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Collective over mpi_comm (an intracommunicator; every rank calls it):
 * wraps a private MPI_Comm_dup of it, so our traffic never matches the
 * caller's messages, with MPI_ERRORS_RETURN set so every MPI failure comes
 * back as an slm_status carrying MPI_Error_string's text instead of ending
 * the job. A failure of the duplication itself is reported through
 * mpi_comm's own error handler (by default fatal) before we can intervene.
 * MPI must be initialized by the caller (MPI_Init, or MPI_Init_thread with
 * at least MPI_THREAD_SERIALIZED if the communicator is used from more than
 * one thread) and stay so until slm_comm_destroy. On success the caller owns
 * *out and releases it with slm_comm_destroy; *out is NULL on failure. */
slm_status slm_comm_mpi_create(MPI_Comm mpi_comm, slm_comm_t **out);

/* Bootstrap only: rank `root` of mpi_comm sends the NUL-terminated string in
 * buf (at most cap - 1 bytes), every other rank receives it into buf, which
 * is always NUL-terminated on return. Collective; cap must be equal on all
 * ranks. Used to hand out the control endpoint. */
slm_status slm_comm_mpi_bcast_string(MPI_Comm mpi_comm, int root, char *buf,
                                     size_t cap);

#ifdef __cplusplus
}
#endif

#endif
