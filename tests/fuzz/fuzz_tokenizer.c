/*
 * tests/fuzz/fuzz_tokenizer.c - libFuzzer target for the tokenizer parser.
 *
 * Input: 4 bytes that choose the vocab_size (little-endian uint32 modulo
 * 70000, so that sizes both below and above the 3-token minimum and the
 * entry count of the file occur), then the tokenizer file. A file that parses
 * is exercised: text taken from the input's tail is encoded with and without
 * BOS/EOS, and every id returned, and every id of the vocabulary, is decoded.
 *
 * Build (bash): clang -fsanitize=fuzzer,address,undefined -I. \
 *   tests/fuzz/fuzz_tokenizer.c model/tokenizer{,_hf}.c \
 *   common/{status,reader,file,utf8}.c -ljansson -lpcre2-8 -lutf8proc
 * (model/tokenizer.c also opens tokenizer.json files, hence the rest).
 * Seeds: tests/fuzz/corpus/tokenizer/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
    if (size < 4)
        return 0;
    uint32_t v;
    memcpy(&v, data, 4);
    const int32_t vocab_size = (int32_t)(v % 70000);
    const uint8_t *file = data + 4;
    const size_t file_len = size - 4;

    slm_tokenizer_t *t = NULL;
    slm_status rc = slm_tokenizer_parse(file, file_len, vocab_size, "fuzz", &t);
    if (rc != SLM_OK) {
        if (t != NULL || slm_error_message()[0] == '\0')
            abort(); /* a failure must leave no object and say why */
        return 0;
    }
    if (slm_tokenizer_vocab_size(t) != vocab_size)
        abort();

    /* Text: the last (up to) 256 bytes of the input, any bytes at all. */
    const size_t text_len = size < 256 ? size : 256;
    const char *text = (const char *)data + size - text_len;
    for (int mode = 0; mode < 4; mode++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (slm_tokenizer_encode(t, text, text_len, mode & 1, mode & 2, &ids,
                                 &n) != SLM_OK)
            abort(); /* encode of a valid tokenizer cannot fail but for OOM */
        if (n > text_len + 3)
            abort();
        for (size_t i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= vocab_size)
                abort();
            size_t len = 0;
            const char *p = slm_tokenizer_decode(
                t, i ? ids[i - 1] : SLM_TOKEN_BOS, ids[i], &len);
            touch(p, len);
        }
        free(ids);
    }
    for (int32_t id = -1; id <= vocab_size; id++) {
        size_t len = 0;
        const char *p = slm_tokenizer_decode(t, SLM_TOKEN_BOS, id, &len);
        touch(p, len);
        p = slm_tokenizer_decode(t, id, id, &len);
        touch(p, len);
    }
    slm_tokenizer_destroy(&t);
    return 0;
}
