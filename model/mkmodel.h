/*
 * model/mkmodel.h - synthetic models with seeded random weights, for tests
 * and benchmarks of real model shapes without downloads: llama2.c
 * checkpoints, and Hugging Face directories of each supported architecture
 * (config.json, model.safetensors in float32, bfloat16 or float16, and
 * tokenizer files), which transformers loads as it loads a published model.
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

/* Makes cfg (a shape) one of the Hugging Face architectures: "llama"
 * (Llama 2 style), "llama3" (rope theta 500000 and Llama 3.1's rope
 * scaling), "mistral", "qwen2" (q/k/v biases), "qwen3" (q/k norms). The
 * token ids are those slm_mkmodel_write_hf's vocabulary gives: the
 * family's special tokens at the top of the vocabulary. SLM_ERR_INVALID
 * for another name. */
slm_status slm_mkmodel_arch(const char *name, slm_model_config *cfg);

/* The names slm_mkmodel_arch knows, comma-separated; static. */
const char *slm_mkmodel_arch_names(void);

/* Writes a Hugging Face directory `dir` (created if missing; files in it
 * replaced) for cfg (from slm_mkmodel_arch): config.json,
 * generation_config.json, model.safetensors with every tensor in `dtype`
 * (values as slm_mkmodel_write draws them; norms near 1 and biases small
 * but random, so that a reader that skips one shows), and tokenizer.json
 * with tokenizer_config.json: a BPE vocabulary of exactly the model's size
 * in the family's style (SentencePiece-like with byte fallback for llama
 * and mistral, byte-level for llama3 and the Qwens), its special tokens and
 * chat template. The same inputs give the same bytes. */
slm_status slm_mkmodel_write_hf(const char *dir, const slm_model_config *cfg,
                                slm_weight_dtype dtype, uint64_t seed);

#endif
