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
#include "kernels/kernels.h"
#include "model/checkpoint.h"
#include "shard/transformer.h"

enum { ROWS = 13, VOCAB = 512 };
static const int32_t input_ids[ROWS] = {1,   403, 407, 261, 378, 432, 383,
                                        286, 261, 376, 298, 315, 421};
static const int32_t argmax_ids[ROWS] = {403, 407, 261, 378, 432, 383, 286,
                                         261, 376, 298, 315, 421, 395};
static char model_path[4096], logits_path[4096];

/* Relative error of a row: max |got - want| over max |want|, under 1e-4.
 * Run for both weight modes, and with the matrices packed in panels (what
 * a CPU shard runs): they must compute the same thing. */
static void check_logits(slm_weights_mode mode, bool panels)
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
    if (panels) {
        const slm_shard_slice whole =
            slm_shard_slice_whole(slm_checkpoint_config(ck));
        assert_int_equal(slm_shard_weights_load(ck, &whole, true, true,
                                                SLM_SLICE_PANELS, &w),
                         SLM_OK);
        assert_true(slm_shard_weights_panels(w));
        /* stories260K shares its classifier with the embedding, so the
         * embedding lookup reads panels too */
        assert_true(slm_checkpoint_config(ck)->shared_classifier);
        assert_true(slm_shard_weights_embedding_panels(w));
        /* int8 reads rows: refused on packed matrices */
        assert_int_equal(slm_shard_weights_quantize(w), SLM_ERR_INVALID);
    } else {
        assert_int_equal(slm_shard_weights_whole(ck, &w), SLM_OK);
        assert_false(slm_shard_weights_panels(w));
    }
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
    check_logits(SLM_WEIGHTS_RESIDENT, false);
}

static void test_logits_match_reference_panels(void **state)
{
    (void)state;
    check_logits(SLM_WEIGHTS_MAPPED, true);
}

static void test_logits_match_reference_mapped(void **state)
{
    (void)state;
    check_logits(SLM_WEIGHTS_MAPPED, false);
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
 * 0) wipes every block the last one wrote, and computes exactly what it
 * would on a fresh cache. Blocks of 4 positions, so 13 positions fill 4. */
static void test_kv_cache_zeroed_between_sequences(void **state)
{
    (void)state;
    slm_checkpoint_t *ck = NULL;
    slm_shard_weights_t *w = NULL;
    slm_transformer_t *t = NULL, *fresh = NULL;
    const float *logits = NULL;
    const slm_kv_config kv = {.block_size = 4};
    assert_int_equal(slm_checkpoint_open(model_path, SLM_WEIGHTS_MAPPED, &ck),
                     SLM_OK);
    assert_int_equal(slm_shard_weights_whole(ck, &w), SLM_OK);
    assert_int_equal(slm_transformer_create_ex(w, NULL, &kv, &t), SLM_OK);
    assert_int_equal(slm_transformer_create_ex(w, NULL, &kv, &fresh), SLM_OK);
    assert_int_equal(slm_transformer_kv_blocks_nonzero(t), 0);
    for (int p = 0; p < ROWS; p++)
        assert_int_equal(slm_transformer_forward(t, input_ids[p], p, &logits),
                         SLM_OK);
    assert_int_equal(slm_transformer_kv_blocks_nonzero(t), 4);

    /* The next request: 6 positions of another prompt. */
    static const int32_t other[6] = {1, 300, 301, 302, 303, 304};
    float got[VOCAB];
    for (int p = 0; p < 6; p++) {
        assert_int_equal(slm_transformer_forward(t, other[p], p, &logits),
                         SLM_OK);
        memcpy(got, logits, sizeof got);
        assert_int_equal(slm_transformer_kv_blocks_nonzero(t), p / 4 + 1);
        assert_int_equal(slm_transformer_forward(fresh, other[p], p, &logits),
                         SLM_OK);
        assert_memory_equal(got, logits, sizeof got);
    }
    slm_transformer_reset(t);
    assert_int_equal(slm_transformer_kv_blocks_nonzero(t), 0);
    slm_transformer_destroy(&t);
    slm_transformer_destroy(&fresh);
    slm_shard_weights_destroy(&w);
    slm_checkpoint_destroy(&ck);
}

/* Logits of `tokens` fed one at a time to a fresh single-sequence pass:
 * the row after token i goes to out + i * VOCAB. */
static void single_logits(const slm_shard_weights_t *w, const int32_t *tokens,
                          int n, float *out)
{
    slm_transformer_t *t = NULL;
    assert_int_equal(slm_transformer_create(w, NULL, &t), SLM_OK);
    for (int p = 0; p < n; p++) {
        const float *logits = NULL;
        assert_int_equal(slm_transformer_forward(t, tokens[p], p, &logits),
                         SLM_OK);
        memcpy(out + (size_t)p * VOCAB, logits, VOCAB * sizeof(float));
    }
    slm_transformer_destroy(&t);
}

static void expect_close(const float *got, const float *want)
{
    double max_abs = 0.0, max_err = 0.0;
    for (int i = 0; i < VOCAB; i++) {
        max_abs = fmax(max_abs, fabs((double)want[i]));
        max_err = fmax(max_err, fabs((double)got[i] - (double)want[i]));
    }
    if (max_err / max_abs >= 1e-5)
        fail_msg("relative error %.3g", max_err / max_abs);
}

/* A batched step computes, for every sequence in it, what the unbatched
 * pass computes: three sequences in scattered blocks, prompts split into
 * chunks across steps, one joining at the second step, with decode tokens
 * beside prompt chunks; then freeing their blocks zeroes them, and steps
 * that break the rules are refused before anything runs. */
static void test_step_batch_matches_single(void **state)
{
    (void)state;
    slm_checkpoint_t *ck = NULL;
    slm_shard_weights_t *w = NULL;
    slm_transformer_t *t = NULL;
    assert_int_equal(slm_checkpoint_open(model_path, SLM_WEIGHTS_MAPPED, &ck),
                     SLM_OK);
    assert_int_equal(slm_shard_weights_whole(ck, &w), SLM_OK);
    const slm_kv_config kv = {.block_size = 4, .max_seqs = 3, .max_tokens = 16};
    assert_int_equal(slm_transformer_create_ex(w, NULL, &kv, &t), SLM_OK);
    assert_int_equal(slm_transformer_kv(t)->n_blocks, 3 * 128);

    static const int32_t b_tok[6] = {1, 300, 301, 302, 303, 304};
    static const int32_t c_tok[8] = {1, 403, 407, 261, 400, 401, 402, 9};
    static float ra[ROWS * VOCAB], rb[6 * VOCAB], rc[8 * VOCAB];
    single_logits(w, input_ids, ROWS, ra);
    single_logits(w, b_tok, 6, rb);
    single_logits(w, c_tok, 8, rc);

    static const uint32_t a_blk[4] = {10, 31, 12, 7}, b_blk[2] = {0, 200},
                          c_blk[2] = {21, 20};
    const float *logits = NULL;
    size_t rows = 0;
    /* step 1: A's first 6 prompt tokens; B's prompt (5) with logits */
    slm_step_seq s1[2] = {
        {input_ids, 6, 0, a_blk, 4, false, false},
        {b_tok, 5, 0, b_blk, 2, true, false},
    };
    slm_step st = {.seqs = s1, .n_seqs = 2};
    assert_int_equal(slm_transformer_step(t, &st, &logits, &rows), SLM_OK);
    assert_int_equal(rows, 1);
    expect_close(logits, rb + 4 * VOCAB);
    /* step 2: B decodes one token, A finishes its prompt, C joins */
    slm_step_seq s2[3] = {
        {b_tok + 5, 1, 5, b_blk, 2, true, false},
        {input_ids + 6, ROWS - 6, 6, a_blk, 4, true, false},
        {c_tok, 3, 0, c_blk, 2, false, false},
    };
    st = (slm_step){.seqs = s2, .n_seqs = 3};
    assert_int_equal(slm_transformer_step(t, &st, &logits, &rows), SLM_OK);
    assert_int_equal(rows, 2);
    expect_close(logits, rb + 5 * VOCAB);
    expect_close(logits + VOCAB, ra + (ROWS - 1) * VOCAB);
    /* step 3: C's rest */
    slm_step_seq s3[1] = {{c_tok + 3, 5, 3, c_blk, 2, true, false}};
    st = (slm_step){.seqs = s3, .n_seqs = 1};
    assert_int_equal(slm_transformer_step(t, &st, &logits, &rows), SLM_OK);
    assert_int_equal(rows, 1);
    expect_close(logits, rc + 7 * VOCAB);
    assert_int_equal(slm_transformer_kv_blocks_nonzero(t), 8);

    /* Refused before anything runs: a block both write, a short table,
     * too many tokens, a block outside the pool, a freed block outside it. */
    slm_step_seq shared[2] = {{b_tok, 1, 0, a_blk, 1, false, false},
                              {c_tok, 1, 0, a_blk, 1, false, false}};
    st = (slm_step){.seqs = shared, .n_seqs = 2};
    assert_int_equal(slm_transformer_step(t, &st, &logits, &rows),
                     SLM_ERR_RANGE);
    assert_non_null(strstr(slm_error_message(), "another sequence"));
    /* a block one sequence reads while another writes it */
    slm_step_seq read_written[2] = {{b_tok + 5, 1, 5, b_blk, 2, false, false},
                                    {c_tok, 1, 0, b_blk, 1, false, false}};
    st = (slm_step){.seqs = read_written, .n_seqs = 2};
    assert_int_equal(slm_transformer_step(t, &st, &logits, &rows),
                     SLM_ERR_RANGE);
    assert_non_null(strstr(slm_error_message(), "reads block 0"));
    slm_step_seq short_table[1] = {{input_ids, 5, 0, a_blk, 1, false, false}};
    st = (slm_step){.seqs = short_table, .n_seqs = 1};
    assert_int_equal(slm_transformer_step(t, &st, &logits, &rows),
                     SLM_ERR_RANGE);
    static int32_t many[17];
    static const uint32_t big_blk[5] = {40, 41, 42, 43, 44};
    slm_step_seq too_many[1] = {{many, 17, 0, big_blk, 5, false, false}};
    st = (slm_step){.seqs = too_many, .n_seqs = 1};
    assert_int_equal(slm_transformer_step(t, &st, &logits, &rows),
                     SLM_ERR_RANGE);
    static const uint32_t outside[1] = {3 * 128};
    slm_step_seq out_of_pool[1] = {{b_tok, 1, 0, outside, 1, false, false}};
    st = (slm_step){.seqs = out_of_pool, .n_seqs = 1};
    assert_int_equal(slm_transformer_step(t, &st, &logits, &rows),
                     SLM_ERR_RANGE);
    st = (slm_step){.free_blocks = outside, .n_free = 1};
    assert_int_equal(slm_transformer_step(t, &st, &logits, &rows),
                     SLM_ERR_RANGE);
    assert_int_equal(slm_transformer_kv_blocks_nonzero(t), 8);

    /* The sequences end: a step that only frees their blocks zeroes them. */
    static const uint32_t all[8] = {10, 31, 12, 7, 0, 200, 21, 20};
    st = (slm_step){.free_blocks = all, .n_free = 8};
    assert_int_equal(slm_transformer_step(t, &st, &logits, &rows), SLM_OK);
    assert_int_equal(rows, 0);
    assert_int_equal(slm_transformer_kv_blocks_nonzero(t), 0);
    slm_transformer_destroy(&t);
    slm_shard_weights_destroy(&w);
    slm_checkpoint_destroy(&ck);
}

/* Two sequences whose prompts share a full first block read one copy of
 * it (what the coordinator's prefix cache sends): their logits are those
 * of each run with its own copy, and of the unbatched pass (to rounding:
 * the matmuls' sums depend on how the tokens are batched). */
static void test_step_shared_prefix(void **state)
{
    (void)state;
    slm_checkpoint_t *ck = NULL;
    slm_shard_weights_t *w = NULL;
    slm_transformer_t *t = NULL;
    assert_int_equal(slm_checkpoint_open(model_path, SLM_WEIGHTS_MAPPED, &ck),
                     SLM_OK);
    assert_int_equal(slm_shard_weights_whole(ck, &w), SLM_OK);
    const slm_kv_config kv = {.block_size = 4, .max_seqs = 3, .max_tokens = 16};
    assert_int_equal(slm_transformer_create_ex(w, NULL, &kv, &t), SLM_OK);
    static const int32_t d_tok[7] = {1, 403, 407, 261, 378, 432, 383};
    static const int32_t e_tok[7] = {1, 403, 407, 261, 300, 301, 302};
    static float rd[7 * VOCAB], re[7 * VOCAB];
    single_logits(w, d_tok, 7, rd);
    single_logits(w, e_tok, 7, re);
    static float own[2][VOCAB];
    const float *logits = NULL;
    size_t rows = 0;
    /* unshared: each writes its own copy of the first block */
    static const uint32_t d_own[2] = {1, 2}, e_own[2] = {3, 4};
    slm_step_seq s1[2] = {{d_tok, 7, 0, d_own, 2, true, false},
                          {e_tok, 7, 0, e_own, 2, true, false}};
    slm_step st = {.seqs = s1, .n_seqs = 2};
    assert_int_equal(slm_transformer_step(t, &st, &logits, &rows), SLM_OK);
    assert_int_equal(rows, 2);
    memcpy(own, logits, sizeof own);
    expect_close(own[0], rd + 6 * VOCAB);
    expect_close(own[1], re + 6 * VOCAB);
    /* shared: block 10 written once, then both read it in one step */
    static const uint32_t d_sh[2] = {10, 11}, e_sh[2] = {10, 12};
    slm_step_seq s2[1] = {{d_tok, 4, 0, d_sh, 1, false, false}};
    st = (slm_step){.seqs = s2, .n_seqs = 1};
    assert_int_equal(slm_transformer_step(t, &st, &logits, &rows), SLM_OK);
    slm_step_seq s3[2] = {{d_tok + 4, 3, 4, d_sh, 2, true, false},
                          {e_tok + 4, 3, 4, e_sh, 2, true, false}};
    st = (slm_step){.seqs = s3, .n_seqs = 2};
    assert_int_equal(slm_transformer_step(t, &st, &logits, &rows), SLM_OK);
    assert_int_equal(rows, 2);
    expect_close(logits, own[0]);
    expect_close(logits + VOCAB, own[1]);
    expect_close(logits, rd + 6 * VOCAB);
    expect_close(logits + VOCAB, re + 6 * VOCAB);
    /* both writing the shared block is still refused */
    slm_step_seq s4[2] = {{d_tok + 3, 1, 3, d_sh, 1, false, false},
                          {e_tok + 3, 1, 3, e_sh, 1, false, false}};
    st = (slm_step){.seqs = s4, .n_seqs = 2};
    assert_int_equal(slm_transformer_step(t, &st, &logits, &rows),
                     SLM_ERR_RANGE);
    assert_non_null(strstr(slm_error_message(), "writes block 10"));
    /* one writing block 10 (a token at position 3) while another reads it
     * (from position 4): refused, whichever comes first in the step */
    slm_step_seq s5[2] = {{e_tok + 4, 1, 4, e_sh, 2, false, false},
                          {d_tok + 3, 1, 3, d_sh, 1, false, false}};
    st = (slm_step){.seqs = s5, .n_seqs = 2};
    assert_int_equal(slm_transformer_step(t, &st, &logits, &rows),
                     SLM_ERR_RANGE);
    assert_non_null(strstr(slm_error_message(),
                           "reads block 10, which a sequence of "
                           "the step writes"));
    /* a block freed (zeroed) in the step it is read in: refused */
    static const uint32_t freed[1] = {10};
    slm_step_seq s6[1] = {{e_tok + 4, 1, 4, e_sh, 2, false, false}};
    st = (slm_step){.seqs = s6, .n_seqs = 1, .free_blocks = freed, .n_free = 1};
    assert_int_equal(slm_transformer_step(t, &st, &logits, &rows),
                     SLM_ERR_RANGE);
    assert_non_null(strstr(slm_error_message(), "block 10 is freed"));
    slm_transformer_destroy(&t);
    slm_shard_weights_destroy(&w);
    slm_checkpoint_destroy(&ck);
}

/* Runs the reference's rows through t: every row of logits within `tol`
 * of the reference relative to its largest logit, with the reference's
 * greedy choice. Returns the worst row's error. */
static double check_rows_within(slm_transformer_t *t, const uint8_t *ref,
                                double tol, const char *what)
{
    double worst = 0.0;
    for (int p = 0; p < ROWS; p++) {
        const float *got = NULL;
        assert_int_equal(slm_transformer_forward(t, input_ids[p], p, &got),
                         SLM_OK);
        float want[VOCAB];
        memcpy(want, ref + (size_t)p * VOCAB * sizeof(float), sizeof want);
        double max_abs = 0.0, max_err = 0.0;
        for (int i = 0; i < VOCAB; i++) {
            max_abs = fmax(max_abs, fabs((double)want[i]));
            max_err = fmax(max_err, fabs((double)got[i] - (double)want[i]));
        }
        worst = fmax(worst, max_err / max_abs);
        if (max_err / max_abs >= tol)
            fail_msg("row %d: %s relative error %.3g", p, what,
                     max_err / max_abs);
        assert_int_equal(slm_cpu_argmax(got, VOCAB), argmax_ids[p]);
    }
    return worst;
}

/* int8 weights (per output channel, weight-only): the reference logits to
 * within 5% of their range, and the same greedy choice at every row of the
 * reference (measured: 1.1% worst, 13 of 13; bench/bench_accuracy reports
 * longer runs). */
static void test_int8_close_to_reference(void **state)
{
    (void)state;
    uint8_t *ref = NULL;
    size_t ref_len = 0;
    assert_int_equal(slm_file_read_all(logits_path, 1 << 20, &ref, &ref_len),
                     SLM_OK);
    slm_checkpoint_t *ck = NULL;
    slm_shard_weights_t *w = NULL;
    slm_transformer_t *t = NULL;
    assert_int_equal(slm_checkpoint_open(model_path, SLM_WEIGHTS_MAPPED, &ck),
                     SLM_OK);
    assert_int_equal(slm_shard_weights_whole(ck, &w), SLM_OK);
    assert_int_equal(slm_shard_weights_quantize(w), SLM_OK);
    assert_non_null(slm_shard_weights_layer(w, 0)->q_wq.q);
    assert_int_equal(slm_transformer_create(w, NULL, &t), SLM_OK);
    check_rows_within(t, ref, 0.05, "int8");
    slm_transformer_destroy(&t);
    slm_shard_weights_destroy(&w);
    slm_checkpoint_destroy(&ck);
    free(ref);
}

/* A shard's int8 load (SLM_SLICE_INT8) quantizes straight from the file:
 * no float copy of any matrix, the same int8 weights as quantizing a float
 * copy, so the same logits bit for bit. */
static void test_int8_load_has_no_float_copy(void **state)
{
    (void)state;
    slm_checkpoint_t *ck = NULL;
    slm_shard_weights_t *wf = NULL, *wq = NULL;
    slm_transformer_t *tf = NULL, *tq = NULL;
    assert_int_equal(slm_checkpoint_open(model_path, SLM_WEIGHTS_MAPPED, &ck),
                     SLM_OK);
    const slm_model_config *cfg = slm_checkpoint_config(ck);
    const slm_shard_slice whole = slm_shard_slice_whole(cfg);
    assert_int_equal(slm_shard_weights_whole(ck, &wf), SLM_OK);
    assert_int_equal(slm_shard_weights_quantize(wf), SLM_OK);
    assert_int_equal(
        slm_shard_weights_load(ck, &whole, true, true, SLM_SLICE_INT8, &wq),
        SLM_OK);
    for (size_t l = 0; l < (size_t)cfg->n_layers; l++) {
        const slm_layer_weights *lw = slm_shard_weights_layer(wq, l);
        assert_null(lw->wq);
        assert_null(lw->w2);
        assert_non_null(lw->q_wq.q);
        assert_non_null(lw->q_w2.q);
        assert_non_null(lw->rms_att);
    }
    assert_non_null(slm_shard_weights_embedding(wq));
    assert_non_null(slm_shard_weights_classifier_q8(wq).q);
    /* floats kept: norms and the embedding (which is the classifier here);
     * the matrices as a quarter of their bytes plus scales */
    assert_true(slm_shard_weights_copied_bytes(wq) <
                slm_shard_weights_bytes(wq) / 2);
    assert_int_equal(slm_transformer_create(wf, NULL, &tf), SLM_OK);
    assert_int_equal(slm_transformer_create(wq, NULL, &tq), SLM_OK);
    for (int p = 0; p < ROWS; p++) {
        const float *a = NULL, *b = NULL;
        assert_int_equal(slm_transformer_forward(tf, input_ids[p], p, &a),
                         SLM_OK);
        assert_int_equal(slm_transformer_forward(tq, input_ids[p], p, &b),
                         SLM_OK);
        assert_memory_equal(a, b, VOCAB * sizeof *a);
    }
    slm_transformer_destroy(&tf);
    slm_transformer_destroy(&tq);
    slm_shard_weights_destroy(&wf);
    slm_shard_weights_destroy(&wq);
    slm_checkpoint_destroy(&ck);
}

/* 16-bit weights (SLM_SLICE_BF16, SLM_SLICE_F16): every matrix and the
 * embedding held in 16 bits with no float copy, half the bytes, and the
 * reference logits within the rounding of the weights: bfloat16 keeps 8
 * significant bits, half 11 (measured worst rows: bf16 0.35%, f16 0.06%),
 * with the same greedy choice at every row. */
static void check_half(slm_slice_mode mode, double tol)
{
    uint8_t *ref = NULL;
    size_t ref_len = 0;
    assert_int_equal(slm_file_read_all(logits_path, 1 << 20, &ref, &ref_len),
                     SLM_OK);
    slm_checkpoint_t *ck = NULL;
    slm_shard_weights_t *w = NULL;
    slm_transformer_t *t = NULL;
    assert_int_equal(slm_checkpoint_open(model_path, SLM_WEIGHTS_MAPPED, &ck),
                     SLM_OK);
    const slm_model_config *cfg = slm_checkpoint_config(ck);
    const slm_shard_slice whole = slm_shard_slice_whole(cfg);
    assert_int_equal(slm_shard_weights_load(ck, &whole, true, true, mode, &w),
                     SLM_OK);
    slm_half_type type = SLM_HALF_BF16;
    assert_true(slm_shard_weights_half(w, &type));
    assert_int_equal(type,
                     mode == SLM_SLICE_F16 ? SLM_HALF_F16 : SLM_HALF_BF16);
    for (size_t l = 0; l < (size_t)cfg->n_layers; l++) {
        const slm_layer_weights *lw = slm_shard_weights_layer(w, l);
        assert_null(lw->wq);
        assert_null(lw->w2);
        assert_non_null(lw->h_wq.w);
        assert_non_null(lw->h_w2.w);
        assert_null(lw->q_wq.q);
        assert_non_null(lw->rms_att);
    }
    assert_null(slm_shard_weights_embedding(w));
    assert_non_null(slm_shard_weights_embedding_h16(w).w);
    /* the shared classifier is the embedding's 16-bit rows */
    assert_ptr_equal(slm_shard_weights_classifier_h16(w).w,
                     slm_shard_weights_embedding_h16(w).w);
    /* the float norms and 64-byte rounding of each piece aside, half */
    assert_true(slm_shard_weights_copied_bytes(w) <
                slm_shard_weights_bytes(w) * 0.55);
    assert_int_equal(slm_shard_weights_quantize(w), SLM_ERR_INVALID);
    assert_int_equal(slm_transformer_create(w, NULL, &t), SLM_OK);
    const char *name = mode == SLM_SLICE_F16 ? "f16" : "bf16";
    fprintf(stderr, "%s: worst row's relative error %.3g\n", name,
            check_rows_within(t, ref, tol, name));
    slm_transformer_destroy(&t);
    slm_shard_weights_destroy(&w);
    slm_checkpoint_destroy(&ck);
    free(ref);
}

static void test_bf16_close_to_reference(void **state)
{
    (void)state;
    check_half(SLM_SLICE_BF16, 0.02);
}

static void test_f16_close_to_reference(void **state)
{
    (void)state;
    check_half(SLM_SLICE_F16, 0.003);
}

int main(void)
{
    if (slm_test_model_path("stories260K.bin", model_path, sizeof model_path) ||
        slm_test_golden_path("logits_once.f32", logits_path,
                             sizeof logits_path))
        return slm_test_missing_shared();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_match_reference_resident),
        cmocka_unit_test(test_logits_match_reference_mapped),
        cmocka_unit_test(test_logits_match_reference_panels),
        cmocka_unit_test(test_forward_rejects_bad_token_and_position),
        cmocka_unit_test(test_kv_cache_zeroed_between_sequences),
        cmocka_unit_test(test_step_batch_matches_single),
        cmocka_unit_test(test_step_shared_prefix),
        cmocka_unit_test(test_int8_close_to_reference),
        cmocka_unit_test(test_int8_load_has_no_float_copy),
        cmocka_unit_test(test_bf16_close_to_reference),
        cmocka_unit_test(test_f16_close_to_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
