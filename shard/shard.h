/*
 * shard/shard.h - one rank's shard of a cluster: plans the split from the
 * checkpoint header, loads only this rank's slice, builds the tensor and
 * pipeline communicators, and owns the transformer that runs the slice.
 */
#ifndef SLM_SHARD_SHARD_H
#define SLM_SHARD_SHARD_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "collectives/comm.h"
#include "common/status.h"
#include "model/plan.h"
#include "shard/device.h"
#include "shard/transformer.h"

typedef struct slm_shard slm_shard_t;

/* Collective over `shards` (the communicator of all tp * pp shards; this
 * rank's index in it is its shard index): validates the checkpoint header,
 * plans the split (an impossible split fails here, on every rank, before any
 * weight is read), copies this shard's slice into private memory, and splits
 * `shards` into the tensor and pipeline groups. `shards` is borrowed and must
 * outlive the shard. The caller owns *out; free with slm_shard_destroy. */
slm_status slm_shard_create(slm_comm_t *shards, const char *model_path,
                            int32_t tp, int32_t pp, slm_shard_t **out);

/* As slm_shard_create, with the KV configuration kv (NULL: one sequence of
 * one token per step; every shard passes the same), its matrices held as
 * `format` says (CPU only: the GPU pass keeps half precision), on
 * `device` (resolved: cpu or cuda; every shard passes the same kind). On cuda
 * the slice runs on GPU `gpu` (shard/cuda/forward.c); with tp * pp > 1 the
 * tensor and pipeline groups are then NCCL communicators built over shards_mpi
 * (the MPI communicator under `shards`), which must be valid on cuda and may be
 * MPI_COMM_NULL on cpu. */
slm_status slm_shard_create_on(slm_comm_t *shards, MPI_Comm shards_mpi,
                               const char *model_path, int32_t tp, int32_t pp,
                               const slm_kv_config *kv,
                               slm_weight_format format, slm_device_kind device,
                               int gpu, slm_shard_t **out);

/* Accepts NULL; sets *s to NULL. Collective-free. */
void slm_shard_destroy(slm_shard_t **s);

/* One step of the slice, on whichever device: slm_transformer_forward's
 * contract. */
slm_status slm_shard_forward(slm_shard_t *s, int32_t token, int32_t pos,
                             const float **logits);

/* One batched step of the slice (slm_forward_batch). */
slm_status slm_shard_step(slm_shard_t *s, const slm_step *step,
                          const float **logits, size_t *rows);

/* The KV configuration in force. */
const slm_kv_config *slm_shard_kv(const slm_shard_t *s);

/* Whether the shard takes only steps of one sequence of one token (its
 * backend keeps its own cache: the GPU pass). */
bool slm_shard_single_sequence(const slm_shard_t *s);

/* Borrowed; valid while s lives. NULL when the shard runs on a GPU. */
slm_transformer_t *slm_shard_transformer(slm_shard_t *s);
const slm_shard_slice *slm_shard_slice_info(const slm_shard_t *s);
const slm_model_config *slm_shard_config(const slm_shard_t *s);
/* The tensor group (NULL when tp == 1). */
slm_comm_t *slm_shard_tp_comm(slm_shard_t *s);

/* Bytes of weights this shard holds in its own memory. */
size_t slm_shard_weight_bytes(const slm_shard_t *s);

/* The shard index whose forward returns the full logits and that therefore
 * picks the next token: the last stage's tensor rank 0. */
int32_t slm_shard_decider(const slm_shard_t *s);

/* The shard's control loop (shard/control.c): receives the control endpoint
 * from rank 0 of `world` (MPI bootstrap), connects a DEALER, starts a thread
 * that sends a Heartbeat every heartbeat_ms from its own socket, reports its
 * slice (Hello), and runs Steps until Shutdown. Every message is validated
 * (proto/wire.h) before use; a step that fails is reported to the
 * coordinator, and a failed collective aborts the job so no rank is left
 * waiting. timeout_ms bounds sends to the coordinator; between steps the
 * shard waits for it without a deadline, since an idle server is normal and
 * the coordinator holds the deadline of every step it sends. */
slm_status slm_shard_serve(slm_shard_t *s, MPI_Comm world, int32_t shard_index,
                           int timeout_ms, int heartbeat_ms);

#endif
