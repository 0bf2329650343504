/* model/checkpoint.c - llama2.c checkpoints; the format is described in
 * checkpoint.h. */
#include "model/checkpoint.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/checked.h"
#include "common/file.h"
#include "common/hugemem.h"
#include "common/reader.h"
#include "model/hf_model.h"

struct slm_checkpoint {
    slm_file_map map;    /* the file; unmapped once a resident copy exists */
    const uint8_t *data; /* (size) the bytes tensors point into */
    size_t size;
    slm_hugemem resident; /* private copy, or empty */
    slm_hf_model_t *hf;   /* a Hugging Face model instead of the above */
    slm_model_config cfg;
    slm_tensor_info table[SLM_TENSOR_COUNT];
};

static slm_status check_range(const char *what, const char *field,
                              int32_t value, int32_t lo, int32_t hi)
{
    if (value < lo || value > hi)
        return slm_fail(SLM_ERR_FORMAT, "%s: %s = %d is out of range [%d, %d]",
                        what, field, value, lo, hi);
    return SLM_OK;
}

slm_status slm_model_config_validate(slm_model_config *cfg, const char *what)
{
    SLM_CHECK(check_range(what, "dim", cfg->dim, 1, SLM_MAX_DIM));
    SLM_CHECK(
        check_range(what, "hidden_dim", cfg->hidden_dim, 1, SLM_MAX_HIDDEN));
    SLM_CHECK(check_range(what, "n_layers", cfg->n_layers, 1, SLM_MAX_LAYERS));
    SLM_CHECK(check_range(what, "n_heads", cfg->n_heads, 1, SLM_MAX_HEADS));
    SLM_CHECK(
        check_range(what, "n_kv_heads", cfg->n_kv_heads, 1, cfg->n_heads));
    /* 3: the ids <unk>, <s>, </s> must exist. */
    SLM_CHECK(
        check_range(what, "vocab_size", cfg->vocab_size, 3, SLM_MAX_VOCAB));
    SLM_CHECK(check_range(what, "seq_len", cfg->seq_len, 1, SLM_MAX_SEQ_LEN));
    if (cfg->head_size == 0 && cfg->dim % cfg->n_heads != 0)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: dim = %d is not divisible by n_heads = %d", what,
                        cfg->dim, cfg->n_heads);
    if (cfg->n_heads % cfg->n_kv_heads != 0)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: n_heads = %d is not divisible by n_kv_heads = %d",
                        what, cfg->n_heads, cfg->n_kv_heads);
    const bool derived = cfg->head_size == 0;
    if (derived)
        cfg->head_size = cfg->dim / cfg->n_heads;
    SLM_CHECK(check_range(what, "head_size", cfg->head_size, 1, SLM_MAX_DIM));
    if (cfg->head_size % 2 != 0)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: head_size = %s%d must be even for rotary "
                        "embeddings",
                        what, derived ? "dim / n_heads = " : "",
                        cfg->head_size);
    /* Cannot overflow: SLM_MAX_HEADS * SLM_MAX_DIM < 2^31. */
    cfg->q_dim = cfg->head_size * cfg->n_heads;
    cfg->kv_dim = cfg->head_size * cfg->n_kv_heads;
    /* A llama2.c header has no room for these: its constants. */
    if (cfg->rms_norm_eps == 0.0f)
        cfg->rms_norm_eps = 1e-5f;
    if (cfg->rope_theta == 0.0f)
        cfg->rope_theta = 10000.0f;
    if (!(cfg->rms_norm_eps > 0.0f && cfg->rms_norm_eps < 1.0f))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: rms_norm_eps = %g is out of range (0, 1)", what,
                        (double)cfg->rms_norm_eps);
    if (!(cfg->rope_theta > 1.0f && cfg->rope_theta < 1e12f))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: rope_theta = %g is out of range (1, 1e12)", what,
                        (double)cfg->rope_theta);
    const slm_rope_scaling *rs = &cfg->rope_scaling;
    if (rs->type == SLM_ROPE_LLAMA3 &&
        !(rs->factor >= 1.0f && rs->factor <= 1024.0f &&
          rs->low_freq_factor > 0.0f &&
          rs->high_freq_factor > rs->low_freq_factor &&
          rs->high_freq_factor <= 1024.0f &&
          rs->original_max_position_embeddings > 0))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: llama3 rope scaling (factor %g, low_freq_factor "
                        "%g, high_freq_factor %g, "
                        "original_max_position_embeddings %d) is out of range: "
                        "factor in [1, 1024], 0 < low < high <= 1024, a "
                        "positive original length",
                        what, (double)rs->factor, (double)rs->low_freq_factor,
                        (double)rs->high_freq_factor,
                        rs->original_max_position_embeddings);
    if (cfg->n_eos_ids < 0 || cfg->n_eos_ids > SLM_MAX_EOS_IDS)
        return slm_fail(SLM_ERR_FORMAT, "%s: %d eos ids (at most %d)", what,
                        cfg->n_eos_ids, SLM_MAX_EOS_IDS);
    if (cfg->bos_id < -1 || cfg->bos_id >= cfg->vocab_size)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: bos_token_id = %d is not a token of the "
                        "vocabulary of %d",
                        what, cfg->bos_id, cfg->vocab_size);
    for (int32_t i = 0; i < cfg->n_eos_ids; i++)
        if (cfg->eos_ids[i] < 0 || cfg->eos_ids[i] >= cfg->vocab_size)
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: eos_token_id = %d is not a token of the "
                            "vocabulary of %d",
                            what, cfg->eos_ids[i], cfg->vocab_size);
    return SLM_OK;
}

bool slm_model_config_is_stop(const slm_model_config *cfg, int32_t id)
{
    if (id == cfg->bos_id)
        return true;
    for (int32_t i = 0; i < cfg->n_eos_ids; i++)
        if (cfg->eos_ids[i] == id)
            return true;
    return false;
}

void slm_model_config_rope_freqs(const slm_model_config *cfg, float *out)
{
    const int32_t hs = cfg->head_size;
    for (int32_t i = 0; i + 1 < hs; i += 2) {
        /* llama2.c run.c's expression, float for float */
        float freq = 1.0f / powf(cfg->rope_theta, (float)i / (float)hs);
        const slm_rope_scaling *rs = &cfg->rope_scaling;
        if (rs->type == SLM_ROPE_LLAMA3) {
            /* transformers' _compute_llama3_parameters: wavelengths longer
             * than the original context / low_freq_factor are slowed by
             * factor, shorter than / high_freq_factor kept, and those
             * between blended linearly in original / wavelength. */
            const float old = (float)rs->original_max_position_embeddings;
            const float low_wavelen = old / rs->low_freq_factor;
            const float high_wavelen = old / rs->high_freq_factor;
            const float wavelen = 2.0f * (float)M_PI / freq;
            if (wavelen > low_wavelen) {
                freq = freq / rs->factor;
            } else if (!(wavelen < high_wavelen)) {
                const float smooth =
                    (old / wavelen - rs->low_freq_factor) /
                    (rs->high_freq_factor - rs->low_freq_factor);
                freq = (1.0f - smooth) * freq / rs->factor + smooth * freq;
            }
        }
        out[i / 2] = freq;
    }
}

/* Lays the tensors out in file order, in 64-bit checked arithmetic; returns
 * the end offset, or 0 on overflow (impossible within the limits above, but
 * the check costs nothing and keeps the proof local). */
static uint64_t layout(const slm_model_config *c,
                       slm_tensor_info table[SLM_TENSOR_COUNT])
{
    const uint64_t L = (uint64_t)c->n_layers, D = (uint64_t)c->dim;
    const uint64_t H = (uint64_t)c->hidden_dim, V = (uint64_t)c->vocab_size;
    const uint64_t KV = (uint64_t)c->kv_dim, S = (uint64_t)c->seq_len;
    const uint64_t Q = (uint64_t)c->q_dim;
    const uint64_t HS2 = (uint64_t)c->head_size / 2;
    const struct {
        slm_tensor_id id;
        const char *name;
        uint64_t layers, rows, cols;
    } order[] = {
        {SLM_TENSOR_TOKEN_EMBEDDING, "token_embedding", 1, V, D},
        {SLM_TENSOR_RMS_ATT, "rms_att", L, 1, D},
        {SLM_TENSOR_WQ, "wq", L, Q, D},
        {SLM_TENSOR_WK, "wk", L, KV, D},
        {SLM_TENSOR_WV, "wv", L, KV, D},
        {SLM_TENSOR_WO, "wo", L, D, Q},
        {SLM_TENSOR_RMS_FFN, "rms_ffn", L, 1, D},
        {SLM_TENSOR_W1, "w1", L, H, D},
        {SLM_TENSOR_W2, "w2", L, D, H},
        {SLM_TENSOR_W3, "w3", L, H, D},
        {SLM_TENSOR_RMS_FINAL, "rms_final", 1, 1, D},
        {SLM_TENSOR_FREQ_CIS_REAL, "freq_cis_real", 1, S, HS2},
        {SLM_TENSOR_FREQ_CIS_IMAG, "freq_cis_imag", 1, S, HS2},
        {SLM_TENSOR_WCLS, "wcls", 1, V, D},
        /* after the file's last tensor: never in a llama2.c file */
        {SLM_TENSOR_BQ, "bq", c->qkv_bias ? L : 0, 1, Q},
        {SLM_TENSOR_BK, "bk", c->qkv_bias ? L : 0, 1, KV},
        {SLM_TENSOR_BV, "bv", c->qkv_bias ? L : 0, 1, KV},
        {SLM_TENSOR_Q_NORM, "q_norm", c->qk_norm ? L : 0, 1, HS2 * 2},
        {SLM_TENSOR_K_NORM, "k_norm", c->qk_norm ? L : 0, 1, HS2 * 2},
    };
    uint64_t off = SLM_CHECKPOINT_HEADER_BYTES;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        slm_tensor_info *t = &table[order[i].id];
        t->name = order[i].name;
        t->layers = order[i].layers;
        t->rows = order[i].rows;
        t->cols = order[i].cols;
        if (order[i].id == SLM_TENSOR_WCLS && c->shared_classifier) {
            t->offset = table[SLM_TENSOR_TOKEN_EMBEDDING].offset;
            continue;
        }
        t->offset = off;
        uint64_t n, bytes;
        if (!slm_u64_mul(t->layers, t->rows, &n) ||
            !slm_u64_mul(n, t->cols, &n) || !slm_u64_mul(n, 4, &bytes) ||
            !slm_u64_add(off, bytes, &off))
            return 0;
    }
    return off;
}

uint64_t slm_checkpoint_file_size(const slm_model_config *cfg)
{
    slm_tensor_info table[SLM_TENSOR_COUNT];
    return layout(cfg, table);
}

slm_status slm_checkpoint_table(const slm_model_config *cfg,
                                slm_tensor_info table[SLM_TENSOR_COUNT])
{
    if (layout(cfg, table) == 0)
        return slm_fail(SLM_ERR_RANGE, "tensor sizes overflow 64 bits");
    return SLM_OK;
}

slm_status slm_checkpoint_parse_header(const uint8_t *data, size_t len,
                                       uint64_t file_size, const char *what,
                                       slm_model_config *cfg,
                                       slm_tensor_info table[SLM_TENSOR_COUNT])
{
    slm_reader r = slm_reader_make(data, len, what);
    slm_model_config c;
    memset(&c, 0, sizeof c);
    int32_t *fields[] = {&c.dim,        &c.hidden_dim, &c.n_layers, &c.n_heads,
                         &c.n_kv_heads, &c.vocab_size, &c.seq_len};
    static const char *const names[] = {"dim",     "hidden_dim", "n_layers",
                                        "n_heads", "n_kv_heads", "vocab_size",
                                        "seq_len"};
    for (size_t i = 0; i < 7; i++)
        SLM_CHECK(slm_reader_i32(&r, names[i], fields[i]));
    /* Negating INT32_MIN is undefined; it is out of range anyway. */
    if (c.vocab_size == INT32_MIN)
        return slm_fail(SLM_ERR_FORMAT, "%s: vocab_size = %d is out of range",
                        what, c.vocab_size);
    c.shared_classifier = c.vocab_size > 0;
    if (c.vocab_size < 0)
        c.vocab_size = -c.vocab_size;
    /* llama2.c's vocabularies: <s> = 1, </s> = 2 (model/tokenizer.h) */
    c.bos_id = 1;
    c.eos_ids[0] = 2;
    c.n_eos_ids = 1;
    SLM_CHECK(slm_model_config_validate(&c, what));
    uint64_t end = layout(&c, table);
    if (end == 0)
        return slm_fail(SLM_ERR_RANGE, "%s: tensor sizes overflow 64 bits",
                        what);
    if (file_size < end)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: file is %llu bytes but the header (dim=%d "
                        "hidden_dim=%d n_layers=%d vocab_size=%d seq_len=%d) "
                        "needs %llu: truncated or not a checkpoint",
                        what, (unsigned long long)file_size, c.dim,
                        c.hidden_dim, c.n_layers, c.vocab_size, c.seq_len,
                        (unsigned long long)end);
    if (file_size > end)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: file is %llu bytes but the header describes "
                        "%llu: %llu trailing bytes (wrong vocab_size sign or "
                        "not a llama2.c checkpoint?)",
                        what, (unsigned long long)file_size,
                        (unsigned long long)end,
                        (unsigned long long)(file_size - end));
    *cfg = c;
    return SLM_OK;
}

void slm_checkpoint_encode_header(const slm_model_config *cfg,
                                  uint8_t out[SLM_CHECKPOINT_HEADER_BYTES])
{
    int32_t v[7] = {cfg->dim,
                    cfg->hidden_dim,
                    cfg->n_layers,
                    cfg->n_heads,
                    cfg->n_kv_heads,
                    cfg->shared_classifier ? cfg->vocab_size : -cfg->vocab_size,
                    cfg->seq_len};
    memcpy(out, v, sizeof v);
}

/* Copies the validated file into private huge-page memory, sealed
 * read-only, and drops the file mapping. */
static slm_status make_resident(slm_checkpoint_t *ck, const char *path)
{
    SLM_CHECK(slm_hugemem_alloc(ck->map.size, path, &ck->resident));
    memcpy(ck->resident.data, ck->map.data, ck->map.size);
    SLM_CHECK(slm_hugemem_seal(&ck->resident, path));
    ck->data = ck->resident.data;
    slm_file_unmap(&ck->map);
    return SLM_OK;
}

slm_status slm_checkpoint_open(const char *path, slm_weights_mode mode,
                               slm_checkpoint_t **out)
{
    slm_checkpoint_t *ck = calloc(1, sizeof *ck);
    if (!ck)
        return slm_fail(SLM_ERR_NOMEM, "%s: out of memory", path);
    slm_status rc;
    if (slm_hf_model_is_hf(path)) {
        /* Validated whole, converted slice by slice (slm_checkpoint_read);
         * the table gives each tensor's shape in our layout, its offsets
         * those of the float32 image we never build. */
        SLM_CHECK_GOTO(slm_hf_model_open(path, &ck->cfg, &ck->hf), rc, fail);
        const uint64_t end = layout(&ck->cfg, ck->table);
        if (end == 0 || end > SIZE_MAX) {
            rc = slm_fail(SLM_ERR_RANGE, "%s: the model's size overflows",
                          path);
            goto fail;
        }
        ck->size = (size_t)end;
        *out = ck;
        return SLM_OK;
    }
    SLM_CHECK_GOTO(slm_file_map_open(path, &ck->map), rc, fail);
    SLM_CHECK_GOTO(slm_checkpoint_parse_header(ck->map.data, ck->map.size,
                                               ck->map.size, path, &ck->cfg,
                                               ck->table),
                   rc, fail);
    ck->data = ck->map.data;
    ck->size = ck->map.size;
    if (mode == SLM_WEIGHTS_RESIDENT) {
        (void)madvise((void *)ck->map.data, ck->map.size, MADV_SEQUENTIAL);
        SLM_CHECK_GOTO(make_resident(ck, path), rc, fail);
    } else {
        /* Weights are streamed front to back once per token. */
        (void)madvise((void *)ck->map.data, ck->map.size, MADV_WILLNEED);
    }
    *out = ck;
    return SLM_OK;
fail:
    slm_checkpoint_destroy(&ck);
    return rc;
}

void slm_checkpoint_destroy(slm_checkpoint_t **ck)
{
    if (!ck || !*ck)
        return;
    slm_file_unmap(&(*ck)->map);
    slm_hugemem_free(&(*ck)->resident);
    slm_hf_model_destroy(&(*ck)->hf);
    free(*ck);
    *ck = NULL;
}

const slm_model_config *slm_checkpoint_config(const slm_checkpoint_t *ck)
{
    return &ck->cfg;
}

const slm_tensor_info *slm_checkpoint_tensor_info(const slm_checkpoint_t *ck,
                                                  slm_tensor_id id)
{
    return &ck->table[id];
}

const float *slm_checkpoint_tensor(const slm_checkpoint_t *ck, slm_tensor_id id,
                                   size_t layer)
{
    const slm_tensor_info *t = &ck->table[id];
    assert(layer < t->layers); /* our bug, not the file's */
    if (ck->hf)
        return NULL;
    /* In range: parse_header proved offset + layers*rows*cols*4 <= size. */
    uint64_t off = t->offset + (uint64_t)layer * t->rows * t->cols * 4;
    return (const float *)(const void *)(ck->data + off);
}

slm_status slm_checkpoint_read(const slm_checkpoint_t *ck, slm_tensor_id id,
                               size_t layer, size_t row0, size_t n_rows,
                               size_t col0, size_t n_cols, float *out)
{
    const slm_tensor_info *t = &ck->table[id];
    if (layer >= t->layers || row0 > t->rows || n_rows > t->rows - row0 ||
        col0 > t->cols || n_cols > t->cols - col0)
        return slm_fail(SLM_ERR_RANGE,
                        "%s of layer %zu: rows [%zu, +%zu) x columns [%zu, "
                        "+%zu) are outside (%llu layers, %llu, %llu)",
                        t->name, layer, row0, n_rows, col0, n_cols,
                        (unsigned long long)t->layers,
                        (unsigned long long)t->rows,
                        (unsigned long long)t->cols);
    if (ck->hf)
        return slm_hf_model_read(ck->hf, id, layer, row0, n_rows, col0,
                                 n_cols, out);
    const float *src = slm_checkpoint_tensor(ck, id, layer);
    for (size_t r = 0; r < n_rows; r++)
        memcpy(out + r * n_cols, src + (row0 + r) * t->cols + col0,
               n_cols * sizeof(float));
    return SLM_OK;
}

uint64_t slm_checkpoint_bytes(const slm_checkpoint_t *ck)
{
    return ck->size;
}

slm_weight_dtype slm_checkpoint_dtype(const slm_checkpoint_t *ck)
{
    return ck->hf ? slm_hf_model_dtype(ck->hf) : SLM_WEIGHT_F32;
}

const char *slm_weight_dtype_name(slm_weight_dtype dt)
{
    switch (dt) {
    case SLM_WEIGHT_BF16:
        return "bf16";
    case SLM_WEIGHT_F16:
        return "f16";
    case SLM_WEIGHT_F32:
        break;
    }
    return "f32";
}
