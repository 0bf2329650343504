/*
 * shard/transformer.c - the Llama forward pass of one shard, read end to end
 * in slm_transformer_forward(), in the manner of llama2.c's run.c. Local
 * sizes (heads, kv heads, hidden units, vocabulary rows) are this shard's;
 * dim is the model's, since the residual stream is replicated.
 */
#include "shard/transformer.h"

#include <stdlib.h>
#include <string.h>

#include "common/checked.h"
#include "kernels/kernels.h"

#define SLM_RMS_EPS    1e-5f
#define SLM_ROPE_THETA 10000.0f

/* Activations of one step. */
typedef struct {
    float *x;      /* (dim) residual stream */
    float *xb;     /* (max(dim, q_dim)) normalised input, attention output */
    float *xb2;    /* (dim) partial sum of a row-parallel product */
    float *hb;     /* (hidden) w1 branch, then the SwiGLU output */
    float *hb2;    /* (hidden) w3 branch */
    float *q;      /* (q_dim) queries of this shard's heads */
    float *att;    /* (n_heads, seq_len) attention scores */
    float *logits; /* (vocab_total) full logits, on the last stage */
    float *local_logits; /* (vocab) this shard's rows; aliases logits if tp 1 */
    float *key_cache;    /* (n_layers, seq_len, kv_dim) */
    float *value_cache;  /* (n_layers, seq_len, kv_dim) */
} run_state;

struct slm_transformer {
    const slm_shard_weights_t *w; /* borrowed */
    slm_shard_dims d;
    slm_model_config cfg;
    slm_shard_links links; /* zeroed for a whole model */
    bool first_stage, last_stage;
    size_t *vocab_counts; /* (tp) rows per tensor rank, for the all-gather */
    size_t kv_used; /* cache rows written since the cache was last zeroed */
    run_state s;
};

static slm_status alloc_floats(float **out, size_t a, size_t b, size_t c)
{
    size_t n, bytes;
    if (!slm_size_mul3(a, b, c, &n) || !slm_size_mul(n, sizeof(float), &bytes))
        return slm_fail(SLM_ERR_RANGE,
                        "run state of %zu x %zu x %zu floats overflows", a, b,
                        c);
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

slm_status slm_transformer_create(const slm_shard_weights_t *w,
                                  const slm_shard_links *links,
                                  slm_transformer_t **out)
{
    slm_transformer_t *t = calloc(1, sizeof *t);
    if (!t)
        return slm_fail(SLM_ERR_NOMEM, "out of memory");
    slm_status rc = SLM_OK;
    t->w = w;
    t->d = *slm_shard_weights_dims(w);
    t->cfg = *slm_shard_weights_config(w);
    const slm_shard_slice *slice = slm_shard_weights_slice(w);
    int32_t pp = 1, tp = 1;
    if (links) {
        t->links = *links;
        tp = slm_plan_tp(links->plan);
        pp = slm_plan_pp(links->plan);
        if ((tp > 1 && !links->tp) || (pp > 1 && !links->pp)) {
            rc = slm_fail(SLM_ERR_INVALID,
                          "shard: tp = %d, pp = %d needs "
                          "tensor and pipeline communicators",
                          tp, pp);
            goto fail;
        }
    }
    t->first_stage = slice->stage == 0;
    t->last_stage = slice->stage == pp - 1;
    if (t->first_stage && !slm_shard_weights_embedding(w)) {
        rc = slm_fail(SLM_ERR_INVALID, "shard: first stage without embedding");
        goto fail;
    }
    if (t->last_stage && !slm_shard_weights_classifier(w)) {
        rc = slm_fail(SLM_ERR_INVALID, "shard: last stage without classifier");
        goto fail;
    }

    const slm_shard_dims *d = &t->d;
    run_state *s = &t->s;
    const size_t xb = d->q_dim > d->dim ? d->q_dim : d->dim;
    SLM_CHECK_GOTO(alloc_floats(&s->x, d->dim, 1, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->xb, xb, 1, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->xb2, d->dim, 1, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->hb, d->hidden, 1, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->hb2, d->hidden, 1, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->q, d->q_dim, 1, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->att, d->n_heads, d->seq_len, 1), rc, fail);
    SLM_CHECK_GOTO(
        alloc_floats(&s->key_cache, d->n_layers, d->seq_len, d->kv_dim), rc,
        fail);
    SLM_CHECK_GOTO(
        alloc_floats(&s->value_cache, d->n_layers, d->seq_len, d->kv_dim), rc,
        fail);
    if (t->last_stage) {
        SLM_CHECK_GOTO(alloc_floats(&s->logits, d->vocab_total, 1, 1), rc,
                       fail);
        s->local_logits = s->logits;
        if (tp > 1) {
            SLM_CHECK_GOTO(alloc_floats(&s->local_logits, d->vocab, 1, 1), rc,
                           fail);
            t->vocab_counts = calloc((size_t)tp, sizeof *t->vocab_counts);
            if (!t->vocab_counts) {
                rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
                goto fail;
            }
            /* Shards of one stage are stage * tp + r. */
            for (int32_t r = 0; r < tp; r++)
                t->vocab_counts[r] =
                    (size_t)slm_plan_slice(links->plan, slice->stage * tp + r)
                        ->vocab.count;
        }
    }
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
    if (s->local_logits != s->logits)
        free(s->local_logits);
    free(s->logits);
    free(s->x);
    free(s->xb);
    free(s->xb2);
    free(s->hb);
    free(s->hb2);
    free(s->q);
    free(s->att);
    free(s->key_cache);
    free(s->value_cache);
    free((*tp)->vocab_counts);
    free(*tp);
    *tp = NULL;
}

const slm_model_config *slm_transformer_config(const slm_transformer_t *t)
{
    return &t->cfg;
}

/* Sums a row-parallel product's partial results over the tensor group, in
 * place; nothing to do on a single tensor rank. */
static slm_status tp_all_reduce(slm_transformer_t *t, float *x, size_t n)
{
    if (!t->links.tp || slm_comm_size(t->links.tp) == 1)
        return SLM_OK;
    return slm_comm_all_reduce(x, x, n, SLM_DTYPE_F32, SLM_REDOP_SUM,
                               t->links.tp, NULL);
}

void slm_transformer_reset(slm_transformer_t *t)
{
    const slm_shard_dims *d = &t->d;
    const size_t row = d->kv_dim * sizeof(float);
    for (size_t l = 0; l < d->n_layers && t->kv_used; l++) {
        memset(t->s.key_cache + l * d->seq_len * d->kv_dim, 0,
               t->kv_used * row);
        memset(t->s.value_cache + l * d->seq_len * d->kv_dim, 0,
               t->kv_used * row);
    }
    t->kv_used = 0;
}

size_t slm_transformer_kv_rows_nonzero(const slm_transformer_t *t)
{
    const slm_shard_dims *d = &t->d;
    size_t rows = 0;
    for (size_t p = 0; p < d->seq_len; p++) {
        bool any = false;
        for (size_t l = 0; l < d->n_layers && !any; l++) {
            const size_t at = (l * d->seq_len + p) * d->kv_dim;
            for (size_t i = 0; i < d->kv_dim && !any; i++)
                any = t->s.key_cache[at + i] != 0.0f ||
                      t->s.value_cache[at + i] != 0.0f;
        }
        rows += any;
    }
    return rows;
}

slm_status slm_transformer_forward(slm_transformer_t *t, int32_t token,
                                   int32_t pos, const float **logits)
{
    const slm_shard_dims *d = &t->d;
    *logits = NULL;
    if (token < 0 || (size_t)token >= d->vocab_total)
        return slm_fail(SLM_ERR_RANGE,
                        "token %d is outside the vocabulary [0, %zu)", token,
                        d->vocab_total);
    if (pos < 0 || (size_t)pos >= d->seq_len)
        return slm_fail(SLM_ERR_RANGE,
                        "position %d is outside the context [0, %zu)", pos,
                        d->seq_len);
    const slm_shard_weights_t *w = t->w;
    const slm_shard_slice *slice = slm_shard_weights_slice(w);
    run_state *s = &t->s;
    const size_t dim = d->dim, hidden = d->hidden, head_size = d->head_size;
    const size_t q_dim = d->q_dim, kv_dim = d->kv_dim, seq = d->seq_len;
    const size_t p = (size_t)pos;
    /* A sequence starts at position 0: the previous one's keys and values
     * (another request's, perhaps another tenant's) are wiped first, not
     * just overwritten as far as the new one reaches. */
    if (p == 0)
        slm_transformer_reset(t);
    if (p + 1 > t->kv_used)
        t->kv_used = p + 1;

    /* the residual stream enters: the token's embedding row (held by one
     * tensor rank, zeros elsewhere, summed), or the previous stage's output */
    if (t->first_stage) {
        size_t row = (size_t)token - (size_t)slice->vocab.begin;
        if ((size_t)token >= (size_t)slice->vocab.begin && row < d->vocab)
            memcpy(s->x, slm_shard_weights_embedding(w) + row * dim,
                   dim * sizeof(float));
        else
            memset(s->x, 0, dim * sizeof(float));
        SLM_CHECK(tp_all_reduce(t, s->x, dim));
    } else {
        SLM_CHECK(slm_comm_recv(s->x, dim, SLM_DTYPE_F32, slice->stage - 1,
                                t->links.pp, NULL));
    }

    for (size_t l = 0; l < d->n_layers; l++) {
        const slm_layer_weights *lw = slm_shard_weights_layer(w, l);

        /* attention: rmsnorm, q/k/v for this shard's heads, rotary */
        slm_cpu_rmsnorm(s->xb, s->x, lw->rms_att, dim, SLM_RMS_EPS);
        /* k and v go straight into this position's cache row */
        float *k = s->key_cache + (l * seq + p) * kv_dim;   /* (kv_dim) */
        float *v = s->value_cache + (l * seq + p) * kv_dim; /* (kv_dim) */
        slm_cpu_matvec(s->q, lw->wq, s->xb, q_dim, dim);
        slm_cpu_matvec(k, lw->wk, s->xb, kv_dim, dim);
        slm_cpu_matvec(v, lw->wv, s->xb, kv_dim, dim);
        slm_cpu_rope(s->q, d->n_heads, head_size, p, SLM_ROPE_THETA);
        slm_cpu_rope(k, d->n_kv_heads, head_size, p, SLM_ROPE_THETA);

        /* grouped-query attention over positions 0..pos of this layer */
        slm_cpu_attention(s->xb, s->q, s->key_cache + l * seq * kv_dim,
                          s->value_cache + l * seq * kv_dim, s->att, seq,
                          d->n_heads, d->n_kv_heads, head_size, kv_dim, p);

        /* output projection over this shard's head columns, summed over the
         * tensor group, then the residual connection */
        slm_cpu_matvec(s->xb2, lw->wo, s->xb, dim, q_dim);
        SLM_CHECK(tp_all_reduce(t, s->xb2, dim));
        slm_cpu_add(s->x, s->xb2, dim);

        /* feed-forward: rmsnorm, w2(silu(w1 x) * w3 x) over this shard's
         * hidden units, summed over the tensor group, residual */
        slm_cpu_rmsnorm(s->xb, s->x, lw->rms_ffn, dim, SLM_RMS_EPS);
        slm_cpu_matvec(s->hb, lw->w1, s->xb, hidden, dim);
        slm_cpu_matvec(s->hb2, lw->w3, s->xb, hidden, dim);
        slm_cpu_swiglu(s->hb, s->hb2, hidden);
        slm_cpu_matvec(s->xb2, lw->w2, s->hb, dim, hidden);
        SLM_CHECK(tp_all_reduce(t, s->xb2, dim));
        slm_cpu_add(s->x, s->xb2, dim);
    }

    if (!t->last_stage)
        return slm_comm_send(s->x, dim, SLM_DTYPE_F32, slice->stage + 1,
                             t->links.pp, NULL);

    /* final norm, this shard's classifier rows, then all the logits */
    slm_cpu_rmsnorm(s->x, s->x, slm_shard_weights_rms_final(w), dim,
                    SLM_RMS_EPS);
    slm_cpu_matvec(s->local_logits, slm_shard_weights_classifier(w), s->x,
                   d->vocab, dim);
    if (s->local_logits != s->logits)
        SLM_CHECK(slm_comm_all_gather_v(s->local_logits, d->vocab, s->logits,
                                        t->vocab_counts, SLM_DTYPE_F32,
                                        t->links.tp, NULL));
    *logits = s->logits;
    return SLM_OK;
}
