/*
 * tests/unit/test_transformer.c - the forward pass against the reference
 * logits of llama2.c's run.c on stories260K (../shared/golden/logits_once.f32:
 * 13 rows of 512 float32, row p = logits after feeding input_ids[p] at p).
 * Exits 77 (skipped) when the shared model or golden files are absent.
 */
#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"
#include "model/checkpoint.h"
#include "shard/transformer.h"

enum { ROWS = 13, VOCAB = 512 };
static const int32_t input_ids[ROWS] = {1,   403, 407, 261, 378, 432, 383,
                                        286, 261, 376, 298, 315, 421};
static const int32_t argmax_ids[ROWS] = {403, 407, 261, 378, 432, 383, 286,
                                         261, 376, 298, 315, 421, 395};
static char model_path[4096], logits_path[4096];

/* Relative error of a row: max |got - want| over max |want|, under 1e-4.
 * Run for both weight modes: they must compute the same thing. */
static void check_logits(slm_weights_mode mode)
{
    uint8_t *ref = NULL;
    size_t ref_len = 0;
    assert_int_equal(slm_file_read_all(logits_path, 1 << 20, &ref, &ref_len),
                     SLM_OK);
    assert_int_equal(ref_len, (size_t)ROWS * VOCAB * sizeof(float));
    slm_checkpoint_t *ck = NULL;
    slm_shard_weights_t *w = NULL;
    slm_transformer_t *t = NULL;
    assert_int_equal(slm_checkpoint_open(model_path, mode, &ck), SLM_OK);
    assert_int_equal(slm_checkpoint_config(ck)->vocab_size, VOCAB);
    assert_int_equal(slm_shard_weights_whole(ck, &w), SLM_OK);
    assert_int_equal(slm_transformer_create(w, NULL, &t), SLM_OK);
    for (int p = 0; p < ROWS; p++) {
        const float *got = NULL;
        assert_int_equal(slm_transformer_forward(t, input_ids[p], p, &got),
                         SLM_OK);
        float want[VOCAB];
        memcpy(want, ref + (size_t)p * VOCAB * sizeof(float), sizeof want);
        double max_abs = 0.0, max_err = 0.0;
        int best = 0;
        for (int i = 0; i < VOCAB; i++) {
            assert_false(isnan(got[i]));
            max_abs = fmax(max_abs, fabs((double)want[i]));
            max_err = fmax(max_err, fabs((double)got[i] - (double)want[i]));
            if (got[i] > got[best])
                best = i;
        }
        double rel = max_err / max_abs;
        if (rel >= 1e-4)
            fprintf(stderr, "row %d: relative error %.3g\n", p, rel);
        assert_true(rel < 1e-4);
        assert_int_equal(best, argmax_ids[p]);
    }
    slm_transformer_destroy(&t);
    assert_null(t);
    slm_shard_weights_destroy(&w);
    slm_checkpoint_destroy(&ck);
    free(ref);
}

static void test_logits_match_reference_resident(void **state)
{
    (void)state;
    check_logits(SLM_WEIGHTS_RESIDENT);
}

static void test_logits_match_reference_mapped(void **state)
{
    (void)state;
    check_logits(SLM_WEIGHTS_MAPPED);
}

static void test_forward_rejects_bad_token_and_position(void **state)
{
    (void)state;
    slm_checkpoint_t *ck = NULL;
    slm_shard_weights_t *w = NULL;
    slm_transformer_t *t = NULL;
    const float *logits = NULL;
    assert_int_equal(slm_checkpoint_open(model_path, SLM_WEIGHTS_MAPPED, &ck),
                     SLM_OK);
    assert_int_equal(slm_shard_weights_whole(ck, &w), SLM_OK);
    assert_int_equal(slm_transformer_create(w, NULL, &t), SLM_OK);
    assert_int_equal(slm_transformer_forward(t, VOCAB, 0, &logits),
                     SLM_ERR_RANGE);
    assert_int_equal(slm_transformer_forward(t, -1, 0, &logits), SLM_ERR_RANGE);
    assert_int_equal(slm_transformer_forward(t, 1, 512, &logits),
                     SLM_ERR_RANGE);
    assert_int_equal(slm_transformer_forward(t, 1, -1, &logits), SLM_ERR_RANGE);
    assert_non_null(strstr(slm_error_message(), "position -1"));
    assert_null(logits);
    slm_transformer_destroy(&t);
    slm_shard_weights_destroy(&w);
    slm_checkpoint_destroy(&ck);
}

/* One request's keys and values never outlive it: a new sequence (position
 * 0) wipes every cache row the last one wrote, and computes exactly what it
 * would on a fresh cache. */
static void test_kv_cache_zeroed_between_sequences(void **state)
{
    (void)state;
    slm_checkpoint_t *ck = NULL;
    slm_shard_weights_t *w = NULL;
    slm_transformer_t *t = NULL, *fresh = NULL;
    const float *logits = NULL;
    assert_int_equal(slm_checkpoint_open(model_path, SLM_WEIGHTS_MAPPED, &ck),
                     SLM_OK);
    assert_int_equal(slm_shard_weights_whole(ck, &w), SLM_OK);
    assert_int_equal(slm_transformer_create(w, NULL, &t), SLM_OK);
    assert_int_equal(slm_transformer_create(w, NULL, &fresh), SLM_OK);
    assert_int_equal(slm_transformer_kv_rows_nonzero(t), 0);
    for (int p = 0; p < ROWS; p++)
        assert_int_equal(slm_transformer_forward(t, input_ids[p], p, &logits),
                         SLM_OK);
    assert_int_equal(slm_transformer_kv_rows_nonzero(t), ROWS);

    /* The next request: 3 positions of another prompt. */
    static const int32_t other[3] = {1, 300, 301};
    float got[VOCAB];
    for (int p = 0; p < 3; p++) {
        assert_int_equal(slm_transformer_forward(t, other[p], p, &logits),
                         SLM_OK);
        memcpy(got, logits, sizeof got);
        assert_int_equal(slm_transformer_kv_rows_nonzero(t), p + 1);
        assert_int_equal(slm_transformer_forward(fresh, other[p], p, &logits),
                         SLM_OK);
        assert_memory_equal(got, logits, sizeof got);
    }
    slm_transformer_reset(t);
    assert_int_equal(slm_transformer_kv_rows_nonzero(t), 0);
    slm_transformer_destroy(&t);
    slm_transformer_destroy(&fresh);
    slm_shard_weights_destroy(&w);
    slm_checkpoint_destroy(&ck);
}

int main(void)
{
    if (slm_test_model_path("stories260K.bin", model_path, sizeof model_path) ||
        slm_test_golden_path("logits_once.f32", logits_path,
                             sizeof logits_path))
        return SLM_TEST_SKIP;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_match_reference_resident),
        cmocka_unit_test(test_logits_match_reference_mapped),
        cmocka_unit_test(test_forward_rejects_bad_token_and_position),
        cmocka_unit_test(test_kv_cache_zeroed_between_sequences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
