/* coordinator/cluster.c - see cluster.h. */
#include "coordinator/cluster.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "collectives/comm_mpi.h"
#include "common/audit.h"
#include "common/zap.h"
#include "common/zkeys.h"
#include "common/clock.h"
#include "proto/transport.h"

struct slm_cluster {
    void *ctx;
    void *sock;    /* ROUTER */
    void *monitor; /* PAIR: the ROUTER's disconnect events */
    int32_t n_shards;
    int32_t decider;
    slm_model_config cfg;
    slm_wire_limits lim;
    slm_cluster_timing timing;
    uint64_t seq;           /* last step sent */
    uint64_t *weight_bytes; /* (n_shards) from each Hello */
    double *last_beat;      /* (n_shards) when each was last heard from */
    uint8_t *answered;      /* (n_shards) who answered the current step */
    int32_t n_answered;
    slm_kv_config kv;
    bool single_sequence; /* some shard takes one token of one sequence */
    size_t want_rows;     /* rows of logits the step in flight asked for */
    size_t want_argmax;   /* argmax ids it asked for instead of rows */
    size_t rows;          /* rows the decider sent */
    bool have_logits;
    float *logits;   /* (max_seqs, vocab) the last step's logits */
    int32_t *argmax; /* (max_seqs) and argmax ids */
    /* The unbatched path (cluster_forward): one sequence in blocks 0, 1,
     * ..., of which single_blocks were written since they were zeroed. */
    uint32_t *identity;
    size_t single_blocks;
    Shardlm__Control__StepSequence *step_seqs;  /* (max_seqs) */
    Shardlm__Control__StepSequence **step_list; /* (max_seqs) */
    /* (n_shards) when a connection of each shard dropped (0: none): a shard
     * that has not beaten again within two intervals is gone (a network
     * blip would reconnect and beat). */
    double *dropped_at;
    /* The connections (file descriptors) each shard's messages came from,
     * so that a monitor's disconnect event names its shard; a bare TCP
     * probe of the port never appears here. Also how shutdown sees every
     * shard leave. */
    struct {
        int fd;
        int32_t shard;
    } * conns;
    size_t n_conns, cap_conns;
    int32_t lost;                /* -1 while every shard is healthy */
    char lost_why[256];          /* why, once lost >= 0 */
    slm_allowlist_t *shard_keys; /* their per-job CURVE public keys */
    slm_audit_t *audit;          /* refusals on the control port */
    slm_zap_t *zap;              /* admits only shard_keys */
    void *watch_sock;
    slm_cluster_watch_fn watch_fn;
    void *watch_user;
};

slm_cluster_timing slm_cluster_default_timing(void)
{
    slm_cluster_timing t = {30000, 200, 1000};
    return t;
}

/* Maps a routing id "shard-<i>" or "hb-<i>" to i, or -1 if it names no
 * shard. */
static int32_t shard_of(const slm_cluster_t *c, const char *id, size_t len)
{
    for (int32_t i = 0; i < c->n_shards; i++) {
        char want[32];
        size_t n = slm_transport_shard_id(i, want, sizeof want);
        if (n == len && memcmp(want, id, len) == 0)
            return i;
        n = slm_transport_heartbeat_id(i, want, sizeof want);
        if (n == len && memcmp(want, id, len) == 0)
            return i;
    }
    return -1;
}

static slm_status lost_status(const slm_cluster_t *c)
{
    return slm_fail(SLM_ERR_UNAVAILABLE, "%s", c->lost_why);
}

static void mark_lost(slm_cluster_t *c, int32_t shard, const char *what,
                      double age)
{
    if (c->lost >= 0)
        return;
    c->lost = shard;
    snprintf(c->lost_why, sizeof c->lost_why,
             "rank %d (shard %d) %s; its last heartbeat was %.0f ms ago",
             shard + 1, shard, what, age * 1000.0);
}

/* The liveness rule, applied after every wake-up. */
static slm_status check_health(slm_cluster_t *c, double now)
{
    if (c->lost >= 0)
        return lost_status(c);
    const double beat = c->timing.heartbeat_ms / 1000.0;
    const double limit = c->timing.heartbeat_timeout_ms / 1000.0;
    for (int32_t i = 0; i < c->n_shards; i++) {
        if (c->dropped_at[i] == 0 || now - c->dropped_at[i] < 2.0 * beat)
            continue;
        if (c->last_beat[i] < c->dropped_at[i]) {
            mark_lost(c, i, "dropped its connection (the process died)",
                      now - c->last_beat[i]);
            return lost_status(c);
        }
        c->dropped_at[i] = 0; /* it reconnected */
    }
    for (int32_t i = 0; i < c->n_shards; i++)
        if (now - c->last_beat[i] > limit) {
            mark_lost(c, i, "stopped sending heartbeats (stopped or hung)",
                      now - c->last_beat[i]);
            return lost_status(c);
        }
    return SLM_OK;
}

/* Records that shard `shard` speaks through connection fd. */
static void conn_note(slm_cluster_t *c, int fd, int32_t shard)
{
    if (fd < 0)
        return;
    for (size_t i = 0; i < c->n_conns; i++)
        if (c->conns[i].fd == fd) {
            c->conns[i].shard = shard;
            return;
        }
    if (c->n_conns == c->cap_conns) {
        size_t cap = c->cap_conns ? 2 * c->cap_conns : 16;
        void *p = realloc(c->conns, cap * sizeof *c->conns);
        if (!p)
            return; /* its loss is then found by the heartbeat timeout */
        c->conns = p;
        c->cap_conns = cap;
    }
    c->conns[c->n_conns].fd = fd;
    c->conns[c->n_conns].shard = shard;
    c->n_conns++;
}

/* Forgets connection fd; returns its shard, or -1 if it was not one. */
static int32_t conn_drop(slm_cluster_t *c, int fd)
{
    for (size_t i = 0; i < c->n_conns; i++)
        if (c->conns[i].fd == fd) {
            int32_t shard = c->conns[i].shard;
            c->conns[i] = c->conns[--c->n_conns];
            return shard;
        }
    return -1;
}

/* Monitor events: a 6-byte frame (uint16 event, uint32 value: the fd of a
 * disconnected connection, or a handshake failure's error), then the
 * endpoint. */
static void drain_monitor(slm_cluster_t *c, double now)
{
    for (;;) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, c->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&frame);
            return;
        }
        uint16_t event = 0;
        uint32_t value = 0;
        if (zmq_msg_size(&frame) == 6) {
            memcpy(&event, zmq_msg_data(&frame), 2);
            memcpy(&value, (const uint8_t *)zmq_msg_data(&frame) + 2, 4);
        }
        const int more = zmq_msg_more(&frame);
        zmq_msg_close(&frame);
        char peer[128] = "";
        if (more) { /* the endpoint */
            zmq_msg_init(&frame);
            if (zmq_msg_recv(&frame, c->monitor, ZMQ_DONTWAIT) >= 0) {
                size_t n = zmq_msg_size(&frame);
                if (n >= sizeof peer)
                    n = sizeof peer - 1;
                memcpy(peer, zmq_msg_data(&frame), n);
                peer[n] = '\0';
            }
            zmq_msg_close(&frame);
        }
        /* A plaintext or garbled peer on the control port: ZAP never sees
         * it, only this monitor does. */
        slm_zap_audit_handshake(c->audit, SLM_ZAP_DOMAIN_SHARDS, event, value,
                                peer);
        if (event != ZMQ_EVENT_DISCONNECTED)
            continue;
        const int32_t shard = conn_drop(c, (int)value);
        if (shard >= 0 && c->dropped_at[shard] == 0)
            c->dropped_at[shard] = now;
    }
}

/* Handles one valid message from shard `shard`. Anything from a peer that
 * is not one of our shards (another local process on the port; issue 6 adds
 * authentication before this point) was dropped before this. */
static slm_status handle(slm_cluster_t *c, int32_t shard, bool from_hb,
                         slm_control_msg *r, double now)
{
    if (r->body_case == SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HEARTBEAT) {
        if (r->heartbeat->shard == (uint32_t)shard)
            c->last_beat[shard] = now;
        return SLM_OK;
    }
    if (from_hb)
        return slm_fail(SLM_ERR_FORMAT,
                        "shard %d sent something other than a heartbeat on its "
                        "heartbeat socket",
                        shard);
    c->last_beat[shard] = now; /* any word from it is a sign of life */
    if (r->body_case != SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT ||
        r->result->seq != c->seq || r->result->shard != (uint32_t)shard ||
        c->answered[shard] || c->n_answered == c->n_shards)
        return slm_fail(SLM_ERR_FORMAT,
                        "step %llu: shard %d answered out of turn",
                        (unsigned long long)c->seq, shard);
    c->answered[shard] = 1;
    c->n_answered++;
    if (r->result->error && r->result->error[0])
        return slm_fail(SLM_ERR_INTERNAL, "step %llu: shard %d failed: %s",
                        (unsigned long long)c->seq, shard, r->result->error);
    if (shard == c->decider) {
        /* wire.c checked: whole rows of finite floats, at most max_seqs */
        const size_t rows = r->result->n_logits / (size_t)c->cfg.vocab_size;
        if (rows != c->want_rows || r->result->n_argmax != c->want_argmax)
            return slm_fail(SLM_ERR_FORMAT,
                            "step %llu: the decider sent %zu rows of logits "
                            "and %zu argmax ids for %zu and %zu",
                            (unsigned long long)c->seq, rows,
                            r->result->n_argmax, c->want_rows, c->want_argmax);
        if (r->result->n_argmax) /* each in the vocabulary (wire.c) */
            memcpy(c->argmax, r->result->argmax,
                   r->result->n_argmax * sizeof *c->argmax);
        if (rows) /* a step of prompt chunks alone has none (NULL) */
            memcpy(c->logits, r->result->logits,
                   r->result->n_logits * sizeof(float));
        c->rows = rows;
        c->have_logits = true;
    }
    return SLM_OK;
}

/* Stray messages tolerated per wake-up: enough for noise, few enough that a
 * flood cannot starve the rest of the loop. */
#define SLM_CLUSTER_MAX_STRAYS 64

/* Receives everything waiting on the control socket. Results for the step in
 * flight are recorded; a Hello is returned in *hello (if hello is non-NULL)
 * for the bootstrap to check. */
static slm_status drain_control(slm_cluster_t *c, double now,
                                slm_control_msg **hello, int32_t *hello_shard)
{
    for (int strays = 0;;) {
        int events = 0;
        size_t len = sizeof events;
        if (zmq_getsockopt(c->sock, ZMQ_EVENTS, &events, &len) != 0)
            return slm_fail(SLM_ERR_IO, "control: %s",
                            zmq_strerror(zmq_errno()));
        if (!(events & ZMQ_POLLIN))
            return SLM_OK;
        char id[64];
        size_t id_len = 0;
        slm_control_msg *m = NULL;
        slm_transport_origin from;
        slm_status rc = slm_transport_recv(c->sock, id, sizeof id, &id_len,
                                           &from, &c->lim, &m);
        int32_t shard = id_len ? shard_of(c, id, id_len) : -1;
        /* A routing id is the peer's choice; the ZAP handler's User-Id is
         * its key's. A shard speaking as another is not that shard. */
        if (shard >= 0) {
            char tenant[32];
            slm_transport_shard_id(shard, tenant, sizeof tenant);
            if (strcmp(from.user_id, tenant) != 0)
                shard = -1;
        }
        if (shard >= 0 && rc == SLM_OK)
            conn_note(c, from.fd, shard);
        if (shard < 0) {
            slm_wire_free_control(&m);
            if (rc != SLM_OK && id_len == 0)
                return rc; /* the socket failed */
            if (++strays == SLM_CLUSTER_MAX_STRAYS)
                return SLM_OK;
            fprintf(stderr,
                    "shardlm: control: dropped a message from an unknown "
                    "peer (%zu-byte id)\n",
                    id_len);
            continue;
        }
        if (rc != SLM_OK)
            return slm_error_prefix(rc, "shard %d", shard);
        bool from_hb = id[0] == 'h';
        if (hello &&
            m->body_case == SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HELLO &&
            !from_hb) {
            c->last_beat[shard] = now;
            *hello = m;
            *hello_shard = shard;
            return SLM_OK;
        }
        rc = handle(c, shard, from_hb, m, now);
        slm_wire_free_control(&m);
        SLM_CHECK(rc);
    }
}

/* One wake-up: waits up to timeout_ms, then handles whatever arrived. */
static slm_status wait_once(slm_cluster_t *c, int timeout_ms,
                            slm_control_msg **hello, int32_t *hello_shard)
{
    zmq_pollitem_t items[3] = {
        {c->sock, 0, ZMQ_POLLIN, 0},
        {c->monitor, 0, ZMQ_POLLIN, 0},
        {c->watch_sock, 0, ZMQ_POLLIN, 0},
    };
    int n_items = c->watch_sock ? 3 : 2;
    if (timeout_ms > SLM_CLUSTER_TICK_MS)
        timeout_ms = SLM_CLUSTER_TICK_MS;
    if (zmq_poll(items, n_items, timeout_ms) < 0 && zmq_errno() != EINTR)
        return slm_fail(SLM_ERR_IO, "control: poll: %s",
                        zmq_strerror(zmq_errno()));
    double now = slm_now_seconds();
    drain_monitor(c, now);
    SLM_CHECK(drain_control(c, now, hello, hello_shard));
    if (hello && *hello)
        return SLM_OK;
    if (hello) /* still loading: the Hello deadline is the only rule */
        return SLM_OK;
    if (c->watch_fn) {
        SLM_CHECK(c->watch_fn(
            c->watch_user, c->watch_sock && (items[2].revents & ZMQ_POLLIN)));
        /* Time spent on clients is not the shards' silence: read what they
         * sent meanwhile before judging them. */
        now = slm_now_seconds();
        drain_monitor(c, now);
        SLM_CHECK(drain_control(c, now, NULL, NULL));
    }
    return check_health(c, now);
}

slm_status slm_cluster_create(MPI_Comm world, const slm_model_config *cfg,
                              const slm_kv_config *kv, int32_t n_shards,
                              int32_t decider, const char *bind,
                              const slm_cluster_timing *timing,
                              slm_cluster_t **out)
{
    slm_cluster_t *c = calloc(1, sizeof *c);
    if (!c)
        return slm_fail(SLM_ERR_NOMEM, "cluster: out of memory");
    slm_status rc = SLM_OK;
    char endpoint[SLM_CLUSTER_ENDPOINT_MAX] = "";
    char me_public[SLM_ZKEY_Z85_BUF] = "", me_secret[SLM_ZKEY_Z85_BUF] = "";
    char(*keys)[SLM_ZKEY_Z85_BUF] = NULL;
    char monitor_ep[64];
    snprintf(monitor_ep, sizeof monitor_ep, "inproc://slm-cluster-%p",
             (void *)c);
    c->n_shards = n_shards;
    c->decider = decider;
    c->cfg = *cfg;
    c->timing = *timing;
    c->lost = -1;
    c->kv = *kv;
    c->lim = (slm_wire_limits){.n_shards = (uint32_t)n_shards,
                               .vocab_size = (uint32_t)cfg->vocab_size,
                               .seq_len = cfg->seq_len,
                               .max_seqs = (uint32_t)kv->max_seqs,
                               .max_tokens = (uint32_t)kv->max_tokens,
                               .n_blocks = (uint32_t)kv->n_blocks,
                               .block_size = (uint32_t)kv->block_size};
    const size_t per_seq =
        ((size_t)cfg->seq_len + kv->block_size - 1) / kv->block_size;
    c->identity = calloc(per_seq, sizeof *c->identity);
    for (size_t i = 0; c->identity && i < per_seq; i++)
        c->identity[i] = (uint32_t)i;
    c->weight_bytes = calloc((size_t)n_shards, sizeof *c->weight_bytes);
    c->last_beat = calloc((size_t)n_shards, sizeof *c->last_beat);
    c->dropped_at = calloc((size_t)n_shards, sizeof *c->dropped_at);
    c->logits =
        calloc((size_t)cfg->vocab_size * kv->max_seqs, sizeof *c->logits);
    c->argmax = calloc(kv->max_seqs, sizeof *c->argmax);
    c->step_seqs = calloc(kv->max_seqs, sizeof *c->step_seqs);
    c->step_list = calloc(kv->max_seqs, sizeof *c->step_list);
    c->answered = calloc((size_t)n_shards, 1);
    keys = calloc((size_t)n_shards + 1, sizeof *keys);
    if (!keys) {
        /* The gather below needs somewhere to land, and the shards are
         * already waiting in it: nothing to do but end the job. */
        fprintf(stderr, "shardlm: cluster: out of memory for %d keys\n",
                n_shards);
        MPI_Abort(world, 1);
    }
    /* The per-job keys first, over MPI (the launcher's channel), so that
     * the ZAP handler knows every shard before one can connect: our public
     * key out, every shard's in (rank r's lands in row r). Collective: done
     * even when something failed, which the empty endpoint then reports. */
    rc = slm_zkeys_pair(me_public, me_secret);
    char none[SLM_ZKEY_Z85_BUF] = "";
    if (MPI_Bcast(rc == SLM_OK ? me_public : none, SLM_ZKEY_Z85_BUF, MPI_CHAR,
                  0, world) != MPI_SUCCESS ||
        MPI_Gather(me_public, SLM_ZKEY_Z85_BUF, MPI_CHAR, keys,
                   SLM_ZKEY_Z85_BUF, MPI_CHAR, 0, world) != MPI_SUCCESS) {
        rc = slm_fail(SLM_ERR_IO, "cluster: the key exchange over MPI failed");
        goto fail_bootstrap;
    }
    if (rc != SLM_OK)
        goto fail_bootstrap;
    SLM_CHECK_GOTO(slm_allowlist_create((size_t)n_shards, &c->shard_keys), rc,
                   fail_bootstrap);
    for (int32_t i = 0; i < n_shards; i++) {
        char tenant[32];
        keys[i + 1][SLM_ZKEY_Z85_LEN] = '\0';
        slm_transport_shard_id(i, tenant, sizeof tenant);
        SLM_CHECK_GOTO(slm_allowlist_add(c->shard_keys, keys[i + 1], tenant),
                       rc, fail_bootstrap);
    }
    c->ctx = zmq_ctx_new();
    c->sock = c->ctx ? zmq_socket(c->ctx, ZMQ_ROUTER) : NULL;
    if (!c->weight_bytes || !c->last_beat || !c->dropped_at || !c->logits ||
        !c->argmax || !c->step_seqs || !c->step_list || !c->identity ||
        !c->answered || !c->sock) {
        rc = slm_fail(SLM_ERR_NOMEM, "cluster: cannot set up the control "
                                     "socket");
        goto fail_bootstrap;
    }
    SLM_CHECK_GOTO(slm_audit_open(NULL, &c->audit), rc, fail_bootstrap);
    SLM_CHECK_GOTO(
        slm_zap_start(c->ctx, NULL, c->shard_keys, c->audit, &c->zap), rc,
        fail_bootstrap);
    SLM_CHECK_GOTO(slm_transport_configure(c->sock, timing->timeout_ms), rc,
                   fail_bootstrap);
    SLM_CHECK_GOTO(
        slm_zkeys_apply_server(c->sock, me_secret, SLM_ZAP_DOMAIN_SHARDS), rc,
        fail_bootstrap);
    slm_zkeys_wipe(me_secret, sizeof me_secret);
    if (zmq_socket_monitor(c->sock, monitor_ep,
                           ZMQ_EVENT_DISCONNECTED | SLM_ZAP_HANDSHAKE_EVENTS) !=
            0 ||
        !(c->monitor = zmq_socket(c->ctx, ZMQ_PAIR)) ||
        zmq_setsockopt(c->monitor, ZMQ_LINGER, &(int){0}, sizeof(int)) != 0 ||
        zmq_connect(c->monitor, monitor_ep) != 0) {
        rc = slm_fail(SLM_ERR_IO,
                      "cluster: cannot monitor the control "
                      "socket: %s",
                      zmq_strerror(zmq_errno()));
        goto fail_bootstrap;
    }
    size_t len = sizeof endpoint;
    if (zmq_bind(c->sock, bind) != 0 ||
        zmq_getsockopt(c->sock, ZMQ_LAST_ENDPOINT, endpoint, &len) != 0) {
        rc = slm_fail(SLM_ERR_IO, "cluster: cannot bind %s: %s", bind,
                      zmq_strerror(zmq_errno()));
        endpoint[0] = '\0';
        goto fail_bootstrap;
    }
    /* Public: what an operator (or a test) needs to see who may connect. */
    fprintf(stderr,
            "shardlm: control plane on %s (CURVE, server key %s, %d shard "
            "keys)\n",
            endpoint, me_public, n_shards);
    /* An empty endpoint tells the shards that the coordinator failed. */
    SLM_CHECK_GOTO(
        slm_comm_mpi_bcast_string(world, 0, endpoint, sizeof endpoint), rc,
        fail);
    free(keys);
    keys = NULL;

    const double deadline = slm_now_seconds() + timing->timeout_ms / 1000.0;
    for (int32_t seen = 0; seen < n_shards;) {
        slm_control_msg *m = NULL;
        int32_t shard = -1;
        rc = wait_once(c, SLM_CLUSTER_TICK_MS, &m, &shard);
        if (rc == SLM_OK && !m && slm_now_seconds() > deadline)
            rc = slm_fail(SLM_ERR_IO, "timed out after %d ms",
                          timing->timeout_ms);
        if (rc != SLM_OK) {
            slm_error_prefix(rc, "waiting for %d shards to load (%d ready)",
                             n_shards, seen);
            goto fail;
        }
        if (!m)
            continue;
        if (m->hello->shard != (uint32_t)shard || c->weight_bytes[shard]) {
            slm_wire_free_control(&m);
            rc = slm_fail(SLM_ERR_FORMAT,
                          "cluster: shard %d sent something other than one "
                          "Hello for itself",
                          shard);
            goto fail;
        }
        c->single_sequence |= m->hello->single_sequence;
        /* A shard holds at least its norms, so 0 marks "not heard from". */
        c->weight_bytes[shard] =
            m->hello->weight_bytes ? m->hello->weight_bytes : 1;
        seen++;
        slm_wire_free_control(&m);
    }
    /* The liveness clock starts once all are up: loading is not beating. */
    const double now = slm_now_seconds();
    for (int32_t i = 0; i < n_shards; i++)
        c->last_beat[i] = now;
    *out = c;
    return SLM_OK;
fail_bootstrap:
    /* The shards are waiting for the endpoint: give them an empty one. */
    {
        char empty[SLM_CLUSTER_ENDPOINT_MAX] = "";
        (void)slm_comm_mpi_bcast_string(world, 0, empty, sizeof empty);
    }
fail:
    slm_zkeys_wipe(me_secret, sizeof me_secret);
    free(keys);
    slm_cluster_destroy(&c);
    return rc;
}

void slm_cluster_watch(slm_cluster_t *c, void *sock, slm_cluster_watch_fn fn,
                       void *user)
{
    c->watch_sock = sock;
    c->watch_fn = fn;
    c->watch_user = user;
}

slm_status slm_cluster_pump(slm_cluster_t *c, int timeout_ms)
{
    return wait_once(c, timeout_ms, NULL, NULL);
}

/* One batched step on every shard: the Step out to all, one StepResult
 * back from each, the decider's carrying a row of logits per sequence that
 * wants them, or its argmax; heartbeats and the watched socket are served
 * while waiting. */
static slm_status cluster_step(void *ctx, const slm_step *st, slm_step_out *out)
{
    slm_cluster_t *c = ctx;
    *out = (slm_step_out){0};
    if (c->lost >= 0)
        return lost_status(c);
    if (st->n_seqs > c->kv.max_seqs)
        return slm_fail(SLM_ERR_INTERNAL, "step: %zu sequences, more than %zu",
                        st->n_seqs, c->kv.max_seqs);
    Shardlm__Control__StepSequence *seqs = c->step_seqs;
    Shardlm__Control__StepSequence **list = c->step_list;
    Shardlm__Control__Step step = SHARDLM__CONTROL__STEP__INIT;
    step.seq = ++c->seq;
    c->want_rows = 0;
    c->want_argmax = 0;
    for (size_t i = 0; i < st->n_seqs; i++) {
        const slm_step_seq *q = &st->seqs[i];
        shardlm__control__step_sequence__init(&seqs[i]);
        seqs[i].tokens = (int32_t *)q->tokens; /* protobuf-c: not const */
        seqs[i].n_tokens = q->n_tokens;
        seqs[i].pos = q->pos;
        seqs[i].blocks = (uint32_t *)q->blocks;
        seqs[i].n_blocks = q->n_blocks;
        seqs[i].want_logits = q->want_logits;
        seqs[i].want_argmax = q->want_logits && q->want_argmax;
        list[i] = &seqs[i];
        c->want_argmax += seqs[i].want_argmax;
        c->want_rows += q->want_logits && !seqs[i].want_argmax;
    }
    step.seqs = list;
    step.n_seqs = st->n_seqs;
    step.free_blocks = (uint32_t *)st->free_blocks;
    step.n_free_blocks = st->n_free;
    slm_control_msg m = SHARDLM__CONTROL__CONTROL_MESSAGE__INIT;
    m.body_case = SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP;
    m.step = &step;
    memset(c->answered, 0, (size_t)c->n_shards);
    c->n_answered = 0;
    c->have_logits = false;
    c->rows = 0;
    for (int32_t i = 0; i < c->n_shards; i++) {
        char id[32];
        size_t n = slm_transport_shard_id(i, id, sizeof id);
        SLM_CHECK(slm_transport_send(c->sock, id, n, &m));
    }
    const double deadline = slm_now_seconds() + c->timing.timeout_ms / 1000.0;
    while (c->n_answered < c->n_shards) {
        double left_ms = (deadline - slm_now_seconds()) * 1000.0;
        if (left_ms <= 0)
            return slm_fail(SLM_ERR_UNAVAILABLE,
                            "step %llu: %d of %d shards answered within %d ms",
                            (unsigned long long)c->seq, c->n_answered,
                            c->n_shards, c->timing.timeout_ms);
        slm_status rc = wait_once(c, (int)left_ms + 1, NULL, NULL);
        if (rc != SLM_OK)
            return slm_error_prefix(rc, "step %llu",
                                    (unsigned long long)c->seq);
    }
    if ((c->want_rows || c->want_argmax) && !c->have_logits)
        return slm_fail(SLM_ERR_INTERNAL, "step: no logits");
    *out = (slm_step_out){.logits = c->want_rows ? c->logits : NULL,
                          .rows = c->rows,
                          .argmax = c->argmax,
                          .n_argmax = c->want_argmax};
    return SLM_OK;
}

/* One position of the single sequence of `shardlm run` (blocks 0, 1, ...):
 * a new one (position 0) has the shards zero the blocks the last wrote. */
static slm_status cluster_forward(void *ctx, int32_t token, int32_t pos,
                                  const float **logits)
{
    slm_cluster_t *c = ctx;
    *logits = NULL;
    if (pos < 0 || pos >= c->cfg.seq_len)
        return slm_fail(SLM_ERR_RANGE,
                        "position %d is outside the context [0, %d)", pos,
                        c->cfg.seq_len);
    if (!c->identity)
        return slm_fail(SLM_ERR_NOMEM, "out of memory");
    const size_t bs = c->kv.block_size;
    slm_step_seq q = {.tokens = &token,
                      .n_tokens = 1,
                      .pos = pos,
                      .blocks = c->identity,
                      .n_blocks = ((size_t)pos + bs) / bs,
                      .want_logits = true};
    slm_step st = {.seqs = &q, .n_seqs = 1};
    if (pos == 0) {
        st.free_blocks = c->identity;
        st.n_free = c->single_blocks;
        c->single_blocks = 0;
    }
    if (q.n_blocks > c->single_blocks)
        c->single_blocks = q.n_blocks;
    slm_step_out out;
    SLM_CHECK(cluster_step(c, &st, &out));
    *logits = out.logits;
    return SLM_OK;
}

bool slm_cluster_single_sequence(const slm_cluster_t *c)
{
    return c->single_sequence;
}

slm_model_runner slm_cluster_runner(slm_cluster_t *c)
{
    slm_model_runner r = {cluster_forward, cluster_step, c,
                          c->cfg.seq_len,  &c->kv,       &c->cfg};
    return r;
}

uint64_t slm_cluster_shard_weight_bytes(const slm_cluster_t *c, int32_t shard)
{
    return c->weight_bytes[shard];
}

int32_t slm_cluster_lost_shard(const slm_cluster_t *c)
{
    return c->lost;
}

double slm_cluster_heartbeat_age_ms(const slm_cluster_t *c, int32_t shard)
{
    return (slm_now_seconds() - c->last_beat[shard]) * 1000.0;
}

int32_t slm_cluster_shards(const slm_cluster_t *c)
{
    return c->n_shards;
}

const slm_cluster_timing *slm_cluster_get_timing(const slm_cluster_t *c)
{
    return &c->timing;
}

slm_status slm_cluster_shutdown(slm_cluster_t *c, const char *reason)
{
    if (!c || !c->sock)
        return SLM_OK;
    Shardlm__Control__Shutdown sd = SHARDLM__CONTROL__SHUTDOWN__INIT;
    sd.reason = (char *)(reason ? reason : "");
    slm_control_msg m = SHARDLM__CONTROL__CONTROL_MESSAGE__INIT;
    m.body_case = SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_SHUTDOWN;
    m.shutdown = &sd;
    for (int32_t i = 0; i < c->n_shards; i++) {
        char id[32];
        size_t n = slm_transport_shard_id(i, id, sizeof id);
        (void)slm_transport_send(c->sock, id, n, &m);
    }
    /* Every shard closes both its sockets on the way out. One that stays
     * (stopped, hung in a collective) would hold the job in MPI_Finalize:
     * after a heartbeat timeout of waiting, the caller aborts instead. */
    const double deadline =
        slm_now_seconds() + c->timing.heartbeat_timeout_ms / 1000.0;
    while (c->n_conns > 0 && slm_now_seconds() < deadline) {
        zmq_pollitem_t items[2] = {{c->sock, 0, ZMQ_POLLIN, 0},
                                   {c->monitor, 0, ZMQ_POLLIN, 0}};
        (void)zmq_poll(items, 2, SLM_CLUSTER_TICK_MS);
        drain_monitor(c, slm_now_seconds());
        for (int k = 0; k < 1024; k++) { /* late results, beats: dropped */
            zmq_msg_t frame;
            zmq_msg_init(&frame);
            int n = zmq_msg_recv(&frame, c->sock, ZMQ_DONTWAIT);
            zmq_msg_close(&frame);
            if (n < 0)
                break;
        }
    }
    if (c->n_conns > 0)
        return slm_fail(SLM_ERR_UNAVAILABLE,
                        "%zu shard connections were still open %d ms after "
                        "Shutdown",
                        c->n_conns, c->timing.heartbeat_timeout_ms);
    return SLM_OK;
}

void slm_cluster_destroy(slm_cluster_t **cp)
{
    if (!cp || !*cp)
        return;
    slm_cluster_t *c = *cp;
    if (c->sock) {
        (void)zmq_socket_monitor(c->sock, NULL, 0);
        zmq_close(c->sock);
    }
    if (c->monitor)
        zmq_close(c->monitor);
    slm_zap_stop(&c->zap); /* before the context ends: it holds a socket */
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    slm_allowlist_destroy(&c->shard_keys);
    slm_audit_close(&c->audit);
    free(c->weight_bytes);
    free(c->last_beat);
    free(c->logits);
    free(c->argmax);
    free(c->identity);
    free(c->step_seqs);
    free(c->step_list);
    free(c->answered);
    free(c->conns);
    free(c->dropped_at);
    free(c);
    *cp = NULL;
}
