/*
 * proto/wire.c - packing, bounded unpacking and validation of the control
 * messages; the contract is in wire.h, the format in control.proto.
 *
 * One unpack may allocate at most UNPACK_BUDGET(len) bytes (proto/pbuf.h).
 */
#include "proto/wire.h"
#include "proto/pbuf.h"
#include "common/checked.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Strings a peer may send (StepResult.error, Shutdown.reason). */
#define MAX_STRING_BYTES 1024

/* Bounds on a Hello's layer and head ranges. They mirror SLM_MAX_LAYERS and
 * SLM_MAX_HEADS of model/checkpoint.h, which proto/ may not include (it
 * depends on common/ only); the receiver checks the ranges against its own
 * model, these only keep the numbers sane. */
#define MAX_LAYERS 1024u
#define MAX_HEADS  1024u

/* Total bytes one unpack of len input bytes may allocate: room for the
 * logits (one float per 4 input bytes), a step's sequences (a struct of
 * about 100 bytes for each 8 or more input bytes) and protobuf-c's
 * scratch. */
#define UNPACK_BUDGET(len) ((len)*16 + ((size_t)256 << 10))

slm_status slm_wire_pack_control(const slm_control_msg *m, uint8_t **buf,
                                 size_t *len)
{
    if (!m || !buf || !len)
        return slm_fail(SLM_ERR_INVALID, "control message: NULL argument");
    *buf = NULL;
    *len = 0;
    const size_t size = protobuf_c_message_get_packed_size(&m->base);
    if (size > SLM_WIRE_MAX_CONTROL_BYTES)
        return slm_fail(SLM_ERR_RANGE,
                        "control message: packed size %zu exceeds the limit "
                        "of %zu bytes",
                        size, SLM_WIRE_MAX_CONTROL_BYTES);
    uint8_t *p = malloc(size ? size : 1);
    if (!p)
        return slm_fail(SLM_ERR_NOMEM,
                        "control message: cannot allocate %zu bytes", size);
    if (protobuf_c_message_pack(&m->base, p) != size) {
        free(p);
        return slm_fail(SLM_ERR_INTERNAL,
                        "control message: packed size changed while packing");
    }
    *buf = p;
    *len = size;
    return SLM_OK;
}

static slm_status check_shard(const char *msg, uint32_t shard,
                              const slm_wire_limits *lim)
{
    if (shard >= lim->n_shards)
        return slm_fail(SLM_ERR_FORMAT,
                        "control message: %s.shard = %u is not below "
                        "n_shards = %u",
                        msg, shard, lim->n_shards);
    return SLM_OK;
}

static slm_status check_string(const char *field, const char *s)
{
    /* protobuf-c NUL-terminates every string it unpacks. */
    const size_t n = strlen(s);
    if (n > MAX_STRING_BYTES)
        return slm_fail(SLM_ERR_FORMAT,
                        "control message: %s is %zu bytes, more than %d", field,
                        n, MAX_STRING_BYTES);
    return SLM_OK;
}

/* [begin, begin + count) within [0, limit), in 64-bit so nothing wraps. */
static slm_status check_range(const char *field, uint32_t begin, uint32_t count,
                              bool nonempty, uint32_t limit)
{
    if ((nonempty && count == 0) || (uint64_t)begin + count > limit)
        return slm_fail(SLM_ERR_FORMAT,
                        "control message: Hello.%s_begin = %u, %s_count = %u "
                        "is not a %srange within [0, %u)",
                        field, begin, field, count,
                        nonempty ? "non-empty " : "", limit);
    return SLM_OK;
}

static slm_status check_hello(const Shardlm__Control__Hello *h,
                              const slm_wire_limits *lim)
{
    SLM_CHECK(check_shard("Hello", h->shard, lim));
    /* shard = stage * tp + tp_rank, so neither exceeds shard. */
    if (h->stage > h->shard || h->tp_rank > h->shard)
        return slm_fail(SLM_ERR_FORMAT,
                        "control message: Hello.stage = %u, tp_rank = %u "
                        "cannot both hold for shard = %u",
                        h->stage, h->tp_rank, h->shard);
    SLM_CHECK(
        check_range("layer", h->layer_begin, h->layer_count, true, MAX_LAYERS));
    SLM_CHECK(
        check_range("head", h->head_begin, h->head_count, true, MAX_HEADS));
    SLM_CHECK(check_range("vocab", h->vocab_begin, h->vocab_count, false,
                          lim->vocab_size));
    return SLM_OK;
}

static slm_status check_step(const Shardlm__Control__Step *s,
                             const slm_wire_limits *lim)
{
    if (s->seq < 1)
        return slm_fail(SLM_ERR_FORMAT,
                        "control message: Step.seq = 0, must be at least 1");
    if (s->n_seqs > lim->max_seqs)
        return slm_fail(SLM_ERR_FORMAT,
                        "control message: Step has %zu sequences, more than "
                        "%u",
                        s->n_seqs, lim->max_seqs);
    if (s->n_free_blocks > lim->n_blocks)
        return slm_fail(SLM_ERR_FORMAT,
                        "control message: Step frees %zu blocks of a pool of "
                        "%u",
                        s->n_free_blocks, lim->n_blocks);
    for (size_t i = 0; i < s->n_free_blocks; i++)
        if (s->free_blocks[i] >= lim->n_blocks)
            return slm_fail(SLM_ERR_FORMAT,
                            "control message: Step.free_blocks[%zu] = %u is "
                            "out of range [0, %u)",
                            i, s->free_blocks[i], lim->n_blocks);
    const uint32_t bs = lim->block_size ? lim->block_size : 1;
    const size_t max_blocks = ((size_t)lim->seq_len + bs - 1) / bs;
    size_t tokens = 0;
    for (size_t i = 0; i < s->n_seqs; i++) {
        const Shardlm__Control__StepSequence *q = s->seqs[i];
        SLM_CHECK(slm_pb_check_field_zero("control message", &q->base));
        if (q->pos < 0 || q->pos >= lim->seq_len || q->n_tokens == 0 ||
            q->n_tokens > (size_t)(lim->seq_len - q->pos))
            return slm_fail(SLM_ERR_FORMAT,
                            "control message: Step.seqs[%zu] feeds %zu "
                            "tokens at position %d; the context is %d",
                            i, q->n_tokens, q->pos, lim->seq_len);
        tokens += q->n_tokens; /* each count <= seq_len: no overflow */
        if (tokens > lim->max_tokens)
            return slm_fail(SLM_ERR_FORMAT,
                            "control message: Step has more than %u tokens",
                            lim->max_tokens);
        for (size_t j = 0; j < q->n_tokens; j++)
            if (q->tokens[j] < 0 || (uint32_t)q->tokens[j] >= lim->vocab_size)
                return slm_fail(SLM_ERR_FORMAT,
                                "control message: Step.seqs[%zu].tokens[%zu] "
                                "= %d is out of range [0, %u)",
                                i, j, q->tokens[j], lim->vocab_size);
        if (q->want_argmax && !q->want_logits)
            return slm_fail(SLM_ERR_FORMAT,
                            "control message: Step.seqs[%zu] wants the "
                            "argmax of logits it does not want",
                            i);
        if (q->n_blocks > max_blocks)
            return slm_fail(SLM_ERR_FORMAT,
                            "control message: Step.seqs[%zu] has %zu blocks, "
                            "more than a whole context's %zu",
                            i, q->n_blocks, max_blocks);
        for (size_t j = 0; j < q->n_blocks; j++)
            if (q->blocks[j] >= lim->n_blocks)
                return slm_fail(SLM_ERR_FORMAT,
                                "control message: Step.seqs[%zu].blocks[%zu] "
                                "= %u is out of range [0, %u)",
                                i, j, q->blocks[j], lim->n_blocks);
    }
    return SLM_OK;
}

/* Protobuf's worst cases for what the coordinator sends: a field's tag
 * takes 1 byte (numbers below 16), a length or a uint32/non-negative int32
 * varint at most 5, a uint64 at most 10. */
#define PB_TAG   1
#define PB_LEN   5
#define PB_U32   5
#define PB_U64   10
#define PB_FIELD (PB_TAG + PB_LEN) /* a submessage's or packed array's head */

size_t slm_wire_max_step_bytes(const slm_wire_limits *lim)
{
    const size_t ctx_blocks =
        lim->block_size
            ? ((size_t)(uint32_t)lim->seq_len + lim->block_size - 1) /
                  lim->block_size
            : 0;
    /* per sequence: its head; tokens', pos's and blocks' fields; two bools */
    const size_t per_seq =
        PB_FIELD + PB_FIELD + (PB_TAG + PB_U32) + PB_FIELD + 2 * (PB_TAG + 1);
    size_t n = 0, t;
    if (!slm_size_mul(lim->max_seqs, per_seq, &n) ||
        !slm_size_mul(lim->max_tokens, PB_U32, &t) || !slm_size_add(n, t, &n) ||
        !slm_size_mul(lim->max_seqs, ctx_blocks, &t) ||
        !slm_size_mul(t, PB_U32, &t) || !slm_size_add(n, t, &n) ||
        !slm_size_mul(lim->n_blocks, PB_U32, &t) || !slm_size_add(n, t, &n) ||
        /* the message's and the Step's heads, seq, free_blocks' head; and
         * room for a Shutdown (a reason of up to 1024 bytes) */
        !slm_size_add(n, 2 * PB_FIELD + PB_TAG + PB_U64 + PB_FIELD + 1100, &n))
        return 0;
    return n;
}

static slm_status check_result(const Shardlm__Control__StepResult *r,
                               const slm_wire_limits *lim)
{
    SLM_CHECK(check_shard("StepResult", r->shard, lim));
    if (lim->vocab_size == 0
            ? r->n_logits != 0
            : r->n_logits % lim->vocab_size != 0 ||
                  r->n_logits / lim->vocab_size > lim->max_seqs)
        return slm_fail(SLM_ERR_FORMAT,
                        "control message: StepResult.logits has %zu values, "
                        "expected rows of vocab_size = %u, at most %u rows",
                        r->n_logits, lim->vocab_size, lim->max_seqs);
    for (size_t i = 0; i < r->n_logits; i++)
        if (!isfinite(r->logits[i]))
            return slm_fail(SLM_ERR_FORMAT,
                            "control message: StepResult.logits[%zu] = %g is "
                            "not finite",
                            i, (double)r->logits[i]);
    if (r->n_argmax > lim->max_seqs)
        return slm_fail(SLM_ERR_FORMAT,
                        "control message: StepResult.argmax has %zu values, "
                        "more than %u sequences",
                        r->n_argmax, lim->max_seqs);
    for (size_t i = 0; i < r->n_argmax; i++)
        if (r->argmax[i] < 0 || (uint32_t)r->argmax[i] >= lim->vocab_size)
            return slm_fail(SLM_ERR_FORMAT,
                            "control message: StepResult.argmax[%zu] = %d is "
                            "out of range [0, %u)",
                            i, r->argmax[i], lim->vocab_size);
    return check_string("StepResult.error", r->error);
}

static slm_status check_message(const slm_control_msg *m,
                                const slm_wire_limits *lim)
{
    SLM_CHECK(slm_pb_check_field_zero("control message", &m->base));
    switch (m->body_case) {
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HELLO:
        return check_hello(m->hello, lim);
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP:
        return check_step(m->step, lim);
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT:
        return check_result(m->result, lim);
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HEARTBEAT:
        return check_shard("Heartbeat", m->heartbeat->shard, lim);
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_SHUTDOWN:
        return check_string("Shutdown.reason", m->shutdown->reason);
    default:
        return slm_fail(SLM_ERR_FORMAT,
                        "control message: body = %d, expected one of "
                        "hello, step, result, heartbeat, shutdown",
                        (int)m->body_case);
    }
}

slm_status slm_wire_unpack_control(const uint8_t *buf, size_t len,
                                   const slm_wire_limits *lim,
                                   slm_control_msg **out)
{
    if (!out || !lim)
        return slm_fail(SLM_ERR_INVALID, "control message: NULL argument");
    *out = NULL;
    if (len > SLM_WIRE_MAX_CONTROL_BYTES)
        return slm_fail(SLM_ERR_RANGE,
                        "control message: %zu bytes exceeds the limit of %zu",
                        len, SLM_WIRE_MAX_CONTROL_BYTES);
    if (!buf && len > 0)
        return slm_fail(SLM_ERR_INVALID,
                        "control message: NULL buffer of %zu bytes", len);

    ProtobufCMessage *pm = NULL;
    SLM_CHECK(slm_pb_unpack(&shardlm__control__control_message__descriptor, buf,
                            len, UNPACK_BUDGET(len), "control message", &pm));
    slm_control_msg *m = (slm_control_msg *)pm;
    slm_status rc = slm_pb_check_nul(
        "control message", &shardlm__control__control_message__descriptor, buf,
        len);
    if (rc == SLM_OK)
        rc = check_message(m, lim);
    if (rc != SLM_OK) {
        slm_wire_free_control(&m);
        return rc;
    }
    *out = m;
    return SLM_OK;
}

void slm_wire_free_control(slm_control_msg **m)
{
    if (!m || !*m)
        return;
    slm_pb_free(&(*m)->base);
    *m = NULL;
}
