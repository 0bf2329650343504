/* model/mkmodel.c - see mkmodel.h. */
#include "model/mkmodel.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
