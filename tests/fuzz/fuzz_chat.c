/*
 * tests/fuzz/fuzz_chat.c - libFuzzer target for model/chat.c: a
 * tokenizer_config.json through slm_chat_create_from_config, then a
 * conversation through slm_chat_render.
 *
 * Input: one flags byte (low nibble: a built-in to name as --chat-template
 * would, 0xf for none; bit 4: add_generation_prompt), the config up to the
 * first NUL byte, then messages, each a role byte (mod 4: system, user,
 * assistant, or an invalid role) and a length byte followed by that many
 * content bytes (cut short at the end of the input). A config the parser
 * refuses leaves the built-in of the low nibble (if any) to render with, so
 * the renderer is fuzzed even when the config is noise.
 *
 * A refusal must say why and leave no output. An accepted rendering must be
 * NUL-free well-formed UTF-8 of the length reported, no longer than the
 * contents plus a bounded scaffolding, and the same when rendered again.
 *
 * Build (bash): clang -g -fsanitize=fuzzer,address,undefined -I. \
 *   tests/fuzz/fuzz_chat.c model/chat.c common/{status,file,utf8}.c \
 *   -ljansson -lsodium
 * Seeds: tests/fuzz/corpus/chat/ (each family's known template with a
 * conversation, an injected template, overrides, bad roles and UTF-8).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"
#include "model/chat.h"

#define MAX_MESSAGES 64

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_chat: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const unsigned nibble = data[0] & 0x0f;
    const bool agp = (data[0] & 0x10) != 0;
    const char *override =
        nibble < SLM_CHAT_FORMAT_COUNT ? slm_chat_format_name(nibble) : NULL;
    const uint8_t *p = data + 1, *end = data + size;
    const uint8_t *nul = memchr(p, 0, (size_t)(end - p));
    const size_t cfg_len = nul ? (size_t)(nul - p) : (size_t)(end - p);

    slm_chat_t *c = (slm_chat_t *)1;
    slm_status rc = slm_chat_create_from_config((const char *)p, cfg_len, NULL,
                                                0, "fuzz", override, &c);
    if (rc != SLM_OK) {
        check(slm_error_message()[0] != '\0', "a refusal without a message");
        check(c == NULL, "a refusal left an object");
        if (!override)
            return 0;
        check(slm_chat_create((slm_chat_format)nibble, &c) == SLM_OK,
              "a built-in cannot be made");
    } else if (override) {
        check(slm_chat_get_format(c) == (slm_chat_format)nibble,
              "the override was not taken");
    }
    size_t n_stops = 0;
    const char *const *stops = slm_chat_stop_strings(c, &n_stops);
    check(n_stops >= 1 && n_stops <= 4, "no stop strings");
    for (size_t i = 0; i < n_stops; i++)
        check(stops[i][0] != '\0', "an empty stop string");

    slm_chat_message m[MAX_MESSAGES];
    size_t n = 0, total = 0;
    bool bad_role = false;
    p = nul ? nul + 1 : end;
    while (p + 2 <= end && n < MAX_MESSAGES) {
        const unsigned role = p[0] & 3;
        size_t len = p[1];
        p += 2;
        if (len > (size_t)(end - p))
            len = (size_t)(end - p);
        bad_role = bad_role || role == 3;
        m[n].role = role == 3 ? (slm_chat_role)7 : (slm_chat_role)role;
        m[n].content = len ? (const char *)p : NULL;
        m[n].len = len;
        total += len;
        p += len;
        n++;
    }
    char *text = (char *)1;
    size_t len = 99;
    rc = slm_chat_render(c, m, n, agp, &text, &len);
    if (rc != SLM_OK) {
        check(slm_error_message()[0] != '\0', "a refusal without a message");
        check(text == NULL && len == 0, "a refusal left output");
    } else {
        check(!bad_role, "an invalid role was rendered");
        check(text[len] == '\0' && strlen(text) == len, "NUL in the output");
        check(slm_utf8_bad_offset(text, len) == len, "output is not UTF-8");
        /* scaffolding: at most a few hundred bytes a message, plus bos/eos
         * of at most 64 bytes and the Qwen2.5 default system message */
        check(len <= total + n * 512 + 1024, "output too long");
        char *again = NULL;
        size_t again_len = 0;
        check(slm_chat_render(c, m, n, agp, &again, &again_len) == SLM_OK,
              "a second rendering failed");
        check(again_len == len && memcmp(again, text, len) == 0,
              "a second rendering differs");
        free(again);
    }
    free(text);
    slm_chat_destroy(&c);
    check(c == NULL, "destroy did not clear the pointer");
    return 0;
}
