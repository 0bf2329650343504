/*
 * model/mkmodel.h - synthetic llama2.c checkpoints with seeded random weights,
 * for tests and benchmarks of real model shapes without downloads.
 */
#ifndef SLM_MODEL_MKMODEL_H
#define SLM_MODEL_MKMODEL_H

#include <stdint.h>

#include "common/status.h"
#include "model/checkpoint.h"

/* Fills *out with a named shape: "stories260k", "110m", "tinyllama-1.1b",
 * "7b". SLM_ERR_INVALID (listing the names) for an unknown one. */
slm_status slm_mkmodel_shape(const char *name, slm_model_config *out);

/* The names slm_mkmodel_shape knows, comma-separated; static. */
const char *slm_mkmodel_shape_names(void);

/* Validates cfg and writes a checkpoint to `path` (created or truncated).
 * Matrices are uniform in +-1/sqrt(cols), norms are 1, the embedding is
 * uniform in +-0.05; the same cfg and seed always give the same bytes. */
slm_status slm_mkmodel_write(const char *path, const slm_model_config *cfg,
                             uint64_t seed);

#endif
