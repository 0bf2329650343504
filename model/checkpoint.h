/*
 * model/checkpoint.h - llama2.c checkpoints: header validation, the tensor
 * table, and read-only mapping of the weights.
 *
 * On-disk format (little-endian), as written by llama2.c's export scripts:
 *   7 x int32: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
 *              seq_len. A negative vocab_size means the classifier is stored
 *              separately (wcls, at the end); positive means it is shared
 *              with the token embedding.
 *   float32 tensors, in this order (kv_dim = dim * n_kv_heads / n_heads,
 *   head_size = dim / n_heads; where a Hugging Face config gives another
 *   head_dim, wq is (q_dim, dim) and wo (dim, q_dim) with q_dim = n_heads *
 *   head_dim, and the biases and norms follow):
 *     token_embedding (vocab, dim)
 *     rms_att   (n_layers, dim)
 *     wq        (n_layers, dim, dim)
 *     wk        (n_layers, kv_dim, dim)
 *     wv        (n_layers, kv_dim, dim)
 *     wo        (n_layers, dim, dim)
 *     rms_ffn   (n_layers, dim)
 *     w1        (n_layers, hidden_dim, dim)
 *     w2        (n_layers, dim, hidden_dim)
 *     w3        (n_layers, hidden_dim, dim)
 *     rms_final (dim)
 *     freq_cis_real, freq_cis_imag (seq_len, head_size / 2)  legacy, unused
 *     wcls      (vocab, dim)   only when vocab_size was negative
 * The file must end exactly where the last tensor does.
 *
 * Nothing in the header is trusted: every dimension is checked against a hard
 * limit and the divisibility the forward pass needs, and every offset is
 * computed in 64 bits with overflow checks and compared with the file size,
 * before a single weight is touched.
 */
#ifndef SLM_MODEL_CHECKPOINT_H
#define SLM_MODEL_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* Hard limits on header fields (generous: Llama 3 405B fits). */
#define SLM_MAX_DIM     (1 << 16)
#define SLM_MAX_HIDDEN  (1 << 18)
#define SLM_MAX_LAYERS  1024
#define SLM_MAX_HEADS   1024
#define SLM_MAX_VOCAB   (1 << 20)
#define SLM_MAX_SEQ_LEN (1 << 20)

#define SLM_CHECKPOINT_HEADER_BYTES 28

/* How rotary frequencies are rescaled for long contexts. */
typedef enum {
    SLM_ROPE_DEFAULT, /* theta^(-2i/d), as llama2.c and most models */
    SLM_ROPE_LLAMA3,  /* Llama 3.1: low frequencies divided by factor,
                         a smooth blend between the two wavelengths */
} slm_rope_type;

typedef struct {
    slm_rope_type type;
    float factor;           /* SLM_ROPE_LLAMA3 only */
    float low_freq_factor;  /* SLM_ROPE_LLAMA3 only */
    float high_freq_factor; /* SLM_ROPE_LLAMA3 only */
    int32_t original_max_position_embeddings; /* SLM_ROPE_LLAMA3 only */
} slm_rope_scaling;

#define SLM_MAX_EOS_IDS 8

/* The architecture, for messages: what the forward pass does is said by
 * the flags of slm_model_config (qkv_bias, qk_norm), not by this. Llama and
 * Mistral (with a window covering the context) compute the same thing. */
typedef enum {
    SLM_ARCH_LLAMA, /* llama2.c files, LlamaForCausalLM */
    SLM_ARCH_MISTRAL,
    SLM_ARCH_QWEN2, /* q, k and v projections with biases */
    SLM_ARCH_QWEN3, /* RMSNorm of each head of q and k, before the rotary */
} slm_arch;

typedef struct {
    int32_t dim;
    int32_t hidden_dim;
    int32_t n_layers;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t vocab_size; /* always positive here; see shared_classifier */
    int32_t seq_len;
    bool shared_classifier;
    /* derived (head_size given by a Hugging Face config's head_dim, else
     * dim / n_heads; llama2.c files have no other) */
    int32_t head_size;
    int32_t q_dim;  /* head_size * n_heads: dim, unless head_dim says not */
    int32_t kv_dim; /* head_size * n_kv_heads */
    /* What a Hugging Face config.json says and a llama2.c header cannot:
     * validation puts llama2.c's constants where a field is 0. */
    slm_arch arch;
    bool qkv_bias;      /* bq, bk, bv tensors: q = Wq x + bq, ... */
    bool qk_norm;       /* q_norm, k_norm: RMSNorm over each head */
    float rms_norm_eps; /* 1e-5 */
    float rope_theta;   /* 10000 */
    slm_rope_scaling rope_scaling;
    /* Token ids the model file names (-1: none; the tokenizer may know). */
    int32_t bos_id;
    int32_t eos_ids[SLM_MAX_EOS_IDS];
    int32_t n_eos_ids;
} slm_model_config;

/* Whether generating token `id` ends a sequence of a model of cfg: one of
 * the eos ids its config names (llama2.c's: </s>), or its bos id - as
 * llama2.c's run.c stops at <s>: a model that emits it has begun another
 * document. */
bool slm_model_config_is_stop(const slm_model_config *cfg, int32_t id);

/* Rotary frequencies of the pairs of a head: out[i] for i < head_size / 2
 * is the angle per position of pair i, theta^(-2i / head_size), rescaled as
 * cfg->rope_scaling says (Llama 3.1's rule). The default case is computed
 * with llama2.c's float operations, so its logits stay bit for bit. */
void slm_model_config_rope_freqs(const slm_model_config *cfg, float *out);

typedef enum {
    SLM_TENSOR_TOKEN_EMBEDDING,
    SLM_TENSOR_RMS_ATT,
    SLM_TENSOR_WQ,
    SLM_TENSOR_WK,
    SLM_TENSOR_WV,
    SLM_TENSOR_WO,
    SLM_TENSOR_RMS_FFN,
    SLM_TENSOR_W1,
    SLM_TENSOR_W2,
    SLM_TENSOR_W3,
    SLM_TENSOR_RMS_FINAL,
    SLM_TENSOR_FREQ_CIS_REAL,
    SLM_TENSOR_FREQ_CIS_IMAG,
    SLM_TENSOR_WCLS, /* aliases the embedding when the classifier is shared */
    /* Optional, per layer: no llama2.c file has them (layers == 0 there). */
    SLM_TENSOR_BQ,     /* (1, dim)       qkv_bias */
    SLM_TENSOR_BK,     /* (1, kv_dim)    qkv_bias */
    SLM_TENSOR_BV,     /* (1, kv_dim)    qkv_bias */
    SLM_TENSOR_Q_NORM, /* (1, head_size) qk_norm */
    SLM_TENSOR_K_NORM, /* (1, head_size) qk_norm */
    SLM_TENSOR_COUNT
} slm_tensor_id;

/* Where one tensor lives in the file. Per-layer tensors hold `layers`
 * consecutive (rows, cols) matrices; the others have layers == 1. */
typedef struct {
    const char *name; /* static */
    uint64_t offset;  /* bytes from the start of the file */
    uint64_t layers;
    uint64_t rows;
    uint64_t cols;
} slm_tensor_info;

/* Validates the values of a config (as from a header, or built by hand for
 * mkmodel) and fills the derived fields. `what` names the source in messages.
 * Fails with SLM_ERR_FORMAT naming the field and value. */
slm_status slm_model_config_validate(slm_model_config *cfg, const char *what);

/* Parses and validates the header in data(len) and computes the tensor table
 * for a file of file_size bytes. Pure: usable on any buffer (fuzzed). */
slm_status slm_checkpoint_parse_header(const uint8_t *data, size_t len,
                                       uint64_t file_size, const char *what,
                                       slm_model_config *cfg,
                                       slm_tensor_info table[SLM_TENSOR_COUNT]);

/* The 28-byte header for cfg (vocab_size negated when not shared). */
void slm_checkpoint_encode_header(const slm_model_config *cfg,
                                  uint8_t out[SLM_CHECKPOINT_HEADER_BYTES]);

/* Total file size for cfg, 0 if it overflows 64 bits. */
uint64_t slm_checkpoint_file_size(const slm_model_config *cfg);

/* The tensor table of cfg (shapes, and offsets in a llama2.c file of it);
 * SLM_ERR_RANGE if the sizes overflow 64 bits. */
slm_status slm_checkpoint_table(const slm_model_config *cfg,
                                slm_tensor_info table[SLM_TENSOR_COUNT]);

typedef struct slm_checkpoint slm_checkpoint_t;

/* The element type a model's matrices are stored in. */
typedef enum {
    SLM_WEIGHT_F32,
    SLM_WEIGHT_BF16,
    SLM_WEIGHT_F16,
} slm_weight_dtype;

/* "f32", "bf16", "f16". */
const char *slm_weight_dtype_name(slm_weight_dtype dt);

/* Where the weights live once the file is open. */
typedef enum {
    /* A private copy in anonymous, huge-page-backed memory made read-only
     * after the copy. Decode streams every weight once per token, and 4 KiB
     * page-cache pages cost about a tenth of the bandwidth in TLB misses
     * (BENCHMARKS.md); a private copy also cannot change under us if the file
     * is rewritten after it was checked. Costs the model's size in RAM. */
    SLM_WEIGHTS_RESIDENT,
    /* The read-only file mapping itself: no copy, pages shared with the page
     * cache and other processes; for models larger than spare RAM. */
    SLM_WEIGHTS_MAPPED,
} slm_weights_mode;

/* Opens `path`, maps it read-only, validates the header and tensor table
 * against the file size, and then (SLM_WEIGHTS_RESIDENT) copies the weights
 * into private memory. A Hugging Face model (a directory, or a .safetensors
 * file with its config.json; model/hf_model.h) is validated whole - config,
 * every tensor's name, dtype and shape - and stays mapped, whatever the mode:
 * slm_checkpoint_read converts what a shard asks for. On success the caller
 * owns *out and releases it with slm_checkpoint_destroy. */
slm_status slm_checkpoint_open(const char *path, slm_weights_mode mode,
                               slm_checkpoint_t **out);

/* Accepts NULL; sets *ck to NULL. Pointers from slm_checkpoint_tensor die. */
void slm_checkpoint_destroy(slm_checkpoint_t **ck);

/* Borrowed; valid while ck lives. */
const slm_model_config *slm_checkpoint_config(const slm_checkpoint_t *ck);
const slm_tensor_info *slm_checkpoint_tensor_info(const slm_checkpoint_t *ck,
                                                  slm_tensor_id id);

/* The (rows, cols) matrix of tensor `id` for `layer` (0 for non-layer
 * tensors), borrowed from the mapping; valid while ck lives. `layer` must be
 * below the tensor's layer count: the caller's bug otherwise. NULL for a
 * Hugging Face model, whose tensors are not float32 in our layout: read
 * those with slm_checkpoint_read. */
const float *slm_checkpoint_tensor(const slm_checkpoint_t *ck, slm_tensor_id id,
                                   size_t layer);

/* Reads rows [row0, +n_rows) x columns [col0, +n_cols) of tensor `id` of
 * `layer` as float32 into out(n_rows, n_cols), row-major, from either
 * format: only the bytes of that slice are touched (a shard's slice). For
 * a Hugging Face model the slice is converted from the file's dtype and its
 * rotary layout (model/hf_model.h) on the way. Fails with SLM_ERR_RANGE
 * for a slice outside the tensor. */
slm_status slm_checkpoint_read(const slm_checkpoint_t *ck, slm_tensor_id id,
                               size_t layer, size_t row0, size_t n_rows,
                               size_t col0, size_t n_cols, float *out);

/* Bytes of mapped weights (the file size); for a Hugging Face model the
 * bytes of its tensors in float32. */
uint64_t slm_checkpoint_bytes(const slm_checkpoint_t *ck);

/* The dtype the file stores its matrices in: float32 for llama2.c; for a
 * Hugging Face model, slm_hf_model_dtype. What a shard holds them in unless
 * told otherwise (--weights). */
slm_weight_dtype slm_checkpoint_dtype(const slm_checkpoint_t *ck);

#endif
