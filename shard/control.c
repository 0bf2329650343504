/*
 * shard/control.c - a shard's control loop: Hello once loaded, then one
 * StepResult per Step, until Shutdown. See slm_shard_serve in shard.h.
 */
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "collectives/comm_mpi.h"
#include "proto/transport.h"
#include "shard/shard.h"

static slm_status send_hello(void *sock, slm_shard_t *s, int32_t index,
                             size_t weight_bytes)
{
    const slm_shard_slice *sl = slm_shard_slice_info(s);
    Shardlm__Control__Hello hello = SHARDLM__CONTROL__HELLO__INIT;
    hello.shard = (uint32_t)index;
    hello.stage = (uint32_t)sl->stage;
    hello.tp_rank = (uint32_t)sl->tp_rank;
    hello.layer_begin = (uint32_t)sl->layers.begin;
    hello.layer_count = (uint32_t)sl->layers.count;
    hello.head_begin = (uint32_t)sl->heads.begin;
    hello.head_count = (uint32_t)sl->heads.count;
    hello.vocab_begin = (uint32_t)sl->vocab.begin;
    hello.vocab_count = (uint32_t)sl->vocab.count;
    hello.weight_bytes = weight_bytes;
    slm_control_msg m = SHARDLM__CONTROL__CONTROL_MESSAGE__INIT;
    m.body_case = SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HELLO;
    m.hello = &hello;
    return slm_transport_send(sock, NULL, 0, &m);
}

/* Answers a step: the logits when this shard is the decider, else an
 * acknowledgement; `error` set when the step failed here. */
static slm_status send_result(void *sock, uint64_t seq, int32_t index,
                              const float *logits, size_t n, const char *error)
{
    Shardlm__Control__StepResult r = SHARDLM__CONTROL__STEP_RESULT__INIT;
    r.seq = seq;
    r.shard = (uint32_t)index;
    r.logits = (float *)logits; /* protobuf-c's field is not const */
    r.n_logits = logits ? n : 0;
    if (error)
        r.error = (char *)error;
    slm_control_msg m = SHARDLM__CONTROL__CONTROL_MESSAGE__INIT;
    m.body_case = SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT;
    m.result = &r;
    return slm_transport_send(sock, NULL, 0, &m);
}

slm_status slm_shard_serve(slm_shard_t *s, MPI_Comm world, int32_t shard_index,
                           int timeout_ms)
{
    char endpoint[256];
    SLM_CHECK(slm_comm_mpi_bcast_string(world, 0, endpoint, sizeof endpoint));
    if (!endpoint[0])
        return slm_fail(SLM_ERR_IO,
                        "shard %d: the coordinator could not "
                        "open its control endpoint",
                        shard_index);
    const slm_model_config *cfg = slm_shard_config(s);
    const slm_wire_limits lim = {(uint32_t)(shard_index + 1),
                                 (uint32_t)cfg->vocab_size, cfg->seq_len};
    slm_status rc = SLM_OK;
    void *ctx = zmq_ctx_new();
    void *sock = ctx ? zmq_socket(ctx, ZMQ_DEALER) : NULL;
    char id[32];
    size_t id_len = slm_transport_shard_id(shard_index, id, sizeof id);
    if (!sock) {
        rc = slm_fail(SLM_ERR_IO, "shard %d: cannot create a socket",
                      shard_index);
        goto done;
    }
    SLM_CHECK_GOTO(slm_transport_configure(sock, timeout_ms), rc, done);
    /* Between steps a shard waits as long as the coordinator is idle (a
     * server with no requests, a batch whose other shards still load): the
     * coordinator is the watchdog, with a deadline on every step it sends,
     * and if it dies mpirun ends the job. Heartbeats that let a shard see a
     * hung coordinator come with the health checks (serving issue). */
    const int forever = -1;
    if (zmq_setsockopt(sock, ZMQ_RCVTIMEO, &forever, sizeof forever) != 0) {
        rc = slm_fail(SLM_ERR_IO, "shard %d: zmq_setsockopt: %s", shard_index,
                      zmq_strerror(zmq_errno()));
        goto done;
    }
    if (zmq_setsockopt(sock, ZMQ_ROUTING_ID, id, id_len) != 0 ||
        zmq_connect(sock, endpoint) != 0) {
        rc = slm_fail(SLM_ERR_IO, "shard %d: cannot connect to %s: %s",
                      shard_index, endpoint, zmq_strerror(zmq_errno()));
        goto done;
    }
    SLM_CHECK_GOTO(send_hello(sock, s, shard_index, slm_shard_weight_bytes(s)),
                   rc, done);

    const bool decider = slm_shard_decider(s) == shard_index;
    uint64_t last_seq = 0;
    for (;;) {
        slm_control_msg *m = NULL;
        SLM_CHECK_GOTO(slm_transport_recv(sock, NULL, 0, NULL, &lim, &m), rc,
                       done);
        if (m->body_case == SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_SHUTDOWN) {
            slm_wire_free_control(&m);
            break;
        }
        if (m->body_case != SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_STEP ||
            m->step->seq <= last_seq) {
            rc = slm_fail(SLM_ERR_FORMAT,
                          "shard %d: expected a step after seq %llu",
                          shard_index, (unsigned long long)last_seq);
            slm_wire_free_control(&m);
            goto done;
        }
        last_seq = m->step->seq;
        const float *logits = NULL;
        rc = slm_transformer_forward(slm_shard_transformer(s), m->step->token,
                                     m->step->pos, &logits);
        slm_wire_free_control(&m);
        if (rc != SLM_OK) {
            /* Tell the coordinator why before giving up; peers may be
             * waiting in a collective, which the caller aborts. */
            (void)send_result(sock, last_seq, shard_index, NULL, 0,
                              slm_error_message());
            goto done;
        }
        SLM_CHECK_GOTO(send_result(sock, last_seq, shard_index,
                                   decider ? logits : NULL,
                                   (size_t)cfg->vocab_size, NULL),
                       rc, done);
    }
done:
    if (sock)
        zmq_close(sock);
    if (ctx)
        zmq_ctx_term(ctx);
    return rc;
}
