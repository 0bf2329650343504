/* coordinator/cluster.c - see cluster.h. */
#include "coordinator/cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "collectives/comm_mpi.h"
#include "proto/transport.h"

struct slm_cluster {
    void *ctx;
    void *sock; /* ROUTER */
    int32_t n_shards;
    int32_t decider;
    slm_model_config cfg;
    slm_wire_limits lim;
    uint64_t seq;           /* last step sent */
    uint64_t *weight_bytes; /* (n_shards) from each Hello */
    uint8_t *answered;      /* (n_shards) who answered the current step */
    float *logits;          /* (vocab) the last step's logits */
};

/* Maps a routing id "shard-<i>" to i, or -1 if it names no shard. */
static int32_t shard_of(const slm_cluster_t *c, const char *id, size_t len)
{
    for (int32_t i = 0; i < c->n_shards; i++) {
        char want[32];
        size_t n = slm_transport_shard_id(i, want, sizeof want);
        if (n == len && memcmp(want, id, len) == 0)
            return i;
    }
    return -1;
}

/* Stray messages tolerated in one wait before it gives up: enough for
 * noise, few enough that a flood cannot hold a step past its deadline for
 * long (each receive has the full timeout). */
#define SLM_CLUSTER_MAX_STRAYS 64

/* Receives one valid message from a known shard. Anything from a peer that
 * is not one of our shards (another local process on the port; issue 6 adds
 * authentication before this point) is dropped with a warning, so a stray
 * packet cannot end the job; a malformed message from a shard is an error. */
static slm_status recv_from_shard(slm_cluster_t *c, int32_t *shard,
                                  slm_control_msg **m)
{
    for (int strays = 0;; strays++) {
        char id[64];
        size_t id_len = 0;
        slm_status rc =
            slm_transport_recv(c->sock, id, sizeof id, &id_len, &c->lim, m);
        *shard = id_len ? shard_of(c, id, id_len) : -1;
        if (*shard >= 0 || (rc != SLM_OK && id_len == 0))
            return rc; /* a shard's message, or the socket failed */
        slm_wire_free_control(m);
        if (strays == SLM_CLUSTER_MAX_STRAYS)
            return slm_fail(SLM_ERR_IO,
                            "control: %d messages from unknown "
                            "peers in one wait",
                            SLM_CLUSTER_MAX_STRAYS);
        fprintf(stderr,
                "shardlm: control: dropped a message from an unknown "
                "peer (%zu-byte id)\n",
                id_len);
    }
}

slm_status slm_cluster_create(MPI_Comm world, const slm_model_config *cfg,
                              int32_t n_shards, int32_t decider,
                              const char *bind, int timeout_ms,
                              slm_cluster_t **out)
{
    slm_cluster_t *c = calloc(1, sizeof *c);
    if (!c)
        return slm_fail(SLM_ERR_NOMEM, "cluster: out of memory");
    slm_status rc = SLM_OK;
    char endpoint[SLM_CLUSTER_ENDPOINT_MAX] = "";
    c->n_shards = n_shards;
    c->decider = decider;
    c->cfg = *cfg;
    c->lim = (slm_wire_limits){(uint32_t)n_shards, (uint32_t)cfg->vocab_size,
                               cfg->seq_len};
    c->weight_bytes = calloc((size_t)n_shards, sizeof *c->weight_bytes);
    c->logits = calloc((size_t)cfg->vocab_size, sizeof *c->logits);
    c->answered = calloc((size_t)n_shards, 1);
    c->ctx = zmq_ctx_new();
    c->sock = c->ctx ? zmq_socket(c->ctx, ZMQ_ROUTER) : NULL;
    if (!c->weight_bytes || !c->logits || !c->answered || !c->sock) {
        rc = slm_fail(SLM_ERR_NOMEM, "cluster: cannot set up the control "
                                     "socket");
        goto fail_bootstrap;
    }
    SLM_CHECK_GOTO(slm_transport_configure(c->sock, timeout_ms), rc,
                   fail_bootstrap);
    size_t len = sizeof endpoint;
    if (zmq_bind(c->sock, bind) != 0 ||
        zmq_getsockopt(c->sock, ZMQ_LAST_ENDPOINT, endpoint, &len) != 0) {
        rc = slm_fail(SLM_ERR_IO, "cluster: cannot bind %s: %s", bind,
                      zmq_strerror(zmq_errno()));
        endpoint[0] = '\0';
        goto fail_bootstrap;
    }
    /* An empty endpoint tells the shards that the coordinator failed. */
    SLM_CHECK_GOTO(
        slm_comm_mpi_bcast_string(world, 0, endpoint, sizeof endpoint), rc,
        fail);

    for (int32_t seen = 0; seen < n_shards;) {
        slm_control_msg *m = NULL;
        int32_t shard = -1;
        rc = recv_from_shard(c, &shard, &m);
        if (rc != SLM_OK) {
            slm_error_prefix(rc, "waiting for %d shards to load (%d ready)",
                             n_shards, seen);
            goto fail;
        }
        if (m->body_case != SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HELLO ||
            m->hello->shard != (uint32_t)shard || c->weight_bytes[shard]) {
            slm_wire_free_control(&m);
            rc = slm_fail(SLM_ERR_FORMAT,
                          "cluster: shard %d sent something other than one "
                          "Hello for itself",
                          shard);
            goto fail;
        }
        /* A shard holds at least its norms, so 0 marks "not heard from". */
        c->weight_bytes[shard] =
            m->hello->weight_bytes ? m->hello->weight_bytes : 1;
        seen++;
        slm_wire_free_control(&m);
    }
    *out = c;
    return SLM_OK;
fail_bootstrap:
    /* The shards are waiting for the endpoint: give them an empty one. */
    {
        char none[SLM_CLUSTER_ENDPOINT_MAX] = "";
        (void)slm_comm_mpi_bcast_string(world, 0, none, sizeof none);
    }
fail:
    slm_cluster_destroy(&c);
    return rc;
}

/* One position on every shard: Step out to all, one StepResult back from
 * each, the decider's carrying the logits. */
static slm_status cluster_forward(void *ctx, int32_t token, int32_t pos,
                                  const float **logits)
{
    slm_cluster_t *c = ctx;
    *logits = NULL;
    Shardlm__Control__Step step = SHARDLM__CONTROL__STEP__INIT;
    step.seq = ++c->seq;
    step.token = token;
    step.pos = pos;
    slm_control_msg m = SHARDLM__CONTROL__CONTROL_MESSAGE__INIT;
    m.body_case = SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP;
    m.step = &step;
    for (int32_t i = 0; i < c->n_shards; i++) {
        char id[32];
        size_t n = slm_transport_shard_id(i, id, sizeof id);
        SLM_CHECK(slm_transport_send(c->sock, id, n, &m));
    }
    bool have_logits = false;
    memset(c->answered, 0, (size_t)c->n_shards);
    for (int32_t answered = 0; answered < c->n_shards; answered++) {
        slm_control_msg *r = NULL;
        int32_t shard = -1;
        slm_status rc = recv_from_shard(c, &shard, &r);
        if (rc != SLM_OK)
            return slm_error_prefix(rc, "step %llu (position %d)",
                                    (unsigned long long)c->seq, pos);
        if (r->body_case != SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT ||
            r->result->seq != c->seq || r->result->shard != (uint32_t)shard ||
            c->answered[shard]) {
            slm_wire_free_control(&r);
            return slm_fail(SLM_ERR_FORMAT,
                            "step %llu: shard %d answered out of turn",
                            (unsigned long long)c->seq, shard);
        }
        c->answered[shard] = 1;
        if (r->result->error && r->result->error[0]) {
            rc = slm_fail(SLM_ERR_INTERNAL, "step %llu: shard %d failed: %s",
                          (unsigned long long)c->seq, shard, r->result->error);
            slm_wire_free_control(&r);
            return rc;
        }
        if (shard == c->decider) {
            /* wire.c checked: exactly vocab_size finite floats, or none */
            if (r->result->n_logits != (size_t)c->cfg.vocab_size) {
                slm_wire_free_control(&r);
                return slm_fail(SLM_ERR_FORMAT,
                                "step %llu: the decider sent no logits",
                                (unsigned long long)c->seq);
            }
            memcpy(c->logits, r->result->logits,
                   r->result->n_logits * sizeof(float));
            have_logits = true;
        }
        slm_wire_free_control(&r);
    }
    if (!have_logits)
        return slm_fail(SLM_ERR_INTERNAL, "step: no logits");
    *logits = c->logits;
    return SLM_OK;
}

slm_model_runner slm_cluster_runner(slm_cluster_t *c)
{
    slm_model_runner r = {cluster_forward, c, c->cfg.seq_len};
    return r;
}

uint64_t slm_cluster_shard_weight_bytes(const slm_cluster_t *c, int32_t shard)
{
    return c->weight_bytes[shard];
}

void slm_cluster_shutdown(slm_cluster_t *c, const char *reason)
{
    if (!c || !c->sock)
        return;
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
    /* Let the queued Shutdowns leave before the socket closes (the sockets
     * otherwise linger 0 ms); bounded, so a dead shard cannot hold us. */
    const int linger_ms = 2000;
    (void)zmq_setsockopt(c->sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
}

void slm_cluster_destroy(slm_cluster_t **cp)
{
    if (!cp || !*cp)
        return;
    slm_cluster_t *c = *cp;
    if (c->sock)
        zmq_close(c->sock);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    free(c->weight_bytes);
    free(c->logits);
    free(c->answered);
    free(c);
    *cp = NULL;
}
