/*
 * tests/unit/test_plan.c - the partition plan: every (tp, pp) of real model
 * shapes tiles layers, heads, kv heads, MLP columns and vocabulary without
 * gaps or overlaps; impossible splits are refused with the list of sizes
 * that work; and a randomized property test compares create's verdict with
 * an independent statement of the rules. Configs are built by hand; needs no
 * files.
 */
#include "tests/testutil.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoint.h"
#include "model/plan.h"

/* dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len. */
static slm_model_config make_config(int32_t dim, int32_t hidden, int32_t layers,
                                    int32_t heads, int32_t kv_heads,
                                    int32_t vocab, int32_t seq_len)
{
    slm_model_config c;
    memset(&c, 0, sizeof c);
    c.dim = dim;
    c.hidden_dim = hidden;
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = kv_heads;
    c.vocab_size = vocab;
    c.seq_len = seq_len;
    c.shared_classifier = true;
    assert_int_equal(slm_model_config_validate(&c, "test"), SLM_OK);
    return c;
}

static slm_model_config stories260k(void)
{
    return make_config(64, 172, 5, 8, 4, 512, 512);
}

static slm_model_config tinyllama(void)
{
    return make_config(2048, 5632, 22, 32, 4, 32000, 2048);
}

static slm_model_config llama110m(void)
{
    return make_config(768, 2048, 12, 12, 12, 32000, 1024);
}

/* ranges[0..n) tile [0, total) in order, each non-empty, sizes differing by
 * at most one with the larger first. */
static void check_tiling(const slm_range *ranges, int32_t n, int32_t total)
{
    int32_t next = 0;
    for (int32_t i = 0; i < n; i++) {
        assert_int_equal(ranges[i].begin, next);
        assert_true(ranges[i].count >= 1);
        if (i > 0) {
            assert_true(ranges[i].count <= ranges[i - 1].count);
            assert_true(ranges[0].count - ranges[i].count <= 1);
        }
        next += ranges[i].count;
    }
    assert_int_equal(next, total);
}

/* Every property plan.h promises, checked from the slices alone. */
static void check_plan(const slm_model_config *cfg, const slm_plan_t *p,
                       int32_t tp, int32_t pp)
{
    assert_int_equal(slm_plan_tp(p), tp);
    assert_int_equal(slm_plan_pp(p), pp);
    assert_int_equal(slm_plan_shards(p), tp * pp);

    slm_range stage_layers[SLM_PLAN_MAX_PP];
    slm_range rng[SLM_PLAN_MAX_TP];
    for (int32_t st = 0; st < pp; st++) {
        const slm_shard_slice *first = slm_plan_slice(p, st * tp);
        stage_layers[st] = first->layers;
        for (int32_t r = 0; r < tp; r++) {
            const slm_shard_slice *sl = slm_plan_slice(p, st * tp + r);
            assert_int_equal(sl->stage, st);
            assert_int_equal(sl->tp_rank, r);
            /* a stage's ranks run the same layers */
            assert_int_equal(sl->layers.begin, first->layers.begin);
            assert_int_equal(sl->layers.count, first->layers.count);
        }

        for (int32_t r = 0; r < tp; r++) {
            rng[r] = slm_plan_slice(p, st * tp + r)->heads;
            assert_int_equal(rng[r].count, cfg->n_heads / tp);
        }
        check_tiling(rng, tp, cfg->n_heads);
        for (int32_t r = 0; r < tp; r++)
            rng[r] = slm_plan_slice(p, st * tp + r)->hidden;
        check_tiling(rng, tp, cfg->hidden_dim);
        for (int32_t r = 0; r < tp; r++)
            rng[r] = slm_plan_slice(p, st * tp + r)->vocab;
        check_tiling(rng, tp, cfg->vocab_size);

        /* kv heads: split, or each on exactly kv_replicas consecutive ranks */
        int32_t owners[SLM_MAX_HEADS];
        memset(owners, 0, sizeof owners);
        const int32_t reps = slm_plan_slice(p, st * tp)->kv_replicas;
        for (int32_t r = 0; r < tp; r++) {
            const slm_shard_slice *sl = slm_plan_slice(p, st * tp + r);
            assert_int_equal(sl->kv_replicas, reps);
            rng[r] = sl->kv_heads;
            assert_true(sl->kv_heads.begin >= 0);
            assert_true(sl->kv_heads.count >= 1);
            assert_true(sl->kv_heads.begin + sl->kv_heads.count <=
                        cfg->n_kv_heads);
            for (int32_t k = 0; k < sl->kv_heads.count; k++)
                owners[sl->kv_heads.begin + k]++;
            /* every query head reads a kv head its rank owns */
            const int32_t group = cfg->n_heads / cfg->n_kv_heads;
            for (int32_t q = sl->heads.begin;
                 q < sl->heads.begin + sl->heads.count; q++) {
                const int32_t kv = q / group;
                assert_true(kv >= sl->kv_heads.begin &&
                            kv < sl->kv_heads.begin + sl->kv_heads.count);
            }
        }
        if (cfg->n_kv_heads % tp == 0) {
            assert_int_equal(reps, 1);
            check_tiling(rng, tp, cfg->n_kv_heads);
        } else {
            assert_int_equal(tp % cfg->n_kv_heads, 0);
            assert_int_equal(reps, tp / cfg->n_kv_heads);
            for (int32_t r = 0; r < tp; r++) {
                assert_int_equal(rng[r].count, 1);
                assert_int_equal(rng[r].begin, r / reps);
            }
        }
        for (int32_t k = 0; k < cfg->n_kv_heads; k++)
            assert_int_equal(owners[k], reps);
    }
    check_tiling(stage_layers, pp, cfg->n_layers);
}

/* Creates, checks and destroys a plan that must be valid. */
static void expect_valid(const slm_model_config *cfg, int32_t tp, int32_t pp)
{
    slm_plan_t *p = NULL;
    slm_status rc = slm_plan_create(cfg, tp, pp, &p);
    if (rc != SLM_OK)
        fail_msg("tp=%d pp=%d refused: %s", tp, pp, slm_error_message());
    assert_non_null(p);
    check_plan(cfg, p, tp, pp);
    slm_plan_destroy(&p);
    assert_null(p);
}

/* create must fail with SLM_ERR_INVALID, leave out NULL, and say `needle`
 * (and `needle2`, if not NULL). */
static void expect_refused(const slm_model_config *cfg, int32_t tp, int32_t pp,
                           const char *needle, const char *needle2)
{
    slm_plan_t *p = NULL;
    slm_error_clear();
    assert_int_equal(slm_plan_create(cfg, tp, pp, &p), SLM_ERR_INVALID);
    assert_null(p);
    const char *msg = slm_error_message();
    if (!strstr(msg, needle) || (needle2 && !strstr(msg, needle2)))
        fail_msg("tp=%d pp=%d: message \"%s\" lacks \"%s\"%s%s", tp, pp, msg,
                 needle, needle2 ? " or " : "", needle2 ? needle2 : "");
}

static void test_stories260k_all_splits(void **state)
{
    (void)state;
    const slm_model_config c = stories260k();
    const int32_t tps[] = {1, 2, 4, 8};
    for (size_t i = 0; i < sizeof tps / sizeof tps[0]; i++)
        for (int32_t pp = 1; pp <= 5; pp++)
            expect_valid(&c, tps[i], pp);

    /* hidden 172 over 8: 22 x4 then 21 x4; over 4: 43; over 2: 86 */
    slm_plan_t *p = NULL;
    assert_int_equal(slm_plan_create(&c, 8, 1, &p), SLM_OK);
    for (int32_t r = 0; r < 8; r++) {
        const slm_shard_slice *sl = slm_plan_slice(p, r);
        assert_int_equal(sl->hidden.count, r < 4 ? 22 : 21);
        assert_int_equal(sl->kv_replicas, 2);
        assert_int_equal(sl->kv_heads.begin, r / 2);
        assert_int_equal(sl->vocab.count, 64);
    }
    slm_plan_destroy(&p);
    assert_int_equal(slm_plan_create(&c, 4, 1, &p), SLM_OK);
    for (int32_t r = 0; r < 4; r++) {
        assert_int_equal(slm_plan_slice(p, r)->hidden.count, 43);
        assert_int_equal(slm_plan_slice(p, r)->kv_replicas, 1);
        assert_int_equal(slm_plan_slice(p, r)->kv_heads.begin, r);
    }
    slm_plan_destroy(&p);
    assert_int_equal(slm_plan_create(&c, 2, 1, &p), SLM_OK);
    for (int32_t r = 0; r < 2; r++) {
        assert_int_equal(slm_plan_slice(p, r)->hidden.count, 86);
        assert_int_equal(slm_plan_slice(p, r)->kv_heads.count, 2);
    }
    slm_plan_destroy(&p);

    /* 5 layers over 3 stages: 2, 2, 1; shard 4 is stage 2, rank 0 */
    assert_int_equal(slm_plan_create(&c, 2, 3, &p), SLM_OK);
    assert_int_equal(slm_plan_slice(p, 0)->layers.count, 2);
    assert_int_equal(slm_plan_slice(p, 2)->layers.begin, 2);
    assert_int_equal(slm_plan_slice(p, 4)->stage, 2);
    assert_int_equal(slm_plan_slice(p, 4)->tp_rank, 0);
    assert_int_equal(slm_plan_slice(p, 4)->layers.begin, 4);
    assert_int_equal(slm_plan_slice(p, 4)->layers.count, 1);
    slm_plan_destroy(&p);
}

static void test_stories260k_refusals(void **state)
{
    (void)state;
    const slm_model_config c = stories260k();
    const int32_t bad_tp[] = {3, 5, 6, 7, 16};
    for (size_t i = 0; i < sizeof bad_tp / sizeof bad_tp[0]; i++)
        expect_refused(&c, bad_tp[i], 1, "1, 2, 4, 8", "n_heads = 8");
    expect_refused(&c, 3, 1,
                   "cannot split n_heads = 8 over tp = 3: tensor parallelism "
                   "needs tp to divide n_heads; tp that work for this model: "
                   "1, 2, 4, 8",
                   NULL);
    expect_refused(&c, 1, 6,
                   "pp = 6 exceeds n_layers = 5: each pipeline stage needs at "
                   "least one layer; pp that work: 1..5",
                   NULL);
    /* out of range, both ways; the list still helps */
    expect_refused(&c, 0, 1, "tp = 0", "1, 2, 4, 8");
    expect_refused(&c, -1, 1, "tp = -1", "1, 2, 4, 8");
    expect_refused(&c, SLM_PLAN_MAX_TP + 1, 1, "1, 2, 4, 8", NULL);
    expect_refused(&c, INT32_MAX, 1, "1, 2, 4, 8", NULL);
    expect_refused(&c, INT32_MIN, 1, "1, 2, 4, 8", NULL);
    expect_refused(&c, 1, 0, "pp = 0", "1..5");
    expect_refused(&c, 1, -1, "pp = -1", "1..5");
    expect_refused(&c, 1, INT32_MAX, "1..5", NULL);
    expect_refused(&c, 1, INT32_MIN, "1..5", NULL);
    /* a bad tp and a bad pp: either is a fine answer, but it must refuse */
    expect_refused(&c, 3, 6, "cannot split", NULL);
}

static void test_tinyllama(void **state)
{
    (void)state;
    const slm_model_config c = tinyllama();
    slm_plan_t *p = NULL;
    assert_int_equal(slm_plan_create(&c, 8, 1, &p), SLM_OK);
    assert_int_equal(slm_plan_slice(p, 0)->kv_replicas, 2);
    slm_plan_destroy(&p);
    assert_int_equal(slm_plan_create(&c, 32, 1, &p), SLM_OK);
    assert_int_equal(slm_plan_slice(p, 31)->kv_replicas, 8);
    assert_int_equal(slm_plan_slice(p, 31)->kv_heads.begin, 3);
    slm_plan_destroy(&p);
    expect_valid(&c, 32, 1);
    expect_valid(&c, 8, 22);
    expect_valid(&c, 1, 22);
    expect_refused(&c, 1, 23, "n_layers = 22", "1..22");

    assert_int_equal(slm_plan_create(&c, 2, 4, &p), SLM_OK);
    const int32_t want[] = {6, 6, 5, 5};
    for (int32_t st = 0; st < 4; st++)
        for (int32_t r = 0; r < 2; r++)
            assert_int_equal(slm_plan_slice(p, st * 2 + r)->layers.count,
                             want[st]);
    slm_plan_destroy(&p);
    expect_refused(&c, 3, 1, "1, 2, 4, 8, 16, 32", NULL);
}

static void test_110m(void **state)
{
    (void)state;
    const slm_model_config c = llama110m();
    for (int32_t pp = 1; pp <= 12; pp++) {
        expect_valid(&c, 3, pp);
        expect_valid(&c, 6, pp);
        expect_valid(&c, 12, pp);
    }
    expect_refused(&c, 8, 1, "n_heads = 12", "1, 2, 3, 4, 6, 12");
}

static void test_kv_refusal(void **state)
{
    (void)state;
    /* 12 query heads reading 4 kv heads (groups of 3), head_size 4 */
    const slm_model_config c = make_config(48, 64, 2, 12, 4, 100, 16);
    expect_refused(&c, 6, 1, "n_kv_heads = 4", "1, 2, 4, 12");
    expect_refused(&c, 6, 1, "multiple", NULL);
    expect_refused(&c, 3, 1, "n_kv_heads = 4", "1, 2, 4, 12");
    expect_valid(&c, 12, 2); /* replicated x3 */
    expect_valid(&c, 4, 2);  /* split, one each */
    expect_valid(&c, 2, 2);  /* split, two each */
}

static void test_uneven_vocab_and_small_dims(void **state)
{
    (void)state;
    const slm_model_config c = make_config(16, 20, 2, 4, 4, 10, 8);
    slm_plan_t *p = NULL;
    assert_int_equal(slm_plan_create(&c, 4, 1, &p), SLM_OK);
    const int32_t counts[] = {3, 3, 2, 2}, begins[] = {0, 3, 6, 8};
    for (int32_t r = 0; r < 4; r++) {
        assert_int_equal(slm_plan_slice(p, r)->vocab.count, counts[r]);
        assert_int_equal(slm_plan_slice(p, r)->vocab.begin, begins[r]);
    }
    check_plan(&c, p, 4, 1);
    slm_plan_destroy(&p);

    /* more ranks than MLP columns or vocabulary rows */
    const slm_model_config h = make_config(16, 3, 2, 4, 4, 10, 8);
    expect_refused(&h, 4, 1, "hidden_dim = 3", "1, 2");
    const slm_model_config v = make_config(16, 20, 2, 4, 4, 3, 8);
    expect_refused(&v, 4, 1, "vocab_size = 3", "1, 2");
    /* one layer: only pp 1 */
    const slm_model_config one = make_config(16, 20, 1, 4, 4, 10, 8);
    expect_refused(&one, 1, 2, "n_layers = 1", "pp that work: 1");
}

static void test_unvalidated_config_refused(void **state)
{
    (void)state;
    slm_model_config c;
    memset(&c, 0, sizeof c);
    slm_plan_t *p = NULL;
    assert_int_equal(slm_plan_create(&c, 1, 1, &p), SLM_ERR_INVALID);
    assert_null(p);
    assert_int_equal(slm_plan_create(NULL, 1, 1, &p), SLM_ERR_INVALID);
    const slm_model_config ok = stories260k();
    assert_int_equal(slm_plan_create(&ok, 1, 1, NULL), SLM_ERR_INVALID);
}

static void test_describe(void **state)
{
    (void)state;
    const slm_model_config c = stories260k();
    slm_plan_t *p = NULL;
    assert_int_equal(slm_plan_create(&c, 2, 2, &p), SLM_OK);
    char buf[4096];
    slm_plan_describe(p, buf, sizeof buf);
    assert_non_null(strstr(buf, "shard 0: stage 0 tp 0 layers [0,3) heads "
                                "[0,4) kv [0,2) hidden [0,86) vocab [0,256)"));
    assert_non_null(strstr(buf, "shard 3: stage 1 tp 1 layers [3,5) heads "
                                "[4,8) kv [2,4) hidden [86,172) vocab "
                                "[256,512)"));
    assert_null(strstr(buf, "replicated"));
    int lines = 0;
    for (const char *s = buf; *s; s++)
        lines += *s == '\n';
    assert_int_equal(lines, 4);

    /* tiny buffers: truncated, terminated, and nothing written past cap */
    char small[16];
    memset(small, 'X', sizeof small);
    slm_plan_describe(p, small, 8);
    assert_string_equal(small, "shard 0");
    for (size_t i = 8; i < sizeof small; i++)
        assert_int_equal(small[i], 'X');
    memset(small, 'X', sizeof small);
    slm_plan_describe(p, small, 1);
    assert_int_equal(small[0], '\0');
    assert_int_equal(small[1], 'X');
    slm_plan_describe(p, NULL, 0); /* nowhere to write: no crash */
    slm_plan_destroy(&p);

    assert_int_equal(slm_plan_create(&c, 8, 1, &p), SLM_OK);
    slm_plan_describe(p, buf, sizeof buf);
    assert_non_null(strstr(buf, "shard 7: stage 0 tp 7 layers [0,5) heads "
                                "[7,8) kv [3,4) hidden [151,172) vocab "
                                "[448,512) kv x2 replicated\n"));
    /* a buffer that ends mid-line keeps a valid prefix */
    const size_t full = strlen(buf);
    for (size_t cap = 1; cap <= full + 1; cap += 7) {
        char *b = malloc(cap);
        assert_non_null(b);
        slm_plan_describe(p, b, cap);
        assert_int_equal(strlen(b), cap - 1 < full ? cap - 1 : full);
        assert_memory_equal(b, buf, strlen(b));
        free(b);
    }
    slm_plan_destroy(&p);
}

static void test_destroy_null(void **state)
{
    (void)state;
    slm_plan_destroy(NULL);
    slm_plan_t *p = NULL;
    slm_plan_destroy(&p);
    assert_null(p);
}

/* The rules of plan.h, restated independently of the library. */
static bool rules_allow(const slm_model_config *c, int64_t tp, int64_t pp)
{
    if (tp < 1 || tp > SLM_PLAN_MAX_TP || pp < 1 || pp > SLM_PLAN_MAX_PP)
        return false;
    if (c->n_heads % tp != 0)
        return false;
    if (c->n_kv_heads % tp != 0 && tp % c->n_kv_heads != 0)
        return false;
    return tp <= c->hidden_dim && tp <= c->vocab_size && pp <= c->n_layers;
}

static int32_t rand_in(uint64_t *rng, int32_t lo, int32_t hi)
{
    return lo + (int32_t)(slm_test_rand_u64(rng) % (uint64_t)(hi - lo + 1));
}

static void test_random_configs(void **state)
{
    (void)state;
    uint64_t rng = 0x5eed91a7ULL;
    int accepted = 0, refused = 0;
    for (int iter = 0; iter < 20000; iter++) {
        const int32_t kv = rand_in(&rng, 1, 16);
        const int32_t group = rand_in(&rng, 1, 8);
        const int32_t heads = kv * group;
        const int32_t head_size = 2 * rand_in(&rng, 1, 8);
        /* small hidden and vocab now and then, so those rules bite too */
        const int32_t hidden = rand_in(&rng, 0, 3) == 0 ? rand_in(&rng, 1, 12)
                                                        : rand_in(&rng, 1, 999);
        const int32_t vocab = rand_in(&rng, 0, 3) == 0 ? rand_in(&rng, 3, 12)
                                                       : rand_in(&rng, 3, 999);
        const int32_t layers = rand_in(&rng, 1, 40);
        const slm_model_config c = make_config(heads * head_size, hidden,
                                               layers, heads, kv, vocab, 16);
        int32_t tp, pp;
        switch (rand_in(&rng, 0, 3)) {
        case 0: /* anything, including nonsense */
            tp = rand_in(&rng, -3, 300);
            break;
        case 1: /* a multiple of the kv heads: replication */
            tp = kv * rand_in(&rng, 1, 8);
            break;
        default: /* a divisor-ish size */
            tp = rand_in(&rng, 1, heads);
            break;
        }
        pp = rand_in(&rng, 0, 9) == 0 ? rand_in(&rng, -3, 300)
                                      : rand_in(&rng, 1, layers + 2);
        slm_plan_t *p = NULL;
        slm_error_clear();
        const slm_status rc = slm_plan_create(&c, tp, pp, &p);
        if (rules_allow(&c, tp, pp)) {
            if (rc != SLM_OK)
                fail_msg("heads %d kv %d hidden %d vocab %d layers %d tp %d "
                         "pp %d refused: %s",
                         heads, kv, hidden, vocab, layers, tp, pp,
                         slm_error_message());
            check_plan(&c, p, tp, pp);
            slm_plan_destroy(&p);
            accepted++;
        } else {
            if (rc != SLM_ERR_INVALID)
                fail_msg("heads %d kv %d hidden %d vocab %d layers %d tp %d "
                         "pp %d: rc %d, want refusal",
                         heads, kv, hidden, vocab, layers, tp, pp, (int)rc);
            assert_null(p);
            /* every refusal says what would work */
            assert_non_null(strstr(slm_error_message(), " that work"));
            refused++;
        }
    }
    /* both verdicts were exercised in earnest */
    assert_true(accepted > 2000);
    assert_true(refused > 2000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k_all_splits),
        cmocka_unit_test(test_stories260k_refusals),
        cmocka_unit_test(test_tinyllama),
        cmocka_unit_test(test_110m),
        cmocka_unit_test(test_kv_refusal),
        cmocka_unit_test(test_uneven_vocab_and_small_dims),
        cmocka_unit_test(test_unvalidated_config_refused),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_destroy_null),
        cmocka_unit_test(test_random_configs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
