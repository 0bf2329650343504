/*
 * shard/transformer.c - the Llama forward pass of one shard, read end to end
 * in slm_transformer_step(), in the manner of llama2.c's run.c but for a
 * batch: every product runs on all the step's tokens at once (weights read
 * once per step), attention runs per token over its own sequence's blocks.
 * Local sizes (heads, kv heads, hidden units, vocabulary rows) are this
 * shard's; dim is the model's, since the residual stream is replicated.
 */
#include "shard/transformer.h"

#include <omp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/checked.h"
#include "kernels/kernels.h"


/* Activations of one step: row i belongs to the step's token i. */
typedef struct {
    float *x;      /* (T, dim) residual stream */
    float *xb;     /* (T, max(dim, q_dim)) normalised input, attention out */
    float *xb2;    /* (T, dim) partial sum of a row-parallel product */
    float *hb;     /* (T, hidden) w1 branch, then the SwiGLU output */
    float *hb2;    /* (T, hidden) w3 branch */
    float *q;      /* (T, q_dim) queries of this shard's heads */
    float *k, *v;  /* (T, kv_dim) this step's keys and values */
    float *att;    /* (threads, seq_len) attention scores, per thread */
    float *xr;     /* (S, dim) the rows whose logits are wanted */
    float *logits; /* (S, vocab_total) full logits, on the last stage */
    float *local_logits; /* (S, vocab) this shard's rows; aliases if tp 1 */
    float *gathered;     /* (S * vocab_total) rank-major, before reordering */
    float *key_pool;     /* (n_layers, n_blocks, block_size, kv_dim) */
    float *value_pool;   /* (n_layers, n_blocks, block_size, kv_dim) */
} run_state;

/* Where each of the step's tokens goes. */
typedef struct {
    size_t pos;            /* its position */
    const uint32_t *table; /* its sequence's block table */
} token_slot;

struct slm_transformer {
    const slm_shard_weights_t *w; /* borrowed */
    slm_shard_dims d;
    slm_model_config cfg;
    slm_kv_config kv;
    slm_shard_links links; /* zeroed for a whole model */
    bool first_stage, last_stage;
    bool panels; /* the float matrices are packed (SLM_SLICE_PANELS) */
    bool half;   /* ... or held in 16 bits, of half_type */
    slm_half_type half_type;
    int32_t tp;
    size_t *vocab_counts;  /* (tp) rows per tensor rank, for the all-gather */
    size_t *gather_counts; /* (tp) the same times the rows gathered */
    size_t threads;        /* att rows: omp_get_max_threads() at creation */
    token_slot *slots;     /* (max_tokens) */
    int32_t *tokens;       /* (max_tokens) */
    uint8_t *in_use;       /* (n_blocks) scratch: blocks named in a step */
    /* slm_transformer_forward's single sequence: blocks 0, 1, ... */
    uint32_t *identity;   /* (blocks per sequence) */
    float *rope_freqs;    /* (head_size / 2) the model's rotary frequencies */
    size_t single_blocks; /* of them written since last zeroed */
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

static size_t blocks_for(size_t positions, size_t block_size)
{
    return (positions + block_size - 1) / block_size;
}

slm_status slm_kv_config_resolve(const slm_kv_config *in, size_t seq_len,
                                 slm_kv_config *out)
{
    slm_kv_config k = in ? *in : (slm_kv_config){0};
    if (!k.block_size)
        k.block_size = SLM_KV_DEFAULT_BLOCK;
    if (!k.max_seqs)
        k.max_seqs = 1;
    if (!k.max_tokens)
        k.max_tokens = k.max_seqs;
    const size_t per_seq = k.block_size <= SLM_KV_MAX_BLOCK
                               ? blocks_for(seq_len, k.block_size)
                               : 0;
    if (!k.n_blocks && !slm_size_mul(per_seq, k.max_seqs, &k.n_blocks))
        k.n_blocks = SIZE_MAX; /* refused below */
    if (k.block_size > SLM_KV_MAX_BLOCK || k.max_seqs > SLM_KV_MAX_SEQS ||
        k.max_tokens > SLM_KV_MAX_TOKENS || k.max_tokens < k.max_seqs ||
        k.n_blocks > SLM_KV_MAX_BLOCKS || k.n_blocks < per_seq)
        return slm_fail(SLM_ERR_RANGE,
                        "KV configuration: block size %zu (1..%d), %zu "
                        "sequences per step (1..%d), %zu tokens per step "
                        "(%zu..%d), %zu blocks (%zu, one whole sequence, to "
                        "%d)",
                        k.block_size, SLM_KV_MAX_BLOCK, k.max_seqs,
                        SLM_KV_MAX_SEQS, k.max_tokens, k.max_seqs,
                        SLM_KV_MAX_TOKENS, k.n_blocks, per_seq,
                        SLM_KV_MAX_BLOCKS);
    *out = k;
    return SLM_OK;
}

slm_status slm_transformer_create(const slm_shard_weights_t *w,
                                  const slm_shard_links *links,
                                  slm_transformer_t **out)
{
    return slm_transformer_create_ex(w, links, NULL, out);
}

slm_status slm_transformer_create_ex(const slm_shard_weights_t *w,
                                     const slm_shard_links *links,
                                     const slm_kv_config *kv,
                                     slm_transformer_t **out)
{
    *out = NULL;
    slm_transformer_t *t = calloc(1, sizeof *t);
    if (!t)
        return slm_fail(SLM_ERR_NOMEM, "out of memory");
    slm_status rc = SLM_OK;
    t->w = w;
    t->d = *slm_shard_weights_dims(w);
    t->cfg = *slm_shard_weights_config(w);
    const slm_shard_dims *d = &t->d;
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
    t->tp = tp;
    t->first_stage = slice->stage == 0;
    t->panels = slm_shard_weights_panels(w);
    t->half = slm_shard_weights_half(w, &t->half_type);
    t->last_stage = slice->stage == pp - 1;
    if (t->first_stage && !slm_shard_weights_embedding(w) &&
        !slm_shard_weights_embedding_h16(w).w) {
        rc = slm_fail(SLM_ERR_INVALID, "shard: first stage without embedding");
        goto fail;
    }
    if (t->last_stage && !slm_shard_weights_classifier(w) &&
        !slm_shard_weights_classifier_q8(w).q &&
        !slm_shard_weights_classifier_h16(w).w) {
        rc = slm_fail(SLM_ERR_INVALID, "shard: last stage without classifier");
        goto fail;
    }

    slm_kv_config k;
    SLM_CHECK_GOTO(slm_kv_config_resolve(kv, d->seq_len, &k), rc, fail);
    t->kv = k;
    const size_t per_seq = blocks_for(d->seq_len, k.block_size);

    run_state *s = &t->s;
    const size_t T = k.max_tokens, S = k.max_seqs;
    const size_t xb = d->q_dim > d->dim ? d->q_dim : d->dim;
    size_t pool_rows;
    if (!slm_size_mul(k.n_blocks, k.block_size, &pool_rows)) {
        rc = slm_fail(SLM_ERR_RANGE, "shard: KV pool size overflows");
        goto fail;
    }
    t->threads = (size_t)omp_get_max_threads();
    SLM_CHECK_GOTO(alloc_floats(&s->x, T, d->dim, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->xb, T, xb, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->xb2, T, d->dim, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->hb, T, d->hidden, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->hb2, T, d->hidden, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->q, T, d->q_dim, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&t->rope_freqs, d->head_size / 2 + 1, 1, 1),
                   rc, fail);
    slm_model_config_rope_freqs(&t->cfg, t->rope_freqs);
    SLM_CHECK_GOTO(alloc_floats(&s->k, T, d->kv_dim, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->v, T, d->kv_dim, 1), rc, fail);
    SLM_CHECK_GOTO(alloc_floats(&s->att, t->threads, d->seq_len, 1), rc, fail);
    SLM_CHECK_GOTO(
        alloc_floats(&s->key_pool, d->n_layers, pool_rows, d->kv_dim), rc,
        fail);
    SLM_CHECK_GOTO(
        alloc_floats(&s->value_pool, d->n_layers, pool_rows, d->kv_dim), rc,
        fail);
    t->slots = calloc(T, sizeof *t->slots);
    t->tokens = calloc(T, sizeof *t->tokens);
    t->in_use = calloc(k.n_blocks, 1);
    t->identity = calloc(per_seq, sizeof *t->identity);
    if (!t->slots || !t->tokens || !t->in_use || !t->identity) {
        rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < per_seq; i++)
        t->identity[i] = (uint32_t)i;
    if (t->last_stage) {
        SLM_CHECK_GOTO(alloc_floats(&s->xr, S, d->dim, 1), rc, fail);
        SLM_CHECK_GOTO(alloc_floats(&s->logits, S, d->vocab_total, 1), rc,
                       fail);
        s->local_logits = s->logits;
        if (tp > 1) {
            SLM_CHECK_GOTO(alloc_floats(&s->local_logits, S, d->vocab, 1), rc,
                           fail);
            SLM_CHECK_GOTO(alloc_floats(&s->gathered, S, d->vocab_total, 1), rc,
                           fail);
            t->vocab_counts = calloc((size_t)tp, sizeof *t->vocab_counts);
            t->gather_counts = calloc((size_t)tp, sizeof *t->gather_counts);
            if (!t->vocab_counts || !t->gather_counts) {
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
    slm_transformer_t *t = *tp;
    run_state *s = &t->s;
    if (s->local_logits != s->logits)
        free(s->local_logits);
    float *bufs[] = {s->logits, s->gathered, s->xr,       s->x,         s->xb,
                     s->xb2,    s->hb,       s->hb2,      s->q,         s->k,
                     s->v,      s->att,      s->key_pool, s->value_pool,
                     t->rope_freqs};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    free(t->vocab_counts);
    free(t->gather_counts);
    free(t->slots);
    free(t->tokens);
    free(t->in_use);
    free(t->identity);
    free(t);
    *tp = NULL;
}

const slm_model_config *slm_transformer_config(const slm_transformer_t *t)
{
    return &t->cfg;
}

const slm_kv_config *slm_transformer_kv(const slm_transformer_t *t)
{
    return &t->kv;
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

/* out(n, rows) = x(n, cols) W^T, from the int8 or 16-bit copy when there
 * is one; w is packed in panels when the shard loaded it so. */
static void matmul(const slm_transformer_t *t, float *out, const float *w,
                   slm_q8_matrix q, slm_h16_matrix h, const float *x, size_t n,
                   size_t rows, size_t cols)
{
    if (q.q)
        slm_cpu_matmul_q8(out, q.q, q.scale, x, n, rows, cols);
    else if (h.w)
        slm_cpu_matmul_h16(out, h.w, t->half_type, x, n, rows, cols);
    else if (t->panels)
        slm_cpu_matmul_panels(out, w, x, n, rows, cols);
    else
        slm_cpu_matmul(out, w, x, n, rows, cols);
}

/* Each token's embedding row, zeros for tokens outside this shard's
 * vocabulary slice (another tensor rank holds them). */
static void embed(const slm_transformer_t *t, float *out, size_t n)
{
    const slm_shard_weights_t *w = t->w;
    const size_t begin = (size_t)slm_shard_weights_slice(w)->vocab.begin;
    const float *table = slm_shard_weights_embedding(w);
    const uint16_t *half = slm_shard_weights_embedding_h16(w).w;
    if (half) {
        const size_t dim = t->d.dim;
        for (size_t i = 0; i < n; i++) {
            const size_t id = (size_t)t->tokens[i]; /* checked, as below */
            float *row = out + i * dim;
            if (id < begin || id - begin >= t->d.vocab)
                memset(row, 0, dim * sizeof *row);
            else if (t->half_type == SLM_HALF_F16)
                slm_cpu_f16_to_f32(row, half + (id - begin) * dim, dim);
            else
                slm_cpu_bf16_to_f32(row, half + (id - begin) * dim, dim);
        }
        return;
    }
    if (!slm_shard_weights_embedding_panels(w)) {
        slm_cpu_embedding_slice(out, table, t->tokens, n, begin, t->d.vocab,
                                t->d.dim);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        /* tokens were checked against the whole vocabulary */
        const size_t id = (size_t)t->tokens[i];
        if (id >= begin && id - begin < t->d.vocab)
            slm_cpu_panels_row(out + i * t->d.dim, table, t->d.vocab, t->d.dim,
                               id - begin);
        else
            memset(out + i * t->d.dim, 0, t->d.dim * sizeof *out);
    }
}

/* The cache row of position pos of a sequence with block table `table`, in
 * the pool of one layer. */
static size_t pool_row(const slm_transformer_t *t, const uint32_t *table,
                       size_t pos)
{
    const size_t bs = t->kv.block_size;
    return (size_t)table[pos / bs] * bs + pos % bs;
}

static void zero_block(slm_transformer_t *t, uint32_t block)
{
    const slm_shard_dims *d = &t->d;
    const size_t bs = t->kv.block_size, layer = t->kv.n_blocks * bs;
    const size_t bytes = bs * d->kv_dim * sizeof(float);
    for (size_t l = 0; l < d->n_layers; l++) {
        const size_t at = (l * layer + (size_t)block * bs) * d->kv_dim;
        memset(t->s.key_pool + at, 0, bytes);
        memset(t->s.value_pool + at, 0, bytes);
    }
}

/* in_use marks of check_step */
enum { BLOCK_WRITTEN = 1, BLOCK_READ = 2 };

/* Everything a step names is checked before a byte of it is used: it came
 * from the coordinator over the wire (wire.c bounded each field; the sizes
 * that only the shard knows, and what the fields mean together, are checked
 * here). On success t->slots and t->tokens hold the flattened tokens and
 * *n_tokens, *n_rows their counts. */

static slm_status check_step(slm_transformer_t *t, const slm_step *st,
                             size_t *n_tokens, size_t *n_rows)
{
    const slm_kv_config *k = &t->kv;
    const size_t seq_len = t->d.seq_len, vocab = t->d.vocab_total;
    if (st->n_seqs > k->max_seqs)
        return slm_fail(SLM_ERR_RANGE,
                        "step: %zu sequences, this shard takes at most %zu",
                        st->n_seqs, k->max_seqs);
    for (size_t i = 0; i < st->n_free; i++)
        if (st->free_blocks[i] >= k->n_blocks)
            return slm_fail(SLM_ERR_RANGE,
                            "step: freed block %u is outside the pool of %zu",
                            st->free_blocks[i], k->n_blocks);
    memset(t->in_use, 0, k->n_blocks);
    size_t n = 0, rows = 0;
    for (size_t i = 0; i < st->n_seqs; i++) {
        const slm_step_seq *q = &st->seqs[i];
        if (q->pos < 0 || q->n_tokens == 0 || (size_t)q->pos >= seq_len ||
            q->n_tokens > seq_len - (size_t)q->pos)
            return slm_fail(SLM_ERR_RANGE,
                            "step: sequence %zu feeds %zu tokens at position "
                            "%d; the context is %zu",
                            i, q->n_tokens, q->pos, seq_len);
        if (q->n_tokens > k->max_tokens - n)
            return slm_fail(SLM_ERR_RANGE,
                            "step: more than %zu tokens, this shard's limit",
                            k->max_tokens);
        const size_t need =
            blocks_for((size_t)q->pos + q->n_tokens, k->block_size);
        if (q->n_blocks < need)
            return slm_fail(SLM_ERR_RANGE,
                            "step: sequence %zu reaches position %zu but its "
                            "block table has %zu blocks of %zu",
                            i, (size_t)q->pos + q->n_tokens - 1, q->n_blocks,
                            k->block_size);
        /* Blocks past `need` are not touched. Those this sequence writes
         * (positions pos .. pos + n_tokens - 1) must be its alone; those
         * before, which it only reads, may be read by others too (a
         * shared prompt prefix), checked once every writer is known. */
        for (size_t b = (size_t)q->pos / k->block_size; b < need; b++) {
            const uint32_t blk = q->blocks[b];
            if (blk >= k->n_blocks || t->in_use[blk])
                return slm_fail(
                    SLM_ERR_RANGE, "step: sequence %zu writes block %u, %s", i,
                    blk,
                    blk >= k->n_blocks ? "outside the pool"
                                       : "which another sequence of the step "
                                         "(or this one) names too");
            t->in_use[blk] = BLOCK_WRITTEN;
        }
        for (size_t j = 0; j < q->n_tokens; j++, n++) {
            if (q->tokens[j] < 0 || (size_t)q->tokens[j] >= vocab)
                return slm_fail(SLM_ERR_RANGE,
                                "token %d is outside the vocabulary [0, %zu)",
                                q->tokens[j], vocab);
            t->tokens[n] = q->tokens[j];
            t->slots[n] = (token_slot){(size_t)q->pos + j, q->blocks};
        }
        rows += q->want_logits;
    }
    /* The blocks only read: never one that a sequence of this step
     * writes, since its reader would see it half-way through the step. */
    for (size_t i = 0; i < st->n_seqs; i++) {
        const slm_step_seq *q = &st->seqs[i];
        for (size_t b = 0; b < (size_t)q->pos / k->block_size; b++) {
            const uint32_t blk = q->blocks[b];
            if (blk >= k->n_blocks || t->in_use[blk] == BLOCK_WRITTEN)
                return slm_fail(SLM_ERR_RANGE,
                                "step: sequence %zu reads block %u, %s", i, blk,
                                blk >= k->n_blocks
                                    ? "outside the pool"
                                    : "which a sequence of the step writes");
            t->in_use[blk] = BLOCK_READ;
        }
    }
    /* Freed blocks are zeroed before the step runs: one that a sequence
     * reads would be read as zeros (a new holder may write one). */
    for (size_t i = 0; i < st->n_free; i++)
        if (t->in_use[st->free_blocks[i]] == BLOCK_READ)
            return slm_fail(SLM_ERR_RANGE,
                            "step: block %u is freed (zeroed) and read in the "
                            "same step",
                            st->free_blocks[i]);
    *n_tokens = n;
    *n_rows = rows;
    return SLM_OK;
}

/* Attention for the step's n tokens, each over its own sequence's
 * positions 0..pos (which this step may have just written): token i's
 * heads read q row i and write xb row i. Pairs (token, head) run in
 * parallel; each thread scores into its own att row. */
static void attention(slm_transformer_t *t, size_t l, size_t n)
{
    const slm_shard_dims *d = &t->d;
    run_state *s = &t->s;
    const size_t layer = l * t->kv.n_blocks * t->kv.block_size * d->kv_dim;
    const size_t pairs = n * d->n_heads;
    size_t work = 0;
    for (size_t i = 0; i < n; i++)
        work += (t->slots[i].pos + 1) * d->n_heads * d->head_size;
        /* att has a row per thread of the team sized at creation */
#pragma omp parallel for schedule(dynamic, 1) if (work >= 4096)                \
    num_threads((int)t->threads)
    for (size_t p = 0; p < pairs; p++) {
        const size_t i = p / d->n_heads, h = p % d->n_heads;
        float *att = s->att + (size_t)omp_get_thread_num() * d->seq_len;
        slm_cpu_attention_paged_head(
            s->xb + i * d->q_dim + h * d->head_size,
            s->q + i * d->q_dim + h * d->head_size, s->key_pool + layer,
            s->value_pool + layer, t->slots[i].table, t->kv.block_size, att,
            d->head_size, d->kv_dim,
            (h / (d->n_heads / d->n_kv_heads)) * d->head_size, t->slots[i].pos);
    }
}

slm_status slm_transformer_step(slm_transformer_t *t, const slm_step *st,
                                const float **logits, size_t *rows)
{
    const slm_shard_dims *d = &t->d;
    *logits = NULL;
    *rows = 0;
    size_t n = 0, n_rows = 0;
    SLM_CHECK(check_step(t, st, &n, &n_rows));
    /* Freed blocks are wiped first: the sequence that had them has ended,
     * and the next to get them may be another tenant's. */
    for (size_t i = 0; i < st->n_free; i++)
        zero_block(t, st->free_blocks[i]);
    if (n == 0)
        return SLM_OK; /* a step that only frees */

    const slm_shard_weights_t *w = t->w;
    const slm_shard_slice *slice = slm_shard_weights_slice(w);
    run_state *s = &t->s;
    const size_t dim = d->dim, hidden = d->hidden, head_size = d->head_size;
    const size_t q_dim = d->q_dim, kv_dim = d->kv_dim;
    const size_t layer_rows = t->kv.n_blocks * t->kv.block_size;
    const float eps = t->cfg.rms_norm_eps;

    /* the residual stream enters: each token's embedding row (held by one
     * tensor rank, zeros elsewhere, summed), or the previous stage's output */
    if (t->first_stage) {
        embed(t, s->x, n);
        SLM_CHECK(tp_all_reduce(t, s->x, n * dim));
    } else {
        SLM_CHECK(slm_comm_recv(s->x, n * dim, SLM_DTYPE_F32, slice->stage - 1,
                                t->links.pp, NULL));
    }

    for (size_t l = 0; l < d->n_layers; l++) {
        const slm_layer_weights *lw = slm_shard_weights_layer(w, l);
        float *kpool = s->key_pool + l * layer_rows * kv_dim;
        float *vpool = s->value_pool + l * layer_rows * kv_dim;

        /* attention: rmsnorm, q/k/v for this shard's heads, rotary, and
         * each token's k and v into its sequence's cache row */
        for (size_t i = 0; i < n; i++)
            slm_cpu_rmsnorm(s->xb + i * dim, s->x + i * dim, lw->rms_att, dim,
                            eps);
        matmul(t, s->q, lw->wq, lw->q_wq, lw->h_wq, s->xb, n, q_dim, dim);
        matmul(t, s->k, lw->wk, lw->q_wk, lw->h_wk, s->xb, n, kv_dim, dim);
        matmul(t, s->v, lw->wv, lw->q_wv, lw->h_wv, s->xb, n, kv_dim, dim);
        for (size_t i = 0; i < n; i++) {
            const size_t pos = t->slots[i].pos;
            const size_t row = pool_row(t, t->slots[i].table, pos);
            if (lw->bq) { /* Qwen2 */
                slm_cpu_add(s->q + i * q_dim, lw->bq, q_dim);
                slm_cpu_add(s->k + i * kv_dim, lw->bk, kv_dim);
                slm_cpu_add(s->v + i * kv_dim, lw->bv, kv_dim);
            }
            if (lw->q_norm) { /* Qwen3: each head normalized, then rotated */
                for (size_t h = 0; h < d->n_heads; h++) {
                    float *qh = s->q + i * q_dim + h * head_size;
                    slm_cpu_rmsnorm(qh, qh, lw->q_norm, head_size, eps);
                }
                for (size_t h = 0; h < d->n_kv_heads; h++) {
                    float *kh = s->k + i * kv_dim + h * head_size;
                    slm_cpu_rmsnorm(kh, kh, lw->k_norm, head_size, eps);
                }
            }
            slm_cpu_rope(s->q + i * q_dim, d->n_heads, head_size, pos,
                         t->rope_freqs);
            slm_cpu_rope(s->k + i * kv_dim, d->n_kv_heads, head_size, pos,
                         t->rope_freqs);
            memcpy(kpool + row * kv_dim, s->k + i * kv_dim,
                   kv_dim * sizeof(float));
            memcpy(vpool + row * kv_dim, s->v + i * kv_dim,
                   kv_dim * sizeof(float));
        }

        /* grouped-query attention, each token over its own positions */
        attention(t, l, n);

        /* output projection over this shard's head columns, summed over the
         * tensor group, then the residual connection */
        matmul(t, s->xb2, lw->wo, lw->q_wo, lw->h_wo, s->xb, n, dim, q_dim);
        SLM_CHECK(tp_all_reduce(t, s->xb2, n * dim));
        slm_cpu_add(s->x, s->xb2, n * dim);

        /* feed-forward: rmsnorm, w2(silu(w1 x) * w3 x) over this shard's
         * hidden units, summed over the tensor group, residual */
        for (size_t i = 0; i < n; i++)
            slm_cpu_rmsnorm(s->xb + i * dim, s->x + i * dim, lw->rms_ffn, dim,
                            eps);
        matmul(t, s->hb, lw->w1, lw->q_w1, lw->h_w1, s->xb, n, hidden, dim);
        matmul(t, s->hb2, lw->w3, lw->q_w3, lw->h_w3, s->xb, n, hidden, dim);
        slm_cpu_swiglu(s->hb, s->hb2, n * hidden);
        matmul(t, s->xb2, lw->w2, lw->q_w2, lw->h_w2, s->hb, n, dim, hidden);
        SLM_CHECK(tp_all_reduce(t, s->xb2, n * dim));
        slm_cpu_add(s->x, s->xb2, n * dim);
    }

    if (!t->last_stage)
        return slm_comm_send(s->x, n * dim, SLM_DTYPE_F32, slice->stage + 1,
                             t->links.pp, NULL);
    if (n_rows == 0)
        return SLM_OK;

    /* final norm of the last token of each sequence that wants logits, this
     * shard's classifier rows for them, then all the logits */
    size_t row = 0, at = 0;
    for (size_t i = 0; i < st->n_seqs; i++) {
        at += st->seqs[i].n_tokens;
        if (st->seqs[i].want_logits)
            slm_cpu_rmsnorm(s->xr + row++ * dim, s->x + (at - 1) * dim,
                            slm_shard_weights_rms_final(w), dim, eps);
    }
    matmul(t, s->local_logits, slm_shard_weights_classifier(w),
           slm_shard_weights_classifier_q8(w),
           slm_shard_weights_classifier_h16(w), s->xr, n_rows, d->vocab, dim);
    if (s->local_logits != s->logits) {
        /* The gather is rank-major (each rank's rows x its slice); the
         * result is row-major (each row's whole vocabulary). */
        for (int32_t r = 0; r < t->tp; r++)
            t->gather_counts[r] = t->vocab_counts[r] * n_rows;
        SLM_CHECK(slm_comm_all_gather_v(s->local_logits, d->vocab * n_rows,
                                        s->gathered, t->gather_counts,
                                        SLM_DTYPE_F32, t->links.tp, NULL));
        size_t begin = 0;
        for (int32_t r = 0; r < t->tp; r++) {
            const size_t vr = t->vocab_counts[r];
            for (size_t i = 0; i < n_rows; i++)
                memcpy(s->logits + i * d->vocab_total + begin,
                       s->gathered + begin * n_rows + i * vr,
                       vr * sizeof(float));
            begin += vr;
        }
    }
    *logits = s->logits;
    *rows = n_rows;
    return SLM_OK;
}

slm_status slm_transformer_forward(slm_transformer_t *t, int32_t token,
                                   int32_t pos, const float **logits)
{
    *logits = NULL;
    if (token < 0 || (size_t)token >= t->d.vocab_total)
        return slm_fail(SLM_ERR_RANGE,
                        "token %d is outside the vocabulary [0, %zu)", token,
                        t->d.vocab_total);
    if (pos < 0 || (size_t)pos >= t->d.seq_len)
        return slm_fail(SLM_ERR_RANGE,
                        "position %d is outside the context [0, %zu)", pos,
                        t->d.seq_len);
    /* One sequence in blocks 0, 1, ...: a new one (position 0) first wipes
     * what the last one wrote, as a freed sequence's blocks are wiped. */
    slm_step_seq q = {.tokens = &token,
                      .n_tokens = 1,
                      .pos = pos,
                      .blocks = t->identity,
                      .n_blocks = blocks_for(t->d.seq_len, t->kv.block_size),
                      .want_logits = true};
    slm_step st = {.seqs = &q, .n_seqs = 1};
    if (pos == 0) {
        st.free_blocks = t->identity;
        st.n_free = t->single_blocks;
        t->single_blocks = 0;
    }
    const size_t used = blocks_for((size_t)pos + 1, t->kv.block_size);
    if (used > t->single_blocks)
        t->single_blocks = used;
    size_t rows = 0;
    return slm_transformer_step(t, &st, logits, &rows);
}

void slm_transformer_reset(slm_transformer_t *t)
{
    for (size_t b = 0; b < t->kv.n_blocks; b++)
        zero_block(t, (uint32_t)b);
    t->single_blocks = 0;
}

size_t slm_transformer_kv_blocks_nonzero(const slm_transformer_t *t)
{
    const slm_shard_dims *d = &t->d;
    const size_t bs = t->kv.block_size, layer = t->kv.n_blocks * bs;
    size_t blocks = 0;
    for (size_t b = 0; b < t->kv.n_blocks; b++) {
        bool any = false;
        for (size_t l = 0; l < d->n_layers && !any; l++) {
            const size_t at = (l * layer + b * bs) * d->kv_dim;
            for (size_t i = 0; i < bs * d->kv_dim && !any; i++)
                any = t->s.key_pool[at + i] != 0.0f ||
                      t->s.value_pool[at + i] != 0.0f;
        }
        blocks += any;
    }
    return blocks;
}
