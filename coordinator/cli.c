/* coordinator/cli.c - see cli.h. */
#include "coordinator/cli.h"

#include <getopt.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

slm_status slm_cli_int(const char *flag, const char *text, int64_t lo,
                       int64_t hi, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi)
        return slm_fail(SLM_ERR_INVALID,
                        "%s: '%s' is not an integer in [%lld, %lld]", flag,
                        text, (long long)lo, (long long)hi);
    *out = v;
    return SLM_OK;
}

slm_status slm_cli_u64(const char *flag, const char *text, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    if (text[0] == '-')
        return slm_fail(SLM_ERR_INVALID, "%s: '%s' must not be negative", flag,
                        text);
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0')
        return slm_fail(SLM_ERR_INVALID,
                        "%s: '%s' is not an unsigned 64-bit integer", flag,
                        text);
    *out = v;
    return SLM_OK;
}

slm_status slm_cli_float(const char *flag, const char *text, float *out)
{
    char *end = NULL;
    errno = 0;
    float v = strtof(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !isfinite(v))
        return slm_fail(SLM_ERR_INVALID, "%s: '%s' is not a finite number",
                        flag, text);
    *out = v;
    return SLM_OK;
}

slm_status slm_cli_weights_mode(const char *text, slm_weights_mode *out,
                                slm_weight_format *format)
{
    static const struct {
        const char *name;
        slm_weights_mode mode;
        slm_weight_format format;
    } choices[] = {
        {"resident", SLM_WEIGHTS_RESIDENT, SLM_WFORMAT_AUTO},
        {"mapped", SLM_WEIGHTS_MAPPED, SLM_WFORMAT_AUTO},
        {"f32", SLM_WEIGHTS_RESIDENT, SLM_WFORMAT_F32},
        /* The copy in the format is what is read; the file's pages it came
         * from may be dropped by the kernel. */
        {"bf16", SLM_WEIGHTS_MAPPED, SLM_WFORMAT_BF16},
        {"f16", SLM_WEIGHTS_MAPPED, SLM_WFORMAT_F16},
        {"int8", SLM_WEIGHTS_MAPPED, SLM_WFORMAT_INT8},
    };
    for (size_t i = 0; i < sizeof choices / sizeof choices[0]; i++)
        if (strcmp(text, choices[i].name) == 0) {
            *out = choices[i].mode;
            *format = choices[i].format;
            return SLM_OK;
        }
    return slm_fail(SLM_ERR_INVALID,
                    "--weights: '%s' is not one of resident, mapped, f32, "
                    "bf16, f16, int8",
                    text);
}

slm_status slm_cli_sampling(int c, const char *arg, slm_sampling_params *sp,
                            bool *handled, bool *seeded)
{
    int64_t v = 0;
    *handled = true;
    switch (c) {
    case SLM_OPT_TEMPERATURE:
        return slm_cli_float("--temperature", arg, &sp->temperature);
    case SLM_OPT_TOP_K:
        SLM_CHECK(slm_cli_int("--top-k", arg, 0, SLM_MAX_VOCAB, &v));
        sp->top_k = (int32_t)v;
        return SLM_OK;
    case SLM_OPT_TOP_P:
        return slm_cli_float("--top-p", arg, &sp->top_p);
    case SLM_OPT_REPETITION_PENALTY:
        return slm_cli_float("--repetition-penalty", arg,
                             &sp->repetition_penalty);
    case SLM_OPT_SEED:
        *seeded = true;
        return slm_cli_u64("--seed", arg, &sp->seed);
    default:
        *handled = false;
        return SLM_OK;
    }
}
