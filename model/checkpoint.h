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
 *   head_size = dim / n_heads):
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

typedef struct {
    int32_t dim;
    int32_t hidden_dim;
    int32_t n_layers;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t vocab_size; /* always positive here; see shared_classifier */
    int32_t seq_len;
    bool shared_classifier;
    /* derived */
    int32_t head_size; /* dim / n_heads */
    int32_t kv_dim;    /* head_size * n_kv_heads */
} slm_model_config;

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

typedef struct slm_checkpoint slm_checkpoint_t;

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
 * into private memory. On success the caller owns *out and releases it with
 * slm_checkpoint_destroy. */
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
 * below the tensor's layer count: the caller's bug otherwise. */
const float *slm_checkpoint_tensor(const slm_checkpoint_t *ck, slm_tensor_id id,
                                   size_t layer);

/* Bytes of mapped weights (the file size). */
uint64_t slm_checkpoint_bytes(const slm_checkpoint_t *ck);

#endif
