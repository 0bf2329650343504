/* tests/testutil.c - see testutil.h. */
#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

uint64_t slm_test_rand_u64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

float slm_test_rand_float(uint64_t *state, float lo, float hi)
{
    double u = (double)(slm_test_rand_u64(state) >> 11) * 0x1.0p-53;
    return lo + (float)(u * (double)(hi - lo));
}

void slm_test_fill_uniform(float *x, size_t n, uint64_t *state, float lo,
                           float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = slm_test_rand_float(state, lo, hi);
}

double slm_test_max_rel_err(const float *a, const float *b, size_t n,
                            double floor)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i]))
            return INFINITY; /* NaN never passes */
        double den = fabs((double)b[i]);
        if (den < floor)
            den = floor;
        double e = fabs((double)a[i] - (double)b[i]) / den;
        if (e > worst)
            worst = e;
    }
    return worst;
}

static int find_in(const char *env, const char *fallback, const char *name,
                   char *buf, size_t cap)
{
    const char *dir = getenv(env);
    if (!dir || !*dir)
        dir = fallback;
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    if (access(buf, R_OK) != 0) {
        fprintf(stderr, "SKIP: %s not found (set %s)\n", buf, env);
        return -1;
    }
    return 0;
}

int slm_test_model_path(const char *name, char *buf, size_t cap)
{
    return find_in("SHARDLM_MODELS_DIR", "../shared/models", name, buf, cap);
}

int slm_test_golden_path(const char *name, char *buf, size_t cap)
{
    return find_in("SHARDLM_GOLDEN_DIR", "../shared/golden", name, buf, cap);
}

int slm_test_missing_shared(void)
{
    const char *ci = getenv("CI");
    if (ci && strcmp(ci, "true") == 0) {
        fprintf(stderr, "FAIL: the shared models or golden files are missing, "
                        "and CI runs every test (set SHARDLM_MODELS_DIR and "
                        "SHARDLM_GOLDEN_DIR)\n");
        return 1;
    }
    return SLM_TEST_SKIP;
}

int slm_test_case_set(int argc, char **argv, const char *set)
{
    return argc > 1 && strcmp(argv[1], set) == 0;
}

int slm_test_cannot_run(const char *why)
{
    fprintf(stderr, "SKIP: %s\n", why);
    return SLM_TEST_SKIP;
}

void slm_test_write_temp(const void *data, size_t len, char *buf, size_t cap)
{
    const char *tmp = getenv("TMPDIR");
    int n = snprintf(buf, cap, "%s/slmtestXXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_true(n > 0 && (size_t)n < cap);
    int fd = mkstemp(buf);
    assert_true(fd >= 0);
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        assert_true(w > 0);
        p += w;
        left -= (size_t)w;
    }
    assert_int_equal(close(fd), 0);
}

/* Parses an exactly-sized heap copy of buf(len). */
static void try_copy(const uint8_t *buf, size_t len,
                     void (*try_parse)(const uint8_t *, size_t))
{
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    memcpy(p, buf, len);
    try_parse(p, len);
    free(p);
}

void slm_test_hostile_bytes(uint8_t *const *valid, const size_t *lens, int n,
                            int randoms, int mutations, uint64_t seed,
                            void (*try_parse)(const uint8_t *buf, size_t len))
{
    for (int i = 0; i < n; i++)
        for (size_t cut = 0; cut < lens[i]; cut++)
            try_copy(valid[i], cut, try_parse);

    uint64_t rng = seed;
    uint8_t buf[256];
    for (int i = 0; i < randoms; i++) {
        size_t len = slm_test_rand_u64(&rng) % sizeof buf;
        for (size_t j = 0; j < len; j++) {
            uint64_t r = slm_test_rand_u64(&rng);
            buf[j] = (uint8_t)r;
            if (j == 0 && (i & 1))
                buf[j] = (uint8_t)(((1 + r % 5) << 3) | 2);
            if (j == 1 && (i & 1))
                buf[j] = (uint8_t)(len - 2);
        }
        try_copy(buf, len, try_parse);
    }

    for (int i = 0; i < mutations && n > 0; i++) {
        const int k = i % n;
        if (lens[k] == 0)
            continue;
        uint8_t *p = malloc(lens[k]);
        assert_non_null(p);
        memcpy(p, valid[k], lens[k]);
        uint64_t r = slm_test_rand_u64(&rng);
        size_t at = (r & 1) ? (r >> 8) % lens[k] : (r >> 8) % 24 % lens[k];
        p[at] = (r & 2) ? (uint8_t)(r >> 40)
                        : (uint8_t)(p[at] ^ (1u << (r >> 4 & 7)));
        try_parse(p, lens[k]);
        free(p);
    }
}
