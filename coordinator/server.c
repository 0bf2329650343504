/* coordinator/server.c - see server.h. */
#define _GNU_SOURCE /* memmem */
#include "coordinator/server.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "common/audit.h"
#include "common/clock.h"
#include "common/utf8.h"
#include "common/zap.h"
#include "common/zkeys.h"
#include "coordinator/generate.h"
#include "coordinator/kvpool.h"
#include "coordinator/sampler.h"
#include "proto/client_wire.h"

#ifndef SLM_VERSION
#define SLM_VERSION "unknown"
#endif

#define PEER_MAX 256 /* ZeroMQ routing ids are at most 255 bytes */

typedef Shardlm__Client__Error__Code error_code;
typedef Shardlm__Client__Final__FinishReason finish_reason;

/* One tenant's share of the server (issue 6): its limits and what it holds
 * now. Made at its first request and kept: tenants are the allowlist's, a
 * bounded set. */
typedef struct tenant {
    struct tenant *next;
    char name[SLM_ALLOWLIST_TENANT_MAX + 1]; /* "" without CURVE */
    uint32_t id; /* its prefix-cache keys' tenant (kvpool.h) */
    slm_tenant_limits lim;
    uint32_t open;   /* its requests queued or running */
    uint32_t queued; /* of which waiting */
    uint64_t rejected;
} tenant;

typedef struct request {
    struct request *next; /* in the queue */
    tenant *tenant;
    uint8_t peer[PEER_MAX];
    size_t peer_len;
    char *id;
    int32_t *ids; /* BOS, the prompt, then what was sampled */
    size_t n, n_prompt;
    int32_t pos;                /* the next position to run */
    uint32_t max_new, produced; /* completion tokens allowed, made */
    bool ignore_eos;
    uint32_t *blocks; /* its KV blocks once admitted (all it may need) */
    size_t n_blocks;
    size_t n_registered; /* its leading blocks offered to the prefix cache */
    slm_sampler_t *sampler;
    char **stops;
    size_t n_stops;
    char *held; /* text not sent yet: it may begin a stop sequence */
    size_t held_len, held_cap;
    char tail[4]; /* the start of a UTF-8 character split across tokens */
    size_t tail_len;
    double arrived, started, first_token, deadline; /* deadline 0: none */
    bool cancelled, gone; /* gone: the client cannot be reached */
} request;

typedef struct {
    void *ctx, *sock;
    char endpoint[256];                /* as bound: a "*" port resolved */
    char public_key[SLM_ZKEY_Z85_BUF]; /* ours, announced for clients */
    slm_allowlist_t *clients;
    slm_audit_t *audit;
    slm_zap_t *zap;
    slm_cluster_t *cluster;
    slm_model_runner runner;
    const slm_model_config *cfg;
    const slm_tokenizer_t *tok;
    const slm_server_options *o;
    slm_client_limits lim;
    request *head, *tail; /* the queue */
    uint32_t queued;
    tenant *tenants;   /* every tenant seen */
    tenant *last_turn; /* whose request started last (fair turns) */
    void *monitor;     /* the client socket's handshake and frame failures */
    request **run;     /* (kv.max_seqs) admitted requests, in admission order */
    size_t n_run;
    const slm_kv_config *kv;
    slm_kvpool_t *pool;
    bool prefix_cache;    /* pool made with a prefix cache */
    uint64_t prefix_hits; /* blocks found in it, whose prefill was skipped */
    uint32_t n_tenant_ids;
    slm_step_seq *entries; /* (kv.max_seqs) the step being built */
    request **step_req;    /* (kv.max_seqs) whose each entry is */
    uint64_t served, rejected, malformed;
    double queued_notice_at; /* when the queue was last told its places */
} server;

static volatile sig_atomic_t g_signal;

static void on_signal(int sig)
{
    g_signal = sig;
}

static void request_free(request *r)
{
    if (!r)
        return;
    if (r->tenant)
        r->tenant->open--;
    free(r->id);
    free(r->ids);
    free(r->blocks);
    slm_sampler_destroy(&r->sampler);
    for (size_t i = 0; i < r->n_stops; i++)
        free(r->stops[i]);
    free(r->stops);
    free(r->held);
    free(r);
}

/* Sends m to one client without ever blocking the server: a client that is
 * gone (ROUTER_MANDATORY reports it) or does not read its replies (its
 * queue is full) loses the message, and the caller drops its request. */
static bool send_to(server *s, const uint8_t *peer, size_t peer_len,
                    const slm_server_msg *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (slm_client_pack_server(m, &buf, &len) != SLM_OK)
        return false;
    bool ok =
        zmq_send(s->sock, peer, peer_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
        zmq_send(s->sock, buf, len, ZMQ_DONTWAIT) >= 0;
    free(buf);
    return ok;
}

static void send_error(server *s, const uint8_t *peer, size_t peer_len,
                       const char *request_id, error_code code,
                       const char *message)
{
    Shardlm__Client__Error e = SHARDLM__CLIENT__ERROR__INIT;
    e.request_id = (char *)(request_id ? request_id : "");
    e.code = code;
    char text[SLM_CLIENT_MAX_STRING_BYTES];
    snprintf(text, sizeof text, "%s", message); /* the wire's length cap */
    e.message = text;
    slm_server_msg m = SHARDLM__CLIENT__SERVER_MESSAGE__INIT;
    m.body_case = SHARDLM__CLIENT__SERVER_MESSAGE__BODY_ERROR;
    m.error = &e;
    (void)send_to(s, peer, peer_len, &m);
}

/* Frees r, its KV blocks back to the pool (to be zeroed by the next
 * step). */
static void drop(server *s, request *r)
{
    if (r->n_blocks &&
        slm_kvpool_release(s->pool, r->blocks, r->n_blocks) != SLM_OK)
        fprintf(stderr, "shardlm serve: %s\n", slm_error_message());
    request_free(r);
}

/* Ends r with an Error and frees it. */
static void finish_error(server *s, request *r, error_code code,
                         const char *message)
{
    if (!r->gone)
        send_error(s, r->peer, r->peer_len, r->id, code, message);
    drop(s, r);
}

static void send_chunk(server *s, request *r, const int32_t *ids, size_t n_ids,
                       const char *text, size_t len)
{
    if (r->gone)
        return;
    char *t = malloc(len + 1);
    if (!t) {
        r->gone = true;
        return;
    }
    if (len)
        memcpy(t, text, len);
    t[len] = '\0';
    Shardlm__Client__Chunk c = SHARDLM__CLIENT__CHUNK__INIT;
    c.request_id = r->id;
    c.token_ids = (int32_t *)ids;
    c.n_token_ids = n_ids;
    c.text = t;
    slm_server_msg m = SHARDLM__CLIENT__SERVER_MESSAGE__INIT;
    m.body_case = SHARDLM__CLIENT__SERVER_MESSAGE__BODY_CHUNK;
    m.chunk = &c;
    if (!send_to(s, r->peer, r->peer_len, &m))
        r->gone = true;
    free(t);
}

static double ms(double seconds)
{
    return seconds > 0 ? seconds * 1000.0 : 0.0;
}

/* U+FFFD, for bytes that are not well-formed UTF-8. */
static const char replacement[] = "\xef\xbf\xbd";

/* Ends r normally: what is still held is sent, then Final. */
static void finish_final(server *s, request *r, finish_reason why)
{
    if (why != SHARDLM__CLIENT__FINAL__FINISH_REASON__STOP_SEQUENCE) {
        if (r->held_len)
            send_chunk(s, r, NULL, 0, r->held, r->held_len);
        if (r->tail_len) /* a character the model never finished */
            send_chunk(s, r, NULL, 0, replacement, 3);
    }
    const double now = slm_now_seconds();
    const double first = r->first_token > 0 ? r->first_token : now;
    Shardlm__Client__Final f = SHARDLM__CLIENT__FINAL__INIT;
    f.request_id = r->id;
    f.finish_reason = why;
    f.prompt_tokens = (uint32_t)r->n_prompt;
    f.completion_tokens = r->produced;
    f.queue_ms = ms(r->started - r->arrived);
    f.prefill_ms = ms(first - r->started);
    f.decode_ms = ms(now - first);
    slm_server_msg m = SHARDLM__CLIENT__SERVER_MESSAGE__INIT;
    m.body_case = SHARDLM__CLIENT__SERVER_MESSAGE__BODY_FINAL;
    m.final = &f;
    if (!r->gone)
        (void)send_to(s, r->peer, r->peer_len, &m);
    s->served++;
    drop(s, r);
}

/* ---- taking requests in ---- */

static bool same_request(const request *r, const uint8_t *peer, size_t peer_len,
                         const char *id)
{
    return r->peer_len == peer_len && memcmp(r->peer, peer, peer_len) == 0 &&
           strcmp(r->id, id) == 0;
}

static request *find(server *s, const uint8_t *peer, size_t peer_len,
                     const char *id, request **prev)
{
    *prev = NULL;
    for (request *r = s->head; r; *prev = r, r = r->next)
        if (same_request(r, peer, peer_len, id))
            return r;
    return NULL;
}

static void unlink_queued(server *s, request *r, request *prev)
{
    if (prev)
        prev->next = r->next;
    else
        s->head = r->next;
    if (s->tail == r)
        s->tail = prev;
    r->next = NULL;
    s->queued--;
    r->tenant->queued--;
}

/* Encodes a rendered chat prompt. The scaffolding of a chat format holds
 * special tokens as text ("<|im_start|>", "<s>"); model/chat refused them
 * in the contents, so parsing them here cannot let a user forge one. A
 * tokenizer.json encodes it as transformers' apply_chat_template does:
 * special tokens parsed, nothing added (the template put the bos where it
 * wants it). A llama2.c tokenizer has no special tokens: the rendered bos
 * at the start becomes its BOS id, and any other special string stays
 * text. */
static slm_status encode_chat(const server *s, const char *text, size_t len,
                              int32_t **ids, size_t *n)
{
    if (slm_tokenizer_is_hf(s->tok)) {
        const slm_encode_opts opts = {.parse_special = true};
        return slm_tokenizer_encode_ex(s->tok, text, len, &opts, ids, n);
    }
    const char *bos = slm_chat_bos(s->o->chat);
    const size_t k = strlen(bos);
    if (k && len >= k && memcmp(text, bos, k) == 0) {
        text += k;
        len -= k;
    }
    return slm_tokenizer_encode(s->tok, text, len, true, false, ids, n);
}

/* The prompt text of a validated conversation, in the server's chat
 * format with the assistant's turn opened. The caller owns *text. */
static slm_status render_chat(const server *s,
                              const Shardlm__Client__ChatMessages *c,
                              char **text, size_t *len)
{
    if (!s->o->chat)
        return slm_fail(
            SLM_ERR_INVALID, "this server does not take chat requests: %s",
            s->o->chat_unavailable ? s->o->chat_unavailable
                                   : "the model has no chat format");
    /* client_wire bounded the count (lim.max_messages) */
    slm_chat_message *m = calloc(c->n_messages ? c->n_messages : 1, sizeof *m);
    if (!m)
        return slm_fail(SLM_ERR_NOMEM, "out of memory");
    slm_status rc = SLM_OK;
    for (size_t i = 0; i < c->n_messages && rc == SLM_OK; i++) {
        const char *role = c->messages[i]->role;
        rc = slm_chat_role_parse(role, strlen(role), &m[i].role);
        m[i].content = c->messages[i]->content;
        m[i].len = strlen(m[i].content);
    }
    if (rc == SLM_OK)
        rc = slm_chat_render(s->o->chat, m, c->n_messages, true, text, len);
    free(m);
    return rc;
}

/* Builds a request from a validated GenerateRequest; a request the model
 * cannot take (its prompt does not fit) is INVALID_ARGUMENT with *why. */
static slm_status make_request(server *s, const uint8_t *peer, size_t peer_len,
                               const Shardlm__Client__GenerateRequest *g,
                               double now, request **out)
{
    request *r = calloc(1, sizeof *r);
    if (!r)
        return slm_fail(SLM_ERR_NOMEM, "out of memory");
    slm_status rc = SLM_OK;
    memcpy(r->peer, peer, peer_len);
    r->peer_len = peer_len;
    r->arrived = now;
    if (g->deadline_ms)
        r->deadline = now + (double)g->deadline_ms / 1000.0;
    if (!(r->id = strdup(g->request_id))) {
        rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    const int32_t seq_len = s->cfg->seq_len;
    if (g->input_case == SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_TOKEN_IDS) {
        /* Ids are the prompt as given; the tokenizer's BOS is put in front
         * unless there (or it has none). */
        const Shardlm__Client__TokenIds *t = g->token_ids;
        const int32_t bos_id = slm_tokenizer_bos_id(s->tok);
        const bool bos = bos_id >= 0 && t->ids[0] != bos_id;
        if (t->n_ids + bos > (size_t)seq_len) {
            rc = slm_fail(SLM_ERR_INVALID,
                          "the prompt is %zu tokens but the model's context "
                          "is %d",
                          t->n_ids + bos, seq_len);
            goto fail;
        }
        r->ids = malloc(((size_t)seq_len + 1) * sizeof *r->ids);
        if (!r->ids) {
            rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
            goto fail;
        }
        r->ids[0] = bos_id;
        memcpy(r->ids + bos, t->ids, t->n_ids * sizeof *t->ids);
        r->n = t->n_ids + bos;
    } else {
        if (g->input_case ==
            SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_MESSAGES) {
            char *text = NULL;
            size_t len = 0;
            SLM_CHECK_GOTO(render_chat(s, g->messages, &text, &len), rc, fail);
            rc = encode_chat(s, text, len, &r->ids, &r->n);
            free(text);
            SLM_CHECK_GOTO(rc, rc, fail);
        } else {
            const char *p = g->prompt ? g->prompt : "";
            SLM_CHECK_GOTO(slm_tokenizer_encode(s->tok, p, strlen(p), true,
                                                false, &r->ids, &r->n),
                           rc, fail);
        }
        if (r->n > (size_t)seq_len) {
            rc = slm_fail(SLM_ERR_INVALID,
                          "the prompt is %zu tokens but the model's context "
                          "is %d",
                          r->n, seq_len);
            goto fail;
        }
        int32_t *grown = realloc(r->ids, ((size_t)seq_len + 1) * sizeof *grown);
        if (!grown) {
            rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
            goto fail;
        }
        r->ids = grown;
    }
    if (r->n == 0) {
        rc = slm_fail(SLM_ERR_INVALID,
                      "the prompt is empty and this model's tokenizer adds "
                      "no BOS: there is no first token to start from");
        goto fail;
    }
    r->n_prompt = r->n;
    /* client_wire refused more than o->max_tokens, and the default is no
     * more; the context length ends a request too (LENGTH). */
    r->max_new = g->max_tokens ? g->max_tokens : s->o->default_tokens;
    r->ignore_eos = g->ignore_eos;
    slm_sampling_params sp = {0.0f, 0, 1.0f, 1.0f, 0};
    const Shardlm__Client__SamplingParams *q = g->sampling;
    if (q) { /* client_wire resolved the zero defaults and checked ranges */
        sp.temperature = q->temperature;
        sp.top_k = q->top_k;
        sp.top_p = q->top_p;
        sp.repetition_penalty = q->repetition_penalty;
    }
    /* No seed given: one from the clock, different per request. */
    sp.seed = q && q->has_seed ? q->seed
                               : (uint64_t)(now * 1e9) ^ (uint64_t)(uintptr_t)r;
    SLM_CHECK_GOTO(slm_sampler_create(s->cfg->vocab_size, &sp, &r->sampler), rc,
                   fail);
    /* A chat reply also ends at its format's end-of-turn ("<|im_end|>",
     * "<|eot_id|>"): as text, which any tokenizer decodes special tokens
     * to, so it works whichever tokenizer the model has. */
    size_t n_chat = 0;
    const char *const *chat_stops =
        g->input_case == SHARDLM__CLIENT__GENERATE_REQUEST__INPUT_MESSAGES
            ? slm_chat_stop_strings(s->o->chat, &n_chat)
            : NULL;
    if (g->n_stop + n_chat) {
        r->stops = calloc(g->n_stop + n_chat, sizeof *r->stops);
        if (!r->stops) {
            rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (; r->n_stops < g->n_stop + n_chat; r->n_stops++) {
            const char *stop = r->n_stops < g->n_stop
                                   ? g->stop[r->n_stops]
                                   : chat_stops[r->n_stops - g->n_stop];
            if (!(r->stops[r->n_stops] = strdup(stop))) {
                rc = slm_fail(SLM_ERR_NOMEM, "out of memory");
                goto fail;
            }
        }
    }
    *out = r;
    return SLM_OK;
fail:
    request_free(r);
    return rc;
}

/* The tenant called `name` ("" without CURVE), made at its first request;
 * NULL when memory ran out. */
static tenant *tenant_of(server *s, const char *name)
{
    if (!name || strlen(name) > SLM_ALLOWLIST_TENANT_MAX)
        name = ""; /* ZAP names are checked; only plaintext lacks one */
    for (tenant *t = s->tenants; t; t = t->next)
        if (strcmp(t->name, name) == 0)
            return t;
    tenant *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    strcpy(t->name, name);
    t->id = s->n_tenant_ids++;
    t->lim = slm_allowlist_limits(s->clients, name);
    t->next = s->tenants;
    s->tenants = t;
    return t;
}

/* Whether tenant t may open request g now; if not, why(cap) says why. A
 * tenant's limits come from the allowlist file (slm_tenant_limits). */
static bool within_quota(server *s, const tenant *t,
                         const Shardlm__Client__GenerateRequest *g, char *why,
                         size_t cap)
{
    const slm_tenant_limits *lim = &t->lim;
    if (lim->max_tokens && g->max_tokens > lim->max_tokens) {
        snprintf(why, cap,
                 "tenant %s may ask for at most %u tokens per request; this "
                 "one asks for %u",
                 t->name, lim->max_tokens, g->max_tokens);
        return false;
    }
    if (lim->concurrent && t->open >= lim->concurrent) {
        snprintf(why, cap,
                 "tenant %s has %u requests open, its limit; retry when one "
                 "ends",
                 t->name, t->open);
        return false;
    }
    if (lim->queue_share && (s->n_run >= s->kv->max_seqs || s->queued)) {
        /* it would wait */
        uint64_t share = (uint64_t)s->o->queue_depth * lim->queue_share / 100;
        if (share < 1)
            share = 1;
        if (t->queued >= share) {
            snprintf(why, cap,
                     "tenant %s has %u requests waiting, its share (%u%% of "
                     "the queue of %u); retry later",
                     t->name, t->queued, lim->queue_share, s->o->queue_depth);
            return false;
        }
    }
    return true;
}

static request *find_running(server *s, const uint8_t *peer, size_t peer_len,
                             const char *id)
{
    for (size_t i = 0; i < s->n_run; i++)
        if (same_request(s->run[i], peer, peer_len, id))
            return s->run[i];
    return NULL;
}

static void admit(server *s);

static void on_generate(server *s, const uint8_t *peer, size_t peer_len,
                        const char *tenant_name, const char *peer_address,
                        const Shardlm__Client__GenerateRequest *g, double now)
{
    request *prev = NULL;
    if (find(s, peer, peer_len, g->request_id, &prev) ||
        find_running(s, peer, peer_len, g->request_id)) {
        send_error(s, peer, peer_len, g->request_id,
                   SHARDLM__CLIENT__ERROR__CODE__INVALID_ARGUMENT,
                   "request_id is already in use by one of this client's "
                   "running or queued requests");
        return;
    }
    tenant *t = tenant_of(s, tenant_name);
    if (!t) {
        send_error(s, peer, peer_len, g->request_id,
                   SHARDLM__CLIENT__ERROR__CODE__RESOURCE_EXHAUSTED,
                   "out of memory");
        return;
    }
    char why[256];
    if (!within_quota(s, t, g, why, sizeof why)) {
        t->rejected++;
        s->rejected++;
        slm_audit_record(s->audit, SLM_AUDIT_QUOTA_REJECTED,
                         &(slm_audit_entry){.peer = peer_address,
                                            .domain = SLM_ZAP_DOMAIN_CLIENTS,
                                            .tenant = t->name,
                                            .reason = why});
        send_error(s, peer, peer_len, g->request_id,
                   SHARDLM__CLIENT__ERROR__CODE__RESOURCE_EXHAUSTED, why);
        return;
    }
    /* queue_depth counts requests waiting for a place in the batch; one
     * that can start at once never waits, even at depth 0. */
    if (s->queued >= s->o->queue_depth &&
        (s->n_run >= s->kv->max_seqs || s->queued)) {
        char msg[128];
        snprintf(msg, sizeof msg,
                 "the server is busy: %u requests are queued (the limit); "
                 "retry later",
                 s->queued);
        s->rejected++;
        send_error(s, peer, peer_len, g->request_id,
                   SHARDLM__CLIENT__ERROR__CODE__RESOURCE_EXHAUSTED, msg);
        return;
    }
    request *r = NULL;
    slm_status rc = make_request(s, peer, peer_len, g, now, &r);
    if (rc != SLM_OK) {
        send_error(s, peer, peer_len, g->request_id,
                   rc == SLM_ERR_NOMEM
                       ? SHARDLM__CLIENT__ERROR__CODE__RESOURCE_EXHAUSTED
                       : SHARDLM__CLIENT__ERROR__CODE__INVALID_ARGUMENT,
                   slm_error_message());
        return;
    }
    r->tenant = t;
    t->open++;
    t->queued++;
    if (t->lim.max_tokens && r->max_new > t->lim.max_tokens)
        r->max_new = t->lim.max_tokens; /* the server's default was more */
    if (s->tail)
        s->tail->next = r;
    else
        s->head = r;
    s->tail = r;
    s->queued++;
    admit(s);
    if (!r->blocks) { /* it waits: say so at once */
        Shardlm__Client__Queued q = SHARDLM__CLIENT__QUEUED__INIT;
        q.request_id = r->id;
        q.position = s->queued - 1;
        slm_server_msg m = SHARDLM__CLIENT__SERVER_MESSAGE__INIT;
        m.body_case = SHARDLM__CLIENT__SERVER_MESSAGE__BODY_QUEUED;
        m.queued = &q;
        if (!send_to(s, peer, peer_len, &m))
            r->gone = true;
    }
}

/* Tells every waiting request its place (see Queued in client.proto). */
static void notify_queue(server *s)
{
    uint32_t position = 0;
    for (request *r = s->head; r; r = r->next, position++) {
        Shardlm__Client__Queued q = SHARDLM__CLIENT__QUEUED__INIT;
        q.request_id = r->id;
        q.position = position;
        slm_server_msg m = SHARDLM__CLIENT__SERVER_MESSAGE__INIT;
        m.body_case = SHARDLM__CLIENT__SERVER_MESSAGE__BODY_QUEUED;
        m.queued = &q;
        if (!r->gone && !send_to(s, r->peer, r->peer_len, &m))
            r->gone = true; /* dropped when it reaches the front */
    }
}

static void on_cancel(server *s, const uint8_t *peer, size_t peer_len,
                      const char *id)
{
    request *prev = NULL;
    request *r = find(s, peer, peer_len, id, &prev);
    if (r) {
        unlink_queued(s, r, prev);
        finish_error(s, r, SHARDLM__CLIENT__ERROR__CODE__CANCELLED,
                     "cancelled by the client while queued");
    } else if ((r = find_running(s, peer, peer_len, id))) {
        r->cancelled = true; /* ends before its next step */
    }
}

static void on_health(server *s, const uint8_t *peer, size_t peer_len)
{
    const int32_t n = slm_cluster_shards(s->cluster);
    const int32_t lost = slm_cluster_lost_shard(s->cluster);
    const double beat_ms =
        2.0 * slm_cluster_get_timing(s->cluster)->heartbeat_ms;
    Shardlm__Client__HealthResponse h = SHARDLM__CLIENT__HEALTH_RESPONSE__INIT;
    Shardlm__Client__HealthResponse__RankHealth *ranks =
        calloc((size_t)n + 1, sizeof *ranks);
    Shardlm__Client__HealthResponse__RankHealth **list =
        calloc((size_t)n + 1, sizeof *list);
    char(*detail)[160] = calloc((size_t)n + 1, sizeof *detail);
    if (!ranks || !list || !detail) {
        send_error(s, peer, peer_len, "",
                   SHARDLM__CLIENT__ERROR__CODE__RESOURCE_EXHAUSTED,
                   "out of memory");
        goto done;
    }
    h.state = SHARDLM__CLIENT__HEALTH_RESPONSE__STATE__SERVING;
    for (int32_t i = 0; i <= n; i++) {
        Shardlm__Client__HealthResponse__RankHealth *rk = &ranks[i];
        shardlm__client__health_response__rank_health__init(rk);
        rk->rank = (uint32_t)i;
        rk->state = SHARDLM__CLIENT__HEALTH_RESPONSE__STATE__SERVING;
        if (i == 0) {
            snprintf(detail[i], sizeof detail[i],
                     "coordinator: %u queued, %zu running, %llu served, "
                     "%llu rejected, kv blocks %zu of %zu free, %zu cached, "
                     "%llu prefix hits",
                     s->queued, s->n_run, (unsigned long long)s->served,
                     (unsigned long long)s->rejected,
                     slm_kvpool_free_count(s->pool), slm_kvpool_total(s->pool),
                     slm_kvpool_cached_count(s->pool),
                     (unsigned long long)s->prefix_hits);
        } else {
            const double age = slm_cluster_heartbeat_age_ms(s->cluster, i - 1);
            rk->last_heartbeat_ms = age > 0 ? (uint64_t)age : 0;
            const char *what = "";
            if (lost == i - 1) {
                rk->state = SHARDLM__CLIENT__HEALTH_RESPONSE__STATE__FAILING;
                what = ": lost";
            } else if (age > beat_ms) {
                /* a beat or more late: not lost yet, but slow */
                rk->state = SHARDLM__CLIENT__HEALTH_RESPONSE__STATE__DEGRADED;
                what = ": heartbeat late";
            }
            snprintf(detail[i], sizeof detail[i], "shard %d%s", i - 1, what);
            if (rk->state > h.state)
                h.state = rk->state;
        }
        rk->detail = detail[i];
        list[i] = rk;
    }
    h.ranks = list;
    h.n_ranks = (size_t)n + 1;
    slm_server_msg m = SHARDLM__CLIENT__SERVER_MESSAGE__INIT;
    m.body_case = SHARDLM__CLIENT__SERVER_MESSAGE__BODY_HEALTH;
    m.health = &h;
    (void)send_to(s, peer, peer_len, &m);
done:
    free(ranks);
    free(list);
    free(detail);
}

static void on_info(server *s, const uint8_t *peer, size_t peer_len)
{
    Shardlm__Client__InfoResponse i = SHARDLM__CLIENT__INFO_RESPONSE__INIT;
    char model[SLM_CLIENT_MAX_STRING_BYTES];
    snprintf(model, sizeof model, "%s", s->o->model_name);
    i.model = model;
    i.tp = (uint32_t)s->o->tp;
    i.pp = (uint32_t)s->o->pp;
    i.vocab_size = (uint32_t)s->cfg->vocab_size;
    i.seq_len = (uint32_t)s->cfg->seq_len;
    i.version = (char *)SLM_VERSION;
    slm_server_msg m = SHARDLM__CLIENT__SERVER_MESSAGE__INIT;
    m.body_case = SHARDLM__CLIENT__SERVER_MESSAGE__BODY_INFO;
    m.info = &i;
    (void)send_to(s, peer, peer_len, &m);
}

/* A client's message failed validation: who (the ZAP handler's tenant and
 * the peer's address, which ZeroMQ attaches to every frame) and why. */
static void audit_malformed(server *s, zmq_msg_t *frame, const char *why)
{
    const char *tenant_name = zmq_msg_gets(frame, "User-Id");
    const char *peer = zmq_msg_gets(frame, "Peer-Address");
    slm_audit_record(s->audit, SLM_AUDIT_MALFORMED_MESSAGE,
                     &(slm_audit_entry){.peer = peer,
                                        .domain = SLM_ZAP_DOMAIN_CLIENTS,
                                        .tenant = tenant_name,
                                        .reason = why});
}

/* One message from a client: [routing id][body]. Anything else is dropped
 * whole; a body that does not validate gets INVALID_ARGUMENT. */
static void take_one(server *s, double now)
{
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&id, s->sock, ZMQ_DONTWAIT) < 0)
        goto done;
    uint8_t peer[PEER_MAX];
    size_t peer_len = zmq_msg_size(&id);
    if (peer_len > sizeof peer)
        peer_len = sizeof peer;
    memcpy(peer, zmq_msg_data(&id), peer_len);
    bool more = zmq_msg_more(&id);
    int frames = 0;
    while (more) { /* keep the first body frame, count the rest */
        zmq_msg_t *into = frames == 0 ? &body : &id;
        if (zmq_msg_recv(into, s->sock, ZMQ_DONTWAIT) < 0)
            break;
        frames++;
        more = zmq_msg_more(into);
    }
    if (frames != 1) {
        s->malformed++;
        audit_malformed(s, &id, "not exactly one frame");
        send_error(s, peer, peer_len, "",
                   SHARDLM__CLIENT__ERROR__CODE__INVALID_ARGUMENT,
                   frames ? "a message must be exactly one frame"
                          : "empty message");
        goto done;
    }
    slm_client_msg *m = NULL;
    if (slm_client_unpack_request(zmq_msg_data(&body), zmq_msg_size(&body),
                                  &s->lim, &m) != SLM_OK) {
        s->malformed++;
        audit_malformed(s, &body, slm_error_message());
        send_error(s, peer, peer_len, "",
                   SHARDLM__CLIENT__ERROR__CODE__INVALID_ARGUMENT,
                   slm_error_message());
        goto done;
    }
    switch (m->body_case) {
    case SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_GENERATE:
        /* The tenant is what the ZAP handler said for this connection's
         * key: a client cannot name its own. */
        on_generate(s, peer, peer_len, zmq_msg_gets(&body, "User-Id"),
                    zmq_msg_gets(&body, "Peer-Address"), m->generate, now);
        break;
    case SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_CANCEL:
        on_cancel(s, peer, peer_len, m->cancel->request_id);
        break;
    case SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_HEALTH:
        on_health(s, peer, peer_len);
        break;
    case SHARDLM__CLIENT__CLIENT_MESSAGE__BODY_INFO:
        on_info(s, peer, peer_len);
        break;
    default: /* client_wire admits only the four */
        break;
    }
    slm_client_free_request(&m);
done:
    zmq_msg_close(&id);
    zmq_msg_close(&body);
}

/* ---- frames that fail CURVE's checks ----
 *
 * After the handshake every CURVE frame carries a nonce that must grow and a
 * MAC; ZeroMQ drops the connection of a peer whose frame fails either, so a
 * tampered, replayed or reordered frame never reaches the parser. It tells
 * only the socket's monitor, which is read here to put each case in the
 * audit log; a plaintext peer at a CURVE socket (mechanism mismatch) and a
 * malformed handshake come the same way. */

#define MONITOR_ENDPOINT "inproc://shardlm-client-monitor"

static void drain_monitor(server *s)
{
    for (int i = 0; s->monitor && i < 64; i++) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        zmq_msg_init(&addr);
        const bool got = zmq_msg_recv(&ev, s->monitor, ZMQ_DONTWAIT) >= 0 &&
                         zmq_msg_more(&ev) &&
                         zmq_msg_recv(&addr, s->monitor, ZMQ_DONTWAIT) >= 0;
        if (got && zmq_msg_size(&ev) == 6) {
            uint16_t event;
            uint32_t value;
            memcpy(&event, zmq_msg_data(&ev), 2);
            memcpy(&value, (const uint8_t *)zmq_msg_data(&ev) + 2, 4);
            char where[128];
            size_t n = zmq_msg_size(&addr);
            if (n >= sizeof where)
                n = sizeof where - 1;
            memcpy(where, zmq_msg_data(&addr), n);
            where[n] = '\0';
            slm_zap_audit_handshake(s->audit, SLM_ZAP_DOMAIN_CLIENTS, event,
                                    value, where);
        }
        zmq_msg_close(&ev);
        zmq_msg_close(&addr);
        if (!got)
            break;
    }
}

/* Messages taken per wake-up, and the time spent on them: bounded so that
 * a flood of clients cannot starve the running request's steps (the rest
 * wait in the socket for the next wake-up). */
#define TAKE_PER_WAKEUP 256
#define TAKE_SECONDS    0.010

static slm_status on_wakeup(void *user, bool readable)
{
    server *s = user;
    const double now = slm_now_seconds();
    drain_monitor(s);
    for (int i = 0; readable && i < TAKE_PER_WAKEUP &&
                    slm_now_seconds() - now < TAKE_SECONDS;
         i++) {
        int events = 0;
        size_t len = sizeof events;
        if (zmq_getsockopt(s->sock, ZMQ_EVENTS, &events, &len) != 0 ||
            !(events & ZMQ_POLLIN))
            break;
        take_one(s, now);
    }
    return SLM_OK;
}

/* ---- running requests ---- */

/* Grows r->held to hold `more` bytes beyond its length. */
static bool held_reserve(request *r, size_t more)
{
    if (r->held_len + more <= r->held_cap)
        return true;
    size_t cap = 2 * (r->held_len + more) + 64;
    char *h = realloc(r->held, cap);
    if (!h)
        return false;
    r->held = h;
    r->held_cap = cap;
    return true;
}

/* Appends r->tail + piece to r->held as well-formed UTF-8 without NUL: a
 * Chunk's text is a proto3 string, which other languages' parsers reject
 * when it is not UTF-8. Byte-fallback tokens split one character over
 * several tokens, so an incomplete character waits in r->tail; malformed
 * bytes become U+FFFD and NULs are dropped. */
static bool held_append_utf8(request *r, const char *piece, size_t len)
{
    const size_t n = r->tail_len + len;
    if (n == 0) /* an empty or hidden piece: r->held may still be NULL */
        return true;
    uint8_t *in = malloc(n);
    if (!in || !held_reserve(r, 3 * n)) { /* each byte: at most U+FFFD */
        free(in);
        return false;
    }
    memcpy(in, r->tail, r->tail_len);
    memcpy(in + r->tail_len, piece, len);
    r->tail_len = 0;
    for (size_t i = 0; i < n;) {
        const int k = slm_utf8_sequence(in + i, n - i);
        if (k == 0) { /* at most 3 bytes: the rest of a 4-byte sequence */
            r->tail_len = n - i;
            memcpy(r->tail, in + i, r->tail_len);
            break;
        }
        if (k < 0) {
            memcpy(r->held + r->held_len, replacement, 3);
            r->held_len += 3;
            i++;
            continue;
        }
        if (in[i] != 0) {
            memcpy(r->held + r->held_len, in + i, (size_t)k);
            r->held_len += (size_t)k;
        }
        i += (size_t)k;
    }
    free(in);
    return true;
}

/* Sends the text of token `id` (piece(len)) as one Chunk, holding back
 * whatever could still begin a stop sequence or finish a character. Sets
 * *stopped when a stop sequence appeared: the text before it was sent and
 * the rest is dropped. False when memory ran out. */
static bool emit_piece(server *s, request *r, int32_t id, const char *piece,
                       size_t len, bool *stopped)
{
    *stopped = false;
    if (!held_append_utf8(r, piece, len))
        return false;
    /* What was sent before could not begin a stop, so a stop that appears
     * now lies wholly in the held text. */
    size_t first = r->held_len;
    for (size_t i = 0; i < r->n_stops; i++) {
        const char *at =
            memmem(r->held, r->held_len, r->stops[i], strlen(r->stops[i]));
        if (at && (size_t)(at - r->held) < first)
            first = (size_t)(at - r->held);
    }
    if (first < r->held_len) {
        send_chunk(s, r, &id, 1, r->held, first);
        r->held_len = 0;
        *stopped = true;
        return true;
    }
    size_t keep = 0; /* the longest tail that begins some stop */
    for (size_t i = 0; i < r->n_stops; i++) {
        const size_t sl = strlen(r->stops[i]);
        for (size_t k = sl - 1 < r->held_len ? sl - 1 : r->held_len; k > keep;
             k--)
            if (memcmp(r->held + r->held_len - k, r->stops[i], k) == 0) {
                keep = k;
                break;
            }
    }
    const size_t sent = r->held_len - keep;
    send_chunk(s, r, &id, 1, r->held, sent);
    if (keep)
        memmove(r->held, r->held + sent, keep);
    r->held_len = keep;
    return true;
}

/* ---- the batch ----
 *
 * Admitted requests run together (continuous batching): each step carries
 * every running sequence - one token for those generating, a chunk of the
 * prompt for those still reading it, within the step's token budget - and
 * a new request joins at the next step, a finished one leaves at once. */

/* Removes run[i], keeping the order (the oldest are fed first). */
static void unrun(server *s, size_t i)
{
    memmove(&s->run[i], &s->run[i + 1], (s->n_run - i - 1) * sizeof *s->run);
    s->n_run--;
}

/* Ends run[i] if it was cancelled, its deadline passed, its client is gone
 * or it may make no tokens at all; returns whether it did. */
static bool end_if_due(server *s, size_t i)
{
    request *r = s->run[i];
    const double now = slm_now_seconds();
    if (r->gone || r->cancelled || (r->deadline > 0 && now >= r->deadline) ||
        r->max_new == 0) {
        unrun(s, i);
        if (r->gone) {
            drop(s, r);
        } else if (r->cancelled) {
            finish_error(s, r, SHARDLM__CLIENT__ERROR__CODE__CANCELLED,
                         "cancelled by the client");
        } else if (r->max_new == 0) {
            finish_final(s, r, SHARDLM__CLIENT__FINAL__FINISH_REASON__LENGTH);
        } else {
            finish_error(s, r, SHARDLM__CLIENT__ERROR__CODE__DEADLINE_EXCEEDED,
                         "the request's deadline passed while it ran");
        }
        return true;
    }
    return false;
}

/* The next request to admit: the oldest of the next tenant, in turn, that
 * has one waiting - so a tenant with many queued requests delays another's
 * by at most one of its own (the queue is FIFO within a tenant). */
static request *next_turn(server *s, request **prev_out)
{
    *prev_out = NULL;
    if (!s->head)
        return NULL;
    tenant *first =
        s->last_turn && s->last_turn->next ? s->last_turn->next : s->tenants;
    tenant *t = first, *pick = NULL;
    do {
        if (t->queued) {
            pick = t;
            break;
        }
        t = t->next ? t->next : s->tenants;
    } while (t != first);
    request *prev = NULL;
    for (request *r = s->head; r; prev = r, r = r->next)
        if (r->tenant == pick) {
            *prev_out = prev;
            return r;
        }
    *prev_out = NULL; /* not reached: a queued request has a tenant */
    return s->head;
}

/* Admits waiting requests, in turns between tenants, while the batch has a
 * place and the KV pool can hold the next one's whole context; when it
 * cannot, the request waits (backpressure), and so do those behind it. */
static void admit(server *s)
{
    const size_t bs = s->kv->block_size;
    while (s->n_run < s->kv->max_seqs && s->head) {
        request *prev = NULL;
        request *r = next_turn(s, &prev);
        if (!r)
            return;
        /* Positions it can reach: its prompt and what it may generate,
         * within the context (the last sampled token is never fed). */
        size_t reach = r->n_prompt + r->max_new;
        if (reach > (size_t)s->cfg->seq_len)
            reach = (size_t)s->cfg->seq_len;
        const size_t need = (reach + bs - 1) / bs;
        uint32_t *blocks = malloc((need ? need : 1) * sizeof *blocks);
        if (!blocks)
            return; /* retried at the next wake-up */
        /* The full blocks before the prompt's last token (which must run
         * for its logits) may be cached: its table starts with them and
         * their prefill is skipped. n_prompt counts BOS, so >= 1; matched
         * <= need, as matched * bs < n_prompt <= reach. */
        size_t matched = 0;
        if (s->prefix_cache)
            matched = slm_kvpool_lookup(s->pool, r->tenant->id, r->ids,
                                        (r->n_prompt - 1) / bs, blocks);
        if (!slm_kvpool_alloc(s->pool, need - matched, blocks + matched)) {
            if (matched &&
                slm_kvpool_release(s->pool, blocks, matched) != SLM_OK)
                fprintf(stderr, "shardlm serve: %s\n", slm_error_message());
            free(blocks);
            return;
        }
        unlink_queued(s, r, prev);
        s->last_turn = r->tenant;
        r->blocks = blocks;
        r->n_blocks = need;
        r->pos = (int32_t)(matched * bs);
        r->n_registered = matched;
        s->prefix_hits += matched;
        r->started = slm_now_seconds();
        s->run[s->n_run++] = r;
    }
}

/* Appends r's next token (sampled from the logits of the step that fed
 * its last known token); returns whether r is finished (and was ended). */
static bool take_token(server *s, request *r, int32_t next)
{
    if (r->first_token == 0)
        r->first_token = slm_now_seconds();
    if (slm_model_config_is_stop(s->cfg, next) && !r->ignore_eos) {
        finish_final(s, r, SHARDLM__CLIENT__FINAL__FINISH_REASON__STOP);
        return true;
    }
    const int32_t prev = r->ids[r->n - 1];
    r->ids[r->n++] = next;
    r->produced++;
    size_t len = 0;
    const char *piece = slm_tokenizer_decode(s->tok, prev, next, &len);
    if (!slm_piece_printable(piece, len))
        len = 0;
    bool stopped = false;
    if (!emit_piece(s, r, next, piece, len, &stopped)) {
        finish_error(s, r, SHARDLM__CLIENT__ERROR__CODE__RESOURCE_EXHAUSTED,
                     "out of memory for the request's text");
        return true;
    }
    if (stopped) {
        finish_final(s, r,
                     SHARDLM__CLIENT__FINAL__FINISH_REASON__STOP_SEQUENCE);
        return true;
    }
    if (r->produced >= r->max_new || r->n >= (size_t)s->cfg->seq_len) {
        finish_final(s, r, SHARDLM__CLIENT__FINAL__FINISH_REASON__LENGTH);
        return true;
    }
    return false;
}

/* Offers the prefix cache each block of r now written in full (all its
 * positions before r->pos), prompt or generated: a later request of r's
 * tenant whose prompt begins with the same tokens may read it. */
static void offer_blocks(server *s, request *r)
{
    if (!s->prefix_cache)
        return;
    const size_t bs = s->kv->block_size;
    for (size_t b = r->n_registered;
         b < r->n_blocks && (b + 1) * bs <= (size_t)r->pos; b++) {
        const uint32_t parent = b ? r->blocks[b - 1] : SLM_KVPOOL_NO_PARENT;
        if (slm_kvpool_register(s->pool, r->blocks[b], r->tenant->id, parent,
                                r->ids + b * bs) != SLM_OK)
            fprintf(stderr, "shardlm serve: %s\n", slm_error_message());
        r->n_registered = b + 1;
    }
}

/* One step of the whole batch. Generating sequences go first (one token
 * each), then prompts in chunks from what is left of the token budget, so
 * that a long prompt never stalls the streams already running. A failure
 * of the cluster is returned (the caller fails every request). */
static slm_status run_step(server *s)
{
    for (size_t i = 0; i < s->n_run;)
        if (!end_if_due(s, i))
            i++;
    size_t budget = s->kv->max_tokens, n = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < s->n_run && budget; i++) {
            request *r = s->run[i];
            const size_t left = r->n - (size_t)r->pos; /* >= 1 */
            if ((pass == 0) != (left == 1))
                continue;
            const size_t chunk = left < budget ? left : budget;
            s->step_req[n] = r;
            s->entries[n++] = (slm_step_seq){
                .tokens = r->ids + r->pos,
                .n_tokens = chunk,
                .pos = r->pos,
                .blocks = r->blocks,
                .n_blocks = r->n_blocks,
                .want_logits = chunk == left,
                .want_argmax = slm_sampler_greedy(r->sampler),
            };
            budget -= chunk;
        }
    }
    slm_step st = {.seqs = s->entries, .n_seqs = n};
    slm_kvpool_take_freed(s->pool, &st.free_blocks, &st.n_free);
    if (n == 0 && st.n_free == 0)
        return slm_cluster_pump(s->cluster, SLM_CLUSTER_TICK_MS);
    slm_step_out out;
    SLM_CHECK(s->runner.step(s->runner.ctx, &st, &out));
    /* Requests admitted while the step ran are not among its entries; none
     * ended meanwhile (cancels only mark them). */
    const size_t vocab = (size_t)s->cfg->vocab_size;
    size_t row = 0, picked = 0;
    for (size_t e = 0; e < n; e++) {
        request *r = s->step_req[e];
        r->pos += (int32_t)s->entries[e].n_tokens;
        offer_blocks(s, r);
        if (!s->entries[e].want_logits)
            continue;
        int32_t next;
        if (out.argmax && s->entries[e].want_argmax) {
            /* the greedy sampler's own answer (slm_sampler_greedy) */
            if (picked >= out.n_argmax)
                return slm_fail(SLM_ERR_INTERNAL, "step: too few argmax ids");
            next = out.argmax[picked++];
        } else {
            if (row >= out.rows)
                return slm_fail(SLM_ERR_INTERNAL,
                                "step: too few rows of logits");
            /* The sampler may rewrite the row: it is the step's scratch. */
            next = slm_sampler_sample(r->sampler,
                                      (float *)(out.logits + row++ * vocab),
                                      r->ids, r->n);
        }
        if (take_token(s, r, next)) {
            size_t i = 0;
            while (i < s->n_run && s->run[i] != r)
                i++;
            if (i < s->n_run)
                unrun(s, i);
        }
    }
    return SLM_OK;
}

/* Queued requests whose deadline passed leave. (A client that went away is
 * noticed when its request runs: its first Chunk cannot be delivered.) */
static void sweep_queue(server *s, double now)
{
    request *prev = NULL;
    for (request *r = s->head; r;) {
        request *next = r->next;
        if (r->deadline > 0 && now >= r->deadline) {
            unlink_queued(s, r, prev);
            finish_error(s, r, SHARDLM__CLIENT__ERROR__CODE__DEADLINE_EXCEEDED,
                         "the request's deadline passed while it was queued");
        } else {
            prev = r;
        }
        r = next;
    }
}

/* Every request still open ends with `code` and `message`. */
static void fail_all(server *s, error_code code, const char *message)
{
    while (s->n_run) {
        request *r = s->run[s->n_run - 1];
        s->n_run--;
        finish_error(s, r, code, message);
    }
    while (s->head) {
        request *r = s->head;
        unlink_queued(s, r, NULL);
        finish_error(s, r, code, message);
    }
}

static slm_status open_socket(server *s)
{
    /* CURVE's box travels in each frame and counts against the limit. */
    const int64_t max = (int64_t)SLM_CLIENT_MAX_MESSAGE_BYTES +
                        (s->o->insecure ? 0 : SLM_ZKEY_CURVE_OVERHEAD);
    /* Messages buffered per client: a few requests' worth, so a client that
     * floods cannot park gigabytes in the socket. */
    const int zero = 0, one = 1, hwm = 64;
    /* ZMTP pings: a connection that stops answering (a dead client, or one
     * whose stream ZeroMQ stopped reading after a frame failed CURVE's
     * checks) is closed after a few seconds rather than held. */
    const int ping_ms = 1000, ping_timeout_ms = 3000;
    s->ctx = zmq_ctx_new();
    s->sock = s->ctx ? zmq_socket(s->ctx, ZMQ_ROUTER) : NULL;
    if (!s->sock)
        return slm_fail(SLM_ERR_IO, "serve: cannot create the client socket");
    /* An oversized frame drops its sender's connection inside ZeroMQ,
     * before a byte of it reaches us. */
    if (zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &max, sizeof max) != 0 ||
        zmq_setsockopt(s->sock, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(s->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(s->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one) != 0 ||
        zmq_setsockopt(s->sock, ZMQ_HEARTBEAT_IVL, &ping_ms, sizeof ping_ms) !=
            0 ||
        zmq_setsockopt(s->sock, ZMQ_HEARTBEAT_TIMEOUT, &ping_timeout_ms,
                       sizeof ping_timeout_ms) != 0)
        return slm_fail(SLM_ERR_IO, "serve: zmq_setsockopt: %s",
                        zmq_strerror(zmq_errno()));
    SLM_CHECK(slm_audit_open(&(slm_audit_options){.path = s->o->audit_log},
                             &s->audit));
    if (zmq_socket_monitor(s->sock, MONITOR_ENDPOINT,
                           SLM_ZAP_HANDSHAKE_EVENTS) != 0 ||
        !(s->monitor = zmq_socket(s->ctx, ZMQ_PAIR)) ||
        zmq_setsockopt(s->monitor, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_connect(s->monitor, MONITOR_ENDPOINT) != 0)
        return slm_fail(SLM_ERR_IO,
                        "serve: cannot monitor the client socket: %s",
                        zmq_strerror(zmq_errno()));
    if (s->o->insecure) {
        fprintf(stderr,
                "shardlm serve: WARNING: --insecure: the client API "
                "is plaintext and admits anyone who can reach %s\n",
                s->o->listen);
    } else {
        if (!s->o->server_key_file || !s->o->clients_file)
            return slm_fail(SLM_ERR_INVALID,
                            "serve needs --server-key FILE and --clients FILE "
                            "(CURVE, only listed clients), or --insecure");
        char secret[SLM_ZKEY_Z85_BUF];
        SLM_CHECK(slm_allowlist_load(s->o->clients_file,
                                     SLM_ALLOWLIST_MAX_ENTRIES, &s->clients));
        SLM_CHECK(slm_zkeys_load_secret(s->o->server_key_file, s->public_key,
                                        secret));
        /* The handler runs before the socket is bound: no peer is ever
         * let in unvetted (and ZAP_ENFORCE_DOMAIN refuses all without it). */
        slm_status rc =
            slm_zap_start(s->ctx, s->clients, NULL, s->audit, &s->zap);
        if (rc == SLM_OK)
            rc =
                slm_zkeys_apply_server(s->sock, secret, SLM_ZAP_DOMAIN_CLIENTS);
        slm_zkeys_wipe(secret, sizeof secret);
        SLM_CHECK(rc);
    }
    size_t len = sizeof s->endpoint;
    if (zmq_bind(s->sock, s->o->listen) != 0 ||
        zmq_getsockopt(s->sock, ZMQ_LAST_ENDPOINT, s->endpoint, &len) != 0)
        return slm_fail(SLM_ERR_IO, "serve: cannot listen on %s: %s",
                        s->o->listen, zmq_strerror(zmq_errno()));
    return SLM_OK;
}

slm_status slm_server_run(slm_cluster_t *cluster, const slm_model_config *cfg,
                          const slm_tokenizer_t *tok,
                          const slm_server_options *o)
{
    server s = {0};
    s.cluster = cluster;
    s.runner = slm_cluster_runner(cluster);
    s.cfg = cfg;
    s.tok = tok;
    s.o = o;
    s.lim = slm_client_default_limits((uint32_t)cfg->vocab_size, o->max_tokens);
    /* A prompt longer than the context could ever hold is refused by size,
     * before any time goes into encoding it. */
    const uint64_t fits =
        (uint64_t)cfg->seq_len * (uint64_t)slm_tokenizer_max_token_bytes(tok);
    if (fits > 0 && fits < s.lim.max_prompt_bytes)
        s.lim.max_prompt_bytes = (uint32_t)fits;
    /* Shards on GPUs take one token of one sequence per step: the same
     * pool, no batches. */
    slm_kv_config sched = *s.runner.kv;
    if (slm_cluster_single_sequence(cluster)) {
        sched.max_seqs = sched.max_tokens = 1;
        fprintf(stderr, "shardlm serve: the shards run on GPUs, one request "
                        "at a time (batching is on the CPU backend)\n");
    }
    s.kv = &sched;
    s.run = calloc(s.kv->max_seqs, sizeof *s.run);
    s.entries = calloc(s.kv->max_seqs, sizeof *s.entries);
    s.step_req = calloc(s.kv->max_seqs, sizeof *s.step_req);
    /* GPU shards keep one sequence's cache of their own and ignore block
     * tables (shard/device.c), so only CPU shards can share prefixes. */
    s.prefix_cache = o->prefix_cache && !slm_cluster_single_sequence(cluster);
    slm_status rc = s.prefix_cache
                        ? slm_kvpool_create_cached(s.kv->n_blocks,
                                                   s.kv->block_size, &s.pool)
                        : slm_kvpool_create(s.kv->n_blocks, &s.pool);
    if (rc == SLM_OK && (!s.run || !s.entries || !s.step_req))
        rc = slm_fail(SLM_ERR_NOMEM, "serve: out of memory");
    if (rc == SLM_OK)
        rc = open_socket(&s);
    if (rc != SLM_OK)
        goto close;

    struct sigaction sa, old_term, old_int;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: wake the poll */
    sigemptyset(&sa.sa_mask);
    g_signal = 0;
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGINT, &sa, &old_int);
    slm_cluster_watch(cluster, s.sock, on_wakeup, &s);
    /* The bound endpoint, so that "tcp://127.0.0.1:*" can be found. */
    fprintf(stderr,
            "shardlm serve: listening on %s (queue %u, max_tokens %u, batch "
            "%zu, %zu tokens per step, %zu KV blocks of %zu, %s%s)\n",
            s.endpoint, o->queue_depth, o->max_tokens, s.kv->max_seqs,
            s.kv->max_tokens, s.kv->n_blocks, s.kv->block_size,
            o->insecure ? "plaintext" : "CURVE, server key ",
            o->insecure ? "" : s.public_key);

    while (!g_signal && rc == SLM_OK) {
        const double now = slm_now_seconds();
        drain_monitor(&s);
        sweep_queue(&s, now);
        if (s.head && now - s.queued_notice_at >= 1.0) {
            notify_queue(&s);
            s.queued_notice_at = now;
        }
        admit(&s);
        rc = run_step(&s);
    }
    char why[512];
    if (rc != SLM_OK)
        snprintf(why, sizeof why, "the cluster failed: %s",
                 slm_error_message());
    else
        snprintf(why, sizeof why, "the server is shutting down (signal %d)",
                 (int)g_signal);
    /* A last batch of what is still in the socket gets its answer too. */
    (void)on_wakeup(&s, true);
    fail_all(&s, SHARDLM__CLIENT__ERROR__CODE__UNAVAILABLE, why);
    slm_cluster_watch(cluster, NULL, NULL, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGINT, &old_int, NULL);
    fprintf(stderr,
            "shardlm serve: %s; %llu served, %llu rejected, %llu malformed "
            "messages\n",
            why, (unsigned long long)s.served, (unsigned long long)s.rejected,
            (unsigned long long)s.malformed);
    if (rc != SLM_OK)
        slm_fail(rc, "%s", why); /* the caller reports it */
close:
    if (s.sock) {
        /* Let the last replies leave, but never wait long for a client. */
        const int linger_ms = 1000;
        (void)zmq_setsockopt(s.sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
        zmq_socket_monitor(s.sock, NULL, 0);
        zmq_close(s.sock);
    }
    if (s.monitor)
        zmq_close(s.monitor);
    while (s.tenants) {
        tenant *t = s.tenants;
        s.tenants = t->next;
        free(t);
    }
    slm_zap_stop(&s.zap); /* before the context ends: it holds a socket */
    if (s.ctx)
        zmq_ctx_term(s.ctx);
    slm_allowlist_destroy(&s.clients);
    free(s.run);
    free(s.entries);
    free(s.step_req);
    slm_kvpool_destroy(&s.pool);
    slm_audit_close(&s.audit);
    return rc;
}
