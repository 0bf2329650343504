/*
 * tests/unit/test_sampler.c - greedy, temperature, top-k, top-p, repetition
 * penalty, seeding and parameter validation.
 */
#include "tests/testutil.h"

#include <math.h>
#include <string.h>

#include "coordinator/sampler.h"

enum { V = 8 };

static slm_sampling_params params(float temp, int32_t k, float p, float pen,
                                  uint64_t seed)
{
    slm_sampling_params sp = {temp, k, p, pen, seed};
    return sp;
}

static int32_t sample_once(slm_sampler_t *s, const float *logits)
{
    float copy[V];
    memcpy(copy, logits, sizeof copy);
    return slm_sampler_sample(s, copy, NULL, 0);
}

static void test_greedy_is_first_argmax(void **state)
{
    (void)state;
    slm_sampling_params sp = params(0.0f, 0, 1.0f, 1.0f, 1);
    slm_sampler_t *s = NULL;
    assert_int_equal(slm_sampler_create(V, &sp, &s), SLM_OK);
    const float a[V] = {0, 1, 5, 2, 5, -1, 0, 3};
    assert_int_equal(sample_once(s, a), 2); /* first of the tied maxima */
    const float b[V] = {-9, -8, -7, -6, -5, -4, -3, -2};
    assert_int_equal(sample_once(s, b), 7);
    slm_sampler_destroy(&s);
    assert_null(s);
    slm_sampler_destroy(&s);
}

/* Same seed and parameters => same sequence; another seed => another one. */
static void test_seed_determines_sequence(void **state)
{
    (void)state;
    const float logits[V] = {1, 1, 1, 1, 1, 1, 1, 1};
    int32_t seq[3][64];
    const uint64_t seeds[3] = {42, 42, 43};
    for (int r = 0; r < 3; r++) {
        slm_sampling_params sp = params(1.0f, 0, 1.0f, 1.0f, seeds[r]);
        slm_sampler_t *s = NULL;
        assert_int_equal(slm_sampler_create(V, &sp, &s), SLM_OK);
        for (int i = 0; i < 64; i++)
            seq[r][i] = sample_once(s, logits);
        slm_sampler_destroy(&s);
    }
    assert_memory_equal(seq[0], seq[1], sizeof seq[0]);
    assert_memory_not_equal(seq[0], seq[2], sizeof seq[0]);
}

/* At temperature 1 the frequencies follow softmax(logits): each within 5
 * standard deviations over 40000 draws. */
static void test_temperature_one_follows_softmax(void **state)
{
    (void)state;
    const float logits[V] = {0.0f, 1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.0f, -3.0f};
    double p[V], sum = 0.0;
    for (int i = 0; i < V; i++)
        sum += p[i] = exp(logits[i]);
    slm_sampling_params sp = params(1.0f, 0, 1.0f, 1.0f, 7);
    slm_sampler_t *s = NULL;
    assert_int_equal(slm_sampler_create(V, &sp, &s), SLM_OK);
    const int draws = 40000;
    int count[V] = {0};
    for (int i = 0; i < draws; i++)
        count[sample_once(s, logits)]++;
    for (int i = 0; i < V; i++) {
        double q = p[i] / sum, sd = sqrt(draws * q * (1 - q));
        assert_true(fabs(count[i] - draws * q) < 5 * sd + 1);
    }
    slm_sampler_destroy(&s);
}

static void test_low_temperature_sharpens(void **state)
{
    (void)state;
    const float logits[V] = {0, 1, 2, 3, 2.5f, 0, 0, 0};
    slm_sampling_params sp = params(0.05f, 0, 1.0f, 1.0f, 3);
    slm_sampler_t *s = NULL;
    assert_int_equal(slm_sampler_create(V, &sp, &s), SLM_OK);
    int hits = 0;
    for (int i = 0; i < 1000; i++)
        hits += sample_once(s, logits) == 3;
    assert_true(hits > 990);
    slm_sampler_destroy(&s);
}

static void test_top_k_limits_candidates(void **state)
{
    (void)state;
    const float logits[V] = {0, 4, 1, 3, 2, 0, 0, 5};
    slm_sampling_params sp = params(5.0f, 3, 1.0f, 1.0f, 11);
    slm_sampler_t *s = NULL;
    assert_int_equal(slm_sampler_create(V, &sp, &s), SLM_OK);
    int seen[V] = {0};
    for (int i = 0; i < 5000; i++)
        seen[sample_once(s, logits)]++;
    for (int i = 0; i < V; i++)
        assert_true((seen[i] > 0) == (i == 7 || i == 1 || i == 3));
    slm_sampler_destroy(&s);
}

static void test_top_p_keeps_nucleus(void **state)
{
    (void)state;
    /* probabilities 0.5, 0.25, 0.125, ... : p = 0.7 keeps the first two */
    float logits[V];
    for (int i = 0; i < V; i++)
        logits[i] = -(float)i * logf(2.0f);
    slm_sampling_params sp = params(1.0f, 0, 0.7f, 1.0f, 5);
    slm_sampler_t *s = NULL;
    assert_int_equal(slm_sampler_create(V, &sp, &s), SLM_OK);
    int seen[V] = {0};
    for (int i = 0; i < 5000; i++)
        seen[sample_once(s, logits)]++;
    assert_true(seen[0] > 0 && seen[1] > 0);
    for (int i = 2; i < V; i++)
        assert_int_equal(seen[i], 0);
    /* roughly 2:1 between the two survivors */
    assert_true(seen[0] > 1.6 * seen[1] && seen[0] < 2.4 * seen[1]);
    slm_sampler_destroy(&s);
}

/* The nucleus is measured against the whole distribution, even after the
 * pre-filter drops tokens: with p = 0.45, 0.35, 0.20 and top_p 0.5, the
 * nucleus is {0, 1} (0.45 < 0.5), and token 1 must be drawn. */
static void test_top_p_measures_the_whole_mass(void **state)
{
    (void)state;
    float logits[3] = {logf(0.45f), logf(0.35f), logf(0.20f)};
    for (int32_t k = 0; k <= 3; k += 3) { /* top-k off, and a no-op top-k */
        slm_sampling_params sp = params(1.0f, k, 0.5f, 1.0f, 9);
        slm_sampler_t *s = NULL;
        assert_int_equal(slm_sampler_create(3, &sp, &s), SLM_OK);
        int seen[3] = {0};
        for (int i = 0; i < 4000; i++) {
            float copy[3] = {logits[0], logits[1], logits[2]};
            seen[slm_sampler_sample(s, copy, NULL, 0)]++;
        }
        assert_int_equal(seen[2], 0);
        /* 0.45 : 0.35 between the two survivors */
        assert_true(seen[1] > 1400 && seen[1] < 2100);
        slm_sampler_destroy(&s);
    }
}

static void test_repetition_penalty(void **state)
{
    (void)state;
    slm_sampling_params sp = params(0.0f, 0, 1.0f, 2.0f, 1);
    slm_sampler_t *s = NULL;
    assert_int_equal(slm_sampler_create(V, &sp, &s), SLM_OK);
    float logits[V] = {0, 3.0f, 2.0f, -1.0f, 0, 0, 0, 0};
    const int32_t history[] = {1, 1, 3, 99, -5}; /* junk ids are ignored */
    assert_int_equal(slm_sampler_sample(s, logits, history, 5), 2);
    assert_true(logits[1] == 1.5f);  /* positive: divided, once */
    assert_true(logits[3] == -2.0f); /* negative: multiplied */
    assert_true(logits[2] == 2.0f);  /* unseen: untouched */
    slm_sampler_destroy(&s);
}

static void test_invalid_params(void **state)
{
    (void)state;
    slm_sampler_t *s = NULL;
    struct {
        slm_sampling_params p;
        const char *field;
    } bad[] = {
        {params(-1.0f, 0, 1.0f, 1.0f, 0), "temperature"},
        {params(NAN, 0, 1.0f, 1.0f, 0), "temperature"},
        {params(INFINITY, 0, 1.0f, 1.0f, 0), "temperature"},
        {params(1.0f, -2, 1.0f, 1.0f, 0), "top_k"},
        {params(1.0f, 0, 0.0f, 1.0f, 0), "top_p"},
        {params(1.0f, 0, 1.5f, 1.0f, 0), "top_p"},
        {params(1.0f, 0, NAN, 1.0f, 0), "top_p"},
        {params(1.0f, 0, 1.0f, 0.0f, 0), "repetition_penalty"},
        {params(1.0f, 0, 1.0f, NAN, 0), "repetition_penalty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(slm_sampler_create(V, &bad[i].p, &s), SLM_ERR_INVALID);
        assert_null(s);
        assert_non_null(strstr(slm_error_message(), bad[i].field));
    }
    slm_sampling_params ok = slm_sampling_defaults();
    assert_int_equal(slm_sampler_create(0, &ok, &s), SLM_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_is_first_argmax),
        cmocka_unit_test(test_seed_determines_sequence),
        cmocka_unit_test(test_temperature_one_follows_softmax),
        cmocka_unit_test(test_low_temperature_sharpens),
        cmocka_unit_test(test_top_k_limits_candidates),
        cmocka_unit_test(test_top_p_keeps_nucleus),
        cmocka_unit_test(test_top_p_measures_the_whole_mass),
        cmocka_unit_test(test_repetition_penalty),
        cmocka_unit_test(test_invalid_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
