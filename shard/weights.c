/* shard/weights.c - a shard's slice of the model; see weights.h. */
#include "shard/weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/checked.h"
#include "common/hugemem.h"
#include "kernels/kernels.h"

struct slm_shard_weights {
    slm_shard_slice slice;
    slm_model_config cfg;
    slm_shard_dims dims;
    slm_layer_weights *layers; /* (n_layers) */
    const float *embedding;    /* (vocab, dim) or NULL */
    const float *rms_final;    /* (dim) or NULL */
    const float *classifier;   /* (vocab, dim) or NULL */
    slm_hugemem mem;           /* the copied pieces */
    slm_hugemem q8;            /* int8 matrices and scales, if quantized */
    slm_q8_matrix classifier_q8;
    slm_hugemem h16; /* 16-bit matrices and embedding (SLM_SLICE_BF16/F16) */
    slm_h16_matrix embedding_h16, classifier_h16;
    bool half;
    slm_half_type half_type;
    size_t bytes;          /* all pieces */
    size_t copied;         /* pieces in mem */
    bool panels;           /* matrices packed (SLM_SLICE_PANELS) */
    bool embedding_panels; /* the embedding too: it is the classifier */
};

slm_shard_slice slm_shard_slice_whole(const slm_model_config *c)
{
    slm_shard_slice s = {
        .stage = 0,
        .tp_rank = 0,
        .layers = {0, c->n_layers},
        .heads = {0, c->n_heads},
        .kv_heads = {0, c->n_kv_heads},
        .hidden = {0, c->hidden_dim},
        .vocab = {0, c->vocab_size},
        .kv_replicas = 1,
    };
    return s;
}

/* One piece of a tensor: rows [row0, row0 + rows) and columns
 * [col0, col0 + cols) of the (R, C) matrix of `layer`. */
typedef struct {
    slm_tensor_id id;
    size_t layer, row0, rows, col0, cols;
    const float **dst;
    bool packed; /* copied into panels (slm_cpu_pack_panels) */
    /* SLM_SLICE_INT8: quantized from the file into here, no float copy */
    slm_q8_matrix *q8;
    /* SLM_SLICE_BF16/F16: rounded to 16 bits into here, no float copy */
    slm_h16_matrix *h16;
} piece;

/* Pieces are planned first, so the sizes are summed, checked and allocated
 * once before any byte is copied. */
typedef struct {
    piece *items;
    size_t n, cap;
} piece_list;

static slm_status add_piece(piece_list *l, piece p)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        piece *items = realloc(l->items, cap * sizeof *items);
        if (!items)
            return slm_fail(SLM_ERR_NOMEM, "shard weights: out of memory");
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = p;
    return SLM_OK;
}

/* The matrices a product reads: packed in SLM_SLICE_PANELS. The norms are
 * vectors, and the embedding is read a row at a time (unless it is also the
 * classifier). */
static bool is_matrix(slm_tensor_id id)
{
    switch (id) {
    case SLM_TENSOR_WQ:
    case SLM_TENSOR_WK:
    case SLM_TENSOR_WV:
    case SLM_TENSOR_WO:
    case SLM_TENSOR_W1:
    case SLM_TENSOR_W2:
    case SLM_TENSOR_W3:
    case SLM_TENSOR_WCLS:
        return true;
    default:
        return false;
    }
}

/* Floats a piece takes in the copy: its rows and columns, or its panels,
 * rounded up to 64 bytes so that every piece starts aligned. */
static bool copy_floats(const piece *p, size_t *out)
{
    size_t n;
    if (p->packed ? !slm_cpu_panels_floats(p->rows, p->cols, &n)
                  : !slm_size_mul(p->rows, p->cols, &n))
        return false;
    return slm_size_add(n, 15, &n) && ((*out = n & ~(size_t)15), true);
}

/* Where a matrix of a layer goes in int8. */
static slm_q8_matrix *q8_field(slm_layer_weights *lw, slm_tensor_id id)
{
    switch (id) {
    case SLM_TENSOR_WQ:
        return &lw->q_wq;
    case SLM_TENSOR_WK:
        return &lw->q_wk;
    case SLM_TENSOR_WV:
        return &lw->q_wv;
    case SLM_TENSOR_WO:
        return &lw->q_wo;
    case SLM_TENSOR_W1:
        return &lw->q_w1;
    case SLM_TENSOR_W2:
        return &lw->q_w2;
    case SLM_TENSOR_W3:
        return &lw->q_w3;
    default:
        return NULL;
    }
}

/* Where a matrix of a layer goes in 16 bits. */
static slm_h16_matrix *h16_field(slm_layer_weights *lw, slm_tensor_id id)
{
    switch (id) {
    case SLM_TENSOR_WQ:
        return &lw->h_wq;
    case SLM_TENSOR_WK:
        return &lw->h_wk;
    case SLM_TENSOR_WV:
        return &lw->h_wv;
    case SLM_TENSOR_WO:
        return &lw->h_wo;
    case SLM_TENSOR_W1:
        return &lw->h_w1;
    case SLM_TENSOR_W2:
        return &lw->h_w2;
    case SLM_TENSOR_W3:
        return &lw->h_w3;
    default:
        return NULL;
    }
}

/* Bytes of a (rows, cols) matrix in 16 bits, rounded up to 64 bytes;
 * false on overflow. */
static bool h16_bytes(size_t rows, size_t cols, size_t *out)
{
    size_t n;
    return slm_size_mul(rows, cols, &n) && slm_size_mul(n, 2, &n) &&
           slm_size_add(n, 63, &n) && ((*out = n & ~(size_t)63), true);
}

/* Bytes of a (rows, cols) matrix in int8 with its scales, each part
 * rounded up to 64 bytes; false on overflow. */
static bool q8_bytes(size_t rows, size_t cols, size_t *out)
{
    size_t q, sc;
    return slm_size_mul(rows, cols, &q) && slm_size_add(q, 63, &q) &&
           slm_size_mul(rows, sizeof(float), &sc) &&
           slm_size_add(sc, 63, &sc) &&
           slm_size_add(q & ~(size_t)63, sc & ~(size_t)63, out);
}

/* Quantizes rows (each of cols floats, row r at w + r * ldw) into *at,
 * moving *at past them; refuses a non-finite weight, whose conversion to
 * int would be undefined. */
static slm_status quantize_into(uint8_t **at, slm_q8_matrix *dst,
                                const float *w, size_t rows, size_t cols,
                                size_t ldw, const char *what)
{
    int8_t *q = (int8_t *)*at;
    float *scale = (float *)(*at + ((rows * cols + 63) & ~(size_t)63));
    for (size_t r = 0; r < rows; r++) {
        const float *row = w + r * ldw;
        for (size_t j = 0; j < cols; j++)
            if (!isfinite(row[j]))
                return slm_fail(SLM_ERR_FORMAT,
                                "int8: %s holds a non-finite weight (row "
                                "%zu, column %zu); int8 needs finite weights",
                                what, r, j);
        slm_cpu_quantize_q8(q + r * cols, scale + r, row, 1, cols);
    }
    *dst = (slm_q8_matrix){q, scale};
    size_t n = 0;
    (void)q8_bytes(rows, cols, &n); /* summed with checks by the caller */
    *at += n;
    return SLM_OK;
}

/* A piece is one run of the file when it spans whole rows of a float32
 * file (a Hugging Face model's tensors are converted as they are read). */
static bool contiguous(const slm_checkpoint_t *ck, const piece *p)
{
    return p->col0 == 0 &&
           p->cols == slm_checkpoint_tensor_info(ck, p->id)->cols &&
           slm_checkpoint_tensor(ck, p->id, p->layer) != NULL;
}

/* Rejects a slice that does not fit the model: plans are built by our code,
 * but the checks are cheap and keep a bad plan from reading out of bounds. */
static slm_status check_slice(const slm_model_config *c,
                              const slm_shard_slice *s)
{
    const struct {
        const char *name;
        slm_range r;
        int32_t total;
    } rs[] = {
        {"layers", s->layers, c->n_layers},
        {"heads", s->heads, c->n_heads},
        {"kv_heads", s->kv_heads, c->n_kv_heads},
        {"hidden", s->hidden, c->hidden_dim},
        {"vocab", s->vocab, c->vocab_size},
    };
    for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++) {
        slm_range r = rs[i].r;
        if (r.begin < 0 || r.count < 1 || r.begin > rs[i].total - r.count)
            return slm_fail(SLM_ERR_INVALID,
                            "shard slice: %s [%d, +%d) is outside [0, %d)",
                            rs[i].name, r.begin, r.count, rs[i].total);
    }
    return SLM_OK;
}

slm_status slm_shard_weights_load(const slm_checkpoint_t *ck,
                                  const slm_shard_slice *slice, bool embed,
                                  bool classify, slm_slice_mode mode,
                                  slm_shard_weights_t **out)
{
    const slm_model_config *c = slm_checkpoint_config(ck);
    SLM_CHECK(check_slice(c, slice));
    slm_shard_weights_t *w = calloc(1, sizeof *w);
    if (!w)
        return slm_fail(SLM_ERR_NOMEM, "shard weights: out of memory");
    piece_list pl = {0};
    float *scratch = NULL;
    slm_status rc = SLM_OK;
    w->slice = *slice;
    w->cfg = *c;
    const size_t hs = (size_t)c->head_size, dim = (size_t)c->dim;
    slm_shard_dims *d = &w->dims;
    d->dim = dim;
    d->head_size = hs;
    d->n_heads = (size_t)slice->heads.count;
    d->n_kv_heads = (size_t)slice->kv_heads.count;
    d->q_dim = d->n_heads * hs;
    d->kv_dim = d->n_kv_heads * hs;
    d->hidden = (size_t)slice->hidden.count;
    d->vocab = (size_t)slice->vocab.count;
    d->vocab_total = (size_t)c->vocab_size;
    d->n_layers = (size_t)slice->layers.count;
    d->seq_len = (size_t)c->seq_len;
    const bool half = mode == SLM_SLICE_BF16 || mode == SLM_SLICE_F16;
    w->half = half;
    w->half_type = mode == SLM_SLICE_F16 ? SLM_HALF_F16 : SLM_HALF_BF16;
    w->layers = calloc(d->n_layers, sizeof *w->layers);
    if (!w->layers) {
        rc = slm_fail(SLM_ERR_NOMEM, "shard weights: out of memory");
        goto fail;
    }

    const size_t q0 = (size_t)slice->heads.begin * hs;
    const size_t kv0 = (size_t)slice->kv_heads.begin * hs;
    const size_t h0 = (size_t)slice->hidden.begin;
    for (size_t l = 0; l < d->n_layers; l++) {
        const size_t gl = (size_t)slice->layers.begin + l; /* file's layer */
        slm_layer_weights *lw = &w->layers[l];
        /* rows [row0, +rows) x columns [col0, +cols) of the file's layer */
#define LAYER_PIECE(id, row0, rows, col0, cols, dst)                           \
    {                                                                          \
        id, gl, row0, rows, col0, cols, dst, false, NULL, NULL                 \
    }
        const piece ps[] = {
            LAYER_PIECE(SLM_TENSOR_RMS_ATT, 0, 1, 0, dim, &lw->rms_att),
            LAYER_PIECE(SLM_TENSOR_WQ, q0, d->q_dim, 0, dim, &lw->wq),
            LAYER_PIECE(SLM_TENSOR_WK, kv0, d->kv_dim, 0, dim, &lw->wk),
            LAYER_PIECE(SLM_TENSOR_WV, kv0, d->kv_dim, 0, dim, &lw->wv),
            LAYER_PIECE(SLM_TENSOR_WO, 0, dim, q0, d->q_dim, &lw->wo),
            LAYER_PIECE(SLM_TENSOR_RMS_FFN, 0, 1, 0, dim, &lw->rms_ffn),
            LAYER_PIECE(SLM_TENSOR_W1, h0, d->hidden, 0, dim, &lw->w1),
            LAYER_PIECE(SLM_TENSOR_W2, 0, dim, h0, d->hidden, &lw->w2),
            LAYER_PIECE(SLM_TENSOR_W3, h0, d->hidden, 0, dim, &lw->w3),
            /* optional (qkv_bias, qk_norm): a head's norm is every head's */
            LAYER_PIECE(SLM_TENSOR_BQ, 0, 1, q0, d->q_dim, &lw->bq),
            LAYER_PIECE(SLM_TENSOR_BK, 0, 1, kv0, d->kv_dim, &lw->bk),
            LAYER_PIECE(SLM_TENSOR_BV, 0, 1, kv0, d->kv_dim, &lw->bv),
            LAYER_PIECE(SLM_TENSOR_Q_NORM, 0, 1, 0, hs, &lw->q_norm),
            LAYER_PIECE(SLM_TENSOR_K_NORM, 0, 1, 0, hs, &lw->k_norm),
        };
#undef LAYER_PIECE
        for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
            piece p = ps[i];
            if (slm_checkpoint_tensor_info(ck, p.id)->layers == 0)
                continue; /* not in this architecture: stays NULL */
            if (mode == SLM_SLICE_INT8)
                p.q8 = q8_field(lw, p.id);
            if (half)
                p.h16 = h16_field(lw, p.id);
            SLM_CHECK_GOTO(add_piece(&pl, p), rc, fail);
        }
    }
    const size_t v0 = (size_t)slice->vocab.begin;
    const bool panels = mode == SLM_SLICE_PANELS;
    w->panels = panels;
    w->embedding_panels = panels && embed && classify && c->shared_classifier;
    if (embed)
        SLM_CHECK_GOTO(
            add_piece(&pl, (piece){SLM_TENSOR_TOKEN_EMBEDDING, 0, v0, d->vocab,
                                   0, dim, &w->embedding, w->embedding_panels,
                                   NULL, half ? &w->embedding_h16 : NULL}),
            rc, fail);
    if (classify) {
        SLM_CHECK_GOTO(
            add_piece(&pl, (piece){SLM_TENSOR_RMS_FINAL, 0, 0, 1, 0, dim,
                                   &w->rms_final, false, NULL, NULL}),
            rc, fail);
        /* A shared classifier held with the embedding is the same rows:
         * keep one copy (aliased after the copy loop). */
        if (!(embed && c->shared_classifier))
            SLM_CHECK_GOTO(
                add_piece(
                    &pl,
                    (piece){SLM_TENSOR_WCLS, 0, v0, d->vocab, 0, dim,
                            &w->classifier, false,
                            mode == SLM_SLICE_INT8 ? &w->classifier_q8 : NULL,
                            half ? &w->classifier_h16 : NULL}),
                rc, fail);
    }

    for (size_t i = 0; i < pl.n; i++)
        pl.items[i].packed |= panels && is_matrix(pl.items[i].id);

    /* Size what must be copied, in floats, and quantized, in bytes, with
     * checked arithmetic. A classifier that is the embedding is quantized
     * from the embedding's float copy. */
    const bool q8_shared =
        mode == SLM_SLICE_INT8 && classify && embed && c->shared_classifier;
    size_t total = 0, to_copy = 0, to_quantize = 0, to_half = 0;
    if (q8_shared && !q8_bytes(d->vocab, dim, &to_quantize)) {
        rc = slm_fail(SLM_ERR_RANGE, "shard weights: size overflows");
        goto fail;
    }
    for (size_t i = 0; i < pl.n; i++) {
        const piece *p = &pl.items[i];
        size_t n, room;
        if (!slm_size_mul(p->rows, p->cols, &n) ||
            !slm_size_add(total, n, &total) || !copy_floats(p, &room) ||
            (p->q8 ? !q8_bytes(p->rows, p->cols, &room) ||
                         !slm_size_add(to_quantize, room, &to_quantize)
             : p->h16 ? !h16_bytes(p->rows, p->cols, &room) ||
                            !slm_size_add(to_half, room, &to_half)
                      : !(mode == SLM_SLICE_BORROW && contiguous(ck, p)) &&
                            !slm_size_add(to_copy, room, &to_copy))) {
            rc = slm_fail(SLM_ERR_RANGE, "shard weights: size overflows");
            goto fail;
        }
    }
    if (!slm_size_mul(total, sizeof(float), &w->bytes) ||
        !slm_size_mul(to_copy, sizeof(float), &w->copied) ||
        !slm_size_add(w->copied, to_quantize, &w->copied) ||
        !slm_size_add(w->copied, to_half, &w->copied)) {
        rc = slm_fail(SLM_ERR_RANGE, "shard weights: size overflows");
        goto fail;
    }
    SLM_CHECK_GOTO(
        slm_hugemem_alloc(to_copy * sizeof(float), "shard weights", &w->mem),
        rc, fail);
    if (to_quantize)
        SLM_CHECK_GOTO(slm_hugemem_alloc(to_quantize, "int8 weights", &w->q8),
                       rc, fail);
    uint8_t *q8_next = w->q8.data;
    if (to_half)
        SLM_CHECK_GOTO(slm_hugemem_alloc(to_half, "16-bit weights", &w->h16),
                       rc, fail);
    uint8_t *h16_next = w->h16.data;

    /* A Hugging Face model has no float32 tensors to point into: a piece
     * that is packed or quantized is first read (converted) into scratch
     * the size of the largest such piece; a plain one straight into place. */
    size_t scratch_floats = 0;
    for (size_t i = 0; i < pl.n; i++) {
        const piece *p = &pl.items[i];
        if (!slm_checkpoint_tensor(ck, p->id, p->layer) &&
            (p->packed || p->q8 || p->h16) &&
            p->rows * p->cols > scratch_floats)
            scratch_floats = p->rows * p->cols; /* summed above: no overflow */
    }
    if (scratch_floats &&
        !(scratch = malloc(scratch_floats * sizeof(float)))) {
        rc = slm_fail(SLM_ERR_NOMEM, "shard weights: out of memory");
        goto fail;
    }

    float *next = w->mem.data;
    for (size_t i = 0; i < pl.n; i++) {
        const piece *p = &pl.items[i];
        size_t C = (size_t)slm_checkpoint_tensor_info(ck, p->id)->cols;
        const float *src = slm_checkpoint_tensor(ck, p->id, p->layer);
        if (src) {
            src += p->row0 * C + p->col0;
        } else if (p->packed || p->q8 || p->h16) {
            SLM_CHECK_GOTO(slm_checkpoint_read(ck, p->id, p->layer, p->row0,
                                               p->rows, p->col0, p->cols,
                                               scratch),
                           rc, fail);
            src = scratch;
            C = p->cols;
        } else {
            SLM_CHECK_GOTO(slm_checkpoint_read(ck, p->id, p->layer, p->row0,
                                               p->rows, p->col0, p->cols,
                                               next),
                           rc, fail);
            src = next;
            C = p->cols;
        }
        if (mode == SLM_SLICE_BORROW && contiguous(ck, p)) {
            *p->dst = src;
            continue;
        }
        if (p->q8) {
            char what[64];
            snprintf(what, sizeof what, "tensor %d of layer %zu", (int)p->id,
                     p->layer);
            SLM_CHECK_GOTO(
                quantize_into(&q8_next, p->q8, src, p->rows, p->cols, C, what),
                rc, fail);
            *p->dst = NULL; /* the products read the int8 copy */
            continue;
        }
        if (p->h16) {
            uint16_t *h = (uint16_t *)h16_next;
            for (size_t r = 0; r < p->rows; r++) {
                if (w->half_type == SLM_HALF_F16)
                    slm_cpu_f32_to_f16(h + r * p->cols, src + r * C, p->cols);
                else
                    slm_cpu_f32_to_bf16(h + r * p->cols, src + r * C, p->cols);
            }
            p->h16->w = h;
            *p->dst = NULL; /* the products read the 16-bit copy */
            size_t room = 0;
            (void)h16_bytes(p->rows, p->cols, &room); /* summed above */
            h16_next += room;
            continue;
        }
        if (p->packed)
            slm_cpu_pack_panels(next, src, p->rows, p->cols, C);
        else if (src != next)
            for (size_t r = 0; r < p->rows; r++)
                memcpy(next + r * p->cols, src + r * C,
                       p->cols * sizeof(float));
        *p->dst = next;
        size_t room = 0;
        (void)copy_floats(p, &room); /* summed above without overflow */
        next += room;
    }
    if (classify && embed && c->shared_classifier) {
        w->classifier = w->embedding;
        w->classifier_h16 = w->embedding_h16;
    }
    if (q8_shared)
        SLM_CHECK_GOTO(quantize_into(&q8_next, &w->classifier_q8, w->embedding,
                                     d->vocab, dim, dim, "the classifier"),
                       rc, fail);
    SLM_CHECK_GOTO(slm_hugemem_seal(&w->mem, "shard weights"), rc, fail);
    if (w->q8.data)
        SLM_CHECK_GOTO(slm_hugemem_seal(&w->q8, "int8 weights"), rc, fail);
    if (w->h16.data)
        SLM_CHECK_GOTO(slm_hugemem_seal(&w->h16, "16-bit weights"), rc, fail);
    free(pl.items);
    free(scratch);
    *out = w;
    return SLM_OK;
fail:
    free(pl.items);
    free(scratch);
    slm_shard_weights_destroy(&w);
    return rc;
}

/* Sizes of the matrices quantized, in the order they are laid out. */
typedef struct {
    const float *w;
    slm_q8_matrix *dst;
    size_t rows, cols;
} q8_job;

slm_status slm_shard_weights_quantize(slm_shard_weights_t *w)
{
    const slm_shard_dims *d = &w->dims;
    if (w->q8.data)
        return SLM_OK;
    if (w->panels || w->half)
        return slm_fail(SLM_ERR_INVALID,
                        "quantize: the matrices are %s; load them row by "
                        "row in float32 to quantize",
                        w->half ? "held in 16 bits" : "packed in panels");
    const size_t per_layer = 7, n_jobs = d->n_layers * per_layer + 1;
    q8_job *jobs = calloc(n_jobs, sizeof *jobs);
    if (!jobs)
        return slm_fail(SLM_ERR_NOMEM, "quantize: out of memory");
    size_t n = 0;
    for (size_t l = 0; l < d->n_layers; l++) {
        slm_layer_weights *lw = &w->layers[l];
        jobs[n++] = (q8_job){lw->wq, &lw->q_wq, d->q_dim, d->dim};
        jobs[n++] = (q8_job){lw->wk, &lw->q_wk, d->kv_dim, d->dim};
        jobs[n++] = (q8_job){lw->wv, &lw->q_wv, d->kv_dim, d->dim};
        jobs[n++] = (q8_job){lw->wo, &lw->q_wo, d->dim, d->q_dim};
        jobs[n++] = (q8_job){lw->w1, &lw->q_w1, d->hidden, d->dim};
        jobs[n++] = (q8_job){lw->w2, &lw->q_w2, d->dim, d->hidden};
        jobs[n++] = (q8_job){lw->w3, &lw->q_w3, d->hidden, d->dim};
    }
    if (w->classifier)
        jobs[n++] =
            (q8_job){w->classifier, &w->classifier_q8, d->vocab, d->dim};
    /* One region, laid out as a shard's int8 load lays it out
     * (q8_bytes, quantize_into). */
    size_t total = 0, bytes = 0;
    for (size_t i = 0; i < n; i++)
        if (!q8_bytes(jobs[i].rows, jobs[i].cols, &bytes) ||
            !slm_size_add(total, bytes, &total)) {
            free(jobs);
            return slm_fail(SLM_ERR_RANGE, "quantize: sizes overflow");
        }
    slm_status rc = slm_hugemem_alloc(total, "int8 weights", &w->q8);
    uint8_t *at = w->q8.data;
    for (size_t i = 0; i < n && rc == SLM_OK; i++) {
        char what[64];
        snprintf(what, sizeof what, "matrix %zu of the slice", i);
        rc = quantize_into(&at, jobs[i].dst, jobs[i].w, jobs[i].rows,
                           jobs[i].cols, jobs[i].cols, what);
    }
    if (rc != SLM_OK) {
        /* no pointer into the region outlives it */
        for (size_t i = 0; i < n; i++)
            *jobs[i].dst = (slm_q8_matrix){NULL, NULL};
        slm_hugemem_free(&w->q8);
    }
    free(jobs);
    return rc != SLM_OK ? rc : slm_hugemem_seal(&w->q8, "int8 weights");
}

slm_q8_matrix slm_shard_weights_classifier_q8(const slm_shard_weights_t *w)
{
    return w->classifier_q8;
}

bool slm_shard_weights_half(const slm_shard_weights_t *w, slm_half_type *type)
{
    if (w->half && type)
        *type = w->half_type;
    return w->half;
}

slm_h16_matrix slm_shard_weights_embedding_h16(const slm_shard_weights_t *w)
{
    return w->embedding_h16;
}

slm_h16_matrix slm_shard_weights_classifier_h16(const slm_shard_weights_t *w)
{
    return w->classifier_h16;
}

slm_status slm_shard_weights_whole(const slm_checkpoint_t *ck,
                                   slm_shard_weights_t **out)
{
    slm_shard_slice whole = slm_shard_slice_whole(slm_checkpoint_config(ck));
    return slm_shard_weights_load(ck, &whole, true, true, SLM_SLICE_BORROW,
                                  out);
}

const char *slm_weight_format_name(slm_weight_format f)
{
    switch (f) {
    case SLM_WFORMAT_F32:
        return "f32";
    case SLM_WFORMAT_BF16:
        return "bf16";
    case SLM_WFORMAT_F16:
        return "f16";
    case SLM_WFORMAT_INT8:
        return "int8";
    case SLM_WFORMAT_AUTO:
        break;
    }
    return "auto";
}

slm_weight_format slm_weight_format_resolve(slm_weight_format f,
                                            const slm_checkpoint_t *ck)
{
    if (f != SLM_WFORMAT_AUTO)
        return f;
    switch (slm_checkpoint_dtype(ck)) {
    case SLM_WEIGHT_BF16:
        return SLM_WFORMAT_BF16;
    case SLM_WEIGHT_F16:
        return SLM_WFORMAT_F16;
    case SLM_WEIGHT_F32:
        break;
    }
    return SLM_WFORMAT_F32;
}

slm_slice_mode slm_shard_cpu_mode(slm_weight_format f,
                                  const slm_checkpoint_t *ck)
{
    switch (slm_weight_format_resolve(f, ck)) {
    case SLM_WFORMAT_BF16:
        return SLM_SLICE_BF16;
    case SLM_WFORMAT_F16:
        return SLM_SLICE_F16;
    case SLM_WFORMAT_INT8:
        return SLM_SLICE_INT8;
    default:
        return SLM_SLICE_PANELS;
    }
}

slm_status slm_shard_weights_whole_as(const slm_checkpoint_t *ck,
                                      slm_weight_format f,
                                      slm_shard_weights_t **out)
{
    const slm_slice_mode mode = slm_shard_cpu_mode(f, ck);
    if (mode == SLM_SLICE_BF16 || mode == SLM_SLICE_F16) {
        slm_shard_slice whole =
            slm_shard_slice_whole(slm_checkpoint_config(ck));
        return slm_shard_weights_load(ck, &whole, true, true, mode, out);
    }
    SLM_CHECK(slm_shard_weights_whole(ck, out));
    slm_status rc =
        mode == SLM_SLICE_INT8 ? slm_shard_weights_quantize(*out) : SLM_OK;
    if (rc != SLM_OK)
        slm_shard_weights_destroy(out);
    return rc;
}

void slm_shard_weights_destroy(slm_shard_weights_t **w)
{
    if (!w || !*w)
        return;
    slm_hugemem_free(&(*w)->mem);
    slm_hugemem_free(&(*w)->q8);
    slm_hugemem_free(&(*w)->h16);
    free((*w)->layers);
    free(*w);
    *w = NULL;
}

const slm_layer_weights *slm_shard_weights_layer(const slm_shard_weights_t *w,
                                                 size_t layer)
{
    return &w->layers[layer];
}

const slm_shard_dims *slm_shard_weights_dims(const slm_shard_weights_t *w)
{
    return &w->dims;
}

const slm_model_config *slm_shard_weights_config(const slm_shard_weights_t *w)
{
    return &w->cfg;
}

const float *slm_shard_weights_embedding(const slm_shard_weights_t *w)
{
    return w->embedding;
}

const float *slm_shard_weights_rms_final(const slm_shard_weights_t *w)
{
    return w->rms_final;
}

const float *slm_shard_weights_classifier(const slm_shard_weights_t *w)
{
    return w->classifier;
}

bool slm_shard_weights_panels(const slm_shard_weights_t *w)
{
    return w->panels;
}

bool slm_shard_weights_embedding_panels(const slm_shard_weights_t *w)
{
    return w->embedding_panels;
}

const slm_shard_slice *slm_shard_weights_slice(const slm_shard_weights_t *w)
{
    return &w->slice;
}

size_t slm_shard_weights_bytes(const slm_shard_weights_t *w)
{
    return w->bytes;
}

size_t slm_shard_weights_copied_bytes(const slm_shard_weights_t *w)
{
    return w->copied;
}
