/*
 * shard/cuda/forward.c - the Llama forward pass of one shard on a GPU, read
 * end to end in enqueue_step(), in the manner of shard/transformer.c (which
 * it mirrors step for step; see there for the tensor-parallel layout).
 *
 * Weights are converted to float16 (bfloat16 with SHARDLM_CUDA_DTYPE=bf16)
 * once, at load, and stay on the device. Activations between matrix
 * products are of that half type; the residual stream, the partial sums that
 * the tensor group all-reduces, and the logits are float32. A step decodes
 * `batch` sequences at once (rows of every activation).
 *
 * The step reads its tokens and positions from device memory, so the same
 * work can be captured once as a CUDA graph and replayed every step: only
 * the two small host-to-device copies before it and the logits copy after
 * it change. Graphs need every collective to be capturable: tp = pp = 1 (no
 * collectives), or NCCL communicators that only enqueue (made with
 * wait = false; the default NCCL watchdog waits inside each operation,
 * which a capture forbids). With CPU (MPI) communicators the
 * activations are staged through host memory around each collective, and
 * the step runs un-graphed. SHARDLM_CUDA_GRAPHS=0 forces the un-graphed
 * path, for debugging.
 */
#include "shard/device.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/checked.h"
#include "kernels/cuda/cuda_kernels.h"

/* Floats converted per staging copy at load: 16 Mi floats = 64 MiB. */
#define SLM_UPLOAD_CHUNK ((size_t)16 << 20)

#define CUDA_CHECK(call)                                                       \
    do {                                                                       \
        cudaError_t e_ = (call);                                               \
        if (e_ != cudaSuccess)                                                 \
            return slm_fail(SLM_ERR_INTERNAL, "%s: %s", #call,                 \
                            cudaGetErrorString(e_));                           \
    } while (0)

#define CUDA_CHECK_GOTO(call, rc, label)                                       \
    do {                                                                       \
        cudaError_t e_ = (call);                                               \
        if (e_ != cudaSuccess) {                                               \
            rc = slm_fail(SLM_ERR_INTERNAL, "%s: %s", #call,                   \
                          cudaGetErrorString(e_));                             \
            goto label;                                                        \
        }                                                                      \
    } while (0)

/* One layer's weights on the device, all of dt. */
typedef struct {
    void *rms_att; /* (dim) */
    void *wq;      /* (q_dim, dim) */
    void *wk;      /* (kv_dim, dim) */
    void *wv;      /* (kv_dim, dim) */
    void *wo;      /* (dim, q_dim) */
    void *rms_ffn; /* (dim) */
    void *w1;      /* (hidden, dim) */
    void *w2;      /* (dim, hidden) */
    void *w3;      /* (hidden, dim) */
} dev_layer;

/* Activations of one step, B = batch rows. */
typedef struct {
    float *x;   /* (B, dim) f32 residual stream */
    void *xb;   /* (B, dim) dt normalised input of a product */
    float *xb2; /* (B, dim) f32 partial sum of a row-parallel product */
    void *q;    /* (B, q_dim) dt queries, rotated in place */
    void *k;    /* (B, kv_dim) dt this position's keys, before rope */
    void *v;    /* (B, kv_dim) dt */
    void *att;  /* (B, q_dim) dt attention output */
    void *hb;   /* (B, hidden) dt w1 branch, then the SwiGLU output */
    void *hb2;  /* (B, hidden) dt w3 branch */
    float *local_logits; /* (B, vocab) f32 this shard's rows */
    float *gathered;     /* (B * vocab_total) f32 rank-major, tp > 1 */
    float *logits;       /* (B, vocab_total) f32 */
    void *key_cache;     /* (n_layers, B, max_seq, kv_dim) dt */
    void *value_cache;   /* (n_layers, B, max_seq, kv_dim) dt */
    void *workspace;     /* attention's */
    int32_t *tokens;     /* (B) */
    int32_t *pos;        /* (B) */
} dev_state;

struct slm_cuda_transformer {
    slm_shard_dims d;
    slm_model_config cfg;
    slm_shard_slice slice;
    slm_shard_links links; /* zeroed for a whole model */
    bool first_stage, last_stage;
    int device;
    slm_cuda_dtype dt;
    size_t batch, max_seq;
    size_t weight_bytes;
    size_t *vocab_counts;  /* (tp) rows per tensor rank */
    size_t *gather_counts; /* (tp) vocab_counts * batch */
    bool staged;           /* collectives through host memory */
    bool graphs;           /* capture and replay the step */
    bool warmed;           /* one plain step has run (see forward_batch) */

    void *stream; /* cudaStream_t */
    void *blas;   /* cublasHandle_t */
    cudaGraph_t graph;
    cudaGraphExec_t graph_exec;

    void *embedding;  /* (vocab, dim) dt, first stage */
    void *rms_final;  /* (dim) dt, last stage */
    void *classifier; /* (vocab, dim) dt; may alias embedding */
    void *ones;       /* (dim) dt, 1.0: the residual add of a middle stage */
    dev_layer *layers;
    dev_state s;

    float *host_stage;    /* (B * max(dim, vocab_total)) pinned, staging */
    float *host_logits;   /* (B, vocab_total) pinned */
    int32_t *host_tokens; /* (B) pinned */
    int32_t *host_pos;    /* (B) pinned */
    size_t *kv_used;      /* (B) cache rows each sequence wrote since zeroed */
};

static cudaStream_t stream_of(const slm_cuda_transformer_t *t)
{
    return (cudaStream_t)t->stream;
}

/* Device bytes for a * b * c elements of `elem` bytes; checked. */
static slm_status dev_alloc(void **out, size_t a, size_t b, size_t c,
                            size_t elem)
{
    size_t n, bytes;
    *out = NULL;
    if (!slm_size_mul3(a, b, c, &n) || !slm_size_mul(n, elem, &bytes))
        return slm_fail(SLM_ERR_RANGE,
                        "cuda: %zu x %zu x %zu elements overflow", a, b, c);
    cudaError_t e = cudaMalloc(out, bytes ? bytes : 1);
    if (e != cudaSuccess)
        return slm_fail(SLM_ERR_NOMEM, "cuda: cannot allocate %zu bytes: %s",
                        bytes, cudaGetErrorString(e));
    /* cudaMemset runs on the legacy default stream, which does not order
     * against the transformer's non-blocking stream: wait for it, or a
     * late memset could clear weights the stream has already written. Only
     * at creation. */
    e = cudaMemset(*out, 0, bytes ? bytes : 1);
    if (e == cudaSuccess)
        e = cudaDeviceSynchronize();
    if (e != cudaSuccess)
        return slm_fail(SLM_ERR_INTERNAL, "cuda: memset: %s",
                        cudaGetErrorString(e));
    return SLM_OK;
}

static slm_status host_alloc(void **out, size_t n, size_t elem)
{
    size_t bytes;
    *out = NULL;
    if (!slm_size_mul(n, elem, &bytes))
        return slm_fail(SLM_ERR_RANGE, "cuda: %zu host elements overflow", n);
    cudaError_t e = cudaMallocHost(out, bytes ? bytes : 1);
    if (e != cudaSuccess)
        return slm_fail(SLM_ERR_NOMEM,
                        "cuda: cannot pin %zu bytes of host memory: %s", bytes,
                        cudaGetErrorString(e));
    memset(*out, 0, bytes ? bytes : 1);
    return SLM_OK;
}

/* Copies host float32 src(n) to a new device array of dt, converting on the
 * device through the staging buffer `stage` (SLM_UPLOAD_CHUNK floats). */
static slm_status upload_half(slm_cuda_transformer_t *t, void **out,
                              const float *src, size_t n, float *stage)
{
    const size_t es = slm_cuda_dtype_size(t->dt);
    SLM_CHECK(dev_alloc(out, n, 1, 1, es));
    for (size_t off = 0; off < n; off += SLM_UPLOAD_CHUNK) {
        size_t m = n - off < SLM_UPLOAD_CHUNK ? n - off : SLM_UPLOAD_CHUNK;
        CUDA_CHECK(cudaMemcpyAsync(stage, src + off, m * sizeof(float),
                                   cudaMemcpyHostToDevice, stream_of(t)));
        SLM_CHECK(slm_cuda_to_half((char *)*out + off * es, stage, m, t->dt,
                                   t->stream));
        /* the staging buffer is reused by the next chunk */
        CUDA_CHECK(cudaStreamSynchronize(stream_of(t)));
    }
    t->weight_bytes += n * es;
    return SLM_OK;
}

static slm_status upload_weights(slm_cuda_transformer_t *t,
                                 const slm_shard_weights_t *w)
{
    const slm_shard_dims *d = &t->d;
    const size_t dim = d->dim, q_dim = d->q_dim, kv_dim = d->kv_dim;
    const size_t hidden = d->hidden;
    void *stage = NULL;
    slm_status rc = SLM_OK;
    SLM_CHECK(dev_alloc(&stage, SLM_UPLOAD_CHUNK, 1, 1, sizeof(float)));
    for (size_t l = 0; l < d->n_layers; l++) {
        const slm_layer_weights *lw = slm_shard_weights_layer(w, l);
        dev_layer *dl = &t->layers[l];
        SLM_CHECK_GOTO(upload_half(t, &dl->rms_att, lw->rms_att, dim, stage),
                       rc, done);
        SLM_CHECK_GOTO(upload_half(t, &dl->wq, lw->wq, q_dim * dim, stage), rc,
                       done);
        SLM_CHECK_GOTO(upload_half(t, &dl->wk, lw->wk, kv_dim * dim, stage), rc,
                       done);
        SLM_CHECK_GOTO(upload_half(t, &dl->wv, lw->wv, kv_dim * dim, stage), rc,
                       done);
        SLM_CHECK_GOTO(upload_half(t, &dl->wo, lw->wo, dim * q_dim, stage), rc,
                       done);
        SLM_CHECK_GOTO(upload_half(t, &dl->rms_ffn, lw->rms_ffn, dim, stage),
                       rc, done);
        SLM_CHECK_GOTO(upload_half(t, &dl->w1, lw->w1, hidden * dim, stage), rc,
                       done);
        SLM_CHECK_GOTO(upload_half(t, &dl->w2, lw->w2, dim * hidden, stage), rc,
                       done);
        SLM_CHECK_GOTO(upload_half(t, &dl->w3, lw->w3, hidden * dim, stage), rc,
                       done);
    }
    const float *emb = slm_shard_weights_embedding(w);
    const float *cls = slm_shard_weights_classifier(w);
    if (t->first_stage)
        SLM_CHECK_GOTO(
            upload_half(t, &t->embedding, emb, d->vocab * dim, stage), rc,
            done);
    if (t->last_stage) {
        SLM_CHECK_GOTO(upload_half(t, &t->rms_final,
                                   slm_shard_weights_rms_final(w), dim, stage),
                       rc, done);
        if (cls == emb && t->embedding) /* shared classifier: one copy */
            t->classifier = t->embedding;
        else
            SLM_CHECK_GOTO(
                upload_half(t, &t->classifier, cls, d->vocab * dim, stage), rc,
                done);
    } else {
        float *ones = malloc(dim * sizeof *ones);
        if (!ones) {
            rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (size_t i = 0; i < dim; i++)
            ones[i] = 1.0f;
        rc = upload_half(t, &t->ones, ones, dim, stage);
        free(ones);
        t->weight_bytes -= dim * slm_cuda_dtype_size(t->dt);
    }
done:
    cudaFree(stage);
    return rc;
}

static bool comm_is_nccl(slm_comm_t *c)
{
    return c && strcmp(slm_comm_backend_name(c), "nccl") == 0;
}

static int tp_size(const slm_cuda_transformer_t *t)
{
    return t->links.tp ? slm_comm_size(t->links.tp) : 1;
}

slm_cuda_options slm_cuda_options_default(void)
{
    const char *g = getenv("SHARDLM_CUDA_GRAPHS");
    slm_cuda_options o = {1, 0, !(g && strcmp(g, "0") == 0), false};
    return o;
}

slm_status slm_cuda_transformer_create(const slm_shard_weights_t *w,
                                       const slm_shard_links *links, int device,
                                       const slm_cuda_options *opt,
                                       slm_cuda_transformer_t **out)
{
    *out = NULL;
    if (!opt || opt->batch == 0 || opt->batch > 4096)
        return slm_fail(SLM_ERR_INVALID, "cuda: batch must be in [1, 4096]");
    slm_cuda_transformer_t *t = calloc(1, sizeof *t);
    if (!t)
        return slm_fail(SLM_ERR_NOMEM, "out of memory");
    slm_status rc = SLM_OK;
    t->d = *slm_shard_weights_dims(w);
    t->cfg = *slm_shard_weights_config(w);
    t->slice = *slm_shard_weights_slice(w);
    t->device = device;
    /* The rope kernel computes llama2.c's default frequencies itself. */
    if (t->cfg.rope_theta != 10000.0f ||
        t->cfg.rope_scaling.type != SLM_ROPE_DEFAULT) {
        rc = slm_fail(SLM_ERR_UNSUPPORTED,
                        "cuda: rope_theta %g%s is not supported on the GPU "
                        "yet (only 10000 without scaling); use --device cpu",
                        (double)t->cfg.rope_theta,
                        t->cfg.rope_scaling.type == SLM_ROPE_LLAMA3
                            ? " with llama3 scaling"
                            : "");
        goto fail;
    }
    if (t->cfg.q_dim != t->cfg.dim) {
        rc = slm_fail(SLM_ERR_UNSUPPORTED,
                      "cuda: head_dim %d with %d heads is not hidden_size "
                      "%d: not supported on the GPU yet; use --device cpu",
                      t->cfg.head_size, t->cfg.n_heads, t->cfg.dim);
        goto fail;
    }
    if (t->cfg.qkv_bias || t->cfg.qk_norm) {
        rc = slm_fail(SLM_ERR_UNSUPPORTED,
                      "cuda: %s is not supported on the GPU yet; use "
                      "--device cpu",
                      t->cfg.qkv_bias ? "q/k/v biases (Qwen2)"
                                      : "q/k norms (Qwen3)");
        goto fail;
    }
    const char *dts = getenv("SHARDLM_CUDA_DTYPE");
    t->dt = dts && strcmp(dts, "bf16") == 0 ? SLM_CUDA_BF16 : SLM_CUDA_F16;
    t->batch = opt->batch;
    t->max_seq = opt->max_seq && opt->max_seq < t->d.seq_len ? opt->max_seq
                                                             : t->d.seq_len;
    int32_t tp = 1, pp = 1;
    if (links) {
        t->links = *links;
        tp = slm_plan_tp(links->plan);
        pp = slm_plan_pp(links->plan);
        if ((tp > 1 && !links->tp) || (pp > 1 && !links->pp)) {
            rc = slm_fail(SLM_ERR_INVALID,
                          "cuda shard: tp = %d, pp = %d needs tensor and "
                          "pipeline communicators",
                          tp, pp);
            goto fail;
        }
    }
    t->first_stage = t->slice.stage == 0;
    t->last_stage = t->slice.stage == pp - 1;
    if ((t->first_stage && !slm_shard_weights_embedding(w)) ||
        (t->last_stage && !slm_shard_weights_classifier(w))) {
        rc = slm_fail(SLM_ERR_INVALID,
                      "cuda shard: embedding or classifier missing");
        goto fail;
    }
    t->staged = (tp > 1 && !comm_is_nccl(t->links.tp)) ||
                (pp > 1 && !comm_is_nccl(t->links.pp));
    /* A graph may hold only work that is enqueued, never waited for: no
     * collectives at all, or NCCL ones made with wait = false. */
    t->graphs = opt->graphs && !t->staged &&
                ((tp == 1 && pp == 1) || opt->enqueue_only_collectives);

    CUDA_CHECK_GOTO(cudaSetDevice(device), rc, fail);
    cudaStream_t st = NULL;
    CUDA_CHECK_GOTO(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), rc,
                    fail);
    t->stream = st;
    SLM_CHECK_GOTO(slm_cuda_blas_create(&t->blas, t->stream), rc, fail);

    const slm_shard_dims *d = &t->d;
    const size_t B = t->batch, es = slm_cuda_dtype_size(t->dt);
    t->layers = calloc(d->n_layers ? d->n_layers : 1, sizeof *t->layers);
    if (!t->layers) {
        rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    SLM_CHECK_GOTO(upload_weights(t, w), rc, fail);

    dev_state *s = &t->s;
    SLM_CHECK_GOTO(dev_alloc((void **)&s->x, B, d->dim, 1, sizeof(float)), rc,
                   fail);
    SLM_CHECK_GOTO(dev_alloc(&s->xb, B, d->dim, 1, es), rc, fail);
    SLM_CHECK_GOTO(dev_alloc((void **)&s->xb2, B, d->dim, 1, sizeof(float)), rc,
                   fail);
    SLM_CHECK_GOTO(dev_alloc(&s->q, B, d->q_dim, 1, es), rc, fail);
    SLM_CHECK_GOTO(dev_alloc(&s->k, B, d->kv_dim, 1, es), rc, fail);
    SLM_CHECK_GOTO(dev_alloc(&s->v, B, d->kv_dim, 1, es), rc, fail);
    SLM_CHECK_GOTO(dev_alloc(&s->att, B, d->q_dim, 1, es), rc, fail);
    SLM_CHECK_GOTO(dev_alloc(&s->hb, B, d->hidden, 1, es), rc, fail);
    SLM_CHECK_GOTO(dev_alloc(&s->hb2, B, d->hidden, 1, es), rc, fail);
    size_t cache_rows;
    if (!slm_size_mul(d->n_layers, B, &cache_rows)) {
        rc = slm_fail(SLM_ERR_RANGE, "cuda: KV cache size overflows");
        goto fail;
    }
    SLM_CHECK_GOTO(
        dev_alloc(&s->key_cache, cache_rows, t->max_seq, d->kv_dim, es), rc,
        fail);
    SLM_CHECK_GOTO(
        dev_alloc(&s->value_cache, cache_rows, t->max_seq, d->kv_dim, es), rc,
        fail);
    SLM_CHECK_GOTO(dev_alloc(&s->workspace,
                             slm_cuda_attention_workspace_bytes(
                                 B, d->n_heads, d->head_size, t->max_seq),
                             1, 1, 1),
                   rc, fail);
    SLM_CHECK_GOTO(dev_alloc((void **)&s->tokens, B, 1, 1, sizeof(int32_t)), rc,
                   fail);
    SLM_CHECK_GOTO(dev_alloc((void **)&s->pos, B, 1, 1, sizeof(int32_t)), rc,
                   fail);
    SLM_CHECK_GOTO(host_alloc((void **)&t->host_tokens, B, sizeof(int32_t)), rc,
                   fail);
    SLM_CHECK_GOTO(host_alloc((void **)&t->host_pos, B, sizeof(int32_t)), rc,
                   fail);
    if (!(t->kv_used = calloc(B, sizeof *t->kv_used))) {
        rc = slm_fail(SLM_ERR_NOMEM, "cuda: out of memory");
        goto fail;
    }
    if (t->staged) {
        size_t n = d->dim > d->vocab_total ? d->dim : d->vocab_total;
        SLM_CHECK_GOTO(
            host_alloc((void **)&t->host_stage, B * n, sizeof(float)), rc,
            fail);
    }
    if (t->last_stage) {
        SLM_CHECK_GOTO(
            dev_alloc((void **)&s->logits, B, d->vocab_total, 1, sizeof(float)),
            rc, fail);
        SLM_CHECK_GOTO(host_alloc((void **)&t->host_logits, B * d->vocab_total,
                                  sizeof(float)),
                       rc, fail);
        s->local_logits = s->logits;
        if (tp > 1) {
            SLM_CHECK_GOTO(dev_alloc((void **)&s->local_logits, B, d->vocab, 1,
                                     sizeof(float)),
                           rc, fail);
            SLM_CHECK_GOTO(dev_alloc((void **)&s->gathered, B, d->vocab_total,
                                     1, sizeof(float)),
                           rc, fail);
            t->vocab_counts = calloc((size_t)tp, sizeof *t->vocab_counts);
            t->gather_counts = calloc((size_t)tp, sizeof *t->gather_counts);
            if (!t->vocab_counts || !t->gather_counts) {
                rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
                goto fail;
            }
            /* Shards of one stage are stage * tp + r. */
            for (int32_t r = 0; r < tp; r++) {
                t->vocab_counts[r] =
                    (size_t)slm_plan_slice(links->plan, t->slice.stage * tp + r)
                        ->vocab.count;
                t->gather_counts[r] = t->vocab_counts[r] * B;
            }
        }
    }
    CUDA_CHECK_GOTO(cudaStreamSynchronize(st), rc, fail);
    *out = t;
    return SLM_OK;
fail:
    slm_cuda_transformer_destroy(&t);
    return rc;
}

void slm_cuda_transformer_destroy(slm_cuda_transformer_t **tp)
{
    if (!tp || !*tp)
        return;
    slm_cuda_transformer_t *t = *tp;
    cudaSetDevice(t->device);
    if (t->stream)
        cudaStreamSynchronize(stream_of(t));
    if (t->graph_exec)
        cudaGraphExecDestroy(t->graph_exec);
    if (t->graph)
        cudaGraphDestroy(t->graph);
    if (t->layers) {
        for (size_t l = 0; l < t->d.n_layers; l++) {
            dev_layer *dl = &t->layers[l];
            void *ptrs[] = {dl->rms_att, dl->wq, dl->wk, dl->wv, dl->wo,
                            dl->rms_ffn, dl->w1, dl->w2, dl->w3};
            for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
                cudaFree(ptrs[i]);
        }
        free(t->layers);
    }
    if (t->classifier != t->embedding)
        cudaFree(t->classifier);
    cudaFree(t->embedding);
    cudaFree(t->rms_final);
    cudaFree(t->ones);
    dev_state *s = &t->s;
    if (s->local_logits != s->logits)
        cudaFree(s->local_logits);
    void *ptrs[] = {s->x,           s->xb,        s->xb2,    s->q,
                    s->k,           s->v,         s->att,    s->hb,
                    s->hb2,         s->gathered,  s->logits, s->key_cache,
                    s->value_cache, s->workspace, s->tokens, s->pos};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
        cudaFree(ptrs[i]);
    cudaFreeHost(t->host_stage);
    cudaFreeHost(t->host_logits);
    cudaFreeHost(t->host_tokens);
    cudaFreeHost(t->host_pos);
    free(t->kv_used);
    if (t->blas)
        slm_cuda_blas_destroy(&t->blas);
    if (t->stream)
        cudaStreamDestroy(stream_of(t));
    free(t->vocab_counts);
    free(t->gather_counts);
    free(t);
    *tp = NULL;
}

/* --- collectives: enqueued on the stream (NCCL), or staged (CPU) ------- */

/* Sums x(n floats, device) over the tensor group, in place. */
static slm_status tp_all_reduce(slm_cuda_transformer_t *t, float *x, size_t n)
{
    if (tp_size(t) == 1)
        return SLM_OK;
    if (!t->staged)
        return slm_comm_all_reduce(x, x, n, SLM_DTYPE_F32, SLM_REDOP_SUM,
                                   t->links.tp, t->stream);
    float *h = t->host_stage;
    CUDA_CHECK(cudaMemcpyAsync(h, x, n * sizeof(float), cudaMemcpyDeviceToHost,
                               stream_of(t)));
    CUDA_CHECK(cudaStreamSynchronize(stream_of(t)));
    SLM_CHECK(slm_comm_all_reduce(h, h, n, SLM_DTYPE_F32, SLM_REDOP_SUM,
                                  t->links.tp, NULL));
    CUDA_CHECK(cudaMemcpyAsync(x, h, n * sizeof(float), cudaMemcpyHostToDevice,
                               stream_of(t)));
    return SLM_OK;
}

/* The residual stream between pipeline stages. */
static slm_status pp_send_recv(slm_cuda_transformer_t *t, float *x, size_t n,
                               bool send, int peer)
{
    if (!t->staged)
        return send ? slm_comm_send(x, n, SLM_DTYPE_F32, peer, t->links.pp,
                                    t->stream)
                    : slm_comm_recv(x, n, SLM_DTYPE_F32, peer, t->links.pp,
                                    t->stream);
    float *h = t->host_stage;
    if (send) {
        CUDA_CHECK(cudaMemcpyAsync(h, x, n * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream_of(t)));
        CUDA_CHECK(cudaStreamSynchronize(stream_of(t)));
        return slm_comm_send(h, n, SLM_DTYPE_F32, peer, t->links.pp, NULL);
    }
    SLM_CHECK(slm_comm_recv(h, n, SLM_DTYPE_F32, peer, t->links.pp, NULL));
    CUDA_CHECK(cudaMemcpyAsync(x, h, n * sizeof(float), cudaMemcpyHostToDevice,
                               stream_of(t)));
    return SLM_OK;
}

/* local_logits (B, vocab) of every tensor rank into logits (B,
 * vocab_total). The all-gather leaves them rank-major - rank r's (B, v_r)
 * block after the blocks of ranks < r - so each block is then copied into
 * its columns of the logits (one strided copy per rank; nothing at B = 1
 * but the copies themselves). */
static slm_status tp_gather_logits(slm_cuda_transformer_t *t)
{
    dev_state *s = &t->s;
    const size_t B = t->batch, V = t->d.vocab_total;
    const int tp = tp_size(t);
    if (!t->staged) {
        SLM_CHECK(slm_comm_all_gather_v(s->local_logits, B * t->d.vocab,
                                        s->gathered, t->gather_counts,
                                        SLM_DTYPE_F32, t->links.tp, t->stream));
    } else {
        float *h = t->host_stage;
        /* Own rows first into their slot in host memory, then gather in
         * place. */
        size_t before = 0;
        for (int r = 0; r < slm_comm_rank(t->links.tp); r++)
            before += t->gather_counts[r];
        CUDA_CHECK(cudaMemcpyAsync(h + before, s->local_logits,
                                   B * t->d.vocab * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream_of(t)));
        CUDA_CHECK(cudaStreamSynchronize(stream_of(t)));
        SLM_CHECK(slm_comm_all_gather_v(h + before, B * t->d.vocab, h,
                                        t->gather_counts, SLM_DTYPE_F32,
                                        t->links.tp, NULL));
        CUDA_CHECK(cudaMemcpyAsync(s->gathered, h, B * V * sizeof(float),
                                   cudaMemcpyHostToDevice, stream_of(t)));
    }
    size_t col = 0;
    for (int r = 0; r < tp; r++) {
        const size_t v = t->vocab_counts[r];
        CUDA_CHECK(cudaMemcpy2DAsync(s->logits + col, V * sizeof(float),
                                     s->gathered + col * B, v * sizeof(float),
                                     v * sizeof(float), B,
                                     cudaMemcpyDeviceToDevice, stream_of(t)));
        col += v;
    }
    return SLM_OK;
}

/* --- the step --------------------------------------------------------- */

/* Enqueues one decode step on the stream, reading s->tokens and s->pos
 * (device). Host-free when not staged, so it can be captured. */
static slm_status enqueue_step(slm_cuda_transformer_t *t)
{
    const slm_shard_dims *d = &t->d;
    dev_state *s = &t->s;
    void *st = t->stream, *blas = t->blas;
    const slm_cuda_dtype dt = t->dt;
    const size_t B = t->batch, dim = d->dim, hidden = d->hidden;
    const size_t q_dim = d->q_dim, kv_dim = d->kv_dim, seq = t->max_seq;
    const size_t es = slm_cuda_dtype_size(dt);
    const size_t layer_cache = B * seq * kv_dim * es; /* bytes per layer */

    /* the residual stream enters: the tokens' embedding rows (held by one
     * tensor rank, zeros elsewhere, summed), or the previous stage's */
    if (t->first_stage) {
        SLM_CHECK(slm_cuda_embedding(s->x, t->embedding, s->tokens, B,
                                     (size_t)t->slice.vocab.begin, d->vocab,
                                     dim, dt, st));
        SLM_CHECK(tp_all_reduce(t, s->x, B * dim));
    } else {
        SLM_CHECK(pp_send_recv(t, s->x, B * dim, false, t->slice.stage - 1));
    }

    /* the previous block's output, added to x by the next fused norm */
    const float *delta = NULL;
    for (size_t l = 0; l < d->n_layers; l++) {
        const dev_layer *lw = &t->layers[l];
        void *kc = (char *)s->key_cache + l * layer_cache;   /* (B,seq,kv) */
        void *vc = (char *)s->value_cache + l * layer_cache; /* (B,seq,kv) */

        /* attention: residual + rmsnorm, q/k/v for this shard's heads,
         * rotary, and k/v into each sequence's cache row pos[r] */
        SLM_CHECK(slm_cuda_residual_rmsnorm(s->x, delta, lw->rms_att, s->xb, B,
                                            dim, t->cfg.rms_norm_eps, dt, st));
        SLM_CHECK(
            slm_cuda_matmul(blas, s->q, 0, s->xb, lw->wq, B, dim, q_dim, dt));
        SLM_CHECK(
            slm_cuda_matmul(blas, s->k, 0, s->xb, lw->wk, B, dim, kv_dim, dt));
        SLM_CHECK(
            slm_cuda_matmul(blas, s->v, 0, s->xb, lw->wv, B, dim, kv_dim, dt));
        SLM_CHECK(slm_cuda_rope_kv_write(s->q, s->k, s->v, kc, vc, s->pos, B,
                                         d->n_heads, d->n_kv_heads,
                                         d->head_size, seq, dt, st));

        /* grouped-query attention over positions 0..pos[r] */
        SLM_CHECK(slm_cuda_decode_attention(
            s->att, s->q, kc, vc, s->pos, B, d->n_heads, d->n_kv_heads,
            d->head_size, seq, s->workspace, dt, st));

        /* output projection over this shard's head columns (float32
         * partial sums), summed over the tensor group; the residual add
         * is fused into the next norm */
        SLM_CHECK(slm_cuda_matmul(blas, s->xb2, 1, s->att, lw->wo, B, q_dim,
                                  dim, dt));
        SLM_CHECK(tp_all_reduce(t, s->xb2, B * dim));

        /* feed-forward: residual + rmsnorm, w2(silu(w1 x) * w3 x) over
         * this shard's hidden units, summed over the tensor group */
        SLM_CHECK(slm_cuda_residual_rmsnorm(s->x, s->xb2, lw->rms_ffn, s->xb, B,
                                            dim, t->cfg.rms_norm_eps, dt, st));
        SLM_CHECK(
            slm_cuda_matmul(blas, s->hb, 0, s->xb, lw->w1, B, dim, hidden, dt));
        SLM_CHECK(slm_cuda_matmul(blas, s->hb2, 0, s->xb, lw->w3, B, dim,
                                  hidden, dt));
        SLM_CHECK(slm_cuda_swiglu(s->hb, s->hb, s->hb2, B * hidden, dt, st));
        SLM_CHECK(slm_cuda_matmul(blas, s->xb2, 1, s->hb, lw->w2, B, hidden,
                                  dim, dt));
        SLM_CHECK(tp_all_reduce(t, s->xb2, B * dim));
        delta = s->xb2;
    }

    if (!t->last_stage) {
        /* the last residual add, through the fused kernel with unit
         * weights (its normalised output is not used) */
        SLM_CHECK(slm_cuda_residual_rmsnorm(s->x, delta, t->ones, s->xb, B, dim,
                                            t->cfg.rms_norm_eps, dt, st));
        return pp_send_recv(t, s->x, B * dim, true, t->slice.stage + 1);
    }

    /* last residual add + final norm, this shard's classifier rows, then
     * all the logits */
    SLM_CHECK(slm_cuda_residual_rmsnorm(s->x, delta, t->rms_final, s->xb, B,
                                        dim, t->cfg.rms_norm_eps, dt, st));
    SLM_CHECK(slm_cuda_matmul(blas, s->local_logits, 1, s->xb, t->classifier, B,
                              dim, d->vocab, dt));
    if (s->local_logits != s->logits)
        SLM_CHECK(tp_gather_logits(t));
    return SLM_OK;
}

/* Captures enqueue_step once as a graph. */
static slm_status capture(slm_cuda_transformer_t *t)
{
    cudaStream_t st = stream_of(t);
    CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    slm_status rc = enqueue_step(t);
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(st, &g);
    if (rc != SLM_OK) {
        if (g)
            cudaGraphDestroy(g);
        return rc;
    }
    if (e != cudaSuccess)
        return slm_fail(SLM_ERR_INTERNAL,
                        "cuda: capturing the decode step as a graph failed: "
                        "%s (SHARDLM_CUDA_GRAPHS=0 runs without graphs)",
                        cudaGetErrorString(e));
    e = cudaGraphInstantiate(&t->graph_exec, g, 0);
    if (e != cudaSuccess) {
        cudaGraphDestroy(g);
        t->graph_exec = NULL;
        return slm_fail(SLM_ERR_INTERNAL,
                        "cuda: instantiating the decode graph failed: %s",
                        cudaGetErrorString(e));
    }
    t->graph = g;
    return SLM_OK;
}

slm_status slm_cuda_transformer_forward_batch(slm_cuda_transformer_t *t,
                                              const int32_t *tokens,
                                              const int32_t *pos,
                                              const float **logits)
{
    const slm_shard_dims *d = &t->d;
    *logits = NULL;
    for (size_t r = 0; r < t->batch; r++) {
        if (tokens[r] < 0 || (size_t)tokens[r] >= d->vocab_total)
            return slm_fail(SLM_ERR_RANGE,
                            "token %d is outside the vocabulary [0, %zu)",
                            tokens[r], d->vocab_total);
        if (pos[r] < 0 || (size_t)pos[r] >= t->max_seq)
            return slm_fail(SLM_ERR_RANGE,
                            "position %d is outside the context [0, %zu)",
                            pos[r], t->max_seq);
    }
    cudaStream_t st = stream_of(t);
    CUDA_CHECK(cudaSetDevice(t->device));
    const size_t B = t->batch;
    /* A sequence starting at position 0 first wipes what its slot's last
     * sequence left in the cache (as the CPU twin, slm_transformer_reset):
     * another request's keys and values must not outlive it. */
    const size_t row_bytes = d->kv_dim * slm_cuda_dtype_size(t->dt);
    const size_t slot_bytes = t->max_seq * row_bytes;
    for (size_t r = 0; r < B; r++) {
        if (pos[r] == 0 && t->kv_used[r]) {
            for (size_t l = 0; l < d->n_layers; l++) {
                const size_t at = (l * B + r) * slot_bytes;
                CUDA_CHECK(cudaMemsetAsync((char *)t->s.key_cache + at, 0,
                                           t->kv_used[r] * row_bytes, st));
                CUDA_CHECK(cudaMemsetAsync((char *)t->s.value_cache + at, 0,
                                           t->kv_used[r] * row_bytes, st));
            }
            t->kv_used[r] = 0;
        }
        if ((size_t)pos[r] + 1 > t->kv_used[r])
            t->kv_used[r] = (size_t)pos[r] + 1;
    }
    memcpy(t->host_tokens, tokens, B * sizeof *tokens);
    memcpy(t->host_pos, pos, B * sizeof *pos);
    CUDA_CHECK(cudaMemcpyAsync(t->s.tokens, t->host_tokens, B * sizeof *tokens,
                               cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(t->s.pos, t->host_pos, B * sizeof *pos,
                               cudaMemcpyHostToDevice, st));
    /* The first step runs plainly: lazy module loads and cuBLAS's first
     * allocations must not happen inside a capture. The second is captured,
     * and replayed from then on; a capture that fails turns graphs off for
     * good, with one warning, rather than failing the request. */
    if (t->graphs && t->warmed && !t->graph_exec && capture(t) != SLM_OK) {
        fprintf(stderr, "shardlm: %s; running without CUDA graphs\n",
                slm_error_message());
        (void)cudaGetLastError(); /* clear the sticky capture error */
        t->graphs = false;
    }
    if (t->graphs && t->graph_exec)
        CUDA_CHECK(cudaGraphLaunch(t->graph_exec, st));
    else
        SLM_CHECK(enqueue_step(t));
    t->warmed = true;
    if (t->last_stage)
        CUDA_CHECK(cudaMemcpyAsync(t->host_logits, t->s.logits,
                                   B * d->vocab_total * sizeof(float),
                                   cudaMemcpyDeviceToHost, st));
    CUDA_CHECK(cudaStreamSynchronize(st));
    if (t->last_stage)
        *logits = t->host_logits;
    return SLM_OK;
}

slm_status slm_cuda_transformer_forward(slm_cuda_transformer_t *t,
                                        int32_t token, int32_t pos,
                                        const float **logits)
{
    if (t->batch != 1) {
        *logits = NULL;
        return slm_fail(SLM_ERR_INVALID,
                        "cuda: single-token forward on a transformer of "
                        "batch %zu",
                        t->batch);
    }
    return slm_cuda_transformer_forward_batch(t, &token, &pos, logits);
}

const slm_model_config *
slm_cuda_transformer_config(const slm_cuda_transformer_t *t)
{
    return &t->cfg;
}

size_t slm_cuda_transformer_max_seq(const slm_cuda_transformer_t *t)
{
    return t->max_seq;
}

size_t slm_cuda_transformer_weight_bytes(const slm_cuda_transformer_t *t)
{
    return t->weight_bytes;
}
