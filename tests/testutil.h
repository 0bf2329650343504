/*
 * tests/testutil.h - helpers shared by the cmocka tests: seeded random data,
 * float comparison, and locating the shared models (skip with 77 if absent).
 */
#ifndef SLM_TESTS_TESTUTIL_H
#define SLM_TESTS_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

/* ctest maps this exit code to "skipped" (SKIP_RETURN_CODE). */
#define SLM_TEST_SKIP 77

/* Deterministic generator for test data (splitmix64). */
uint64_t slm_test_rand_u64(uint64_t *state);
/* Uniform in [lo, hi). */
float slm_test_rand_float(uint64_t *state, float lo, float hi);
void slm_test_fill_uniform(float *x, size_t n, uint64_t *state, float lo,
                           float hi);

/* Max over i of |a[i] - b[i]| / max(|b[i]|, floor). */
double slm_test_max_rel_err(const float *a, const float *b, size_t n,
                            double floor);

/* Writes "<models dir>/<name>" into buf; returns 0 if the file exists, -1 if
 * not (the caller then exits SLM_TEST_SKIP after saying why on stderr).
 * The directory is $SHARDLM_MODELS_DIR, else ../shared/models. */
int slm_test_model_path(const char *name, char *buf, size_t cap);
/* Same for $SHARDLM_GOLDEN_DIR (default ../shared/golden). */
int slm_test_golden_path(const char *name, char *buf, size_t cap);

/* What main returns when the shared models or golden files are missing:
 * SLM_TEST_SKIP, or in CI (CI=true), where every test must do its work, 1
 * (a failure), having said so on stderr. */
int slm_test_missing_shared(void);

/* Case sets. Cases that need what a machine may lack (AVX-512, two GPUs) or
 * may have (a GPU, for the cases of a machine without one) are not cmocka
 * skip()s, which ctest would count as passes: each such set is a ctest entry
 * of its own (tests/CMakeLists.txt, slm_case_set) that starts the program
 * with the set's name. slm_test_case_set returns true if argv names `set`.
 * main then runs that set alone, or returns slm_test_cannot_run(why) -
 * SLM_TEST_SKIP, having said why - where it cannot run. */
int slm_test_case_set(int argc, char **argv, const char *set);
int slm_test_cannot_run(const char *why);

/* Writes len bytes to a new temporary file; returns its path in buf (the
 * caller unlinks it). Fails the test on error. */
void slm_test_write_temp(const void *data, size_t len, char *buf, size_t cap);

/* Feeds a parser hostile bytes derived from valid messages; each input goes
 * to try_parse in a heap copy of exactly its length, so ASan sees any
 * over-read. The parser must not crash; try_parse asserts what it must.
 *   - every truncation of every valid buffer;
 *   - `randoms` random buffers of up to 255 bytes, half of them starting like
 *     a protobuf message body (a length-delimited field 1..5);
 *   - `mutations` single-byte changes of the valid buffers, mostly in the
 *     first 24 bytes (the framing), sometimes anywhere.
 * valid(n) and lens(n) are borrowed. */
void slm_test_hostile_bytes(uint8_t *const *valid, const size_t *lens, int n,
                            int randoms, int mutations, uint64_t seed,
                            void (*try_parse)(const uint8_t *buf, size_t len));

#endif
