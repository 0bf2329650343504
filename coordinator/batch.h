/*
 * coordinator/batch.h - the offline batch format of `shardlm run`: JSON
 * Lines in, JSON Lines out.
 *
 * Input, one object per line (blank lines skipped):
 *   {"id": any JSON value (echoed), "prompt": "text",
 *    "n": positions (as generate's -n), "temperature": f, "top_k": k,
 *    "top_p": f, "repetition_penalty": f, "seed": s}
 * Only "prompt" is required; the others default to the command line's.
 * Output, one object per request, in input order:
 *   {"id": ..., "text": prompt and continuation as `generate` prints them,
 *    "prompt_tokens": n, "completion_tokens": n,
 *    "finish_reason": "stop" | "length"}
 * A malformed line fails the whole batch before any generation, naming the
 * line and the field. A request that cannot be answered (a prompt longer
 * than the context) gets {"id": ..., "error": "..."} and the batch goes on.
 */
#ifndef SLM_COORDINATOR_BATCH_H
#define SLM_COORDINATOR_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "coordinator/generate.h"
#include "coordinator/sampler.h"

#define SLM_BATCH_MAX_FILE     ((size_t)256 << 20)
#define SLM_BATCH_MAX_REQUESTS 1000000

typedef struct {
    char *id_json; /* the "id" value re-serialised, or NULL */
    char *prompt;
    int32_t steps;
    slm_sampling_params sampling;
} slm_batch_request;

typedef struct {
    slm_batch_request *items; /* (n) */
    size_t n;
} slm_batch;

/* Parses JSONL from data(len) with defaults for omitted fields. `what` names
 * the input in messages. The caller owns *out; free with slm_batch_free. */
slm_status slm_batch_parse(const char *data, size_t len, const char *what,
                           int32_t default_steps,
                           const slm_sampling_params *defaults, slm_batch *out);

/* Reads and parses a file (at most SLM_BATCH_MAX_FILE bytes). */
slm_status slm_batch_load(const char *path, int32_t default_steps,
                          const slm_sampling_params *defaults, slm_batch *out);

void slm_batch_free(slm_batch *b);

/* One output line (with its newline) for request r: caller frees with
 * free(). */
slm_status slm_batch_result_line(const slm_batch_request *r, const char *text,
                                 size_t text_len, const slm_generate_stats *st,
                                 char **line);

/* One output line for a request that could not be answered:
 *   {"id": ..., "error": "message"}
 * id_json may be NULL. Caller frees *line with free(). */
slm_status slm_batch_error_line(const char *id_json, const char *message,
                                char **line);

#endif
