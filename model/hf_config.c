/* model/hf_config.c - config.json; what is read and refused is in
 * hf_config.h. */
#include "model/hf_config.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"

/* jansson's own nesting limit is 2048; a config needs 3 levels. Deeper
 * documents are refused before they cost anything. */
#define MAX_DEPTH 16

static const struct {
    const char *name;
    slm_arch arch;
} supported[] = {
    {"LlamaForCausalLM", SLM_ARCH_LLAMA},
    {"MistralForCausalLM", SLM_ARCH_MISTRAL},
    {"Qwen2ForCausalLM", SLM_ARCH_QWEN2},
    {"Qwen3ForCausalLM", SLM_ARCH_QWEN3},
};

/* The depth of nesting of brackets outside strings: checked before jansson
 * builds anything, so that a deep document is refused in linear time. */
static bool too_deep(const char *text, size_t len)
{
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > MAX_DEPTH)
                return true;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return false;
}

/* An integer field in [lo, hi]; `def` when absent or null, unless required
 * (then def is ignored). */
static slm_status get_int(const json_t *obj, const char *key, bool required,
                          json_int_t def, json_int_t lo, json_int_t hi,
                          const char *what, int32_t *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required)
            return slm_fail(SLM_ERR_FORMAT, "%s: field '%s' is missing", what,
                            key);
        *out = (int32_t)def;
        return SLM_OK;
    }
    if (!json_is_integer(v))
        return slm_fail(SLM_ERR_FORMAT, "%s: field '%s' is not an integer",
                        what, key);
    const json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: field '%s' = %lld is out of range [%lld, %lld]",
                        what, key, (long long)x, (long long)lo, (long long)hi);
    *out = (int32_t)x;
    return SLM_OK;
}

/* A number field (integer or real), finite, in [lo, hi]. */
static slm_status get_num(const json_t *obj, const char *key, bool required,
                          double def, double lo, double hi, const char *what,
                          float *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required)
            return slm_fail(SLM_ERR_FORMAT, "%s: field '%s' is missing", what,
                            key);
        *out = (float)def;
        return SLM_OK;
    }
    if (!json_is_number(v))
        return slm_fail(SLM_ERR_FORMAT, "%s: field '%s' is not a number", what,
                        key);
    const double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: field '%s' = %g is out of range [%g, %g]", what,
                        key, x, lo, hi);
    *out = (float)x;
    return SLM_OK;
}

static slm_status get_bool(const json_t *obj, const char *key, bool def,
                           const char *what, bool *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return SLM_OK;
    }
    if (!json_is_boolean(v))
        return slm_fail(SLM_ERR_FORMAT, "%s: field '%s' is not true or false",
                        what, key);
    *out = json_is_true(v);
    return SLM_OK;
}

/* A field that, when present, must be `want`: what the forward pass does
 * not have (biases, another activation) is refused rather than ignored. */
static slm_status require_false(const json_t *obj, const char *key,
                                const char *what)
{
    bool b = false;
    SLM_CHECK(get_bool(obj, key, false, what, &b));
    if (b)
        return slm_fail(SLM_ERR_UNSUPPORTED,
                        "%s: field '%s' = true is not supported (this "
                        "architecture runs without biases)",
                        what, key);
    return SLM_OK;
}

/* The rope: theta, and the scaling (rope_scaling or rope_parameters). */
static slm_status read_rope(const json_t *root, const char *what,
                            slm_model_config *c)
{
    const json_t *params = json_object_get(root, "rope_parameters");
    const json_t *scaling = json_object_get(root, "rope_scaling");
    if (params && !json_is_null(params)) {
        if (!json_is_object(params))
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: field 'rope_parameters' is not an object",
                            what);
        if (scaling && !json_is_null(scaling))
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: both 'rope_parameters' and 'rope_scaling' "
                            "are given: which one holds is unclear",
                            what);
        scaling = params;
    }
    /* rope_theta: in rope_parameters (transformers 5) or at the top. */
    const json_t *theta_at =
        params && json_object_get(params, "rope_theta") ? params : root;
    SLM_CHECK(
        get_num(theta_at, "rope_theta", false, 10000.0, 1.0, 1e12, what,
                &c->rope_theta));
    c->rope_scaling.type = SLM_ROPE_DEFAULT;
    if (!scaling || json_is_null(scaling))
        return SLM_OK;
    if (!json_is_object(scaling))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: field 'rope_scaling' is not an object", what);
    const json_t *type = json_object_get(scaling, "rope_type");
    if (!type)
        type = json_object_get(scaling, "type");
    if (!type || json_is_null(type))
        return SLM_OK; /* rope_parameters with the theta alone */
    if (!json_is_string(type))
        return slm_fail(SLM_ERR_FORMAT, "%s: rope type is not a string", what);
    const char *t = json_string_value(type);
    if (strcmp(t, "default") == 0)
        return SLM_OK;
    if (strcmp(t, "llama3") != 0)
        return slm_fail(SLM_ERR_UNSUPPORTED,
                        "%s: rope type '%.64s' is not supported (default or "
                        "llama3)",
                        what, t);
    slm_rope_scaling *rs = &c->rope_scaling;
    rs->type = SLM_ROPE_LLAMA3;
    SLM_CHECK(get_num(scaling, "factor", true, 0, 1.0, 1024.0, what,
                      &rs->factor));
    SLM_CHECK(get_num(scaling, "low_freq_factor", true, 0, 1e-6, 1024.0,
                      what, &rs->low_freq_factor));
    SLM_CHECK(get_num(scaling, "high_freq_factor", true, 0, 1e-6, 1024.0,
                      what, &rs->high_freq_factor));
    return get_int(scaling, "original_max_position_embeddings", true, 0, 1,
                   SLM_MAX_SEQ_LEN, what,
                   &rs->original_max_position_embeddings);
}

/* bos_token_id / eos_token_id: an id, a list of ids, or null. */
static slm_status read_token_ids(const json_t *root, const char *what,
                                 slm_model_config *c)
{
    const json_t *bos = json_object_get(root, "bos_token_id");
    c->bos_id = -1;
    if (bos && !json_is_null(bos))
        SLM_CHECK(get_int(root, "bos_token_id", true, 0, 0, SLM_MAX_VOCAB - 1,
                          what, &c->bos_id));
    const json_t *eos = json_object_get(root, "eos_token_id");
    c->n_eos_ids = 0;
    if (!eos || json_is_null(eos))
        return SLM_OK;
    if (json_is_integer(eos))
        return get_int(root, "eos_token_id", true, 0, 0, SLM_MAX_VOCAB - 1,
                       what, &c->eos_ids[c->n_eos_ids++]);
    if (!json_is_array(eos))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: field 'eos_token_id' is neither an id nor a list "
                        "of ids",
                        what);
    if (json_array_size(eos) > SLM_MAX_EOS_IDS)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: field 'eos_token_id' lists %zu ids (at most %d)",
                        what, json_array_size(eos), SLM_MAX_EOS_IDS);
    for (size_t i = 0; i < json_array_size(eos); i++) {
        const json_t *v = json_array_get(eos, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= SLM_MAX_VOCAB)
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: field 'eos_token_id'[%zu] is not a token id",
                            what, i);
        c->eos_ids[c->n_eos_ids++] = (int32_t)json_integer_value(v);
    }
    return SLM_OK;
}

static slm_status read_architecture(const json_t *root, const char *what,
                                    slm_model_config *c)
{
    const json_t *archs = json_object_get(root, "architectures");
    if (!json_is_array(archs) || json_array_size(archs) != 1 ||
        !json_is_string(json_array_get(archs, 0)))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: field 'architectures' must list one "
                        "architecture (a string)",
                        what);
    const char *a = json_string_value(json_array_get(archs, 0));
    for (size_t i = 0; i < sizeof supported / sizeof *supported; i++)
        if (strcmp(a, supported[i].name) == 0) {
            c->arch = supported[i].arch;
            /* Qwen2's q, k and v projections always have biases (its
             * attention has no switch for them); Qwen3 normalizes each head
             * of q and k. */
            c->qkv_bias = c->arch == SLM_ARCH_QWEN2;
            c->qk_norm = c->arch == SLM_ARCH_QWEN3;
            return SLM_OK;
        }
    return slm_fail(SLM_ERR_UNSUPPORTED,
                    "%s: architecture '%.64s' is not supported "
                    "(LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
                    "Qwen3ForCausalLM)",
                    what, a);
}

static slm_status read_config(const json_t *root, const char *what,
                              slm_model_config *c)
{
    if (!json_is_object(root))
        return slm_fail(SLM_ERR_FORMAT, "%s: not a JSON object", what);
    SLM_CHECK(read_architecture(root, what, c));
    const json_t *q = json_object_get(root, "quantization_config");
    if (q && !json_is_null(q))
        return slm_fail(SLM_ERR_UNSUPPORTED,
                        "%s: field 'quantization_config' is present: "
                        "quantized checkpoints are not supported (float32, "
                        "bfloat16 and float16 weights are)",
                        what);
    const json_t *act = json_object_get(root, "hidden_act");
    if (act && (!json_is_string(act) ||
                strcmp(json_string_value(act), "silu") != 0))
        return slm_fail(SLM_ERR_UNSUPPORTED,
                        "%s: field 'hidden_act' = '%.32s' is not supported "
                        "(silu)",
                        what,
                        json_is_string(act) ? json_string_value(act) : "?");
    /* Llama's and Qwen3's attention_bias puts biases on o_proj too, which
     * the forward pass does not have; Qwen2 has no such field. */
    if (c->arch != SLM_ARCH_QWEN2)
        SLM_CHECK(require_false(root, "attention_bias", what));
    SLM_CHECK(require_false(root, "mlp_bias", what));
    SLM_CHECK(get_int(root, "hidden_size", true, 0, 1, SLM_MAX_DIM, what,
                      &c->dim));
    SLM_CHECK(get_int(root, "intermediate_size", true, 0, 1, SLM_MAX_HIDDEN,
                      what, &c->hidden_dim));
    SLM_CHECK(get_int(root, "num_hidden_layers", true, 0, 1, SLM_MAX_LAYERS,
                      what, &c->n_layers));
    SLM_CHECK(get_int(root, "num_attention_heads", true, 0, 1, SLM_MAX_HEADS,
                      what, &c->n_heads));
    SLM_CHECK(get_int(root, "num_key_value_heads", false, c->n_heads, 1,
                      SLM_MAX_HEADS, what, &c->n_kv_heads));
    SLM_CHECK(get_int(root, "vocab_size", true, 0, 3, SLM_MAX_VOCAB, what,
                      &c->vocab_size));
    SLM_CHECK(get_int(root, "max_position_embeddings", true, 0, 1,
                      SLM_MAX_SEQ_LEN, what, &c->seq_len));
    /* head_dim may differ from hidden_size / num_attention_heads (Qwen3
     * 0.6B and 4B, Mistral Nemo): q_proj is then (heads * head_dim,
     * hidden) and o_proj its transpose. Absent (or null): 0, and
     * validation takes the quotient. */
    SLM_CHECK(get_int(root, "head_dim", false, 0, 2, SLM_MAX_DIM, what,
                      &c->head_size));
    SLM_CHECK(get_num(root, "rms_norm_eps", false, 1e-6, 1e-12, 0.5, what,
                      &c->rms_norm_eps));
    SLM_CHECK(read_rope(root, what, c));
    bool tied = false;
    SLM_CHECK(get_bool(root, "tie_word_embeddings", false, what, &tied));
    c->shared_classifier = tied;
    SLM_CHECK(read_token_ids(root, what, c));
    /* Mistral: attention over the last sliding_window positions only. With
     * a window that covers the whole context it is plain causal attention;
     * a shorter one the forward pass does not do. */
    const json_t *sw = json_object_get(root, "sliding_window");
    /* Qwen2 and Qwen3 carry a window that applies only with
     * use_sliding_window (transformers drops it otherwise), and then only
     * to the layers layer_types names "sliding_attention". */
    bool windowed = true;
    if (c->arch == SLM_ARCH_QWEN2 || c->arch == SLM_ARCH_QWEN3)
        SLM_CHECK(get_bool(root, "use_sliding_window", false, what,
                           &windowed));
    const json_t *types = json_object_get(root, "layer_types");
    if (types && !json_is_null(types)) {
        if (!json_is_array(types) ||
            json_array_size(types) != (size_t)c->n_layers)
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: field 'layer_types' is not a list of %d "
                            "layer types",
                            what, c->n_layers);
        bool any_sliding = false;
        for (size_t i = 0; i < json_array_size(types); i++) {
            const json_t *v = json_array_get(types, i);
            const char *t = json_is_string(v) ? json_string_value(v) : NULL;
            if (t && strcmp(t, "sliding_attention") == 0)
                any_sliding = true;
            else if (!t || strcmp(t, "full_attention") != 0)
                return slm_fail(SLM_ERR_UNSUPPORTED,
                                "%s: field 'layer_types'[%zu] = '%.32s' is "
                                "not supported (full_attention, "
                                "sliding_attention)",
                                what, i, t ? t : "?");
        }
        windowed = windowed && any_sliding;
    }
    if (windowed && sw && !json_is_null(sw)) {
        int32_t window = 0;
        SLM_CHECK(get_int(root, "sliding_window", true, 0, 1, INT32_MAX, what,
                          &window));
        if (window < c->seq_len)
            return slm_fail(SLM_ERR_UNSUPPORTED,
                            "%s: field 'sliding_window' = %d is shorter than "
                            "max_position_embeddings = %d: sliding-window "
                            "attention is not supported",
                            what, window, c->seq_len);
    }
    return SLM_OK;
}

slm_status slm_hf_config_parse(const char *text, size_t len, const char *what,
                               slm_model_config *out)
{
    if (len > SLM_HF_CONFIG_MAX_BYTES)
        return slm_fail(SLM_ERR_FORMAT, "%s: %zu bytes (at most %zu)", what,
                        len, SLM_HF_CONFIG_MAX_BYTES);
    if (too_deep(text, len))
        return slm_fail(SLM_ERR_FORMAT, "%s: nested deeper than %d levels",
                        what, MAX_DEPTH);
    json_error_t err;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return slm_fail(SLM_ERR_FORMAT, "%s: not valid JSON (line %d: %s)",
                        what, err.line, err.text);
    slm_model_config c;
    memset(&c, 0, sizeof c);
    slm_status rc = read_config(root, what, &c);
    json_decref(root);
    SLM_CHECK(rc);
    SLM_CHECK(slm_model_config_validate(&c, what));
    *out = c;
    return SLM_OK;
}

slm_status slm_hf_config_load(const char *path, slm_model_config *out)
{
    uint8_t *data = NULL;
    size_t len = 0;
    SLM_CHECK(slm_file_read_all(path, SLM_HF_CONFIG_MAX_BYTES, &data, &len));
    slm_status rc = slm_hf_config_parse((const char *)data, len, path, out);
    free(data);
    return rc;
}
