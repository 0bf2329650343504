/*
 * model/hf_model.h - a Hugging Face model directory (config.json and
 * model.safetensors, or shards named by model.safetensors.index.json) read
 * into the one model description and the tensor table of model/checkpoint.h.
 *
 * Each tensor is one of the tensor table of checkpoint.h, so that everything
 * after the loader - the plan, the slices each shard copies, the forward
 * pass - is the same for both formats:
 *   model.embed_tokens.weight                (vocab, dim)    token_embedding
 *   model.layers.L.input_layernorm.weight    (dim)           rms_att
 *   model.layers.L.self_attn.q_proj.weight   (dim, dim)      wq (permuted)
 *   model.layers.L.self_attn.k_proj.weight   (kv_dim, dim)   wk (permuted)
 *   model.layers.L.self_attn.v_proj.weight   (kv_dim, dim)   wv
 *   model.layers.L.self_attn.o_proj.weight   (dim, dim)      wo
 *   model.layers.L.post_attention_layernorm.weight (dim)     rms_ffn
 *   model.layers.L.mlp.gate_proj.weight      (hidden, dim)   w1
 *   model.layers.L.mlp.down_proj.weight      (dim, hidden)   w2
 *   model.layers.L.mlp.up_proj.weight        (hidden, dim)   w3
 *   model.norm.weight                        (dim)           rms_final
 *   lm_head.weight                           (vocab, dim)    wcls (absent
 *                                                            when tied)
 *   model.layers.L.self_attn.{q,k,v}_proj.bias  Qwen2: bq, bk, bv
 *   model.layers.L.self_attn.{q,k}_norm.weight  Qwen3: q_norm, k_norm
 * F32, F16 and BF16 tensors are read; 16-bit ones are widened to float32
 * exactly (every 16-bit value is a float32 value).
 *
 * Rotary layout. transformers rotates each head's first half against its
 * second half (rotate_half: pair i is elements i and i + head_size/2);
 * llama2.c, and our kernel, rotate adjacent elements (2i, 2i+1). We permute
 * the rows of q_proj and k_proj at load, within each head, so that row 2i
 * is HF's row i and row 2i+1 is HF's row i + head_size/2: the same
 * permutation transformers' convert_llama_weights_to_hf undoes. q and k get
 * the same permutation, so their dot products - the attention scores - are
 * unchanged, and the rotation of pair i by the angle of frequency i is
 * HF's. v and o are not touched. What is indexed by the element of a q or k
 * head - bq, bk, q_norm, k_norm - gets the same permutation (an RMSNorm
 * over a head does not depend on the order of its elements).
 *
 * Every tensor the architecture needs must be there with exactly its shape;
 * a tensor we would not use (a bias, a norm we do not have) is refused by
 * name rather than ignored, except the rotary inv_freq buffers that older
 * checkpoints saved (we compute the frequencies from config.json).
 */
#ifndef SLM_MODEL_HF_MODEL_H
#define SLM_MODEL_HF_MODEL_H

#include <stdbool.h>

#include "common/hugemem.h"
#include "common/status.h"
#include "model/checkpoint.h"

typedef struct slm_hf_model slm_hf_model_t;

/* True if `path` names a Hugging Face model: a directory, or a file whose
 * name ends in ".safetensors" (config.json beside it). */
bool slm_hf_model_is_hf(const char *path);

/* Reads config.json beside or in `path`, maps the safetensors read-only,
 * and checks every tensor (present, its shape, no unknown one) before any
 * weight is read. *cfg is the full model description. On success the
 * caller owns *out (slm_hf_model_destroy). */
slm_status slm_hf_model_open(const char *path, slm_model_config *cfg,
                             slm_hf_model_t **out);

/* Rows [row0, +n_rows) x columns [col0, +n_cols) of tensor `id` of `layer`,
 * in our layout (checkpoint.h's table: a vector is one row), as float32
 * into out(n_rows, n_cols): only those bytes of the file are read, widened
 * exactly from 16 bits, with the rotary permutation above. The caller has
 * checked the slice against the table. */
slm_status slm_hf_model_read(const slm_hf_model_t *m, slm_tensor_id id,
                             size_t layer, size_t row0, size_t n_rows,
                             size_t col0, size_t n_cols, float *out);

/* The files of the model at `path` that shardlm reads, for a manifest to
 * cover: config.json; the .safetensors file named, or for a directory every
 * *.safetensors in it (an index may name only files there) and
 * model.safetensors.index.json; and tokenizer.json, tokenizer_config.json
 * and chat_template.jinja where present. Found by name only, nothing
 * parsed: the manifest is checked before any of them is read. On success
 * the caller frees *files with slm_hf_model_files_free(*files, *n). */
slm_status slm_hf_model_files(const char *path, char ***files, size_t *n);
void slm_hf_model_files_free(char **files, size_t n);

/* The Hugging Face name of tensor `id` of `layer` (ignored for tensors not
 * per layer) into buf(cap), as in the table above; false when it does not
 * fit. What a writer of such files (mkmodel) names them. */
bool slm_hf_model_tensor_name(slm_tensor_id id, size_t layer, char *buf,
                              size_t cap);

/* The dtype of the model's matrices: that of layer 0's wq (every matrix of
 * a published checkpoint shares it; a mixed file is read all the same). */
slm_weight_dtype slm_hf_model_dtype(const slm_hf_model_t *m);

/* Accepts NULL; sets *m to NULL. */
void slm_hf_model_destroy(slm_hf_model_t **m);

#endif
