/*
 * collectives/comm_nccl_stub.c - comm_nccl.h in builds without CUDA: the
 * functions exist, so callers need no #ifdef, and say why they cannot work.
 * With CUDA (SLM_HAVE_CUDA) this file is empty and collectives/nccl/
 * comm_nccl.c defines them.
 */
#include "collectives/comm_nccl.h"

#ifndef SLM_HAVE_CUDA

slm_status slm_comm_nccl_create(MPI_Comm mpi, int device,
                                const slm_comm_nccl_options *opts,
                                slm_comm_t **out)
{
    if (!out)
        return slm_fail(SLM_ERR_INVALID, "slm_comm_nccl_create: out is NULL");
    *out = NULL;
    return slm_fail(SLM_ERR_UNSUPPORTED,
                    "slm_comm_nccl_create: shardlm was built without "
                    "CUDA/NCCL (the nccl backend needs a build with "
                    "SLM_CUDA=AUTO or ON where nvcc and NCCL are found)");
}

slm_status slm_comm_nccl_sync(slm_comm_t *comm, void *stream)
{
    /* No communicator of ours can exist in this build. */
    return slm_fail(SLM_ERR_INVALID,
                    "slm_comm_nccl_sync: not an nccl communicator (shardlm "
                    "was built without CUDA/NCCL)");
}

#else

/* ISO C wants a translation unit to declare something. */
typedef int slm__comm_nccl_stub_unused;

#endif
