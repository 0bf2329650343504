/*
 * tests/mpi/client_garbage.c - a hostile client for the API server's
 * integration test: `client_garbage ENDPOINT` (e.g. tcp://127.0.0.1:5555).
 *
 * It talks to the server's ROUTER from ZeroMQ DEALERs and sends, group by
 * group: an empty frame, random bytes, every truncation of a valid
 * GenerateRequest, single-byte mutations of valid messages, wrong wire types
 * for known fields, unknown fields, control-plane messages, 2- and 3-frame
 * messages, requests that parse but are invalid (a reply is required), a
 * CancelRequest for an unknown id, and a frame of 1 MiB + 1 bytes (over
 * ZMQ_MAXMSGSIZE: the server drops that connection, so it goes on a DEALER
 * of its own). Every reply must be one frame that slm_client_unpack_response
 * accepts, and every Error must be INVALID_ARGUMENT.
 *
 * Garbage the server may answer or ignore is followed by a probe (a valid
 * HealthRequest, or an InfoRequest where the garbage holds HealthRequests)
 * on the same DEALER: the server answers a DEALER in order, so the replies
 * before the probe's are the garbage's, and the probe proves the server is
 * still serving. Mutants and random buffers that slm_client_unpack_request
 * accepts under limits no server exceeds are classified first: Health and
 * Info requests must get their response, GenerateRequests are not sent (the
 * server would run them). Finally a fresh DEALER must get a HealthResponse
 * and an InfoResponse within 5 s.
 *
 * Prints "<group>: N sent, M error replies, K silent" per group, with
 * ", A answered" (Health, Info, Final) and ", S skipped" where not 0. Exit
 * status: 0 all passed; 1 the first violation (a malformed or multi-frame
 * reply, a wrong code or kind, a required reply missing, the server no longer
 * answering), said on stderr; 2 usage or local failure.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "common/zkeys.h"
#include "proto/client_wire.h"
#include "tests/testutil.h"

#define WAIT_MS  5000 /* for a reply that is required */
#define QUIET_MS 300  /* for one that is not, without a probe */

enum expect {
    X_MAYBE,   /* an Error INVALID_ARGUMENT or nothing; probe with Health */
    X_MAYBE_I, /* the same, probe with Info (the garbage holds Health) */
    X_INVALID, /* an Error INVALID_ARGUMENT, required */
    X_HEALTH,  /* a HealthResponse, required */
    X_INFO,    /* an InfoResponse, required */
    X_FINAL,   /* Chunks, then a Final for request_id "unknown-fields" */
};

typedef struct { /* a growable byte buffer */
    uint8_t *p;
    size_t n, cap;
} buf;
/* A string literal as a buf; strings are split where a hex escape would
 * run into the next character. */
/* clang-format off */
#define LIT(s) {(uint8_t *)(s), sizeof(s) - 1, 0}
/* clang-format on */

static const buf health = LIT("\x1a\x00"), info = LIT("\x22\x00"),
                 cancel = LIT("\x12\x11\x0a\x0fno-such-request");

static struct {
    const char *name;
    int sent, errors, silent, answered, skipped;
} grp;
static void *ctx;
static const char *endpoint;
static uint64_t rng = 20240611;
static const char *const kind[] = {
    "nothing", "Chunk",          "Final",
    "Error",   "HealthResponse", "InfoResponse"}; /* by body_case */

__attribute__((format(printf, 1, 2), noreturn)) static void
violation(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "client_garbage: FAIL in %s (message %d): ", grp.name,
            grp.sent);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void put(buf *b, const void *data, size_t len)
{
    if (b->n + len > b->cap) {
        b->cap = 2 * (b->n + len) + 64;
        if (!(b->p = realloc(b->p, b->cap))) {
            fprintf(stderr, "client_garbage: out of memory\n");
            exit(2);
        }
    }
    if (len)
        memcpy(b->p + b->n, data, len);
    b->n += len;
}

static void put_varint(buf *b, uint64_t v)
{
    do {
        uint8_t c = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        put(b, &c, 1);
        v >>= 7;
    } while (v);
}

static void put_len(buf *b, uint32_t field, const void *data, size_t len)
{
    put_varint(b, (uint64_t)field << 3 | 2); /* length-delimited */
    put_varint(b, len);
    put(b, data, len);
}

/* ClientMessage{field: <inner>}, replacing *b. */
static void wrap(buf *b, uint32_t field)
{
    buf w = {0};
    put_len(&w, field, b->p, b->n);
    free(b->p);
    *b = w;
}

/* ClientMessage{generate{request_id "base", prompt "Once upon a time",
 * sampling{temperature 0.7, top_p 0.9}, max_tokens 1, stop "\n\n",
 * deadline_ms 60000}}: valid, with a field of every kind. */
static const buf valid = LIT("\x0a\x2e\x0a\x04"
                             "base"
                             "\x12\x10"
                             "Once upon a time"
                             "\x22\x0a\x0d\x33\x33\x33\x3f\x1d\x66\x66\x66\x3f"
                             "\x28\x01\x32\x02\n\n\x38\xe0\xd4\x03");

static void send_frames(void *s, const buf *f, int n)
{
    for (int i = 0; i < n; i++)
        if (zmq_send(s, f[i].p ? f[i].p : (const void *)"", f[i].n,
                     i + 1 < n ? ZMQ_SNDMORE : 0) < 0)
            violation("zmq_send: %s", zmq_strerror(zmq_errno()));
}

/* The next reply within ms (NULL if none), checked to be well-formed; an
 * Error must be INVALID_ARGUMENT. Caller frees it. */
static slm_server_msg *recv_reply(void *s, int ms)
{
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, ms) <= 0)
        return NULL;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, s, 0) < 0)
        violation("zmq_msg_recv: %s", zmq_strerror(zmq_errno()));
    const bool more = zmq_msg_more(&msg);
    const slm_client_limits lim = slm_client_default_limits(0, 0);
    slm_server_msg *m = NULL;
    if (slm_client_unpack_response(zmq_msg_data(&msg), zmq_msg_size(&msg), &lim,
                                   &m) != SLM_OK)
        violation("malformed reply of %zu bytes: %s", zmq_msg_size(&msg),
                  slm_error_message());
    zmq_msg_close(&msg);
    if (more)
        violation("a reply of more than one frame");
    if (m->body_case == SHARDLM__CLIENT__SERVER_MESSAGE__BODY_ERROR &&
        m->error->code != SHARDLM__CLIENT__ERROR__CODE__INVALID_ARGUMENT)
        violation("Error %s (\"%s\"), expected INVALID_ARGUMENT",
                  slm_client_code_name(m->error->code), m->error->message);
    return m;
}

/* Sends frames f(n) on s and checks the replies against x. */
static void run_case(void *s, const buf *f, int n, enum expect x)
{
    enum { CHUNK = 1, FINAL, ERROR, HEALTH, INFO };
    static const int wants[] = {HEALTH, INFO, ERROR, HEALTH, INFO, FINAL};
    static const char *const expected[] = {"Error INVALID_ARGUMENT or nothing",
                                           "Error INVALID_ARGUMENT or nothing",
                                           "Error INVALID_ARGUMENT",
                                           "HealthResponse",
                                           "InfoResponse",
                                           "Chunks and a Final"};
    const bool maybe = x == X_MAYBE || x == X_MAYBE_I;
    send_frames(s, f, n);
    if (maybe) /* the probe */
        send_frames(s, x == X_MAYBE ? &health : &info, 1);
    grp.sent++;
    int errors = 0, got;
    do {
        slm_server_msg *m = recv_reply(s, WAIT_MS);
        if (!m)
            violation("no %s within %d ms (is the server still serving?)",
                      maybe ? "reply to the probe" : expected[x], WAIT_MS);
        got = (int)m->body_case;
        if (!(got == wants[x] || (x == X_FINAL && got == CHUNK) ||
              (maybe && got == ERROR)))
            violation("got a %s%s%s, expected %s", kind[m->body_case],
                      got == ERROR ? ": " : "",
                      got == ERROR ? m->error->message : "", expected[x]);
        const char *id = got == CHUNK   ? m->chunk->request_id
                         : got == FINAL ? m->final->request_id
                                        : "unknown-fields";
        if (strcmp(id, "unknown-fields") != 0)
            violation("a %s for request_id \"%s\"", kind[m->body_case], id);
        errors += got == ERROR;
        slm_client_free_response(&m);
    } while (got != wants[x]);
    if (errors > (maybe ? n : 1))
        violation("%d error replies to one message", errors);
    grp.errors += errors > 0;
    grp.silent += maybe && errors == 0;
    grp.answered += x == X_HEALTH || x == X_INFO || x == X_FINAL;
}

/* Sends one frame of garbage: what the server must reject is X_MAYBE;
 * what it may accept is classified under limits no server exceeds. */
static void garbage(void *s, const buf *b)
{
    const slm_client_limits any = {UINT32_MAX, UINT32_MAX, UINT32_MAX,
                                   UINT32_MAX, UINT32_MAX, UINT32_MAX,
                                   UINT32_MAX, UINT32_MAX};
    slm_client_msg *m = NULL;
    if (slm_client_unpack_request(b->p, b->n, &any, &m) != SLM_OK) {
        run_case(s, b, 1, X_MAYBE);
        return;
    }
    const int body = (int)m->body_case;
    slm_client_free_request(&m);
    if (body == SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_HEALTH)
        run_case(s, b, 1, X_HEALTH);
    else if (body == SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_INFO)
        run_case(s, b, 1, X_INFO);
    else if (body == SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_CANCEL)
        run_case(s, b, 1, X_MAYBE); /* an unknown id: ignored or invalid */
    else
        grp.skipped++; /* a valid GenerateRequest would be run */
}

/* Prints the counts of the group that ends and starts the next, if any. */
static void group(const char *next)
{
    if (grp.name) {
        printf("%s: %d sent, %d error replies, %d silent", grp.name, grp.sent,
               grp.errors, grp.silent);
        if (grp.answered)
            printf(", %d answered", grp.answered);
        if (grp.skipped)
            printf(", %d skipped (valid generate)", grp.skipped);
        printf("\n");
        fflush(stdout);
    }
    memset(&grp, 0, sizeof grp);
    grp.name = next;
}

/* CURVE keys when the server wants them (argv[2], argv[3]): the hostile
 * bytes then come from a listed client, past authentication - the case the
 * parsers must survive. */
static bool curve;
static char server_key[SLM_ZKEY_Z85_BUF], my_public[SLM_ZKEY_Z85_BUF],
    my_secret[SLM_ZKEY_Z85_BUF];

static void *dealer(void)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    const int linger = 0, timeout = WAIT_MS;
    if (s && curve &&
        slm_zkeys_apply_client(s, server_key, my_public, my_secret) != SLM_OK) {
        fprintf(stderr, "client_garbage: %s\n", slm_error_message());
        exit(2);
    }
    if (!s || zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_setsockopt(s, ZMQ_SNDTIMEO, &timeout, sizeof timeout) ||
        zmq_connect(s, endpoint)) {
        fprintf(stderr, "client_garbage: cannot connect to %s: %s\n", endpoint,
                zmq_strerror(zmq_errno()));
        exit(2);
    }
    return s;
}

/* GenerateRequests that parse but are invalid (wrapped in main). ID_HI is
 * request_id "s" and prompt "hi". */
#define ID    "\x0a\x01s"
#define ID_HI ID "\x12\x02hi"
static const buf semantic[] = {
    LIT("\x0a\x00\x12\x02hi"),      /* request_id empty */
    LIT("\x0a\x02i\x01\x12\x02hi"), /* request_id "i\x01" */
    LIT("\x0a\x01\x7f\x12\x02hi"),  /* request_id DEL */
    LIT(ID "\x12\x03"
           "a\0b"),                             /* NUL in the prompt */
    LIT(ID "\x12\x02\xc3\x28"),                 /* bad continuation */
    LIT(ID "\x12\x02\xc0\xaf"),                 /* overlong '/' */
    LIT(ID "\x12\x03\xed\xa0\x80"),             /* a surrogate */
    LIT(ID "\x12\x04\xf4\x90\x80\x80"),         /* above U+10FFFF */
    LIT(ID "\x12\x04ok\xe2\x82"),               /* cut short */
    LIT(ID "\x1a\x06\x08\xff\xff\xff\xff\x07"), /* token id INT32_MAX */
    LIT(ID "\x1a\x0b\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"), /* -1 */
    LIT(ID "\x1a\x00"),                        /* no token ids */
    LIT(ID),                                   /* no input */
    LIT(ID_HI "\x22\x05\x0d\x00\x00\xc0\x7f"), /* temperature NaN */
    LIT(ID_HI "\x22\x05\x0d\x00\x00\x80\xbf"), /* temperature -1 */
    LIT(ID_HI "\x22\x05\x0d\x00\x00\x80\x7f"), /* temperature inf */
    LIT(ID_HI "\x22\x05\x1d\x00\x00\x00\x40"), /* top_p 2 */
    LIT(ID_HI "\x22\x05\x25\x00\x00\x80\xbf"), /* repetition_penalty -1 */
    LIT(ID_HI "\x22\x0b\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"), /* k */
    LIT(ID_HI "\x28\xff\xff\xff\xff\x0f"), /* max_tokens 2^32 - 1 */
    LIT(ID_HI "\x38\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"), /* deadline */
    LIT(ID_HI "\x38\x81\xb8\x99\x29"), /* deadline 24 h + 1 ms */
    LIT(ID_HI "\x32\x00"),             /* an empty stop */
    LIT(ID_HI "\x32\x03s\0t"),         /* NUL in a stop */
    LIT(ID "\x4a\x00"),                /* a chat without messages */
    LIT(ID "\x4a\x0b\x0a\x09\x0a\x04tool\x12\x01x"),        /* role "tool" */
    LIT(ID "\x4a\x0c\x0a\x0a\x0a\x04user\x12\x02\xc3\x28"), /* bad UTF-8 */
    LIT(ID "\x4a\x0d\x0a\x0b\x0a\x04user\x12\x03"
           "a\0b"), /* NUL in a chat message */
    LIT(ID_HI),     /* + 10000 stops, in main */
};

/* What a shard and the coordinator send each other (proto/control.proto),
 * as slm_wire_pack_control packs them. */
static const buf control[] = {
    LIT("\x0a\x04\x28\x01\x48\x01"), /* Hello{layer_count 1, vocab_count 1} */
    LIT("\x12\x04\x08\x07\x10\x01"), /* Step{seq 7, token 1} */
    LIT("\x1a\x0a\x08\x07\x10\x01\x1a\x04\x00\x00\x80\x3f"), /* StepResult */
    LIT("\x22\x04\x08\x07\x10\x01"), /* Heartbeat{seq 7, shard 1} */
    LIT("\x2a\x05\x0a\x03"
        "bye"), /* Shutdown{reason "bye"} */
};

int main(int argc, char **argv)
{
    if ((argc != 2 && argc != 4) || argv[1][0] == '-') {
        fprintf(stderr, "usage: client_garbage ENDPOINT [SERVER_KEY_FILE "
                        "CLIENT_SECRET_KEY_FILE]\n");
        return 2;
    }
    endpoint = argv[1];
    if (argc == 4) {
        if (slm_zkeys_load_public(argv[2], server_key) != SLM_OK ||
            slm_zkeys_load_secret(argv[3], my_public, my_secret) != SLM_OK) {
            fprintf(stderr, "client_garbage: %s\n", slm_error_message());
            return 2;
        }
        curve = true;
    }
    ctx = zmq_ctx_new();
    void *s = dealer();
    buf b = {0};

    group("empty frame");
    garbage(s, &b);

    group("random bytes");
    static const size_t lens[] = {1, 2, 3, 5, 8, 16, 64, 255, 1000, 65536};
    for (int i = 0; i < 40; i++) {
        b.n = 0;
        for (size_t k = 0; k < lens[i % 10]; k++) {
            uint8_t c = (uint8_t)slm_test_rand_u64(&rng);
            put(&b, &c, 1);
        }
        if (i & 1) /* starts like ClientMessage.generate, to get further */
            b.p[0] = 0x0a;
        garbage(s, &b);
    }

    group("truncations");
    for (size_t n = 0; n < valid.n; n++)
        garbage(s, &(buf){valid.p, n, 0});

    group("mutations");
    const buf bases[] = {valid, cancel, health, LIT("\x22\x02\x08\x01")};
    for (int i = 0; i < 400; i++) {
        const buf *base = &bases[i % 4];
        b.n = 0;
        put(&b, base->p, base->n);
        uint64_t r = slm_test_rand_u64(&rng);
        size_t at = (r >> 8) % (r & 3 ? (b.n < 24 ? b.n : 24) : b.n);
        b.p[at] = (uint8_t)(b.p[at] ^ (1 + (r >> 40) % 255));
        garbage(s, &b);
    }

    group("wrong wire types");
    static const buf wt[] = {
        LIT("\x08\x01"),                 /* generate as varint */
        LIT("\x1d\0\0\0\0"),             /* health as fixed32 */
        LIT("\x21\0\0\0\0\0\0\0\0"),     /* info as fixed64 */
        LIT("\x13\x14"),                 /* cancel as a group */
        LIT("\x0e\x00"),                 /* wire type 6 */
        LIT("\x0f"),                     /* wire type 7 */
        LIT("\x0a\x04\x08\x05\x10\x01"), /* request_id, prompt as varints */
        LIT("\x0a\x0c\x0a\x01x\x11\0\0\0\0\0\0\0\0"), /* prompt: fixed64 */
        LIT("\x0a\x06\x0a\x01x\x2a\x01x"),            /* max_tokens as bytes */
        LIT("\x0a\x05\x0a\x01x\x20\x01"),             /* sampling as varint */
        LIT("\x0a\x07\x0a\x01x\x22\x02\x08\x01"),     /* temperature: varint */
        LIT("\x0a\x08\x0a\x01x\x3d\0\0\0\0"),         /* deadline as fixed32 */
        LIT("\x12\x05\x0d\0\0\0\0"),                  /* cancel id: fixed32 */
    };
    for (size_t i = 0; i < sizeof wt / sizeof wt[0]; i++)
        garbage(s, &wt[i]);

    group("unknown fields");
    static const buf unk[] = {
        LIT("\x1a\x00\xa0\x06\x05"),         /* Health + field 100 */
        LIT("\x1a\x00\x7a\x03\xff\x00\xff"), /* Health + field 15 */
        /* Info{7: "x", 2^29 - 1: fixed32} */
        LIT("\x22\x0c\x3a\x01x\xfd\xff\xff\xff\x0f\x01\x02\x03\x04"),
        /* Field 0 with a two-byte tag: protobuf-c parses it, we must not. */
        LIT("\x1a\x00\x80\x00\x01"),
    };
    run_case(s, &unk[0], 1, X_HEALTH);
    run_case(s, &unk[1], 1, X_HEALTH);
    run_case(s, &unk[2], 1, X_INFO);
    run_case(s, &unk[3], 1, X_MAYBE_I);
    /* generate{request_id, token_ids{1}, max_tokens 1, 1001: 7, 2002: "x"},
     * 127: 1: a tiny generation */
    static const buf gen =
        LIT("\x0a\x1d\x0a\x0e"
            "unknown-fields"
            "\x1a\x02\x08\x01\x28\x01\xc8\x3e\x07\x92\x7d\x01"
            "x\xf8\x07\x01");
    run_case(s, &gen, 1, X_FINAL);

    group("control-plane messages");
    for (size_t i = 0; i < sizeof control / sizeof control[0]; i++)
        garbage(s, &control[i]);

    group("multi-frame messages");
    /* Each frame alone would be valid: the server must not answer them. */
    run_case(s, (buf[]){health, health}, 2, X_MAYBE_I);
    run_case(s, (buf[]){health, health, health}, 3, X_MAYBE_I);
    run_case(s, (buf[]){{0}, health}, 2, X_MAYBE_I);
    run_case(s, (buf[]){valid, valid, {0}}, 3, X_MAYBE);

    group("parses but invalid");
    { /* a conversation of 257 messages, one more than the server takes */
        buf msg = {0}, list = {0};
        put_len(&msg, 1, "user", 4);
        put_len(&msg, 2, "x", 1);
        for (int k = 0; k < 257; k++)
            put_len(&list, 1, msg.p, msg.n);
        b.n = 0;
        put(&b, ID, sizeof ID - 1);
        put_len(&b, 9, list.p, list.n);
        wrap(&b, 1);
        run_case(s, &b, 1, X_INVALID);
        free(msg.p);
        free(list.p);
    }
    const size_t n_semantic = sizeof semantic / sizeof semantic[0];
    for (size_t i = 0; i < n_semantic; i++) {
        b.n = 0;
        put(&b, semantic[i].p, semantic[i].n);
        for (int k = 0; k < 10000 && i == n_semantic - 1; k++)
            put_len(&b, 6, "x", 1);
        wrap(&b, 1);
        const slm_client_limits lim = slm_client_default_limits(512, 256);
        slm_client_msg *m = NULL;
        if (slm_client_unpack_request(b.p, b.n, &lim, &m) == SLM_OK) {
            fprintf(stderr, "client_garbage: semantic case %zu is valid\n", i);
            return 2; /* our bug */
        }
        run_case(s, &b, 1, X_INVALID);
    }

    group("cancel of an unknown id");
    run_case(s, &cancel, 1, X_MAYBE);

    group("oversized frame");
    void *big = dealer();
    b.n = 0; /* HealthRequests, 1 MiB + 1 bytes of them */
    while (b.n < SLM_CLIENT_MAX_MESSAGE_BYTES + 1)
        put(&b, "\x1a\x00", 2 - (b.n == SLM_CLIENT_MAX_MESSAGE_BYTES));
    send_frames(big, &b, 1);
    grp.sent++;
    slm_server_msg *r = recv_reply(big, QUIET_MS);
    grp.errors += r != NULL;
    grp.silent += r == NULL;
    if (r && r->body_case != SHARDLM__CLIENT__SERVER_MESSAGE__BODY_ERROR)
        violation("got a %s", kind[r->body_case]);
    slm_client_free_response(&r);
    zmq_close(big);

    group("still serving");
    zmq_close(s);
    s = dealer();
    run_case(s, &health, 1, X_HEALTH);
    run_case(s, &info, 1, X_INFO);

    group(NULL);
    zmq_close(s);
    zmq_ctx_term(ctx);
    free(b.p);
    printf("client_garbage: all passed\n");
    return 0;
}
