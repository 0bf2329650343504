/*
 * tests/fuzz/fuzz_wire.c - libFuzzer target for the control message parser
 * (proto/wire.c).
 *
 * Input: one packed ControlMessage, unpacked against fixed limits (4 shards,
 * a 512-token vocabulary, 256 positions; the seeds use the same). A message
 * that is accepted is packed again and unpacked again: that must succeed, and
 * packing the second message must give the same bytes as packing the first
 * (the first pack may differ from the input: protobuf-c drops what it parsed
 * twice and reorders fields).
 *
 * Build (bash; <build> is a CMake build dir, which holds the generated code):
 *   clang -g -fsanitize=fuzzer,address,undefined -I. -I<build> \
 *     tests/fuzz/fuzz_wire.c proto/wire.c proto/pbuf.c <build>/proto/control.pb-c.c \
 *     common/status.c -lprotobuf-c
 * Seeds: tests/fuzz/corpus/wire/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const slm_wire_limits lim = {4, 512, 256};
    slm_control_msg *m = NULL;
    slm_status rc = slm_wire_unpack_control(data, size, &lim, &m);
    if (rc != SLM_OK) {
        if (m != NULL || slm_error_message()[0] == '\0')
            abort(); /* a failure must leave no message and say why */
        return 0;
    }
    if (m == NULL)
        abort();

    uint8_t *a = NULL, *b = NULL;
    size_t a_len = 0, b_len = 0;
    slm_control_msg *m2 = NULL;
    /* An accepted message is no larger than its input, so packs fit. */
    if (slm_wire_pack_control(m, &a, &a_len) != SLM_OK)
        abort();
    if (slm_wire_unpack_control(a, a_len, &lim, &m2) != SLM_OK)
        abort();
    if (m2->body_case != m->body_case)
        abort();
    if (slm_wire_pack_control(m2, &b, &b_len) != SLM_OK)
        abort();
    if (a_len != b_len || memcmp(a, b, a_len) != 0)
        abort();
    free(a);
    free(b);
    slm_wire_free_control(&m2);
    slm_wire_free_control(&m);
    return 0;
}
