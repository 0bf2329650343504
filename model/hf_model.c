/* model/hf_model.c - Hugging Face model directories; see hf_model.h. */
#include "model/hf_model.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/checked.h"
#include "model/hf_config.h"
#include "model/safetensors.h"

bool slm_hf_model_is_hf(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return true;
    const size_t n = strlen(path), k = strlen(".safetensors");
    return n > k && strcmp(path + n - k, ".safetensors") == 0;
}

/* The directory of the model: path itself, or the one holding the
 * .safetensors file. */
static slm_status model_dir(const char *path, char *dir, size_t cap)
{
    struct stat st;
    int n;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        n = snprintf(dir, cap, "%s", path);
    } else {
        const char *slash = strrchr(path, '/');
        n = slash ? snprintf(dir, cap, "%.*s", (int)(slash - path), path)
                  : snprintf(dir, cap, ".");
    }
    if (n < 0 || (size_t)n >= cap)
        return slm_fail(SLM_ERR_INVALID, "%s: path too long", path);
    return SLM_OK;
}

void slm_hf_model_files_free(char **files, size_t n)
{
    for (size_t i = 0; files && i < n; i++)
        free(files[i]);
    free(files);
}

static bool regular(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool has_suffix(const char *s, const char *suffix)
{
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Appends dir/name to the list (when `only_if_there`, only if it is a
 * regular file). */
static slm_status add_file(char ***files, size_t *n, size_t *cap,
                           const char *dir, const char *name,
                           bool only_if_there)
{
    char path[PATH_MAX];
    int k = snprintf(path, sizeof path, "%s/%s", dir, name);
    if (k < 0 || (size_t)k >= sizeof path)
        return slm_fail(SLM_ERR_INVALID, "%s: path too long", dir);
    if (only_if_there && !regular(path))
        return SLM_OK;
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 8;
        char **f = realloc(*files, c * sizeof *f);
        if (!f)
            return slm_fail(SLM_ERR_NOMEM, "%s: out of memory", dir);
        *files = f;
        *cap = c;
    }
    if (!((*files)[*n] = strdup(path)))
        return slm_fail(SLM_ERR_NOMEM, "%s: out of memory", dir);
    (*n)++;
    return SLM_OK;
}

slm_status slm_hf_model_files(const char *path, char ***files, size_t *n)
{
    char dir[PATH_MAX];
    SLM_CHECK(model_dir(path, dir, sizeof dir));
    char **list = NULL;
    size_t count = 0, cap = 0;
    slm_status rc = add_file(&list, &count, &cap, dir, "config.json", false);
    struct stat st;
    if (rc == SLM_OK && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        DIR *d = opendir(dir);
        if (!d)
            rc = slm_fail(SLM_ERR_IO, "%s: cannot list the directory", dir);
        for (struct dirent *e; rc == SLM_OK && d && (e = readdir(d));)
            if (has_suffix(e->d_name, ".safetensors") ||
                strcmp(e->d_name, "model.safetensors.index.json") == 0)
                rc = add_file(&list, &count, &cap, dir, e->d_name, true);
        if (d)
            closedir(d);
    } else if (rc == SLM_OK) {
        const char *slash = strrchr(path, '/');
        rc =
            add_file(&list, &count, &cap, dir, slash ? slash + 1 : path, false);
    }
    static const char *const extra[] = {
        "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"};
    for (size_t i = 0; rc == SLM_OK && i < sizeof extra / sizeof *extra; i++)
        rc = add_file(&list, &count, &cap, dir, extra[i], true);
    if (rc != SLM_OK) {
        slm_hf_model_files_free(list, count);
        return rc;
    }
    *files = list;
    *n = count;
    return SLM_OK;
}

/* Where each tensor of the table (checkpoint.h) is in the files, and how
 * it is read: the HF name ("%zu" for the layer), its shape as the config
 * says, and whether its rows (q_proj, k_proj) or its elements (biases and
 * norms of q and k) are in rotate-half order. */
typedef enum { PLAIN, ROTARY_ROWS, ROTARY_ELEMENTS } order;

typedef struct {
    const char *name; /* printf format; layer tensors take the layer */
    bool per_layer;
    order order;
} hf_name;

static const hf_name names[SLM_TENSOR_COUNT] = {
    [SLM_TENSOR_TOKEN_EMBEDDING] = {"model.embed_tokens.weight", false, PLAIN},
    [SLM_TENSOR_RMS_ATT] = {"model.layers.%zu.input_layernorm.weight", true,
                            PLAIN},
    [SLM_TENSOR_WQ] = {"model.layers.%zu.self_attn.q_proj.weight", true,
                       ROTARY_ROWS},
    [SLM_TENSOR_WK] = {"model.layers.%zu.self_attn.k_proj.weight", true,
                       ROTARY_ROWS},
    [SLM_TENSOR_WV] = {"model.layers.%zu.self_attn.v_proj.weight", true,
                       PLAIN},
    [SLM_TENSOR_WO] = {"model.layers.%zu.self_attn.o_proj.weight", true,
                       PLAIN},
    [SLM_TENSOR_RMS_FFN] = {"model.layers.%zu.post_attention_layernorm.weight",
                            true, PLAIN},
    [SLM_TENSOR_W1] = {"model.layers.%zu.mlp.gate_proj.weight", true, PLAIN},
    [SLM_TENSOR_W2] = {"model.layers.%zu.mlp.down_proj.weight", true, PLAIN},
    [SLM_TENSOR_W3] = {"model.layers.%zu.mlp.up_proj.weight", true, PLAIN},
    [SLM_TENSOR_RMS_FINAL] = {"model.norm.weight", false, PLAIN},
    [SLM_TENSOR_WCLS] = {"lm_head.weight", false, PLAIN},
    [SLM_TENSOR_BQ] = {"model.layers.%zu.self_attn.q_proj.bias", true,
                       ROTARY_ELEMENTS},
    [SLM_TENSOR_BK] = {"model.layers.%zu.self_attn.k_proj.bias", true,
                       ROTARY_ELEMENTS},
    [SLM_TENSOR_BV] = {"model.layers.%zu.self_attn.v_proj.bias", true, PLAIN},
    [SLM_TENSOR_Q_NORM] = {"model.layers.%zu.self_attn.q_norm.weight", true,
                           ROTARY_ELEMENTS},
    [SLM_TENSOR_K_NORM] = {"model.layers.%zu.self_attn.k_norm.weight", true,
                           ROTARY_ELEMENTS},
};

struct slm_hf_model {
    char *path; /* for messages */
    slm_safetensors_t *st;
    slm_model_config cfg;
    slm_tensor_info table[SLM_TENSOR_COUNT]; /* our shapes */
    /* (per tensor id) the file's tensor of each layer, or NULL */
    const slm_st_tensor **tensors[SLM_TENSOR_COUNT];
};

static bool is_vector(const slm_tensor_info *t)
{
    return t->rows == 1;
}

/* Checks t has the shape the config gives tensor `id`: (rows, cols), or a
 * vector of cols elements (rows == 1 in our table). */
static slm_status check_shape(const slm_hf_model_t *m, const slm_st_tensor *t,
                              const slm_tensor_info *want)
{
    const bool ok = is_vector(want)
                        ? t->rank == 1 && t->shape[0] == want->cols
                        : t->rank == 2 && t->shape[0] == want->rows &&
                              t->shape[1] == want->cols;
    if (ok)
        return SLM_OK;
    char got[96] = "";
    size_t at = 0;
    for (size_t i = 0; i < t->rank && at < sizeof got - 24; i++)
        at += (size_t)snprintf(got + at, sizeof got - at, "%s%zu",
                               i ? ", " : "", t->shape[i]);
    return is_vector(want)
               ? slm_fail(SLM_ERR_FORMAT,
                          "%s: tensor '%s' has shape [%s]; config.json needs "
                          "[%llu]",
                          m->path, t->name, got,
                          (unsigned long long)want->cols)
               : slm_fail(SLM_ERR_FORMAT,
                          "%s: tensor '%s' has shape [%s]; config.json needs "
                          "[%llu, %llu]",
                          m->path, t->name, got,
                          (unsigned long long)want->rows,
                          (unsigned long long)want->cols);
}

/* Finds every tensor the config needs, with its shape. */
static slm_status find_all(slm_hf_model_t *m)
{
    for (size_t id = 0; id < SLM_TENSOR_COUNT; id++) {
        const slm_tensor_info *want = &m->table[id];
        if (!names[id].name || want->layers == 0)
            continue; /* freq_cis: not in HF files; absent optional ones */
        if (id == SLM_TENSOR_WCLS && m->cfg.shared_classifier)
            continue;
        m->tensors[id] = calloc((size_t)want->layers, sizeof(void *));
        if (!m->tensors[id])
            return slm_fail(SLM_ERR_NOMEM, "%s: out of memory", m->path);
        for (size_t l = 0; l < (size_t)want->layers; l++) {
            char name[160];
            (void)slm_hf_model_tensor_name(id, l, name, sizeof name);
            const slm_st_tensor *t = slm_safetensors_find(m->st, name);
            if (!t)
                return slm_fail(SLM_ERR_FORMAT, "%s: tensor '%s' is missing",
                                m->path, name);
            SLM_CHECK(check_shape(m, t, want));
            m->tensors[id][l] = t;
        }
    }
    return SLM_OK;
}

/* A tensor we would not use is refused by name, rather than ignored: it
 * means the file is of an architecture other than its config says. */
static slm_status refuse_unknown(const slm_hf_model_t *m)
{
    for (size_t i = 0; i < slm_safetensors_count(m->st); i++) {
        const slm_st_tensor *t = slm_safetensors_at(m->st, i);
        bool used = false;
        for (size_t id = 0; id < SLM_TENSOR_COUNT && !used; id++)
            for (size_t l = 0; m->tensors[id] && l < m->table[id].layers; l++)
                if (m->tensors[id][l] == t) {
                    used = true;
                    break;
                }
        if (used)
            continue;
        /* the rotary inv_freq buffer older exports saved: we compute it */
        const char *suffix = ".self_attn.rotary_emb.inv_freq";
        const size_t n = strlen(t->name), k = strlen(suffix);
        if (n > k && strcmp(t->name + n - k, suffix) == 0 &&
            strncmp(t->name, "model.layers.", 13) == 0)
            continue;
        if (strcmp(t->name, "lm_head.weight") == 0)
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: tensor 'lm_head.weight' is present but "
                            "config.json says tie_word_embeddings: which "
                            "classifier is meant is unclear",
                            m->path);
        return slm_fail(SLM_ERR_UNSUPPORTED,
                        "%s: tensor '%s' is not part of this architecture "
                        "(refused rather than ignored)",
                        m->path, t->name);
    }
    return SLM_OK;
}

slm_status slm_hf_model_open(const char *path, slm_model_config *cfg,
                             slm_hf_model_t **out)
{
    char dir[PATH_MAX], file[PATH_MAX + 16];
    SLM_CHECK(model_dir(path, dir, sizeof dir));
    snprintf(file, sizeof file, "%s/config.json", dir);
    slm_model_config c;
    SLM_CHECK(slm_hf_config_load(file, &c));

    slm_hf_model_t *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return slm_fail(SLM_ERR_NOMEM, "%s: out of memory", path);
    }
    m->cfg = c;
    slm_status rc = SLM_OK;
    /* The shapes: the llama2.c layout of this config (checkpoint.h). */
    if (slm_checkpoint_file_size(&c) == 0) {
        rc = slm_fail(SLM_ERR_RANGE, "%s: the model's size overflows", path);
        goto fail;
    }
    SLM_CHECK_GOTO(slm_checkpoint_table(&c, m->table), rc, fail);
    SLM_CHECK_GOTO(slm_safetensors_open(path, &m->st), rc, fail);
    SLM_CHECK_GOTO(find_all(m), rc, fail);
    SLM_CHECK_GOTO(refuse_unknown(m), rc, fail);
    *cfg = c;
    *out = m;
    return SLM_OK;
fail:
    slm_hf_model_destroy(&m);
    return rc;
}

slm_status slm_hf_model_read(const slm_hf_model_t *m, slm_tensor_id id,
                             size_t layer, size_t row0, size_t n_rows,
                             size_t col0, size_t n_cols, float *out)
{
    if (id == SLM_TENSOR_WCLS && m->cfg.shared_classifier)
        id = SLM_TENSOR_TOKEN_EMBEDDING;
    const slm_tensor_info *info = &m->table[id];
    if (!m->tensors[id] || layer >= info->layers)
        return slm_fail(SLM_ERR_INVALID, "%s: the model has no tensor %s",
                        m->path, info->name);
    const slm_st_tensor *t = m->tensors[id][layer];
    const size_t hs = (size_t)m->cfg.head_size, half = hs / 2;
    switch (names[id].order) {
    case PLAIN:
        return slm_safetensors_read_f32(t, row0, n_rows, col0, n_cols, out);
    case ROTARY_ROWS:
        /* our row 2j of a head is HF's row j, row 2j+1 HF's j + half */
        for (size_t r = 0; r < n_rows; r++) {
            const size_t i = row0 + r, in_head = i % hs;
            const size_t from =
                i - in_head + (in_head % 2 ? half : 0) + in_head / 2;
            SLM_CHECK(slm_safetensors_read_f32(t, from, 1, col0, n_cols,
                                               out + r * n_cols));
        }
        return SLM_OK;
    case ROTARY_ELEMENTS:
        /* a vector (one row): the same permutation on its elements */
        for (size_t k = 0; k < n_cols; k++) {
            const size_t i = col0 + k, in_head = i % hs;
            const size_t from =
                i - in_head + (in_head % 2 ? half : 0) + in_head / 2;
            SLM_CHECK(slm_safetensors_read_f32(t, 0, 1, from, 1, out + k));
        }
        return n_rows == 1 ? SLM_OK
                           : slm_fail(SLM_ERR_RANGE, "%s: %s is a vector",
                                      m->path, info->name);
    }
    return slm_fail(SLM_ERR_INVALID, "%s: tensor order", m->path);
}

bool slm_hf_model_tensor_name(slm_tensor_id id, size_t layer, char *buf,
                              size_t cap)
{
    if ((int)id < 0 || id >= SLM_TENSOR_COUNT || !names[id].name)
        return false;
    /* "model.layers.%zu.X": the layer where the format says (the names are
     * ours, but a literal format keeps the compiler checking it) */
    const char *f = names[id].name, *mark = strstr(f, "%zu");
    int n = names[id].per_layer && mark
                ? snprintf(buf, cap, "%.*s%zu%s", (int)(mark - f), f, layer,
                           mark + 3)
                : snprintf(buf, cap, "%s", f);
    return n >= 0 && (size_t)n < cap;
}

slm_weight_dtype slm_hf_model_dtype(const slm_hf_model_t *m)
{
    switch (m->tensors[SLM_TENSOR_WQ][0]->dtype) {
    case SLM_ST_BF16:
        return SLM_WEIGHT_BF16;
    case SLM_ST_F16:
        return SLM_WEIGHT_F16;
    default:
        return SLM_WEIGHT_F32;
    }
}

void slm_hf_model_destroy(slm_hf_model_t **m)
{
    if (!m || !*m)
        return;
    for (size_t id = 0; id < SLM_TENSOR_COUNT; id++)
        free((void *)(*m)->tensors[id]);
    slm_safetensors_destroy(&(*m)->st);
    free((*m)->path);
    free(*m);
    *m = NULL;
}
