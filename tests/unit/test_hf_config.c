/*
 * tests/unit/test_hf_config.c - model/hf_config.c: config.json of each
 * supported architecture in both rope styles into the model description,
 * and every refusal named: another architecture, quantization, unknown rope
 * types, biases, a short sliding window, head_dim, missing and mistyped
 * fields, out-of-range values, garbage, duplicates, deep nesting. Also the
 * Llama 3.1 rope frequencies against the rule written out in double.
 */
#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/hf_config.h"

static const char *const llama =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, "
    "\"intermediate_size\": 172, \"num_hidden_layers\": 3, "
    "\"num_attention_heads\": 8, \"num_key_value_heads\": 4, "
    "\"vocab_size\": 384, \"max_position_embeddings\": 256, "
    "\"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, "
    "\"hidden_act\": \"silu\", \"tie_word_embeddings\": false, "
    "\"attention_bias\": false, \"mlp_bias\": false, \"head_dim\": 8, "
    "\"bos_token_id\": 1, \"eos_token_id\": 2, \"torch_dtype\": "
    "\"bfloat16\", \"rope_scaling\": null}";

static slm_status parse(const char *text, slm_model_config *c)
{
    return slm_hf_config_parse(text, strlen(text), "config.json", c);
}

/* llama with `key`'s value (a JSON fragment) replaced or added. */
static const char *with(const char *key, const char *value)
{
    static char buf[4096];
    const char *at = strstr(llama, key);
    if (!at) {
        snprintf(buf, sizeof buf, "{\"%s\": %s, %s", key, value, llama + 1);
        return buf;
    }
    /* the value runs from after "key": to the next ',' or '}' at depth 0 */
    const char *v = strchr(at, ':') + 1;
    const char *end = v;
    int depth = 0;
    for (; *end; end++) {
        if (*end == '[' || *end == '{')
            depth++;
        else if (*end == ']' || *end == '}') {
            if (depth == 0)
                break;
            depth--;
        } else if (*end == ',' && depth == 0)
            break;
    }
    snprintf(buf, sizeof buf, "%.*s %s%s", (int)(v - llama), llama, value,
             end);
    return buf;
}

static void expect_refused(const char *text, slm_status want,
                           const char *needle)
{
    slm_model_config c;
    const slm_status rc = parse(text, &c);
    if (rc != want || !strstr(slm_error_message(), needle))
        fail_msg("want %d naming \"%s\", got %d: %s\n(input %.200s)", want,
                 needle, rc, slm_error_message(), text);
}

static void test_llama(void **state)
{
    (void)state;
    slm_model_config c;
    assert_int_equal(parse(llama, &c), SLM_OK);
    assert_int_equal(c.arch, SLM_ARCH_LLAMA);
    assert_int_equal(c.dim, 64);
    assert_int_equal(c.hidden_dim, 172);
    assert_int_equal(c.n_layers, 3);
    assert_int_equal(c.n_heads, 8);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.vocab_size, 384);
    assert_int_equal(c.seq_len, 256);
    assert_int_equal(c.head_size, 8);
    assert_int_equal(c.kv_dim, 32);
    assert_false(c.shared_classifier);
    assert_true(c.rms_norm_eps == 1e-5f);
    assert_true(c.rope_theta == 10000.0f);
    assert_int_equal(c.rope_scaling.type, SLM_ROPE_DEFAULT);
    assert_int_equal(c.bos_id, 1);
    assert_int_equal(c.n_eos_ids, 1);
    assert_int_equal(c.eos_ids[0], 2);
}

static void test_defaults_and_variants(void **state)
{
    (void)state;
    slm_model_config c;
    /* num_key_value_heads absent: one per head; tie as given */
    const char *mha =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 32, "
        "\"intermediate_size\": 40, \"num_hidden_layers\": 1, "
        "\"num_attention_heads\": 4, \"vocab_size\": 10, "
        "\"max_position_embeddings\": 16, \"tie_word_embeddings\": true, "
        "\"eos_token_id\": [128001, 128008, 128009], \"bos_token_id\": "
        "null}";
    /* eos ids must be in the vocabulary */
    expect_refused(mha, SLM_ERR_FORMAT, "eos_token_id = 128001");
    const char *mha2 =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 32, "
        "\"intermediate_size\": 40, \"num_hidden_layers\": 1, "
        "\"num_attention_heads\": 4, \"vocab_size\": 200000, "
        "\"max_position_embeddings\": 16, \"tie_word_embeddings\": true, "
        "\"eos_token_id\": [128001, 128008, 128009], \"bos_token_id\": "
        "null}";
    assert_int_equal(parse(mha2, &c), SLM_OK);
    assert_int_equal(c.n_kv_heads, 4);
    assert_true(c.shared_classifier);
    assert_int_equal(c.bos_id, -1);
    assert_int_equal(c.n_eos_ids, 3);
    assert_int_equal(c.eos_ids[2], 128009);
    assert_true(c.rms_norm_eps == 1e-6f); /* LlamaConfig's default */

    /* Llama 3.1 in the older style, and in transformers 5's */
    assert_int_equal(
        parse(with("rope_scaling",
                   "{\"type\": \"llama3\", \"factor\": 8.0, "
                   "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                   "\"original_max_position_embeddings\": 8192}"),
              &c),
        SLM_OK);
    assert_int_equal(c.rope_scaling.type, SLM_ROPE_LLAMA3);
    assert_true(c.rope_scaling.factor == 8.0f);
    assert_int_equal(c.rope_scaling.original_max_position_embeddings, 8192);
    const char *v5 =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, "
        "\"intermediate_size\": 172, \"num_hidden_layers\": 3, "
        "\"num_attention_heads\": 8, \"num_key_value_heads\": 2, "
        "\"vocab_size\": 384, \"max_position_embeddings\": 256, "
        "\"rope_parameters\": {\"rope_theta\": 500000.0, \"rope_type\": "
        "\"llama3\", \"factor\": 32.0, \"low_freq_factor\": 1.0, "
        "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": "
        "32}}";
    assert_int_equal(parse(v5, &c), SLM_OK);
    assert_true(c.rope_theta == 500000.0f);
    assert_int_equal(c.rope_scaling.type, SLM_ROPE_LLAMA3);
    assert_true(c.rope_scaling.factor == 32.0f);
    /* rope_parameters with the default type */
    const char *v5d =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, "
        "\"intermediate_size\": 172, \"num_hidden_layers\": 3, "
        "\"num_attention_heads\": 8, \"vocab_size\": 384, "
        "\"max_position_embeddings\": 256, \"rope_parameters\": "
        "{\"rope_theta\": 1e6, \"rope_type\": \"default\"}}";
    assert_int_equal(parse(v5d, &c), SLM_OK);
    assert_true(c.rope_theta == 1e6f);
    assert_int_equal(c.rope_scaling.type, SLM_ROPE_DEFAULT);

    /* Mistral with a window that covers the context, or none */
    const char *mistral =
        "{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 64, "
        "\"intermediate_size\": 172, \"num_hidden_layers\": 3, "
        "\"num_attention_heads\": 8, \"num_key_value_heads\": 4, "
        "\"vocab_size\": 384, \"max_position_embeddings\": 256, "
        "\"sliding_window\": 256}";
    assert_int_equal(parse(mistral, &c), SLM_OK);
    assert_int_equal(c.arch, SLM_ARCH_MISTRAL);
    assert_false(c.qkv_bias || c.qk_norm);

    /* Qwen2: biases on q, k, v; a window that transformers drops unless
     * use_sliding_window, and then only on sliding_attention layers */
#define QWEN(arch, extra)                                                      \
    "{\"architectures\": [\"" arch "\"], \"hidden_size\": 64, "              \
    "\"intermediate_size\": 172, \"num_hidden_layers\": 3, "                 \
    "\"num_attention_heads\": 8, \"num_key_value_heads\": 4, "               \
    "\"vocab_size\": 384, \"max_position_embeddings\": 256, "                \
    "\"tie_word_embeddings\": true, \"sliding_window\": 64" extra "}"
    assert_int_equal(parse(QWEN("Qwen2ForCausalLM",
                                ", \"use_sliding_window\": false"),
                           &c),
                     SLM_OK);
    assert_int_equal(c.arch, SLM_ARCH_QWEN2);
    assert_true(c.qkv_bias && !c.qk_norm && c.shared_classifier);
    assert_int_equal(parse(QWEN("Qwen2ForCausalLM",
                                ", \"use_sliding_window\": true, "
                                "\"layer_types\": [\"full_attention\", "
                                "\"full_attention\", \"full_attention\"]"),
                           &c),
                     SLM_OK);
    expect_refused(QWEN("Qwen2ForCausalLM", ", \"use_sliding_window\": true"),
                   SLM_ERR_UNSUPPORTED, "'sliding_window' = 64");
    expect_refused(QWEN("Qwen2ForCausalLM",
                        ", \"use_sliding_window\": true, \"layer_types\": "
                        "[\"full_attention\", \"sliding_attention\", "
                        "\"full_attention\"]"),
                   SLM_ERR_UNSUPPORTED, "'sliding_window' = 64");
    expect_refused(QWEN("Qwen2ForCausalLM", ", \"layer_types\": [\"x\"]"),
                   SLM_ERR_FORMAT, "'layer_types'");
    /* Qwen3: a norm over each head of q and k; its attention_bias would
     * put a bias on o_proj too */
    assert_int_equal(parse(QWEN("Qwen3ForCausalLM", ", \"head_dim\": 8"), &c),
                     SLM_OK);
    assert_int_equal(c.arch, SLM_ARCH_QWEN3);
    assert_true(c.qk_norm && !c.qkv_bias);
    expect_refused(QWEN("Qwen3ForCausalLM", ", \"attention_bias\": true"),
                   SLM_ERR_UNSUPPORTED, "'attention_bias' = true");
    /* head_dim other than hidden / heads (Qwen3 0.6B): q is wider than
     * the residual stream */
    assert_int_equal(parse(QWEN("Qwen3ForCausalLM", ", \"head_dim\": 128"), &c),
                     SLM_OK);
    assert_int_equal(c.head_size, 128);
    assert_int_equal(c.q_dim, 128 * c.n_heads);
    assert_int_equal(c.kv_dim, 128 * c.n_kv_heads);
    expect_refused(QWEN("Qwen3ForCausalLM", ", \"head_dim\": 7"),
                   SLM_ERR_FORMAT, "head_size = 7 must be even");
#undef QWEN
}

static void test_refusals(void **state)
{
    (void)state;
    expect_refused(with("architectures", "[\"Qwen9ForCausalLM\"]"),
                   SLM_ERR_UNSUPPORTED, "'Qwen9ForCausalLM' is not supported");
    expect_refused(with("architectures", "[]"), SLM_ERR_FORMAT,
                   "architectures");
    expect_refused(with("architectures", "\"LlamaForCausalLM\""),
                   SLM_ERR_FORMAT, "architectures");
    expect_refused(with("quantization_config", "{\"quant_method\": \"gptq\"}"),
                   SLM_ERR_UNSUPPORTED, "quantization_config");
    expect_refused(with("rope_scaling", "{\"type\": \"yarn\", \"factor\": 4}"),
                   SLM_ERR_UNSUPPORTED, "rope type 'yarn'");
    expect_refused(with("rope_scaling", "{\"rope_type\": \"llama3\"}"),
                   SLM_ERR_FORMAT, "'factor' is missing");
    expect_refused(with("rope_scaling",
                        "{\"rope_type\": \"llama3\", \"factor\": 8, "
                        "\"low_freq_factor\": 4, \"high_freq_factor\": 1, "
                        "\"original_max_position_embeddings\": 64}"),
                   SLM_ERR_FORMAT, "llama3 rope scaling");
    expect_refused(with("rope_scaling", "7"), SLM_ERR_FORMAT,
                   "'rope_scaling' is not an object");
    expect_refused(with("rope_scaling", "{\"rope_type\": \"default\"}, "
                        "\"rope_parameters\": {\"rope_theta\": 1e4}"),
                   SLM_ERR_FORMAT, "both 'rope_parameters' and 'rope_scaling'");
    expect_refused(with("attention_bias", "true"), SLM_ERR_UNSUPPORTED,
                   "'attention_bias' = true");
    expect_refused(with("mlp_bias", "true"), SLM_ERR_UNSUPPORTED, "mlp_bias");
    expect_refused(with("hidden_act", "\"gelu\""), SLM_ERR_UNSUPPORTED,
                   "'hidden_act' = 'gelu'");
    expect_refused(with("head_dim", "0"), SLM_ERR_FORMAT, "'head_dim' = 0");
    expect_refused(with("head_dim", "\"16\""), SLM_ERR_FORMAT, "'head_dim'");
    expect_refused(with("sliding_window", "128"), SLM_ERR_UNSUPPORTED,
                   "'sliding_window' = 128");
    expect_refused(with("hidden_size", "\"64\""), SLM_ERR_FORMAT,
                   "'hidden_size' is not an integer");
    expect_refused(with("hidden_size", "64.0"), SLM_ERR_FORMAT,
                   "'hidden_size' is not an integer");
    expect_refused(with("hidden_size", "-64"), SLM_ERR_FORMAT,
                   "'hidden_size' = -64 is out of range");
    expect_refused(with("hidden_size", "99999999999999999"), SLM_ERR_FORMAT,
                   "out of range");
    expect_refused(with("num_hidden_layers", "0"), SLM_ERR_FORMAT,
                   "'num_hidden_layers' = 0");
    expect_refused(with("num_key_value_heads", "3"), SLM_ERR_FORMAT,
                   "not divisible by n_kv_heads = 3");
    /* with head_dim given (8 here), hidden need not divide by the heads,
     * but the kv heads must still divide them */
    expect_refused(with("num_attention_heads", "6"), SLM_ERR_FORMAT,
                   "n_heads = 6 is not divisible by n_kv_heads = 4");
    expect_refused(with("rms_norm_eps", "0"), SLM_ERR_FORMAT,
                   "'rms_norm_eps' = 0 is out of range");
    expect_refused(with("rope_theta", "\"big\""), SLM_ERR_FORMAT,
                   "'rope_theta' is not a number");
    expect_refused(with("tie_word_embeddings", "1"), SLM_ERR_FORMAT,
                   "'tie_word_embeddings' is not true or false");
    expect_refused(with("eos_token_id", "[1, \"x\"]"), SLM_ERR_FORMAT,
                   "'eos_token_id'[1]");
    expect_refused(with("eos_token_id", "[1,2,3,4,5,6,7,8,9]"), SLM_ERR_FORMAT,
                   "lists 9 ids");
    expect_refused(with("bos_token_id", "384"), SLM_ERR_FORMAT,
                   "bos_token_id = 384");
    expect_refused(with("vocab_size", "null"), SLM_ERR_FORMAT,
                   "'vocab_size' is missing");
    expect_refused(
        "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64}",
        SLM_ERR_FORMAT, "'intermediate_size' is missing");
    expect_refused("", SLM_ERR_FORMAT, "not valid JSON");
    expect_refused("{\"architectures\": [\"LlamaForCausalLM\"", SLM_ERR_FORMAT,
                   "not valid JSON");
    expect_refused("[1, 2]", SLM_ERR_FORMAT, "not a JSON object");
    expect_refused("{\"a\": 1, \"a\": 2}", SLM_ERR_FORMAT, "not valid JSON");
    char deep[200];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = '\0';
    expect_refused(deep, SLM_ERR_FORMAT, "nested deeper");
}

/* Every prefix of a valid config is refused cleanly (no crash, a message),
 * except the whole. */
static void test_truncated(void **state)
{
    (void)state;
    const size_t n = strlen(llama);
    slm_model_config c;
    for (size_t i = 0; i < n; i++) {
        assert_int_not_equal(slm_hf_config_parse(llama, i, "config.json", &c),
                             SLM_OK);
        assert_non_null(strstr(slm_error_message(), "config.json"));
    }
    assert_int_equal(slm_hf_config_parse(llama, n, "config.json", &c), SLM_OK);
}

/* transformers' _compute_llama3_parameters, in double from its definition:
 * wavelengths beyond original / low_freq_factor are slowed by factor, below
 * original / high_freq_factor kept, blended in between. */
static void test_llama3_frequencies(void **state)
{
    (void)state;
    slm_model_config c = {.head_size = 128,
                          .rope_theta = 500000.0f,
                          .rope_scaling = {SLM_ROPE_LLAMA3, 8.0f, 1.0f, 4.0f,
                                           8192}};
    float got[64];
    slm_model_config_rope_freqs(&c, got);
    int slowed = 0, kept = 0, blended = 0;
    for (int i = 0; i < 64; i++) {
        const double f = pow(500000.0, -(double)(2 * i) / 128.0);
        const double wl = 2.0 * M_PI / f;
        double want;
        if (wl < 8192.0 / 4.0) {
            want = f;
            kept++;
        } else if (wl > 8192.0 / 1.0) {
            want = f / 8.0;
            slowed++;
        } else {
            const double s = (8192.0 / wl - 1.0) / (4.0 - 1.0);
            want = (1.0 - s) * f / 8.0 + s * f;
            blended++;
        }
        if (!(fabs((double)got[i] - want) <= 1e-5 * want))
            fail_msg("pair %d: %.9g, want %.9g", i, (double)got[i], want);
    }
    /* the case covers all three regimes */
    assert_true(slowed > 0 && kept > 0 && blended > 0);
    /* default: run.c's float expression exactly */
    c.rope_scaling.type = SLM_ROPE_DEFAULT;
    c.rope_theta = 10000.0f;
    slm_model_config_rope_freqs(&c, got);
    for (int i = 0; i < 64; i++)
        assert_true(got[i] ==
                    1.0f / powf(10000.0f, (float)(2 * i) / (float)128));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama),
        cmocka_unit_test(test_defaults_and_variants),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_llama3_frequencies),
    };
    return cmocka_run_group_tests_name("hf_config", tests, NULL, NULL);
}
