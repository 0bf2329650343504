/*
 * tests/unit/test_checkpoint.c - the checkpoint loader and mkmodel: valid
 * files in both classifier layouts, and every kind of bad file (truncated at
 * many offsets, bad dims, trailing bytes, random bytes) refused with a message
 * naming the field and value. Uses synthetic models only; needs no download.
 */
#include "tests/testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/file.h"
#include "model/checkpoint.h"
#include "model/mkmodel.h"

/* A small model with every field distinct, so a mix-up shows. */
static slm_model_config small_config(bool shared)
{
    slm_model_config c = {.dim = 16,
                          .hidden_dim = 40,
                          .n_layers = 2,
                          .n_heads = 4,
                          .n_kv_heads = 2,
                          .vocab_size = 32,
                          .seq_len = 8,
                          .shared_classifier = shared};
    return c;
}

static uint8_t *make_model(bool shared, size_t *len, char *path, size_t cap)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(path, cap, "%s/slmck%dXXXXXX", tmp && *tmp ? tmp : "/tmp",
             (int)getpid());
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    slm_model_config c = small_config(shared);
    assert_int_equal(slm_mkmodel_write(path, &c, 7), SLM_OK);
    uint8_t *data = NULL;
    assert_int_equal(slm_file_read_all(path, 1 << 24, &data, len), SLM_OK);
    return data;
}

static void test_valid_models_load(void **state)
{
    (void)state;
    for (int k = 0; k < 4; k++) {
        const int shared = k % 2;
        const slm_weights_mode mode =
            k < 2 ? SLM_WEIGHTS_MAPPED : SLM_WEIGHTS_RESIDENT;
        char path[512];
        size_t len = 0;
        uint8_t *data = make_model(shared, &len, path, sizeof path);
        slm_checkpoint_t *ck = NULL;
        assert_int_equal(slm_checkpoint_open(path, mode, &ck), SLM_OK);
        const slm_model_config *c = slm_checkpoint_config(ck);
        assert_int_equal(c->dim, 16);
        assert_int_equal(c->hidden_dim, 40);
        assert_int_equal(c->n_layers, 2);
        assert_int_equal(c->n_heads, 4);
        assert_int_equal(c->n_kv_heads, 2);
        assert_int_equal(c->vocab_size, 32);
        assert_int_equal(c->seq_len, 8);
        assert_int_equal(c->head_size, 4);
        assert_int_equal(c->kv_dim, 8);
        assert_int_equal(c->shared_classifier, shared);
        assert_int_equal(slm_checkpoint_bytes(ck), len);
        const float *emb =
            slm_checkpoint_tensor(ck, SLM_TENSOR_TOKEN_EMBEDDING, 0);
        const float *cls = slm_checkpoint_tensor(ck, SLM_TENSOR_WCLS, 0);
        if (shared) {
            assert_ptr_equal(emb, cls);
        } else {
            /* the separate classifier is the file's last (vocab, dim) */
            assert_ptr_equal((const uint8_t *)cls + 32 * 16 * 4,
                             (const uint8_t *)emb - 28 + len);
        }
        /* second layer of wk sits kv_dim*dim floats after the first */
        assert_ptr_equal(slm_checkpoint_tensor(ck, SLM_TENSOR_WK, 1),
                         slm_checkpoint_tensor(ck, SLM_TENSOR_WK, 0) + 8 * 16);
        assert_true(slm_checkpoint_tensor(ck, SLM_TENSOR_RMS_ATT, 1)[3] ==
                    1.0f);
        /* the weights are the file's bytes, in either mode */
        assert_memory_equal(emb, data + 28, 32 * 16 * 4);
        const float *w2 = slm_checkpoint_tensor(ck, SLM_TENSOR_W2, 1);
        const slm_tensor_info *ti =
            slm_checkpoint_tensor_info(ck, SLM_TENSOR_W2);
        assert_memory_equal(w2, data + ti->offset + 16 * 40 * 4, 16 * 40 * 4);
        slm_checkpoint_destroy(&ck);
        assert_null(ck);
        slm_checkpoint_destroy(&ck); /* NULL is fine */
        free(data);
        unlink(path);
    }
}

static void test_mkmodel_is_deterministic(void **state)
{
    (void)state;
    char p1[512], p2[512];
    size_t l1 = 0, l2 = 0;
    uint8_t *a = make_model(true, &l1, p1, sizeof p1);
    uint8_t *b = make_model(true, &l2, p2, sizeof p2);
    assert_int_equal(l1, l2);
    assert_memory_equal(a, b, l1);
    free(a);
    free(b);
    unlink(p1);
    unlink(p2);
}

static void test_truncated_everywhere(void **state)
{
    (void)state;
    char path[512];
    size_t len = 0;
    uint8_t *data = make_model(false, &len, path, sizeof path);
    slm_model_config c;
    slm_tensor_info table[SLM_TENSOR_COUNT];
    /* Every prefix, parsed as a file of that size. */
    for (size_t cut = 0; cut < len; cut++) {
        slm_error_clear();
        slm_status rc =
            slm_checkpoint_parse_header(data, cut, cut, "t.bin", &c, table);
        assert_int_equal(rc, SLM_ERR_FORMAT);
        assert_true(strlen(slm_error_message()) > 0);
        if (cut >= SLM_CHECKPOINT_HEADER_BYTES)
            assert_non_null(strstr(slm_error_message(), "truncated"));
    }
    /* And real files through the mapping path, at a spread of offsets. */
    const size_t cuts[] = {0, 1, 4, 27, 28, 29, 100, len / 2, len - 4, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char tp[512];
        slm_test_write_temp(data, cuts[i], tp, sizeof tp);
        slm_checkpoint_t *ck = NULL;
        assert_int_equal(
            slm_checkpoint_open(
                tp, i % 2 ? SLM_WEIGHTS_MAPPED : SLM_WEIGHTS_RESIDENT, &ck),
            SLM_ERR_FORMAT);
        assert_null(ck);
        assert_non_null(strstr(slm_error_message(), tp));
        unlink(tp);
    }
    free(data);
    unlink(path);
}

static void test_trailing_bytes_refused(void **state)
{
    (void)state;
    char path[512];
    size_t len = 0;
    uint8_t *data = make_model(true, &len, path, sizeof path);
    uint8_t *longer = calloc(1, len + 4);
    memcpy(longer, data, len);
    slm_model_config c;
    slm_tensor_info table[SLM_TENSOR_COUNT];
    assert_int_equal(slm_checkpoint_parse_header(longer, len + 4, len + 4,
                                                 "t.bin", &c, table),
                     SLM_ERR_FORMAT);
    assert_non_null(strstr(slm_error_message(), "4 trailing bytes"));
    free(longer);
    free(data);
    unlink(path);
}

/* Each header field set to a bad value must be refused, and the message must
 * name the field and the value. */
static void test_bad_dims(void **state)
{
    (void)state;
    static const char *const names[] = {"dim",     "hidden_dim", "n_layers",
                                        "n_heads", "n_kv_heads", "vocab_size",
                                        "seq_len"};
    const int32_t bad[] = {0, -1, -7, INT32_MAX, INT32_MIN, 1 << 21};
    /* vocab_size's sign only says where the classifier is: -1 is "1, not
     * shared"; -7 is legal, so 2 (below the three special ids) stands in. */
    const int32_t bad_vocab[] = {0, -1, 2, INT32_MAX, INT32_MIN, 1 << 21};
    slm_model_config good = small_config(true);
    uint8_t header[SLM_CHECKPOINT_HEADER_BYTES];
    slm_checkpoint_encode_header(&good, header);
    uint64_t size = slm_checkpoint_file_size(&good);
    for (size_t f = 0; f < 7; f++) {
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
            int32_t v = f == 5 ? bad_vocab[b] : bad[b];
            int32_t shown = f == 5 && v < 0 && v != INT32_MIN ? -v : v;
            uint8_t h[SLM_CHECKPOINT_HEADER_BYTES];
            memcpy(h, header, sizeof h);
            memcpy(h + 4 * f, &v, 4);
            slm_model_config c;
            slm_tensor_info table[SLM_TENSOR_COUNT];
            slm_status rc = slm_checkpoint_parse_header(h, sizeof h, size,
                                                        "t.bin", &c, table);
            assert_int_equal(rc, SLM_ERR_FORMAT);
            char want[64];
            snprintf(want, sizeof want, "%s = %d", names[f], shown);
            if (!strstr(slm_error_message(), want))
                fprintf(stderr, "want '%s' in '%s'\n", want,
                        slm_error_message());
            assert_non_null(strstr(slm_error_message(), want));
        }
    }
}

static void test_divisibility_refused(void **state)
{
    (void)state;
    struct {
        int32_t dim, heads, kv;
        const char *want;
    } cases[] = {
        {18, 4, 2, "dim = 18 is not divisible by n_heads = 4"},
        {24, 4, 3, "n_heads = 4 is not divisible by n_kv_heads = 3"},
        {12, 4, 2, "head_size = dim / n_heads = 3 must be even"},
        {16, 4, 8, "n_kv_heads = 8 is out of range [1, 4]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        slm_model_config c = small_config(true);
        c.dim = cases[i].dim;
        c.n_heads = cases[i].heads;
        c.n_kv_heads = cases[i].kv;
        assert_int_equal(slm_model_config_validate(&c, "t"), SLM_ERR_FORMAT);
        assert_non_null(strstr(slm_error_message(), cases[i].want));
    }
}

/* Huge but in-range dims must be refused by the size check, not by an
 * allocation or an overflow. */
static void test_huge_sizes_refused_by_file_size(void **state)
{
    (void)state;
    slm_model_config c = {.dim = SLM_MAX_DIM,
                          .hidden_dim = SLM_MAX_HIDDEN,
                          .n_layers = SLM_MAX_LAYERS,
                          .n_heads = SLM_MAX_HEADS,
                          .n_kv_heads = SLM_MAX_HEADS,
                          .vocab_size = SLM_MAX_VOCAB,
                          .seq_len = SLM_MAX_SEQ_LEN,
                          .shared_classifier = false};
    uint8_t h[SLM_CHECKPOINT_HEADER_BYTES];
    slm_checkpoint_encode_header(&c, h);
    slm_model_config out;
    slm_tensor_info table[SLM_TENSOR_COUNT];
    assert_int_equal(
        slm_checkpoint_parse_header(h, sizeof h, 1 << 20, "t.bin", &out, table),
        SLM_ERR_FORMAT);
    assert_non_null(strstr(slm_error_message(), "truncated"));
}

static void test_random_bytes(void **state)
{
    (void)state;
    uint64_t seed = 99;
    uint8_t buf[4096];
    for (int i = 0; i < 2000; i++) {
        size_t n = (size_t)(slm_test_rand_u64(&seed) % sizeof buf);
        for (size_t j = 0; j < n; j++)
            buf[j] = (uint8_t)slm_test_rand_u64(&seed);
        slm_model_config c;
        slm_tensor_info table[SLM_TENSOR_COUNT];
        uint64_t fsize = i % 2 ? n : slm_test_rand_u64(&seed);
        slm_status rc =
            slm_checkpoint_parse_header(buf, n, fsize, "rand.bin", &c, table);
        assert_int_not_equal(rc, SLM_OK);
        assert_true(strlen(slm_error_message()) > 0);
    }
    char tp[512];
    for (size_t j = 0; j < sizeof buf; j++)
        buf[j] = (uint8_t)slm_test_rand_u64(&seed);
    slm_test_write_temp(buf, sizeof buf, tp, sizeof tp);
    slm_checkpoint_t *ck = NULL;
    assert_int_not_equal(slm_checkpoint_open(tp, SLM_WEIGHTS_RESIDENT, &ck),
                         SLM_OK);
    assert_null(ck);
    unlink(tp);
}

static void test_missing_and_special_files(void **state)
{
    (void)state;
    slm_checkpoint_t *ck = NULL;
    assert_int_equal(slm_checkpoint_open("/nonexistent/model.bin",
                                         SLM_WEIGHTS_RESIDENT, &ck),
                     SLM_ERR_IO);
    assert_non_null(strstr(slm_error_message(), "/nonexistent/model.bin"));
    assert_int_equal(slm_checkpoint_open("/dev/null", SLM_WEIGHTS_MAPPED, &ck),
                     SLM_ERR_IO);
    assert_non_null(strstr(slm_error_message(), "not a regular file"));
    assert_null(ck);
    /* a directory is a Hugging Face model: without config.json, refused
     * naming it */
    assert_int_not_equal(slm_checkpoint_open("/proc/self", SLM_WEIGHTS_MAPPED,
                                             &ck),
                         SLM_OK);
    assert_non_null(strstr(slm_error_message(), "/proc/self/config.json"));
    assert_null(ck);
}

static void test_mkmodel_shapes(void **state)
{
    (void)state;
    slm_model_config c;
    assert_int_equal(slm_mkmodel_shape("tinyllama-1.1b", &c), SLM_OK);
    assert_int_equal(c.dim, 2048);
    assert_int_equal(c.hidden_dim, 5632);
    assert_int_equal(c.n_layers, 22);
    assert_int_equal(c.n_heads, 32);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.vocab_size, 32000);
    assert_true(c.shared_classifier);
    assert_int_equal(c.kv_dim, 256);
    assert_int_equal(slm_mkmodel_shape("110m", &c), SLM_OK);
    assert_int_equal(c.dim, 768);
    assert_int_equal(c.n_layers, 12);
    assert_int_equal(c.hidden_dim, 2048);
    assert_int_equal(slm_mkmodel_shape("stories260k", &c), SLM_OK);
    assert_int_equal(c.hidden_dim, 172);
    assert_int_equal(slm_mkmodel_shape("gpt-9", &c), SLM_ERR_INVALID);
    assert_non_null(strstr(slm_error_message(), "gpt-9"));
    /* tinyllama-1.1b in float32 is about 4.4 GB */
    assert_int_equal(slm_mkmodel_shape("tinyllama-1.1b", &c), SLM_OK);
    uint64_t size = slm_checkpoint_file_size(&c);
    assert_true(size > 4000000000ULL && size < 4500000000ULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_models_load),
        cmocka_unit_test(test_mkmodel_is_deterministic),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_trailing_bytes_refused),
        cmocka_unit_test(test_bad_dims),
        cmocka_unit_test(test_divisibility_refused),
        cmocka_unit_test(test_huge_sizes_refused_by_file_size),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_missing_and_special_files),
        cmocka_unit_test(test_mkmodel_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
