/* shard/shard.c - see shard.h. */
#include "shard/shard.h"

#include <stdlib.h>

#include "collectives/comm_nccl.h"
#include "model/checkpoint.h"
#include "shard/weights.h"

struct slm_shard {
    slm_model_config cfg;
    slm_plan_t *plan;
    slm_shard_weights_t *weights;
    slm_comm_t *nccl; /* all shards, on GPUs with tp * pp > 1 */
    slm_comm_t *tp;   /* this stage's tensor group */
    slm_comm_t *pp;   /* this tensor rank's pipeline */
    slm_forward_t *forward;
};

slm_status slm_shard_create(slm_comm_t *shards, const char *model_path,
                            int32_t tp, int32_t pp, slm_shard_t **out)
{
    return slm_shard_create_on(shards, MPI_COMM_NULL, model_path, tp, pp, NULL,
                               SLM_WFORMAT_AUTO, SLM_DEVICE_CPU, 0, out);
}

slm_status slm_shard_create_on(slm_comm_t *shards, MPI_Comm shards_mpi,
                               const char *model_path, int32_t tp, int32_t pp,
                               const slm_kv_config *kv,
                               slm_weight_format format, slm_device_kind device,
                               int gpu, slm_shard_t **out)
{
    slm_shard_t *s = calloc(1, sizeof *s);
    if (!s)
        return slm_fail(SLM_ERR_NOMEM, "shard: out of memory");
    slm_status rc = SLM_OK;
    slm_checkpoint_t *ck = NULL;
    /* Mapped, not resident: only this slice's pages are ever read. */
    SLM_CHECK_GOTO(slm_checkpoint_open(model_path, SLM_WEIGHTS_MAPPED, &ck), rc,
                   fail);
    s->cfg = *slm_checkpoint_config(ck);
    SLM_CHECK_GOTO(slm_plan_create(&s->cfg, tp, pp, &s->plan), rc, fail);
    if (slm_comm_size(shards) != slm_plan_shards(s->plan)) {
        rc = slm_fail(SLM_ERR_INVALID,
                      "shard: the plan has tp * pp = %d shards but %d ranks "
                      "run them",
                      slm_plan_shards(s->plan), slm_comm_size(shards));
        goto fail;
    }
    const slm_shard_slice *slice =
        slm_plan_slice(s->plan, slm_comm_rank(shards));
    /* The CPU's float products read their matrices packed; int8 and 16-bit
     * ones read only their copy, made straight from the file; the GPU
     * upload reads float rows. */
    const slm_slice_mode mode = device != SLM_DEVICE_CPU
                                    ? SLM_SLICE_COPY
                                    : slm_shard_cpu_mode(format, ck);
    SLM_CHECK_GOTO(slm_shard_weights_load(ck, slice, slice->stage == 0,
                                          slice->stage == pp - 1, mode,
                                          &s->weights),
                   rc, fail);
    slm_checkpoint_destroy(&ck);
    /* On GPUs the groups move device memory: NCCL, split from one NCCL
     * communicator of all shards (the splits inherit its device). */
    slm_comm_t *parent = shards;
    if (device == SLM_DEVICE_CUDA && slm_plan_shards(s->plan) > 1) {
        SLM_CHECK_GOTO(slm_comm_nccl_create(shards_mpi, gpu, NULL, &s->nccl),
                       rc, fail);
        parent = s->nccl;
    }
    SLM_CHECK_GOTO(slm_comm_split(parent, slice->stage, slice->tp_rank, &s->tp),
                   rc, fail);
    SLM_CHECK_GOTO(slm_comm_split(parent, slice->tp_rank, slice->stage, &s->pp),
                   rc, fail);
    const slm_shard_links links = {s->plan, s->tp, s->pp};
    SLM_CHECK_GOTO(
        slm_forward_create(device, gpu, s->weights, &links, kv, &s->forward),
        rc, fail);
    *out = s;
    return SLM_OK;
fail:
    slm_checkpoint_destroy(&ck);
    slm_shard_destroy(&s);
    return rc;
}

void slm_shard_destroy(slm_shard_t **sp)
{
    if (!sp || !*sp)
        return;
    slm_shard_t *s = *sp;
    slm_forward_destroy(&s->forward);
    slm_shard_weights_destroy(&s->weights);
    slm_comm_destroy(&s->tp);
    slm_comm_destroy(&s->pp);
    slm_comm_destroy(&s->nccl);
    slm_plan_destroy(&s->plan);
    free(s);
    *sp = NULL;
}

slm_status slm_shard_forward(slm_shard_t *s, int32_t token, int32_t pos,
                             const float **logits)
{
    return slm_forward_step(s->forward, token, pos, logits);
}

slm_status slm_shard_step(slm_shard_t *s, const slm_step *step,
                          const float **logits, size_t *rows)
{
    return slm_forward_batch(s->forward, step, logits, rows);
}

bool slm_shard_single_sequence(const slm_shard_t *s)
{
    return slm_forward_kind(s->forward) == SLM_DEVICE_CUDA;
}

const slm_kv_config *slm_shard_kv(const slm_shard_t *s)
{
    return slm_forward_kv(s->forward);
}

slm_transformer_t *slm_shard_transformer(slm_shard_t *s)
{
    return slm_forward_cpu(s->forward);
}

const slm_shard_slice *slm_shard_slice_info(const slm_shard_t *s)
{
    return slm_shard_weights_slice(s->weights);
}

const slm_model_config *slm_shard_config(const slm_shard_t *s)
{
    return &s->cfg;
}

slm_comm_t *slm_shard_tp_comm(slm_shard_t *s)
{
    return slm_plan_tp(s->plan) > 1 ? s->tp : NULL;
}

size_t slm_shard_weight_bytes(const slm_shard_t *s)
{
    return slm_shard_weights_copied_bytes(s->weights);
}

int32_t slm_shard_decider(const slm_shard_t *s)
{
    return (slm_plan_pp(s->plan) - 1) * slm_plan_tp(s->plan);
}
