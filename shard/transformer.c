/*
 * shard/transformer.c - the Llama forward pass, read end to end in
 * slm_transformer_forward(), in the manner of llama2.c's run.c.
 */
#include "shard/transformer.h"

#include <stdlib.h>
#include <string.h>

#include "common/checked.h"
#include "kernels/kernels.h"

#define SLM_RMS_EPS    1e-5f
#define SLM_ROPE_THETA 10000.0f

typedef struct {
    const float *token_embedding; /* (vocab, dim) */
    const float *rms_final;       /* (dim) */
    const float *wcls;            /* (vocab, dim) */
} global_weights;

/* Activations of one step. */
typedef struct {
    float *x;         /* (dim) residual stream */
    float *xb;        /* (dim) normalised input of a sub-block */
    float *xb2;       /* (dim) output of a sub-block, before the residual add */
    float *hb;        /* (hidden_dim) w1 branch, then the SwiGLU output */
    float *hb2;       /* (hidden_dim) w3 branch */
    float *q;         /* (dim) queries of all heads */
    float *att;       /* (n_heads, seq_len) attention scores */
    float *logits;    /* (vocab) */
    float *key_cache; /* (n_layers, seq_len, kv_dim) */
    float *value_cache; /* (n_layers, seq_len, kv_dim) */
} run_state;

struct slm_transformer {
    const slm_checkpoint_t *ck; /* borrowed */
    slm_model_config cfg;
    global_weights w;
    run_state s;
};

static slm_status alloc_floats(float **out, size_t a, size_t b, size_t c)
{
    size_t n, bytes;
    if (!slm_size_mul3(a, b, c, &n) || !slm_size_mul(n, sizeof(float), &bytes))
        return slm_fail(SLM_ERR_RANGE,
                        "run state of %zu x %zu x %zu floats "
                        "overflows",
                        a, b, c);
    /* 64-byte alignment for full-width vector loads. */
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p)
        return slm_fail(SLM_ERR_NOMEM, "cannot allocate %zu bytes of run state",
                        bytes);
    memset(p, 0, rounded ? rounded : 64);
    *out = p;
    return SLM_OK;
}

slm_status slm_transformer_create(const slm_checkpoint_t *ck,
                                  slm_transformer_t **out)
{
    slm_transformer_t *t = calloc(1, sizeof *t);
    if (!t)
        return slm_fail(SLM_ERR_NOMEM, "out of memory");
    t->ck = ck;
    t->cfg = *slm_checkpoint_config(ck);
    const slm_model_config *c = &t->cfg;
    t->w.token_embedding =
        slm_checkpoint_tensor(ck, SLM_TENSOR_TOKEN_EMBEDDING, 0);
    t->w.rms_final = slm_checkpoint_tensor(ck, SLM_TENSOR_RMS_FINAL, 0);
    t->w.wcls = slm_checkpoint_tensor(ck, SLM_TENSOR_WCLS, 0);

    const size_t dim = (size_t)c->dim, hidden = (size_t)c->hidden_dim;
    const size_t seq = (size_t)c->seq_len, layers = (size_t)c->n_layers;
    run_state *s = &t->s;
    slm_status rc;
    SLM_CHECK_GOTO(alloc_floats(&s->x, dim, 1, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->xb, dim, 1, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->xb2, dim, 1, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->hb, hidden, 1, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->hb2, hidden, 1, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->q, dim, 1, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->att, (size_t)c->n_heads, seq, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->logits, (size_t)c->vocab_size, 1, 1), rc,
                   fail);
    SLM_CHECK_GOTO(alloc_floats(&s->key_cache, layers, seq, (size_t)c->kv_dim),
                   rc, fail);
    SLM_CHECK_GOTO(
        alloc_floats(&s->value_cache, layers, seq, (size_t)c->kv_dim), rc,
        fail);
    *out = t;
    return SLM_OK;
fail:
    slm_transformer_destroy(&t);
    return rc;
}

void slm_transformer_destroy(slm_transformer_t **tp)
{
    if (!tp || !*tp)
        return;
    run_state *s = &(*tp)->s;
    free(s->x);
    free(s->xb);
    free(s->xb2);
    free(s->hb);
    free(s->hb2);
    free(s->q);
    free(s->att);
    free(s->logits);
    free(s->key_cache);
    free(s->value_cache);
    free(*tp);
    *tp = NULL;
}

const slm_model_config *slm_transformer_config(const slm_transformer_t *t)
{
    return &t->cfg;
}

slm_status slm_transformer_forward(slm_transformer_t *t, int32_t token,
                                   int32_t pos, const float **logits)
{
    const slm_model_config *c = &t->cfg;
    if (token < 0 || token >= c->vocab_size)
        return slm_fail(SLM_ERR_RANGE,
                        "token %d is outside the vocabulary "
                        "[0, %d)",
                        token, c->vocab_size);
    if (pos < 0 || pos >= c->seq_len)
        return slm_fail(SLM_ERR_RANGE,
                        "position %d is outside the context "
                        "[0, %d)",
                        pos, c->seq_len);
    const slm_checkpoint_t *ck = t->ck;
    run_state *s = &t->s;
    const size_t dim = (size_t)c->dim, hidden = (size_t)c->hidden_dim;
    const size_t kv_dim = (size_t)c->kv_dim, head_size = (size_t)c->head_size;
    const size_t seq = (size_t)c->seq_len, p = (size_t)pos;

    /* the token's embedding row starts the residual stream */
    memcpy(s->x, t->w.token_embedding + (size_t)token * dim,
           dim * sizeof(float));

    for (size_t l = 0; l < (size_t)c->n_layers; l++) {
        /* attention: rmsnorm, q/k/v projections, rotary embedding */
        slm_cpu_rmsnorm(s->xb, s->x,
                        slm_checkpoint_tensor(ck, SLM_TENSOR_RMS_ATT, l), dim,
                        SLM_RMS_EPS);
        /* k and v are written straight into this position's cache row */
        float *k = s->key_cache + (l * seq + p) * kv_dim;   /* (kv_dim) */
        float *v = s->value_cache + (l * seq + p) * kv_dim; /* (kv_dim) */
        slm_cpu_matvec(s->q, slm_checkpoint_tensor(ck, SLM_TENSOR_WQ, l), s->xb,
                       dim, dim);
        slm_cpu_matvec(k, slm_checkpoint_tensor(ck, SLM_TENSOR_WK, l), s->xb,
                       kv_dim, dim);
        slm_cpu_matvec(v, slm_checkpoint_tensor(ck, SLM_TENSOR_WV, l), s->xb,
                       kv_dim, dim);
        slm_cpu_rope(s->q, (size_t)c->n_heads, head_size, p, SLM_ROPE_THETA);
        slm_cpu_rope(k, (size_t)c->n_kv_heads, head_size, p, SLM_ROPE_THETA);

        /* grouped-query attention over positions 0..pos of this layer */
        slm_cpu_attention(s->xb, s->q, s->key_cache + l * seq * kv_dim,
                          s->value_cache + l * seq * kv_dim, s->att, seq,
                          (size_t)c->n_heads, (size_t)c->n_kv_heads, head_size,
                          kv_dim, p);

        /* output projection, then the residual connection */
        slm_cpu_matvec(s->xb2, slm_checkpoint_tensor(ck, SLM_TENSOR_WO, l),
                       s->xb, dim, dim);
        slm_cpu_add(s->x, s->xb2, dim);

        /* feed-forward: rmsnorm, w2(silu(w1 x) * w3 x), residual */
        slm_cpu_rmsnorm(s->xb, s->x,
                        slm_checkpoint_tensor(ck, SLM_TENSOR_RMS_FFN, l), dim,
                        SLM_RMS_EPS);
        slm_cpu_matvec(s->hb, slm_checkpoint_tensor(ck, SLM_TENSOR_W1, l),
                       s->xb, hidden, dim);
        slm_cpu_matvec(s->hb2, slm_checkpoint_tensor(ck, SLM_TENSOR_W3, l),
                       s->xb, hidden, dim);
        slm_cpu_swiglu(s->hb, s->hb2, hidden);
        slm_cpu_matvec(s->xb, slm_checkpoint_tensor(ck, SLM_TENSOR_W2, l),
                       s->hb, dim, hidden);
        slm_cpu_add(s->x, s->xb, dim);
    }

    /* final norm and the classifier */
    slm_cpu_rmsnorm(s->x, s->x, t->w.rms_final, dim, SLM_RMS_EPS);
    slm_cpu_matvec(s->logits, t->w.wcls, s->x, (size_t)c->vocab_size, dim);
    *logits = s->logits;
    return SLM_OK;
}
