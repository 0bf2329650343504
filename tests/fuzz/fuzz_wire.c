/*
 * tests/fuzz/fuzz_wire.c - libFuzzer target for the control message parser
 * (proto/wire.c).
 *
 * Input: one packed ControlMessage, unpacked against the fixed limits in
 * LIM (small, so that the fuzzer reaches each of them; the seeds use the
 * same). A message that is accepted must keep the promises of wire.h,
 * checked here independently of wire.c (valid()); it is then packed again
 * and unpacked again: that must succeed, and packing the second message
 * must give the same bytes as packing the first (the first pack may differ
 * from the input: protobuf-c drops what it parsed twice and reorders
 * fields).
 *
 * Build (bash; <build> is a CMake build dir, which holds the generated code):
 *   clang -g -fsanitize=fuzzer,address,undefined -I. -I<build> \
 *     tests/fuzz/fuzz_wire.c proto/wire.c proto/pbuf.c
 * <build>/proto/control.pb-c.c \ common/status.c -lprotobuf-c -lm Seeds:
 * tests/fuzz/corpus/wire/.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"

/* A whole context is 256 / 16 = 16 blocks, half the pool of 32, so a step
 * of distinct blocks can reach both the per-sequence cap and the pool's
 * (with blocks of 4, a context of 64 blocks outgrows the pool and the cap
 * is reached only by repeating ids: 60 s of fuzzing never got there). */
static const slm_wire_limits LIM = {
    .n_shards = 4,
    .vocab_size = 512,
    .seq_len = 256,
    .max_seqs = 4,
    .max_tokens = 16,
    .n_blocks = 32,
    .block_size = 16,
};

static bool valid_step(const Shardlm__Control__Step *s,
                       const slm_wire_limits *lim)
{
    if (s->seq < 1 || s->n_seqs > lim->max_seqs ||
        s->n_free_blocks > lim->n_blocks)
        return false;
    for (size_t i = 0; i < s->n_free_blocks; i++)
        if (s->free_blocks[i] >= lim->n_blocks)
            return false;
    const size_t ctx_blocks =
        ((size_t)lim->seq_len + lim->block_size - 1) / lim->block_size;
    size_t tokens = 0;
    for (size_t i = 0; i < s->n_seqs; i++) {
        const Shardlm__Control__StepSequence *q = s->seqs[i];
        if (q->n_tokens < 1 || q->pos < 0 || q->pos >= lim->seq_len ||
            (int64_t)q->pos + (int64_t)q->n_tokens > lim->seq_len)
            return false;
        tokens += q->n_tokens; /* each at most seq_len, just checked */
        for (size_t j = 0; j < q->n_tokens; j++)
            if (q->tokens[j] < 0 || (uint32_t)q->tokens[j] >= lim->vocab_size)
                return false;
        if (q->n_blocks > ctx_blocks || (q->want_argmax && !q->want_logits))
            return false;
        for (size_t j = 0; j < q->n_blocks; j++)
            if (q->blocks[j] >= lim->n_blocks)
                return false;
    }
    return tokens <= lim->max_tokens;
}

/* What an OK from unpack promises (wire.h), checked without wire.c. */
static bool valid(const slm_control_msg *m, const slm_wire_limits *lim)
{
    switch (m->body_case) {
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HELLO: {
        const Shardlm__Control__Hello *h = m->hello;
        return h->shard < lim->n_shards && h->stage <= h->shard &&
               h->tp_rank <= h->shard && h->layer_count > 0 &&
               (uint64_t)h->layer_begin + h->layer_count <= 1024 &&
               h->head_count > 0 &&
               (uint64_t)h->head_begin + h->head_count <= 1024 &&
               (uint64_t)h->vocab_begin + h->vocab_count <= lim->vocab_size;
    }
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP:
        return valid_step(m->step, lim);
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT: {
        const Shardlm__Control__StepResult *r = m->result;
        if (r->shard >= lim->n_shards || r->n_logits % lim->vocab_size != 0 ||
            r->n_logits / lim->vocab_size > lim->max_seqs ||
            strlen(r->error) > 1024)
            return false;
        for (size_t i = 0; i < r->n_logits; i++)
            if (!isfinite(r->logits[i]))
                return false;
        if (r->n_argmax > lim->max_seqs)
            return false;
        for (size_t i = 0; i < r->n_argmax; i++)
            if (r->argmax[i] < 0 || (uint32_t)r->argmax[i] >= lim->vocab_size)
                return false;
        return true;
    }
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HEARTBEAT:
        return m->heartbeat->shard < lim->n_shards;
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_SHUTDOWN:
        return strlen(m->shutdown->reason) <= 1024;
    default:
        return false;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    slm_control_msg *m = NULL;
    slm_status rc = slm_wire_unpack_control(data, size, &LIM, &m);
    if (rc != SLM_OK) {
        if (m != NULL || slm_error_message()[0] == '\0')
            abort(); /* a failure must leave no message and say why */
        return 0;
    }
    if (m == NULL || !valid(m, &LIM))
        abort();

    uint8_t *a = NULL, *b = NULL;
    size_t a_len = 0, b_len = 0;
    slm_control_msg *m2 = NULL;
    /* An accepted message is no larger than its input, so packs fit. */
    if (slm_wire_pack_control(m, &a, &a_len) != SLM_OK)
        abort();
    if (slm_wire_unpack_control(a, a_len, &LIM, &m2) != SLM_OK)
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
