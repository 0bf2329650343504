/*
 * coordinator/cli.h - strict parsing of command-line values. A flag value
 * that is not entirely a number in range is an error naming the flag.
 */
#ifndef SLM_COORDINATOR_CLI_H
#define SLM_COORDINATOR_CLI_H

#include <stdint.h>

#include "common/status.h"
#include "coordinator/sampler.h"
#include "model/checkpoint.h"
#include "shard/weights.h"

slm_status slm_cli_int(const char *flag, const char *text, int64_t lo,
                       int64_t hi, int64_t *out);
slm_status slm_cli_u64(const char *flag, const char *text, uint64_t *out);
slm_status slm_cli_float(const char *flag, const char *text, float *out);
/* --weights: where the file's weights live, "resident" or "mapped" (the
 * format the file's own: *format AUTO), or what they are held in, "f32"
 * (resident), or "bf16", "f16", "int8" (mapped: the copy in that format is
 * what is read; the file's pages it came from may be dropped). */
slm_status slm_cli_weights_mode(const char *text, slm_weights_mode *out,
                                slm_weight_format *format);

/* The sampling flags shared by generate, run and serve: their getopt_long
 * values, and the struct option entries to put in a command's table. */
enum {
    SLM_OPT_TEMPERATURE = 1000,
    SLM_OPT_TOP_K,
    SLM_OPT_TOP_P,
    SLM_OPT_REPETITION_PENALTY,
    SLM_OPT_SEED,
};
#define SLM_CLI_SAMPLING_OPTIONS                                               \
    {"temperature", required_argument, NULL, SLM_OPT_TEMPERATURE},             \
        {"top-k", required_argument, NULL, SLM_OPT_TOP_K},                     \
        {"top-p", required_argument, NULL, SLM_OPT_TOP_P},                     \
        {"repetition-penalty", required_argument, NULL,                        \
         SLM_OPT_REPETITION_PENALTY},                                          \
    {                                                                          \
        "seed", required_argument, NULL, SLM_OPT_SEED                          \
    }

/* The least-privilege overrides (common/privilege.h) of generate, run and
 * serve. */
enum {
    SLM_OPT_ALLOW_ROOT = 1100,
    SLM_OPT_ALLOW_CORE_DUMP,
    SLM_OPT_MANIFEST,
    SLM_OPT_PUBLIC_KEY
};
/* --manifest M [--public-key PUB] (coordinator/manifest_cmd.h). */
#define SLM_CLI_MANIFEST_OPTIONS                                               \
    {"manifest", required_argument, NULL, SLM_OPT_MANIFEST},                   \
    {                                                                          \
        "public-key", required_argument, NULL, SLM_OPT_PUBLIC_KEY              \
    }
#define SLM_CLI_PRIVILEGE_OPTIONS                                              \
    {"allow-root", no_argument, NULL, SLM_OPT_ALLOW_ROOT},                     \
    {                                                                          \
        "allow-core-dump", no_argument, NULL, SLM_OPT_ALLOW_CORE_DUMP          \
    }

/* If getopt's `c` is a sampling flag, parses `arg` into sp and sets *handled
 * (and *seeded for --seed); otherwise leaves everything as it is. */
slm_status slm_cli_sampling(int c, const char *arg, slm_sampling_params *sp,
                            bool *handled, bool *seeded);

#endif
