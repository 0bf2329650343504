/*
 * model/tokenizer_impl.h - private to model/tokenizer*.c: the Hugging Face
 * tokenizer.json half of slm_tokenizer_t. model/tokenizer.c owns the public
 * handle and forwards to these when the handle holds a tokenizer.json; the
 * contracts are those of the public functions in model/tokenizer.h.
 */
#ifndef SLM_MODEL_TOKENIZER_IMPL_H
#define SLM_MODEL_TOKENIZER_IMPL_H

#include "model/tokenizer.h"

typedef struct slm__tok_hf slm__tok_hf;

/* config/config_len: tokenizer_config.json, or NULL/0 when there is none;
 * config_what names it in messages. */
slm_status slm__tok_hf_parse(const uint8_t *data, size_t len,
                             const uint8_t *config, size_t config_len,
                             int32_t vocab_size, const char *what,
                             const char *config_what, slm__tok_hf **out);
void slm__tok_hf_destroy(slm__tok_hf **t);
int32_t slm__tok_hf_max_token_bytes(const slm__tok_hf *t);
slm_status slm__tok_hf_encode(const slm__tok_hf *t, const char *text,
                              size_t len, const slm_encode_opts *opts,
                              int32_t **ids, size_t *n_ids);
const char *slm__tok_hf_decode(const slm__tok_hf *t, int32_t prev,
                               int32_t token, size_t *len);
int32_t slm__tok_hf_bos_id(const slm__tok_hf *t);
int32_t slm__tok_hf_eos_id(const slm__tok_hf *t);
/* -1 if no token has exactly that piece. */
int32_t slm__tok_hf_token_id(const slm__tok_hf *t, const char *piece,
                             size_t len);
bool slm__tok_hf_is_special(const slm__tok_hf *t, int32_t id);

#endif
