/*
 * tests/unit/test_client_wire.c - proto/client_wire.c: round trips of every
 * client API message, each validation rule (the message names the field),
 * the proto3 zero defaults, the size limits, and hostile bytes (truncations,
 * random buffers, single-byte mutations).
 *
 * protobuf-c allocates with malloc, which cmocka's test allocator does not
 * see: leaks are caught by running this under the ASan build (LSan).
 */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "proto/client_wire.h"
#include "tests/testutil.h"

#define VOCAB      512
#define MAX_TOKENS 1024

typedef Shardlm__Client__GenerateRequest generate_t;
typedef Shardlm__Client__SamplingParams sampling_t;
typedef Shardlm__Client__TokenIds token_ids_t;
typedef Shardlm__Client__CancelRequest cancel_t;
typedef Shardlm__Client__HealthRequest health_req_t;
typedef Shardlm__Client__InfoRequest info_req_t;
typedef Shardlm__Client__Chunk chunk_t;
typedef Shardlm__Client__Final final_t;
typedef Shardlm__Client__Error error_t;
typedef Shardlm__Client__HealthResponse health_t;
typedef Shardlm__Client__HealthResponse__RankHealth rank_health_t;
typedef Shardlm__Client__InfoResponse info_t;

#define C_GENERATE SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_GENERATE
#define C_CANCEL   SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_CANCEL
#define C_HEALTH   SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_HEALTH
#define C_INFO     SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_INFO
#define S_CHUNK    SHARDLM__CLIENT__SERVER_MESSAGE__BODY_CHUNK
#define S_FINAL    SHARDLM__CLIENT__SERVER_MESSAGE__BODY_FINAL
#define S_ERROR    SHARDLM__CLIENT__SERVER_MESSAGE__BODY_ERROR
#define S_HEALTH   SHARDLM__CLIENT__SERVER_MESSAGE__BODY_HEALTH
#define S_INFO     SHARDLM__CLIENT__SERVER_MESSAGE__BODY_INFO

static slm_client_limits lim(void)
{
    return slm_client_default_limits(VOCAB, MAX_TOKENS);
}

/* ------------------------------------------------------------------------ */
/* Building messages                                                         */

static int32_t g_ids[] = {1, 42, VOCAB - 1, 0};
static char *g_stop[] = {"\n\n", "</s>", "fin\xc3\xa9"};

static sampling_t good_sampling(void)
{
    sampling_t s = SHARDLM__CLIENT__SAMPLING_PARAMS__INIT;
    s.temperature = 0.8f;
    s.top_k = 40;
    s.top_p = 0.9f;
    s.repetition_penalty = 1.1f;
    s.seed = 12345678901ULL;
    s.has_seed = 1;
    return s;
}

/* Points into *s, which must outlive the result. */
static generate_t good_generate(sampling_t *s)
{
    generate_t g = SHARDLM__CLIENT__GENERATE_REQUEST__INIT;
    g.request_id = "req-1";
    g.input_case = SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_PROMPT;
    g.prompt = "Once upon a time, \xe2\x82\xac";
    g.sampling = s;
    g.max_tokens = 64;
    g.stop = g_stop;
    g.n_stop = 3;
    g.deadline_ms = 30000;
    return g;
}

static slm_client_msg wrap_c(int body_case, void *body)
{
    slm_client_msg m = SHARDLM__CLIENT__CLIENT_MESSAGE__INIT;
    m.body_case = (Shardlm__Client__ClientMessage__BodyCase)body_case;
    m.generate = body; /* every member of the union is a message pointer */
    return m;
}

static slm_server_msg wrap_s(int body_case, void *body)
{
    slm_server_msg m = SHARDLM__CLIENT__SERVER_MESSAGE__INIT;
    m.body_case = (Shardlm__Client__ServerMessage__BodyCase)body_case;
    m.chunk = body;
    return m;
}

static chunk_t good_chunk(void)
{
    chunk_t c = SHARDLM__CLIENT__CHUNK__INIT;
    c.request_id = "req-1";
    c.token_ids = g_ids;
    c.n_token_ids = 4;
    c.text = " there was";
    return c;
}

static final_t good_final(void)
{
    final_t f = SHARDLM__CLIENT__FINAL__INIT;
    f.request_id = "req-1";
    f.finish_reason = SHARDLM__CLIENT__FINAL__FINISH_REASON__STOP_SEQUENCE;
    f.prompt_tokens = 7;
    f.completion_tokens = 21;
    f.queue_ms = 0.5;
    f.prefill_ms = 12.25;
    f.decode_ms = 300.0;
    return f;
}

static error_t good_error(void)
{
    error_t e = SHARDLM__CLIENT__ERROR__INIT;
    e.request_id = "req-1";
    e.code = SHARDLM__CLIENT__ERROR__CODE__RESOURCE_EXHAUSTED;
    e.message = "queue full";
    return e;
}

static rank_health_t g_ranks[2];
static rank_health_t *g_rank_ptrs[2] = {&g_ranks[0], &g_ranks[1]};

static health_t good_health(void)
{
    for (int i = 0; i < 2; i++) {
        rank_health_t r = SHARDLM__CLIENT__HEALTH_RESPONSE__RANK_HEALTH__INIT;
        r.rank = (uint32_t)i + 1;
        r.state = i ? SHARDLM__CLIENT__HEALTH_RESPONSE__STATE__FAILING
                    : SHARDLM__CLIENT__HEALTH_RESPONSE__STATE__SERVING;
        r.detail = i ? "no heartbeat" : "";
        r.last_heartbeat_ms = 100u * (uint64_t)(i + 1);
        g_ranks[i] = r;
    }
    health_t h = SHARDLM__CLIENT__HEALTH_RESPONSE__INIT;
    h.state = SHARDLM__CLIENT__HEALTH_RESPONSE__STATE__DEGRADED;
    h.ranks = g_rank_ptrs;
    h.n_ranks = 2;
    return h;
}

static info_t good_info(void)
{
    info_t i = SHARDLM__CLIENT__INFO_RESPONSE__INIT;
    i.model = "stories260K";
    i.tp = 2;
    i.pp = 1;
    i.vocab_size = VOCAB;
    i.seq_len = 256;
    i.version = "0.1.0";
    return i;
}

/* Packs m, unpacks it and expects `want`; on failure, also expects `field`
 * in the message. Returns the unpacked message (or NULL). */
static slm_client_msg *req_trip(const slm_client_msg *m, slm_status want,
                                const char *field)
{
    const slm_client_limits l = lim();
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(slm_client_pack_client(m, &buf, &len), SLM_OK);
    slm_client_msg *out = (slm_client_msg *)0x1;
    slm_error_clear();
    slm_status rc = slm_client_unpack_request(buf, len, &l, &out);
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

static slm_server_msg *resp_trip(const slm_server_msg *m, slm_status want,
                                 const char *field)
{
    const slm_client_limits l = lim();
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(slm_client_pack_server(m, &buf, &len), SLM_OK);
    slm_server_msg *out = (slm_server_msg *)0x1;
    slm_error_clear();
    slm_status rc = slm_client_unpack_response(buf, len, &l, &out);
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

static void reject_gen(generate_t *g, const char *field)
{
    slm_client_msg m = wrap_c(C_GENERATE, g);
    req_trip(&m, SLM_ERR_FORMAT, field);
}

static void reject_resp(int body_case, void *body, const char *field)
{
    slm_server_msg m = wrap_s(body_case, body);
    resp_trip(&m, SLM_ERR_FORMAT, field);
}

/* ------------------------------------------------------------------------ */
/* What an OK promises, checked independently of client_wire.c               */

static bool utf8_ok(const char *s)
{
    /* A naive decoder: the lead byte gives the length, the value is checked
     * against the shortest form, surrogates and U+10FFFF. */
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        uint32_t cp;
        int k;
        if (*p < 0x80) {
            p++;
            continue;
        } else if ((*p & 0xe0) == 0xc0) {
            cp = *p & 0x1f;
            k = 1;
        } else if ((*p & 0xf0) == 0xe0) {
            cp = *p & 0x0f;
            k = 2;
        } else if ((*p & 0xf8) == 0xf0) {
            cp = *p & 0x07;
            k = 3;
        } else {
            return false;
        }
        for (int j = 1; j <= k; j++) {
            if ((p[j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[j] & 0x3f);
        }
        const uint32_t min[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += k + 1;
    }
    return true;
}

static void assert_id(const char *id, bool nonempty)
{
    const size_t n = strlen(id);
    assert_true(n <= 128 && (!nonempty || n > 0));
    for (size_t i = 0; i < n; i++)
        assert_true(id[i] >= 0x20 && id[i] <= 0x7e);
}

static void assert_valid_request(const slm_client_msg *m)
{
    switch (m->body_case) {
    case C_GENERATE: {
        const generate_t *g = m->generate;
        assert_id(g->request_id, true);
        if (g->input_case == SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_PROMPT) {
            assert_true(strlen(g->prompt) <= (256u << 10));
            assert_true(utf8_ok(g->prompt));
        } else if (g->input_case ==
                   SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_MESSAGES) {
            const Shardlm__Client__ChatMessages *c = g->messages;
            size_t total = 0;
            assert_true(c->n_messages >= 1 && c->n_messages <= 256);
            for (size_t i = 0; i < c->n_messages; i++) {
                const char *r = c->messages[i]->role;
                assert_true(!strcmp(r, "system") || !strcmp(r, "user") ||
                            !strcmp(r, "assistant"));
                assert_true(utf8_ok(c->messages[i]->content));
                total += strlen(c->messages[i]->content);
            }
            assert_true(total <= (256u << 10));
        } else {
            assert_int_equal(
                g->input_case,
                SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_TOKEN_IDS);
            assert_true(g->token_ids->n_ids >= 1 &&
                        g->token_ids->n_ids <= 65536);
            for (size_t i = 0; i < g->token_ids->n_ids; i++)
                assert_true(g->token_ids->ids[i] >= 0 &&
                            g->token_ids->ids[i] < VOCAB);
        }
        if (g->sampling) {
            const sampling_t *s = g->sampling;
            assert_true(isfinite(s->temperature) && s->temperature >= 0);
            assert_true(s->top_k >= 0);
            assert_true(s->top_p > 0 && s->top_p <= 1);
            assert_true(isfinite(s->repetition_penalty) &&
                        s->repetition_penalty > 0);
        }
        assert_true(g->max_tokens <= MAX_TOKENS);
        assert_true(g->n_stop <= 16);
        for (size_t i = 0; i < g->n_stop; i++) {
            assert_true(strlen(g->stop[i]) >= 1 && strlen(g->stop[i]) <= 256);
            assert_true(utf8_ok(g->stop[i]));
        }
        assert_true(g->deadline_ms <= 86400000ull);
        break;
    }
    case C_CANCEL:
        assert_id(m->cancel->request_id, true);
        break;
    case C_HEALTH:
    case C_INFO:
        break;
    default:
        fail_msg("unpack accepted body_case %d", (int)m->body_case);
    }
}

static void assert_valid_response(const slm_server_msg *m)
{
    switch (m->body_case) {
    case S_CHUNK:
        assert_id(m->chunk->request_id, true);
        assert_true(m->chunk->n_token_ids <= SLM_CLIENT_MAX_CHUNK_TOKENS);
        for (size_t i = 0; i < m->chunk->n_token_ids; i++)
            assert_true(m->chunk->token_ids[i] >= 0 &&
                        m->chunk->token_ids[i] < VOCAB);
        assert_true(strlen(m->chunk->text) <= SLM_CLIENT_MAX_TEXT_BYTES);
        break;
    case S_FINAL:
        assert_id(m->final->request_id, true);
        assert_true(m->final->finish_reason >= 0 &&
                    m->final->finish_reason <= 3);
        assert_true(isfinite(m->final->queue_ms) && m->final->queue_ms >= 0);
        assert_true(isfinite(m->final->prefill_ms) &&
                    m->final->prefill_ms >= 0);
        assert_true(isfinite(m->final->decode_ms) && m->final->decode_ms >= 0);
        break;
    case S_ERROR:
        assert_id(m->error->request_id, false);
        assert_true(m->error->code >= 0 && m->error->code <= 6);
        assert_true(strlen(m->error->message) <= 1024);
        break;
    case S_HEALTH:
        assert_true(m->health->state >= 0 && m->health->state <= 3);
        assert_true(m->health->n_ranks <= SLM_CLIENT_MAX_RANKS);
        for (size_t i = 0; i < m->health->n_ranks; i++) {
            assert_true(m->health->ranks[i]->state >= 0 &&
                        m->health->ranks[i]->state <= 3);
            assert_true(strlen(m->health->ranks[i]->detail) <= 1024);
        }
        break;
    case S_INFO:
        assert_true(strlen(m->info->model) <= 1024);
        assert_true(strlen(m->info->version) <= 1024);
        break;
    case SHARDLM__CLIENT__SERVER_MESSAGE__BODY_QUEUED:
        assert_id(m->queued->request_id, true);
        break;
    default:
        fail_msg("unpack accepted body_case %d", (int)m->body_case);
    }
}

/* Unpacks hostile bytes both ways: any status, but never a crash; an OK
 * message must be valid, and must still be valid after a re-pack and
 * unpack; an error leaves *out NULL and says why. */
static void unpack_any(const uint8_t *buf, size_t len)
{
    const slm_client_limits l = lim();
    slm_client_msg *c = (slm_client_msg *)0x1;
    slm_status rc = slm_client_unpack_request(buf, len, &l, &c);
    if (rc == SLM_OK) {
        assert_valid_request(c);
        uint8_t *again;
        size_t n;
        assert_int_equal(slm_client_pack_client(c, &again, &n), SLM_OK);
        slm_client_msg *c2;
        assert_int_equal(slm_client_unpack_request(again, n, &l, &c2), SLM_OK);
        assert_valid_request(c2);
        slm_client_free_request(&c2);
        free(again);
        slm_client_free_request(&c);
        assert_null(c);
    } else {
        assert_int_equal(rc, SLM_ERR_FORMAT);
        assert_null(c);
        assert_true(slm_error_message()[0] != '\0');
    }

    slm_server_msg *s = (slm_server_msg *)0x1;
    rc = slm_client_unpack_response(buf, len, &l, &s);
    if (rc == SLM_OK) {
        assert_valid_response(s);
        uint8_t *again;
        size_t n;
        assert_int_equal(slm_client_pack_server(s, &again, &n), SLM_OK);
        slm_server_msg *s2;
        assert_int_equal(slm_client_unpack_response(again, n, &l, &s2), SLM_OK);
        assert_valid_response(s2);
        slm_client_free_response(&s2);
        free(again);
        slm_client_free_response(&s);
        assert_null(s);
    } else {
        assert_int_equal(rc, SLM_ERR_FORMAT);
        assert_null(s);
        assert_true(slm_error_message()[0] != '\0');
    }
}

/* The packed form of each good message; the caller frees each buffer. */
#define N_GOOD 10
static void pack_all_good(uint8_t *bufs[N_GOOD], size_t lens[N_GOOD])
{
    sampling_t s = good_sampling();
    generate_t g = good_generate(&s);
    token_ids_t t = SHARDLM__CLIENT__TOKEN_IDS__INIT;
    t.ids = g_ids;
    t.n_ids = 4;
    generate_t gt = good_generate(&s);
    gt.input_case = SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_TOKEN_IDS;
    gt.token_ids = &t;
    cancel_t c = SHARDLM__CLIENT__CANCEL_REQUEST__INIT;
    c.request_id = "req-1";
    health_req_t hr = SHARDLM__CLIENT__HEALTH_REQUEST__INIT;
    info_req_t ir = SHARDLM__CLIENT__INFO_REQUEST__INIT;
    const slm_client_msg cm[5] = {
        wrap_c(C_GENERATE, &g), wrap_c(C_GENERATE, &gt), wrap_c(C_CANCEL, &c),
        wrap_c(C_HEALTH, &hr),  wrap_c(C_INFO, &ir),
    };
    for (int i = 0; i < 5; i++)
        assert_int_equal(slm_client_pack_client(&cm[i], &bufs[i], &lens[i]),
                         SLM_OK);
    chunk_t ch = good_chunk();
    final_t f = good_final();
    error_t e = good_error();
    health_t h = good_health();
    info_t in = good_info();
    const slm_server_msg sm[5] = {
        wrap_s(S_CHUNK, &ch), wrap_s(S_FINAL, &f), wrap_s(S_ERROR, &e),
        wrap_s(S_HEALTH, &h), wrap_s(S_INFO, &in),
    };
    for (int i = 0; i < 5; i++)
        assert_int_equal(
            slm_client_pack_server(&sm[i], &bufs[5 + i], &lens[5 + i]), SLM_OK);
}

/* ------------------------------------------------------------------------ */
/* Round trips                                                               */

static void test_round_trip_generate(void **state)
{
    (void)state;
    sampling_t s = good_sampling();
    generate_t g = good_generate(&s);
    slm_client_msg m = wrap_c(C_GENERATE, &g);
    slm_client_msg *out = req_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->body_case, C_GENERATE);
    const generate_t *o = out->generate;
    assert_string_equal(o->request_id, "req-1");
    assert_int_equal(o->input_case,
                     SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_PROMPT);
    assert_string_equal(o->prompt, g.prompt);
    assert_non_null(o->sampling);
    assert_true(o->sampling->temperature == 0.8f);
    assert_int_equal(o->sampling->top_k, 40);
    assert_true(o->sampling->top_p == 0.9f);
    assert_true(o->sampling->repetition_penalty == 1.1f);
    assert_true(o->sampling->seed == 12345678901ULL);
    assert_true(o->sampling->has_seed);
    assert_int_equal(o->max_tokens, 64);
    assert_int_equal(o->n_stop, 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(o->stop[i], g_stop[i]);
    assert_int_equal(o->deadline_ms, 30000);
    slm_client_free_request(&out);
    assert_null(out);

    /* Token ids instead, at the edges of every range. */
    token_ids_t t = SHARDLM__CLIENT__TOKEN_IDS__INIT;
    t.ids = g_ids;
    t.n_ids = 4;
    g.input_case = SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_TOKEN_IDS;
    g.token_ids = &t;
    g.max_tokens = MAX_TOKENS;
    g.deadline_ms = SLM_CLIENT_MAX_DEADLINE_MS;
    char id[129];
    memset(id, '~', 128);
    id[128] = '\0';
    g.request_id = id;
    out = req_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->generate->input_case,
                     SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_TOKEN_IDS);
    assert_int_equal(out->generate->token_ids->n_ids, 4);
    assert_memory_equal(out->generate->token_ids->ids, g_ids, sizeof g_ids);
    assert_string_equal(out->generate->request_id, id);
    slm_client_free_request(&out);
}

static void test_round_trip_other_requests(void **state)
{
    (void)state;
    cancel_t c = SHARDLM__CLIENT__CANCEL_REQUEST__INIT;
    c.request_id = "abc 123";
    slm_client_msg m = wrap_c(C_CANCEL, &c);
    slm_client_msg *out = req_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->body_case, C_CANCEL);
    assert_string_equal(out->cancel->request_id, "abc 123");
    slm_client_free_request(&out);

    health_req_t h = SHARDLM__CLIENT__HEALTH_REQUEST__INIT;
    m = wrap_c(C_HEALTH, &h);
    out = req_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->body_case, C_HEALTH);
    slm_client_free_request(&out);

    info_req_t i = SHARDLM__CLIENT__INFO_REQUEST__INIT;
    m = wrap_c(C_INFO, &i);
    out = req_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->body_case, C_INFO);
    slm_client_free_request(&out);

    /* free accepts NULL and a NULL message. */
    slm_client_free_request(NULL);
    slm_client_free_request(&out);
    slm_client_free_response(NULL);
}

static void test_round_trip_responses(void **state)
{
    (void)state;
    chunk_t c = good_chunk();
    slm_server_msg m = wrap_s(S_CHUNK, &c);
    slm_server_msg *out = resp_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->body_case, S_CHUNK);
    assert_string_equal(out->chunk->request_id, "req-1");
    assert_int_equal(out->chunk->n_token_ids, 4);
    assert_memory_equal(out->chunk->token_ids, g_ids, sizeof g_ids);
    assert_string_equal(out->chunk->text, " there was");
    slm_client_free_response(&out);

    final_t f = good_final();
    m = wrap_s(S_FINAL, &f);
    out = resp_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->final->finish_reason,
                     SHARDLM__CLIENT__FINAL__FINISH_REASON__STOP_SEQUENCE);
    assert_int_equal(out->final->prompt_tokens, 7);
    assert_int_equal(out->final->completion_tokens, 21);
    assert_true(out->final->queue_ms == 0.5);
    assert_true(out->final->prefill_ms == 12.25);
    assert_true(out->final->decode_ms == 300.0);
    slm_client_free_response(&out);

    error_t e = good_error();
    m = wrap_s(S_ERROR, &e);
    out = resp_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->error->code,
                     SHARDLM__CLIENT__ERROR__CODE__RESOURCE_EXHAUSTED);
    assert_string_equal(out->error->message, "queue full");
    slm_client_free_response(&out);
    e.request_id = ""; /* an error about a message without an id */
    out = resp_trip(&m, SLM_OK, NULL);
    slm_client_free_response(&out);

    health_t h = good_health();
    m = wrap_s(S_HEALTH, &h);
    out = resp_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->health->state,
                     SHARDLM__CLIENT__HEALTH_RESPONSE__STATE__DEGRADED);
    assert_int_equal(out->health->n_ranks, 2);
    assert_int_equal(out->health->ranks[1]->rank, 2);
    assert_int_equal(out->health->ranks[1]->state,
                     SHARDLM__CLIENT__HEALTH_RESPONSE__STATE__FAILING);
    assert_string_equal(out->health->ranks[1]->detail, "no heartbeat");
    assert_int_equal(out->health->ranks[1]->last_heartbeat_ms, 200);
    slm_client_free_response(&out);

    info_t i = good_info();
    m = wrap_s(S_INFO, &i);
    out = resp_trip(&m, SLM_OK, NULL);
    assert_string_equal(out->info->model, "stories260K");
    assert_int_equal(out->info->tp, 2);
    assert_int_equal(out->info->pp, 1);
    assert_int_equal(out->info->vocab_size, VOCAB);
    assert_int_equal(out->info->seq_len, 256);
    assert_string_equal(out->info->version, "0.1.0");
    slm_client_free_response(&out);
}

/* ------------------------------------------------------------------------ */
/* proto3 zero defaults                                                      */

static void test_zero_defaults(void **state)
{
    (void)state;
    /* An all-zero SamplingParams: greedy, top_p and repetition_penalty
     * replaced by 1.0. */
    sampling_t s = SHARDLM__CLIENT__SAMPLING_PARAMS__INIT;
    generate_t g = good_generate(&s);
    g.max_tokens = 0;
    g.deadline_ms = 0;
    g.n_stop = 0;
    slm_client_msg m = wrap_c(C_GENERATE, &g);
    slm_client_msg *out = req_trip(&m, SLM_OK, NULL);
    const sampling_t *o = out->generate->sampling;
    assert_non_null(o);
    assert_true(o->temperature == 0.0f);
    assert_int_equal(o->top_k, 0);
    assert_true(o->top_p == 1.0f);
    assert_true(o->repetition_penalty == 1.0f);
    assert_false(o->has_seed);
    assert_int_equal(out->generate->max_tokens, 0);
    assert_int_equal(out->generate->deadline_ms, 0);
    assert_int_equal(out->generate->n_stop, 0);
    slm_client_free_request(&out);

    /* No SamplingParams at all stays NULL. */
    g.sampling = NULL;
    out = req_trip(&m, SLM_OK, NULL);
    assert_null(out->generate->sampling);
    slm_client_free_request(&out);

    /* An empty prompt is a set input (generation from BOS alone). */
    g.prompt = "";
    out = req_trip(&m, SLM_OK, NULL);
    assert_int_equal(out->generate->input_case,
                     SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_PROMPT);
    assert_string_equal(out->generate->prompt, "");
    slm_client_free_request(&out);
}

/* ------------------------------------------------------------------------ */
/* Each request rule                                                         */

static void test_reject_request_id(void **state)
{
    (void)state;
    sampling_t s = good_sampling();
    generate_t g = good_generate(&s);
    g.request_id = "";
    reject_gen(&g, "GenerateRequest.request_id is empty");
    char id[130];
    memset(id, 'a', 129);
    id[129] = '\0';
    g.request_id = id;
    reject_gen(&g, "GenerateRequest.request_id is 129 bytes");
    g.request_id = "a\tb";
    reject_gen(&g, "GenerateRequest.request_id has byte 0x09");
    g.request_id = "caf\xc3\xa9";
    reject_gen(&g, "GenerateRequest.request_id has byte 0xc3");

    cancel_t c = SHARDLM__CLIENT__CANCEL_REQUEST__INIT;
    slm_client_msg m = wrap_c(C_CANCEL, &c);
    req_trip(&m, SLM_ERR_FORMAT, "CancelRequest.request_id is empty");
    c.request_id = "x\x7f";
    req_trip(&m, SLM_ERR_FORMAT, "CancelRequest.request_id has byte 0x7f");
}

static void test_reject_input(void **state)
{
    (void)state;
    sampling_t s = good_sampling();
    generate_t g = good_generate(&s);
    g.input_case = SHARDLM__CLIENT__GENERATE_REQUEST__INPUT__NOT_SET;
    reject_gen(&g, "GenerateRequest.input = 0");

    g = good_generate(&s);
    char *big = malloc((256u << 10) + 2);
    assert_non_null(big);
    memset(big, 'p', (256u << 10) + 1);
    big[(256u << 10) + 1] = '\0';
    g.prompt = big;
    reject_gen(&g, "GenerateRequest.prompt is 262145 bytes");
    big[256u << 10] = '\0'; /* exactly the limit */
    slm_client_msg m = wrap_c(C_GENERATE, &g);
    slm_client_msg *out = req_trip(&m, SLM_OK, NULL);
    slm_client_free_request(&out);
    free(big);

    /* Ill-formed UTF-8: a lone continuation, an overlong '/', a surrogate,
     * above U+10FFFF, a truncated sequence at the end. */
    static const char *const bad[] = {"ab\x80", "\xc0\xaf", "x\xed\xa0\x80",
                                      "\xf4\x90\x80\x80", "ok\xe2\x82"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        g.prompt = (char *)bad[i];
        reject_gen(&g, "GenerateRequest.prompt is not valid UTF-8");
    }
    g.prompt = "\xf4\x8f\xbf\xbf \xef\xbf\xbf \xc2\x80"; /* edges, valid */
    out = req_trip(&m, SLM_OK, NULL);
    slm_client_free_request(&out);

    token_ids_t t = SHARDLM__CLIENT__TOKEN_IDS__INIT;
    g.input_case = SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_TOKEN_IDS;
    g.token_ids = &t;
    reject_gen(&g, "GenerateRequest.token_ids has 0 ids");
    int32_t ids[3] = {5, VOCAB, 7};
    t.ids = ids;
    t.n_ids = 3;
    reject_gen(&g, "GenerateRequest.token_ids[1] = 512");
    ids[1] = -1;
    reject_gen(&g, "GenerateRequest.token_ids[1] = -1");
    const size_t n = 65537;
    int32_t *many = calloc(n, sizeof *many);
    assert_non_null(many);
    t.ids = many;
    t.n_ids = n;
    reject_gen(&g, "GenerateRequest.token_ids has 65537 ids");
    t.n_ids = n - 1; /* exactly the limit */
    out = req_trip(&m, SLM_OK, NULL);
    slm_client_free_request(&out);
    free(many);
}

/* GenerateRequest.messages: roles, counts, UTF-8 and the total size. */
static void test_messages(void **state)
{
    (void)state;
    sampling_t s = good_sampling();
    generate_t g = good_generate(&s);
    Shardlm__Client__ChatMessage m[3];
    Shardlm__Client__ChatMessage *mp[3] = {&m[0], &m[1], &m[2]};
    static char *const roles[] = {"system", "user", "assistant"};
    for (int i = 0; i < 3; i++) {
        shardlm__client__chat_message__init(&m[i]);
        m[i].role = roles[i];
        m[i].content = "caf\xc3\xa9";
    }
    Shardlm__Client__ChatMessages c = SHARDLM__CLIENT__CHAT_MESSAGES__INIT;
    c.messages = mp;
    c.n_messages = 3;
    g.input_case = SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_MESSAGES;
    g.messages = &c;
    slm_client_msg w = wrap_c(C_GENERATE, &g);
    slm_client_msg *out = req_trip(&w, SLM_OK, NULL);
    assert_int_equal(out->generate->input_case,
                     SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_MESSAGES);
    assert_int_equal(out->generate->messages->n_messages, 3);
    assert_string_equal(out->generate->messages->messages[2]->role,
                        "assistant");
    slm_client_free_request(&out);

    m[1].role = "tool";
    reject_gen(&g, "GenerateRequest.messages[1].role");
    m[1].role = "User";
    reject_gen(&g, "GenerateRequest.messages[1].role");
    m[1].role = "user";
    m[2].content = "ok\xe2\x82";
    reject_gen(&g, "GenerateRequest.messages[2].content is not valid UTF-8");
    m[2].content = "";
    out = req_trip(&w, SLM_OK, NULL); /* empty content is allowed */
    slm_client_free_request(&out);
    c.n_messages = 0;
    reject_gen(&g, "GenerateRequest.messages has 0 messages");

    /* 257 messages: one over; 256 of 1 KiB content: the 256 KiB total */
    Shardlm__Client__ChatMessage *many = calloc(257, sizeof *many);
    Shardlm__Client__ChatMessage **mpp = calloc(257, sizeof *mpp);
    char *kib = malloc(1025);
    assert_true(many && mpp && kib);
    memset(kib, 'k', 1024);
    kib[1024] = '\0';
    for (int i = 0; i < 257; i++) {
        shardlm__client__chat_message__init(&many[i]);
        many[i].role = "user";
        many[i].content = kib;
        mpp[i] = &many[i];
    }
    c.messages = mpp;
    c.n_messages = 257;
    reject_gen(&g, "GenerateRequest.messages has 257 messages");
    c.n_messages = 256;
    out = req_trip(&w, SLM_OK, NULL);
    slm_client_free_request(&out);
    char *more = malloc(1026);
    assert_non_null(more);
    memset(more, 'm', 1025);
    more[1025] = '\0';
    many[255].content = more; /* 256 KiB and one byte */
    reject_gen(&g, "GenerateRequest.messages hold more than 262144 bytes");
    free(more);
    free(many);
    free(mpp);
    free(kib);
}

static void test_reject_sampling(void **state)
{
    (void)state;
    sampling_t s = good_sampling();
    generate_t g = good_generate(&s);
    s.temperature = -0.1f;
    reject_gen(&g, "SamplingParams.temperature = -0.1");
    s.temperature = NAN;
    reject_gen(&g, "SamplingParams.temperature = nan");
    s.temperature = INFINITY;
    reject_gen(&g, "SamplingParams.temperature = inf");
    s = good_sampling();
    s.top_k = -1;
    reject_gen(&g, "SamplingParams.top_k = -1");
    s = good_sampling();
    s.top_p = 1.5f;
    reject_gen(&g, "SamplingParams.top_p = 1.5");
    s.top_p = -0.5f;
    reject_gen(&g, "SamplingParams.top_p = -0.5");
    s.top_p = NAN;
    reject_gen(&g, "SamplingParams.top_p = nan");
    s = good_sampling();
    s.repetition_penalty = -1.0f;
    reject_gen(&g, "SamplingParams.repetition_penalty = -1");
    s.repetition_penalty = INFINITY;
    reject_gen(&g, "SamplingParams.repetition_penalty = inf");
}

static void test_reject_limits(void **state)
{
    (void)state;
    sampling_t s = good_sampling();
    generate_t g = good_generate(&s);
    g.max_tokens = MAX_TOKENS + 1;
    reject_gen(&g, "GenerateRequest.max_tokens = 1025");

    g = good_generate(&s);
    char *stops[17];
    for (int i = 0; i < 17; i++)
        stops[i] = "s";
    g.stop = stops;
    g.n_stop = 17;
    reject_gen(&g, "GenerateRequest.stop has 17 sequences");
    g.n_stop = 16;
    slm_client_msg m = wrap_c(C_GENERATE, &g);
    slm_client_msg *out = req_trip(&m, SLM_OK, NULL);
    slm_client_free_request(&out);
    stops[3] = "";
    reject_gen(&g, "GenerateRequest.stop[3] is empty");
    char long_stop[258];
    memset(long_stop, 'z', 257);
    long_stop[257] = '\0';
    stops[3] = long_stop;
    reject_gen(&g, "GenerateRequest.stop is 257 bytes");
    stops[3] = "\xff";
    reject_gen(&g, "GenerateRequest.stop is not valid UTF-8");

    g = good_generate(&s);
    g.deadline_ms = SLM_CLIENT_MAX_DEADLINE_MS + 1;
    reject_gen(&g, "GenerateRequest.deadline_ms = 86400001");
    g.deadline_ms = UINT64_MAX;
    reject_gen(&g, "deadline_ms = 18446744073709551615");
}

static void test_reject_body_not_set(void **state)
{
    (void)state;
    slm_client_msg m = SHARDLM__CLIENT__CLIENT_MESSAGE__INIT;
    req_trip(&m, SLM_ERR_FORMAT, "body = 0");
    slm_server_msg sm = SHARDLM__CLIENT__SERVER_MESSAGE__INIT;
    resp_trip(&sm, SLM_ERR_FORMAT, "body = 0");

    /* Zero bytes is the same empty message. */
    const slm_client_limits l = lim();
    slm_client_msg *out = (slm_client_msg *)0x1;
    assert_int_equal(slm_client_unpack_request(NULL, 0, &l, &out),
                     SLM_ERR_FORMAT);
    assert_null(out);
    assert_non_null(strstr(slm_error_message(), "body"));
}

/* Replaces the first occurrence of `mark` (one byte) in the packed form of
 * m with NUL and expects the request to be refused, naming `field`. */
static void expect_nul_refused(const slm_client_msg *m, char mark,
                               const char *field)
{
    const slm_client_limits l = lim();
    uint8_t *buf;
    size_t len;
    assert_int_equal(slm_client_pack_client(m, &buf, &len), SLM_OK);
    uint8_t *at = memchr(buf, mark, len);
    assert_non_null(at);
    *at = 0;
    slm_client_msg *out = (slm_client_msg *)0x1;
    assert_int_equal(slm_client_unpack_request(buf, len, &l, &out),
                     SLM_ERR_FORMAT);
    assert_null(out);
    if (!strstr(slm_error_message(), field) ||
        !strstr(slm_error_message(), "NUL"))
        fail_msg("message \"%s\" does not name %s", slm_error_message(), field);
    free(buf);
}

static void test_reject_nul(void **state)
{
    (void)state;
    sampling_t s = good_sampling();
    generate_t g = good_generate(&s);
    slm_client_msg m = wrap_c(C_GENERATE, &g);
    g.prompt = "before#after";
    expect_nul_refused(&m, '#', "GenerateRequest.prompt");
    g = good_generate(&s);
    g.request_id = "id#x";
    expect_nul_refused(&m, '#', "GenerateRequest.request_id");
    g = good_generate(&s);
    char *stops[] = {"ok", "st#p"};
    g.stop = stops;
    g.n_stop = 2;
    expect_nul_refused(&m, '#', "GenerateRequest.stop");
    cancel_t c = SHARDLM__CLIENT__CANCEL_REQUEST__INIT;
    c.request_id = "can#el";
    m = wrap_c(C_CANCEL, &c);
    expect_nul_refused(&m, '#', "CancelRequest.request_id");
}

/* A server's strings get the same check: "r\0x" must not read as "r" (it
 * could match another request), nor text stop short at a NUL. */
static void test_reject_nul_in_responses(void **state)
{
    (void)state;
    const slm_client_limits lim = slm_client_default_limits(512, 256);
    /* ServerMessage{chunk{request_id "r\0x", text "a\0\x1b[2"}} */
    const uint8_t id_nul[] = {0x0a, 0x0c, 0x0a, 0x03, 0x72, 0x00, 0x78,
                              0x1a, 0x05, 0x61, 0x00, 0x1b, 0x5b, 0x32};
    slm_server_msg *out = NULL;
    assert_int_equal(
        slm_client_unpack_response(id_nul, sizeof id_nul, &lim, &out),
        SLM_ERR_FORMAT);
    assert_null(out);
    assert_non_null(strstr(slm_error_message(), "Chunk.request_id"));
    /* ServerMessage{error{request_id "r", code 3, message "a\0b"}} */
    const uint8_t msg_nul[] = {0x1a, 0x0a, 0x0a, 0x01, 0x72, 0x10, 0x03,
                               0x1a, 0x03, 0x61, 0x00, 0x62};
    assert_int_equal(
        slm_client_unpack_response(msg_nul, sizeof msg_nul, &lim, &out),
        SLM_ERR_FORMAT);
    assert_non_null(strstr(slm_error_message(), "Error.message"));
}

/* ------------------------------------------------------------------------ */
/* Each response rule                                                        */

static void test_reject_responses(void **state)
{
    (void)state;
    chunk_t c = good_chunk();
    c.request_id = "";
    reject_resp(S_CHUNK, &c, "Chunk.request_id is empty");
    c = good_chunk();
    int32_t ids[2] = {3, VOCAB};
    c.token_ids = ids;
    c.n_token_ids = 2;
    reject_resp(S_CHUNK, &c, "Chunk.token_ids[1] = 512");
    ids[1] = -5;
    reject_resp(S_CHUNK, &c, "Chunk.token_ids[1] = -5");
    int32_t *many = calloc(SLM_CLIENT_MAX_CHUNK_TOKENS + 1, sizeof *many);
    assert_non_null(many);
    c.token_ids = many;
    c.n_token_ids = SLM_CLIENT_MAX_CHUNK_TOKENS + 1;
    reject_resp(S_CHUNK, &c, "Chunk.token_ids has 4097 ids");
    free(many);
    c = good_chunk();
    char *text = malloc(SLM_CLIENT_MAX_TEXT_BYTES + 2);
    assert_non_null(text);
    memset(text, 't', SLM_CLIENT_MAX_TEXT_BYTES + 1);
    text[SLM_CLIENT_MAX_TEXT_BYTES + 1] = '\0';
    c.text = text;
    reject_resp(S_CHUNK, &c, "Chunk.text is 65537 bytes");
    free(text);

    final_t f = good_final();
    f.finish_reason = (Shardlm__Client__Final__FinishReason)9;
    reject_resp(S_FINAL, &f, "Final.finish_reason = 9");
    f = good_final();
    f.request_id = "r\n";
    reject_resp(S_FINAL, &f, "Final.request_id has byte 0x0a");
    f = good_final();
    f.queue_ms = -1.0;
    reject_resp(S_FINAL, &f, "Final.queue_ms = -1");
    f = good_final();
    f.prefill_ms = NAN;
    reject_resp(S_FINAL, &f, "Final.prefill_ms = nan");
    f = good_final();
    f.decode_ms = INFINITY;
    reject_resp(S_FINAL, &f, "Final.decode_ms = inf");

    error_t e = good_error();
    e.code = (Shardlm__Client__Error__Code)7;
    reject_resp(S_ERROR, &e, "Error.code = 7");
    e.code = (Shardlm__Client__Error__Code)-1;
    reject_resp(S_ERROR, &e, "Error.code = -1");
    e = good_error();
    char msg[1026];
    memset(msg, 'm', 1025);
    msg[1025] = '\0';
    e.message = msg;
    reject_resp(S_ERROR, &e, "Error.message is 1025 bytes");

    health_t h = good_health();
    h.state = (Shardlm__Client__HealthResponse__State)4;
    reject_resp(S_HEALTH, &h, "HealthResponse.state = 4");
    h = good_health();
    g_ranks[1].state = (Shardlm__Client__HealthResponse__State)-2;
    reject_resp(S_HEALTH, &h, "RankHealth.state = -2");
    h = good_health();
    g_ranks[0].detail = msg;
    reject_resp(S_HEALTH, &h, "RankHealth.detail is 1025 bytes");
    h = good_health();
    rank_health_t **ranks =
        calloc(SLM_CLIENT_MAX_RANKS + 1, sizeof(rank_health_t *));
    assert_non_null(ranks);
    for (size_t i = 0; i <= SLM_CLIENT_MAX_RANKS; i++)
        ranks[i] = &g_ranks[0];
    h.ranks = ranks;
    h.n_ranks = SLM_CLIENT_MAX_RANKS + 1;
    reject_resp(S_HEALTH, &h, "HealthResponse.ranks has 4097 entries");
    free(ranks);

    info_t i = good_info();
    i.model = msg;
    reject_resp(S_INFO, &i, "InfoResponse.model is 1025 bytes");
    i = good_info();
    i.version = msg;
    reject_resp(S_INFO, &i, "InfoResponse.version is 1025 bytes");

    /* With vocab_size 0 (unknown) any id >= 0 passes. */
    c = good_chunk();
    ids[1] = 1000000;
    c.token_ids = ids;
    c.n_token_ids = 2; /* ids holds two */
    slm_server_msg m = wrap_s(S_CHUNK, &c);
    uint8_t *buf;
    size_t len;
    assert_int_equal(slm_client_pack_server(&m, &buf, &len), SLM_OK);
    slm_client_limits l = lim();
    l.vocab_size = 0;
    slm_server_msg *out = NULL;
    assert_int_equal(slm_client_unpack_response(buf, len, &l, &out), SLM_OK);
    assert_int_equal(out->chunk->token_ids[1], 1000000);
    slm_client_free_response(&out);
    free(buf);
}

static void test_code_names(void **state)
{
    (void)state;
    assert_string_equal(slm_client_code_name(0), "CODE_UNSPECIFIED");
    assert_string_equal(
        slm_client_code_name(SHARDLM__CLIENT__ERROR__CODE__INVALID_ARGUMENT),
        "INVALID_ARGUMENT");
    assert_string_equal(
        slm_client_code_name(SHARDLM__CLIENT__ERROR__CODE__RESOURCE_EXHAUSTED),
        "RESOURCE_EXHAUSTED");
    assert_string_equal(
        slm_client_code_name(SHARDLM__CLIENT__ERROR__CODE__UNAVAILABLE),
        "UNAVAILABLE");
    assert_string_equal(
        slm_client_code_name(SHARDLM__CLIENT__ERROR__CODE__DEADLINE_EXCEEDED),
        "DEADLINE_EXCEEDED");
    assert_string_equal(
        slm_client_code_name(SHARDLM__CLIENT__ERROR__CODE__CANCELLED),
        "CANCELLED");
    assert_string_equal(
        slm_client_code_name(SHARDLM__CLIENT__ERROR__CODE__INTERNAL),
        "INTERNAL");
    assert_string_equal(slm_client_code_name(7), "UNKNOWN");
    assert_string_equal(slm_client_code_name(-1), "UNKNOWN");
}

/* ------------------------------------------------------------------------ */
/* Size limits, field number 0, the allocation budget                        */

static void test_size_limits(void **state)
{
    (void)state;
    const slm_client_limits l = lim();
    /* Refused before a byte is read: buf is far shorter than len. */
    uint8_t small[16] = {0};
    slm_client_msg *out = (slm_client_msg *)0x1;
    assert_int_equal(slm_client_unpack_request(
                         small, SLM_CLIENT_MAX_MESSAGE_BYTES + 1, &l, &out),
                     SLM_ERR_RANGE);
    assert_null(out);
    assert_non_null(strstr(slm_error_message(), "limit"));
    slm_server_msg *sout = (slm_server_msg *)0x1;
    assert_int_equal(slm_client_unpack_response(
                         small, SLM_CLIENT_MAX_MESSAGE_BYTES + 1, &l, &sout),
                     SLM_ERR_RANGE);
    assert_null(sout);
    assert_int_equal(slm_client_unpack_request(NULL, 1, &l, &out),
                     SLM_ERR_INVALID);
    assert_int_equal(slm_client_unpack_request(small, 0, NULL, &out),
                     SLM_ERR_INVALID);
    assert_null(out);

    /* pack refuses a message over the limit: a 2 MiB prompt. */
    const size_t n = (size_t)2 << 20;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'a', n);
    big[n] = '\0';
    sampling_t s = good_sampling();
    generate_t g = good_generate(&s);
    g.prompt = big;
    slm_client_msg m = wrap_c(C_GENERATE, &g);
    uint8_t *buf = (uint8_t *)0x1;
    size_t len = 1;
    assert_int_equal(slm_client_pack_client(&m, &buf, &len), SLM_ERR_RANGE);
    assert_null(buf);
    chunk_t c = good_chunk();
    c.text = big;
    slm_server_msg sm = wrap_s(S_CHUNK, &c);
    assert_int_equal(slm_client_pack_server(&sm, &buf, &len), SLM_ERR_RANGE);
    assert_null(buf);
    free(big);
}

static void test_field_number_zero(void **state)
{
    (void)state;
    const slm_client_limits l = lim();
    /* ClientMessage.generate holding SamplingParams (field 4) holding a
     * varint field whose tag, 0, is spelled in two bytes. */
    static const uint8_t msg[] = {0x0a, 0x0b, 0x0a, 0x01, 'r',  0x12, 0x01,
                                  'p',  0x22, 0x03, 0x80, 0x00, 0x00};
    slm_client_msg *out = (slm_client_msg *)0x1;
    assert_int_equal(slm_client_unpack_request(msg, sizeof msg, &l, &out),
                     SLM_ERR_FORMAT);
    assert_null(out);
    assert_non_null(strstr(slm_error_message(), "SamplingParams"));
    assert_non_null(strstr(slm_error_message(), "numbered 0"));

    /* An unknown field with a real number is ignored. */
    static const uint8_t ok[] = {0x12, 0x05, 0x0a, 0x01, 'r', 0x78, 0x05};
    assert_int_equal(slm_client_unpack_request(ok, sizeof ok, &l, &out),
                     SLM_OK);
    assert_string_equal(out->cancel->request_id, "r");
    slm_client_free_request(&out);
}

static void test_allocation_budget(void **state)
{
    (void)state;
    const slm_client_limits l = lim();
    /* 200000 empty HealthRequests, the last of which wins the oneof: 400 KB
     * that protobuf-c would turn into megabytes of bookkeeping. */
    const size_t reps = 200000;
    uint8_t *msg = malloc(2 * reps);
    assert_non_null(msg);
    for (size_t i = 0; i < reps; i++) {
        msg[2 * i] = 0x1a; /* field 3, LEN */
        msg[2 * i + 1] = 0x00;
    }
    slm_client_msg *out = (slm_client_msg *)0x1;
    assert_int_equal(slm_client_unpack_request(msg, 2 * reps, &l, &out),
                     SLM_ERR_FORMAT);
    assert_null(out);
    assert_non_null(strstr(slm_error_message(), "memory"));
    assert_int_equal(slm_client_unpack_request(msg, 8, &l, &out), SLM_OK);
    assert_int_equal(out->body_case, C_HEALTH);
    slm_client_free_request(&out);
    free(msg);
}

/* ------------------------------------------------------------------------ */
/* Hostile bytes                                                             */

/* Every truncation, 3000 random buffers and 3000 single-byte mutations of
 * the valid messages: never a crash, and whatever is accepted re-validates
 * (unpack_any). */
static void test_hostile_bytes(void **state)
{
    (void)state;
    uint8_t *bufs[N_GOOD];
    size_t lens[N_GOOD];
    pack_all_good(bufs, lens);
    slm_test_hostile_bytes(bufs, lens, N_GOOD, 3000, 3000, 0xc11e, unpack_any);
    for (int i = 0; i < N_GOOD; i++)
        free(bufs[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_generate),
        cmocka_unit_test(test_round_trip_other_requests),
        cmocka_unit_test(test_round_trip_responses),
        cmocka_unit_test(test_zero_defaults),
        cmocka_unit_test(test_reject_request_id),
        cmocka_unit_test(test_reject_input),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_reject_sampling),
        cmocka_unit_test(test_reject_limits),
        cmocka_unit_test(test_reject_body_not_set),
        cmocka_unit_test(test_reject_nul),
        cmocka_unit_test(test_reject_nul_in_responses),
        cmocka_unit_test(test_reject_responses),
        cmocka_unit_test(test_code_names),
        cmocka_unit_test(test_size_limits),
        cmocka_unit_test(test_field_number_zero),
        cmocka_unit_test(test_allocation_budget),
        cmocka_unit_test(test_hostile_bytes),
    };
    return cmocka_run_group_tests_name("client_wire", tests, NULL, NULL);
}
