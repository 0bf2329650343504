/*
 * shard/device.h - where a shard's forward pass runs: the --device flag, the
 * choice of GPU for a rank, and one small interface over the two forward
 * passes (shard/transformer.c on the CPU, shard/cuda/forward.c on a GPU).
 *
 * Built in every build. Without CUDA (SLM_HAVE_CUDA undefined) there are no
 * devices, the CUDA transformer's functions exist and fail with
 * SLM_ERR_UNSUPPORTED ("built without CUDA"), and --device cuda is refused
 * before anything is loaded.
 */
#ifndef SLM_SHARD_DEVICE_H
#define SLM_SHARD_DEVICE_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "shard/transformer.h"
#include "shard/weights.h"

typedef enum {
    SLM_DEVICE_AUTO, /* cuda when a GPU is present and the build has CUDA */
    SLM_DEVICE_CPU,
    SLM_DEVICE_CUDA,
} slm_device_kind;

/* "auto", "cpu" or "cuda" into *out; anything else fails with
 * SLM_ERR_INVALID naming the value and the choices. */
slm_status slm_device_parse(const char *text, slm_device_kind *out);

/* "auto", "cpu", "cuda"; "?" outside the enum. Static. */
const char *slm_device_name(slm_device_kind kind);

/* Usable CUDA devices: slm_cuda_device_count() where the build has CUDA,
 * else 0. */
int slm_device_count(void);

/* Resolves a request to CPU or CUDA: auto is cuda when slm_device_count() >
 * 0, else cpu. cuda fails with SLM_ERR_UNSUPPORTED and a message that says
 * why (built without CUDA, or no GPU found) when it cannot be had. */
slm_status slm_device_resolve(slm_device_kind requested, slm_device_kind *out);

/* This process's index among the ranks of its node. With comm (e.g. the
 * shards' communicator) it is the rank in MPI_Comm_split_type(comm,
 * MPI_COMM_TYPE_SHARED), so only the ranks that use GPUs are counted;
 * with MPI_COMM_NULL it is OMPI_COMM_WORLD_LOCAL_RANK, else SLURM_LOCALID,
 * else 0. Collective over comm when comm is not MPI_COMM_NULL. */
int slm_device_local_rank(MPI_Comm comm);

/* The GPU for a rank: local_rank modulo slm_device_count(). Fails with
 * SLM_ERR_UNSUPPORTED when there is none. */
slm_status slm_device_pick(int local_rank, int *device);

/* How many ranks of comm share this node (1 for MPI_COMM_NULL): NCCL needs a
 * GPU of its own for each, so a node with more shards than GPUs runs them
 * on the CPU (auto) or refuses (cuda). */
int slm_device_local_count(MPI_Comm comm);

/* --- the CUDA forward pass (shard/cuda/forward.c) ---------------------- */

typedef struct slm_cuda_transformer slm_cuda_transformer_t;

typedef struct {
    size_t batch;   /* sequences decoded together per step; >= 1 */
    size_t max_seq; /* KV cache positions per sequence; 0 = model seq_len */
    /* Capture the decode step as a CUDA graph and replay it. Defaults to on
     * (slm_cuda_options_default), off when SHARDLM_CUDA_GRAPHS=0. Graphs
     * are used only where every collective can be captured: tp = pp = 1,
     * or NCCL communicators with enqueue_only_collectives. */
    bool graphs;
    /* The links' NCCL communicators were made with wait = false (they only
     * enqueue), so the step may be captured with its collectives. */
    bool enqueue_only_collectives;
} slm_cuda_options;

/* batch 1, max_seq 0, graphs unless SHARDLM_CUDA_GRAPHS=0, collectives
 * that wait. */
slm_cuda_options slm_cuda_options_default(void);

/* Converts this shard's weights to float16 (bfloat16 when
 * SHARDLM_CUDA_DTYPE=bf16) and copies them to GPU `device` once, and
 * allocates the run state there. Everything is copied: w may be destroyed
 * afterwards. The links are borrowed and must outlive the transformer; with
 * tp > 1 or pp > 1 their communicators are NCCL ones (enqueued on the
 * transformer's stream) or CPU ones (activations staged through host
 * memory, and no graphs). The caller owns *out; free with
 * slm_cuda_transformer_destroy. */
slm_status slm_cuda_transformer_create(const slm_shard_weights_t *w,
                                       const slm_shard_links *links, int device,
                                       const slm_cuda_options *opt,
                                       slm_cuda_transformer_t **out);

/* Accepts NULL; sets *t to NULL. */
void slm_cuda_transformer_destroy(slm_cuda_transformer_t **t);

/* One decode step of `batch` sequences: tokens(batch) and pos(batch) are
 * host arrays, sequence r feeding tokens[r] at pos[r] (its KV cache holds
 * 0..pos[r]-1). On the last stage *logits points at (batch, vocab_size)
 * host floats, borrowed until the next call; elsewhere NULL. Range errors
 * as slm_transformer_forward. */
slm_status slm_cuda_transformer_forward_batch(slm_cuda_transformer_t *t,
                                              const int32_t *tokens,
                                              const int32_t *pos,
                                              const float **logits);

/* slm_transformer_forward's contract, for a transformer of batch 1. */
slm_status slm_cuda_transformer_forward(slm_cuda_transformer_t *t,
                                        int32_t token, int32_t pos,
                                        const float **logits);

const slm_model_config *
slm_cuda_transformer_config(const slm_cuda_transformer_t *t);
/* KV positions per sequence (options' max_seq, capped by seq_len). */
size_t slm_cuda_transformer_max_seq(const slm_cuda_transformer_t *t);
/* Device bytes of this shard's weights, all read once per step. */
size_t slm_cuda_transformer_weight_bytes(const slm_cuda_transformer_t *t);

/* --- one interface over both ------------------------------------------ */

typedef struct slm_forward slm_forward_t;

/* A forward pass on `kind` (resolved: cpu or cuda) for the weights w; on
 * cuda, GPU `device`. The CPU one borrows w (it must outlive *out); the CUDA
 * one copies it. links as slm_transformer_create. The caller owns *out;
 * free with slm_forward_destroy. */
slm_status slm_forward_create(slm_device_kind kind, int device,
                              const slm_shard_weights_t *w,
                              const slm_shard_links *links,
                              const slm_kv_config *kv, slm_forward_t **out);

/* Accepts NULL; sets *f to NULL. */
void slm_forward_destroy(slm_forward_t **f);

/* slm_transformer_forward's contract, on whichever device. */
slm_status slm_forward_step(slm_forward_t *f, int32_t token, int32_t pos,
                            const float **logits);

/* One batched step (slm_transformer_step). The CUDA backend takes steps of
 * at most one sequence of one token (and zeroes a sequence's cache itself
 * when it starts at position 0). */
slm_status slm_forward_batch(slm_forward_t *f, const slm_step *step,
                             const float **logits, size_t *rows);

/* The KV configuration in force (defaults resolved). */
const slm_kv_config *slm_forward_kv(const slm_forward_t *f);

slm_device_kind slm_forward_kind(const slm_forward_t *f);
const slm_model_config *slm_forward_config(const slm_forward_t *f);
/* Positions the forward pass can hold (the model's seq_len, or less). */
int32_t slm_forward_seq_len(const slm_forward_t *f);
/* The CPU transformer, or NULL on cuda. Borrowed. */
slm_transformer_t *slm_forward_cpu(slm_forward_t *f);

#endif
