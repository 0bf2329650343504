/*
 * client/client.c - libshardlm_client; the API and its contract are in
 * shardlm_client.h, the wire format in proto/client.proto.
 *
 * A handle owns a ZeroMQ context, a DEALER socket connected to the server's
 * ROUTER, and a PAIR socket that receives the DEALER's ZMQ_EVENT_DISCONNECTED
 * events (zmq_socket_monitor over inproc), so that a server that dies is
 * noticed at once rather than at the timeout. Each message is one frame each
 * way: a packed ClientMessage out; a packed ServerMessage back, which passes
 * slm_client_unpack_response() before anything of it is used.
 *
 * A request is checked before it is sent by the very validation the server
 * applies (slm_client_unpack_request() on the packed bytes, with the house
 * limits), so a bad argument is INVALID_ARGUMENT here, with the server's
 * wording, and never a round trip.
 *
 * After a local failure (no reply in time, a dropped connection, a malformed
 * reply) the socket is replaced before the next request goes out, so nothing
 * left of the failed exchange - a request still queued for a server that is
 * not there, a late reply, an Error without a request id - can be taken for
 * the next request's. The old socket stays until then so that
 * shardlm_client_cancel() still reaches the server over the connection the
 * request came on (the server matches requests to their connection).
 */
#include "client/shardlm_client.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <zmq.h>

#include "common/clock.h"
#include "common/status.h"
#include "common/zkeys.h"
#include "proto/client_wire.h"

#define ENDPOINT_MAX 256
#define ERROR_MAX    1024
/* How often a wait looks at a request's cancel_flag, at the least. */
#define FLAG_POLL_MS 100

/* ZeroMQ settings of the DEALER. A closed socket keeps trying to deliver
 * what it still holds (a last CancelRequest) for LINGER_MS; a dropped
 * connection is retried after 100 ms, backing off to 1 s; ZMTP heartbeats
 * every second drop a connection whose peer has not answered for 5 s (a
 * stopped server, a lost host), which the monitor then reports. */
#define LINGER_MS            100
#define RECONNECT_IVL_MS     100
#define RECONNECT_IVL_MAX_MS 1000
#define HEARTBEAT_IVL_MS     1000
#define HEARTBEAT_TIMEOUT_MS 5000

_Static_assert(SHARDLM_CLIENT_MAX_STRING == SLM_CLIENT_MAX_STRING_BYTES,
               "the public string bound is the wire's");
_Static_assert((int)SHARDLM_CLIENT_INTERNAL ==
                   (int)SHARDLM__CLIENT__ERROR__CODE__INTERNAL,
               "the public codes are Error.Code");
_Static_assert((int)SHARDLM_CLIENT_STATE_FAILING ==
                   (int)SHARDLM__CLIENT__HEALTH_RESPONSE__STATE__FAILING,
               "the public states are HealthResponse.State");
_Static_assert((int)SHARDLM_CLIENT_FINISH_STOP_SEQUENCE ==
                   (int)SHARDLM__CLIENT__FINAL__FINISH_REASON__STOP_SEQUENCE,
               "the public finish reasons are Final.FinishReason");

typedef Shardlm__Client__ServerMessage__BodyCase body_case;
#define BODY_CHUNK  SHARDLM__CLIENT__SERVER_MESSAGE__BODY_CHUNK
#define BODY_FINAL  SHARDLM__CLIENT__SERVER_MESSAGE__BODY_FINAL
#define BODY_ERROR  SHARDLM__CLIENT__SERVER_MESSAGE__BODY_ERROR
#define BODY_HEALTH SHARDLM__CLIENT__SERVER_MESSAGE__BODY_HEALTH
#define BODY_INFO   SHARDLM__CLIENT__SERVER_MESSAGE__BODY_INFO

struct shardlm_client {
    void *ctx;
    void *sock;          /* DEALER */
    void *monitor;       /* PAIR: sock's ZMQ_EVENT_DISCONNECTED events */
    bool stale;          /* replace sock before the next request */
    bool dropped;        /* the monitor saw sock's connection drop */
    unsigned generation; /* numbers the monitor's inproc endpoints */
    char endpoint[ENDPOINT_MAX];
    int32_t timeout_ms;
    bool curve; /* the keys below are set */
    char server_key[SLM_ZKEY_Z85_BUF], public_key[SLM_ZKEY_Z85_BUF],
        secret_key[SLM_ZKEY_Z85_BUF];
    uint32_t vocab_size;        /* from shardlm_client_info; 0 = unknown */
    uint64_t id_seed, id_count; /* made-up request ids */
    char error[ERROR_MAX];
};

/* Failures that have no handle to keep their message: a failed connect, a
 * call with a NULL handle. */
static _Thread_local char g_error[ERROR_MAX];

static shardlm_client_code_t fail(shardlm_client_t *c,
                                  shardlm_client_code_t code, const char *fmt,
                                  ...) __attribute__((format(printf, 3, 4)));

static shardlm_client_code_t
fail(shardlm_client_t *c, shardlm_client_code_t code, const char *fmt, ...)
{
    char *buf = c ? c->error : g_error;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, ERROR_MAX, fmt, ap);
    va_end(ap);
    return code;
}

const char *shardlm_client_last_error(const shardlm_client_t *c)
{
    return c ? c->error : g_error;
}

const char *shardlm_client_code_name(shardlm_client_code_t code)
{
    if (code == SHARDLM_CLIENT_OK)
        return "OK";
    return slm_client_code_name((int)code); /* UNKNOWN beyond INTERNAL */
}

const char *shardlm_client_finish_reason_name(shardlm_client_finish_reason_t r)
{
    switch (r) {
    case SHARDLM_CLIENT_FINISH_UNSPECIFIED:
        return "UNSPECIFIED";
    case SHARDLM_CLIENT_FINISH_STOP:
        return "STOP";
    case SHARDLM_CLIENT_FINISH_LENGTH:
        return "LENGTH";
    case SHARDLM_CLIENT_FINISH_STOP_SEQUENCE:
        return "STOP_SEQUENCE";
    }
    return "UNKNOWN";
}

const char *shardlm_client_state_name(shardlm_client_state_t s)
{
    switch (s) {
    case SHARDLM_CLIENT_STATE_UNSPECIFIED:
        return "UNSPECIFIED";
    case SHARDLM_CLIENT_STATE_SERVING:
        return "SERVING";
    case SHARDLM_CLIENT_STATE_DEGRADED:
        return "DEGRADED";
    case SHARDLM_CLIENT_STATE_FAILING:
        return "FAILING";
    }
    return "UNKNOWN";
}

shardlm_client_sampling_t shardlm_client_sampling_defaults(void)
{
    /* coordinator/sampler.c's slm_sampling_defaults(), which this library
     * does not link. */
    shardlm_client_sampling_t s = {0};
    s.temperature = 1.0f;
    s.top_p = 0.9f;
    s.repetition_penalty = 1.0f;
    return s;
}

/* ------------------------------------------------------------------------ */
/* The socket                                                                */

static void close_socket(shardlm_client_t *c)
{
    if (c->sock) {
        (void)zmq_socket_monitor(c->sock, NULL, 0);
        zmq_close(c->sock);
        c->sock = NULL;
    }
    if (c->monitor) {
        zmq_close(c->monitor);
        c->monitor = NULL;
    }
}

static int set_int(void *sock, int option, int value)
{
    return zmq_setsockopt(sock, option, &value, sizeof value);
}

static shardlm_client_code_t open_socket(shardlm_client_t *c)
{
    char monitor_ep[64];
    snprintf(monitor_ep, sizeof monitor_ep, "inproc://shardlm-client-%u",
             c->generation++);
    /* CURVE's box travels in each frame and counts against the limit. */
    const int64_t max_bytes = (int64_t)SLM_CLIENT_MAX_MESSAGE_BYTES +
                              (c->curve ? SLM_ZKEY_CURVE_OVERHEAD : 0);
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    /* An oversized message drops the connection inside ZeroMQ, before a byte
     * of it reaches us; the monitor reports the drop. */
    if (!c->sock ||
        zmq_setsockopt(c->sock, ZMQ_MAXMSGSIZE, &max_bytes, sizeof max_bytes) !=
            0 ||
        set_int(c->sock, ZMQ_LINGER, LINGER_MS) != 0 ||
        set_int(c->sock, ZMQ_RECONNECT_IVL, RECONNECT_IVL_MS) != 0 ||
        set_int(c->sock, ZMQ_RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS) != 0 ||
        set_int(c->sock, ZMQ_HEARTBEAT_IVL, HEARTBEAT_IVL_MS) != 0 ||
        set_int(c->sock, ZMQ_HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS) != 0 ||
        (c->curve &&
         slm_zkeys_apply_client(c->sock, c->server_key, c->public_key,
                                c->secret_key) != SLM_OK) ||
        zmq_socket_monitor(c->sock, monitor_ep,
                           ZMQ_EVENT_DISCONNECTED |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) != 0 ||
        !(c->monitor = zmq_socket(c->ctx, ZMQ_PAIR)) ||
        set_int(c->monitor, ZMQ_LINGER, 0) != 0 ||
        zmq_connect(c->monitor, monitor_ep) != 0) {
        shardlm_client_code_t rc =
            fail(c, SHARDLM_CLIENT_INTERNAL, "cannot set up a socket: %s",
                 zmq_strerror(zmq_errno()));
        close_socket(c);
        return rc;
    }
    if (zmq_connect(c->sock, c->endpoint) != 0) {
        shardlm_client_code_t rc = fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                                        "cannot connect to '%s': %s",
                                        c->endpoint, zmq_strerror(zmq_errno()));
        close_socket(c);
        return rc;
    }
    c->stale = false;
    c->dropped = false;
    return SHARDLM_CLIENT_OK;
}

/* Takes every pending monitor event; true if there was one. */
static bool drain_monitor(shardlm_client_t *c, bool *refused)
{
    bool any = false;
    for (;;) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        const int n = zmq_msg_recv(&frame, c->monitor, ZMQ_DONTWAIT);
        uint16_t event = 0;
        if (n >= 2 && zmq_msg_more(&frame))
            memcpy(&event, zmq_msg_data(&frame), 2); /* an event's id */
        zmq_msg_close(&frame);
        if (n < 0)
            return any;
        any = true;
        if (refused && (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ||
                        event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL))
            *refused = true;
    }
}

/* Before a request: a fresh socket if the last exchange failed or the
 * connection dropped since. */
static shardlm_client_code_t ready_socket(shardlm_client_t *c)
{
    if (c->sock && (drain_monitor(c, NULL) || c->stale))
        close_socket(c);
    if (!c->sock)
        return open_socket(c);
    return SHARDLM_CLIENT_OK;
}

/* Queues one message on the socket without waiting. */
static shardlm_client_code_t send_bytes(shardlm_client_t *c, const uint8_t *buf,
                                        size_t len)
{
    if (zmq_send(c->sock, buf, len, ZMQ_DONTWAIT) < 0) {
        c->stale = true;
        return fail(c, SHARDLM_CLIENT_UNAVAILABLE, "cannot send to %s: %s",
                    c->endpoint, zmq_strerror(zmq_errno()));
    }
    return SHARDLM_CLIENT_OK;
}

static shardlm_client_code_t send_message(shardlm_client_t *c,
                                          const slm_client_msg *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (slm_client_pack_client(m, &buf, &len) != SLM_OK)
        return fail(c, SHARDLM_CLIENT_INTERNAL, "%s", slm_error_message());
    const shardlm_client_code_t rc = send_bytes(c, buf, len);
    free(buf);
    return rc;
}

static shardlm_client_code_t send_cancel(shardlm_client_t *c, const char *id)
{
    Shardlm__Client__CancelRequest cancel =
        SHARDLM__CLIENT__CANCEL_REQUEST__INIT;
    cancel.request_id = (char *)id;
    slm_client_msg m = SHARDLM__CLIENT__CLIENT_MESSAGE__INIT;
    m.body_case = SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_CANCEL;
    m.cancel = &cancel;
    return send_message(c, &m);
}

/* Receives the message the socket holds (it is readable). Sets *out to the
 * validated message (the caller frees it with slm_client_free_response), or
 * to NULL if there was none after all. A malformed message is INTERNAL. */
static shardlm_client_code_t receive(shardlm_client_t *c, slm_server_msg **out)
{
    *out = NULL;
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    if (zmq_msg_recv(&frame, c->sock, ZMQ_DONTWAIT) < 0) {
        const int err = zmq_errno();
        zmq_msg_close(&frame);
        if (err == EAGAIN || err == EINTR)
            return SHARDLM_CLIENT_OK;
        c->stale = true;
        return fail(c, SHARDLM_CLIENT_INTERNAL, "cannot receive from %s: %s",
                    c->endpoint, zmq_strerror(err));
    }
    if (zmq_msg_more(&frame)) {
        /* The frames of a message arrive together: take the rest. */
        size_t frames = 1;
        while (zmq_msg_more(&frame) &&
               zmq_msg_recv(&frame, c->sock, ZMQ_DONTWAIT) >= 0)
            frames++;
        zmq_msg_close(&frame);
        c->stale = true;
        return fail(c, SHARDLM_CLIENT_INTERNAL,
                    "malformed reply from %s: a message of %zu frames, "
                    "expected 1",
                    c->endpoint, frames);
    }
    const slm_client_limits lim = slm_client_default_limits(c->vocab_size, 0);
    const slm_status st = slm_client_unpack_response(
        zmq_msg_data(&frame), zmq_msg_size(&frame), &lim, out);
    zmq_msg_close(&frame);
    if (st != SLM_OK) {
        c->stale = true;
        return fail(c, SHARDLM_CLIENT_INTERNAL, "malformed reply from %s: %s",
                    c->endpoint, slm_error_message());
    }
    return SHARDLM_CLIENT_OK;
}

/* Waits for the next message from the server until `deadline` (seconds on
 * slm_now_seconds()'s clock). OK with *out set: a validated message (the
 * caller frees it). OK with *out NULL: nothing yet, but *flag is non-zero
 * (flag may be NULL) or the wait was interrupted; look and call again.
 * UNAVAILABLE: the deadline passed or the connection dropped. INTERNAL: a
 * malformed message. */
static shardlm_client_code_t next_message(shardlm_client_t *c, double deadline,
                                          const volatile int *flag,
                                          slm_server_msg **out)
{
    *out = NULL;
    for (;;) {
        if (flag && *flag)
            return SHARDLM_CLIENT_OK;
        const double left = deadline - slm_now_seconds();
        long wait_ms = left <= 0 ? 0 : (long)(left * 1000.0) + 1;
        if (flag && wait_ms > FLAG_POLL_MS)
            wait_ms = FLAG_POLL_MS;
        zmq_pollitem_t items[2] = {{c->sock, 0, ZMQ_POLLIN, 0},
                                   {c->monitor, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, wait_ms) < 0) {
            if (zmq_errno() == EINTR)
                return SHARDLM_CLIENT_OK; /* a signal: let the caller look */
            c->stale = true;
            return fail(c, SHARDLM_CLIENT_INTERNAL, "zmq_poll: %s",
                        zmq_strerror(zmq_errno()));
        }
        /* The socket first: what arrived before a drop is still delivered. */
        if (items[0].revents & ZMQ_POLLIN)
            return receive(c, out);
        if (items[1].revents & ZMQ_POLLIN) {
            bool refused = false;
            drain_monitor(c, &refused);
            c->stale = true;
            c->dropped = true;
            if (refused)
                return fail(c, SHARDLM_CLIENT_UNAVAILABLE,
                            "%s refused us in the handshake: %s", c->endpoint,
                            c->curve ? "our key is not in its allowlist, or "
                                       "the server key is not its own"
                                     : "it wants CURVE (give the server's "
                                       "public key and ours)");
            return fail(c, SHARDLM_CLIENT_UNAVAILABLE,
                        "the connection to %s was lost (the server went "
                        "away or stopped answering)",
                        c->endpoint);
        }
        if (slm_now_seconds() >= deadline) {
            c->stale = true;
            return fail(c, SHARDLM_CLIENT_UNAVAILABLE,
                        "no reply from %s within %d ms", c->endpoint,
                        (int)c->timeout_ms);
        }
    }
}

/* The server's Error as our return; its message is kept with control
 * characters replaced, since it is shown to people. */
static shardlm_client_code_t server_error(shardlm_client_t *c,
                                          const Shardlm__Client__Error *e)
{
    if (e->code == SHARDLM__CLIENT__ERROR__CODE__CODE_UNSPECIFIED)
        return fail(c, SHARDLM_CLIENT_INTERNAL,
                    "the server failed without an error code: %.900s",
                    e->message);
    fail(c, (shardlm_client_code_t)e->code, "%s",
         e->message[0] ? e->message : "(the server gave no message)");
    for (char *p = c->error; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return (shardlm_client_code_t)e->code;
}

/* ------------------------------------------------------------------------ */
/* The handle                                                                */

shardlm_client_code_t shardlm_client_connect(const char *endpoint,
                                             const shardlm_client_options_t *o,
                                             shardlm_client_t **out)
{
    if (!out)
        return fail(NULL, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "shardlm_client_connect: out is NULL");
    *out = NULL;
    if (!endpoint || !endpoint[0])
        return fail(NULL, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "shardlm_client_connect: no endpoint");
    if (strlen(endpoint) >= ENDPOINT_MAX)
        return fail(NULL, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "endpoint of %zu bytes, more than %d", strlen(endpoint),
                    ENDPOINT_MAX - 1);
    const int32_t timeout = o ? o->timeout_ms : 0;
    if (timeout < 0)
        return fail(NULL, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "timeout_ms = %d must not be negative", (int)timeout);
    shardlm_client_t *c = calloc(1, sizeof *c);
    if (!c)
        return fail(NULL, SHARDLM_CLIENT_INTERNAL, "out of memory");
    snprintf(c->endpoint, sizeof c->endpoint, "%s", endpoint);
    c->timeout_ms = timeout ? timeout : SHARDLM_CLIENT_DEFAULT_TIMEOUT_MS;
    const char *skf = o ? o->server_key_file : NULL;
    const char *kf = o ? o->key_file : NULL;
    if (!skf != !kf) {
        free(c);
        return fail(NULL, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "CURVE needs both the server's public key file and our "
                    "secret key file");
    }
    if (skf) {
        if (slm_zkeys_load_public(skf, c->server_key) != SLM_OK ||
            slm_zkeys_load_secret(kf, c->public_key, c->secret_key) != SLM_OK) {
            fail(NULL, SHARDLM_CLIENT_INVALID_ARGUMENT, "%s",
                 slm_error_message());
            slm_zkeys_wipe(c->secret_key, sizeof c->secret_key);
            free(c);
            return SHARDLM_CLIENT_INVALID_ARGUMENT;
        }
        c->curve = true;
    }
    /* Made-up request ids must not repeat across processes on a server;
     * without getrandom, the clock, the pid and the address will do. */
    if (getrandom(&c->id_seed, sizeof c->id_seed, GRND_NONBLOCK) !=
        (ssize_t)sizeof c->id_seed)
        c->id_seed = (uint64_t)(slm_now_seconds() * 1e9) ^
                     ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)c;
    c->ctx = zmq_ctx_new();
    if (!c->ctx) {
        fail(NULL, SHARDLM_CLIENT_INTERNAL, "zmq_ctx_new: %s",
             zmq_strerror(zmq_errno()));
        free(c);
        return SHARDLM_CLIENT_INTERNAL;
    }
    /* Connect now, so the connection is made while the caller gets ready. */
    const shardlm_client_code_t rc = open_socket(c);
    if (rc != SHARDLM_CLIENT_OK) {
        fail(NULL, rc, "%s", c->error);
        shardlm_client_destroy(&c);
        return rc;
    }
    *out = c;
    return SHARDLM_CLIENT_OK;
}

void shardlm_client_destroy(shardlm_client_t **pc)
{
    if (!pc || !*pc)
        return;
    shardlm_client_t *c = *pc;
    close_socket(c);
    if (c->ctx)
        while (zmq_ctx_term(c->ctx) != 0 && zmq_errno() == EINTR)
            ;
    slm_zkeys_wipe(c->secret_key, sizeof c->secret_key);
    free(c);
    *pc = NULL;
}

shardlm_client_code_t shardlm_client_cancel(shardlm_client_t *c,
                                            const char *request_id)
{
    if (!c)
        return fail(NULL, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "shardlm_client_cancel: the client is NULL");
    if (!request_id)
        return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "shardlm_client_cancel: request_id is NULL");
    const size_t n = strlen(request_id);
    if (n == 0 || n > SHARDLM_CLIENT_MAX_REQUEST_ID)
        return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "request_id of %zu bytes, expected 1 to %d", n,
                    SHARDLM_CLIENT_MAX_REQUEST_ID);
    for (size_t i = 0; i < n; i++)
        if (request_id[i] < 0x20 || request_id[i] > 0x7e)
            return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                        "request_id has byte 0x%02x at offset %zu, expected "
                        "printable ASCII",
                        (unsigned)(unsigned char)request_id[i], i);
    if (!c->sock) {
        const shardlm_client_code_t rc = open_socket(c);
        if (rc != SHARDLM_CLIENT_OK)
            return rc;
    }
    return send_cancel(c, request_id);
}

/* ------------------------------------------------------------------------ */
/* Generate                                                                  */

/* The checks the packed request cannot make for us: pointers and counts,
 * and ids against a vocabulary the validation does not know. */
static shardlm_client_code_t
check_generate_args(shardlm_client_t *c,
                    const shardlm_client_generate_request_t *r,
                    const shardlm_client_message_t *msgs, size_t n_msgs)
{
    const bool has_ids = r->token_ids || r->n_token_ids > 0;
    if (msgs || n_msgs) {
        if (r->prompt || has_ids)
            return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                        "a chat request takes messages, not a prompt or "
                        "token ids");
        if (!msgs || n_msgs == 0)
            return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                        "messages is %s with n_messages = %zu",
                        msgs ? "set" : "NULL", n_msgs);
        for (size_t i = 0; i < n_msgs; i++)
            if (!msgs[i].role || !msgs[i].content)
                return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                            "messages[%zu] has a NULL %s", i,
                            msgs[i].role ? "content" : "role");
    } else if (r->prompt && has_ids)
        return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "both a prompt and token ids are given; expected one");
    if (!msgs && !r->prompt && !has_ids)
        return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "neither a prompt nor token ids are given; expected one");
    if (has_ids && (!r->token_ids || r->n_token_ids == 0))
        return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "token_ids is %s with n_token_ids = %zu",
                    r->token_ids ? "set" : "NULL", r->n_token_ids);
    for (size_t i = 0; has_ids && i < r->n_token_ids; i++) {
        const int32_t id = r->token_ids[i];
        if (id < 0)
            return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                        "token_ids[%zu] = %" PRId32 " is negative", i, id);
        if (c->vocab_size && (uint32_t)id >= c->vocab_size)
            return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                        "token_ids[%zu] = %" PRId32 " is out of range "
                        "[0, %" PRIu32 ") (the server's vocabulary)",
                        i, id, c->vocab_size);
    }
    if (r->n_stop > 0 && !r->stop)
        return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "stop is NULL with n_stop = %zu", r->n_stop);
    for (size_t i = 0; i < r->n_stop; i++)
        if (!r->stop[i])
            return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT, "stop[%zu] is NULL",
                        i);
    if (r->request_id && strlen(r->request_id) > SHARDLM_CLIENT_MAX_REQUEST_ID)
        return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "request_id of %zu bytes, more than %d",
                    strlen(r->request_id), SHARDLM_CLIENT_MAX_REQUEST_ID);
    return SHARDLM_CLIENT_OK;
}

static shardlm_client_code_t
pack_generate_with(shardlm_client_t *c,
                   const shardlm_client_generate_request_t *r,
                   Shardlm__Client__ChatMessages *chat, const char *id,
                   uint8_t **buf, size_t *len);

/* Builds the GenerateRequest for r (or, with msgs, for the conversation
 * msgs(n_msgs) with r's other fields) under the id `id`, packs it and puts it
 * through the server's validation. The caller owns *buf (free()). */
static shardlm_client_code_t
pack_generate(shardlm_client_t *c, const shardlm_client_generate_request_t *r,
              const shardlm_client_message_t *msgs, size_t n_msgs,
              const char *id, uint8_t **buf, size_t *len)
{
    /* n_msgs structs and their pointers; n_msgs is bounded by the memory
     * the caller's array already takes. */
    Shardlm__Client__ChatMessage *cm =
        n_msgs ? calloc(n_msgs, sizeof *cm) : NULL;
    Shardlm__Client__ChatMessage **cp =
        n_msgs ? calloc(n_msgs, sizeof *cp) : NULL;
    if (n_msgs && (!cm || !cp)) {
        free(cm);
        free(cp);
        return fail(c, SHARDLM_CLIENT_INTERNAL, "out of memory");
    }
    for (size_t i = 0; i < n_msgs; i++) {
        shardlm__client__chat_message__init(&cm[i]);
        cm[i].role = (char *)msgs[i].role;
        cm[i].content = (char *)msgs[i].content;
        cp[i] = &cm[i];
    }
    Shardlm__Client__ChatMessages chat = SHARDLM__CLIENT__CHAT_MESSAGES__INIT;
    chat.messages = cp;
    chat.n_messages = n_msgs;
    shardlm_client_code_t rc =
        pack_generate_with(c, r, n_msgs ? &chat : NULL, id, buf, len);
    free(cm);
    free(cp);
    return rc;
}

static shardlm_client_code_t
pack_generate_with(shardlm_client_t *c,
                   const shardlm_client_generate_request_t *r,
                   Shardlm__Client__ChatMessages *chat, const char *id,
                   uint8_t **buf, size_t *len)
{
    Shardlm__Client__SamplingParams sp = SHARDLM__CLIENT__SAMPLING_PARAMS__INIT;
    sp.temperature = r->sampling.temperature;
    sp.top_k = r->sampling.top_k;
    sp.top_p = r->sampling.top_p;
    sp.repetition_penalty = r->sampling.repetition_penalty;
    sp.seed = r->sampling.seed;
    sp.has_seed = r->sampling.has_seed != 0;
    Shardlm__Client__TokenIds ids = SHARDLM__CLIENT__TOKEN_IDS__INIT;
    Shardlm__Client__GenerateRequest g =
        SHARDLM__CLIENT__GENERATE_REQUEST__INIT;
    g.request_id = (char *)id;
    if (chat) {
        g.input_case = SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_MESSAGES;
        g.messages = chat;
    } else if (r->prompt) {
        g.input_case = SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_PROMPT;
        g.prompt = (char *)r->prompt;
    } else {
        ids.ids = (int32_t *)r->token_ids;
        ids.n_ids = r->n_token_ids;
        g.input_case = SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_TOKEN_IDS;
        g.token_ids = &ids;
    }
    g.sampling = &sp;
    g.max_tokens = r->max_tokens;
    g.stop = (char **)r->stop;
    g.n_stop = r->n_stop;
    g.deadline_ms = r->deadline_ms;
    g.ignore_eos = r->ignore_eos != 0;
    slm_client_msg m = SHARDLM__CLIENT__CLIENT_MESSAGE__INIT;
    m.body_case = SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_GENERATE;
    m.generate = &g;
    if (slm_client_pack_client(&m, buf, len) != SLM_OK)
        return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT, "%s",
                    slm_error_message());
    /* The server's own checks. Ids were checked above (the vocabulary may be
     * unknown here) and the server's cap on max_tokens is its own. */
    const slm_client_limits lim =
        slm_client_default_limits(UINT32_MAX, UINT32_MAX);
    slm_client_msg *check = NULL;
    if (slm_client_unpack_request(*buf, *len, &lim, &check) != SLM_OK) {
        free(*buf);
        *buf = NULL;
        static const char prefix[] = "client message: "; /* client_wire.c's */
        const char *why = slm_error_message();
        if (strncmp(why, prefix, sizeof prefix - 1) == 0)
            why += sizeof prefix - 1;
        return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT, "invalid request: %s",
                    why);
    }
    slm_client_free_request(&check);
    return SHARDLM_CLIENT_OK;
}

static void take_final(shardlm_client_result_t *res,
                       const Shardlm__Client__Final *f)
{
    res->finish_reason = (shardlm_client_finish_reason_t)f->finish_reason;
    res->prompt_tokens = f->prompt_tokens;
    res->completion_tokens = f->completion_tokens;
    res->queue_ms = f->queue_ms;
    res->prefill_ms = f->prefill_ms;
    res->decode_ms = f->decode_ms;
}

static shardlm_client_code_t
run_generate(shardlm_client_t *c, const shardlm_client_generate_request_t *req,
             const shardlm_client_message_t *msgs, size_t n_msgs,
             shardlm_client_chunk_fn on_chunk, void *user,
             shardlm_client_result_t *result, const char *who);

shardlm_client_code_t
shardlm_client_generate(shardlm_client_t *c,
                        const shardlm_client_generate_request_t *req,
                        shardlm_client_chunk_fn on_chunk, void *user,
                        shardlm_client_result_t *result)
{
    return run_generate(c, req, NULL, 0, on_chunk, user, result,
                        "shardlm_client_generate");
}

shardlm_client_code_t
shardlm_client_chat(shardlm_client_t *c,
                    const shardlm_client_generate_request_t *req,
                    const shardlm_client_message_t *messages, size_t n_messages,
                    shardlm_client_chunk_fn on_chunk, void *user,
                    shardlm_client_result_t *result)
{
    if (!messages || n_messages == 0) {
        if (result)
            memset(result, 0, sizeof *result);
        return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "shardlm_client_chat: no messages");
    }
    return run_generate(c, req, messages, n_messages, on_chunk, user, result,
                        "shardlm_client_chat");
}

static shardlm_client_code_t
run_generate(shardlm_client_t *c, const shardlm_client_generate_request_t *req,
             const shardlm_client_message_t *msgs, size_t n_msgs,
             shardlm_client_chunk_fn on_chunk, void *user,
             shardlm_client_result_t *result, const char *who)
{
    shardlm_client_result_t local;
    shardlm_client_result_t *res = result ? result : &local;
    memset(res, 0, sizeof *res);
    if (!c)
        return fail(NULL, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "%s: the client is NULL", who);
    if (!req)
        return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "%s: the request is NULL", who);
    shardlm_client_code_t rc = check_generate_args(c, req, msgs, n_msgs);
    if (rc != SHARDLM_CLIENT_OK)
        return rc;
    if (req->request_id && req->request_id[0])
        snprintf(res->request_id, sizeof res->request_id, "%s",
                 req->request_id);
    else
        snprintf(res->request_id, sizeof res->request_id,
                 "%016" PRIx64 "-%" PRIu64, c->id_seed, ++c->id_count);
    const char *id = res->request_id;

    uint8_t *buf = NULL;
    size_t len = 0;
    rc = pack_generate(c, req, msgs, n_msgs, id, &buf, &len);
    if (rc != SHARDLM_CLIENT_OK)
        return rc;
    rc = ready_socket(c);
    if (rc == SHARDLM_CLIENT_OK)
        rc = send_bytes(c, buf, len);
    free(buf);
    if (rc != SHARDLM_CLIENT_OK)
        return rc;

    const double timeout = c->timeout_ms / 1000.0;
    double deadline = slm_now_seconds() + timeout;
    bool cancelling = false;
    for (;;) {
        slm_server_msg *m = NULL;
        rc =
            next_message(c, deadline, cancelling ? NULL : req->cancel_flag, &m);
        if (rc != SHARDLM_CLIENT_OK) {
            /* The request may still run on a server that is slow or sent
             * garbage: stop it. A dropped connection took it along. */
            if (!cancelling && !c->dropped)
                (void)send_cancel(c, id);
            return rc;
        }
        if (!m) {
            if (!cancelling && req->cancel_flag && *req->cancel_flag) {
                cancelling = true;
                rc = send_cancel(c, id);
                if (rc != SHARDLM_CLIENT_OK)
                    return rc;
                deadline = slm_now_seconds() + timeout;
            }
            continue;
        }
        const body_case kind = m->body_case;
        if (kind == BODY_CHUNK && strcmp(m->chunk->request_id, id) == 0) {
            deadline = slm_now_seconds() + timeout;
            if (!cancelling && on_chunk) {
                const shardlm_client_chunk_t chunk = {
                    .request_id = id,
                    .token_ids = m->chunk->token_ids,
                    .n_token_ids = m->chunk->n_token_ids,
                    .text = m->chunk->text,
                    .text_len = strlen(m->chunk->text),
                };
                if (on_chunk(&chunk, user) != 0) {
                    cancelling = true;
                    rc = send_cancel(c, id);
                    if (rc != SHARDLM_CLIENT_OK) {
                        slm_client_free_response(&m);
                        return rc;
                    }
                }
            }
        } else if (kind == SHARDLM__CLIENT__SERVER_MESSAGE__BODY_QUEUED &&
                   strcmp(m->queued->request_id, id) == 0) {
            /* Waiting behind others: the server is alive, keep waiting. */
            deadline = slm_now_seconds() + timeout;
        } else if (kind == BODY_FINAL &&
                   strcmp(m->final->request_id, id) == 0) {
            take_final(res, m->final);
            rc = cancelling
                     ? fail(c, SHARDLM_CLIENT_CANCELLED,
                            "cancelled by the caller, but the request had "
                            "finished (%s)",
                            shardlm_client_finish_reason_name(
                                res->finish_reason))
                     : SHARDLM_CLIENT_OK;
            slm_client_free_response(&m);
            return rc;
        } else if (kind == BODY_ERROR &&
                   (m->error->request_id[0] == '\0' ||
                    strcmp(m->error->request_id, id) == 0)) {
            /* No id: the server could not read the request. */
            rc = server_error(c, m->error);
            slm_client_free_response(&m);
            return rc;
        }
        /* Anything else is left over from an earlier request. */
        slm_client_free_response(&m);
    }
}

/* ------------------------------------------------------------------------ */
/* Health and info                                                           */

/* Sends a request of kind `body` (health or info) and waits for the reply
 * of kind `want`, or an Error without a request id (the server's answer to
 * a message it could not read). On OK the caller owns *out. */
static shardlm_client_code_t ask(shardlm_client_t *c,
                                 Shardlm__Client__ClientMessage__BodyCase body,
                                 body_case want, slm_server_msg **out)
{
    *out = NULL;
    Shardlm__Client__HealthRequest health =
        SHARDLM__CLIENT__HEALTH_REQUEST__INIT;
    Shardlm__Client__InfoRequest info = SHARDLM__CLIENT__INFO_REQUEST__INIT;
    slm_client_msg m = SHARDLM__CLIENT__CLIENT_MESSAGE__INIT;
    m.body_case = body;
    if (body == SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_HEALTH)
        m.health = &health;
    else
        m.info = &info;
    shardlm_client_code_t rc = ready_socket(c);
    if (rc == SHARDLM_CLIENT_OK)
        rc = send_message(c, &m);
    if (rc != SHARDLM_CLIENT_OK)
        return rc;
    const double deadline = slm_now_seconds() + c->timeout_ms / 1000.0;
    for (;;) {
        slm_server_msg *r = NULL;
        rc = next_message(c, deadline, NULL, &r);
        if (rc != SHARDLM_CLIENT_OK)
            return rc;
        if (!r)
            continue;
        if (r->body_case == want) {
            *out = r;
            return SHARDLM_CLIENT_OK;
        }
        if (r->body_case == BODY_ERROR && r->error->request_id[0] == '\0') {
            rc = server_error(c, r->error);
            slm_client_free_response(&r);
            return rc;
        }
        slm_client_free_response(&r); /* left over from a generate */
    }
}

_Static_assert(_Alignof(shardlm_client_rank_health_t) <=
                   _Alignof(shardlm_client_health_t),
               "the ranks follow the header in one allocation");

shardlm_client_code_t shardlm_client_health(shardlm_client_t *c,
                                            shardlm_client_health_t **out)
{
    if (!c)
        return fail(NULL, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "shardlm_client_health: the client is NULL");
    if (!out)
        return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "shardlm_client_health: out is NULL");
    *out = NULL;
    slm_server_msg *m = NULL;
    shardlm_client_code_t rc =
        ask(c, SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_HEALTH, BODY_HEALTH, &m);
    if (rc != SHARDLM_CLIENT_OK)
        return rc;
    const Shardlm__Client__HealthResponse *h = m->health;
    /* Bounded by the validation: at most SLM_CLIENT_MAX_RANKS ranks with
     * details of at most SLM_CLIENT_MAX_STRING_BYTES, a few MiB in all. */
    size_t size = sizeof(shardlm_client_health_t) +
                  h->n_ranks * sizeof(shardlm_client_rank_health_t);
    for (size_t i = 0; i < h->n_ranks; i++)
        size += strlen(h->ranks[i]->detail) + 1;
    shardlm_client_health_t *out_h = malloc(size);
    if (!out_h) {
        slm_client_free_response(&m);
        return fail(c, SHARDLM_CLIENT_INTERNAL,
                    "out of memory for a health report of %zu bytes", size);
    }
    out_h->state = (shardlm_client_state_t)h->state;
    out_h->n_ranks = h->n_ranks;
    out_h->ranks = (shardlm_client_rank_health_t *)(out_h + 1);
    char *text = (char *)(out_h->ranks + h->n_ranks);
    for (size_t i = 0; i < h->n_ranks; i++) {
        const Shardlm__Client__HealthResponse__RankHealth *r = h->ranks[i];
        const size_t n = strlen(r->detail) + 1;
        memcpy(text, r->detail, n);
        out_h->ranks[i] = (shardlm_client_rank_health_t){
            .rank = r->rank,
            .state = (shardlm_client_state_t)r->state,
            .detail = text,
            .last_heartbeat_ms = r->last_heartbeat_ms,
        };
        text += n;
    }
    slm_client_free_response(&m);
    *out = out_h;
    return SHARDLM_CLIENT_OK;
}

void shardlm_client_health_free(shardlm_client_health_t **h)
{
    if (!h || !*h)
        return;
    free(*h);
    *h = NULL;
}

shardlm_client_code_t shardlm_client_info(shardlm_client_t *c,
                                          shardlm_client_info_t *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!c)
        return fail(NULL, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "shardlm_client_info: the client is NULL");
    if (!out)
        return fail(c, SHARDLM_CLIENT_INVALID_ARGUMENT,
                    "shardlm_client_info: out is NULL");
    slm_server_msg *m = NULL;
    const shardlm_client_code_t rc =
        ask(c, SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_INFO, BODY_INFO, &m);
    if (rc != SHARDLM_CLIENT_OK)
        return rc;
    const Shardlm__Client__InfoResponse *i = m->info;
    /* Both strings are at most SLM_CLIENT_MAX_STRING_BYTES (validated). */
    snprintf(out->model, sizeof out->model, "%s", i->model);
    snprintf(out->version, sizeof out->version, "%s", i->version);
    out->tp = i->tp;
    out->pp = i->pp;
    out->vocab_size = i->vocab_size;
    out->seq_len = i->seq_len;
    c->vocab_size = i->vocab_size;
    slm_client_free_response(&m);
    return SHARDLM_CLIENT_OK;
}
