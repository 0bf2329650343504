/*
 * tests/fuzz/fuzz_client_wire.c - libFuzzer target for the client API parser
 * (proto/client_wire.c).
 *
 * Input: one selector byte, then one packed message. An even selector reads
 * the rest as a ClientMessage (slm_client_unpack_request, what the server
 * runs on client bytes), an odd one as a ServerMessage
 * (slm_client_unpack_response, what the client runs on server bytes), both
 * against fixed limits (a 512-token vocabulary, max_tokens 256; the seeds use
 * the same). A message that is accepted is packed again and unpacked again:
 * that must succeed, and packing the second message must give the same bytes
 * as packing the first (the first pack may differ from the input: protobuf-c
 * drops what it parsed twice and reorders fields, and unpack_request replaces
 * an unset top_p or repetition_penalty by 1.0).
 *
 * Build (bash; <build> is a CMake build dir, which holds the generated code):
 *   clang -g -fsanitize=fuzzer,address,undefined -I. -I<build> \
 *     tests/fuzz/fuzz_client_wire.c proto/client_wire.c proto/pbuf.c \
 *     <build>/proto/client.pb-c.c common/status.c common/utf8.c -lprotobuf-c -lm
 * Seeds: tests/fuzz/corpus/client/ (req_*: selector 0, resp_*: selector 1).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/client_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_request(const uint8_t *data, size_t size,
                         const slm_client_limits *lim)
{
    slm_client_msg *m = NULL;
    slm_status rc = slm_client_unpack_request(data, size, lim, &m);
    if (rc != SLM_OK) {
        if (m != NULL || slm_error_message()[0] == '\0')
            abort(); /* a failure must leave no message and say why */
        return;
    }
    if (m == NULL)
        abort();
    /* What the server relies on in an accepted conversation. */
    if (m->body_case == SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_GENERATE &&
        m->generate->input_case ==
            SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_MESSAGES) {
        const Shardlm__Client__ChatMessages *c = m->generate->messages;
        size_t total = 0;
        if (c->n_messages < 1 || c->n_messages > lim->max_messages)
            abort();
        for (size_t i = 0; i < c->n_messages; i++) {
            const char *r = c->messages[i]->role;
            if (strcmp(r, "system") && strcmp(r, "user") &&
                strcmp(r, "assistant"))
                abort();
            total += strlen(c->messages[i]->content);
        }
        if (total > lim->max_prompt_bytes)
            abort();
    }

    uint8_t *a = NULL, *b = NULL;
    size_t a_len = 0, b_len = 0;
    slm_client_msg *m2 = NULL;
    /* An accepted message packs to at most its input plus the 10 bytes of
     * the top_p and repetition_penalty defaults: far below the 1 MiB limit
     * at the lengths fuzzed, so packs fit. */
    if (slm_client_pack_client(m, &a, &a_len) != SLM_OK)
        abort();
    if (slm_client_unpack_request(a, a_len, lim, &m2) != SLM_OK)
        abort();
    if (m2->body_case != m->body_case)
        abort();
    if (slm_client_pack_client(m2, &b, &b_len) != SLM_OK)
        abort();
    if (a_len != b_len || memcmp(a, b, a_len) != 0)
        abort();
    free(a);
    free(b);
    slm_client_free_request(&m2);
    slm_client_free_request(&m);
}

static void fuzz_response(const uint8_t *data, size_t size,
                          const slm_client_limits *lim)
{
    slm_server_msg *m = NULL;
    slm_status rc = slm_client_unpack_response(data, size, lim, &m);
    if (rc != SLM_OK) {
        if (m != NULL || slm_error_message()[0] == '\0')
            abort();
        return;
    }
    if (m == NULL)
        abort();

    uint8_t *a = NULL, *b = NULL;
    size_t a_len = 0, b_len = 0;
    slm_server_msg *m2 = NULL;
    if (slm_client_pack_server(m, &a, &a_len) != SLM_OK)
        abort();
    if (slm_client_unpack_response(a, a_len, lim, &m2) != SLM_OK)
        abort();
    if (m2->body_case != m->body_case)
        abort();
    if (slm_client_pack_server(m2, &b, &b_len) != SLM_OK)
        abort();
    if (a_len != b_len || memcmp(a, b, a_len) != 0)
        abort();
    free(a);
    free(b);
    slm_client_free_response(&m2);
    slm_client_free_response(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const slm_client_limits lim = slm_client_default_limits(512, 256);
    if (data[0] & 1)
        fuzz_response(data + 1, size - 1, &lim);
    else
        fuzz_request(data + 1, size - 1, &lim);
    return 0;
}
