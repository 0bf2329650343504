/*
 * shard/weights.h - the weights one shard holds: its slice of every tensor of
 * its layers, copied out of a validated checkpoint into private memory.
 *
 * Row-parallel pieces (rows of wq, wk, wv, w1, w3, embedding and classifier
 * rows) are contiguous runs of the file's rows; column-parallel pieces (the
 * columns of wo and w2 that multiply this shard's heads and hidden units) are
 * gathered row by row. Only the touched pages of the file are ever read.
 */
#ifndef SLM_SHARD_WEIGHTS_H
#define SLM_SHARD_WEIGHTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/kernels.h"
#include "model/checkpoint.h"
#include "model/plan.h"

/* A matrix quantized to int8 per output channel (slm_cpu_quantize_q8):
 * W[r, c] ~ q[r, c] * scale[r]. q == NULL: not quantized. */
typedef struct {
    const int8_t *q;    /* (rows, cols) */
    const float *scale; /* (rows) */
} slm_q8_matrix;

/* A matrix held in 16 bits (SLM_SLICE_BF16, SLM_SLICE_F16), row-major;
 * w == NULL: not held so. */
typedef struct {
    const uint16_t *w; /* (rows, cols) */
} slm_h16_matrix;

/* The matrices are row-major, or packed in panels when the slice was
 * loaded with SLM_SLICE_PANELS, or NULL (only their int8 or 16-bit copy)
 * with SLM_SLICE_INT8, SLM_SLICE_BF16 and SLM_SLICE_F16. */
typedef struct {
    const float *rms_att; /* (dim) */
    const float *wq;      /* (q_dim, dim)    rows of this shard's heads */
    const float *wk;      /* (kv_dim, dim)   rows of its kv heads */
    const float *wv;      /* (kv_dim, dim) */
    const float *wo;      /* (dim, q_dim)    columns of its heads */
    const float *rms_ffn; /* (dim) */
    const float *w1;      /* (hidden, dim)   rows of its hidden units */
    const float *w2;      /* (dim, hidden)   columns of its hidden units */
    const float *w3;      /* (hidden, dim) */
    /* Present only where the model has them (qkv_bias, qk_norm), else NULL:
     * biases of this shard's q, k, v rows; q_norm / k_norm, the RMSNorm
     * weights every head of q / k shares. */
    const float *bq;     /* (q_dim) */
    const float *bk;     /* (kv_dim) */
    const float *bv;     /* (kv_dim) */
    const float *q_norm; /* (head_size) */
    const float *k_norm; /* (head_size) */
    /* The same seven matrices in int8, after slm_shard_weights_quantize. */
    slm_q8_matrix q_wq, q_wk, q_wv, q_wo, q_w1, q_w2, q_w3;
    /* ... or in 16 bits (slm_shard_weights_half says which type). */
    slm_h16_matrix h_wq, h_wk, h_wv, h_wo, h_w1, h_w2, h_w3;
} slm_layer_weights;

typedef struct slm_shard_weights slm_shard_weights_t;

/* Local sizes of a shard, derived from the model and its slice. */
typedef struct {
    size_t dim; /* full model width: the residual stream is replicated */
    size_t head_size;
    size_t n_heads;     /* local query heads */
    size_t n_kv_heads;  /* local kv heads */
    size_t q_dim;       /* n_heads * head_size */
    size_t kv_dim;      /* n_kv_heads * head_size */
    size_t hidden;      /* local MLP columns */
    size_t vocab;       /* local vocabulary rows */
    size_t vocab_total; /* the model's vocabulary */
    size_t n_layers;    /* layers of this stage */
    size_t seq_len;
} slm_shard_dims;

/* How a shard gets its bytes. */
typedef enum {
    /* Copy every piece into private, huge-page-backed memory sealed
     * read-only; ck may be closed afterwards. What a shard of a cluster does:
     * it holds 1/(tp*pp) of the model and nothing else. */
    SLM_SLICE_COPY,
    /* Point into ck wherever a piece is contiguous in the file (always, for
     * a whole-model slice), copying only strided column pieces; ck must
     * outlive the weights. What one process running the whole model does. */
    SLM_SLICE_BORROW,
    /* As SLM_SLICE_COPY, with every matrix a product reads (the seven of
     * each layer and the classifier, and so the embedding when it is the
     * classifier) packed in panels (slm_cpu_pack_panels), for
     * slm_cpu_matmul_panels: what a CPU shard with float weights does. Not
     * for the GPU upload or int8 quantization, which read rows. */
    SLM_SLICE_PANELS,
    /* As SLM_SLICE_COPY, but every matrix a product reads is quantized to
     * int8 per output channel straight from ck (as
     * slm_shard_weights_quantize) and has no float copy: its float pointer
     * is NULL. The norms and the embedding stay float; a classifier that
     * is the embedding is quantized from it. What a CPU shard with
     * --weights int8 does: a quarter of the float bytes, and only those. */
    SLM_SLICE_INT8,
    /* As SLM_SLICE_INT8, but every matrix a product reads, and the
     * embedding, is held in bfloat16 / IEEE half, rounded to nearest from
     * the file's values (exact when the file holds that type), with no
     * float copy: half the bytes of float32, read by slm_cpu_matmul_h16.
     * The norms and biases stay float. What a CPU shard with --weights
     * bf16|f16, or a 16-bit model by default, does. */
    SLM_SLICE_BF16,
    SLM_SLICE_F16,
} slm_slice_mode;

/* What a CPU shard holds its matrices in (--weights). */
typedef enum {
    SLM_WFORMAT_AUTO, /* the file's dtype (slm_checkpoint_dtype) */
    SLM_WFORMAT_F32,
    SLM_WFORMAT_BF16,
    SLM_WFORMAT_F16,
    SLM_WFORMAT_INT8, /* quantized per output channel from any dtype */
} slm_weight_format;

/* "auto", "f32", "bf16", "f16", "int8". */
const char *slm_weight_format_name(slm_weight_format f);

/* The format `f` comes to for ck: AUTO becomes the file's dtype. */
slm_weight_format slm_weight_format_resolve(slm_weight_format f,
                                            const slm_checkpoint_t *ck);

/* The slice mode of a CPU shard of a cluster holding `f` of ck: float32
 * packed in panels, 16-bit, or int8. */
slm_slice_mode slm_shard_cpu_mode(slm_weight_format f,
                                  const slm_checkpoint_t *ck);

/* Takes the slice of ck described by `slice` (layers, heads, kv heads,
 * hidden columns, vocab rows). The embedding rows are kept when `embed` is
 * set (the first pipeline stage), the final norm and classifier rows when
 * `classify` is set (the last stage). The caller owns *out; free with
 * slm_shard_weights_destroy. */
slm_status slm_shard_weights_load(const slm_checkpoint_t *ck,
                                  const slm_shard_slice *slice, bool embed,
                                  bool classify, slm_slice_mode mode,
                                  slm_shard_weights_t **out);

/* The slice of the whole model, for one process without a plan. */
slm_shard_slice slm_shard_slice_whole(const slm_model_config *cfg);

/* The whole model borrowed from ck (SLM_SLICE_BORROW of the whole slice):
 * what one process running the model alone uses. ck must outlive *out. */
slm_status slm_shard_weights_whole(const slm_checkpoint_t *ck,
                                   slm_shard_weights_t **out);

/* The whole model for one process, held as `f` says: float32 borrowed from
 * ck (slm_shard_weights_whole), int8 quantized from that
 * (slm_shard_weights_quantize), 16-bit copied (SLM_SLICE_BF16/F16). ck
 * must outlive *out. */
slm_status slm_shard_weights_whole_as(const slm_checkpoint_t *ck,
                                      slm_weight_format f,
                                      slm_shard_weights_t **out);

/* Quantizes every matrix of the slice (the seven of each layer and the
 * classifier) to int8 per output channel, into memory of its own sealed
 * read-only; the forward pass then reads those (a quarter of the bytes).
 * The float matrices stay where they were (a mapped file's pages, which
 * the kernel may drop, or the copy). Norms and the embedding stay float. */
slm_status slm_shard_weights_quantize(slm_shard_weights_t *w);

/* The classifier in int8, or {NULL, NULL}. */
slm_q8_matrix slm_shard_weights_classifier_q8(const slm_shard_weights_t *w);

/* Whether the slice holds its matrices in 16 bits (SLM_SLICE_BF16 or
 * SLM_SLICE_F16), and in which type (*type, when true). */
bool slm_shard_weights_half(const slm_shard_weights_t *w, slm_half_type *type);
/* The embedding rows and the classifier rows in 16 bits, or {NULL}. */
slm_h16_matrix slm_shard_weights_embedding_h16(const slm_shard_weights_t *w);
slm_h16_matrix slm_shard_weights_classifier_h16(const slm_shard_weights_t *w);

/* Accepts NULL; sets *w to NULL. */
void slm_shard_weights_destroy(slm_shard_weights_t **w);

/* Borrowed; valid while w lives. `layer` is local (0 = the stage's first). */
const slm_layer_weights *slm_shard_weights_layer(const slm_shard_weights_t *w,
                                                 size_t layer);
const slm_shard_dims *slm_shard_weights_dims(const slm_shard_weights_t *w);
const slm_model_config *slm_shard_weights_config(const slm_shard_weights_t *w);
/* (vocab, dim) embedding rows [slice.vocab.begin, +vocab), or NULL. */
const float *slm_shard_weights_embedding(const slm_shard_weights_t *w);
/* (dim) final norm, or NULL when not classifying. */
const float *slm_shard_weights_rms_final(const slm_shard_weights_t *w);
/* (vocab, dim) classifier rows, or NULL when not classifying (or when only
 * its int8 copy is held: slm_shard_weights_classifier_q8). */
const float *slm_shard_weights_classifier(const slm_shard_weights_t *w);
const slm_shard_slice *slm_shard_weights_slice(const slm_shard_weights_t *w);
/* Whether the matrices (layers' and classifier) are packed in panels, and
 * whether the embedding is (a shared classifier held by the first and last
 * stage at once). */
bool slm_shard_weights_panels(const slm_shard_weights_t *w);
bool slm_shard_weights_embedding_panels(const slm_shard_weights_t *w);

/* Bytes of weights this shard's slice covers (borrowed or copied). */
size_t slm_shard_weights_bytes(const slm_shard_weights_t *w);
/* Bytes this shard copied into its own memory (int8 and 16-bit matrices
 * included). */
size_t slm_shard_weights_copied_bytes(const slm_shard_weights_t *w);

#endif
