/*
 * model/tokenizer.h - the llama2.c tokenizer: a SentencePiece-style BPE
 * vocabulary with merge scores.
 *
 * File format (little-endian), read with bounds checks on every field:
 *   int32 max_token_length
 *   vocab_size times: float32 score, int32 len, len bytes (the piece, no NUL)
 * The file does not store vocab_size: it comes from the model, and a file
 * with fewer or more entries than the model's vocabulary is rejected.
 *
 * Token ids: 0 <unk>, 1 <s> (BOS), 2 </s> (EOS). Pieces of the form "<0xNN>"
 * are byte-fallback tokens.
 */
#ifndef SLM_MODEL_TOKENIZER_H
#define SLM_MODEL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define SLM_TOKEN_UNK 0
#define SLM_TOKEN_BOS 1
#define SLM_TOKEN_EOS 2

/* Hard limits, checked before any allocation they size. */
#define SLM_TOKENIZER_MAX_VOCAB (1 << 20)
#define SLM_TOKENIZER_MAX_PIECE 1024
#define SLM_TOKENIZER_MAX_FILE  ((size_t)256 << 20)
#define SLM_TOKENIZER_MAX_TEXT  ((size_t)1 << 24) /* bytes of text to encode */

typedef struct slm_tokenizer slm_tokenizer_t;

/* Parses a tokenizer from a buffer (the whole file). `what` names the input in
 * error messages. The buffer is borrowed only for the duration of the call.
 * On success the caller owns *out and frees it with slm_tokenizer_destroy. */
slm_status slm_tokenizer_parse(const uint8_t *data, size_t len,
                               int32_t vocab_size, const char *what,
                               slm_tokenizer_t **out);

/* Reads and parses `path`; as slm_tokenizer_parse. */
slm_status slm_tokenizer_load(const char *path, int32_t vocab_size,
                              slm_tokenizer_t **out);

/* Accepts NULL; sets *t to NULL. */
void slm_tokenizer_destroy(slm_tokenizer_t **t);

int32_t slm_tokenizer_vocab_size(const slm_tokenizer_t *t);

/* The longest piece in bytes (the file's max_token_length): a text of B
 * bytes encodes to at least B / this many tokens, which lets a server refuse
 * a prompt that cannot fit before spending time encoding it. */
int32_t slm_tokenizer_max_token_bytes(const slm_tokenizer_t *t);

/* Encodes text(len bytes) the way llama2.c's run.c does: optional BOS, the
 * SentencePiece dummy-prefix space (only when text is non-empty), UTF-8 code
 * points looked up whole, otherwise byte-fallback tokens, then repeated merges
 * of the adjacent pair with the highest score (leftmost on ties), then
 * optional EOS. On success the caller owns *ids (free()) holding *n_ids ids. */
slm_status slm_tokenizer_encode(const slm_tokenizer_t *t, const char *text,
                                size_t len, bool bos, bool eos, int32_t **ids,
                                size_t *n_ids);

/* The bytes that `token` stands for when it follows `prev`: the leading space
 * is dropped after BOS, and "<0xNN>" pieces become the single byte NN.
 * Returns a borrowed pointer valid while t lives, with its length in *len;
 * an out-of-range token yields an empty piece. */
const char *slm_tokenizer_decode(const slm_tokenizer_t *t, int32_t prev,
                                 int32_t token, size_t *len);

#endif
