/* shard/device.c - see device.h. */
#include "shard/device.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef SLM_HAVE_CUDA
#include "kernels/cuda/cuda_kernels.h"
#endif

slm_status slm_device_parse(const char *text, slm_device_kind *out)
{
    static const slm_device_kind kinds[] = {SLM_DEVICE_AUTO, SLM_DEVICE_CPU,
                                            SLM_DEVICE_CUDA};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (text && strcmp(text, slm_device_name(kinds[i])) == 0) {
            *out = kinds[i];
            return SLM_OK;
        }
    return slm_fail(SLM_ERR_INVALID,
                    "--device '%.64s': expected auto, cpu or cuda",
                    text ? text : "");
}

const char *slm_device_name(slm_device_kind kind)
{
    switch (kind) {
    case SLM_DEVICE_AUTO:
        return "auto";
    case SLM_DEVICE_CPU:
        return "cpu";
    case SLM_DEVICE_CUDA:
        return "cuda";
    }
    return "?";
}

int slm_device_count(void)
{
#ifdef SLM_HAVE_CUDA
    int n = slm_cuda_device_count();
    return n > 0 ? n : 0;
#else
    return 0;
#endif
}

slm_status slm_device_resolve(slm_device_kind requested, slm_device_kind *out)
{
    const int n = slm_device_count();
    switch (requested) {
    case SLM_DEVICE_AUTO:
        *out = n > 0 ? SLM_DEVICE_CUDA : SLM_DEVICE_CPU;
        return SLM_OK;
    case SLM_DEVICE_CPU:
        *out = SLM_DEVICE_CPU;
        return SLM_OK;
    case SLM_DEVICE_CUDA:
#ifndef SLM_HAVE_CUDA
        return slm_fail(SLM_ERR_UNSUPPORTED,
                        "--device cuda: this shardlm was built without CUDA "
                        "(rebuild with the CUDA toolkit, or use --device cpu)");
#else
        if (n == 0)
            return slm_fail(SLM_ERR_UNSUPPORTED,
                            "--device cuda: no CUDA GPU found (no driver or "
                            "no device visible; check nvidia-smi and "
                            "CUDA_VISIBLE_DEVICES, or use --device cpu)");
        *out = SLM_DEVICE_CUDA;
        return SLM_OK;
#endif
    }
    return slm_fail(SLM_ERR_INVALID, "unknown device kind %d", (int)requested);
}

/* A non-negative decimal from the environment, or -1. */
static int env_index(const char *name)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0 || v > 1 << 20)
        return -1;
    return (int)v;
}

int slm_device_local_rank(MPI_Comm comm)
{
    /* The shards' own communicator first: the launchers' variables count
     * the coordinator too, which uses no GPU. */
    if (comm != MPI_COMM_NULL) {
        MPI_Comm node = MPI_COMM_NULL;
        int rank = -1;
        if (MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL,
                                &node) == MPI_SUCCESS &&
            node != MPI_COMM_NULL) {
            if (MPI_Comm_rank(node, &rank) != MPI_SUCCESS)
                rank = -1;
            MPI_Comm_free(&node);
        }
        if (rank >= 0)
            return rank;
    }
    int r = env_index("OMPI_COMM_WORLD_LOCAL_RANK");
    if (r < 0)
        r = env_index("SLURM_LOCALID");
    return r < 0 ? 0 : r;
}

int slm_device_local_count(MPI_Comm comm)
{
    int size = 1;
    MPI_Comm node = MPI_COMM_NULL;
    if (comm != MPI_COMM_NULL &&
        MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL,
                            &node) == MPI_SUCCESS &&
        node != MPI_COMM_NULL) {
        if (MPI_Comm_size(node, &size) != MPI_SUCCESS)
            size = 1;
        MPI_Comm_free(&node);
    }
    return size;
}

slm_status slm_device_pick(int local_rank, int *device)
{
    const int n = slm_device_count();
    if (n == 0)
        return slm_fail(SLM_ERR_UNSUPPORTED, "no CUDA device to pick from");
    *device = (local_rank < 0 ? 0 : local_rank) % n;
    return SLM_OK;
}

#ifndef SLM_HAVE_CUDA
/* The CUDA transformer's interface, answering "built without CUDA". */
slm_cuda_options slm_cuda_options_default(void)
{
    slm_cuda_options o = {1, 0, false, false};
    return o;
}

slm_status slm_cuda_transformer_create(const slm_shard_weights_t *w,
                                       const slm_shard_links *links, int device,
                                       const slm_cuda_options *opt,
                                       slm_cuda_transformer_t **out)
{
    (void)w;
    (void)links;
    (void)device;
    (void)opt;
    *out = NULL;
    return slm_fail(SLM_ERR_UNSUPPORTED,
                    "the CUDA forward pass: this shardlm was built without "
                    "CUDA");
}

void slm_cuda_transformer_destroy(slm_cuda_transformer_t **t)
{
    if (t)
        *t = NULL;
}

slm_status slm_cuda_transformer_forward_batch(slm_cuda_transformer_t *t,
                                              const int32_t *tokens,
                                              const int32_t *pos,
                                              const float **logits)
{
    (void)t;
    (void)tokens;
    (void)pos;
    *logits = NULL;
    return slm_fail(SLM_ERR_UNSUPPORTED, "built without CUDA");
}

slm_status slm_cuda_transformer_forward(slm_cuda_transformer_t *t,
                                        int32_t token, int32_t pos,
                                        const float **logits)
{
    return slm_cuda_transformer_forward_batch(t, &token, &pos, logits);
}

const slm_model_config *
slm_cuda_transformer_config(const slm_cuda_transformer_t *t)
{
    (void)t;
    return NULL;
}

size_t slm_cuda_transformer_max_seq(const slm_cuda_transformer_t *t)
{
    (void)t;
    return 0;
}

size_t slm_cuda_transformer_weight_bytes(const slm_cuda_transformer_t *t)
{
    (void)t;
    return 0;
}
#endif

struct slm_forward {
    slm_device_kind kind;
    slm_kv_config kv; /* as resolved */
    slm_transformer_t *cpu;
    slm_cuda_transformer_t *cuda;
};

slm_status slm_forward_create(slm_device_kind kind, int device,
                              const slm_shard_weights_t *w,
                              const slm_shard_links *links,
                              const slm_kv_config *kv, slm_forward_t **out)
{
    slm_forward_t *f = calloc(1, sizeof *f);
    if (!f)
        return slm_fail(SLM_ERR_NOMEM, "out of memory");
    slm_status rc = SLM_OK;
    f->kind = kind;
    if (kind == SLM_DEVICE_CPU) {
        SLM_CHECK_GOTO(slm_transformer_create_ex(w, links, kv, &f->cpu), rc,
                       fail);
        f->kv = *slm_transformer_kv(f->cpu);
    } else if (kind == SLM_DEVICE_CUDA) {
        /* The GPU pass keeps one contiguous cache per batch slot and runs
         * one token per step; batched, paged steps are the CPU's for now.
         * It accepts the same steps on the wire as a CPU shard (the same
         * limits, so every shard agrees with the coordinator), says so in
         * its Hello, and the coordinator then sends one token of one
         * sequence per step; block tables are ignored here. */
        SLM_CHECK_GOTO(
            slm_kv_config_resolve(
                kv, (size_t)slm_shard_weights_config(w)->seq_len, &f->kv),
            rc, fail);
        const slm_cuda_options opt = slm_cuda_options_default();
        SLM_CHECK_GOTO(
            slm_cuda_transformer_create(w, links, device, &opt, &f->cuda), rc,
            fail);
    } else {
        rc = slm_fail(SLM_ERR_INVALID,
                      "slm_forward_create: device '%s' is not resolved",
                      slm_device_name(kind));
        goto fail;
    }
    *out = f;
    return SLM_OK;
fail:
    slm_forward_destroy(&f);
    return rc;
}

void slm_forward_destroy(slm_forward_t **fp)
{
    if (!fp || !*fp)
        return;
    slm_transformer_destroy(&(*fp)->cpu);
    slm_cuda_transformer_destroy(&(*fp)->cuda);
    free(*fp);
    *fp = NULL;
}

slm_status slm_forward_step(slm_forward_t *f, int32_t token, int32_t pos,
                            const float **logits)
{
    if (f->cuda)
        return slm_cuda_transformer_forward(f->cuda, token, pos, logits);
    return slm_transformer_forward(f->cpu, token, pos, logits);
}

slm_status slm_forward_batch(slm_forward_t *f, const slm_step *st,
                             const float **logits, size_t *rows)
{
    *logits = NULL;
    *rows = 0;
    if (!f->cuda)
        return slm_transformer_step(f->cpu, st, logits, rows);
    /* The GPU pass zeroes a slot's cache itself when a sequence starts at
     * position 0, so freed blocks need nothing here. */
    if (st->n_seqs == 0)
        return SLM_OK;
    if (st->n_seqs > 1 || st->seqs[0].n_tokens != 1)
        return slm_fail(SLM_ERR_INVALID,
                        "the CUDA backend runs one sequence of one token per "
                        "step, not %zu sequences (%zu tokens)",
                        st->n_seqs, st->seqs[0].n_tokens);
    SLM_CHECK(slm_cuda_transformer_forward(f->cuda, st->seqs[0].tokens[0],
                                           st->seqs[0].pos, logits));
    if (st->seqs[0].want_logits && *logits)
        *rows = 1;
    else
        *logits = NULL;
    return SLM_OK;
}

const slm_kv_config *slm_forward_kv(const slm_forward_t *f)
{
    return &f->kv;
}

slm_device_kind slm_forward_kind(const slm_forward_t *f)
{
    return f->kind;
}

const slm_model_config *slm_forward_config(const slm_forward_t *f)
{
    return f->cuda ? slm_cuda_transformer_config(f->cuda)
                   : slm_transformer_config(f->cpu);
}

int32_t slm_forward_seq_len(const slm_forward_t *f)
{
    if (f->cuda)
        return (int32_t)slm_cuda_transformer_max_seq(f->cuda);
    return slm_transformer_config(f->cpu)->seq_len;
}

slm_transformer_t *slm_forward_cpu(slm_forward_t *f)
{
    return f->cpu;
}
