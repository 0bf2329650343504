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

#define VOCAB      512
#define SEQ_LEN    256
#define MAX_SEQS   4
#define MAX_TOKENS 16
#define N_BLOCKS   64
#define BLOCK_SIZE 24
/* BLOCK_SIZE does not divide SEQ_LEN, so a whole context is ceil(256 / 24)
 * = 11 blocks (10 would not cover positions 240..255): the tests see the
 * rounding. */
#define CTX_BLOCKS 11

static const slm_wire_limits LIM = {
    .n_shards = 4,
    .vocab_size = VOCAB,
    .seq_len = SEQ_LEN,
    .max_seqs = MAX_SEQS,
    .max_tokens = MAX_TOKENS,
    .n_blocks = N_BLOCKS,
    .block_size = BLOCK_SIZE,
};

typedef Shardlm__Control__Hello hello_t;
typedef Shardlm__Control__Step step_t;
typedef Shardlm__Control__StepSequence seq_t;
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

/* A Step and the storage it points into, with room for one more of
 * everything than the limits allow. It points into itself: fill it in
 * place with good_step(), never copy it. */
typedef struct {
    step_t step;
    seq_t seqs[MAX_SEQS + 1];
    seq_t *ptrs[MAX_SEQS + 1];
    int32_t tokens[MAX_SEQS + 1][MAX_TOKENS + 1];
    uint32_t blocks[MAX_SEQS + 1][CTX_BLOCKS + 1];
    uint32_t free_blocks[N_BLOCKS + 1];
} step_buf;

/* Makes b->seqs[i] feed n_tokens tokens from position pos with n_blocks
 * blocks; the step's n_seqs is left alone. Tokens are in range, and each
 * sequence's blocks are distinct from every other's: (MAX_SEQS + 1) *
 * (CTX_BLOCKS + 1) = 60 ids, all below N_BLOCKS. */
static void set_seq(step_buf *b, size_t i, int32_t pos, size_t n_tokens,
                    size_t n_blocks)
{
    seq_t *q = &b->seqs[i];
    q->pos = pos;
    q->n_tokens = n_tokens;
    q->n_blocks = n_blocks;
    for (size_t j = 0; j < n_tokens; j++)
        b->tokens[i][j] = (int32_t)((i * 131 + j * 17 + 1) % VOCAB);
    for (size_t j = 0; j < n_blocks; j++)
        b->blocks[i][j] = (uint32_t)(i * (CTX_BLOCKS + 1) + j);
}

/* Step 7: a prompt chunk of 3 tokens at positions 0..2 (block 0), then a
 * decode of one token at position 30 (its second block) that wants logits;
 * blocks 62 and 63 of ended sequences are freed. */
static void good_step(step_buf *b)
{
    memset(b, 0, sizeof *b);
    const step_t s = SHARDLM__CONTROL__STEP__INIT;
    b->step = s;
    for (size_t i = 0; i < MAX_SEQS + 1; i++) {
        const seq_t q = SHARDLM__CONTROL__STEP_SEQUENCE__INIT;
        b->seqs[i] = q;
        b->seqs[i].tokens = b->tokens[i];
        b->seqs[i].blocks = b->blocks[i];
        b->ptrs[i] = &b->seqs[i];
    }
    b->step.seq = 7;
    b->step.seqs = b->ptrs;
    b->step.n_seqs = 2;
    set_seq(b, 0, 0, 3, 1);
    b->tokens[0][0] = 42;
    set_seq(b, 1, 30, 1, 2);
    b->seqs[1].want_logits = 1;
    b->step.free_blocks = b->free_blocks;
    b->step.n_free_blocks = 2;
    b->free_blocks[0] = 62;
    b->free_blocks[1] = 63;
}

/* Room for one row more than the limit. */
static float g_logits[(MAX_SEQS + 1) * VOCAB];

/* One row of logits (n_logits may be raised to MAX_SEQS + 1 rows). */
static result_t good_result(void)
{
    result_t r = SHARDLM__CONTROL__STEP_RESULT__INIT;
    for (int i = 0; i < (MAX_SEQS + 1) * VOCAB; i++)
        g_logits[i] = (float)(i % 1000) * 0.25f - 17.0f;
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

static void expect_accepted(int body_case, void *body)
{
    slm_control_msg m = wrap(body_case, body);
    slm_control_msg *out = round_trip(&m, SLM_OK, NULL);
    slm_wire_free_control(&out);
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
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP: {
        const step_t *s = m->step;
        assert_true(s->seq >= 1);
        assert_true(s->n_seqs <= lim->max_seqs);
        assert_true(s->n_free_blocks <= lim->n_blocks);
        for (size_t i = 0; i < s->n_free_blocks; i++)
            assert_true(s->free_blocks[i] < lim->n_blocks);
        /* The limits of these tests have block_size > 0. */
        const size_t ctx_blocks =
            ((size_t)lim->seq_len + lim->block_size - 1) / lim->block_size;
        size_t tokens = 0;
        for (size_t i = 0; i < s->n_seqs; i++) {
            const seq_t *q = s->seqs[i];
            assert_true(q->n_tokens >= 1);
            assert_true(q->pos >= 0 && q->pos < lim->seq_len);
            assert_true((int64_t)q->pos + (int64_t)q->n_tokens <= lim->seq_len);
            tokens += q->n_tokens; /* each at most seq_len, just checked */
            for (size_t j = 0; j < q->n_tokens; j++)
                assert_true(q->tokens[j] >= 0 &&
                            (uint32_t)q->tokens[j] < lim->vocab_size);
            assert_true(q->want_logits || !q->want_argmax);
            assert_true(q->n_blocks <= ctx_blocks);
            for (size_t j = 0; j < q->n_blocks; j++)
                assert_true(q->blocks[j] < lim->n_blocks);
        }
        assert_true(tokens <= lim->max_tokens);
        break;
    }
    case SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT:
        assert_true(m->result->shard < lim->n_shards);
        assert_true(m->result->n_logits % lim->vocab_size == 0);
        assert_true(m->result->n_logits / lim->vocab_size <= lim->max_seqs);
        for (size_t i = 0; i < m->result->n_logits; i++)
            assert_true(isfinite(m->result->logits[i]));
        assert_true(m->result->n_argmax <= lim->max_seqs);
        for (size_t i = 0; i < m->result->n_argmax; i++)
            assert_true(m->result->argmax[i] >= 0 &&
                        (uint32_t)m->result->argmax[i] < lim->vocab_size);
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

/* A step at every limit at once: MAX_SEQS sequences of MAX_TOKENS tokens in
 * all, one ending at the last position, one starting at position 0, one
 * fed at the last position, two of a whole context's blocks, tokens 0 and
 * VOCAB - 1, block N_BLOCKS - 1, and the largest step number. */
static void limits_step(step_buf *b)
{
    good_step(b);
    b->step.seq = UINT64_MAX;
    b->step.n_seqs = MAX_SEQS;
    set_seq(b, 0, SEQ_LEN - 13, 13, CTX_BLOCKS);
    b->tokens[0][0] = 0;
    b->tokens[0][12] = VOCAB - 1;
    set_seq(b, 1, 0, 1, 1);
    b->tokens[1][0] = VOCAB - 1;
    set_seq(b, 2, SEQ_LEN - 1, 1, CTX_BLOCKS);
    b->tokens[2][0] = 0;
    b->blocks[2][CTX_BLOCKS - 1] = N_BLOCKS - 1;
    set_seq(b, 3, 100, 1, 5);
    b->seqs[3].want_logits = 1;
    b->free_blocks[0] = 48; /* the ids set_seq gives a fifth sequence */
    b->free_blocks[1] = 59;
}

/* A step that runs nothing and frees the whole pool, ids N_BLOCKS - 1 down
 * to 0: the coordinator sends one when sequences end and none is ready. */
static void free_only_step(step_buf *b)
{
    good_step(b);
    b->step.n_seqs = 0;
    b->step.n_free_blocks = N_BLOCKS;
    for (uint32_t i = 0; i < N_BLOCKS; i++)
        b->free_blocks[i] = N_BLOCKS - 1 - i;
}

/* The packed form of each good message; the caller frees each buffer. */
#define N_GOOD 9
static void pack_all_good(uint8_t *bufs[N_GOOD], size_t lens[N_GOOD])
{
    hello_t h = good_hello();
    step_buf s, s_lim, s_free;
    good_step(&s);
    limits_step(&s_lim);
    free_only_step(&s_free);
    result_t r = good_result();
    result_t r2 = good_result();
    r2.n_logits = 2 * VOCAB;
    result_t r0 = SHARDLM__CONTROL__STEP_RESULT__INIT; /* an ack */
    heartbeat_t hb = good_heartbeat();
    shutdown_t sd = good_shutdown();
    const slm_control_msg ms[N_GOOD] = {
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HELLO, &h),
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP, &s.step),
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP, &s_lim.step),
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP, &s_free.step),
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT, &r),
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT, &r2),
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

/* Every field of got equals want's. */
static void assert_step_equal(const step_t *got, const step_t *want)
{
    assert_true(got->seq == want->seq);
    assert_int_equal(got->n_seqs, want->n_seqs);
    for (size_t i = 0; i < want->n_seqs; i++) {
        const seq_t *g = got->seqs[i], *w = want->seqs[i];
        assert_int_equal(g->pos, w->pos);
        assert_int_equal(g->want_logits, w->want_logits);
        assert_int_equal(g->want_argmax, w->want_argmax);
        assert_int_equal(g->n_tokens, w->n_tokens);
        assert_memory_equal(g->tokens, w->tokens,
                            w->n_tokens * sizeof *w->tokens);
        assert_int_equal(g->n_blocks, w->n_blocks);
        if (w->n_blocks > 0)
            assert_memory_equal(g->blocks, w->blocks,
                                w->n_blocks * sizeof *w->blocks);
    }
    assert_int_equal(got->n_free_blocks, want->n_free_blocks);
    if (want->n_free_blocks > 0)
        assert_memory_equal(got->free_blocks, want->free_blocks,
                            want->n_free_blocks * sizeof *want->free_blocks);
}

static void test_round_trip_step(void **state)
{
    (void)state;
    step_buf b;
    good_step(&b);
    slm_control_msg m =
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP, &b.step);
    slm_control_msg *out = round_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->body_case,
                     SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP);
    assert_int_equal(out->step->seq, 7);
    assert_int_equal(out->step->n_seqs, 2);
    assert_int_equal(out->step->seqs[0]->tokens[0], 42);
    assert_int_equal(out->step->seqs[1]->pos, 30);
    assert_true(out->step->seqs[1]->want_logits);
    assert_int_equal(out->step->free_blocks[1], 63);
    assert_step_equal(out->step, &b.step);
    slm_wire_free_control(&out);

    /* Every limit at once is accepted. */
    limits_step(&b);
    out = round_trip(&m, SLM_OK, NULL);
    assert_step_equal(out->step, &b.step);
    slm_wire_free_control(&out);

    /* A step of only frees, of the whole pool. */
    free_only_step(&b);
    out = round_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->step->n_seqs, 0);
    assert_step_equal(out->step, &b.step);
    slm_wire_free_control(&out);

    /* A step of nothing at all (a seq only) is well-formed too. */
    b.step.n_free_blocks = 0;
    out = round_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->step->n_seqs, 0);
    assert_int_equal(out->step->n_free_blocks, 0);
    slm_wire_free_control(&out);

    /* The smallest: step 1, one token at position 0 with no blocks. */
    good_step(&b);
    b.step.seq = 1;
    b.step.n_seqs = 1;
    b.step.n_free_blocks = 0;
    set_seq(&b, 0, 0, 1, 0);
    out = round_trip(&m, SLM_OK, NULL);
    assert_step_equal(out->step, &b.step);
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
    assert_memory_equal(out->result->logits, g_logits,
                        VOCAB * sizeof *g_logits);
    assert_string_equal(out->result->error, "stage 1 ran out of memory");
    slm_wire_free_control(&out);

    /* Rows for two sequences, then for exactly MAX_SEQS. */
    r.n_logits = 2 * VOCAB;
    out = round_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->result->n_logits, 2 * VOCAB);
    assert_memory_equal(out->result->logits, g_logits,
                        2 * VOCAB * sizeof *g_logits);
    slm_wire_free_control(&out);
    r.n_logits = MAX_SEQS * VOCAB;
    out = round_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->result->n_logits, MAX_SEQS * VOCAB);
    assert_memory_equal(out->result->logits, g_logits,
                        MAX_SEQS * VOCAB * sizeof *g_logits);
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

/* Step.seq, the counts of sequences, tokens and freed blocks, and the
 * freed ids. */
static void test_reject_step(void **state)
{
    (void)state;
    const int STEP = SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP;
    step_buf b;
    good_step(&b);
    b.step.seq = 0;
    expect_rejected(STEP, &b.step, "Step.seq = 0");

    /* One sequence more than MAX_SEQS, each of them valid. */
    good_step(&b);
    for (size_t i = 2; i < MAX_SEQS + 1; i++)
        set_seq(&b, i, 0, 1, 1);
    b.step.n_seqs = MAX_SEQS;
    expect_accepted(STEP, &b.step);
    b.step.n_seqs = MAX_SEQS + 1;
    expect_rejected(STEP, &b.step, "Step has 5 sequences");

    /* MAX_TOKENS in all is accepted, one more is not: across sequences,
     * and in one. */
    good_step(&b);
    b.step.n_seqs = MAX_SEQS;
    for (size_t i = 0; i < MAX_SEQS; i++)
        set_seq(&b, i, (int32_t)(i * 40), MAX_TOKENS / MAX_SEQS, 2);
    expect_accepted(STEP, &b.step);
    b.seqs[MAX_SEQS - 1].n_tokens++;
    b.tokens[MAX_SEQS - 1][MAX_TOKENS / MAX_SEQS] = 1;
    expect_rejected(STEP, &b.step, "Step has more than 16 tokens");
    good_step(&b);
    b.step.n_seqs = 1;
    set_seq(&b, 0, 0, MAX_TOKENS + 1, 1);
    expect_rejected(STEP, &b.step, "Step has more than 16 tokens");

    /* Freeing more blocks than the pool holds, even valid ids. */
    good_step(&b);
    for (uint32_t i = 0; i < N_BLOCKS + 1; i++)
        b.free_blocks[i] = i % N_BLOCKS;
    b.step.n_free_blocks = N_BLOCKS + 1;
    expect_rejected(STEP, &b.step, "Step frees 65 blocks");

    /* A freed id out of range, after a valid one. */
    good_step(&b);
    b.free_blocks[1] = N_BLOCKS;
    expect_rejected(STEP, &b.step, "Step.free_blocks[1] = 64");
    b.free_blocks[1] = UINT32_MAX;
    expect_rejected(STEP, &b.step, "Step.free_blocks[1] = 4294967295");
    b.free_blocks[1] = N_BLOCKS - 1;
    expect_accepted(STEP, &b.step);
}

/* Each sequence's tokens and positions; the bad one is a later sequence,
 * after one that is valid. */
static void test_reject_step_sequence(void **state)
{
    (void)state;
    const int STEP = SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP;
    step_buf b;
    good_step(&b);
    b.seqs[1].n_tokens = 0;
    expect_rejected(STEP, &b.step, "Step.seqs[1] feeds 0 tokens");

    good_step(&b);
    b.seqs[1].pos = -1;
    expect_rejected(STEP, &b.step,
                    "Step.seqs[1] feeds 1 tokens at position -1");
    b.seqs[1].pos = INT32_MIN;
    expect_rejected(STEP, &b.step, "at position -2147483648");
    b.seqs[1].pos = SEQ_LEN;
    expect_rejected(STEP, &b.step,
                    "Step.seqs[1] feeds 1 tokens at position 256");
    b.seqs[1].pos = INT32_MAX;
    expect_rejected(STEP, &b.step, "at position 2147483647");
    b.seqs[1].pos = SEQ_LEN - 1;
    b.seqs[1].n_blocks = CTX_BLOCKS;
    expect_accepted(STEP, &b.step);

    /* The tokens must fit in the context: 3 from position 253 do, 3 from
     * 254 would run past it. */
    set_seq(&b, 1, SEQ_LEN - 3, 3, CTX_BLOCKS);
    expect_accepted(STEP, &b.step);
    b.seqs[1].pos = SEQ_LEN - 2;
    expect_rejected(STEP, &b.step,
                    "Step.seqs[1] feeds 3 tokens at position 254");

    /* Tokens at both ends of the vocabulary, in the last place of a later
     * sequence. */
    good_step(&b);
    set_seq(&b, 1, 30, 3, 2);
    b.tokens[1][2] = VOCAB - 1;
    b.tokens[1][0] = 0;
    expect_accepted(STEP, &b.step);
    b.tokens[1][2] = VOCAB;
    expect_rejected(STEP, &b.step, "Step.seqs[1].tokens[2] = 512");
    b.tokens[1][2] = -1;
    expect_rejected(STEP, &b.step, "Step.seqs[1].tokens[2] = -1");
    b.tokens[1][2] = INT32_MIN;
    expect_rejected(STEP, &b.step, "Step.seqs[1].tokens[2] = -2147483648");

    /* The argmax alone, of logits the sequence wants; not of none. */
    good_step(&b);
    b.seqs[1].want_logits = 1;
    b.seqs[1].want_argmax = 1;
    expect_accepted(STEP, &b.step);
    b.seqs[1].want_logits = 0;
    expect_rejected(STEP, &b.step,
                    "Step.seqs[1] wants the argmax of logits it does not "
                    "want");
}

/* Each sequence's block table. */
static void test_reject_step_blocks(void **state)
{
    (void)state;
    const int STEP = SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP;
    step_buf b;
    good_step(&b);
    /* ceil(SEQ_LEN / BLOCK_SIZE) = 11 blocks cover a context; 12 do not
     * fit in one. */
    set_seq(&b, 1, 30, 1, CTX_BLOCKS);
    expect_accepted(STEP, &b.step);
    set_seq(&b, 1, 30, 1, CTX_BLOCKS + 1);
    expect_rejected(STEP, &b.step, "Step.seqs[1] has 12 blocks");

    good_step(&b);
    b.blocks[1][1] = N_BLOCKS - 1;
    expect_accepted(STEP, &b.step);
    b.blocks[1][1] = N_BLOCKS;
    expect_rejected(STEP, &b.step, "Step.seqs[1].blocks[1] = 64");
    b.blocks[1][1] = UINT32_MAX;
    expect_rejected(STEP, &b.step, "Step.seqs[1].blocks[1] = 4294967295");
}

static void test_reject_result(void **state)
{
    (void)state;
    const int RESULT = SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT;
    result_t r = good_result();
    r.n_logits = 3;
    expect_rejected(RESULT, &r, "logits has 3 values");
    r.n_logits = VOCAB + 1;
    expect_rejected(RESULT, &r, "logits has 513 values");
    r.n_logits = 2 * VOCAB - 1;
    expect_rejected(RESULT, &r, "logits has 1023 values");
    r.n_logits = 2 * VOCAB + 1;
    expect_rejected(RESULT, &r, "logits has 1025 values");

    /* MAX_SEQS rows are accepted, one row more is not. */
    r.n_logits = MAX_SEQS * VOCAB;
    expect_accepted(RESULT, &r);
    r.n_logits = (MAX_SEQS + 1) * VOCAB;
    expect_rejected(RESULT, &r, "logits has 2560 values");

    r = good_result();
    g_logits[100] = NAN;
    expect_rejected(RESULT, &r, "logits[100]");
    r = good_result();
    g_logits[VOCAB - 1] = -INFINITY;
    expect_rejected(RESULT, &r, "logits[511]");
    /* In a later row. */
    r = good_result();
    r.n_logits = MAX_SEQS * VOCAB;
    g_logits[3 * VOCAB + 5] = INFINITY;
    expect_rejected(RESULT, &r, "logits[1541]");

    /* Argmax ids: in the vocabulary, at most one per sequence. */
    static int32_t ids[MAX_SEQS + 1];
    r = good_result();
    r.argmax = ids;
    r.n_argmax = MAX_SEQS;
    ids[MAX_SEQS - 1] = VOCAB - 1;
    expect_accepted(RESULT, &r);
    r.n_argmax = MAX_SEQS + 1;
    expect_rejected(RESULT, &r, "StepResult.argmax has 5 values");
    r.n_argmax = MAX_SEQS;
    ids[MAX_SEQS - 1] = VOCAB;
    expect_rejected(RESULT, &r, "StepResult.argmax[3] = 512");
    ids[MAX_SEQS - 1] = -1;
    expect_rejected(RESULT, &r, "StepResult.argmax[3] = -1");
    ids[MAX_SEQS - 1] = 0;

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

    /* pack refuses a message over the limit: one float more than the limit
     * holds, before any framing. */
    const size_t n = SLM_WIRE_MAX_CONTROL_BYTES / sizeof(float) + 1;
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

/* The shard's ZMQ_MAXMSGSIZE: the largest message the coordinator can send
 * within the limits must fit under it (or serving breaks), and it must be
 * far below the 72 MiB cap (or it bounds nothing). */
static void test_max_step_bytes(void **state)
{
    (void)state;
    const size_t bound = slm_wire_max_step_bytes(&LIM);
    assert_true(bound > 0 && bound < 16 * 1024);
    step_buf b;
    good_step(&b);
    b.step.seq = UINT64_MAX;
    b.step.n_seqs = MAX_SEQS;
    for (size_t i = 0; i < MAX_SEQS; i++) {
        set_seq(&b, i, SEQ_LEN - 1 - (int32_t)i, MAX_TOKENS / MAX_SEQS,
                CTX_BLOCKS);
        for (size_t j = 0; j < MAX_TOKENS / MAX_SEQS; j++)
            b.tokens[i][j] = VOCAB - 1;
        for (size_t j = 0; j < CTX_BLOCKS; j++)
            b.blocks[i][j] = N_BLOCKS - 1;
        b.seqs[i].want_logits = 1;
        b.seqs[i].want_argmax = 1;
    }
    b.step.n_free_blocks = N_BLOCKS;
    for (size_t i = 0; i < N_BLOCKS; i++)
        b.free_blocks[i] = N_BLOCKS - 1;
    slm_control_msg m =
        wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP, &b.step);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(slm_wire_pack_control(&m, &buf, &len), SLM_OK);
    assert_true(len <= bound);
    free(buf);

    char reason[1025];
    memset(reason, 'r', 1024);
    reason[1024] = '\0';
    shutdown_t sd = SHARDLM__CONTROL__SHUTDOWN__INIT;
    sd.reason = reason;
    m = wrap(SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_SHUTDOWN, &sd);
    assert_int_equal(slm_wire_pack_control(&m, &buf, &len), SLM_OK);
    assert_true(len <= bound);
    free(buf);

    /* Limits whose bound does not fit a size_t give 0, not a wrapped
     * small number. */
    const slm_wire_limits huge = {.n_shards = 1,
                                  .vocab_size = UINT32_MAX,
                                  .seq_len = INT32_MAX,
                                  .max_seqs = UINT32_MAX,
                                  .max_tokens = UINT32_MAX,
                                  .n_blocks = UINT32_MAX,
                                  .block_size = 1};
    assert_int_equal(slm_wire_max_step_bytes(&huge), 0);
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

    /* The same field 0, one level deeper: in the StepSequence of a Step
     * (seq 1, one sequence of token 5). */
    static const uint8_t deep[] = {0x12, 0x0a, 0x08, 0x01, 0x22, 0x06,
                                   0x0a, 0x01, 0x05, 0x80, 0x00, 0x00};
    assert_int_equal(slm_wire_unpack_control(deep, sizeof deep, &LIM, &out),
                     SLM_ERR_FORMAT);
    assert_null(out);
    assert_non_null(strstr(slm_error_message(), "StepSequence"));
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
        cmocka_unit_test(test_reject_step_sequence),
        cmocka_unit_test(test_reject_step_blocks),
        cmocka_unit_test(test_reject_result),
        cmocka_unit_test(test_reject_shard_and_shutdown),
        cmocka_unit_test(test_reject_hello),
        cmocka_unit_test(test_reject_body_not_set),
        cmocka_unit_test(test_size_limits),
        cmocka_unit_test(test_max_step_bytes),
        cmocka_unit_test(test_lying_lengths),
        cmocka_unit_test(test_field_number_zero),
        cmocka_unit_test(test_allocation_budget),
        cmocka_unit_test(test_hostile_bytes),
    };
    return cmocka_run_group_tests_name("wire", tests, NULL, NULL);
}
