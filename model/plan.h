/*
 * model/plan.h - the partition plan: how a model is split over TP x PP shards.
 *
 * Pipeline stages own contiguous runs of layers. Within a stage, tensor rank r
 * owns (Megatron style):
 *   - a contiguous run of attention (query) heads: n_heads / tp each, so
 *     n_heads % tp == 0 is required;
 *   - the kv heads those query heads read. When tp divides n_kv_heads they
 *     split evenly; when n_kv_heads divides tp, each kv head is replicated on
 *     tp / n_kv_heads consecutive ranks (as TensorRT-LLM does); otherwise the
 *     split is impossible;
 *   - a contiguous run of MLP hidden columns (w1/w3 rows, w2 columns) and of
 *     vocabulary rows (embedding and classifier); these may split unevenly,
 *     sizes differing by at most one, the larger parts first.
 * Shard s (0-based, shards only; the coordinator is not counted) is stage
 * s / tp, tensor rank s % tp.
 *
 * Every impossible split is refused by slm_plan_create with a message that
 * says why and which sizes would work, before anything is loaded.
 */
#ifndef SLM_MODEL_PLAN_H
#define SLM_MODEL_PLAN_H

#include <stdint.h>

#include "common/status.h"
#include "model/checkpoint.h"

/* Upper bounds on the split; generous, and they bound every array here. */
#define SLM_PLAN_MAX_TP 256
#define SLM_PLAN_MAX_PP 256

typedef struct {
    int32_t begin; /* first index owned */
    int32_t count; /* how many; >= 1 in every valid plan */
} slm_range;

/* What one shard owns. */
typedef struct {
    int32_t stage;       /* pipeline stage, 0..pp-1 */
    int32_t tp_rank;     /* rank within the stage's tensor group, 0..tp-1 */
    slm_range layers;    /* of n_layers */
    slm_range heads;     /* query heads, of n_heads */
    slm_range kv_heads;  /* of n_kv_heads (count 1 when replicated) */
    slm_range hidden;    /* MLP columns, of hidden_dim */
    slm_range vocab;     /* embedding / classifier rows, of vocab_size */
    int32_t kv_replicas; /* ranks sharing each kv head; 1 = no replication */
} slm_shard_slice;

typedef struct slm_plan slm_plan_t;

/* Plans cfg over tp x pp shards. cfg must be validated (derived fields set).
 * Fails with SLM_ERR_INVALID naming the constraint that is broken and the
 * sizes that would work. The caller owns *out; free with slm_plan_destroy. */
slm_status slm_plan_create(const slm_model_config *cfg, int32_t tp, int32_t pp,
                           slm_plan_t **out);

/* Accepts NULL; sets *p to NULL. */
void slm_plan_destroy(slm_plan_t **p);

int32_t slm_plan_tp(const slm_plan_t *p);
int32_t slm_plan_pp(const slm_plan_t *p);
int32_t slm_plan_shards(const slm_plan_t *p); /* tp * pp */

/* The slice of shard `shard` (0 <= shard < tp * pp; the caller's bug
 * otherwise). Borrowed; valid while p lives. */
const slm_shard_slice *slm_plan_slice(const slm_plan_t *p, int32_t shard);

/* Writes a human-readable summary of the plan (one line per shard) into buf
 * (always NUL-terminated, truncated if cap is too small). */
void slm_plan_describe(const slm_plan_t *p, char *buf, size_t cap);

#endif
