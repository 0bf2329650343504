/*
 * shard/control.c - a shard's control loop: Hello once loaded, then one
 * StepResult per Step, until Shutdown. See slm_shard_serve in shard.h.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "collectives/comm_mpi.h"
#include "common/zkeys.h"
#include "kernels/kernels.h"
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
    hello.single_sequence = slm_shard_single_sequence(s);
    slm_control_msg m = SHARDLM__CONTROL__CONTROL_MESSAGE__INIT;
    m.body_case = SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HELLO;
    m.hello = &hello;
    return slm_transport_send(sock, NULL, 0, &m);
}

/* Answers a step: the logits (n floats) and argmax ids (n_argmax) when this
 * shard is the decider, else an acknowledgement; `error` set when the step
 * failed here. */
static slm_status send_result(void *sock, uint64_t seq, int32_t index,
                              const float *logits, size_t n,
                              const int32_t *argmax, size_t n_argmax,
                              const char *error)
{
    Shardlm__Control__StepResult r = SHARDLM__CONTROL__STEP_RESULT__INIT;
    r.seq = seq;
    r.shard = (uint32_t)index;
    r.logits = (float *)logits; /* protobuf-c's fields are not const */
    r.n_logits = logits ? n : 0;
    r.argmax = (int32_t *)argmax;
    r.n_argmax = argmax ? n_argmax : 0;
    if (error)
        r.error = (char *)error;
    slm_control_msg m = SHARDLM__CONTROL__CONTROL_MESSAGE__INIT;
    m.body_case = SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_RESULT;
    m.result = &r;
    return slm_transport_send(sock, NULL, 0, &m);
}

/* The decider's answer to a step whose rows are `logits` (one of vocab
 * floats per sequence with want_logits): the rows of greedy sequences
 * (want_argmax) become the index of their largest logit, the first on a
 * tie, as the coordinator's greedy sampler picks (slm_cpu_argmax); the
 * others stay whole, copied together into `kept` (room for every row) when
 * any went. A greedy row that is not all finite fails the step, as such a
 * row sent whole would (wire.c). */
static slm_status reduce_rows(const slm_step *st, const float *logits,
                              size_t vocab, float *kept, int32_t *argmax,
                              const float **rows_out, size_t *n_rows,
                              size_t *n_argmax)
{
    size_t rows = 0, greedy = 0;
    for (size_t i = 0; i < st->n_seqs; i++) {
        rows += st->seqs[i].want_logits;
        greedy += st->seqs[i].want_logits && st->seqs[i].want_argmax;
    }
    *rows_out = rows ? logits : NULL;
    *n_rows = rows;
    *n_argmax = 0;
    if (!greedy)
        return SLM_OK;
    size_t row = 0, k = 0;
    for (size_t i = 0; i < st->n_seqs; i++) {
        if (!st->seqs[i].want_logits)
            continue;
        const float *x = logits + row++ * vocab;
        if (!st->seqs[i].want_argmax) {
            memcpy(kept + k++ * vocab, x, vocab * sizeof *x);
            continue;
        }
        for (size_t j = 0; j < vocab; j++)
            if (!isfinite(x[j]))
                return slm_fail(SLM_ERR_INTERNAL,
                                "the logits of sequence %zu are not finite "
                                "(logit %zu = %g)",
                                i, j, (double)x[j]);
        argmax[(*n_argmax)++] = slm_cpu_argmax(x, vocab);
    }
    *rows_out = k ? kept : NULL;
    *n_rows = k;
    return SLM_OK;
}

/* The heartbeat thread: its own DEALER ("hb-<index>") beating at a fixed
 * interval whatever the main thread is doing - computing a long prefill or
 * waiting in a collective for a peer that is gone. So the beats stop only
 * when this process stops (killed, SIGSTOPped, or hung as a whole), which is
 * exactly what the coordinator needs to tell. */
typedef struct {
    void *ctx;
    const char *endpoint;
    int32_t index;
    int interval_ms;
    const char *public_key, *secret_key, *server_key;
    atomic_bool stop;
    pthread_t thread;
    bool started;
} heartbeat;

static void *heartbeat_main(void *arg)
{
    heartbeat *hb = arg;
    void *sock = zmq_socket(hb->ctx, ZMQ_DEALER);
    char id[32];
    size_t id_len = slm_transport_heartbeat_id(hb->index, id, sizeof id);
    if (!sock || slm_transport_configure(sock, hb->interval_ms) != SLM_OK ||
        slm_zkeys_apply_client(sock, hb->server_key, hb->public_key,
                               hb->secret_key) != SLM_OK ||
        zmq_setsockopt(sock, ZMQ_ROUTING_ID, id, id_len) != 0 ||
        zmq_connect(sock, hb->endpoint) != 0) {
        /* The coordinator sees no beats and reports this shard lost. */
        fprintf(stderr, "shardlm: shard %d: heartbeat socket failed\n",
                hb->index);
        if (sock)
            zmq_close(sock);
        return NULL;
    }
    Shardlm__Control__Heartbeat beat = SHARDLM__CONTROL__HEARTBEAT__INIT;
    beat.shard = (uint32_t)hb->index;
    slm_control_msg m = SHARDLM__CONTROL__CONTROL_MESSAGE__INIT;
    m.body_case = SHARDLM__CONTROL__CONTROL_MESSAGE__BODY_HEARTBEAT;
    m.heartbeat = &beat;
    while (!atomic_load(&hb->stop)) {
        beat.seq++;
        /* A beat that cannot leave within the interval is dropped: the next
         * one says the same thing. */
        (void)slm_transport_send(sock, NULL, 0, &m);
        for (int slept = 0; slept < hb->interval_ms && !atomic_load(&hb->stop);
             slept += 20)
            (void)zmq_poll(NULL, 0, 20);
    }
    zmq_close(sock);
    return NULL;
}

static void heartbeat_stop(heartbeat *hb)
{
    if (!hb->started)
        return;
    atomic_store(&hb->stop, true);
    pthread_join(hb->thread, NULL);
    hb->started = false;
}

slm_status slm_shard_serve(slm_shard_t *s, MPI_Comm world, int32_t shard_index,
                           int timeout_ms, int heartbeat_ms)
{
    /* The per-job keys, over MPI, before the endpoint (see cluster.c): the
     * coordinator's public key in, ours out. Collective, so a failure to
     * make a pair is reported only after it. */
    char me_public[SLM_ZKEY_Z85_BUF] = "", me_secret[SLM_ZKEY_Z85_BUF] = "";
    char server_key[SLM_ZKEY_Z85_BUF] = "";
    slm_status key_rc = slm_zkeys_pair(me_public, me_secret);
    if (MPI_Bcast(server_key, SLM_ZKEY_Z85_BUF, MPI_CHAR, 0, world) !=
            MPI_SUCCESS ||
        MPI_Gather(me_public, SLM_ZKEY_Z85_BUF, MPI_CHAR, NULL, 0, MPI_CHAR, 0,
                   world) != MPI_SUCCESS)
        return slm_fail(SLM_ERR_IO, "shard %d: the key exchange failed",
                        shard_index);
    server_key[SLM_ZKEY_Z85_LEN] = '\0';
    char endpoint[256];
    SLM_CHECK(slm_comm_mpi_bcast_string(world, 0, endpoint, sizeof endpoint));
    if (!endpoint[0] || !server_key[0])
        return slm_fail(SLM_ERR_IO,
                        "shard %d: the coordinator could not "
                        "open its control endpoint",
                        shard_index);
    SLM_CHECK(key_rc);
    const slm_model_config *cfg = slm_shard_config(s);
    const slm_kv_config *kv = slm_shard_kv(s);
    const slm_wire_limits lim = {.n_shards = (uint32_t)(shard_index + 1),
                                 .vocab_size = (uint32_t)cfg->vocab_size,
                                 .seq_len = cfg->seq_len,
                                 .max_seqs = (uint32_t)kv->max_seqs,
                                 .max_tokens = (uint32_t)kv->max_tokens,
                                 .n_blocks = (uint32_t)kv->n_blocks,
                                 .block_size = (uint32_t)kv->block_size};
    slm_step_seq *seqs = calloc(kv->max_seqs, sizeof *seqs);
    int32_t *argmax = calloc(kv->max_seqs, sizeof *argmax);
    const size_t vocab = (size_t)cfg->vocab_size;
    float *kept = NULL; /* (max_seqs, vocab) once a step has greedy rows */
    if (!seqs || !argmax) {
        free(seqs);
        free(argmax);
        return slm_fail(SLM_ERR_NOMEM, "shard %d: out of memory", shard_index);
    }
    slm_status rc = SLM_OK;
    heartbeat hb = {.index = shard_index,
                    .interval_ms = heartbeat_ms,
                    .public_key = me_public,
                    .secret_key = me_secret,
                    .server_key = server_key};
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
    /* What a shard receives is small (steps, not rows of logits): a frame
     * past the largest step these limits allow is dropped by ZeroMQ before
     * it is decrypted or parsed, so even a peer holding the coordinator's
     * key cannot make a shard buffer 72 MiB. */
    const size_t step_bytes = slm_wire_max_step_bytes(&lim);
    const int64_t max_in = (int64_t)step_bytes + SLM_ZKEY_CURVE_OVERHEAD;
    if (step_bytes == 0 || step_bytes > SLM_WIRE_MAX_CONTROL_BYTES ||
        zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max_in, sizeof max_in) != 0) {
        rc = slm_fail(SLM_ERR_IO, "shard %d: cannot bound its messages",
                      shard_index);
        goto done;
    }
    SLM_CHECK_GOTO(
        slm_zkeys_apply_client(sock, server_key, me_public, me_secret), rc,
        done);
    /* Between steps a shard waits as long as the coordinator is idle (a
     * server with no requests, a batch whose other shards still load): the
     * coordinator is the watchdog, with a deadline on every step it sends
     * and the heartbeats of every shard to watch; if it dies mpirun ends
     * the job. */
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
    hb.ctx = ctx;
    hb.endpoint = endpoint;
    atomic_init(&hb.stop, false);
    if (pthread_create(&hb.thread, NULL, heartbeat_main, &hb) != 0) {
        rc = slm_fail(SLM_ERR_INTERNAL,
                      "shard %d: cannot start the heartbeat thread",
                      shard_index);
        goto done;
    }
    hb.started = true;
    SLM_CHECK_GOTO(send_hello(sock, s, shard_index, slm_shard_weight_bytes(s)),
                   rc, done);

    const bool decider = slm_shard_decider(s) == shard_index;
    uint64_t last_seq = 0;
    for (;;) {
        slm_control_msg *m = NULL;
        SLM_CHECK_GOTO(slm_transport_recv(sock, NULL, 0, NULL, NULL, &lim, &m),
                       rc, done);
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
        /* wire.c bounded every count and index by `lim`; the transformer
         * checks what they mean together. */
        const Shardlm__Control__Step *w = m->step;
        for (size_t i = 0; i < w->n_seqs; i++)
            seqs[i] = (slm_step_seq){.tokens = w->seqs[i]->tokens,
                                     .n_tokens = w->seqs[i]->n_tokens,
                                     .pos = w->seqs[i]->pos,
                                     .blocks = w->seqs[i]->blocks,
                                     .n_blocks = w->seqs[i]->n_blocks,
                                     .want_logits = w->seqs[i]->want_logits,
                                     .want_argmax = w->seqs[i]->want_argmax};
        const slm_step step = {.seqs = seqs,
                               .n_seqs = w->n_seqs,
                               .free_blocks = w->free_blocks,
                               .n_free = w->n_free_blocks};
        const float *logits = NULL;
        size_t rows = 0, n_argmax = 0;
        rc = slm_shard_step(s, &step, &logits, &rows);
        if (rc == SLM_OK && decider && rows && !kept) {
            bool greedy = false;
            for (size_t i = 0; i < step.n_seqs; i++)
                greedy |= step.seqs[i].want_argmax;
            /* max_seqs * vocab fits: the transformer holds as many */
            if (greedy && !(kept = malloc(kv->max_seqs * vocab * sizeof *kept)))
                rc = slm_fail(SLM_ERR_NOMEM, "shard %d: out of memory",
                              shard_index);
        }
        if (rc == SLM_OK && decider && rows)
            rc = reduce_rows(&step, logits, vocab, kept, argmax, &logits, &rows,
                             &n_argmax);
        slm_wire_free_control(&m);
        if (rc != SLM_OK) {
            /* Tell the coordinator why before giving up; peers may be
             * waiting in a collective, which the caller aborts. */
            (void)send_result(sock, last_seq, shard_index, NULL, 0, NULL, 0,
                              slm_error_message());
            goto done;
        }
        SLM_CHECK_GOTO(send_result(sock, last_seq, shard_index,
                                   decider ? logits : NULL, rows * vocab,
                                   decider ? argmax : NULL, n_argmax, NULL),
                       rc, done);
    }
done:
    free(seqs);
    free(argmax);
    free(kept);
    heartbeat_stop(&hb);
    if (sock)
        zmq_close(sock);
    if (ctx)
        zmq_ctx_term(ctx);
    slm_zkeys_wipe(me_secret, sizeof me_secret);
    return rc;
}
