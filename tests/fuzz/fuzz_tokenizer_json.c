/*
 * tests/fuzz/fuzz_tokenizer_json.c - libFuzzer target for the Hugging Face
 * tokenizer.json parser (model/tokenizer_hf.c).
 *
 * Input: 4 bytes that choose the model's vocab_size (little-endian uint32
 * modulo 1100, around the seeds' sizes, so that ids both below and above it
 * occur), 2 bytes giving the length of the text to encode, that text, then
 * the tokenizer.json. A file that parses is exercised: the text is encoded
 * with every combination of add_special / add_eos / parse_special (an error
 * is allowed only for text that is not UTF-8 and add_eos with no EOS), every
 * id returned checked against vocab_size and decoded, and every id of the
 * vocabulary decoded after BOS, at the start and after itself.
 *
 * Build (bash): clang -fsanitize=fuzzer,address,undefined -I. \
 *   tests/fuzz/fuzz_tokenizer_json.c model/tokenizer{,_hf}.c \
 *   common/{status,reader,file,utf8}.c -ljansson -lpcre2-8 -lutf8proc
 * Seeds: tests/fuzz/corpus/tokenizer_json/ (each seed: the 6-byte header,
 * a short text, then a small file of either family or a broken one).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"
#include "model/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void touch(const char *p, size_t len)
{
    /* Read every byte so that ASan checks the whole returned range. */
    volatile unsigned char sink = 0;
    for (size_t i = 0; i < len; i++)
        sink ^= (unsigned char)p[i];
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 6)
        return 0;
    uint32_t v;
    memcpy(&v, data, 4);
    const int32_t vocab_size = (int32_t)(v % 1100);
    size_t text_len = (size_t)data[4] | (size_t)data[5] << 8;
    if (text_len > size - 6)
        text_len = size - 6;
    const char *text = (const char *)data + 6;
    const uint8_t *file = data + 6 + text_len;
    const size_t file_len = size - 6 - text_len;

    slm_tokenizer_t *t = NULL;
    slm_status rc =
        slm_tokenizer_parse_hf(file, file_len, vocab_size, "fuzz", &t);
    if (rc != SLM_OK) {
        if (t != NULL || slm_error_message()[0] == '\0')
            abort(); /* a failure must leave no object and say why */
        return 0;
    }
    if (slm_tokenizer_vocab_size(t) != vocab_size)
        abort();
    const bool utf8 = slm_utf8_bad_offset(text, text_len) == text_len;
    for (int mode = 0; mode < 8; mode++) {
        const slm_encode_opts o = {.add_special = mode & 1,
                                   .add_eos = (mode & 2) != 0,
                                   .parse_special = (mode & 4) != 0};
        int32_t *ids = NULL;
        size_t n = 0;
        rc = slm_tokenizer_encode_ex(t, text, text_len, &o, &ids, &n);
        if (rc != SLM_OK) {
            /* not UTF-8; no EOS; a regex limit or memory: said why */
            if (ids || slm_error_message()[0] == '\0' ||
                (utf8 && !(o.add_eos && slm_tokenizer_eos_id(t) < 0) &&
                 rc != SLM_ERR_RANGE && rc != SLM_ERR_NOMEM))
                abort();
            continue;
        }
        int32_t prev = -1;
        for (size_t i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= vocab_size)
                abort();
            size_t len = 0;
            touch(slm_tokenizer_decode(t, prev, ids[i], &len), len);
            prev = ids[i];
        }
        free(ids);
    }
    const int32_t bos = slm_tokenizer_bos_id(t);
    for (int32_t id = -1; id <= vocab_size; id++) {
        size_t len = 0;
        touch(slm_tokenizer_decode(t, bos, id, &len), len);
        touch(slm_tokenizer_decode(t, -1, id, &len), len);
        touch(slm_tokenizer_decode(t, id, id, &len), len);
        (void)slm_tokenizer_is_special(t, id);
    }
    int32_t id;
    (void)slm_tokenizer_token_id(t, "<s>", &id);
    slm_tokenizer_destroy(&t);
    return 0;
}
