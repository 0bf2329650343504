/*
 * tests/unit/test_client.c - libshardlm_client (client/client.c) against a
 * fake server: a ZeroMQ ROUTER on tcp://127.0.0.1:* in a thread of its own,
 * which reads requests with slm_client_unpack_request and answers per
 * scenario with slm_client_pack_server (or with bytes no server should
 * send). Covered: a streamed generate (chunks in order, the request as the
 * server saw it, the result), server errors mapped to codes, the timeout, a
 * server that goes away mid-stream (noticed well before the timeout), an
 * oversized reply, malformed replies (INTERNAL, never a crash), replies for
 * other request ids ignored, cancel from the callback and from the flag
 * (the CancelRequest carries the id), cancel as a plain send, health and
 * info decoded, the server's vocabulary enforced, bad arguments rejected
 * without a byte sent, and a handle that works again after a failure.
 *
 * The library is the real shared one; the fake server uses shardlm_core's
 * copy of the wire layer (the library's is hidden). cmocka's assertions run
 * on the main thread only; the server thread records what it saw in atomics
 * and fields read after it is joined. Leaks: the ASan build (LSan).
 */
#include "client/shardlm_client.h" /* first: the header stands alone */

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "common/clock.h"
#include "proto/client_wire.h"
#include "tests/testutil.h"

typedef enum {
    SC_STREAM,        /* generate: three chunks, then Final */
    SC_ERROR,         /* generate: Error RESOURCE_EXHAUSTED */
    SC_ERROR_NO_ID,   /* any request: Error without request id */
    SC_ERROR_NO_CODE, /* generate: Error with code 0 */
    SC_SILENT,        /* never answers */
    SC_DROP,          /* generate: one chunk, then the socket closes */
    SC_OVERSIZED,     /* generate: a reply over the message size limit */
    SC_GARBAGE,       /* any request: garbage number `garbage` */
    SC_OTHER_IDS,     /* generate: replies for other requests, then ours */
    SC_CANCEL,        /* generate: a chunk every 10 ms until cancelled */
    SC_HEALTH,
    SC_INFO,
    SC_BIG_ID, /* generate: a chunk with token id 600 */
} scenario;

enum { N_GARBAGE = 10 };

typedef struct {
    atomic_int sc;
    atomic_int garbage;
    atomic_int stop;
    void *ctx, *sock;
    char endpoint[128];
    pthread_t thread;
    /* What the server saw. */
    atomic_int n_generate, n_cancel, n_health, n_info, n_bad;
    char gen_id[256], cancel_id[256]; /* read after join or a count */
    slm_client_msg *last_generate;    /* freed by fake_stop */
    /* SC_CANCEL's stream. */
    uint8_t peer[256];
    size_t peer_len;
    bool streaming;
    int sent;
    double next_at;
} fake;

/* ------------------------------------------------------------------------ */
/* The fake server                                                           */

static void send_raw(fake *f, const void *buf, size_t len, bool more)
{
    zmq_send(f->sock, f->peer, f->peer_len, ZMQ_SNDMORE);
    zmq_send(f->sock, buf, len, more ? ZMQ_SNDMORE : 0);
}

static void send_msg(fake *f, const slm_server_msg *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (slm_client_pack_server(m, &buf, &len) != SLM_OK) {
        atomic_fetch_add(&f->n_bad, 1000); /* the test's own bug */
        return;
    }
    send_raw(f, buf, len, false);
    free(buf);
}

static void send_chunk(fake *f, const char *id, const int32_t *ids, size_t n,
                       const char *text)
{
    Shardlm__Client__Chunk c = SHARDLM__CLIENT__CHUNK__INIT;
    c.request_id = (char *)id;
    c.token_ids = (int32_t *)ids;
    c.n_token_ids = n;
    c.text = (char *)text;
    slm_server_msg m = SHARDLM__CLIENT__SERVER_MESSAGE__INIT;
    m.body_case = SHARDLM__CLIENT__SERVER_MESSAGE__BODY_CHUNK;
    m.chunk = &c;
    send_msg(f, &m);
}

static Shardlm__Client__Final final_of(const char *id)
{
    Shardlm__Client__Final fin = SHARDLM__CLIENT__FINAL__INIT;
    fin.request_id = (char *)id;
    fin.finish_reason = SHARDLM__CLIENT__FINAL__FINISH_REASON__LENGTH;
    fin.prompt_tokens = 2;
    fin.completion_tokens = 4;
    fin.queue_ms = 1.5;
    fin.prefill_ms = 2.5;
    fin.decode_ms = 3.5;
    return fin;
}

static void send_final(fake *f, const Shardlm__Client__Final *fin)
{
    slm_server_msg m = SHARDLM__CLIENT__SERVER_MESSAGE__INIT;
    m.body_case = SHARDLM__CLIENT__SERVER_MESSAGE__BODY_FINAL;
    m.final = (Shardlm__Client__Final *)fin;
    send_msg(f, &m);
}

static void send_error(fake *f, const char *id, int code, const char *text)
{
    Shardlm__Client__Error e = SHARDLM__CLIENT__ERROR__INIT;
    e.request_id = (char *)id;
    e.code = (Shardlm__Client__Error__Code)code;
    e.message = (char *)text;
    slm_server_msg m = SHARDLM__CLIENT__SERVER_MESSAGE__INIT;
    m.body_case = SHARDLM__CLIENT__SERVER_MESSAGE__BODY_ERROR;
    m.error = &e;
    send_msg(f, &m);
}

static void send_health(fake *f)
{
    Shardlm__Client__HealthResponse__RankHealth r[3] = {
        SHARDLM__CLIENT__HEALTH_RESPONSE__RANK_HEALTH__INIT,
        SHARDLM__CLIENT__HEALTH_RESPONSE__RANK_HEALTH__INIT,
        SHARDLM__CLIENT__HEALTH_RESPONSE__RANK_HEALTH__INIT,
    };
    r[0].rank = 0;
    r[0].state = SHARDLM__CLIENT__HEALTH_RESPONSE__STATE__SERVING;
    r[0].last_heartbeat_ms = 3;
    r[1].rank = 1;
    r[1].state = SHARDLM__CLIENT__HEALTH_RESPONSE__STATE__DEGRADED;
    r[1].detail = "slow heartbeats";
    r[1].last_heartbeat_ms = 1500;
    r[2].rank = 2;
    r[2].state = SHARDLM__CLIENT__HEALTH_RESPONSE__STATE__FAILING;
    r[2].detail = "gone";
    r[2].last_heartbeat_ms = 99999;
    Shardlm__Client__HealthResponse__RankHealth *list[3] = {&r[0], &r[1],
                                                            &r[2]};
    Shardlm__Client__HealthResponse h = SHARDLM__CLIENT__HEALTH_RESPONSE__INIT;
    h.state = SHARDLM__CLIENT__HEALTH_RESPONSE__STATE__DEGRADED;
    h.ranks = list;
    h.n_ranks = 3;
    slm_server_msg m = SHARDLM__CLIENT__SERVER_MESSAGE__INIT;
    m.body_case = SHARDLM__CLIENT__SERVER_MESSAGE__BODY_HEALTH;
    m.health = &h;
    send_msg(f, &m);
}

static void send_info(fake *f)
{
    Shardlm__Client__InfoResponse i = SHARDLM__CLIENT__INFO_RESPONSE__INIT;
    i.model = "stories260K";
    i.tp = 2;
    i.pp = 1;
    i.vocab_size = 512;
    i.seq_len = 256;
    i.version = "0.1.0";
    slm_server_msg m = SHARDLM__CLIENT__SERVER_MESSAGE__INIT;
    m.body_case = SHARDLM__CLIENT__SERVER_MESSAGE__BODY_INFO;
    m.info = &i;
    send_msg(f, &m);
}

/* Garbage number g, as the reply to a request with id `id` ("" for health
 * and info). Each must be INTERNAL at the client. */
static void send_garbage(fake *f, int g, const char *id)
{
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    const int32_t negative[] = {-5};
    switch (g) {
    case 0: /* not protobuf */
        send_raw(f, junk, sizeof junk, false);
        break;
    case 1: /* an empty frame: a message with no body */
        send_raw(f, "", 0, false);
        break;
    case 2: /* a negative token id */
        send_chunk(f, id[0] ? id : "x", negative, 1, "t");
        break;
    case 3: { /* an unknown finish reason */
        Shardlm__Client__Final fin = final_of(id[0] ? id : "x");
        fin.finish_reason = (Shardlm__Client__Final__FinishReason)9;
        send_final(f, &fin);
        break;
    }
    case 4: { /* a time that is not a number */
        Shardlm__Client__Final fin = final_of(id[0] ? id : "x");
        fin.decode_ms = NAN;
        send_final(f, &fin);
        break;
    }
    case 5: /* an unknown error code */
        send_error(f, id, 42, "forty-two");
        break;
    case 6: /* a request id with a control character */
        send_chunk(f, "a\x01", NULL, 0, "t");
        break;
    case 7: { /* a valid message in two frames */
        Shardlm__Client__Final fin = final_of(id[0] ? id : "x");
        slm_server_msg m = SHARDLM__CLIENT__SERVER_MESSAGE__INIT;
        m.body_case = SHARDLM__CLIENT__SERVER_MESSAGE__BODY_FINAL;
        m.final = &fin;
        uint8_t *buf = NULL;
        size_t len = 0;
        if (slm_client_pack_server(&m, &buf, &len) == SLM_OK) {
            send_raw(f, buf, len, true);
            zmq_send(f->sock, buf, len, 0);
        }
        free(buf);
        break;
    }
    case 8: { /* chunk text over SLM_CLIENT_MAX_TEXT_BYTES */
        char *text = malloc(SLM_CLIENT_MAX_TEXT_BYTES + 2);
        if (text) {
            memset(text, 'a', SLM_CLIENT_MAX_TEXT_BYTES + 1);
            text[SLM_CLIENT_MAX_TEXT_BYTES + 1] = '\0';
            send_chunk(f, id[0] ? id : "x", NULL, 0, text);
        }
        free(text);
        break;
    }
    default: { /* a truncated valid message */
        Shardlm__Client__Final fin = final_of(id[0] ? id : "x");
        slm_server_msg m = SHARDLM__CLIENT__SERVER_MESSAGE__INIT;
        m.body_case = SHARDLM__CLIENT__SERVER_MESSAGE__BODY_FINAL;
        m.final = &fin;
        uint8_t *buf = NULL;
        size_t len = 0;
        if (slm_client_pack_server(&m, &buf, &len) == SLM_OK)
            send_raw(f, buf, len - 3, false);
        free(buf);
        break;
    }
    }
}

static void on_generate(fake *f, slm_client_msg *m)
{
    const char *id = m->generate->request_id;
    snprintf(f->gen_id, sizeof f->gen_id, "%s", id);
    const int32_t a[] = {1}, bc[] = {2, 3}, d[] = {4};
    switch ((scenario)atomic_load(&f->sc)) {
    case SC_STREAM: {
        send_chunk(f, id, a, 1, "Once");
        send_chunk(f, id, bc, 2, " upon");
        send_chunk(f, id, d, 1, "");
        Shardlm__Client__Final fin = final_of(id);
        send_final(f, &fin);
        break;
    }
    case SC_ERROR:
        send_error(f, id, SHARDLM__CLIENT__ERROR__CODE__RESOURCE_EXHAUSTED,
                   "queue is full (2 waiting)\x1b[31m");
        break;
    case SC_ERROR_NO_ID:
        send_error(f, "", SHARDLM__CLIENT__ERROR__CODE__INVALID_ARGUMENT,
                   "cannot read the request");
        break;
    case SC_ERROR_NO_CODE:
        send_error(f, id, 0, "what happened");
        break;
    case SC_DROP: {
        send_chunk(f, id, a, 1, "Once");
        const int linger = 1000; /* deliver the chunk, then close */
        zmq_setsockopt(f->sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(f->sock);
        f->sock = NULL;
        break;
    }
    case SC_OVERSIZED: {
        const size_t n = SLM_CLIENT_MAX_MESSAGE_BYTES + 1;
        uint8_t *big = calloc(n, 1);
        if (big)
            send_raw(f, big, n, false);
        free(big);
        break;
    }
    case SC_GARBAGE:
        send_garbage(f, atomic_load(&f->garbage), id);
        break;
    case SC_OTHER_IDS: {
        const int32_t z[] = {7};
        send_chunk(f, "old-1", z, 1, "zzz");
        Shardlm__Client__Final old = final_of("old-1");
        send_final(f, &old);
        send_error(f, "old-2", SHARDLM__CLIENT__ERROR__CODE__INTERNAL, "old");
        send_health(f);
        send_info(f);
        send_chunk(f, id, a, 1, "A");
        Shardlm__Client__Final fin = final_of(id);
        fin.finish_reason = SHARDLM__CLIENT__FINAL__FINISH_REASON__STOP;
        send_final(f, &fin);
        break;
    }
    case SC_CANCEL:
        f->streaming = true;
        f->sent = 0;
        f->next_at = slm_now_seconds();
        break;
    case SC_BIG_ID: {
        const int32_t big[] = {600};
        send_chunk(f, id, big, 1, "?");
        break;
    }
    default: /* SC_SILENT; health and info scenarios ignore generates */
        break;
    }
}

static void take(fake *f)
{
    zmq_msg_t peer, body;
    zmq_msg_init(&peer);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&peer, f->sock, ZMQ_DONTWAIT) < 0 || !zmq_msg_more(&peer))
        goto done;
    if (zmq_msg_recv(&body, f->sock, ZMQ_DONTWAIT) < 0)
        goto done;
    if (zmq_msg_more(&body) || zmq_msg_size(&peer) > sizeof f->peer) {
        atomic_fetch_add(&f->n_bad, 1); /* the client sends one frame */
        goto done;
    }
    f->peer_len = zmq_msg_size(&peer);
    memcpy(f->peer, zmq_msg_data(&peer), f->peer_len);
    const slm_client_limits lim = slm_client_default_limits(512, 1024);
    slm_client_msg *m = NULL;
    if (slm_client_unpack_request(zmq_msg_data(&body), zmq_msg_size(&body),
                                  &lim, &m) != SLM_OK) {
        atomic_fetch_add(&f->n_bad, 1);
        goto done;
    }
    const scenario sc = (scenario)atomic_load(&f->sc);
    switch (m->body_case) {
    /* Counted before the reply: the client may look as soon as it has it. */
    case SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_GENERATE:
        atomic_fetch_add(&f->n_generate, 1);
        on_generate(f, m);
        slm_client_free_request(&f->last_generate);
        f->last_generate = m;
        m = NULL;
        break;
    case SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_CANCEL:
        snprintf(f->cancel_id, sizeof f->cancel_id, "%s",
                 m->cancel->request_id);
        atomic_fetch_add(&f->n_cancel, 1);
        if (f->streaming && strcmp(f->cancel_id, f->gen_id) == 0) {
            f->streaming = false;
            send_error(f, f->gen_id, SHARDLM__CLIENT__ERROR__CODE__CANCELLED,
                       "cancelled by the client");
        }
        break;
    case SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_HEALTH:
        atomic_fetch_add(&f->n_health, 1);
        if (sc == SC_HEALTH)
            send_health(f);
        else if (sc == SC_ERROR_NO_ID)
            send_error(f, "", SHARDLM__CLIENT__ERROR__CODE__UNAVAILABLE,
                       "shutting down");
        else if (sc == SC_GARBAGE)
            send_garbage(f, atomic_load(&f->garbage), "");
        break;
    case SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_INFO:
        atomic_fetch_add(&f->n_info, 1);
        if (sc == SC_INFO)
            send_info(f);
        else if (sc == SC_GARBAGE)
            send_garbage(f, atomic_load(&f->garbage), "");
        break;
    default:
        break;
    }
    slm_client_free_request(&m);
done:
    zmq_msg_close(&peer);
    zmq_msg_close(&body);
}

static void *serve(void *arg)
{
    fake *f = arg;
    while (!atomic_load(&f->stop)) {
        if (!f->sock) { /* SC_DROP closed it */
            nanosleep(&(struct timespec){0, 5000000}, NULL);
            continue;
        }
        zmq_pollitem_t it = {f->sock, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 5);
        if (it.revents & ZMQ_POLLIN)
            take(f);
        if (f->sock && f->streaming && slm_now_seconds() >= f->next_at) {
            const int32_t id[] = {f->sent % 512};
            send_chunk(f, f->gen_id, id, 1, "t");
            f->next_at += 0.010;
            if (++f->sent >= 500) /* 5 s: the test has failed */
                f->streaming = false;
        }
    }
    if (f->sock)
        zmq_close(f->sock);
    return NULL;
}

static fake *fake_start(scenario sc)
{
    fake *f = calloc(1, sizeof *f);
    assert_non_null(f);
    atomic_store(&f->sc, (int)sc);
    f->ctx = zmq_ctx_new();
    assert_non_null(f->ctx);
    f->sock = zmq_socket(f->ctx, ZMQ_ROUTER);
    assert_non_null(f->sock);
    const int zero = 0;
    assert_int_equal(zmq_setsockopt(f->sock, ZMQ_LINGER, &zero, sizeof zero),
                     0);
    assert_int_equal(zmq_bind(f->sock, "tcp://127.0.0.1:*"), 0);
    size_t len = sizeof f->endpoint;
    assert_int_equal(
        zmq_getsockopt(f->sock, ZMQ_LAST_ENDPOINT, f->endpoint, &len), 0);
    assert_int_equal(pthread_create(&f->thread, NULL, serve, f), 0);
    return f;
}

/* Stops the server thread; what it recorded may be read after this. */
static void fake_join(fake *f)
{
    atomic_store(&f->stop, 1);
    pthread_join(f->thread, NULL);
}

static void fake_free(fake *f)
{
    zmq_ctx_term(f->ctx);
    slm_client_free_request(&f->last_generate);
    free(f);
}

static void fake_stop(fake *f)
{
    fake_join(f);
    fake_free(f);
}

/* Waits up to ms for *v to reach n. */
static bool wait_count(atomic_int *v, int n, int ms)
{
    for (int i = 0; i < ms / 5 && atomic_load(v) < n; i++)
        nanosleep(&(struct timespec){0, 5000000}, NULL);
    return atomic_load(v) >= n;
}

static shardlm_client_t *connect_to(const fake *f, int32_t timeout_ms)
{
    shardlm_client_options_t o = {.timeout_ms = timeout_ms};
    shardlm_client_t *c = NULL;
    assert_int_equal(shardlm_client_connect(f->endpoint, &o, &c),
                     SHARDLM_CLIENT_OK);
    assert_non_null(c);
    return c;
}

/* ------------------------------------------------------------------------ */
/* The caller's side of a stream                                             */

typedef struct {
    int n;
    int cancel_after; /* return 1 from this chunk on; 0 = never */
    int32_t ids[32];
    size_t n_ids;
    char text[256];
} collected;

static int collect(const shardlm_client_chunk_t *ch, void *user)
{
    collected *c = user;
    c->n++;
    for (size_t i = 0; i < ch->n_token_ids && c->n_ids < 32; i++)
        c->ids[c->n_ids++] = ch->token_ids[i];
    if (strlen(c->text) + ch->text_len < sizeof c->text)
        strcat(c->text, ch->text);
    if (strlen(ch->text) != ch->text_len || !ch->request_id[0])
        c->n = -1000; /* the chunk contradicts itself */
    return c->cancel_after && c->n >= c->cancel_after;
}

static shardlm_client_generate_request_t prompt_request(const char *prompt)
{
    shardlm_client_generate_request_t r = {0};
    r.prompt = prompt;
    return r;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

static void test_stream(void **state)
{
    (void)state;
    fake *f = fake_start(SC_STREAM);
    shardlm_client_t *c = connect_to(f, 5000);
    const char *stops[] = {"\n\n", "END"};
    shardlm_client_generate_request_t r = prompt_request("Once upon");
    r.sampling = (shardlm_client_sampling_t){0.5f, 40, 0.9f, 1.1f, 42, 1};
    r.max_tokens = 16;
    r.stop = stops;
    r.n_stop = 2;
    r.deadline_ms = 5000;
    collected got = {0};
    shardlm_client_result_t res;
    assert_int_equal(shardlm_client_generate(c, &r, collect, &got, &res),
                     SHARDLM_CLIENT_OK);
    assert_int_equal(got.n, 3);
    assert_int_equal(got.n_ids, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(got.ids[i], i + 1);
    assert_string_equal(got.text, "Once upon");
    assert_int_equal(res.finish_reason, SHARDLM_CLIENT_FINISH_LENGTH);
    assert_int_equal(res.prompt_tokens, 2);
    assert_int_equal(res.completion_tokens, 4);
    assert_true(res.queue_ms == 1.5 && res.prefill_ms == 2.5 &&
                res.decode_ms == 3.5);
    assert_true(res.request_id[0] != '\0'); /* made up by the library */
    char first_id[sizeof res.request_id];
    strcpy(first_id, res.request_id);

    /* Another made-up id differs from the first. */
    assert_int_equal(shardlm_client_generate(c, &r, NULL, NULL, &res),
                     SHARDLM_CLIENT_OK);
    assert_string_not_equal(res.request_id, first_id);
    shardlm_client_destroy(&c);
    assert_null(c);
    shardlm_client_destroy(&c);

    /* The request as the server saw it. */
    fake_join(f);
    assert_int_equal(atomic_load(&f->n_generate), 2);
    assert_int_equal(atomic_load(&f->n_bad), 0);
    assert_string_equal(f->gen_id, res.request_id);
    const Shardlm__Client__GenerateRequest *g = f->last_generate->generate;
    assert_int_equal(g->input_case,
                     SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_PROMPT);
    assert_string_equal(g->prompt, "Once upon");
    assert_non_null(g->sampling);
    assert_true(g->sampling->temperature == 0.5f);
    assert_int_equal(g->sampling->top_k, 40);
    assert_true(g->sampling->top_p == 0.9f);
    assert_true(g->sampling->repetition_penalty == 1.1f);
    assert_int_equal(g->sampling->seed, 42);
    assert_true(g->sampling->has_seed);
    assert_int_equal(g->max_tokens, 16);
    assert_int_equal(g->n_stop, 2);
    assert_string_equal(g->stop[0], "\n\n");
    assert_string_equal(g->stop[1], "END");
    assert_int_equal(g->deadline_ms, 5000);
    fake_free(f);
}

static void test_token_ids_reach_the_server(void **state)
{
    (void)state;
    fake *f = fake_start(SC_STREAM);
    shardlm_client_t *c = connect_to(f, 5000);
    const int32_t ids[] = {5, 6, 7};
    shardlm_client_generate_request_t t = {0};
    t.token_ids = ids;
    t.n_token_ids = 3;
    t.request_id = "my-request";
    shardlm_client_result_t res;
    assert_int_equal(shardlm_client_generate(c, &t, NULL, NULL, &res),
                     SHARDLM_CLIENT_OK);
    assert_string_equal(res.request_id, "my-request");
    shardlm_client_destroy(&c);
    fake_join(f);
    const Shardlm__Client__GenerateRequest *g = f->last_generate->generate;
    assert_string_equal(g->request_id, "my-request");
    assert_int_equal(g->input_case,
                     SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_TOKEN_IDS);
    assert_int_equal(g->token_ids->n_ids, 3);
    assert_int_equal(g->token_ids->ids[2], 7);
    /* All zero: greedy, every default left to the server. */
    assert_true(g->sampling->temperature == 0.0f);
    assert_false(g->sampling->has_seed);
    assert_int_equal(g->max_tokens, 0);
    assert_int_equal(g->n_stop, 0);
    fake_free(f);
}

static void test_server_errors(void **state)
{
    (void)state;
    fake *f = fake_start(SC_ERROR);
    shardlm_client_t *c = connect_to(f, 5000);
    shardlm_client_generate_request_t r = prompt_request("x");
    shardlm_client_result_t res;
    assert_int_equal(shardlm_client_generate(c, &r, NULL, NULL, &res),
                     SHARDLM_CLIENT_RESOURCE_EXHAUSTED);
    /* The message as sent, control characters shown as '?'. */
    assert_string_equal(shardlm_client_last_error(c),
                        "queue is full (2 waiting)?[31m");
    assert_true(res.request_id[0] != '\0');
    assert_int_equal(res.finish_reason, SHARDLM_CLIENT_FINISH_UNSPECIFIED);

    /* No request id: the server could not read the request; it is ours. */
    atomic_store(&f->sc, SC_ERROR_NO_ID);
    assert_int_equal(shardlm_client_generate(c, &r, NULL, NULL, NULL),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);
    assert_string_equal(shardlm_client_last_error(c),
                        "cannot read the request");
    shardlm_client_health_t *h = NULL;
    assert_int_equal(shardlm_client_health(c, &h), SHARDLM_CLIENT_UNAVAILABLE);
    assert_null(h);
    assert_string_equal(shardlm_client_last_error(c), "shutting down");

    /* Code 0 is no success. */
    atomic_store(&f->sc, SC_ERROR_NO_CODE);
    assert_int_equal(shardlm_client_generate(c, &r, NULL, NULL, NULL),
                     SHARDLM_CLIENT_INTERNAL);
    assert_non_null(strstr(shardlm_client_last_error(c), "what happened"));
    shardlm_client_destroy(&c);
    fake_stop(f);
}

static void test_timeout(void **state)
{
    (void)state;
    fake *f = fake_start(SC_SILENT);
    shardlm_client_t *c = connect_to(f, 300);
    shardlm_client_generate_request_t r = prompt_request("x");
    shardlm_client_result_t res;
    double t0 = slm_now_seconds();
    assert_int_equal(shardlm_client_generate(c, &r, NULL, NULL, &res),
                     SHARDLM_CLIENT_UNAVAILABLE);
    double took = slm_now_seconds() - t0;
    assert_true(took >= 0.29 && took < 3.0);
    char want[256];
    snprintf(want, sizeof want, "no reply from %s within 300 ms", f->endpoint);
    assert_string_equal(shardlm_client_last_error(c), want);
    /* The abandoned request is cancelled on the server. */
    assert_true(wait_count(&f->n_cancel, 1, 2000));
    assert_string_equal(f->cancel_id, res.request_id);

    t0 = slm_now_seconds();
    shardlm_client_health_t *h = NULL;
    assert_int_equal(shardlm_client_health(c, &h), SHARDLM_CLIENT_UNAVAILABLE);
    took = slm_now_seconds() - t0;
    assert_true(took >= 0.29 && took < 3.0);

    /* The same handle works once the server answers. */
    atomic_store(&f->sc, SC_HEALTH);
    assert_int_equal(shardlm_client_health(c, &h), SHARDLM_CLIENT_OK);
    shardlm_client_health_free(&h);
    shardlm_client_destroy(&c);
    fake_stop(f);
}

static void test_nothing_listening(void **state)
{
    (void)state;
    /* A port that was just free. */
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_ROUTER);
    char ep[128];
    size_t len = sizeof ep;
    assert_int_equal(zmq_bind(s, "tcp://127.0.0.1:*"), 0);
    assert_int_equal(zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &len), 0);
    zmq_close(s);
    zmq_ctx_term(ctx);

    shardlm_client_options_t o = {.timeout_ms = 300};
    shardlm_client_t *c = NULL;
    assert_int_equal(shardlm_client_connect(ep, &o, &c), SHARDLM_CLIENT_OK);
    shardlm_client_info_t info;
    const double t0 = slm_now_seconds();
    assert_int_equal(shardlm_client_info(c, &info), SHARDLM_CLIENT_UNAVAILABLE);
    const double took = slm_now_seconds() - t0;
    assert_true(took >= 0.29 && took < 3.0);
    assert_string_equal(info.model, "");
    shardlm_client_destroy(&c);
}

static void test_server_goes_away(void **state)
{
    (void)state;
    fake *f = fake_start(SC_DROP);
    shardlm_client_t *c = connect_to(f, 20000);
    shardlm_client_generate_request_t r = prompt_request("x");
    collected got = {0};
    const double t0 = slm_now_seconds();
    assert_int_equal(shardlm_client_generate(c, &r, collect, &got, NULL),
                     SHARDLM_CLIENT_UNAVAILABLE);
    const double took = slm_now_seconds() - t0;
    assert_true(took < 5.0); /* the timeout is 20 s */
    assert_true(got.n == 0 || got.n == 1);
    assert_non_null(strstr(shardlm_client_last_error(c), "was lost"));
    shardlm_client_destroy(&c);
    fake_stop(f);
}

static void test_oversized_reply(void **state)
{
    (void)state;
    fake *f = fake_start(SC_OVERSIZED);
    shardlm_client_t *c = connect_to(f, 20000);
    shardlm_client_generate_request_t r = prompt_request("x");
    const double t0 = slm_now_seconds();
    /* ZeroMQ drops a connection that brings a message over the limit. */
    assert_int_equal(shardlm_client_generate(c, &r, NULL, NULL, NULL),
                     SHARDLM_CLIENT_UNAVAILABLE);
    assert_true(slm_now_seconds() - t0 < 5.0);
    /* The handle reconnects for the next request. */
    atomic_store(&f->sc, SC_STREAM);
    assert_int_equal(shardlm_client_generate(c, &r, NULL, NULL, NULL),
                     SHARDLM_CLIENT_OK);
    shardlm_client_destroy(&c);
    fake_stop(f);
}

static void test_malformed_replies(void **state)
{
    (void)state;
    fake *f = fake_start(SC_GARBAGE);
    shardlm_client_t *c = connect_to(f, 5000);
    shardlm_client_generate_request_t r = prompt_request("x");
    for (int g = 0; g < N_GARBAGE; g++) {
        atomic_store(&f->garbage, g);
        collected got = {0};
        const shardlm_client_code_t rc =
            shardlm_client_generate(c, &r, collect, &got, NULL);
        if (rc != SHARDLM_CLIENT_INTERNAL)
            fail_msg("garbage %d: %s: %s", g, shardlm_client_code_name(rc),
                     shardlm_client_last_error(c));
        assert_int_equal(got.n, 0);
        assert_non_null(strstr(shardlm_client_last_error(c), "malformed"));
        /* Health and info the same (their replies carry no request id, so
         * the ones for a request id do not apply). */
        if (g == 2 || g == 3 || g == 4 || g == 6 || g == 8 || g == 9)
            continue;
        shardlm_client_health_t *h = NULL;
        assert_int_equal(shardlm_client_health(c, &h), SHARDLM_CLIENT_INTERNAL);
        assert_null(h);
        shardlm_client_info_t info;
        assert_int_equal(shardlm_client_info(c, &info),
                         SHARDLM_CLIENT_INTERNAL);
    }
    /* Each abandoned generate was cancelled on the server. */
    assert_true(wait_count(&f->n_cancel, N_GARBAGE, 2000));
    atomic_store(&f->sc, SC_STREAM);
    assert_int_equal(shardlm_client_generate(c, &r, NULL, NULL, NULL),
                     SHARDLM_CLIENT_OK);
    shardlm_client_destroy(&c);
    fake_stop(f);
}

static void test_other_ids_ignored(void **state)
{
    (void)state;
    fake *f = fake_start(SC_OTHER_IDS);
    shardlm_client_t *c = connect_to(f, 5000);
    shardlm_client_generate_request_t r = prompt_request("x");
    collected got = {0};
    shardlm_client_result_t res;
    assert_int_equal(shardlm_client_generate(c, &r, collect, &got, &res),
                     SHARDLM_CLIENT_OK);
    assert_int_equal(got.n, 1);
    assert_string_equal(got.text, "A");
    assert_int_equal(res.finish_reason, SHARDLM_CLIENT_FINISH_STOP);
    shardlm_client_destroy(&c);
    fake_stop(f);
}

static void test_cancel_from_callback(void **state)
{
    (void)state;
    fake *f = fake_start(SC_CANCEL);
    shardlm_client_t *c = connect_to(f, 5000);
    shardlm_client_generate_request_t r = prompt_request("x");
    r.request_id = "cancel-me";
    collected got = {.cancel_after = 2};
    shardlm_client_result_t res;
    assert_int_equal(shardlm_client_generate(c, &r, collect, &got, &res),
                     SHARDLM_CLIENT_CANCELLED);
    assert_int_equal(got.n, 2); /* nothing delivered after the cancel */
    assert_string_equal(shardlm_client_last_error(c),
                        "cancelled by the client");
    assert_int_equal(atomic_load(&f->n_cancel), 1);
    assert_string_equal(f->cancel_id, "cancel-me");
    shardlm_client_destroy(&c);
    fake_stop(f);
}

static void test_cancel_flag(void **state)
{
    (void)state;
    fake *f = fake_start(SC_CANCEL);
    shardlm_client_t *c = connect_to(f, 5000);
    shardlm_client_generate_request_t r = prompt_request("x");
    static volatile int flag = 1; /* as a signal handler would leave it */
    r.cancel_flag = &flag;
    collected got = {0};
    shardlm_client_result_t res;
    assert_int_equal(shardlm_client_generate(c, &r, collect, &got, &res),
                     SHARDLM_CLIENT_CANCELLED);
    assert_int_equal(got.n, 0);
    assert_int_equal(atomic_load(&f->n_cancel), 1);
    assert_string_equal(f->cancel_id, res.request_id);
    shardlm_client_destroy(&c);
    fake_stop(f);
}

static void test_cancel_plain_send(void **state)
{
    (void)state;
    fake *f = fake_start(SC_SILENT);
    shardlm_client_t *c = connect_to(f, 5000);
    assert_int_equal(shardlm_client_cancel(c, "req-77"), SHARDLM_CLIENT_OK);
    assert_true(wait_count(&f->n_cancel, 1, 3000));
    assert_string_equal(f->cancel_id, "req-77");
    shardlm_client_destroy(&c);
    fake_stop(f);
}

static void test_health(void **state)
{
    (void)state;
    fake *f = fake_start(SC_HEALTH);
    shardlm_client_t *c = connect_to(f, 5000);
    shardlm_client_health_t *h = NULL;
    assert_int_equal(shardlm_client_health(c, &h), SHARDLM_CLIENT_OK);
    assert_non_null(h);
    assert_int_equal(h->state, SHARDLM_CLIENT_STATE_DEGRADED);
    assert_int_equal(h->n_ranks, 3);
    assert_int_equal(h->ranks[0].rank, 0);
    assert_int_equal(h->ranks[0].state, SHARDLM_CLIENT_STATE_SERVING);
    assert_string_equal(h->ranks[0].detail, "");
    assert_int_equal(h->ranks[0].last_heartbeat_ms, 3);
    assert_int_equal(h->ranks[1].state, SHARDLM_CLIENT_STATE_DEGRADED);
    assert_string_equal(h->ranks[1].detail, "slow heartbeats");
    assert_int_equal(h->ranks[1].last_heartbeat_ms, 1500);
    assert_int_equal(h->ranks[2].rank, 2);
    assert_int_equal(h->ranks[2].state, SHARDLM_CLIENT_STATE_FAILING);
    assert_string_equal(h->ranks[2].detail, "gone");
    assert_int_equal(h->ranks[2].last_heartbeat_ms, 99999);
    shardlm_client_health_free(&h);
    assert_null(h);
    shardlm_client_health_free(&h);
    shardlm_client_health_free(NULL);
    shardlm_client_destroy(&c);
    fake_stop(f);
}

static void test_info_and_vocab(void **state)
{
    (void)state;
    fake *f = fake_start(SC_INFO);
    shardlm_client_t *c = connect_to(f, 5000);
    shardlm_client_info_t info;
    assert_int_equal(shardlm_client_info(c, &info), SHARDLM_CLIENT_OK);
    assert_string_equal(info.model, "stories260K");
    assert_int_equal(info.tp, 2);
    assert_int_equal(info.pp, 1);
    assert_int_equal(info.vocab_size, 512);
    assert_int_equal(info.seq_len, 256);
    assert_string_equal(info.version, "0.1.0");

    /* The vocabulary now bounds the request's ids... */
    const int32_t ids[] = {1, 600};
    shardlm_client_generate_request_t t = {0};
    t.token_ids = ids;
    t.n_token_ids = 2;
    assert_int_equal(shardlm_client_generate(c, &t, NULL, NULL, NULL),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);
    assert_non_null(strstr(shardlm_client_last_error(c), "600"));
    assert_int_equal(atomic_load(&f->n_generate), 0);
    /* ... and the server's. */
    atomic_store(&f->sc, SC_BIG_ID);
    shardlm_client_generate_request_t r = prompt_request("x");
    assert_int_equal(shardlm_client_generate(c, &r, NULL, NULL, NULL),
                     SHARDLM_CLIENT_INTERNAL);
    assert_non_null(strstr(shardlm_client_last_error(c), "600"));
    shardlm_client_destroy(&c);
    fake_stop(f);
}

static void expect_invalid(shardlm_client_t *c,
                           const shardlm_client_generate_request_t *r,
                           const char *what)
{
    shardlm_client_result_t res;
    const shardlm_client_code_t rc =
        shardlm_client_generate(c, r, NULL, NULL, &res);
    if (rc != SHARDLM_CLIENT_INVALID_ARGUMENT)
        fail_msg("%s: %s: %s", what, shardlm_client_code_name(rc),
                 shardlm_client_last_error(c));
    if (!shardlm_client_last_error(c)[0])
        fail_msg("%s: no message", what);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    shardlm_client_t *c = NULL;
    shardlm_client_options_t neg = {.timeout_ms = -1};
    assert_int_equal(shardlm_client_connect(NULL, NULL, &c),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);
    assert_int_equal(shardlm_client_connect("", NULL, &c),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);
    assert_int_equal(shardlm_client_connect("tcp://127.0.0.1:1", NULL, NULL),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);
    assert_int_equal(shardlm_client_connect("tcp://127.0.0.1:1", &neg, &c),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);
    assert_int_equal(shardlm_client_connect("no such endpoint", NULL, &c),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);
    assert_null(c);
    assert_non_null(
        strstr(shardlm_client_last_error(NULL), "no such endpoint"));
    char long_ep[400];
    memset(long_ep, 'a', sizeof long_ep - 1);
    long_ep[sizeof long_ep - 1] = '\0';
    assert_int_equal(shardlm_client_connect(long_ep, NULL, &c),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);

    /* Nothing invalid may reach the server. */
    fake *f = fake_start(SC_SILENT);
    c = connect_to(f, 5000);
    shardlm_client_generate_request_t ok = prompt_request("x");
    assert_int_equal(shardlm_client_generate(NULL, &ok, NULL, NULL, NULL),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);
    expect_invalid(c, NULL, "NULL request");

    const int32_t ids[] = {1, -1};
    shardlm_client_generate_request_t r = ok;
    r.token_ids = ids;
    r.n_token_ids = 1;
    expect_invalid(c, &r, "prompt and ids");
    r = (shardlm_client_generate_request_t){0};
    expect_invalid(c, &r, "no input");
    r.n_token_ids = 2;
    expect_invalid(c, &r, "NULL ids");
    r.token_ids = ids;
    expect_invalid(c, &r, "negative id");
    r.n_token_ids = 0;
    expect_invalid(c, &r, "ids without a count");

    struct {
        const char *what;
        shardlm_client_sampling_t s;
    } sampling[] = {
        {"temperature -1", {-1.0f, 0, 0, 0, 0, 0}},
        {"temperature NaN", {NAN, 0, 0, 0, 0, 0}},
        {"temperature inf", {INFINITY, 0, 0, 0, 0, 0}},
        {"top_k -1", {1.0f, -1, 0, 0, 0, 0}},
        {"top_p 1.5", {1.0f, 0, 1.5f, 0, 0, 0}},
        {"top_p -0.5", {1.0f, 0, -0.5f, 0, 0, 0}},
        {"repetition_penalty -1", {1.0f, 0, 0, -1.0f, 0, 0}},
    };
    for (size_t i = 0; i < sizeof sampling / sizeof sampling[0]; i++) {
        r = ok;
        r.sampling = sampling[i].s;
        expect_invalid(c, &r, sampling[i].what);
    }

    r = ok;
    r.request_id = "tab\there";
    expect_invalid(c, &r, "request id with a tab");
    char long_id[SHARDLM_CLIENT_MAX_REQUEST_ID + 2];
    memset(long_id, 'i', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    r.request_id = long_id;
    expect_invalid(c, &r, "request id too long");

    r = ok;
    const char *empty_stop[] = {"ok", ""};
    r.stop = empty_stop;
    r.n_stop = 2;
    expect_invalid(c, &r, "empty stop");
    r.stop = NULL;
    expect_invalid(c, &r, "NULL stops");
    const char *null_stop[] = {"ok", NULL};
    r.stop = null_stop;
    expect_invalid(c, &r, "NULL stop");
    const char *many[17];
    for (int i = 0; i < 17; i++)
        many[i] = "s";
    r.stop = many;
    r.n_stop = 17;
    expect_invalid(c, &r, "17 stops");

    r = ok;
    r.deadline_ms = 24ull * 3600 * 1000 + 1;
    expect_invalid(c, &r, "deadline over 24 h");
    r = prompt_request("bad \xff UTF-8");
    expect_invalid(c, &r, "bad UTF-8");

    shardlm_client_health_t *h = NULL;
    assert_int_equal(shardlm_client_health(c, NULL),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);
    assert_int_equal(shardlm_client_health(NULL, &h),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);
    assert_int_equal(shardlm_client_info(c, NULL),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);
    shardlm_client_info_t info;
    assert_int_equal(shardlm_client_info(NULL, &info),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);
    assert_int_equal(shardlm_client_cancel(c, NULL),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);
    assert_int_equal(shardlm_client_cancel(c, ""),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);
    assert_int_equal(shardlm_client_cancel(c, "a\x01"),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);
    assert_int_equal(shardlm_client_cancel(NULL, "a"),
                     SHARDLM_CLIENT_INVALID_ARGUMENT);

    /* Then one good request: it is the first thing the server sees. */
    atomic_store(&f->sc, SC_STREAM);
    assert_int_equal(shardlm_client_generate(c, &ok, NULL, NULL, NULL),
                     SHARDLM_CLIENT_OK);
    assert_int_equal(atomic_load(&f->n_generate), 1);
    assert_int_equal(atomic_load(&f->n_cancel), 0);
    assert_int_equal(atomic_load(&f->n_health), 0);
    assert_int_equal(atomic_load(&f->n_info), 0);
    assert_int_equal(atomic_load(&f->n_bad), 0);
    shardlm_client_destroy(&c);
    fake_stop(f);
}

static void test_names(void **state)
{
    (void)state;
    static const char *const codes[] = {
        "OK",          "INVALID_ARGUMENT",  "RESOURCE_EXHAUSTED",
        "UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED",
        "INTERNAL",
    };
    for (int i = 0; i < 7; i++)
        assert_string_equal(shardlm_client_code_name((shardlm_client_code_t)i),
                            codes[i]);
    assert_string_equal(shardlm_client_code_name((shardlm_client_code_t)7),
                        "UNKNOWN");
    assert_string_equal(shardlm_client_code_name((shardlm_client_code_t)-1),
                        "UNKNOWN");
    assert_string_equal(shardlm_client_state_name(SHARDLM_CLIENT_STATE_SERVING),
                        "SERVING");
    assert_string_equal(shardlm_client_state_name((shardlm_client_state_t)9),
                        "UNKNOWN");
    assert_string_equal(
        shardlm_client_finish_reason_name(SHARDLM_CLIENT_FINISH_STOP_SEQUENCE),
        "STOP_SEQUENCE");
    assert_string_equal(
        shardlm_client_finish_reason_name((shardlm_client_finish_reason_t)9),
        "UNKNOWN");
    const shardlm_client_sampling_t d = shardlm_client_sampling_defaults();
    assert_true(d.temperature == 1.0f && d.top_p == 0.9f && d.top_k == 0 &&
                d.repetition_penalty == 1.0f && !d.has_seed);
    /* The public bounds are the wire's. */
    const slm_client_limits lim = slm_client_default_limits(1, 1);
    assert_int_equal(lim.max_request_id_bytes, SHARDLM_CLIENT_MAX_REQUEST_ID);
    assert_int_equal(SLM_CLIENT_MAX_STRING_BYTES, SHARDLM_CLIENT_MAX_STRING);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_token_ids_reach_the_server),
        cmocka_unit_test(test_server_errors),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_nothing_listening),
        cmocka_unit_test(test_server_goes_away),
        cmocka_unit_test(test_oversized_reply),
        cmocka_unit_test(test_malformed_replies),
        cmocka_unit_test(test_other_ids_ignored),
        cmocka_unit_test(test_cancel_from_callback),
        cmocka_unit_test(test_cancel_flag),
        cmocka_unit_test(test_cancel_plain_send),
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_info_and_vocab),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests_name("client", tests, NULL, NULL);
}
