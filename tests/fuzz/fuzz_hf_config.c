/*
 * tests/fuzz/fuzz_hf_config.c - libFuzzer target for config.json
 * (model/hf_config.c): any bytes through slm_hf_config_parse, the call the
 * loader makes before any weight is read.
 *
 * A refusal must say why. An accepted config must be one the rest of the
 * engine can trust without checking again: slm_model_config_validate accepts
 * it unchanged, its sizes are within the hard limits and divide as the
 * forward pass needs, the token ids are in the vocabulary, the rope is one
 * we compute and its frequencies are finite and positive, and its tensor
 * table (slm_checkpoint_table) lays out without overflow. Parsing the same
 * bytes twice gives the same description (nothing depends on state).
 *
 * Build (bash): clang -g -fsanitize=fuzzer,address,undefined -I. \
 *   tests/fuzz/fuzz_hf_config.c model/hf_config.c model/checkpoint.c \
 *   model/hf_model.c model/safetensors.c kernels/cpu/half.c \
 *   common/{status,file,reader,hugemem,checked}.c -ljansson -lm
 * Seeds: tests/fuzz/corpus/hf_config/ (each architecture, both rope styles,
 * llama3 scaling, lists of eos ids, Qwen's windows).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoint.h"
#include "model/hf_config.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_hf_config: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    slm_model_config c;
    memset(&c, 0xa5, sizeof c);
    const slm_model_config before = c;
    slm_status rc =
        slm_hf_config_parse((const char *)data, size, "config.json", &c);
    if (rc != SLM_OK) {
        check(slm_error_message()[0] != '\0', "a refusal without a message");
        check(memcmp(&c, &before, sizeof c) == 0, "a refusal wrote *out");
        return 0;
    }
    slm_model_config again = c;
    check(slm_model_config_validate(&again, "again") == SLM_OK,
          "an accepted config fails validation");
    check(memcmp(&again, &c, sizeof c) == 0, "validation changed it");
    /* head_dim may make the queries wider or narrower than dim (q_dim) */
    check(c.dim >= 1 && c.dim <= SLM_MAX_DIM && c.n_heads >= 1 &&
              c.n_kv_heads >= 1 && c.n_heads % c.n_kv_heads == 0 &&
              c.head_size >= 2 && c.head_size <= SLM_MAX_DIM &&
              c.head_size % 2 == 0 && c.q_dim == c.head_size * c.n_heads &&
              c.kv_dim == c.head_size * c.n_kv_heads,
          "sizes the forward pass cannot use");
    check(c.bos_id >= -1 && c.bos_id < c.vocab_size, "bos outside the vocab");
    check(c.n_eos_ids >= 0 && c.n_eos_ids <= SLM_MAX_EOS_IDS, "eos count");
    for (int32_t i = 0; i < c.n_eos_ids; i++)
        check(c.eos_ids[i] >= 0 && c.eos_ids[i] < c.vocab_size,
              "eos outside the vocab");
    check(c.rope_scaling.type == SLM_ROPE_DEFAULT ||
              c.rope_scaling.type == SLM_ROPE_LLAMA3,
          "an unknown rope");
    check(c.arch >= SLM_ARCH_LLAMA && c.arch <= SLM_ARCH_QWEN3, "an arch");
    float *freqs = malloc((size_t)c.head_size / 2 * sizeof *freqs);
    check(freqs != NULL, "out of memory");
    slm_model_config_rope_freqs(&c, freqs);
    for (int32_t i = 0; i < c.head_size / 2; i++)
        check(isfinite(freqs[i]) && freqs[i] > 0.0f,
              "a rope frequency not finite and positive");
    free(freqs);
    slm_tensor_info table[SLM_TENSOR_COUNT];
    check(slm_checkpoint_table(&c, table) == SLM_OK, "the table overflows");
    slm_model_config twice;
    check(slm_hf_config_parse((const char *)data, size, "config.json",
                              &twice) == SLM_OK &&
              memcmp(&twice, &c, sizeof c) == 0,
          "the same bytes parse differently");
    return 0;
}
