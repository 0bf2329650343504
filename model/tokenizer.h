/*
 * model/tokenizer.h - text to token ids and back, behind one opaque handle,
 * for two formats:
 *
 * 1. The llama2.c tokenizer: a SentencePiece-style BPE vocabulary with merge
 *    scores. File format (little-endian), read with bounds checks on every
 *    field:
 *      int32 max_token_length
 *      vocab_size times: float32 score, int32 len, len bytes (the piece, no
 * NUL) The file does not store vocab_size: it comes from the model, and a file
 *    with fewer or more entries than the model's vocabulary is rejected.
 *    Token ids: 0 <unk>, 1 <s> (BOS), 2 </s> (EOS). Pieces of the form
 *    "<0xNN>" are byte-fallback tokens.
 *
 * 2. Hugging Face tokenizer.json (what the `tokenizers` library reads), model
 *    type BPE, in the two families published models use: SentencePiece-style
 *    (Llama 2, TinyLlama, Mistral: "\u2581" for spaces, byte fallback) and
 *    byte-level (GPT-2, Llama 3, Qwen2/3, SmolLM). Only the normalizers,
 *    pre-tokenizers, post-processors and decoders those files use are
 *    accepted, and a split regex only if it is one of a built-in table of
 *    known patterns (model/tokenizer_hf.c lists them): a file naming anything
 *    else is refused with the field and value, never half-understood. The
 *    tokenizer's vocabulary may be smaller than the model's (padded
 *    embeddings) but never larger. tokenizer_config.json beside the file, if
 *    present, gives eos_token. Its add_bos_token/add_eos_token are ignored,
 *    as transformers 5 ignores them when a tokenizer.json exists: the file's
 *    post-processor alone decides what add_special adds.
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
/* tokenizer.json: real ones are 2-20 MB (jansson needs several times the file
 * size in memory); tokenizer_config.json, with its chat template. */
#define SLM_TOKENIZER_HF_MAX_FILE   ((size_t)64 << 20)
#define SLM_TOKENIZER_HF_MAX_CONFIG ((size_t)16 << 20)
#define SLM_TOKENIZER_HF_MAX_MERGES (1 << 22)

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

/* Parses a Hugging Face tokenizer.json from a buffer (the whole file), with
 * no tokenizer_config.json. vocab_size is the model's: every id of the file
 * must be below it. `what` names the input in error messages; the buffer is
 * borrowed for the duration of the call. On success the caller owns *out and
 * frees it with slm_tokenizer_destroy. */
slm_status slm_tokenizer_parse_hf(const uint8_t *data, size_t len,
                                  int32_t vocab_size, const char *what,
                                  slm_tokenizer_t **out);

/* Reads and parses `path` (a tokenizer.json), and tokenizer_config.json in the
 * same directory if there is one; as slm_tokenizer_parse_hf. */
slm_status slm_tokenizer_load_hf(const char *path, int32_t vocab_size,
                                 slm_tokenizer_t **out);

/* Opens the tokenizer that goes with a model. tokenizer_path, when given,
 * decides the format by its name: "*.json" is a Hugging Face tokenizer.json,
 * anything else a llama2.c tokenizer file. Without one, a model_path that is a
 * directory or a ".safetensors" file (a Hugging Face model) means the
 * tokenizer.json in that directory; a llama2.c model has no default and is
 * refused. As slm_tokenizer_load otherwise. */
slm_status slm_tokenizer_open(const char *model_path,
                              const char *tokenizer_path, int32_t vocab_size,
                              slm_tokenizer_t **out);

/* Accepts NULL; sets *t to NULL. */
void slm_tokenizer_destroy(slm_tokenizer_t **t);

/* The model's vocab_size given at load: ids are in [0, this). A tokenizer.json
 * may name fewer (padded embeddings); the others decode to nothing. */
int32_t slm_tokenizer_vocab_size(const slm_tokenizer_t *t);

/* The longest piece in bytes (the file's max_token_length): a text of B
 * bytes encodes to at least B / this many tokens, which lets a server refuse
 * a prompt that cannot fit before spending time encoding it. For a
 * tokenizer.json, the most text bytes one token can stand for, allowing for
 * what the normalizer shrinks; SLM_TOKENIZER_MAX_TEXT where nothing bounds it
 * (a fused <unk> without full byte fallback, lstrip/rstrip tokens). */
int32_t slm_tokenizer_max_token_bytes(const slm_tokenizer_t *t);

typedef struct {
    /* What the format adds around a text: the post-processor of a
     * tokenizer.json (Llama 2's <s>, Llama 3's <|begin_of_text|>, nothing for
     * Qwen2), BOS for a llama2.c tokenizer. */
    bool add_special;
    /* Append the EOS token (slm_tokenizer_eos_id) unless add_special already
     * ended the ids with it; fails where the tokenizer knows no EOS. */
    bool add_eos;
    /* Match the special added tokens of a tokenizer.json ("<|eot_id|>") in
     * the text. Without it they are ordinary text: a user's prompt cannot
     * forge them. Non-special added tokens are always matched, as `tokenizers`
     * does. The llama2.c format has no added tokens: ignored. */
    bool parse_special;
} slm_encode_opts;

/* Encodes text(len bytes). llama2.c: as slm_tokenizer_encode. tokenizer.json:
 * as `tokenizers` encodes one sequence - added tokens split out, normalizer,
 * pre-tokenizer, BPE by merge rank, post-processor - with the text required to
 * be valid UTF-8 (SLM_ERR_INVALID otherwise; `tokenizers` takes only strings).
 * On success the caller owns *ids (free()) holding *n_ids ids. */
slm_status slm_tokenizer_encode_ex(const slm_tokenizer_t *t, const char *text,
                                   size_t len, const slm_encode_opts *opts,
                                   int32_t **ids, size_t *n_ids);

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
 * an out-of-range token yields an empty piece.
 * tokenizer.json: the file's decoder applied to the one token (byte-level:
 * the inverse byte map; SentencePiece: "\u2581" to space, byte fallback), and
 * what its decoder does to the first token of a text (Strip, Metaspace) done
 * when prev is negative or the BOS. Special tokens decode to their content. A
 * piece may end inside a UTF-8 sequence that the next one completes. */
const char *slm_tokenizer_decode(const slm_tokenizer_t *t, int32_t prev,
                                 int32_t token, size_t *len);

/* Whether t was read from a tokenizer.json (else a llama2.c file). */
bool slm_tokenizer_is_hf(const slm_tokenizer_t *t);

/* The BOS id: 1 for llama2.c; for tokenizer.json the special token that
 * add_special puts first, or -1 if it puts none. */
int32_t slm_tokenizer_bos_id(const slm_tokenizer_t *t);

/* The EOS id: 2 for llama2.c; for tokenizer.json the eos_token of
 * tokenizer_config.json, else the special token that add_special puts last,
 * else -1. */
int32_t slm_tokenizer_eos_id(const slm_tokenizer_t *t);

/* The id of the token whose piece (tokenizer.json: added token content, else
 * vocabulary piece) is exactly the NUL-terminated `piece`, for special tokens
 * such as "<|eot_id|>" or "<|im_end|>". SLM_ERR_UNAVAILABLE if there is none.
 */
slm_status slm_tokenizer_token_id(const slm_tokenizer_t *t, const char *piece,
                                  int32_t *id);

/* The split regex of a known family as a tokenizer.json spells it (after
 * JSON unescaping), by name: "GPT-2", "Llama 3", "Qwen2" or "Qwen3.5"; NULL
 * for any other name. These are the only Split patterns a tokenizer.json may
 * use. Static storage. */
const char *slm_tokenizer_split_pattern(const char *name);

/* True for special tokens: tokenizer.json's added tokens marked special;
 * <unk>, <s> and </s> (ids 0-2) for llama2.c. */
bool slm_tokenizer_is_special(const slm_tokenizer_t *t, int32_t id);

#endif
