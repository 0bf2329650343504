/*
 * proto/client_wire.c - packing, bounded unpacking and validation of the
 * client API messages; the contract is in client_wire.h, the format in
 * client.proto.
 *
 * As in wire.c, protobuf-c allocates as it parses, up to tens of bytes per
 * input byte; one unpack may allocate at most UNPACK_BUDGET(len) bytes in
 * total, counted against a thread-local budget armed only for the duration
 * of the unpack. (wire.c keeps its allocator private, so this file has its
 * own.) Its alloc and free are otherwise plain malloc and free, so the same
 * allocator frees the message later.
 *
 * protobuf-c copies a string's bytes and NUL-terminates them without looking
 * inside, so a NUL in a string would silently cut it short. Strings in both
 * directions are therefore also checked for NUL in the raw bytes
 * (slm_pb_check_nul).
 */
#include "proto/client_wire.h"
#include "proto/pbuf.h"
#include "common/utf8.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Room for the token ids (four bytes of int32 per input byte at most), the
 * string copies and pointers, the structs and protobuf-c's scratch, plus a
 * fixed 1 MiB for messages made of many small sub-messages (a HealthResponse
 * of SLM_CLIENT_MAX_RANKS ranks needs about 300 KiB from 32 KiB of input).
 * At most 9 MiB per unpack. */
#define UNPACK_BUDGET(len) ((len)*8 + ((size_t)1 << 20))

slm_client_limits slm_client_default_limits(uint32_t vocab_size,
                                            uint32_t max_tokens)
{
    slm_client_limits l = {
        .vocab_size = vocab_size,
        .max_tokens = max_tokens,
        .max_prompt_bytes = 256u << 10,
        .max_token_ids = 65536,
        .max_stop = 16,
        .max_stop_bytes = 256,
        .max_request_id_bytes = 128,
        .max_messages = 256,
    };
    return l;
}

static slm_status pack_any(const char *what, const ProtobufCMessage *m,
                           uint8_t **buf, size_t *len)
{
    if (!m || !buf || !len)
        return slm_fail(SLM_ERR_INVALID, "%s: NULL argument", what);
    *buf = NULL;
    *len = 0;
    const size_t size = protobuf_c_message_get_packed_size(m);
    if (size > SLM_CLIENT_MAX_MESSAGE_BYTES)
        return slm_fail(SLM_ERR_RANGE,
                        "%s: packed size %zu exceeds the limit of %zu bytes",
                        what, size, SLM_CLIENT_MAX_MESSAGE_BYTES);
    uint8_t *p = malloc(size ? size : 1);
    if (!p)
        return slm_fail(SLM_ERR_NOMEM, "%s: cannot allocate %zu bytes", what,
                        size);
    if (protobuf_c_message_pack(m, p) != size) {
        free(p);
        return slm_fail(SLM_ERR_INTERNAL,
                        "%s: packed size changed while packing", what);
    }
    *buf = p;
    *len = size;
    return SLM_OK;
}

slm_status slm_client_pack_client(const slm_client_msg *m, uint8_t **buf,
                                  size_t *len)
{
    return pack_any("client message", m ? &m->base : NULL, buf, len);
}

slm_status slm_client_pack_server(const slm_server_msg *m, uint8_t **buf,
                                  size_t *len)
{
    return pack_any("server message", m ? &m->base : NULL, buf, len);
}

/* ------------------------------------------------------------------------ */
/* Field checks                                                              */

static slm_status check_request_id(const char *what, const char *field,
                                   const char *id, bool nonempty,
                                   const slm_client_limits *lim)
{
    const size_t n = strlen(id);
    if (nonempty && n == 0)
        return slm_fail(SLM_ERR_FORMAT, "%s: %s is empty", what, field);
    if (n > lim->max_request_id_bytes)
        return slm_fail(SLM_ERR_FORMAT, "%s: %s is %zu bytes, more than %u",
                        what, field, n, lim->max_request_id_bytes);
    for (size_t i = 0; i < n; i++)
        if (id[i] < 0x20 || id[i] > 0x7e)
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: %s has byte 0x%02x at offset %zu, expected "
                            "printable ASCII",
                            what, field, (unsigned)(unsigned char)id[i], i);
    return SLM_OK;
}

static slm_status check_string(const char *what, const char *field,
                               const char *s, size_t max)
{
    const size_t n = strlen(s);
    if (n > max)
        return slm_fail(SLM_ERR_FORMAT, "%s: %s is %zu bytes, more than %zu",
                        what, field, n, max);
    return SLM_OK;
}

static slm_status check_utf8(const char *what, const char *field, const char *s)
{
    const size_t n = strlen(s);
    const size_t bad = slm_utf8_bad_offset(s, n);
    if (bad != n)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: %s is not valid UTF-8 (byte 0x%02x at offset "
                        "%zu)",
                        what, field, (unsigned)(unsigned char)s[bad], bad);
    return SLM_OK;
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */

#define REQ "client message"

static slm_status check_sampling(Shardlm__Client__SamplingParams *s)
{
    /* proto3 zero defaults: 0 means unset for these two (client_wire.h). */
    if (s->top_p == 0.0f)
        s->top_p = 1.0f;
    if (s->repetition_penalty == 0.0f)
        s->repetition_penalty = 1.0f;
    if (!(s->temperature >= 0.0f) || !isfinite(s->temperature))
        return slm_fail(SLM_ERR_FORMAT,
                        REQ ": SamplingParams.temperature = %g must be finite "
                            "and >= 0",
                        (double)s->temperature);
    if (s->top_k < 0)
        return slm_fail(SLM_ERR_FORMAT,
                        REQ ": SamplingParams.top_k = %d must be >= 0",
                        s->top_k);
    if (!(s->top_p > 0.0f && s->top_p <= 1.0f))
        return slm_fail(SLM_ERR_FORMAT,
                        REQ ": SamplingParams.top_p = %g must be in (0, 1]",
                        (double)s->top_p);
    if (!(s->repetition_penalty > 0.0f) || !isfinite(s->repetition_penalty))
        return slm_fail(SLM_ERR_FORMAT,
                        REQ ": SamplingParams.repetition_penalty = %g must be "
                            "finite and > 0",
                        (double)s->repetition_penalty);
    return SLM_OK;
}

static slm_status check_messages(const Shardlm__Client__ChatMessages *c,
                                 const slm_client_limits *lim)
{
    if (c->n_messages < 1 || c->n_messages > lim->max_messages)
        return slm_fail(SLM_ERR_FORMAT,
                        REQ ": GenerateRequest.messages has %zu messages, "
                            "expected 1 to %u",
                        c->n_messages, lim->max_messages);
    size_t total = 0;
    for (size_t i = 0; i < c->n_messages; i++) {
        const Shardlm__Client__ChatMessage *m = c->messages[i];
        if (strcmp(m->role, "system") != 0 && strcmp(m->role, "user") != 0 &&
            strcmp(m->role, "assistant") != 0)
            return slm_fail(SLM_ERR_FORMAT,
                            REQ ": GenerateRequest.messages[%zu].role (%zu "
                                "bytes, not shown) is not system, user or "
                                "assistant",
                            i, strlen(m->role));
        const size_t n = strlen(m->content);
        /* each n <= the message size, so the sum cannot wrap */
        total += n;
        if (total > lim->max_prompt_bytes)
            return slm_fail(SLM_ERR_FORMAT,
                            REQ ": GenerateRequest.messages hold more than "
                                "%u bytes of content",
                            lim->max_prompt_bytes);
        const size_t bad = slm_utf8_bad_offset(m->content, n);
        if (bad != n)
            return slm_fail(SLM_ERR_FORMAT,
                            REQ ": GenerateRequest.messages[%zu].content is "
                                "not valid UTF-8 (byte 0x%02x at offset %zu)",
                            i, (unsigned)(unsigned char)m->content[bad], bad);
    }
    return SLM_OK;
}

static slm_status check_generate(Shardlm__Client__GenerateRequest *g,
                                 const slm_client_limits *lim)
{
    SLM_CHECK(check_request_id(REQ, "GenerateRequest.request_id", g->request_id,
                               true, lim));
    switch (g->input_case) {
    case SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_PROMPT:
        SLM_CHECK(check_string(REQ, "GenerateRequest.prompt", g->prompt,
                               lim->max_prompt_bytes));
        SLM_CHECK(check_utf8(REQ, "GenerateRequest.prompt", g->prompt));
        break;
    case SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_TOKEN_IDS: {
        const Shardlm__Client__TokenIds *t = g->token_ids;
        if (t->n_ids < 1 || t->n_ids > lim->max_token_ids)
            return slm_fail(SLM_ERR_FORMAT,
                            REQ ": GenerateRequest.token_ids has %zu ids, "
                                "expected 1 to %u",
                            t->n_ids, lim->max_token_ids);
        for (size_t i = 0; i < t->n_ids; i++)
            if (t->ids[i] < 0 || (uint32_t)t->ids[i] >= lim->vocab_size)
                return slm_fail(SLM_ERR_FORMAT,
                                REQ ": GenerateRequest.token_ids[%zu] = %d is "
                                    "out of range [0, %u)",
                                i, t->ids[i], lim->vocab_size);
        break;
    }
    case SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_MESSAGES:
        SLM_CHECK(check_messages(g->messages, lim));
        break;
    default:
        return slm_fail(SLM_ERR_FORMAT,
                        REQ ": GenerateRequest.input = %d, expected prompt, "
                            "token_ids or messages",
                        (int)g->input_case);
    }
    if (g->sampling)
        SLM_CHECK(check_sampling(g->sampling));
    if (g->max_tokens > lim->max_tokens)
        return slm_fail(SLM_ERR_FORMAT,
                        REQ ": GenerateRequest.max_tokens = %u exceeds the "
                            "limit of %u",
                        g->max_tokens, lim->max_tokens);
    if (g->ignore_eos && g->max_tokens == 0)
        return slm_fail(SLM_ERR_FORMAT,
                        REQ ": GenerateRequest.ignore_eos needs max_tokens");
    if (g->n_stop > lim->max_stop)
        return slm_fail(SLM_ERR_FORMAT,
                        REQ ": GenerateRequest.stop has %zu sequences, more "
                            "than %u",
                        g->n_stop, lim->max_stop);
    for (size_t i = 0; i < g->n_stop; i++) {
        if (g->stop[i][0] == '\0')
            return slm_fail(SLM_ERR_FORMAT,
                            REQ ": GenerateRequest.stop[%zu] is empty", i);
        SLM_CHECK(check_string(REQ, "GenerateRequest.stop", g->stop[i],
                               lim->max_stop_bytes));
        SLM_CHECK(check_utf8(REQ, "GenerateRequest.stop", g->stop[i]));
    }
    if (g->deadline_ms > SLM_CLIENT_MAX_DEADLINE_MS)
        return slm_fail(SLM_ERR_FORMAT,
                        REQ ": GenerateRequest.deadline_ms = %llu exceeds 24 "
                            "hours (%llu)",
                        (unsigned long long)g->deadline_ms,
                        SLM_CLIENT_MAX_DEADLINE_MS);
    return SLM_OK;
}

static slm_status check_request(slm_client_msg *m, const uint8_t *buf,
                                size_t len, const slm_client_limits *lim)
{
    SLM_CHECK(slm_pb_check_field_zero(REQ, &m->base));
    SLM_CHECK(slm_pb_check_nul(
        REQ, &shardlm__client__client_message__descriptor, buf, len));
    switch (m->body_case) {
    case SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_GENERATE:
        return check_generate(m->generate, lim);
    case SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_CANCEL:
        return check_request_id(REQ, "CancelRequest.request_id",
                                m->cancel->request_id, true, lim);
    case SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_HEALTH:
    case SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_INFO:
        return SLM_OK;
    default:
        return slm_fail(SLM_ERR_FORMAT,
                        REQ ": body = %d, expected one of generate, cancel, "
                            "health, info",
                        (int)m->body_case);
    }
}

/* ------------------------------------------------------------------------ */
/* Responses                                                                 */

#define RESP "server message"

static slm_status check_time(const char *field, double v)
{
    if (!(v >= 0.0) || !isfinite(v))
        return slm_fail(SLM_ERR_FORMAT,
                        RESP ": Final.%s = %g must be finite and >= 0", field,
                        v);
    return SLM_OK;
}

static slm_status check_state(const char *field, int state)
{
    if (state < SHARDLM__CLIENT__HEALTH_RESPONSE__STATE__STATE_UNSPECIFIED ||
        state > SHARDLM__CLIENT__HEALTH_RESPONSE__STATE__FAILING)
        return slm_fail(SLM_ERR_FORMAT, RESP ": %s = %d is not a known state",
                        field, state);
    return SLM_OK;
}

static slm_status check_chunk(const Shardlm__Client__Chunk *c,
                              const slm_client_limits *lim)
{
    SLM_CHECK(
        check_request_id(RESP, "Chunk.request_id", c->request_id, true, lim));
    if (c->n_token_ids > SLM_CLIENT_MAX_CHUNK_TOKENS)
        return slm_fail(SLM_ERR_FORMAT,
                        RESP ": Chunk.token_ids has %zu ids, more than %u",
                        c->n_token_ids, SLM_CLIENT_MAX_CHUNK_TOKENS);
    for (size_t i = 0; i < c->n_token_ids; i++)
        if (c->token_ids[i] < 0 ||
            (lim->vocab_size && (uint32_t)c->token_ids[i] >= lim->vocab_size))
            return slm_fail(SLM_ERR_FORMAT,
                            RESP ": Chunk.token_ids[%zu] = %d is out of range "
                                 "[0, %u)",
                            i, c->token_ids[i], lim->vocab_size);
    return check_string(RESP, "Chunk.text", c->text, SLM_CLIENT_MAX_TEXT_BYTES);
}

static slm_status check_final(const Shardlm__Client__Final *f,
                              const slm_client_limits *lim)
{
    SLM_CHECK(
        check_request_id(RESP, "Final.request_id", f->request_id, true, lim));
    if ((int)f->finish_reason < 0 ||
        (int)f->finish_reason >
            SHARDLM__CLIENT__FINAL__FINISH_REASON__STOP_SEQUENCE)
        return slm_fail(SLM_ERR_FORMAT,
                        RESP ": Final.finish_reason = %d is not a known "
                             "reason",
                        (int)f->finish_reason);
    SLM_CHECK(check_time("queue_ms", f->queue_ms));
    SLM_CHECK(check_time("prefill_ms", f->prefill_ms));
    return check_time("decode_ms", f->decode_ms);
}

static slm_status check_error(const Shardlm__Client__Error *e,
                              const slm_client_limits *lim)
{
    SLM_CHECK(
        check_request_id(RESP, "Error.request_id", e->request_id, false, lim));
    if ((int)e->code < 0 ||
        (int)e->code > SHARDLM__CLIENT__ERROR__CODE__INTERNAL)
        return slm_fail(SLM_ERR_FORMAT,
                        RESP ": Error.code = %d is not a known code",
                        (int)e->code);
    return check_string(RESP, "Error.message", e->message,
                        SLM_CLIENT_MAX_STRING_BYTES);
}

static slm_status check_health(const Shardlm__Client__HealthResponse *h)
{
    SLM_CHECK(check_state("HealthResponse.state", (int)h->state));
    if (h->n_ranks > SLM_CLIENT_MAX_RANKS)
        return slm_fail(SLM_ERR_FORMAT,
                        RESP ": HealthResponse.ranks has %zu entries, more "
                             "than %u",
                        h->n_ranks, SLM_CLIENT_MAX_RANKS);
    for (size_t i = 0; i < h->n_ranks; i++) {
        SLM_CHECK(check_state("RankHealth.state", (int)h->ranks[i]->state));
        SLM_CHECK(check_string(RESP, "RankHealth.detail", h->ranks[i]->detail,
                               SLM_CLIENT_MAX_STRING_BYTES));
    }
    return SLM_OK;
}

static slm_status check_response(const slm_server_msg *m,
                                 const slm_client_limits *lim)
{
    SLM_CHECK(slm_pb_check_field_zero(RESP, &m->base));
    switch (m->body_case) {
    case SHARDLM__CLIENT__SERVER_MESSAGE__BODY_CHUNK:
        return check_chunk(m->chunk, lim);
    case SHARDLM__CLIENT__SERVER_MESSAGE__BODY_FINAL:
        return check_final(m->final, lim);
    case SHARDLM__CLIENT__SERVER_MESSAGE__BODY_ERROR:
        return check_error(m->error, lim);
    case SHARDLM__CLIENT__SERVER_MESSAGE__BODY_HEALTH:
        return check_health(m->health);
    case SHARDLM__CLIENT__SERVER_MESSAGE__BODY_QUEUED:
        return check_request_id(RESP, "Queued.request_id",
                                m->queued->request_id, true, lim);
    case SHARDLM__CLIENT__SERVER_MESSAGE__BODY_INFO:
        SLM_CHECK(check_string(RESP, "InfoResponse.model", m->info->model,
                               SLM_CLIENT_MAX_STRING_BYTES));
        return check_string(RESP, "InfoResponse.version", m->info->version,
                            SLM_CLIENT_MAX_STRING_BYTES);
    default:
        return slm_fail(SLM_ERR_FORMAT,
                        RESP ": body = %d, expected one of chunk, final, "
                             "error, health, info, queued",
                        (int)m->body_case);
    }
}

/* ------------------------------------------------------------------------ */
/* Bounded unpacking                                                         */

/* Checks the arguments and the size, then unpacks with the budget armed. */
static slm_status unpack_bounded(const char *what,
                                 const ProtobufCMessageDescriptor *d,
                                 const uint8_t *buf, size_t len,
                                 const slm_client_limits *lim,
                                 ProtobufCMessage **out)
{
    *out = NULL;
    if (!lim)
        return slm_fail(SLM_ERR_INVALID, "%s: NULL argument", what);
    if (len > SLM_CLIENT_MAX_MESSAGE_BYTES)
        return slm_fail(SLM_ERR_RANGE, "%s: %zu bytes exceeds the limit of %zu",
                        what, len, SLM_CLIENT_MAX_MESSAGE_BYTES);
    if (!buf && len > 0)
        return slm_fail(SLM_ERR_INVALID, "%s: NULL buffer of %zu bytes", what,
                        len);
    return slm_pb_unpack(d, buf, len, UNPACK_BUDGET(len), what, out);
}

slm_status slm_client_unpack_request(const uint8_t *buf, size_t len,
                                     const slm_client_limits *lim,
                                     slm_client_msg **out)
{
    if (!out)
        return slm_fail(SLM_ERR_INVALID, REQ ": NULL argument");
    *out = NULL;
    ProtobufCMessage *pm;
    SLM_CHECK(unpack_bounded(REQ, &shardlm__client__client_message__descriptor,
                             buf, len, lim, &pm));
    slm_client_msg *m = (slm_client_msg *)pm;
    slm_status rc = check_request(m, buf, len, lim);
    if (rc != SLM_OK) {
        slm_client_free_request(&m);
        return rc;
    }
    *out = m;
    return SLM_OK;
}

slm_status slm_client_unpack_response(const uint8_t *buf, size_t len,
                                      const slm_client_limits *lim,
                                      slm_server_msg **out)
{
    if (!out)
        return slm_fail(SLM_ERR_INVALID, RESP ": NULL argument");
    *out = NULL;
    ProtobufCMessage *pm;
    SLM_CHECK(unpack_bounded(RESP, &shardlm__client__server_message__descriptor,
                             buf, len, lim, &pm));
    slm_server_msg *m = (slm_server_msg *)pm;
    slm_status rc = slm_pb_check_nul(
        RESP, &shardlm__client__server_message__descriptor, buf, len);
    if (rc == SLM_OK)
        rc = check_response(m, lim);
    if (rc != SLM_OK) {
        slm_client_free_response(&m);
        return rc;
    }
    *out = m;
    return SLM_OK;
}

void slm_client_free_request(slm_client_msg **m)
{
    if (!m || !*m)
        return;
    slm_pb_free(&(*m)->base);
    *m = NULL;
}

void slm_client_free_response(slm_server_msg **m)
{
    if (!m || !*m)
        return;
    slm_pb_free(&(*m)->base);
    *m = NULL;
}

const char *slm_client_code_name(int code)
{
    static const char *const names[] = {
        "CODE_UNSPECIFIED", "INVALID_ARGUMENT",  "RESOURCE_EXHAUSTED",
        "UNAVAILABLE",      "DEADLINE_EXCEEDED", "CANCELLED",
        "INTERNAL",
    };
    if (code < 0 || code >= (int)(sizeof names / sizeof names[0]))
        return "UNKNOWN";
    return names[code];
}
