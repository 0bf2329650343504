/*
 * model/hf_config.h - a Hugging Face model's config.json, read into the one
 * model description (slm_model_config, model/checkpoint.h).
 *
 * Architectures: LlamaForCausalLM (Llama 2, Llama 3/3.1/3.2 with rope
 * scaling of type llama3, TinyLlama, SmolLM), MistralForCausalLM (a
 * sliding window only if it covers the whole context), Qwen2ForCausalLM
 * (biases on q, k, v) and Qwen3ForCausalLM (RMSNorm of each q and k head);
 * for Qwen, a window counts only with use_sliding_window and on the layers
 * layer_types names "sliding_attention". Fields read:
 *   hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
 *   num_key_value_heads (default: num_attention_heads), head_dim (must be
 *   hidden_size / num_attention_heads), rms_norm_eps, rope_theta,
 *   rope_scaling (null, "default" or "llama3" with factor, low_freq_factor,
 *   high_freq_factor, original_max_position_embeddings; the type under
 *   "rope_type" or the older "type"), max_position_embeddings,
 *   tie_word_embeddings (default false, as transformers' LlamaConfig),
 *   vocab_size, bos_token_id and eos_token_id (an id, a list of ids or
 *   null), hidden_act ("silu").
 * transformers 5 writes the rope under "rope_parameters" ({"rope_theta",
 * "rope_type", ...}); published checkpoints mostly carry "rope_theta" and
 * "rope_scaling" at the top level. Both are read; giving both is refused.
 *
 * Refused before any weight is read, naming the field and its value:
 * another architecture, a quantization_config, an unknown rope type,
 * attention or MLP biases, another activation, a sliding window shorter than
 * the context, a missing or mistyped field, values out of range.
 */
#ifndef SLM_MODEL_HF_CONFIG_H
#define SLM_MODEL_HF_CONFIG_H

#include <stddef.h>

#include "common/status.h"
#include "model/checkpoint.h"

/* The most bytes of config.json read: configs are a few KiB. */
#define SLM_HF_CONFIG_MAX_BYTES ((size_t)1 << 20)

/* Parses config.json text (len bytes, not NUL-terminated) into *out and
 * validates it (slm_model_config_validate). `what` names the file in
 * messages. Pure: usable on any buffer (fuzzed). */
slm_status slm_hf_config_parse(const char *text, size_t len, const char *what,
                               slm_model_config *out);

/* Reads and parses `path` (a config.json file). */
slm_status slm_hf_config_load(const char *path, slm_model_config *out);

#endif
