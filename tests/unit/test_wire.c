/*
 * tests/unit/test_wire.c - proto/wire.c: round trips of every control message,
 * each validation rule, the size limits, and hostile bytes (truncations,
 * random buffers, single-byte mutations, a lying length prefix).
 *
 * protobuf-c allocates with malloc, which cmocka's test allocator does not
 * see: leaks are caught by running this under the ASan build (LSan).
 */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"
#include "tests/testutil.h"

#define VOCAB 512

static const slm_wire_limits LIM = {4, VOCAB, 256};

typedef Shardlm__Control__Hello hello_t;
typedef Shardlm__Control__Step step_t;
typedef Shardlm__Control__StepResult result_t;
typedef Shardlm__Control__Heartbeat heartbeat_t;
typedef Shardlm__Control__Shutdown shutdown_t;

/* ------------------------------------------------------------------------ */
/* Building messages                                                         */

static hello_t good_hello(void)
{
    hello_t h = SHARDLM__CONTROL__HELLO__INIT;
    h.shard = 3;
    h.stage = 1;
    h.tp_rank = 1;
    h.layer_begin = 4;
    h.layer_count = 4;
    h.head_begin = 8;
    h.head_count = 8;
    h.vocab_begin = 256;
    h.vocab_count = 256;
    h.weight_bytes = 123456789012ULL;
    return h;
}

static step_t good_step(void)
{
    step_t s = SHARDLM__CONTROL__STEP__INIT;
    s.seq = 7;
    s.token = 42;
    s.pos = 5;
    return s;
}

static float g_logits[VOCAB];

static result_t good_result(void)
{
    result_t r = SHARDLM__CONTROL__STEP_RESULT__INIT;
    for (int i = 0; i < VOCAB; i++)
        g_logits[i] = (float)i * 0.25f - 17.0f;
    r.seq = 9;
    r.shard = 2;
    r.logits = g_logits;
    r.n_logits = VOCAB;
    r.error = "stage 1 ran out of memory";
    return r;
}

static heartbeat_t good_heartbeat(void)
{
    heartbeat_t h = SHARDLM__CONTROL__HEARTBEAT__INIT;
    h.seq = 11;
    h.shard = 1;
    return h;
}

static shutdown_t good_shutdown(void)
{
    shutdown_t s = SHARDLM__CONTROL__SHUTDOWN__INIT;
    s.reason = "done";
    return s;
}

static slm_control_msg wrap(int body_case, void *body)
{
    slm_control_msg m = SHARDLM__CONTROL__CONTROL_MESSAGE__INIT;
    m.body_case = (Shardlm__Control__ControlMessage__BodyCase)body_case;
    m.hello = body; /* every member of the union is a message pointer */
    return m;
}

static void pack(const slm_control_msg *m, uint8_t **buf, size_t *len)
{
    assert_int_equal(slm_wire_pack_control(m, buf, len), SLM_OK);
    assert_non_null(*buf);
}

/* Packs m, unpacks it with LIM and expects `want`; on failure, also expects
 * `field` in the message. Returns the unpacked message (or NULL). */
static slm_control_msg *round_trip(const slm_control_msg *m, slm_status want,
                                   const char *field)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    pack(m, &buf, &len);
    slm_control_msg *out = (slm_control_msg *)0x1;
    slm_error_clear();
    slm_status rc = slm_wire_unpack_control(buf, len, &LIM, &out);
    free(buf);
    if (rc != want)
        fail_msg("unpack: got %d (%s), want %d", rc, slm_error_message(), want);
    if (rc != SLM_OK) {
        assert_null(out);
        if (!strstr(slm_error_message(), field))
            fail_msg("message \"%s\" does not name %s", slm_error_message(),
                     field);
        return NULL;
    }
    assert_non_null(out);
    return out;
}

static void expect_rejected(int body_case, void *body, const char *field)
{
    slm_control_msg m = wrap(body_case, body);
    round_trip(&m, SLM_ERR_FORMAT, field);
}

/* Checks, independently of wire.c, what an OK from unpack promises. */
static void assert_valid(const slm_control_msg *m, const slm_wire_limits *lim)
{
    switch (m->body_case) {
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HELLO: {
        const hello_t *h = m->hello;
        assert_true(h->shard < lim->n_shards);
        assert_true(h->stage <= h->shard && h->tp_rank <= h->shard);
        assert_true(h->layer_count > 0 && h->head_count > 0);
        assert_true((uint64_t)h->layer_begin + h->layer_count <= 1024);
        assert_true((uint64_t)h->head_begin + h->head_count <= 1024);
        assert_true((uint64_t)h->vocab_begin + h->vocab_count <=
                    lim->vocab_size);
        break;
    }
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP:
        assert_true(m->step->seq >= 1);
        assert_true(m->step->token >= 0 &&
                    (uint32_t)m->step->token < lim->vocab_size);
        assert_true(m->step->pos >= 0 && m->step->pos < lim->seq_len);
        break;
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT:
        assert_true(m->result->shard < lim->n_shards);
        assert_true(m->result->n_logits == 0 ||
                    m->result->n_logits == lim->vocab_size);
        for (size_t i = 0; i < m->result->n_logits; i++)
            assert_true(isfinite(m->result->logits[i]));
        assert_true(strlen(m->result->error) <= 1024);
        break;
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HEARTBEAT:
        assert_true(m->heartbeat->shard < lim->n_shards);
        break;
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_SHUTDOWN:
        assert_true(strlen(m->shutdown->reason) <= 1024);
        break;
    default:
        fail_msg("unpack accepted body_case %d", (int)m->body_case);
    }
}

/* Unpacks hostile bytes: any status, but never a crash, and an OK message
 * must be valid; an error leaves *out NULL and says why. */
static void unpack_any(const uint8_t *buf, size_t len)
{
    slm_control_msg *m = (slm_control_msg *)0x1;
    slm_status rc = slm_wire_unpack_control(buf, len, &LIM, &m);
    if (rc == SLM_OK) {
        assert_non_null(m);
        assert_valid(m, &LIM);
        slm_wire_free_control(&m);
        assert_null(m);
    } else {
        assert_int_equal(rc, SLM_ERR_FORMAT);
        assert_null(m);
        assert_true(slm_error_message()[0] != '\0');
    }
}

/* The packed form of each good message; the caller frees each buffer. */
#define N_GOOD 6
static void pack_all_good(uint8_t *bufs[N_GOOD], size_t lens[N_GOOD])
{
    hello_t h = good_hello();
    step_t s = good_step();
    result_t r = good_result();
    result_t r0 = SHARDLM__CONTROL__STEP_RESULT__INIT; /* an ack */
    heartbeat_t hb = good_heartbeat();
    shutdown_t sd = good_shutdown();
    const slm_control_msg ms[N_GOOD] = {
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HELLO, &h),
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP, &s),
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT, &r),
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT, &r0),
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HEARTBEAT, &hb),
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_SHUTDOWN, &sd),
    };
    for (int i = 0; i < N_GOOD; i++)
        pack(&ms[i], &bufs[i], &lens[i]);
}

/* ------------------------------------------------------------------------ */
/* Round trips                                                               */

static void test_round_trip_hello(void **state)
{
    (void)state;
    hello_t h = good_hello();
    slm_control_msg m = wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HELLO, &h);
    slm_control_msg *out = round_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->body_case,
                     SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HELLO);
    const hello_t *g = out->hello;
    assert_int_equal(g->shard, 3);
    assert_int_equal(g->stage, 1);
    assert_int_equal(g->tp_rank, 1);
    assert_int_equal(g->layer_begin, 4);
    assert_int_equal(g->layer_count, 4);
    assert_int_equal(g->head_begin, 8);
    assert_int_equal(g->head_count, 8);
    assert_int_equal(g->vocab_begin, 256);
    assert_int_equal(g->vocab_count, 256);
    assert_true(g->weight_bytes == 123456789012ULL);
    slm_wire_free_control(&out);
    assert_null(out);
}

static void test_round_trip_step(void **state)
{
    (void)state;
    step_t s = good_step();
    slm_control_msg m = wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP, &s);
    slm_control_msg *out = round_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->body_case,
                     SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP);
    assert_int_equal(out->step->seq, 7);
    assert_int_equal(out->step->token, 42);
    assert_int_equal(out->step->pos, 5);
    slm_wire_free_control(&out);

    /* The edges of each range are accepted. */
    s.seq = 1;
    s.token = VOCAB - 1;
    s.pos = 255;
    out = round_trip(&m, SLM_OK, NULL);
    slm_wire_free_control(&out);
    s.seq = UINT64_MAX;
    s.token = 0;
    s.pos = 0;
    out = round_trip(&m, SLM_OK, NULL);
    slm_wire_free_control(&out);
}

static void test_round_trip_result(void **state)
{
    (void)state;
    result_t r = good_result();
    slm_control_msg m =
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT, &r);
    slm_control_msg *out = round_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->body_case,
                     SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT);
    assert_int_equal(out->result->seq, 9);
    assert_int_equal(out->result->shard, 2);
    assert_int_equal(out->result->n_logits, VOCAB);
    assert_memory_equal(out->result->logits, g_logits, sizeof g_logits);
    assert_string_equal(out->result->error, "stage 1 ran out of memory");
    slm_wire_free_control(&out);

    /* An acknowledgement: no logits, no error. */
    result_t ack = SHARDLM__CONTROL__STEP_RESULT__INIT;
    ack.seq = 1;
    m = wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT, &ack);
    out = round_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->result->n_logits, 0);
    assert_string_equal(out->result->error, "");
    slm_wire_free_control(&out);

    /* An error of exactly the limit. */
    char err[1025];
    memset(err, 'e', 1024);
    err[1024] = '\0';
    ack.error = err;
    out = round_trip(&m, SLM_OK, NULL);
    assert_int_equal(strlen(out->result->error), 1024);
    slm_wire_free_control(&out);
}

static void test_round_trip_heartbeat_shutdown(void **state)
{
    (void)state;
    heartbeat_t hb = good_heartbeat();
    slm_control_msg m =
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HEARTBEAT, &hb);
    slm_control_msg *out = round_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->body_case,
                     SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HEARTBEAT);
    assert_int_equal(out->heartbeat->seq, 11);
    assert_int_equal(out->heartbeat->shard, 1);
    slm_wire_free_control(&out);

    shutdown_t sd = good_shutdown();
    m = wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_SHUTDOWN, &sd);
    out = round_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->body_case,
                     SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_SHUTDOWN);
    assert_string_equal(out->shutdown->reason, "done");
    slm_wire_free_control(&out);

    /* An empty Shutdown is still a body that is set. */
    shutdown_t empty = SHARDLM__CONTROL__SHUTDOWN__INIT;
    m = wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_SHUTDOWN, &empty);
    out = round_trip(&m, SLM_OK, NULL);
    assert_string_equal(out->shutdown->reason, "");
    slm_wire_free_control(&out);

    /* free accepts NULL and a NULL message. */
    slm_wire_free_control(NULL);
    slm_wire_free_control(&out);
}

/* ------------------------------------------------------------------------ */
/* Each validation rule                                                      */

static void test_reject_step(void **state)
{
    (void)state;
    const int STEP = SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP;
    step_t s = good_step();
    s.token = VOCAB;
    expect_rejected(STEP, &s, "token = 512");
    s.token = -1;
    expect_rejected(STEP, &s, "token = -1");
    s = good_step();
    s.pos = -1;
    expect_rejected(STEP, &s, "pos = -1");
    s.pos = 256;
    expect_rejected(STEP, &s, "pos = 256");
    s = good_step();
    s.seq = 0;
    expect_rejected(STEP, &s, "seq = 0");
}

static void test_reject_result(void **state)
{
    (void)state;
    const int RESULT = SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT;
    result_t r = good_result();
    r.n_logits = 3;
    expect_rejected(RESULT, &r, "logits has 3 values");
    r.n_logits = VOCAB + 1;
    float big[VOCAB + 1] = {0};
    r.logits = big;
    expect_rejected(RESULT, &r, "logits has 513 values");

    r = good_result();
    g_logits[100] = NAN;
    expect_rejected(RESULT, &r, "logits[100]");
    r = good_result();
    g_logits[VOCAB - 1] = -INFINITY;
    expect_rejected(RESULT, &r, "logits[511]");

    r = good_result();
    r.shard = 4;
    expect_rejected(RESULT, &r, "StepResult.shard = 4");

    char err[1026];
    memset(err, 'x', 1025);
    err[1025] = '\0';
    r = good_result();
    r.error = err;
    expect_rejected(RESULT, &r, "StepResult.error is 1025 bytes");
}

static void test_reject_shard_and_shutdown(void **state)
{
    (void)state;
    heartbeat_t hb = good_heartbeat();
    hb.shard = 4;
    expect_rejected(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HEARTBEAT, &hb,
                    "Heartbeat.shard = 4");
    hb.shard = UINT32_MAX;
    expect_rejected(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HEARTBEAT, &hb,
                    "Heartbeat.shard = 4294967295");

    static char reason[4096];
    memset(reason, 'r', sizeof reason - 1);
    shutdown_t sd = SHARDLM__CONTROL__SHUTDOWN__INIT;
    sd.reason = reason;
    expect_rejected(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_SHUTDOWN, &sd,
                    "Shutdown.reason is 4095 bytes");
}

static void test_reject_hello(void **state)
{
    (void)state;
    const int HELLO = SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HELLO;
    hello_t h = good_hello();
    h.shard = 4;
    expect_rejected(HELLO, &h, "Hello.shard = 4");
    h = good_hello();
    h.stage = 4;
    expect_rejected(HELLO, &h, "stage = 4");
    h = good_hello();
    h.tp_rank = 7;
    expect_rejected(HELLO, &h, "tp_rank = 7");

    h = good_hello();
    h.vocab_count = 257; /* 256 + 257 > 512 */
    expect_rejected(HELLO, &h, "vocab_count = 257");
    h.vocab_begin = UINT32_MAX; /* would wrap in 32 bits */
    h.vocab_count = 2;
    expect_rejected(HELLO, &h, "vocab_begin = 4294967295");
    h = good_hello();
    h.vocab_count = 0; /* an empty vocabulary slice is allowed */
    slm_control_msg m = wrap(HELLO, &h);
    slm_control_msg *out = round_trip(&m, SLM_OK, NULL);
    slm_wire_free_control(&out);

    h = good_hello();
    h.layer_count = 0;
    expect_rejected(HELLO, &h, "layer_count = 0");
    h.layer_count = UINT32_MAX;
    expect_rejected(HELLO, &h, "layer_count = 4294967295");
    h = good_hello();
    h.head_count = 0;
    expect_rejected(HELLO, &h, "head_count = 0");
    h.head_begin = 1020;
    h.head_count = 5;
    expect_rejected(HELLO, &h, "head_begin = 1020");
}

static void test_reject_body_not_set(void **state)
{
    (void)state;
    slm_control_msg m = SHARDLM__CONTROL__CONTROL_MESSAGE__INIT;
    round_trip(&m, SLM_ERR_FORMAT, "body");

    /* Zero bytes is the same empty message. */
    slm_control_msg *out = (slm_control_msg *)0x1;
    assert_int_equal(slm_wire_unpack_control(NULL, 0, &LIM, &out),
                     SLM_ERR_FORMAT);
    assert_null(out);
    assert_non_null(strstr(slm_error_message(), "body"));
}

/* ------------------------------------------------------------------------ */
/* Size limits and lying lengths                                             */

static void test_size_limits(void **state)
{
    (void)state;
    /* Refused before a byte is read: buf is far shorter than len, and ASan
     * would see any read past its end. */
    uint8_t small[16] = {0};
    slm_control_msg *out = (slm_control_msg *)0x1;
    assert_int_equal(slm_wire_unpack_control(
                         small, SLM_WIRE_MAX_CONTROL_BYTES + 1, &LIM, &out),
                     SLM_ERR_RANGE);
    assert_null(out);
    assert_int_equal(slm_wire_unpack_control(NULL, 1, &LIM, &out),
                     SLM_ERR_INVALID);
    assert_null(out);

    /* pack refuses a message over the limit: 2M logits are 8 MiB. */
    const size_t n = (size_t)2 << 20;
    float *big = calloc(n, sizeof *big);
    assert_non_null(big);
    result_t r = SHARDLM__CONTROL__STEP_RESULT__INIT;
    r.logits = big;
    r.n_logits = n;
    slm_control_msg m =
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT, &r);
    uint8_t *buf = (uint8_t *)0x1;
    size_t len = 1;
    assert_int_equal(slm_wire_pack_control(&m, &buf, &len), SLM_ERR_RANGE);
    assert_null(buf);
    assert_non_null(strstr(slm_error_message(), "limit"));
    free(big);
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static void test_lying_lengths(void **state)
{
    (void)state;
    /* ControlMessage.result (field 3, LEN) holding StepResult.logits (field
     * 3, packed) whose prefix claims ~4 GiB (a billion floats) of data that
     * is not there. */
    uint8_t inner[32], msg[64];
    size_t ni = 0;
    inner[ni++] = 0x1a;
    ni += put_varint(inner + ni, 0xfffffff0u);
    memset(inner + ni, 0, 8);
    ni += 8;
    size_t n = 0;
    msg[n++] = 0x1a;
    n += put_varint(msg + n, ni);
    memcpy(msg + n, inner, ni);
    n += ni;
    slm_control_msg *out = (slm_control_msg *)0x1;
    assert_int_equal(slm_wire_unpack_control(msg, n, &LIM, &out),
                     SLM_ERR_FORMAT);
    assert_null(out);
    assert_non_null(strstr(slm_error_message(), "malformed"));

    /* The outer length lies too. */
    n = 0;
    msg[n++] = 0x1a;
    n += put_varint(msg + n, UINT64_MAX >> 1);
    memcpy(msg + n, inner, ni);
    n += ni;
    assert_int_equal(slm_wire_unpack_control(msg, n, &LIM, &out),
                     SLM_ERR_FORMAT);
    assert_null(out);
}

static void test_field_number_zero(void **state)
{
    (void)state;
    /* Heartbeat holding a varint field whose tag, 0, is spelled in two
     * bytes. protobuf-c keeps it as an unknown field and would pack it into
     * bytes that it then refuses; found by fuzz_wire. */
    static const uint8_t msg[] = {0x22, 0x03, 0x80, 0x00, 0x00};
    slm_control_msg *out = (slm_control_msg *)0x1;
    assert_int_equal(slm_wire_unpack_control(msg, sizeof msg, &LIM, &out),
                     SLM_ERR_FORMAT);
    assert_null(out);
    assert_non_null(strstr(slm_error_message(), "Heartbeat"));
    assert_non_null(strstr(slm_error_message(), "numbered 0"));

    /* An unknown field with a real number is ignored. */
    static const uint8_t ok[] = {0x22, 0x04, 0x10, 0x01, 0x78, 0x05};
    assert_int_equal(slm_wire_unpack_control(ok, sizeof ok, &LIM, &out),
                     SLM_OK);
    assert_int_equal(out->heartbeat->shard, 1);
    slm_wire_free_control(&out);
}

static void test_allocation_budget(void **state)
{
    (void)state;
    /* 100000 empty Heartbeats, the last of which wins the oneof: 200 KB that
     * protobuf-c would turn into megabytes of bookkeeping. Refused by the
     * unpack budget, not parsed. */
    const size_t reps = 100000;
    uint8_t *msg = malloc(2 * reps);
    assert_non_null(msg);
    for (size_t i = 0; i < reps; i++) {
        msg[2 * i] = 0x22; /* field 4, LEN */
        msg[2 * i + 1] = 0x00;
    }
    slm_control_msg *out = (slm_control_msg *)0x1;
    assert_int_equal(slm_wire_unpack_control(msg, 2 * reps, &LIM, &out),
                     SLM_ERR_FORMAT);
    assert_null(out);
    assert_non_null(strstr(slm_error_message(), "memory"));

    /* A handful of them is an ordinary (if odd) message; the budget is per
     * call, so it is fresh again. */
    assert_int_equal(slm_wire_unpack_control(msg, 8, &LIM, &out), SLM_OK);
    assert_int_equal(out->body_case,
                     SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HEARTBEAT);
    slm_wire_free_control(&out);
    free(msg);
}

/* ------------------------------------------------------------------------ */
/* Hostile bytes                                                             */

/* Every truncation, 5000 random buffers and 5000 single-byte mutations of
 * the valid messages: never a crash, and whatever is accepted re-validates
 * (unpack_any). */
static void test_hostile_bytes(void **state)
{
    (void)state;
    uint8_t *bufs[N_GOOD];
    size_t lens[N_GOOD];
    pack_all_good(bufs, lens);
    slm_test_hostile_bytes(bufs, lens, N_GOOD, 5000, 5000, 0x5eed, unpack_any);
    for (int i = 0; i < N_GOOD; i++)
        free(bufs[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_hello),
        cmocka_unit_test(test_round_trip_step),
        cmocka_unit_test(test_round_trip_result),
        cmocka_unit_test(test_round_trip_heartbeat_shutdown),
        cmocka_unit_test(test_reject_step),
        cmocka_unit_test(test_reject_result),
        cmocka_unit_test(test_reject_shard_and_shutdown),
        cmocka_unit_test(test_reject_hello),
        cmocka_unit_test(test_reject_body_not_set),
        cmocka_unit_test(test_size_limits),
        cmocka_unit_test(test_lying_lengths),
        cmocka_unit_test(test_field_number_zero),
        cmocka_unit_test(test_allocation_budget),
        cmocka_unit_test(test_hostile_bytes),
    };
    return cmocka_run_group_tests_name("wire", tests, NULL, NULL);
}
