/* model/mkmodel.c - see mkmodel.h. */
#include "model/mkmodel.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kernels/kernels.h"
#include "model/hf_model.h"
#include "model/tokenizer.h"

typedef struct {
    const char *name;
    slm_model_config cfg;
} named_shape;

/* The rest (eps, rope, token ids) take llama2.c's values in validation. */
#define SHAPE(d, h, l, nh, nkv, v, s)                                          \
    {.dim = d,                                                                 \
     .hidden_dim = h,                                                          \
     .n_layers = l,                                                            \
     .n_heads = nh,                                                            \
     .n_kv_heads = nkv,                                                        \
     .vocab_size = v,                                                          \
     .seq_len = s,                                                             \
     .shared_classifier = true}
static const named_shape shapes[] = {
    {"stories260k", SHAPE(64, 172, 5, 8, 4, 512, 512)},
    {"110m", SHAPE(768, 2048, 12, 12, 12, 32000, 1024)},
    {"tinyllama-1.1b", SHAPE(2048, 5632, 22, 32, 4, 32000, 2048)},
    {"7b", SHAPE(4096, 11008, 32, 32, 32, 32000, 4096)},
};

const char *slm_mkmodel_shape_names(void)
{
    return "stories260k, 110m, tinyllama-1.1b, 7b";
}

slm_status slm_mkmodel_shape(const char *name, slm_model_config *out)
{
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        if (strcmp(name, shapes[i].name) == 0) {
            *out = shapes[i].cfg;
            return slm_model_config_validate(out, name);
        }
    }
    return slm_fail(SLM_ERR_INVALID, "unknown model shape '%s' (known: %s)",
                    name, slm_mkmodel_shape_names());
}

/* xorshift64*: fast enough to write gigabytes in seconds. */
static inline uint64_t next_u64(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dULL;
}

enum { CHUNK = 1 << 16 };

/* Writes n floats: uniform in +-scale, or the constant `fill` when scale is
 * 0. */
static slm_status write_floats(FILE *f, const char *path, uint64_t n,
                               float scale, float fill, uint64_t *rng)
{
    static float buf[CHUNK];
    while (n > 0) {
        size_t m = n < CHUNK ? (size_t)n : CHUNK;
        for (size_t i = 0; i < m; i++) {
            if (scale == 0.0f) {
                buf[i] = fill;
            } else {
                float u = (float)(next_u64(rng) >> 40) * 0x1.0p-24f;
                buf[i] = (2.0f * u - 1.0f) * scale;
            }
        }
        if (fwrite(buf, sizeof(float), m, f) != m)
            return slm_fail(SLM_ERR_IO, "%s: write failed: %s", path,
                            strerror(errno));
        n -= m;
    }
    return SLM_OK;
}

slm_status slm_mkmodel_write(const char *path, const slm_model_config *cfg_in,
                             uint64_t seed)
{
    slm_model_config cfg = *cfg_in;
    SLM_CHECK(slm_model_config_validate(&cfg, "mkmodel"));
    uint8_t header[SLM_CHECKPOINT_HEADER_BYTES];
    slm_checkpoint_encode_header(&cfg, header);
    /* Reuse the loader's own layout so writer and reader cannot disagree. */
    slm_tensor_info table[SLM_TENSOR_COUNT];
    slm_model_config check;
    uint64_t size = slm_checkpoint_file_size(&cfg);
    if (size == 0)
        return slm_fail(SLM_ERR_RANGE, "mkmodel: model size overflows");
    SLM_CHECK(slm_checkpoint_parse_header(header, sizeof header, size,
                                          "mkmodel", &check, table));

    FILE *f = fopen(path, "wb");
    if (!f)
        return slm_fail(SLM_ERR_IO, "%s: cannot create: %s", path,
                        strerror(errno));
    slm_status rc = SLM_OK;
    if (fwrite(header, 1, sizeof header, f) != sizeof header) {
        rc =
            slm_fail(SLM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        goto done;
    }
    uint64_t rng = seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;
    if (rng == 0)
        rng = 1;
    /* Tensors in file order; the enum follows it. */
    for (int id = 0; id < SLM_TENSOR_COUNT; id++) {
        const slm_tensor_info *t = &table[id];
        if (id == SLM_TENSOR_WCLS && cfg.shared_classifier)
            continue;
        uint64_t n = t->layers * t->rows * t->cols;
        float scale, fill = 0.0f;
        switch ((slm_tensor_id)id) {
        case SLM_TENSOR_RMS_ATT:
        case SLM_TENSOR_RMS_FFN:
        case SLM_TENSOR_RMS_FINAL:
            scale = 0.0f;
            fill = 1.0f;
            break;
        case SLM_TENSOR_FREQ_CIS_REAL:
        case SLM_TENSOR_FREQ_CIS_IMAG:
            scale = 0.0f; /* unused by every reader */
            break;
        case SLM_TENSOR_TOKEN_EMBEDDING:
            /* Small, as in GPT-style init: a large shared embedding makes the
             * logit of the current token dominate and the text repeat. */
            scale = 0.05f;
            break;
        default:
            scale = 1.0f / sqrtf((float)t->cols);
            break;
        }
        SLM_CHECK_GOTO(write_floats(f, path, n, scale, fill, &rng), rc, done);
    }
done:
    if (fclose(f) != 0 && rc == SLM_OK)
        rc =
            slm_fail(SLM_ERR_IO, "%s: close failed: %s", path, strerror(errno));
    if (rc != SLM_OK)
        remove(path);
    return rc;
}

/* ---- Hugging Face directories ------------------------------------------ */

typedef struct {
    const char *name;
    const char *hf_class; /* config.json's architectures[0] */
    const char *model_type;
    slm_arch arch;
    bool qkv_bias, qk_norm, byte_level;
    float rope_theta;
    bool llama3_rope;
} hf_arch;

static const hf_arch archs[] = {
    {"llama", "LlamaForCausalLM", "llama", SLM_ARCH_LLAMA, false, false, false,
     10000.0f, false},
    {"llama3", "LlamaForCausalLM", "llama", SLM_ARCH_LLAMA, false, false, true,
     500000.0f, true},
    {"mistral", "MistralForCausalLM", "mistral", SLM_ARCH_MISTRAL, false, false,
     false, 1000000.0f, false},
    {"qwen2", "Qwen2ForCausalLM", "qwen2", SLM_ARCH_QWEN2, true, false, true,
     1000000.0f, false},
    {"qwen3", "Qwen3ForCausalLM", "qwen3", SLM_ARCH_QWEN3, false, true, true,
     1000000.0f, false},
};

const char *slm_mkmodel_arch_names(void)
{
    return "llama, llama3, mistral, qwen2, qwen3";
}

/* The architecture a config was made for: its flags and rope say it. */
static const hf_arch *arch_of(const slm_model_config *c)
{
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (archs[i].arch == c->arch && archs[i].qkv_bias == c->qkv_bias &&
            archs[i].qk_norm == c->qk_norm &&
            archs[i].llama3_rope == (c->rope_scaling.type == SLM_ROPE_LLAMA3))
            return &archs[i];
    return NULL;
}

/* The special tokens of each family's vocabulary, in id order: the
 * SentencePiece style has them first (0, 1, 2, as Llama 2's), the
 * byte-level one last (as Llama 3's and Qwen's, above the merges). */
static const char *const spm_specials[] = {"<unk>", "<s>", "</s>"};
static const char *const llama3_specials[] = {
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
    "<|end_header_id|>", "<|eot_id|>"};
static const char *const qwen_specials[] = {"<|endoftext|>", "<|im_start|>",
                                            "<|im_end|>"};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

slm_status slm_mkmodel_arch(const char *name, slm_model_config *cfg)
{
    const hf_arch *a = NULL;
    for (size_t i = 0; i < COUNT(archs); i++)
        if (strcmp(name, archs[i].name) == 0)
            a = &archs[i];
    if (!a)
        return slm_fail(SLM_ERR_INVALID,
                        "unknown architecture '%s' (known: %s)", name,
                        slm_mkmodel_arch_names());
    cfg->arch = a->arch;
    cfg->qkv_bias = a->qkv_bias;
    cfg->qk_norm = a->qk_norm;
    cfg->rms_norm_eps = a->byte_level ? 1e-6f : 1e-5f;
    cfg->rope_theta = a->rope_theta;
    memset(&cfg->rope_scaling, 0, sizeof cfg->rope_scaling);
    if (a->llama3_rope) {
        /* Llama 3.1's values; the original context a quarter of ours, so
         * that the scaling changes some frequencies and not others. */
        cfg->rope_scaling.type = SLM_ROPE_LLAMA3;
        cfg->rope_scaling.factor = 8.0f;
        cfg->rope_scaling.low_freq_factor = 1.0f;
        cfg->rope_scaling.high_freq_factor = 4.0f;
        cfg->rope_scaling.original_max_position_embeddings =
            cfg->seq_len >= 4 ? cfg->seq_len / 4 : 1;
    }
    const int32_t v = cfg->vocab_size;
    if (v < 512)
        return slm_fail(SLM_ERR_INVALID,
                        "mkmodel: a Hugging Face vocabulary needs at least "
                        "512 tokens (the bytes, the special tokens and some "
                        "merges), not %d",
                        v);
    if (!a->byte_level) {
        cfg->bos_id = 1;
        cfg->eos_ids[0] = 2;
        cfg->n_eos_ids = 1;
    } else if (a->arch == SLM_ARCH_LLAMA) {
        const int32_t first = v - (int32_t)COUNT(llama3_specials);
        cfg->bos_id = first;         /* <|begin_of_text|> */
        cfg->eos_ids[0] = first + 1; /* <|end_of_text|> */
        cfg->eos_ids[1] = first + 4; /* <|eot_id|> */
        cfg->n_eos_ids = 2;
    } else {
        const int32_t first = v - (int32_t)COUNT(qwen_specials);
        cfg->bos_id = first;         /* <|endoftext|> */
        cfg->eos_ids[0] = first + 2; /* <|im_end|> */
        cfg->eos_ids[1] = first;     /* <|endoftext|> */
        cfg->n_eos_ids = 2;
    }
    return slm_model_config_validate(cfg, name);
}

/* f as the double with the fewest digits that rounds back to f, so that
 * config.json says 1e-06 and not 9.9999999747524271e-07. */
static double short_real(float f)
{
    char buf[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f)
            return d;
    }
    return (double)f;
}

static const char *st_dtype_name(slm_weight_dtype dt)
{
    return dt == SLM_WEIGHT_BF16  ? "BF16"
           : dt == SLM_WEIGHT_F16 ? "F16"
                                  : "F32";
}

static const char *torch_dtype_name(slm_weight_dtype dt)
{
    return dt == SLM_WEIGHT_BF16  ? "bfloat16"
           : dt == SLM_WEIGHT_F16 ? "float16"
                                  : "float32";
}

static size_t dtype_bytes(slm_weight_dtype dt)
{
    return dt == SLM_WEIGHT_F32 ? 4 : 2;
}

/* One tensor of the file: which of the table, which layer, its elements. */
typedef struct {
    slm_tensor_id id;
    size_t layer;
    uint64_t rows, cols; /* rows == 1: a vector */
} hf_tensor;

/* How tensor id's values are drawn: uniform in center +- scale. */
static void draw_params(slm_tensor_id id, uint64_t cols, float *center,
                        float *scale)
{
    switch (id) {
    case SLM_TENSOR_RMS_ATT:
    case SLM_TENSOR_RMS_FFN:
    case SLM_TENSOR_RMS_FINAL:
    case SLM_TENSOR_Q_NORM:
    case SLM_TENSOR_K_NORM:
        *center = 1.0f;
        *scale = 0.2f;
        break;
    case SLM_TENSOR_BQ:
    case SLM_TENSOR_BK:
    case SLM_TENSOR_BV:
        *center = 0.0f;
        *scale = 0.1f;
        break;
    case SLM_TENSOR_TOKEN_EMBEDDING:
        *center = 0.0f;
        *scale = 0.05f; /* as slm_mkmodel_write, and for the same reason */
        break;
    default:
        *center = 0.0f;
        *scale = 1.0f / sqrtf((float)cols);
        break;
    }
}

static slm_status write_all(FILE *f, const char *path, const void *p, size_t n)
{
    if (fwrite(p, 1, n, f) != n)
        return slm_fail(SLM_ERR_IO, "%s: write failed: %s", path,
                        strerror(errno));
    return SLM_OK;
}

/* n values of t, drawn from rng, in dtype. */
static slm_status write_values(FILE *f, const char *path, const hf_tensor *t,
                               slm_weight_dtype dtype, uint64_t *rng)
{
    static float buf[CHUNK];
    static uint16_t half[CHUNK];
    float center, scale;
    draw_params(t->id, t->cols, &center, &scale);
    for (uint64_t n = t->rows * t->cols; n > 0;) {
        size_t m = n < CHUNK ? (size_t)n : CHUNK;
        for (size_t i = 0; i < m; i++) {
            float u = (float)(next_u64(rng) >> 40) * 0x1.0p-24f;
            buf[i] = center + (2.0f * u - 1.0f) * scale;
        }
        if (dtype == SLM_WEIGHT_F32) {
            SLM_CHECK(write_all(f, path, buf, m * sizeof *buf));
        } else {
            if (dtype == SLM_WEIGHT_BF16)
                slm_cpu_f32_to_bf16(half, buf, m);
            else
                slm_cpu_f32_to_f16(half, buf, m);
            SLM_CHECK(write_all(f, path, half, m * sizeof *half));
        }
        n -= m;
    }
    return SLM_OK;
}

/* The tensors of cfg in file order, into *out (malloc'd), *n of them. */
static slm_status list_tensors(const slm_model_config *cfg,
                               const slm_tensor_info table[SLM_TENSOR_COUNT],
                               hf_tensor **out, size_t *n)
{
    /* per layer: what the architecture has of these, in this order */
    static const slm_tensor_id per_layer[] = {
        SLM_TENSOR_RMS_ATT, SLM_TENSOR_WQ,      SLM_TENSOR_BQ,
        SLM_TENSOR_WK,      SLM_TENSOR_BK,      SLM_TENSOR_WV,
        SLM_TENSOR_BV,      SLM_TENSOR_WO,      SLM_TENSOR_Q_NORM,
        SLM_TENSOR_K_NORM,  SLM_TENSOR_RMS_FFN, SLM_TENSOR_W1,
        SLM_TENSOR_W3,      SLM_TENSOR_W2};
    const size_t cap = 3 + COUNT(per_layer) * (size_t)cfg->n_layers;
    hf_tensor *ts = calloc(cap, sizeof *ts);
    if (!ts)
        return slm_fail(SLM_ERR_NOMEM, "mkmodel: out of memory");
    size_t k = 0;
    const slm_tensor_info *e = &table[SLM_TENSOR_TOKEN_EMBEDDING];
    ts[k++] = (hf_tensor){SLM_TENSOR_TOKEN_EMBEDDING, 0, e->rows, e->cols};
    for (size_t l = 0; l < (size_t)cfg->n_layers; l++)
        for (size_t i = 0; i < COUNT(per_layer); i++) {
            const slm_tensor_info *t = &table[per_layer[i]];
            if (t->layers == 0)
                continue; /* not in this architecture */
            ts[k++] = (hf_tensor){per_layer[i], l, t->rows, t->cols};
        }
    const slm_tensor_info *nf = &table[SLM_TENSOR_RMS_FINAL];
    ts[k++] = (hf_tensor){SLM_TENSOR_RMS_FINAL, 0, nf->rows, nf->cols};
    if (!cfg->shared_classifier) {
        const slm_tensor_info *c = &table[SLM_TENSOR_WCLS];
        ts[k++] = (hf_tensor){SLM_TENSOR_WCLS, 0, c->rows, c->cols};
    }
    *out = ts;
    *n = k;
    return SLM_OK;
}

/* The safetensors header for ts: names, dtype, shapes and back-to-back
 * offsets, as JSON padded with spaces to a multiple of 8 bytes (the format
 * allows it, and it aligns the data). */
static slm_status st_header(const hf_tensor *ts, size_t n,
                            slm_weight_dtype dtype, char **out, size_t *len)
{
    json_t *root = json_object();
    if (!root)
        return slm_fail(SLM_ERR_NOMEM, "mkmodel: out of memory");
    slm_status rc = SLM_OK;
    json_t *meta = json_pack("{s:s}", "format", "pt");
    if (!meta || json_object_set_new(root, "__metadata__", meta) != 0) {
        rc = slm_fail(SLM_ERR_NOMEM, "mkmodel: out of memory");
        goto done;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        char name[160];
        if (!slm_hf_model_tensor_name(ts[i].id, ts[i].layer, name,
                                      sizeof name)) {
            rc = slm_fail(SLM_ERR_INVALID, "mkmodel: tensor %d has no name",
                          (int)ts[i].id);
            goto done;
        }
        const uint64_t bytes = ts[i].rows * ts[i].cols * dtype_bytes(dtype);
        json_t *shape = ts[i].rows == 1
                            ? json_pack("[I]", (json_int_t)ts[i].cols)
                            : json_pack("[I,I]", (json_int_t)ts[i].rows,
                                        (json_int_t)ts[i].cols);
        json_t *t = json_pack(
            "{s:s,s:o,s:[I,I]}", "dtype", st_dtype_name(dtype), "shape", shape,
            "data_offsets", (json_int_t)off, (json_int_t)(off + bytes));
        if (!t || json_object_set_new(root, name, t) != 0) {
            rc = slm_fail(SLM_ERR_NOMEM, "mkmodel: out of memory");
            goto done;
        }
        off += bytes;
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) {
        rc = slm_fail(SLM_ERR_NOMEM, "mkmodel: out of memory");
        goto done;
    }
    const size_t raw = strlen(text), padded = (raw + 7) & ~(size_t)7;
    char *buf = realloc(text, padded + 1);
    if (!buf) {
        free(text);
        rc = slm_fail(SLM_ERR_NOMEM, "mkmodel: out of memory");
        goto done;
    }
    memset(buf + raw, ' ', padded - raw);
    buf[padded] = '\0';
    *out = buf;
    *len = padded;
done:
    json_decref(root);
    return rc;
}

static slm_status write_safetensors(const char *path,
                                    const slm_model_config *cfg,
                                    slm_weight_dtype dtype, uint64_t seed)
{
    slm_tensor_info table[SLM_TENSOR_COUNT];
    SLM_CHECK(slm_checkpoint_table(cfg, table));
    hf_tensor *ts = NULL;
    size_t n = 0;
    char *header = NULL;
    size_t header_len = 0;
    FILE *f = NULL;
    slm_status rc = list_tensors(cfg, table, &ts, &n);
    if (rc == SLM_OK)
        rc = st_header(ts, n, dtype, &header, &header_len);
    if (rc == SLM_OK && !(f = fopen(path, "wb")))
        rc = slm_fail(SLM_ERR_IO, "%s: cannot create: %s", path,
                      strerror(errno));
    if (rc == SLM_OK) {
        uint8_t len8[8];
        for (int i = 0; i < 8; i++)
            len8[i] = (uint8_t)((uint64_t)header_len >> (8 * i));
        rc = write_all(f, path, len8, sizeof len8);
    }
    if (rc == SLM_OK)
        rc = write_all(f, path, header, header_len);
    uint64_t rng = seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;
    if (rng == 0)
        rng = 1;
    for (size_t i = 0; i < n && rc == SLM_OK; i++)
        rc = write_values(f, path, &ts[i], dtype, &rng);
    if (f && fclose(f) != 0 && rc == SLM_OK)
        rc =
            slm_fail(SLM_ERR_IO, "%s: close failed: %s", path, strerror(errno));
    if (rc != SLM_OK && f)
        remove(path);
    free(header);
    free(ts);
    return rc;
}

/* eos_token_id: one id, or the list when the model has several. */
static json_t *eos_json(const slm_model_config *c)
{
    if (c->n_eos_ids == 1)
        return json_integer(c->eos_ids[0]);
    json_t *a = json_array();
    for (int32_t i = 0; a && i < c->n_eos_ids; i++)
        json_array_append_new(a, json_integer(c->eos_ids[i]));
    return a;
}

static slm_status write_json(const char *path, json_t *obj)
{
    if (!obj)
        return slm_fail(SLM_ERR_NOMEM, "mkmodel: out of memory");
    /* 9 digits: every float (the values come from floats) and no more */
    int bad = json_dump_file(obj, path,
                             JSON_INDENT(2) | JSON_PRESERVE_ORDER |
                                 JSON_REAL_PRECISION(9));
    json_decref(obj);
    if (bad)
        return slm_fail(SLM_ERR_IO, "%s: write failed: %s", path,
                        strerror(errno));
    return SLM_OK;
}

/* config.json as transformers writes it for this architecture (its older,
 * most published style: rope_theta and rope_scaling at the top). */
static json_t *config_json(const slm_model_config *c, const hf_arch *a,
                           slm_weight_dtype dtype)
{
    json_t *o = json_pack(
        "{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:s,s:i,s:f,s:f,s:b,s:i,s:i,"
        "s:o,s:s,s:b}",
        "architectures", a->hf_class, "model_type", a->model_type,
        "hidden_size", c->dim, "intermediate_size", c->hidden_dim,
        "num_hidden_layers", c->n_layers, "num_attention_heads", c->n_heads,
        "num_key_value_heads", c->n_kv_heads, "head_dim", c->head_size,
        "hidden_act", "silu", "max_position_embeddings", c->seq_len,
        "rms_norm_eps", short_real(c->rms_norm_eps), "rope_theta",
        short_real(c->rope_theta), "tie_word_embeddings", c->shared_classifier,
        "vocab_size", c->vocab_size, "bos_token_id", c->bos_id, "eos_token_id",
        eos_json(c), "torch_dtype", torch_dtype_name(dtype), "attention_bias",
        c->qkv_bias);
    if (!o)
        return NULL;
    if (c->rope_scaling.type == SLM_ROPE_LLAMA3)
        json_object_set_new(
            o, "rope_scaling",
            json_pack("{s:s,s:f,s:f,s:f,s:i}", "rope_type", "llama3", "factor",
                      (double)c->rope_scaling.factor, "low_freq_factor",
                      (double)c->rope_scaling.low_freq_factor,
                      "high_freq_factor",
                      (double)c->rope_scaling.high_freq_factor,
                      "original_max_position_embeddings",
                      c->rope_scaling.original_max_position_embeddings));
    else
        json_object_set_new(o, "rope_scaling", json_null());
    if (a->arch == SLM_ARCH_QWEN2 || a->arch == SLM_ARCH_QWEN3) {
        /* Qwen2's config has no attention_bias: its biases are built in */
        if (a->arch == SLM_ARCH_QWEN2)
            json_object_del(o, "attention_bias");
        json_object_set_new(o, "use_sliding_window", json_false());
        json_object_set_new(o, "sliding_window", json_null());
    }
    if (a->arch == SLM_ARCH_MISTRAL)
        json_object_set_new(o, "sliding_window", json_null());
    return o;
}

static slm_status make_dir(const char *dir)
{
    if (mkdir(dir, 0755) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
            return SLM_OK;
        return slm_fail(SLM_ERR_IO, "%s: exists and is not a directory", dir);
    }
    return slm_fail(SLM_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
}

static slm_status path_in(const char *dir, const char *file, char *out,
                          size_t cap)
{
    int n = snprintf(out, cap, "%s/%s", dir, file);
    if (n < 0 || (size_t)n >= cap)
        return slm_fail(SLM_ERR_INVALID, "%s: path too long", dir);
    return SLM_OK;
}

/* ---- The tokenizer of a made directory --------------------------------- */

/* The vocabulary being made: pieces (UTF-8) in id order, and an index of
 * them (piece -> id) to keep them distinct. */
typedef struct {
    char **piece;
    size_t n, cap;
    json_t *index;
} vocab_list;

static void vocab_free(vocab_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->piece[i]);
    free(l->piece);
    json_decref(l->index);
}

/* Appends s (copied) as the next id. */
static slm_status vocab_add(vocab_list *l, const char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 1024;
        char **p = realloc(l->piece, cap * sizeof *p);
        if (!p)
            return slm_fail(SLM_ERR_NOMEM, "mkmodel: out of memory");
        l->piece = p;
        l->cap = cap;
    }
    char *copy = strdup(s);
    if (!copy ||
        json_object_set_new(l->index, s, json_integer((json_int_t)l->n)) != 0) {
        free(copy);
        return slm_fail(SLM_ERR_NOMEM, "mkmodel: out of memory");
    }
    l->piece[l->n++] = copy;
    return SLM_OK;
}

static slm_status vocab_id(const vocab_list *l, const char *s, size_t *id)
{
    json_t *v = json_object_get(l->index, s);
    if (!v)
        return slm_fail(SLM_ERR_INVALID, "mkmodel: no piece '%s'", s);
    *id = (size_t)json_integer_value(v);
    return SLM_OK;
}

/* The UTF-8 of code point cp (< 0x800 here) into out, NUL-terminated. */
static void utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = '\0';
        return;
    }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    out[2] = '\0';
}

/* GPT-2's byte-to-character map, with which a byte-level vocabulary spells
 * bytes: printable Latin-1 bytes stand for themselves, the other 68 for
 * U+0100 onwards, in byte order. */
static bool byte_is_printable(uint32_t b)
{
    return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
}

static uint32_t byte_char(uint32_t b)
{
    if (byte_is_printable(b))
        return b;
    uint32_t n = 0;
    for (uint32_t c = 0; c < b; c++)
        n += !byte_is_printable(c);
    return 0x100 + n;
}

/* Grows the vocabulary to `target` pieces by merging two pieces drawn
 * (seeded) from a pool - the base ids given, then every merge made - each
 * merge recorded, in rank order, in `merges` as [left, right], so that a
 * BPE tokenizer reaches every piece. The right piece is drawn from the
 * older part of the pool, so merges build on short ones like words do.
 * Pieces stay under 24 bytes. */
static slm_status add_merges(vocab_list *v, const size_t *base, size_t n_base,
                             size_t target, json_t *merges, uint64_t *rng)
{
    const size_t cap = n_base + (target > v->n ? target - v->n : 0);
    size_t *pool = malloc(cap * sizeof *pool);
    if (!pool)
        return slm_fail(SLM_ERR_NOMEM, "mkmodel: out of memory");
    memcpy(pool, base, n_base * sizeof *pool);
    size_t n_pool = n_base;
    slm_status rc = SLM_OK;
    char buf[64];
    for (size_t tries = 0; v->n < target && rc == SLM_OK; tries++) {
        if (tries > 1000 * target) {
            rc =
                slm_fail(SLM_ERR_INVALID,
                         "mkmodel: could not make %zu distinct pieces", target);
            break;
        }
        const size_t a = pool[next_u64(rng) % n_pool];
        const size_t old = n_pool < 4 * n_base ? n_pool : 4 * n_base;
        const size_t b = pool[next_u64(rng) % old];
        const size_t la = strlen(v->piece[a]), lb = strlen(v->piece[b]);
        if (la + lb >= 24)
            continue;
        memcpy(buf, v->piece[a], la);
        memcpy(buf + la, v->piece[b], lb + 1);
        if (json_object_get(v->index, buf))
            continue;
        json_t *pair = json_pack("[s,s]", v->piece[a], v->piece[b]);
        if (!pair || json_array_append_new(merges, pair) != 0) {
            rc = slm_fail(SLM_ERR_NOMEM, "mkmodel: out of memory");
            break;
        }
        pool[n_pool++] = v->n;
        rc = vocab_add(v, buf);
    }
    free(pool);
    return rc;
}

static json_t *added_token(size_t id, const char *content)
{
    return json_pack("{s:I,s:s,s:b,s:b,s:b,s:b,s:b}", "id", (json_int_t)id,
                     "content", content, "single_word", 0, "lstrip", 0,
                     "rstrip", 0, "normalized", 0, "special", 1);
}

/* TemplateProcessing that puts `bos` (id) before each sequence, as Llama
 * 2's and Llama 3's tokenizer.json do. */
static json_t *bos_template(const char *bos, size_t id)
{
    return json_pack(
        "{s:s,s:[{s:{s:s,s:i}},{s:{s:s,s:i}}],"
        "s:[{s:{s:s,s:i}},{s:{s:s,s:i}},{s:{s:s,s:i}},{s:{s:s,s:i}}],"
        "s:{s:{s:s,s:[I],s:[s]}}}",
        "type", "TemplateProcessing", "single", "SpecialToken", "id", bos,
        "type_id", 0, "Sequence", "id", "A", "type_id", 0, "pair",
        "SpecialToken", "id", bos, "type_id", 0, "Sequence", "id", "A",
        "type_id", 0, "SpecialToken", "id", bos, "type_id", 1, "Sequence", "id",
        "B", "type_id", 1, "special_tokens", bos, "id", bos, "ids",
        (json_int_t)id, "tokens", bos);
}

/* The BPE model object over v and merges (references taken). */
static json_t *bpe_model(const vocab_list *v, json_t *merges, bool spm)
{
    json_t *vocab = json_object();
    for (size_t i = 0; vocab && i < v->n; i++)
        if (json_object_set_new(vocab, v->piece[i],
                                json_integer((json_int_t)i)) != 0) {
            json_decref(vocab);
            vocab = NULL;
        }
    if (!vocab) {
        json_decref(merges);
        return NULL;
    }
    return json_pack("{s:s,s:n,s:o,s:n,s:n,s:b,s:b,s:b,s:o,s:o}", "type", "BPE",
                     "dropout", "unk_token",
                     spm ? json_string("<unk>") : json_null(),
                     "continuing_subword_prefix", "end_of_word_suffix",
                     "fuse_unk", spm, "byte_fallback", spm, "ignore_merges",
                     !spm, "vocab", vocab, "merges", merges);
}

/* Llama 2's pipeline: "\u2581" for spaces and one in front, byte fallback,
 * <s> added in front; the decoder undoes it. */
static json_t *spm_tokenizer(vocab_list *v, json_t *merges, json_t *added)
{
    json_t *model = bpe_model(v, merges, true);
    json_t *normalizer =
        json_pack("{s:s,s:[{s:s,s:s},{s:s,s:{s:s},s:s}]}", "type", "Sequence",
                  "normalizers", "type", "Prepend", "prepend", "\u2581", "type",
                  "Replace", "pattern", "String", " ", "content", "\u2581");
    json_t *decoder = json_pack(
        "{s:s,s:[{s:s,s:{s:s},s:s},{s:s},{s:s},{s:s,s:s,s:i,s:i}]}", "type",
        "Sequence", "decoders", "type", "Replace", "pattern", "String",
        "\u2581", "content", " ", "type", "ByteFallback", "type", "Fuse",
        "type", "Strip", "content", " ", "start", 1, "stop", 0);
    return json_pack("{s:s,s:n,s:n,s:o,s:o,s:n,s:o,s:o,s:o}", "version", "1.0",
                     "truncation", "padding", "added_tokens", added,
                     "normalizer", normalizer, "pre_tokenizer",
                     "post_processor", bos_template("<s>", 1), "decoder",
                     decoder, "model", model);
}

/* Llama 3's or Qwen2's pipeline: the family's split pattern, then bytes as
 * GPT-2's characters; Llama 3 adds <|begin_of_text|>, Qwen nothing (and
 * normalizes to NFC). */
static json_t *byte_tokenizer(vocab_list *v, json_t *merges, json_t *added,
                              bool llama3, size_t bos_id)
{
    const char *pattern =
        slm_tokenizer_split_pattern(llama3 ? "Llama 3" : "Qwen2");
    json_t *model = bpe_model(v, merges, false);
    json_t *pre = json_pack(
        "{s:s,s:[{s:s,s:{s:s},s:s,s:b},{s:s,s:b,s:b,s:b}]}", "type", "Sequence",
        "pretokenizers", "type", "Split", "pattern", "Regex", pattern,
        "behavior", "Isolated", "invert", 0, "type", "ByteLevel",
        "add_prefix_space", 0, "trim_offsets", !llama3, "use_regex", 0);
    json_t *post = llama3 ? bos_template(llama3_specials[0], bos_id)
                          : json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel",
                                      "add_prefix_space", 0, "trim_offsets", 0,
                                      "use_regex", 0);
    json_t *decoder =
        json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space",
                  1, "trim_offsets", 1, "use_regex", 1);
    json_t *normalizer =
        llama3 ? json_null() : json_pack("{s:s}", "type", "NFC");
    return json_pack("{s:s,s:n,s:n,s:o,s:o,s:o,s:o,s:o,s:o}", "version", "1.0",
                     "truncation", "padding", "added_tokens", added,
                     "normalizer", normalizer, "pre_tokenizer", pre,
                     "post_processor", post, "decoder", decoder, "model",
                     model);
}

/* Writes tokenizer.json and tokenizer_config.json of cfg's family into
 * dir: exactly vocab_size tokens, the special ones where
 * slm_mkmodel_arch put their ids. No chat template: shardlm recognises
 * only the real ones, which a test copies in (tests/integration). */
static slm_status write_tokenizer(const char *dir, const slm_model_config *c,
                                  const hf_arch *a, uint64_t seed)
{
    vocab_list v = {.index = json_object()};
    json_t *merges = json_array(), *added = json_array(), *tok = NULL;
    uint64_t rng = seed * 0x2545f4914f6cdd1dULL + 0x9e3779b97f4a7c15ULL;
    if (rng == 0)
        rng = 1;
    slm_status rc = SLM_OK;
    size_t base[128], n_base = 0;
    const char *bos = NULL, *eos = NULL;
    char s[16];
    if (!v.index || !merges || !added) {
        rc = slm_fail(SLM_ERR_NOMEM, "mkmodel: out of memory");
        goto done;
    }
    const size_t V = (size_t)c->vocab_size;
    /* letters, digits and punctuation that merges are made of; with the
     * space's piece first */
    static const char chars[] = "etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYP"
                                "0123456789.,!?'-";
    if (!a->byte_level) {
        /* Llama 2's layout: <unk> <s> </s>, the 256 byte-fallback pieces,
         * then single characters and merges of them */
        for (size_t i = 0; i < COUNT(spm_specials) && rc == SLM_OK; i++) {
            rc = vocab_add(&v, spm_specials[i]);
            if (rc == SLM_OK &&
                json_array_append_new(added, added_token(i, spm_specials[i])))
                rc = slm_fail(SLM_ERR_NOMEM, "mkmodel: out of memory");
        }
        for (int b = 0; b < 256 && rc == SLM_OK; b++) {
            snprintf(s, sizeof s, "<0x%02X>", b);
            rc = vocab_add(&v, s);
        }
        base[n_base++] = v.n;
        if (rc == SLM_OK)
            rc = vocab_add(&v, "\u2581");
        for (size_t i = 0; chars[i] && rc == SLM_OK; i++) {
            s[0] = chars[i];
            s[1] = '\0';
            base[n_base++] = v.n;
            rc = vocab_add(&v, s);
        }
        if (rc == SLM_OK)
            rc = add_merges(&v, base, n_base, V, merges, &rng);
        bos = spm_specials[1];
        eos = spm_specials[2];
        if (rc == SLM_OK && !(tok = spm_tokenizer(&v, merges, added)))
            rc = slm_fail(SLM_ERR_NOMEM, "mkmodel: out of memory");
    } else {
        /* Llama 3's and Qwen's layout: the 256 bytes, merges, and the
         * special tokens last */
        for (uint32_t b = 0; b < 256 && rc == SLM_OK; b++) {
            utf8_put(byte_char(b), s);
            rc = vocab_add(&v, s);
        }
        utf8_put(byte_char(' '), s);
        if (rc == SLM_OK)
            rc = vocab_id(&v, s, &base[n_base++]);
        for (size_t i = 0; chars[i] && rc == SLM_OK; i++) {
            s[0] = chars[i];
            s[1] = '\0';
            rc = vocab_id(&v, s, &base[n_base++]);
        }
        const bool llama3 = a->arch == SLM_ARCH_LLAMA;
        const char *const *sp = llama3 ? llama3_specials : qwen_specials;
        const size_t n_sp =
            llama3 ? COUNT(llama3_specials) : COUNT(qwen_specials);
        if (rc == SLM_OK)
            rc = add_merges(&v, base, n_base, V - n_sp, merges, &rng);
        for (size_t i = 0; i < n_sp && rc == SLM_OK; i++) {
            rc = vocab_add(&v, sp[i]);
            if (rc == SLM_OK &&
                json_array_append_new(added, added_token(v.n - 1, sp[i])))
                rc = slm_fail(SLM_ERR_NOMEM, "mkmodel: out of memory");
        }
        bos = sp[0];
        eos = llama3 ? sp[4] : sp[2]; /* <|eot_id|>, <|im_end|> */
        /* the added tokens are not in the model's vocab */
        for (size_t i = 0; i < n_sp; i++)
            free(v.piece[--v.n]);
        if (rc == SLM_OK &&
            !(tok = byte_tokenizer(&v, merges, added, llama3, V - n_sp)))
            rc = slm_fail(SLM_ERR_NOMEM, "mkmodel: out of memory");
    }
    merges = added = NULL; /* owned by tok, or freed by a failed pack */
    char path[4096];
    if (rc == SLM_OK)
        rc = path_in(dir, "tokenizer.json", path, sizeof path);
    if (rc == SLM_OK) {
        rc = write_json(path, tok);
        tok = NULL;
    }
    if (rc == SLM_OK)
        rc = path_in(dir, "tokenizer_config.json", path, sizeof path);
    if (rc == SLM_OK)
        rc = write_json(
            path,
            json_pack("{s:s,s:s,s:s,s:i,s:b,s:b}", "tokenizer_class",
                      "PreTrainedTokenizerFast", "bos_token", bos, "eos_token",
                      eos, "model_max_length", c->seq_len, "add_bos_token",
                      !a->byte_level || a->arch == SLM_ARCH_LLAMA,
                      "add_eos_token", 0));
done:
    json_decref(tok);
    json_decref(merges);
    json_decref(added);
    vocab_free(&v);
    return rc;
}

slm_status slm_mkmodel_write_hf(const char *dir, const slm_model_config *cfg_in,
                                slm_weight_dtype dtype, uint64_t seed)
{
    slm_model_config cfg = *cfg_in;
    SLM_CHECK(slm_model_config_validate(&cfg, "mkmodel"));
    const hf_arch *a = arch_of(&cfg);
    if (!a)
        return slm_fail(SLM_ERR_INVALID,
                        "mkmodel: the config is of no architecture that "
                        "slm_mkmodel_arch makes");
    char path[4096];
    SLM_CHECK(make_dir(dir));
    SLM_CHECK(path_in(dir, "config.json", path, sizeof path));
    SLM_CHECK(write_json(path, config_json(&cfg, a, dtype)));
    SLM_CHECK(path_in(dir, "generation_config.json", path, sizeof path));
    SLM_CHECK(
        write_json(path, json_pack("{s:i,s:o}", "bos_token_id", cfg.bos_id,
                                   "eos_token_id", eos_json(&cfg))));
    SLM_CHECK(write_tokenizer(dir, &cfg, a, seed));
    SLM_CHECK(path_in(dir, "model.safetensors", path, sizeof path));
    SLM_CHECK(write_safetensors(path, &cfg, dtype, seed));
    return SLM_OK;
}
