/*
 * tests/gpu/test_gpu_golden.c - generation on a GPU reproduces the golden
 * texts: every golden prompt, greedy, 256 positions, through the CUDA
 * forward pass (shard/cuda/forward.c) in this process, with the decode step
 * replayed as a CUDA graph and without; then, with two GPUs, through a
 * cluster of two tensor-parallel shards on GPUs (`mpirun -np 3 shardlm run
 * --tp 2 --device cuda`). The reference is llama2.c's run.c in float32; the
 * GPU computes products of float16 weights with float32 accumulation, and
 * the test asks for the same bytes: a greedy choice that a half-precision
 * rounding flips shows up here as a failure, with where the texts part.
 * Exits 77 (skipped) without a GPU or without the shared model and golden
 * files.
 */
#include "tests/testutil.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/file.h"
#include "coordinator/generate.h"
#include "coordinator/sampler.h"
#include "kernels/cuda/cuda_kernels.h"
#include "model/checkpoint.h"
#include "model/tokenizer.h"
#include "shard/device.h"
#include "shard/weights.h"

#define MAX_GOLDEN 100

static char model_path[4096], tok_path[4096];
static char *prompts[MAX_GOLDEN], *goldens[MAX_GOLDEN];
static size_t golden_len[MAX_GOLDEN];
static int n_golden;

typedef struct {
    char *buf;
    size_t len, cap;
} text_buf;

static slm_status append(void *user, const char *piece, size_t len,
                         int32_t token)
{
    (void)token;
    text_buf *t = user;
    if (t->len + len + 2 > t->cap) {
        size_t cap = 2 * t->cap + len + 1024;
        char *b = realloc(t->buf, cap);
        if (!b)
            return slm_fail(SLM_ERR_NOMEM, "out of memory");
        t->buf = b;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, piece, len);
    t->len += len;
    return SLM_OK;
}

static slm_status cuda_step(void *ctx, int32_t token, int32_t pos,
                            const float **logits)
{
    return slm_cuda_transformer_forward(ctx, token, pos, logits);
}

/* got (with generate's final newline added) against golden i. */
static void expect_golden(int i, const char *got, size_t len, const char *how)
{
    if (len == golden_len[i] && memcmp(got, goldens[i], len) == 0)
        return;
    size_t at = 0;
    while (at < len && at < golden_len[i] && got[at] == goldens[i][at])
        at++;
    fprintf(stderr,
            "%s, golden %02d: %zu bytes, want %zu; they part at byte %zu:\n"
            "  got:  %.80s\n  want: %.80s\n",
            how, i + 1, len, golden_len[i], at, got + at, goldens[i] + at);
    fail();
}

static void generate_all(bool graphs)
{
    slm_checkpoint_t *ck = NULL;
    slm_tokenizer_t *tok = NULL;
    slm_shard_weights_t *w = NULL;
    slm_cuda_transformer_t *t = NULL;
    assert_int_equal(slm_checkpoint_open(model_path, SLM_WEIGHTS_MAPPED, &ck),
                     SLM_OK);
    const slm_model_config *cfg = slm_checkpoint_config(ck);
    assert_int_equal(slm_tokenizer_load(tok_path, cfg->vocab_size, &tok),
                     SLM_OK);
    assert_int_equal(slm_shard_weights_whole(ck, &w), SLM_OK);
    slm_cuda_options opt = slm_cuda_options_default();
    opt.graphs = graphs;
    slm_status rc = slm_cuda_transformer_create(w, NULL, 0, &opt, &t);
    if (rc != SLM_OK)
        fprintf(stderr, "%s\n", slm_error_message());
    assert_int_equal(rc, SLM_OK);
    /* the device copy is independent of the host weights */
    slm_shard_weights_destroy(&w);
    /* slm_generate feeds one sequence a token at a time: no batched step */
    const slm_model_runner runner = {
        .forward = cuda_step,
        .ctx = t,
        .seq_len = (int32_t)slm_cuda_transformer_max_seq(t),
        .cfg = cfg};
    slm_sampling_params sp = slm_sampling_defaults();
    sp.temperature = 0.0f;
    for (int i = 0; i < n_golden; i++) {
        slm_sampler_t *sampler = NULL;
        assert_int_equal(slm_sampler_create(cfg->vocab_size, &sp, &sampler),
                         SLM_OK);
        text_buf text = {NULL, 0, 0};
        rc = slm_generate(&runner, tok, sampler, prompts[i], 256, append, &text,
                          NULL);
        if (rc != SLM_OK)
            fprintf(stderr, "%s\n", slm_error_message());
        assert_int_equal(rc, SLM_OK);
        text.buf[text.len++] = '\n'; /* as `shardlm generate` prints */
        expect_golden(i, text.buf, text.len,
                      graphs ? "cuda, graphs" : "cuda, no graphs");
        free(text.buf);
        slm_sampler_destroy(&sampler);
    }
    slm_cuda_transformer_destroy(&t);
    slm_tokenizer_destroy(&tok);
    slm_checkpoint_destroy(&ck);
}

static void test_golden_with_graphs(void **state)
{
    (void)state;
    generate_all(true);
}

static void test_golden_without_graphs(void **state)
{
    (void)state;
    generate_all(false);
}

/* tp = 2 over two GPUs: a real cluster, through the shardlm binary (main
 * runs this case set only where there are two GPUs and mpirun). */
static void test_golden_tp2(void **state)
{
    (void)state;
    const char *bin = getenv("SHARDLM_BIN");
    assert_non_null(bin);
    char out[] = "/tmp/slm_gpu_golden_XXXXXX";
    int fd = mkstemp(out);
    assert_true(fd >= 0);
    close(fd);
    for (int i = 0; i < n_golden; i++) {
        /* The prompt travels through the environment: no shell quoting. */
        assert_int_equal(setenv("SLM_TEST_PROMPT", prompts[i], 1), 0);
        assert_int_equal(setenv("SLM_TEST_OUT", out, 1), 0);
        char cmd[16384];
        int n =
            snprintf(cmd, sizeof cmd,
                     "timeout 300 mpirun --oversubscribe %s -np 3 '%s' run "
                     "%s --model '%s' --tokenizer '%s' --tp 2 --device cuda "
                     "--prompt \"$SLM_TEST_PROMPT\" -n 256 --temperature 0 "
                     "--output \"$SLM_TEST_OUT\"",
                     getuid() == 0 ? "--allow-run-as-root" : "", bin,
                     getuid() == 0 ? "--allow-root" : "", model_path, tok_path);
        assert_true(n > 0 && (size_t)n < sizeof cmd);
        assert_int_equal(system(cmd), 0);
        json_error_t err;
        json_t *line = json_load_file(out, JSON_DISABLE_EOF_CHECK, &err);
        assert_non_null(line);
        const char *text = json_string_value(json_object_get(line, "text"));
        assert_non_null(text);
        size_t len = strlen(text);
        char *got = malloc(len + 1);
        assert_non_null(got);
        memcpy(got, text, len);
        got[len] = '\n';
        expect_golden(i, got, len + 1, "cuda, tp 2");
        free(got);
        json_decref(line);
    }
    unlink(out);
}

/* Reads NN.prompt / NN.txt for NN = 01, 02, ... until one is missing. */
static int load_goldens(void)
{
    for (int i = 0; i < MAX_GOLDEN; i++) {
        char name[32], path[4096];
        uint8_t *data = NULL;
        size_t len = 0;
        snprintf(name, sizeof name, "%02d.prompt", i + 1);
        if (slm_test_golden_path(name, path, sizeof path) != 0)
            break;
        if (slm_file_read_all(path, 1 << 20, &data, &len) != SLM_OK)
            return -1;
        /* as the shell's $(cat) in golden_generate.sh: trailing newlines
         * go */
        while (len > 0 && data[len - 1] == '\n')
            len--;
        prompts[i] = strndup((const char *)data, len);
        free(data);
        snprintf(name, sizeof name, "%02d.txt", i + 1);
        if (slm_test_golden_path(name, path, sizeof path) != 0 ||
            slm_file_read_all(path, 1 << 20, &data, &len) != SLM_OK)
            return -1;
        goldens[i] = (char *)data;
        golden_len[i] = len;
        n_golden = i + 1;
    }
    return n_golden > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    const bool tp2 = slm_test_case_set(argc, argv, "tp2");
    if (slm_cuda_device_count() == 0) {
        fprintf(stderr, "SKIP: no CUDA device\n");
        return SLM_TEST_SKIP;
    }
    if (slm_test_model_path("stories260K.bin", model_path, sizeof model_path) !=
            0 ||
        slm_test_model_path("tok512.bin", tok_path, sizeof tok_path) != 0 ||
        load_goldens() != 0) {
        fprintf(stderr, "shared model or golden files not found\n");
        return slm_test_missing_shared();
    }
    const char *bin = getenv("SHARDLM_BIN");
    if (tp2 && (slm_cuda_device_count() < 2 || !bin ||
                system("command -v mpirun >/dev/null") != 0))
        return slm_test_cannot_run("tp = 2 on GPUs needs two GPUs, "
                                   "SHARDLM_BIN and mpirun");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_with_graphs),
        cmocka_unit_test(test_golden_without_graphs),
    };
    /* the case set "tp2" (gpu.test_gpu_golden.tp2) */
    const struct CMUnitTest tests_tp2[] = {
        cmocka_unit_test(test_golden_tp2),
    };
    int rc = tp2 ? cmocka_run_group_tests_name("gpu golden, tp 2", tests_tp2,
                                               NULL, NULL)
                 : cmocka_run_group_tests(tests, NULL, NULL);
    for (int i = 0; i < n_golden; i++) {
        free(prompts[i]);
        free(goldens[i]);
    }
    return rc;
}
