/*
 * coordinator/cli.h - strict parsing of command-line values. A flag value
 * that is not entirely a number in range is an error naming the flag.
 */
#ifndef SLM_COORDINATOR_CLI_H
#define SLM_COORDINATOR_CLI_H

#include <stdint.h>

#include "common/status.h"
#include "model/checkpoint.h"

slm_status slm_cli_int(const char *flag, const char *text, int64_t lo,
                       int64_t hi, int64_t *out);
slm_status slm_cli_u64(const char *flag, const char *text, uint64_t *out);
slm_status slm_cli_float(const char *flag, const char *text, float *out);
/* --weights: "resident" or "mapped". */
slm_status slm_cli_weights_mode(const char *text, slm_weights_mode *out);

#endif
